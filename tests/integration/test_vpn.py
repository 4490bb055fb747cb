"""A VPN that claims the cluster's addresses, as root, in the lab: a real `tether helper start` in the
workstation namespace and the real CLI, with the lab's "VPN" (`vpn0`: 10.0.0.0/8 via 100.64.0.1 into a
corporate network whose hosts sit inside the service CIDR, inside a pod CIDR and outside the cluster).

Each scenario connects, checks with real clients (curl, getent, `ip route get`, `tether status --json`),
disconnects, and checks that the workstation namespace is exactly as before: only the VPN's own link and
routes besides the lab's. The lab is put back without a VPN at the end of the module, whatever happens.

The first test (a VPN that comes up while connected, exactly as a user would do it) has a helper of its
own and puts the lab back without a VPN; then one helper (module fixture ``helper``) serves the scenarios.

Changing the lab's VPN disturbs a benchmark running in the same lab (``python -m tests.bench.run``):
before each change these tests wait (bounded) until none runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from typing import Any

import kubernetes
import pytest
from helper_fixture import _ns_json, nft_tables, running_helper, workstation_leftovers

from tether.helper.root.journal import ROUTE_PROTO
from tether.helper.user.client import HelperCallError, HelperClient, build_connect_request
from tether.lab.topology import SERVICE_CIDR, build_plan

pytestmark = pytest.mark.lab

VPN = "10.0.0.0/8"
VPN_DEVICE = "vpn0"
VPN_GATEWAY = "100.64.0.1"
VPN_ROUTE = f"{VPN} dev {VPN_DEVICE} via {VPN_GATEWAY}"
VIRTUAL_SUBNET = ipaddress.ip_network("246.246.0.0/16")  # the default --virtual-subnet
CORP_HOSTS = {
    "10.96.200.200": "service CIDR",
    "10.244.1.200": "pod CIDR 10.244.1.0/24",
    "10.0.0.1": "outside cluster ranges",
}
BENCH_WAIT = 300.0  # how long to wait for a running benchmark before changing the lab's VPN
STATUS_WAIT = 20.0  # how long the route monitor may take to report a VPN coming or going


def cluster_subnets() -> list[str]:
    """The lab's cluster subnets in the order the helper reports them: the service CIDR, then pod CIDRs."""
    return [str(SERVICE_CIDR), *(str(node.pod_cidr) for node in build_plan().nodes)]


def conflict_line(subnet: str) -> str:
    return f'subnet {subnet} overlaps with existing route "{VPN_ROUTE}"'


def expected_conflicts() -> list[dict[str, str]]:
    return [
        {"subnet": s, "route": VPN, "device": VPN_DEVICE, "gateway": VPN_GATEWAY, "description": conflict_line(s)}
        for s in cluster_subnets()
    ]


# --- the lab's VPN ----------------------------------------------------------------------------------


def wait_for_no_benchmark(timeout: float = BENCH_WAIT) -> None:
    """Wait (bounded) until no `python -m tests.bench...` runs: it measures in the same lab."""
    mine = {os.getpid(), os.getppid()}
    deadline = time.monotonic() + timeout
    said = False
    while True:
        out = subprocess.run(["pgrep", "-af", r"tests\.bench"], capture_output=True, text=True)
        running = [line for line in out.stdout.splitlines() if int(line.split()[0]) not in mine]
        if not running:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"a benchmark still runs in the lab after {timeout:.0f}s, not changing its VPN: {running}")
        if not said:
            print(f"waiting for the benchmark to finish before changing the lab's VPN: {running}", file=sys.stderr)
            said = True
        time.sleep(2)


def set_vpn(lab_control, vpn: list[str]):
    wait_for_no_benchmark()
    return lab_control.up(vpn=vpn)


@pytest.fixture(scope="module")
def _lab_restored(lab_control):
    """Whatever the tests of this module did to the lab's VPN, the lab ends without one."""
    try:
        yield lab_control
    finally:
        lab_control.up()


