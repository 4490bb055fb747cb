"""The sandbox cluster's pure parts: address plan, nft rulesets, dnsmasq configs, journal, VPN hosts,
seed objects, and the command lines the lab runs (checked against a recording runner)."""

import asyncio
import hashlib
import json
import os
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from kubernetes import client

from tests.doubles.fake_runner import RecordingRunner
from tether.lab import clusterdns, firewall, kubeproxy, network, objects, specs, workloads
from tether.lab.journal import BUILDING, UP, Journal, JournalFile, ProcessRecord
from tether.lab.netns import NetnsOps
from tether.lab.topology import (
    CLUSTER_CIDR,
    DNS_IP,
    KUBERNETES_IP,
    PREFIX,
    SERVICE_CIDR,
    StatePaths,
    build_plan,
    first_outside,
    parse_cidrs,
    plan_fingerprint,
    vpn_hosts,
    vpn_options,
    vpn_plan,
)

# --- address plan ---------------------------------------------------------------------------------


def test_plan_nodes_pods_and_services_fit_the_cluster_ranges():
    plan = build_plan()
    assert [(n.name, str(n.pod_cidr)) for n in plan.nodes] == [
        ("lab-node-1", "10.244.1.0/24"),
        ("lab-node-2", "10.244.2.0/24"),
    ]
    nodes = {n.name: n for n in plan.nodes}
    ips = [p.ip for p in plan.pods]
    assert len(set(ips)) == len(ips)
    for pod in plan.pods:
        assert pod.ip in nodes[pod.node].pod_cidr
        assert pod.ip != nodes[pod.node].gateway
        assert pod.netns.startswith(PREFIX)
        assert len(pod.veth) <= 15
    cluster_ips = [s.cluster_ip for s in plan.services]
    assert len(set(cluster_ips)) == len(cluster_ips)
    assert all(ip in SERVICE_CIDR for ip in cluster_ips)
    assert plan.service("default", "kubernetes").cluster_ip == KUBERNETES_IP == IPv4Address("10.96.0.1")
    assert plan.service("kube-system", "kube-dns").cluster_ip == DNS_IP == IPv4Address("10.96.0.10")
    for rng in (SERVICE_CIDR, CLUSTER_CIDR):
        assert rng.subnet_of(IPv4Network("10.0.0.0/8"))


def test_plan_is_deterministic_and_has_the_expected_workloads():
    a, b = build_plan(), build_plan()
    assert a == b
    names = {(p.namespace, p.name) for p in a.pods}
    assert {("default", "web-0"), ("default", "web-1"), ("default", "echo-0"), ("default", "udp-echo-0")} <= names
    assert {("default", "bulk-0"), ("webshop", "catalog-0"), ("kube-system", "coredns-0")} <= names
    # the traffic-manager is not the lab's: `tether manager install` puts it there
    assert not [p for p in a.pods if p.namespace == "tether"] and not [s for s in a.services if s.namespace == "tether"]
    assert "tether" in a.namespaces  # where the README's demo installs it
    # the two web replicas sit on different nodes
    assert {a.pod("default", "web-0").node, a.pod("default", "web-1").node} == {"lab-node-1", "lab-node-2"}
    assert a.pod("default", "web-0").loopback_ports == (9090,)
    web = a.workload("default", "web")
    assert [p.name for p in web.pods] == ["web-0", "web-1"] and web.agent and web.selector == {"app": "web"}
    assert [p.name for p in a.agent_pods] == ["web-0", "web-1"]
    assert a.pod("kube-system", "coredns-0").workload == "coredns"
    # the manager Service's DNS name, which the cluster DNS answers once the chart has created it
    assert a.agent_manager_address == "tether-manager.tether.svc.cluster.local:8081"


def test_endpoints_follow_selectors_and_kubernetes_leads_to_the_api_server():
    plan = build_plan()
    web = plan.service("default", "web")
    eps = plan.endpoints(web, web.ports[0])
    assert sorted(str(e.ip) for e in eps) == sorted(str(plan.pod("default", n).ip) for n in ("web-0", "web-1"))
    assert {e.port for e in eps} == {8080}
    k8s = plan.service("default", "kubernetes")
    assert [(str(e.ip), e.port) for e in plan.endpoints(k8s, k8s.ports[0])] == [("172.30.0.1", 6443)]
    dns = plan.service("kube-system", "kube-dns")
    assert [str(e.ip) for e in plan.endpoints(dns, dns.ports[0])] == [str(plan.pods_of("dns")[0].ip)]


