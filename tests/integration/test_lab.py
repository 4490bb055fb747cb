"""The sandbox cluster, as root: API server, cluster DNS, ClusterIP DNAT, workloads, isolation of the
workstation, the VPN, and a clean `down` / crash recovery."""

import concurrent.futures
import hashlib
import http.client
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import kubernetes
import pytest
import yaml
from dnslib import DNSRecord
from manager_client import manager_pod, manager_service_ip

from tether.lab import procs, workloads
from tether.lab.topology import SERVICE_CIDR

pytestmark = pytest.mark.lab


# --- helpers --------------------------------------------------------------------------------------


def http_get(host, port=80, path="/", timeout=5.0):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def dns(server, name, qtype="A", tcp=False):
    reply = DNSRecord.parse(DNSRecord.question(name, qtype).send(server, 53, tcp=tcp, timeout=3))
    return reply.header.rcode, [str(rr.rdata) for rr in reply.rr]


def echo_roundtrip(host, port, payload):
    with socket.create_connection((host, port), timeout=10) as s:
        got = bytearray()

        def reader():
            while chunk := s.recv(1 << 20):
                got.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(20)
        return bytes(got)


def connect_error(host, port, timeout=3.0):
    """The error (errno) a TCP connect ends with, and how long it took; None if it connected."""
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None, time.monotonic() - start
    except OSError as exc:
        return exc, time.monotonic() - start