@pytest.fixture
def vpn(_lab_restored):
    """The lab with `--vpn 10.0.0.0/8` (idempotent: a no-op when the VPN is already there)."""
    result = set_vpn(_lab_restored, [VPN])
    hosts = {str(h.address): h.where for h in result.info.vpn_hosts}
    assert hosts == CORP_HOSTS, hosts
    routes = main_routes_v4(result.info.ws_netns)
    assert {k: routes[VPN].get(k) for k in ("dev", "gateway")} == {"dev": VPN_DEVICE, "gateway": VPN_GATEWAY}, routes
    return result.info


@pytest.fixture(autouse=True)
def _own_config_dir(tmp_path, monkeypatch):
    """The CLI remembers a cluster's conflict resolution per user (XDG config): keep it per test, so that
    one scenario's resolution is neither reused by the next nor left in root's real config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


# --- one helper for the module (connected and disconnected by each scenario) ------------------------


@pytest.fixture(scope="module")
def helper(lab, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vpn")
    with running_helper(lab.ws_netns, lab.kubeconfig, workdir, "vpn") as running:
        running.start()
        yield running
        assert running.alive(), f"the helper died during the tests\n{running.tail()}"
        assert running.status()["phase"] == "disconnected", running.tail()
        assert running.quit() == 0, running.tail()
        assert running.leftovers() == [], running.tail()


@pytest.fixture(autouse=True)
def _helper_log_on_failure(request):
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed and "helper" in request.fixturenames:
        print(request.getfixturevalue("helper").tail(), file=sys.stderr)


# --- the workstation namespace ----------------------------------------------------------------------


def main_routes_v4(netns: str) -> dict[str, dict[str, Any]]:
    return {r["dst"]: r for r in _ns_json(netns, "ip", "-4", "-j", "route", "show")}


def route_get(netns: str, address: str) -> dict[str, Any]:
    return _ns_json(netns, "ip", "-j", "route", "get", address)[0]


def tun_routes(netns: str, device: str) -> list[dict[str, Any]]:
    """Every route (both families, all tables) through `device`."""
    found = []
    for family in ("-4", "-6"):
        found += _ns_json(netns, "ip", family, "-j", "route", "show", "table", "all", "dev", device)
    return found


def snapshot(netns: str) -> dict[str, Any]:
    """Links, every route of both families in every table, and nftables tables."""
    routes = set()
    for family in ("-4", "-6"):
        for route in _ns_json(netns, "ip", family, "-j", "route", "show", "table", "all"):
            routes.add(json.dumps(route, sort_keys=True))
    return {
        "links": sorted(link["ifname"] for link in _ns_json(netns, "ip", "-j", "link", "show")),
        "routes": routes,
        "nft": sorted(nft_tables(netns)),
    }


def assert_left_as_found(helper, before: dict[str, Any]) -> None:
    assert workstation_leftovers(helper.netns) == [], helper.tail()
    assert not helper.journal.exists()
    after = snapshot(helper.netns)
    assert after["links"] == before["links"]
    assert after["nft"] == before["nft"]
    assert after["routes"] - before["routes"] == set(), "routes added and left"
    assert before["routes"] - after["routes"] == set(), "routes removed"


def assert_only_the_vpn_besides_the_lab(netns: str) -> None:
    assert snapshot(netns)["links"] == ["eth0", "lo", VPN_DEVICE]
    devices = {route["dst"]: route.get("dev") for route in main_routes_v4(netns).values()}
    assert devices[VPN] == VPN_DEVICE and set(devices.values()) == {"eth0", VPN_DEVICE}, devices


@contextlib.contextmanager
def connected(helper, *flags: str):
    """Connect with `flags`, yield the state; then disconnect and check the namespace is as before."""
    assert workstation_leftovers(helper.netns) == []
    before = snapshot(helper.netns)
    state = helper.connect(*flags)
    try:
        yield state
    except BaseException:
        helper.cli("disconnect")
        raise
    helper.disconnect()
    assert helper.status()["phase"] == "disconnected"
    assert_left_as_found(helper, before)


# --- clients ----------------------------------------------------------------------------------------


def get(lab_run, url: str, timeout: float = 10) -> str:
    out = lab_run("curl", "-sS", "-f", "-m", str(timeout), url, timeout=timeout + 15)
    assert out.returncode == 0, f"curl {url} failed ({out.returncode}): {out.stderr.strip()}"
    return out.stdout


def resolve(lab_run, name: str) -> str:
    out = lab_run("getent", "hosts", name)
    assert out.returncode == 0 and out.stdout.strip(), out
    return out.stdout.split()[0]


def assert_corp_host_through_the_vpn(lab_run, netns: str, address: str) -> None:
    assert get(lab_run, f"http://{address}/") == f"hello from corp host {address}\n"
    route = route_get(netns, address)
    assert (route.get("dev"), route.get("gateway")) == (VPN_DEVICE, VPN_GATEWAY), route


def wait_for_status(helper, predicate, what: str, timeout: float = STATUS_WAIT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = helper.status()
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s; last status {state}\n{helper.tail()}")
        time.sleep(0.3)


# --- 5. first: a VPN coming up while connected, exactly as a user would (own helper; see the bug) ----


@pytest.mark.timeout(180, func_only=True)
def test_a_vpn_coming_up_while_connected_is_reported(lab, lab_control, lab_run, tmp_path, _lab_restored):
    # Runs first, with a helper of its own: the bug tears the whole lab down, and every process in it.
    try:
        with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "vpn-late") as helper:
            helper.start()
            check_vpn_coming_and_going(lab, lab_control, lab_run, helper)
            assert helper.quit() == 0, helper.tail()
            assert helper.leftovers() == [], helper.tail()
    finally:
        lab_control.up()


# --- 1. a plain connect refuses, explains the ways out, and leaves nothing ----------------------------


def test_a_plain_connect_fails_and_names_the_conflicts(lab, helper, vpn):
    before = snapshot(lab.ws_netns)
    out = helper.cli("connect", "--kubeconfig", str(helper.kubeconfig), timeout=90)

    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    first, *others = [conflict_line(s) for s in cluster_subnets()]
    assert lines[0] == f"tether: {first}", out.stderr
    assert lines[1 : 1 + len(others)] == others, out.stderr
    for way_out in ("--allow-conflicting-subnets", "--proxy-via", "--auto-resolve"):
        assert way_out in out.stderr, out.stderr
    here = " ".join(f"--allow-conflicting-subnets {s}" for s in cluster_subnets())
    assert f"here: {here}" in out.stderr, out.stderr
    # the conflict is found before anything is changed
    assert "checking the routing table for conflicts" in out.stdout, out.stdout
    assert "creating the network device" not in out.stdout, out.stdout

    assert_left_as_found(helper, before)
    assert_only_the_vpn_besides_the_lab(lab.ws_netns)
    state = helper.status()
    assert state["phase"] == "disconnected"
    assert state["conflicts"] == expected_conflicts()
    assert state["last_error"].splitlines()[0] == first
    assert state["routed_subnets"] == [] and state["tun_device"] == ""
    assert state["remapped"] == [] and state["virtual_subnet"] == ""


# --- 2. allow the conflict: the cluster wins inside the allowed ranges, the VPN keeps the rest ------


def test_allow_conflicting_subnets_routes_the_cluster_and_keeps_the_vpn(lab, lab_run, helper, vpn):
    vpn_route = main_routes_v4(lab.ws_netns)[VPN]
    allow = ["--allow-conflicting-subnets", "10.96.0.0/12", "--allow-conflicting-subnets", "10.244.0.0/16"]
    with connected(helper, *allow) as state:
        device = state["tun_device"]
        assert device.startswith("tether")
        assert state["routed_subnets"] == [{"cidr": s, "via": device} for s in cluster_subnets()]
        assert state["conflicts"] == [] and state["remapped"] == [] and state["virtual_subnet"] == ""

        assert get(lab_run, "http://web.default").startswith("hello from web (pod web-")
        assert resolve(lab_run, "web.default") == lab.service_ip("web")
        assert_corp_host_through_the_vpn(lab_run, lab.ws_netns, "10.0.0.1")

        ours = [r for r in tun_routes(lab.ws_netns, device) if str(r.get("protocol")) == str(ROUTE_PROTO)]
        assert sorted(r["dst"] for r in ours) == sorted(cluster_subnets()), ours
        assert all(r.get("table", "main") == "main" for r in ours), ours
        assert main_routes_v4(lab.ws_netns)[VPN] == vpn_route  # untouched
        # inside the allowed ranges the cluster wins, even for the corp hosts there
        for address in ("10.96.200.200", "10.244.1.200", lab.pod_ips["default/web-0"]):
            assert route_get(lab.ws_netns, address)["dev"] == device, address
        # and the route monitor agrees that the allowed overlap is no conflict
        assert helper.status()["conflicts"] == []
    assert main_routes_v4(lab.ws_netns)[VPN] == vpn_route
    assert_only_the_vpn_besides_the_lab(lab.ws_netns)


# --- 3. proxy-via: the cluster behind virtual IPs, dialed from the web workload ---------------------


def test_proxy_via_all_web_hides_the_cluster_behind_virtual_ips(lab, lab_run, helper, vpn):
    with connected(helper, "--proxy-via", "all=web") as state:
        device = state["tun_device"]
        assert state["virtual_subnet"] == str(VIRTUAL_SUBNET)
        assert state["conflicts"] == []
        assert state["remapped"] == [
            {"subnet": s, "workload": "default/web", "reason": "proxy-via"} for s in cluster_subnets()
        ]
        routed = {ipaddress.ip_network(s["cidr"]) for s in state["routed_subnets"]}
        assert {n for n in routed if n.version == 4} == {VIRTUAL_SUBNET}, routed
        assert all(n.is_private and n.version == 6 for n in routed if n.version == 6), routed  # its IPv6 twin
        assert {s["via"] for s in state["routed_subnets"]} == {device}

        # only the virtual subnets are routed into the TUN, nothing of 10/8
        ours = [r for r in tun_routes(lab.ws_netns, device) if str(r.get("protocol")) == str(ROUTE_PROTO)]
        assert {ipaddress.ip_network(r["dst"]) for r in ours} == routed, ours
        vpn_net = ipaddress.ip_network(VPN)
        for route in tun_routes(lab.ws_netns, device):
            dst = route["dst"]
            if dst != "default" and ipaddress.ip_network(dst, strict=False).version == 4:
                assert not ipaddress.ip_network(dst, strict=False).overlaps(vpn_net), route

        first_lookup = time.monotonic()
        web_vip = resolve(lab_run, "web.default")
        assert ipaddress.ip_address(web_vip) in VIRTUAL_SUBNET, web_vip
        assert route_get(lab.ws_netns, web_vip)["dev"] == device
        assert get(lab_run, "http://web.default").startswith("hello from web (pod web-")
        assert get(lab_run, f"http://{web_vip}/").startswith("hello from web (pod web-")

        # the corp host inside the service CIDR is the VPN's again
        for address in ("10.96.200.200", "10.244.1.200"):
            assert_corp_host_through_the_vpn(lab_run, lab.ws_netns, address)

        # mesh.default is 127.0.0.1 in the cluster: the web pod's agent dials its own loopback
        mesh_vip = resolve(lab_run, "mesh.default")
        assert ipaddress.ip_address(mesh_vip) in VIRTUAL_SUBNET and mesh_vip != web_vip, (mesh_vip, web_vip)
        assert get(lab_run, "http://mesh.default:9090/").startswith("hello from web on loopback (pod web-")

        # the same name keeps its VIP once the DNS answer (TTL 4 s) has expired
        time.sleep(max(0.0, first_lookup + 4.5 - time.monotonic()))
        assert resolve(lab_run, "web.default") == web_vip

        status = helper.status()
        assert status["remapped"] == state["remapped"] and status["virtual_subnet"] == str(VIRTUAL_SUBNET)
    assert_only_the_vpn_besides_the_lab(lab.ws_netns)


def test_proxy_via_a_missing_workload_fails_naming_it(lab, helper, vpn):
    before = snapshot(lab.ws_netns)
    out = helper.cli("connect", "--kubeconfig", str(helper.kubeconfig), "--proxy-via", "all=nosuchworkload")
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    first = out.stderr.splitlines()[0]
    assert first.startswith('tether: invalid --proxy-via "all=nosuchworkload"'), out.stderr
    assert '"default/nosuchworkload"' in first, out.stderr
    assert "creating the network device" not in out.stdout, out.stdout
    assert_left_as_found(helper, before)
    state = helper.status()
    assert state["phase"] == "disconnected" and "nosuchworkload" in state["last_error"], state
    assert state["tun_device"] == "" and state["routed_subnets"] == []


def echo_template(lab, workstation) -> dict[str, Any]:
    """The echo Deployment (no agent) as the lab's admin reads it: its template and generation."""
    with workstation():
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(lab.kubeconfig), client_configuration=config)
        with kubernetes.client.ApiClient(config) as client:
            deployment = kubernetes.client.AppsV1Api(client).read_namespaced_deployment("echo", "default")
            return {"template": client.sanitize_for_serialization(deployment.spec.template),
                    "generation": deployment.metadata.generation}  # fmt: skip