def test_plan_fingerprint_is_stable_and_tracks_the_plan():
    assert plan_fingerprint(build_plan()) == plan_fingerprint(build_plan())
    assert plan_fingerprint(build_plan()) != plan_fingerprint(build_plan(["10.0.0.0/8"]))


def test_netns_names_include_vpn_only_when_asked():
    assert "tether-lab-corp" not in build_plan().netns_names()
    names = build_plan(["10.0.0.0/8"]).netns_names()
    assert names[:4] == ["tether-lab-router", "tether-lab-ws", "tether-lab-inet", "tether-lab-corp"]
    assert all(n.startswith(PREFIX) for n in names)


# --- VPN ------------------------------------------------------------------------------------------


def test_vpn_hosts_for_10_8_cover_service_pod_and_outside_ranges():
    vpn = vpn_plan(["10.0.0.0/8"])
    assert [(str(h.address), h.where) for h in vpn.hosts] == [
        ("10.96.200.200", "service CIDR"),
        ("10.244.1.200", "pod CIDR 10.244.1.0/24"),
        ("10.0.0.1", "outside cluster ranges"),
    ]
    assert str(vpn.gateway) == "100.64.0.1" and str(vpn.ws_ip) == "100.64.0.2"
    assert not any(vpn.gateway in c for c in vpn.cidrs)


def test_vpn_gateway_moves_out_of_a_cidr_that_claims_it():
    vpn = vpn_plan(["100.64.0.0/10", "10.96.0.0/12"])
    assert not any(vpn.gateway in c for c in vpn.cidrs)
    assert str(vpn.link) == "198.18.0.0/30"


def test_vpn_hosts_only_where_the_cidr_reaches():
    hosts = vpn_hosts([IPv4Network("10.96.0.0/12")])
    assert [(str(h.address), h.where) for h in hosts] == [
        ("10.96.200.200", "service CIDR"),
        ("10.97.0.0", "outside cluster ranges"),
    ]
    # a small range inside the service CIDR: the host is the last usable address of it
    small = vpn_hosts([IPv4Network("10.96.5.0/24")])
    assert [(str(h.address), h.where) for h in small] == [("10.96.5.254", "service CIDR")]
    outside = vpn_hosts([IPv4Network("192.168.50.0/24")])
    assert [(str(h.address), h.where) for h in outside] == [("192.168.50.1", "outside cluster ranges")]


def test_first_outside_skips_excluded_ranges():
    excluded = [IPv4Network("10.0.0.0/16"), IPv4Network("10.1.0.0/16")]
    assert first_outside(IPv4Network("10.0.0.0/8"), excluded) == IPv4Address("10.2.0.0")
    assert first_outside(IPv4Network("10.0.0.0/15"), excluded) is None
    assert first_outside(IPv4Network("192.0.2.7/32"), []) == IPv4Address("192.0.2.7")


def test_vpn_values_are_validated_and_normalised():
    assert vpn_options(["10.1.2.3/8", "10.0.0.0/8", " 172.16.0.0/12 "]) == ["10.0.0.0/8", "172.16.0.0/12"]
    with pytest.raises(ValueError, match="'banana'"):
        parse_cidrs(["banana"])
    with pytest.raises(ValueError, match="only IPv4"):
        parse_cidrs(["fd00::/8"])
    with pytest.raises(ValueError, match="lab's own link"):
        parse_cidrs(["172.30.0.0/25"])


# --- nftables -------------------------------------------------------------------------------------


def test_kubeproxy_ruleset_dnats_every_service_port_round_robin():
    plan = build_plan()
    text = kubeproxy.ruleset(plan)
    web0, web1 = plan.pod("default", "web-0").ip, plan.pod("default", "web-1").ip
    web = plan.service("default", "web")
    assert text.startswith("table ip tether_lab_kubeproxy {}\ndelete table ip tether_lab_kubeproxy\n")
    assert f"ip daddr {web.cluster_ip} tcp dport 80 jump svc-default-web-http-tcp" in text
    chain = "svc-default-web-http-tcp"
    assert f"numgen inc mod 2 vmap {{ 0 : jump {chain}-ep0, 1 : jump {chain}-ep1 }}" in text
    assert f"meta l4proto tcp dnat to {web0}:8080" in text
    assert f"meta l4proto tcp dnat to {web1}:8080" in text
    # hairpin: a pod reaching itself through its service is masqueraded
    assert f"ip saddr {web0} meta mark set meta mark | 0x4000" in text
    assert "meta mark & 0x4000 == 0x4000 masquerade" in text
    # DNS over UDP and TCP, the kubernetes service to the API server
    coredns = plan.pods_of("dns")[0].ip
    assert "ip daddr 10.96.0.10 udp dport 53 jump" in text
    assert "ip daddr 10.96.0.10 tcp dport 53 jump" in text
    assert f"meta l4proto udp dnat to {coredns}:53" in text
    assert "ip daddr 10.96.0.1 tcp dport 443 jump" in text and "dnat to 172.30.0.1:6443" in text
    # closed ClusterIP ports are refused
    assert "ip daddr 10.96.0.0/16 meta l4proto tcp reject with tcp reset" in text
    assert "ip daddr 10.96.0.0/16 reject with icmp type port-unreachable" in text
    # pods (prerouting) and the router's own processes (output) both go through the services chain
    assert "type nat hook prerouting priority dstnat" in text and "type nat hook output priority -100" in text
    assert text.count("{") == text.count("}")