def cli(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "tether.helper.user.cli.main", "lab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- the API server, from the workstation ---------------------------------------------------------


def test_kubernetes_client_lists_nodes_pods_and_services(lab, workstation):
    api = kubernetes.config.new_client_from_config(config_file=str(lab.kubeconfig), context="tether-lab")
    try:
        with workstation():
            v1 = kubernetes.client.CoreV1Api(api)
            nodes = v1.list_node().items
            pods = v1.list_pod_for_all_namespaces().items
            services = v1.list_service_for_all_namespaces().items
    finally:
        api.close()
    assert {n.metadata.name: n.spec.pod_cidr for n in nodes} == {
        "lab-node-1": "10.244.1.0/24",
        "lab-node-2": "10.244.2.0/24",
    }
    # the lab's own, and besides them only what `tether manager install` put in "tether"
    installed = [p for p in pods if p.metadata.namespace == "tether"]
    assert [p.metadata.labels["app.kubernetes.io/name"] for p in installed] == ["tether-manager"]
    pods = [p for p in pods if p.metadata.namespace != "tether"]
    pod_ips = {f"{p.metadata.namespace}/{p.metadata.name}": p.status.pod_ip for p in pods}
    assert pod_ips == lab.pod_ips
    running = {f"{p.metadata.namespace}/{p.metadata.name}" for p in pods if p.status.phase == "Running"}
    assert running == set(lab.pod_ips)
    cluster_ips = {f"{s.metadata.namespace}/{s.metadata.name}": s.spec.cluster_ip for s in services}
    assert cluster_ips.pop("tether/tether-manager") not in cluster_ips.values()
    assert cluster_ips == lab.cluster_ips
    assert all(ipaddress.ip_address(ip) in SERVICE_CIDR for ip in cluster_ips.values())
    assert lab.api_url == "http://172.30.0.1:6443"


def test_kubeconfig_for_the_user(lab):
    config = yaml.safe_load(lab.kubeconfig.read_text())
    assert config["current-context"] == "tether-lab"
    assert config["clusters"][0]["cluster"]["server"] == lab.api_url
    assert config["contexts"][0]["context"]["namespace"] == "default"
    pod_config = yaml.safe_load(lab.pod_kubeconfig.read_text())
    assert pod_config["clusters"][0]["cluster"]["server"] == "http://10.96.0.1:443"


# --- inside the cluster: DNS and ClusterIPs from a pod --------------------------------------------


def test_pod_resolver_finds_services_by_short_and_cross_namespace_names(lab, lab_run):
    out = lab_run("getent", "ahostsv4", "web", pod="default/web-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == lab.service_ip("web")
    out = lab_run("getent", "hosts", "web.default", "catalog.webshop", "example.test", pod="default/echo-0")
    assert out.returncode == 0, out.stderr
    resolved = {line.split()[1]: line.split()[0] for line in out.stdout.splitlines()}
    assert resolved == {
        "web.default.svc.cluster.local": lab.service_ip("web"),
        "catalog.webshop.svc.cluster.local": lab.service_ip("catalog", "webshop"),
        "example.test": "203.0.113.80",
    }
    resolv = lab_run("cat", "/etc/resolv.conf", pod="webshop/catalog-0").stdout
    assert resolv.splitlines() == [
        "search webshop.svc.cluster.local svc.cluster.local cluster.local",
        "nameserver 10.96.0.10",
        "options ndots:5",
    ]


def test_cluster_dns_records(lab, netns):
    with netns(lab.pod_netns["default/web-0"]):
        assert dns("10.96.0.10", "web.default.svc.cluster.local") == (0, [lab.service_ip("web")])
        assert dns("10.96.0.10", "web.default.svc.cluster.local", tcp=True) == (0, [lab.service_ip("web")])
        assert dns("10.96.0.10", "kubernetes.default.svc.cluster.local") == (0, ["10.96.0.1"])
        web0 = lab.pod_ips["default/web-0"]
        assert dns("10.96.0.10", f"{web0.replace('.', '-')}.default.pod.cluster.local") == (0, [web0])
        reverse = ".".join(reversed(lab.service_ip("web").split("."))) + ".in-addr.arpa"
        assert dns("10.96.0.10", reverse, "PTR") == (0, ["web.default.svc.cluster.local."])
        assert dns("10.96.0.10", "_http._tcp.web.default.svc.cluster.local", "SRV") == (
            0,
            ["0 0 80 web.default.svc.cluster.local."],
        )
        assert dns("10.96.0.10", "web.default.svc.cluster.local", "TXT") == (0, ['"tether lab web service"'])
        assert dns("10.96.0.10", "nope.default.svc.cluster.local")[0] == 3  # NXDOMAIN
        assert dns("10.96.0.10", "www.example.com") == (0, ["203.0.113.80"])  # forwarded upstream
        assert dns("10.96.0.10", "nothing.invalid")[0] == 3


def test_http_through_the_web_clusterip_round_robins_over_both_replicas(lab, lab_run, netns):
    out = lab_run("curl", "-s", "-m", "5", "http://web.default/", pod="default/echo-0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hello from web (pod web-")
    with netns(lab.pod_netns["default/bulk-0"]):
        bodies = {http_get(lab.service_ip("web"))[1].decode().strip() for _ in range(6)}
        assert http_get(lab.service_ip("web"), path="/some/path") == (200, b"/some/path\n")
        catalog = http_get(lab.service_ip("catalog", "webshop"))
    assert bodies == {
        f"hello from web (pod web-0, {lab.pod_ips['default/web-0']})",
        f"hello from web (pod web-1, {lab.pod_ips['default/web-1']})",
    }
    assert catalog == (200, f"hello from catalog (pod catalog-0, {lab.pod_ips['webshop/catalog-0']})\n".encode())


def test_a_pod_reaches_itself_through_its_service(lab, netns):
    """Hairpin: web-0 -> web ClusterIP -> (sometimes) web-0 again."""
    with netns(lab.pod_netns["default/web-0"]):
        bodies = {http_get(lab.service_ip("web"))[1] for _ in range(6)}
    assert len(bodies) == 2


def test_the_pods_gateway_keeps_its_mac_while_bridge_ports_come_and_go(lab, netns):
    """A veth with a lower MAC than every other joins the bridge and leaves again, as a new pod's may: the
    bridge (every pod's gateway) keeps its MAC, so what a pod learnt meanwhile stays right and it reaches a
    ClusterIP at once. A bridge that followed its lowest port's MAC left such a pod sending to a MAC nobody
    answers to for 30 s or more (and flushed the router's own neighbour table)."""
    router, port, web_0 = "tether-lab-router", "lowmac0", lab.pod_netns["default/web-0"]

    def bridge_mac() -> str:
        return subprocess.run(["ip", "-n", router, "-br", "link", "show", "cbr0"],
                              capture_output=True, text=True, check=True).stdout.split()[2]  # fmt: skip

    def echo_from_web_0() -> bytes:
        with netns(web_0), socket.create_connection((lab.service_ip("echo"), 7), 3) as s:
            s.sendall(b"ping")
            s.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: s.recv(16), b""))

    before = bridge_mac()
    try:
        subprocess.run(["ip", "-n", router, "link", "add", port, "address", "02:00:00:00:00:00", "type", "veth",
                        "peer", "name", port + "p"], check=True)  # fmt: skip
        subprocess.run(["ip", "-n", router, "link", "set", port, "master", "cbr0", "up"], check=True)
        joined = bridge_mac()
        # web-0 learns the gateway's MAC as it is while that port is there
        subprocess.run(["ip", "-n", web_0, "neigh", "flush", "all"], check=True)
        assert echo_from_web_0() == b"ping"
    finally:
        subprocess.run(["ip", "-n", router, "link", "delete", port], check=False)
    assert (joined, bridge_mac()) == (before, before)
    assert echo_from_web_0() == b"ping"