def test_proxy_via_as_a_user_who_may_not_patch_the_workload_fails_and_changes_nothing(lab, workstation, helper, vpn):
    before, template = snapshot(lab.ws_netns), echo_template(lab, workstation)
    assert "tether-agent" not in json.dumps(template)  # a workload without an agent: connect would inject one
    viewer = str(lab.paths.user_kubeconfig("viewer"))
    out = helper.cli("connect", "--kubeconfig", viewer, "--proxy-via", "all=echo", timeout=90)
    assert out.returncode == 4, (out.returncode, out.stdout, out.stderr)  # PERMISSION
    first = out.stderr.splitlines()[0]
    assert "Deployment default/echo" in first and "permission to patch deployments.apps" in first, out.stderr
    assert 'User "viewer" cannot patch resource "deployments"' in first, out.stderr
    assert_left_as_found(helper, before)
    state = helper.status()
    assert state["phase"] == "disconnected" and "default/echo" in state["last_error"], state
    assert state["tun_device"] == "" and state["routed_subnets"] == []
    assert echo_template(lab, workstation) == template


def test_overlapping_proxy_vias_are_rejected_by_the_cli_and_the_helper(lab, helper, vpn):
    before = snapshot(lab.ws_netns)
    values = ["all=web", "service=web"]
    flags = [arg for value in values for arg in ("--proxy-via", value)]
    out = helper.cli("connect", "--kubeconfig", str(helper.kubeconfig), *flags)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert '"service=web"' in out.stderr and '"all=web"' in out.stderr, out.stderr
    assert out.stdout == ""  # refused before asking the helper

    # the helper does not rely on the CLI's check
    request = build_connect_request(kubeconfig=helper.kubeconfig)
    request.proxy_via.extend(values)
    with HelperClient(helper.socket) as client, pytest.raises(HelperCallError) as refused:
        client.connect_and_wait(request)
    assert refused.value.code.name == "INVALID_ARGUMENT", refused.value
    assert '"service=web"' in refused.value.details and '"all=web"' in refused.value.details, refused.value

    assert_left_as_found(helper, before)
    assert helper.status()["phase"] == "disconnected"


