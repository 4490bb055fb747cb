"""A cluster on the workstation's own machine (`tether lab up --local`): both recursion checks, as root, with
a real `tether helper start` in the workstation namespace and the real CLI.

In the --local lab the workstation sits on the cluster bridge (``node0``, 10.250.0.13), reaches the pod range
through its node's gateway without Tether, and is the cluster DNS's upstream (a dnsmasq on 10.250.0.13 that
forwards to the workstation's resolv.conf nameserver, i.e. to Tether once connected). So every name the
cluster does not hold, asked of the cluster by Tether, comes back to Tether: the DNS loop the probe detects.

Checked: connect works and reports both recursion modes; pod subnets are not routed into the TUN and pods are
reached over ``node0`` (the TUN's packet counter does not move); cluster names resolve; lookups of a
nonexistent name under an include-suffix get the upstream's NXDOMAIN (not a SERVFAIL after a timeout) and cost
the cluster DNS at most one query per lookup and family, a program's lookups of a probe name none (counted in the
cluster DNS's query log). The lab is put back to the default (not --local) at the end of the module, whatever
happens.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dnslib import RCODE, DNSRecord
from helper_fixture import running_helper
from test_vpn import main_routes_v4, route_get, wait_for_no_benchmark

from tether.helper.root import recursion
from tether.lab.topology import CLUSTER_CIDR, UPSTREAM_DNS_IP, WS_NODE_IF, build_plan

pytestmark = pytest.mark.lab

POD_SUBNETS = [str(node.pod_cidr) for node in build_plan().nodes]
SUFFIX = ".corp"
LOOKUPS = 5


@pytest.fixture(scope="module")
def local_lab(lab_control):
    """The lab rebuilt with --local (the manager installed again), and the default lab again afterwards."""
    wait_for_no_benchmark()
    try:
        result = lab_control.up(local=True)
        assert result.action in ("built", "rebuilt", "already up"), result.action
        yield result.info
    finally:
        wait_for_no_benchmark()
        lab_control.up()


@pytest.fixture(scope="module")
def helper(local_lab, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("recursion")
    with running_helper(local_lab.ws_netns, local_lab.kubeconfig, workdir, "recursion") as running:
        running.start()
        yield running
        assert running.alive(), f"the helper died during the tests\n{running.tail()}"
        assert running.quit() == 0, running.tail()
        assert running.leftovers() == [], running.tail()


@pytest.fixture(scope="module")
def connected(helper, local_lab):
    before = cluster_dns_queries(local_lab, recursion.PROBE_SUFFIX)
    state = helper.connect("--dns-include-suffix", SUFFIX)
    state["probe_queries"] = cluster_dns_queries(local_lab, recursion.PROBE_SUFFIX) - before
    yield state
    helper.disconnect()


def cluster_dns_log(info: Any) -> Path:
    return Path(info.paths.logs) / "pod_kube-system_coredns-0.log"


def cluster_dns_queries(info: Any, name: str) -> int:
    """How many queries for names ending in `name` the cluster DNS has received (dnsmasq's log-queries)."""
    try:
        lines = cluster_dns_log(info).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return 0
    wanted = name.rstrip(".")
    return sum(1 for line in lines if "query[" in line and line.split(" from ")[0].rstrip().endswith(wanted))


def tun_tx_packets(netns: str, device: str) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ip", "-s", "-j", "link", "show", "dev", device],
        capture_output=True,
        text=True,
        check=True,
    )
    link = json.loads(out.stdout)[0]
    return int(link["stats64"]["tx"]["packets"])  # what the kernel sent into the TUN (the helper reads it)