def test_tcp_echo_moves_10_mb_and_many_connections(lab, netns):
    payload = os.urandom(10 * 1024 * 1024)
    with netns(lab.pod_netns["default/web-1"]):
        echoed = echo_roundtrip(lab.service_ip("echo"), 7, payload)
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            small = [os.urandom(20_000) for _ in range(64)]
            results = list(pool.map(lambda p: echo_roundtrip(lab.service_ip("echo"), 7, p), small))
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert results == small


def test_udp_echo_through_the_clusterip(lab, netns):
    with netns(lab.pod_netns["default/web-0"]), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        answers = []
        for i in range(5):
            s.sendto(f"ping {i}".encode(), (lab.service_ip("udp-echo"), 7))
            data, peer = s.recvfrom(2048)
            answers.append((data, peer))
    assert answers == [(f"ping {i}".encode(), (lab.service_ip("udp-echo"), 7)) for i in range(5)]


def test_closed_clusterip_ports_are_refused_at_once(lab, netns):
    with netns(lab.pod_netns["default/web-0"]):
        closed_port = connect_error(lab.service_ip("web"), 81)
        no_service = connect_error("10.96.99.99", 80)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.connect((lab.service_ip("udp-echo"), 8))
            s.send(b"x")
            with pytest.raises(ConnectionRefusedError):
                s.recv(10)
    for err, elapsed in (closed_port, no_service):
        assert isinstance(err, ConnectionRefusedError)
        assert elapsed < 1.0


def test_bulk_streams_a_pattern_and_hashes_uploads(lab, netns):
    n = 5_000_000
    body = os.urandom(3_000_000)
    with netns(lab.pod_netns["default/web-0"]):
        status, data = http_get(lab.service_ip("bulk"), path=f"/bytes/{n}", timeout=20)
        conn = http.client.HTTPConnection(lab.service_ip("bulk"), 80, timeout=20)
        conn.request("POST", "/sha256", body=body)
        answer = json.loads(conn.getresponse().read())
        conn.close()
        with socket.create_connection((lab.service_ip("bulk"), 9000), timeout=10) as s:
            s.sendall(b"1000000\n")
            raw = bytearray()
            while chunk := s.recv(1 << 20):
                raw.extend(chunk)
        with socket.create_connection((lab.service_ip("bulk"), 9001), timeout=10) as s:
            s.sendall(body)
            s.shutdown(socket.SHUT_WR)
            sink = s.makefile().readline().split()
    assert status == 200 and data == workloads.pattern_bytes(n)
    assert answer == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    assert bytes(raw) == workloads.pattern_bytes(1_000_000)
    assert sink == [str(len(body)), hashlib.sha256(body).hexdigest()]