# --- 4. auto-resolve: the conflicting subnets remapped without naming a workload --------------------


def test_auto_resolve_remaps_the_conflicting_subnets(lab, lab_run, helper, vpn):
    with connected(helper, "--auto-resolve") as state:
        device = state["tun_device"]
        assert state["conflicts"] == []
        assert state["virtual_subnet"] == str(VIRTUAL_SUBNET)
        remapped = [{"subnet": s, "workload": "", "reason": "auto-resolve"} for s in cluster_subnets()]
        assert state["remapped"] == remapped
        routed = {s["cidr"] for s in state["routed_subnets"] if ipaddress.ip_network(s["cidr"]).version == 4}
        assert routed == {str(VIRTUAL_SUBNET)}, state["routed_subnets"]

        vip = resolve(lab_run, "web.default")
        assert ipaddress.ip_address(vip) in VIRTUAL_SUBNET, vip
        assert route_get(lab.ws_netns, vip)["dev"] == device
        assert get(lab_run, "http://web.default").startswith("hello from web (pod web-")
        assert get(lab_run, "http://catalog.webshop").startswith("hello from catalog (pod catalog-0")
        for address in ("10.96.200.200", "10.244.1.200"):
            assert_corp_host_through_the_vpn(lab_run, lab.ws_netns, address)

        status = helper.status()
        assert status["phase"] == "connected"
        assert status["remapped"] == remapped and status["virtual_subnet"] == str(VIRTUAL_SUBNET)
        text = helper.cli("status")
        assert text.returncode == 0, text.stderr
        for subnet in cluster_subnets():
            line = f"remapped         {subnet} -> {VIRTUAL_SUBNET} (auto-resolve, dialed by the traffic-manager)"
            assert line in text.stdout.splitlines(), text.stdout
    assert_only_the_vpn_besides_the_lab(lab.ws_netns)