def ws_exec(info: Any, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = ("ip", "netns", "exec", info.ws_netns, *argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def ask_workstation_resolver(workstation: Any, name: str, qtype: str) -> int:
    """One query to the workstation's resolv.conf nameserver, from inside the workstation: its rcode."""
    with workstation():
        raw = DNSRecord.question(name, qtype).send(str(UPSTREAM_DNS_IP), 53, timeout=10)
    return DNSRecord.parse(raw).header.rcode


def test_the_local_lab_reaches_the_pods_without_tether(local_lab) -> None:
    routes = main_routes_v4(local_lab.ws_netns)
    assert routes[str(CLUSTER_CIDR)]["dev"] == WS_NODE_IF, routes
    web = local_lab.plan.pod("default", "web-0")
    done = ws_exec(local_lab, "curl", "-sS", "--max-time", "5", f"http://{web.ip}:8080/")
    assert done.returncode == 0, done.stderr


def test_connect_reports_both_recursions_and_leaves_the_pod_subnets_to_the_os(connected) -> None:
    assert connected["phase"] == "connected"
    assert connected["dns_recursion"] == recursion.DNS_DETECTED
    assert connected["direct_subnets"] == POD_SUBNETS
    assert f"reached directly via {WS_NODE_IF}" in connected["connect_recursion"]
    assert [s["cidr"] for s in connected["routed_subnets"]] == ["10.96.0.0/16"]
    # the pods' and nodes' addresses are refused as sources on the TUN, the workstation's own is not
    assert "10.244.0.0/16" in connected["refused_sources"]
    assert "10.250.0.13/32" not in connected["refused_sources"]
    # the probe asked the cluster DNS once (type A), and came back through the workstation's resolver
    assert connected["probe_queries"] == 1, connected


def test_status_shows_the_recursion_modes(helper, connected) -> None:
    text = helper.cli("status").stdout
    assert f"dns recursion    {recursion.DNS_DETECTED}" in text, text
    assert "flow recursion   local cluster: 10.244.1.0/24, 10.244.2.0/24 reached directly via node0" in text, text


def test_pods_are_reached_directly_and_services_through_the_tunnel(local_lab, connected) -> None:
    tun = connected["tun_device"]
    web = local_lab.plan.pod("default", "web-0")
    assert route_get(local_lab.ws_netns, str(web.ip))["dev"] == WS_NODE_IF
    assert route_get(local_lab.ws_netns, str(local_lab.service_ip("web")))["dev"] == tun
    before = tun_tx_packets(local_lab.ws_netns, tun)
    for _ in range(3):
        done = ws_exec(local_lab, "curl", "-sS", "--max-time", "5", f"http://{web.ip}:8080/")
        assert done.returncode == 0, done.stderr
    assert tun_tx_packets(local_lab.ws_netns, tun) == before  # not one packet of the pod flows entered the TUN
    done = ws_exec(local_lab, "curl", "-sS", "--max-time", "10", "http://web.default/")
    assert done.returncode == 0 and "web" in done.stdout, done.stderr
    assert tun_tx_packets(local_lab.ws_netns, tun) > before


def test_cluster_names_resolve(local_lab, connected) -> None:
    done = ws_exec(local_lab, "getent", "hosts", "web.default")
    assert done.returncode == 0 and str(local_lab.service_ip("web")) in done.stdout, done.stderr


def test_a_nonexistent_name_the_cluster_forwards_home_does_not_loop(local_lab, connected, workstation) -> None:
    name = f"nothere-{secrets.token_hex(4)}{SUFFIX}"
    before = cluster_dns_queries(local_lab, name)
    for _ in range(LOOKUPS):
        for qtype in ("A", "AAAA"):
            # the upstream's NXDOMAIN, through the loop Tether broke: not a SERVFAIL after a timeout
            assert ask_workstation_resolver(workstation, name, qtype) == RCODE.NXDOMAIN
    # The name reached the cluster (once per family at least), and each lookup cost it at most one query per
    # family (Tether keeps a negative answer a few seconds, so later ones may cost none): nothing went round.
    grown = cluster_dns_queries(local_lab, name) - before
    assert 2 <= grown <= LOOKUPS * 2, grown


def test_a_probe_name_asked_by_a_program_costs_the_cluster_nothing(local_lab, connected, workstation) -> None:
    name = recursion.probe_name()
    before = cluster_dns_queries(local_lab, recursion.PROBE_SUFFIX)
    for _ in range(LOOKUPS):
        assert ask_workstation_resolver(workstation, name, "A") == RCODE.NXDOMAIN
    assert cluster_dns_queries(local_lab, recursion.PROBE_SUFFIX) == before