def test_loopback_only_listener_in_the_web_pod(lab, netns):
    with netns(lab.pod_netns["default/web-0"]):
        inside = http_get("127.0.0.1", 9090)
    with netns(lab.pod_netns["default/web-1"]):
        outside, _ = connect_error(lab.pod_ips["default/web-0"], 9090)
    assert inside == (200, b"hello from web on loopback (pod web-0)\n")
    assert isinstance(outside, ConnectionRefusedError)


def test_the_installed_manager_serves_through_its_service_by_its_dns_name(lab, netns):
    """The manager is none of the lab's: `tether manager install` created its Service (the API server chose the
    ClusterIP), the cluster DNS learnt the name from the controller, and the controller runs its pod."""
    cluster_ip = manager_service_ip(lab)
    assert cluster_ip not in lab.cluster_ips.values()
    assert manager_pod(lab).metadata.name.startswith("tether-manager-")
    with netns(lab.pod_netns["default/web-0"]):
        answer = dns("10.96.0.10", "tether-manager.tether.svc.cluster.local")
        err, _ = connect_error(cluster_ip, 8081)
    assert answer == (0, [cluster_ip])
    assert err is None


# --- the workstation ------------------------------------------------------------------------------


def test_workstation_reaches_the_api_and_the_internet_but_not_the_cluster(lab, workstation, lab_run):
    with workstation():
        api_status, _ = http_get("172.30.0.1", 6443, "/api/v1/namespaces/default")
        svc_err, svc_time = connect_error(lab.service_ip("web"), 80)
        pod_err, pod_time = connect_error(lab.pod_ips["default/web-0"], 8080)
        upstream = dns("203.0.113.53", "example.test")
        upstream_txt = dns("203.0.113.53", "example.test", "TXT")
        unknown = dns("203.0.113.53", "web.default.svc.cluster.local")
        internet = http_get("203.0.113.80")
    assert api_status == 200
    for err, elapsed in ((svc_err, svc_time), (pod_err, pod_time)):
        assert isinstance(err, OSError) and elapsed < 1.0
    assert upstream == (0, ["203.0.113.80"])
    assert upstream_txt == (0, ['"tether lab upstream"'])
    assert unknown[0] == 3
    assert internet == (200, b"hello from the internet (203.0.113.80)\n")
    # with the namespace's resolv.conf, a process resolves public names through the upstream server
    out = lab_run("curl", "-s", "-m", "5", "http://www.example.com/")
    assert (out.returncode, out.stdout) == (0, "hello from the internet (203.0.113.80)\n")
    assert lab_run("getent", "hosts", "web.default.svc.cluster.local").returncode == 2


def test_router_rejects_workstation_traffic_to_the_cluster_even_with_a_route(lab, workstation):
    """Isolation does not rely on the workstation's missing route: the router refuses it too."""
    subprocess.run(["ip", "-n", lab.ws_netns, "route", "add", "10.0.0.0/8", "via", "172.30.0.1"], check=True)
    try:
        with workstation():
            targets = ((lab.service_ip("web"), 80), (lab.pod_ips["default/web-0"], 8080))
            results = [connect_error(ip, port) for ip, port in targets]
            router_port = connect_error("172.30.0.1", 22)
    finally:
        subprocess.run(["ip", "-n", lab.ws_netns, "route", "del", "10.0.0.0/8"], check=True)
    for err, elapsed in results:
        assert isinstance(err, OSError) and not isinstance(err, TimeoutError) and elapsed < 1.0
    assert isinstance(router_port[0], ConnectionRefusedError)


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_status_kubeconfig_and_run(lab):
    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["state"] == "up"
    assert {f"{s['namespace']}/{s['name']}": s["cluster_ip"] for s in data["services"]} == lab.cluster_ips
    assert all(p["running"] for p in data["pods"])
    text = cli("status").stdout
    assert "http://172.30.0.1:6443" in text and "10.96.0.0/16" in text and "default/web" in text
    assert cli("kubeconfig").stdout.strip() == str(lab.kubeconfig)
    assert cli("run", "--", "sh", "-c", "exit 7").returncode == 7
    out = cli("run", "--", "sh", "-c", 'echo "$KUBECONFIG"; ip -o -4 addr show dev eth0')
    assert out.stdout.splitlines()[0] == str(lab.kubeconfig) and "172.30.0.2/24" in out.stdout
    assert "10.244.2.11" in cli("run", "--pod", "default/echo-0", "--", "ip", "-o", "-4", "addr").stdout
    bad = cli("run", "--pod", "default/nope", "--", "true")
    assert bad.returncode == 1 and "no pod 'default/nope'" in bad.stderr
    # `up` (here: already up) tells how to install the traffic-manager, which the lab does not start
    up = cli("up")
    assert up.returncode == 0, up.stderr
    assert 'tether lab run -- tether manager install --kubeconfig "$(tether lab kubeconfig)" --wait' in up.stdout