def test_firewall_lets_the_workstation_reach_only_the_api_and_the_internet():
    text = firewall.ruleset()
    assert 'iifname "ws0" ip daddr 172.30.0.1 tcp dport 6443 accept' in text
    assert 'iifname "ws0" oifname "inet0" accept' in text
    assert 'iifname "ws0" reject with icmpx type admin-prohibited' in text
    assert 'oifname "ws0" reject with icmpx type admin-prohibited' in text
    assert 'oifname "inet0" masquerade' in text
    # the only accept from ws0 into the router itself is the API server
    accepts = [line.strip() for line in text.splitlines() if 'iifname "ws0"' in line and line.endswith("accept")]
    assert accepts == [
        'iifname "ws0" ct state established,related accept',
        'iifname "ws0" ip daddr 172.30.0.1 tcp dport 6443 accept',
        'iifname "ws0" oifname "inet0" accept',
    ]


# --- DNS ------------------------------------------------------------------------------------------


def test_cluster_dnsmasq_config_answers_cluster_names_and_forwards_the_rest():
    plan = build_plan()
    coredns = plan.pods_of("dns")[0]
    lines = clusterdns.cluster_conf(plan, coredns.ip, Path("/run/x/cluster-hosts")).splitlines()
    for expected in (
        "hostsdir=/run/x/cluster-hosts",
        "no-resolv",
        "no-hosts",
        f"listen-address={coredns.ip}",
        "server=203.0.113.53",
        "local=/cluster.local/",
        "local=/96.10.in-addr.arpa/",
        "host-record=web.default.svc.cluster.local,10.96.1.10",
        "host-record=kubernetes.default.svc.cluster.local,10.96.0.1",
        "host-record=catalog.webshop.svc.cluster.local,10.96.1.14",
        "srv-host=_http._tcp.web.default.svc.cluster.local,web.default.svc.cluster.local,80",
        "srv-host=_dns._udp.kube-dns.kube-system.svc.cluster.local,kube-dns.kube-system.svc.cluster.local,53",
        "host-record=10-244-1-11.default.pod.cluster.local,10.244.1.11",
        'txt-record=web.default.svc.cluster.local,"tether lab web service"',
    ):
        assert expected in lines, expected
    assert "host-record=mesh.default.svc.cluster.local,127.0.0.1" in lines
    host_records = len(plan.services) + len(plan.pods) + 1  # the mesh name
    assert len([line for line in lines if line.startswith("host-record=")]) == host_records


def test_service_hosts_name_the_services_created_through_the_api():
    hosts = clusterdns.service_hosts(
        [
            ("tether", "tether-manager", "10.96.0.2"),
            ("default", "web", "10.96.1.10"),  # the plan's: already a host-record
            ("default", "headless", "None"),
            ("a", "b", ""),
        ],
        [s.fqdn for s in build_plan().services],
    )
    assert hosts == "10.96.0.2 tether-manager.tether.svc.cluster.local\n"


def test_upstream_dnsmasq_config_is_closed_to_the_real_internet():
    lines = clusterdns.upstream_conf().splitlines()
    assert "local=/#/" in lines and "no-resolv" in lines
    assert not [line for line in lines if line.startswith("server=")]
    assert "host-record=example.test,203.0.113.80" in lines
    assert "host-record=www.example.com,203.0.113.80" in lines