# --- 5'. a VPN that comes up while connected (and goes away again) is noticed ----------------------


def check_vpn_coming_and_going(lab, lab_control, lab_run, helper, *flags: str) -> None:
    """Connect without a VPN, bring it up, poll status until it lists the conflicts, bring it down, poll
    until they are cleared; the session stays connected throughout with its routes unchanged."""
    set_vpn(lab_control, [])
    assert VPN not in main_routes_v4(lab.ws_netns)
    with connected(helper, *flags) as state:
        device = state["tun_device"]
        routed = state["routed_subnets"]
        assert state["conflicts"] == [] and state["remapped"] == []
        assert {s["via"] for s in routed} == {device}
        log_start = len(helper.log_text())

        set_vpn(lab_control, [VPN])
        state = wait_for_status(helper, lambda s: s["conflicts"], "the VPN's conflicts reported")
        expected = [
            {"subnet": s["cidr"], "route": VPN, "device": VPN_DEVICE, "gateway": VPN_GATEWAY,
             "description": conflict_line(s["cidr"])}
            for s in routed
        ]  # fmt: skip
        assert state["conflicts"] == expected
        assert state["phase"] == "connected" and state["routed_subnets"] == routed
        # the session keeps its routes: they are more specific than 10/8, so the cluster still answers
        assert get(lab_run, "http://web.default").startswith("hello from web (pod web-")
        assert_corp_host_through_the_vpn(lab_run, lab.ws_netns, "10.0.0.1")
        log = helper.log_text()[log_start:]
        for conflict in expected:
            assert f"route conflict appeared: {conflict['description']}" in log, log

        set_vpn(lab_control, [])
        state = wait_for_status(helper, lambda s: not s["conflicts"], "the VPN's conflicts cleared")
        assert state["phase"] == "connected" and state["routed_subnets"] == routed
        assert get(lab_run, "http://web.default").startswith("hello from web (pod web-")
    assert VPN_DEVICE not in snapshot(lab.ws_netns)["links"]