def test_up_again_is_a_no_op(lab_control, lab):
    start = time.monotonic()
    result = lab_control.up()
    assert result.action == "already up"
    assert time.monotonic() - start < 2
    assert result.info.cluster_ips == lab.cluster_ips


# --- VPN, crash recovery, down (these change the lab and put it back) -----------------------------


def test_vpn_hosts_answer_through_vpn0(lab_control, workstation):
    try:
        result = lab_control.up(vpn=["10.0.0.0/8"])
        assert result.action == "vpn changed"
        hosts = result.info.vpn_hosts
        assert [(str(h.address), h.where) for h in hosts] == [
            ("10.96.200.200", "service CIDR"),
            ("10.244.1.200", "pod CIDR 10.244.1.0/24"),
            ("10.0.0.1", "outside cluster ranges"),
        ]
        routes = subprocess.run(["ip", "-n", "tether-lab-ws", "route"], capture_output=True, text=True).stdout
        assert "10.0.0.0/8 via 100.64.0.1 dev vpn0" in routes
        with workstation():
            answers = {str(h.address): http_get(str(h.address)) for h in hosts}
        assert answers == {a: (200, f"hello from corp host {a}\n".encode()) for a in answers}
        listed = json.loads(cli("status", "--json").stdout)["vpn"]
        assert [h["address"] for h in listed["hosts"]] == list(answers)
        assert listed["interface"] == "vpn0" and listed["gateway"] == "100.64.0.1"
    finally:
        lab_control.up()
    routes = subprocess.run(["ip", "-n", "tether-lab-ws", "route"], capture_output=True, text=True).stdout
    assert "vpn0" not in routes
    assert "tether-lab-corp" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_up_recovers_after_a_crash(lab_control, lab, workstation):
    journal = lab_control.journal_file.load()
    api = journal.process("apiserver")
    os.kill(api.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while procs.is_running(api.pid, api.start_time) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lab_control.status()["state"] == "degraded"
    assert cli("status").returncode == 1
    result = lab_control.up()
    assert result.action == "rebuilt"
    assert lab_control.status()["state"] == "up"
    assert lab_control.journal_file.load().process("apiserver").pid != api.pid
    with workstation():
        assert http_get("172.30.0.1", 6443, "/api/v1/namespaces/default")[0] == 200


def test_down_leaves_nothing_and_up_builds_again(lab_control, lab, assert_lab_gone):
    journal = lab_control.journal_file.load()
    pids = [p.pid for p in journal.processes]
    out = cli("down")
    assert out.returncode == 0, out.stderr
    assert_lab_gone(pids)
    assert cli("down").returncode == 0  # idempotent
    assert cli("kubeconfig").returncode == 1
    assert json.loads(cli("status", "--json").stdout) == {"state": "down", "leftovers": []}
    assert lab_control.up().action == "built"