def test_resolv_conf_and_dnsmasq_command_line(tmp_path):
    assert clusterdns.pod_resolv_conf("webshop") == (
        "search webshop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    )
    assert clusterdns.upstream_resolv_conf() == "nameserver 203.0.113.53\n"
    argv = clusterdns.dnsmasq_argv(tmp_path / "x.conf")
    assert argv[0] == "dnsmasq" and "--keep-in-foreground" in argv and f"--conf-file={tmp_path / 'x.conf'}" in argv


# --- journal --------------------------------------------------------------------------------------


def test_journal_round_trip(tmp_path):
    journal = Journal(options={"vpn": ["10.0.0.0/8"]}, state=UP, namespaces=["tether-lab-router"])
    journal.processes.append(ProcessRecord("apiserver", "tether-lab-router", 1234, 99, ["python", "-m", "x"], "/l"))
    journal.notes.append("a note")
    assert Journal.loads(journal.dumps()) == journal
    file = JournalFile(tmp_path / "sub" / "journal.json")
    assert file.load() is None
    file.save(journal)
    assert file.load() == journal
    assert file.load().process("apiserver").pid == 1234
    (tmp_path / "sub" / "journal.json").write_text('{"version": 1, "processes": [')  # torn write
    assert file.load() is None
    (tmp_path / "sub" / "journal.json").write_text(json.dumps({"version": 99}))
    assert file.load() is None
    file.remove()
    file.remove()
    assert Journal().state == BUILDING


# --- seed objects and kubeconfig ------------------------------------------------------------------


def _deserialize(obj, klass):
    return client.ApiClient()._ApiClient__deserialize(obj, klass)


def test_seed_objects_are_complete_for_the_official_client():
    plan = build_plan()
    seed = objects.seed_objects(plan, "2024-01-01T00:00:00Z")
    kinds = [o["kind"] for o in seed]
    assert kinds.index("Namespace") < kinds.index("Pod")
    assert {o["metadata"]["name"] for o in seed if o["kind"] == "Namespace"} == {"webshop", "tether"}
    for obj in seed:
        assert obj["apiVersion"] == ("apps/v1" if obj["kind"] == "Deployment" else "v1")
        model = _deserialize(obj, f"V1{obj['kind']}")
        assert model.metadata.name == obj["metadata"]["name"]
    pods = {o["metadata"]["name"]: _deserialize(o, "V1Pod") for o in seed if o["kind"] == "Pod"}
    assert pods["web-0"].status.pod_ip == str(plan.pod("default", "web-0").ip)
    # the workloads' pods are scheduled with their addresses, for the controller to start
    assert pods["web-0"].status.phase == "Pending" and pods["web-0"].metadata.labels == {"app": "web"}
    assert all(s.container_id is None for s in pods["web-0"].status.container_statuses)
    assert pods["coredns-0"].status.phase == "Running"
    assert (
        pods["coredns-0"].status.container_statuses[0].container_id
        == "netns://tether-lab-pod-kube-system-coredns-0/kube-dns"
    )
    web0 = pods["web-0"].spec.containers[0]
    assert web0.args[:3] == ["http", "--port", "8080"] and [e.name for e in web0.env] == ["POD_NAME", "POD_IP"]
    # every pod names its Deployment; the web pods carry the tether-agent sidecar
    deployments = {o["metadata"]["name"]: _deserialize(o, "V1Deployment") for o in seed if o["kind"] == "Deployment"}
    assert set(deployments) == {"web", "echo", "udp-echo", "bulk", "catalog", "whoami", "coredns"}
    web = deployments["web"]
    assert web.spec.replicas == 2 and web.spec.selector.match_labels == {"app": "web"}
    assert [c.name for c in web.spec.template.spec.containers] == ["web", "tether-agent"]
    assert [c.name for c in deployments["echo"].spec.template.spec.containers] == ["echo"]
    for pod in pods.values():
        [owner] = pod.metadata.owner_references
        assert owner.kind == "Deployment" and owner.controller
        assert owner.uid == deployments[owner.name].metadata.uid
        assert pod.metadata.labels.items() >= deployments[owner.name].spec.selector.match_labels.items()
    assert [c.name for c in pods["web-1"].spec.containers] == ["web", "tether-agent"]
    assert [s.name for s in pods["web-1"].status.container_statuses] == ["web", "tether-agent"]
    sidecar = pods["web-0"].spec.containers[1]
    assert sidecar.args[sidecar.args.index("--manager") + 1] == "tether-manager.tether.svc.cluster.local:8081"
    nodes = [_deserialize(o, "V1Node") for o in seed if o["kind"] == "Node"]
    assert [n.spec.pod_cidr for n in nodes] == ["10.244.1.0/24", "10.244.2.0/24"]
    svcs = {o["metadata"]["name"]: _deserialize(o, "V1Service") for o in seed if o["kind"] == "Service"}
    assert svcs["web"].spec.selector == {"app": "web"} and svcs["web"].spec.ports[0].target_port == 8080
    assert svcs["kubernetes"].spec.cluster_ip == "10.96.0.1" and svcs["kubernetes"].spec.selector is None
    # nothing of the manager: its chart's objects would clash with anything seeded
    assert not [o for o in seed if o["metadata"].get("namespace") == "tether"]


def test_kubeconfig_has_the_lab_context():
    config = objects.kubeconfig("http://172.30.0.1:6443")
    assert config["current-context"] == "tether-lab"
    assert config["clusters"][0]["cluster"]["server"] == "http://172.30.0.1:6443"
    assert config["contexts"][0]["context"]["namespace"] == "default"


# --- process specs and network commands -----------------------------------------------------------


def test_process_specs(tmp_path):
    plan = build_plan(["10.0.0.0/8"])
    paths = StatePaths(root=tmp_path)
    all_specs = {s.name: s for s in specs.process_specs(plan, paths, "/py")}
    api = all_specs["apiserver"]
    assert api.netns == "tether-lab-router"
    assert api.argv[:3] == ("/py", "-m", "tether.lab.apiserver")
    assert "--listen" in api.argv and "172.30.0.1:6443" in api.argv and str(paths.seed) in api.argv
    # no traffic-manager: it is installed (and then run by the controller), never started by the lab
    assert not [name for name in all_specs if "manager" in name]
    coredns = all_specs["pod/kube-system/coredns-0"]
    assert coredns.probe is not None and coredns.probe.host == str(plan.pod("kube-system", "coredns-0").ip)
    # the workloads (and their agents) are the controller's: it runs in the router, after the API server
    assert not [name for name in all_specs if name.startswith(("pod/default/", "pod/webshop/", "agent/"))]
    controller = all_specs["controller"]
    assert controller.netns == "tether-lab-router" and controller.after_api and controller.ready_file
    assert controller.host_mounts  # the pods' namespaces it adds must be seen outside it
    assert controller.argv[:3] == ("/py", "-m", "tether.lab.controller") and str(paths.kubeconfig) in controller.argv
    assert all_specs["corp-web"].netns == "tether-lab-corp"


def test_network_commands_stay_inside_lab_namespaces():
    """Every command names a lab namespace (-n NS, netns exec NS, or a netns add/delete of one)."""
    runner = RecordingRunner()
    ops = NetnsOps(runner)
    created = []
    plan = build_plan(["10.0.0.0/8"])
    network.build_cluster(ops, plan, created.append)
    network.build_vpn(ops, plan.vpn, created.append)
    pods = [p.netns for p in plan.pods if p.kind == "workload"]  # the controller's
    assert sorted(created) == sorted(n for n in plan.netns_names() if n not in pods)
    for argv in runner.commands:
        assert argv[0] == "ip", argv
        if argv[1] == "-n":
            assert argv[2].startswith(PREFIX), argv
            if "peer" in argv:
                assert argv[argv.index("netns") + 1].startswith(PREFIX), argv
        else:
            assert argv[1] == "netns" and argv[3].startswith(PREFIX), argv
    joined = [" ".join(a) for a in runner.commands]
    assert "ip -n tether-lab-router link add ws0 type veth peer name eth0 netns tether-lab-ws" in joined
    assert "ip -n tether-lab-ws route add 10.0.0.0/8 via 100.64.0.1 dev vpn0" in joined
    assert "ip -n tether-lab-pod-kube-system-coredns-0 route add default via 10.244.1.1 dev eth0 onlink" in joined
    assert "ip -n tether-lab-router route add local 10.96.0.0/16 dev lo" in joined
    # the bridge's MAC is given at creation, so the kernel never moves it to a port's
    assert "ip -n tether-lab-router link add cbr0 address 02:00:0a:f4:00:01 type bridge" in joined
    # no route to the cluster from the workstation
    ws_routes = [a for a in joined if a.startswith("ip -n tether-lab-ws route add")]
    assert all(not r.split()[5].startswith(("10.96", "10.244", "default")) for r in ws_routes if "vpn0" not in r)
    # nftables scripts go to the router
    assert [runner.stdins[i] is not None for i, a in enumerate(runner.commands) if "nft" in a] == [True, True]


def test_netns_list_parses_ip_output():
    runner = RecordingRunner({("ip", "netns", "list"): "tether-lab-ws (id: 3)\nother\ntether-lab-router (id: 1)\n"})
    assert NetnsOps(runner).list(PREFIX) == ["tether-lab-router", "tether-lab-ws"]


# --- workloads (their HTTP and TCP code, on loopback) ---------------------------------------------


def test_pattern_bytes_is_periodic():
    data = workloads.pattern_bytes(600_000)
    assert len(data) == 600_000
    assert all(data[i] == i % 251 for i in range(0, 600_000, 997))


def test_bulk_http_server_streams_and_hashes():
    async def scenario():
        server = await asyncio.start_server(
            lambda r, w: workloads.serve_http(r, w, workloads.bulk_handler), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 300_000
        writer.write(f"GET /bytes/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"200 OK" in head and f"Content-Length: {n}".encode() in head
        body = await reader.readexactly(n)
        assert body == workloads.pattern_bytes(n)
        payload = b"hello tether" * 1000
        chunked = b"".join(
            f"{len(payload[i : i + 4000]):x}\r\n".encode() + payload[i : i + 4000] + b"\r\n"
            for i in range(0, len(payload), 4000)
        )
        writer.write(b"POST /sha256 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        answer = json.loads(await reader.readexactly(length))
        assert answer == {"sha256": hashlib.sha256(payload).hexdigest(), "length": len(payload)}
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_http_hello_and_path_echo():
    async def scenario():
        handler = workloads.hello_handler("hello from {app} (pod {pod}, {ip})", "web", "web-0", "10.244.1.11")
        server = await asyncio.start_server(lambda r, w: workloads.serve_http(r, w, handler), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\nGET /a/b HTTP/1.0\r\n\r\n")
        data = await reader.read()  # the second request (HTTP/1.0) closes the connection
        assert b"hello from web (pod web-0, 10.244.1.11)\n" in data and data.endswith(b"/a/b\n")
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


# --- CLI without root -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["up"], ["up", "--vpn", "10.0.0.0/8"], ["down"], ["run", "--", "true"]])
def test_cli_needs_root(monkeypatch, capsys, command):
    from tether.helper.user.cli.main import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["lab", *command]) == 1
    assert "must run as root" in capsys.readouterr().err


def test_local_cluster_dns_forwards_to_the_workstation_resolver_and_logs_queries(tmp_path):
    plan = build_plan(local=True)
    coredns = plan.pods_of("dns")[0]
    lines = clusterdns.cluster_conf(plan, coredns.ip, Path("/run/x/cluster-hosts")).splitlines()
    assert "server=10.250.0.13" in lines and "server=203.0.113.53" not in lines
    assert "log-queries" in lines
    assert "log-queries" not in clusterdns.cluster_conf(build_plan(), coredns.ip, Path("/x")).splitlines()
    resolver = clusterdns.workstation_resolver_conf(IPv4Address("10.250.0.13")).splitlines()
    for expected in ("listen-address=10.250.0.13", "server=203.0.113.53", "cache-size=0", "no-resolv"):
        assert expected in resolver, expected
    all_specs = {s.name: s for s in specs.process_specs(plan, StatePaths(root=tmp_path), "/py")}
    spec = all_specs["ws-resolver"]
    assert spec.netns == "tether-lab-ws" and str(tmp_path / "conf" / "ws-resolver.conf") in " ".join(spec.argv)
    assert spec.probe is not None and spec.probe.host == "10.250.0.13"
    assert "ws-resolver" not in {s.name for s in specs.process_specs(build_plan(), StatePaths(root=tmp_path), "/py")}


def test_local_workstation_joins_the_cluster_bridge_with_a_route_to_the_pods():
    runner = RecordingRunner()
    plan = build_plan(local=True)
    network.build_local(NetnsOps(runner), plan)
    joined = [" ".join(a) for a in runner.commands]
    assert "ip -n tether-lab-router link add wsnode0 type veth peer name node0 netns tether-lab-ws" in joined
    assert "ip -n tether-lab-router link set wsnode0 master cbr0" in joined
    assert "ip -n tether-lab-ws addr add 10.250.0.13/24 dev node0" in joined
    assert "ip -n tether-lab-ws route add 10.244.0.0/16 via 10.244.1.1 dev node0 onlink" in joined
    assert "ip -n tether-lab-router route add 10.250.0.13/32 dev cbr0" in joined
    assert all(a[1] == "-n" and a[2].startswith(PREFIX) for a in runner.commands)
