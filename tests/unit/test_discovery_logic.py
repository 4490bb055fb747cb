"""Cluster discovery: pod-subnet strategies, event handling, the service probe, and the list/watch loop.

The last class runs ClusterDiscovery against a tiny in-process API server on
127.0.0.1 (no network beyond loopback) to check the real client calls, 410
handling and that stop() is prompt; richer I/O is covered by the integration
tests against the Kubernetes API emulator.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address as ip
from ipaddress import ip_network as net
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tether.manager.config import ManagerConfig, PodCIDRStrategy
from tether.manager.discovery import (
    ClusterDiscovery,
    ClusterNetwork,
    Kind,
    NetworkTracker,
    NodeInfo,
    PodInfo,
    compute_pod_subnets,
    decide_pod_subnets,
    discover_service_subnets,
    needed_kinds,
    node_info,
    pod_info,
    probe_service_cidr,
    probe_service_cidrs,
)

AUTO = PodCIDRStrategy.AUTO
NODES = PodCIDRStrategy.NODE_POD_CIDRS
COVER = PodCIDRStrategy.COVER_POD_IPS
ENV = PodCIDRStrategy.ENVIRONMENT


# ---------------------------------------------------------------------------
# Kubernetes model objects, built the way the API would return them
# ---------------------------------------------------------------------------


def v1_node(name: str, *cidrs: str, legacy: bool = False) -> client.V1Node:
    if legacy:  # clusters before dual-stack only fill spec.podCIDR
        spec = client.V1NodeSpec(pod_cidr=cidrs[0] if cidrs else None)
    else:
        spec = client.V1NodeSpec(pod_cidr=cidrs[0] if cidrs else None, pod_cidrs=list(cidrs) or None)
    return client.V1Node(metadata=client.V1ObjectMeta(name=name), spec=spec)


def v1_pod(
    name: str,
    *ips: str,
    namespace: str = "default",
    host_network: bool = False,
    phase: str = "Running",
    legacy: bool = False,
) -> client.V1Pod:
    status = client.V1PodStatus(phase=phase, pod_ip=ips[0] if ips else None)
    if ips and not legacy:
        status.pod_ips = [client.V1PodIP(ip=i) for i in ips]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app")], host_network=host_network or None),
        status=status,
    )


# ---------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------


class TestExtraction:
    def test_node_pod_cidrs_dual_stack(self):
        info = node_info(v1_node("n1", "10.244.1.0/24", "fd00:244:1::/64"))
        assert info == NodeInfo("n1", (net("10.244.1.0/24"), net("fd00:244:1::/64")))

    def test_node_legacy_pod_cidr(self):
        assert node_info(v1_node("n1", "10.244.1.0/24", legacy=True)).pod_cidrs == (net("10.244.1.0/24"),)

    def test_node_without_cidr_and_with_garbage(self):
        assert node_info(v1_node("n1")).pod_cidrs == ()
        raw = {"metadata": {"name": "n2"}, "spec": {"podCIDRs": ["bogus", "10.1.0.0/24"]}}
        assert node_info(raw) == NodeInfo("n2", (net("10.1.0.0/24"),))

    def test_pod_ips(self):
        info = pod_info(v1_pod("web", "10.244.1.5", "fd00:244:1::5", namespace="shop"))
        assert info == PodInfo("shop/web", (ip("10.244.1.5"), ip("fd00:244:1::5")), False, "Running")
        assert info.counts

    def test_pod_legacy_ip_and_raw_dict(self):
        assert pod_info(v1_pod("a", "10.0.0.1", legacy=True)).ips == (ip("10.0.0.1"),)
        raw = {"metadata": {"namespace": "x", "name": "b"}, "status": {"podIP": "10.0.0.2", "phase": "Pending"}}
        assert pod_info(raw) == PodInfo("x/b", (ip("10.0.0.2"),), False, "Pending")

    @pytest.mark.parametrize(
        "pod",
        [
            v1_pod("host", "192.168.1.10", host_network=True),
            v1_pod("pending"),
            v1_pod("done", "10.244.1.9", phase="Succeeded"),
            v1_pod("crashed", "10.244.1.9", phase="Failed"),
        ],
    )
    def test_pods_that_do_not_count(self, pod):
        assert not pod_info(pod).counts


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

NODE_A = NodeInfo("a", (net("10.244.0.0/24"),))
NODE_B = NodeInfo("b", (net("10.244.1.0/24"), net("fd00:244:1::/64")))
POD_1 = PodInfo("ns/p1", (ip("10.244.0.5"),), phase="Running")
POD_2 = PodInfo("ns/p2", (ip("10.244.1.7"),), phase="Running")
POD_OTHER = PodInfo("ns/p3", (ip("100.64.3.9"),), phase="Running")
HOST_POD = PodInfo("kube-system/proxy", (ip("192.168.5.10"),), host_network=True, phase="Running")
DONE_POD = PodInfo("ns/job", (ip("172.30.0.4"),), phase="Succeeded")
MANAGER_IP = "10.244.1.7"


class TestStrategies:
    def test_node_pod_cidrs_trusted(self):
        subnets = compute_pod_subnets(NODES, [NODE_A, NODE_B], [POD_1], MANAGER_IP, [])
        assert subnets == [net("10.244.0.0/24"), net("10.244.1.0/24"), net("fd00:244:1::/64")]

    def test_node_pod_cidrs_untrusted_gives_nothing_and_says_why(self):
        decision = decide_pod_subnets(NODES, [NODE_A, NODE_B], [POD_OTHER], "100.64.3.9", [])
        assert decision.subnets == ()
        assert "100.64.3.9" in decision.note
        assert compute_pod_subnets(NODES, [NODE_A], [POD_OTHER], "100.64.3.9", []) == []

    def test_node_pod_cidrs_unknown_manager_ip(self):
        decision = decide_pod_subnets(NODES, [NODE_A], [], None, [])
        assert decision.subnets == ()
        assert "unknown" in decision.note

    def test_node_pod_cidrs_drop_covered(self):
        wide = NodeInfo("c", (net("10.244.0.0/16"),))
        assert compute_pod_subnets(NODES, [NODE_A, wide], [], MANAGER_IP, []) == [net("10.244.0.0/16")]

    def test_cover_pod_ips_ignores_host_network_and_finished_pods(self):
        subnets = compute_pod_subnets(COVER, [NODE_A], [POD_1, POD_2, POD_OTHER, HOST_POD, DONE_POD], None, [])
        assert subnets == [net("10.244.0.0/23"), net("100.64.3.0/24")]

    def test_cover_pod_ips_ignores_nodes(self):
        assert compute_pod_subnets(COVER, [NODE_A, NODE_B], [], MANAGER_IP, []) == []

    def test_environment_uses_configured(self):
        configured = [net("10.0.0.0/8"), net("10.244.0.0/16"), net("fd00::/8")]
        assert compute_pod_subnets(ENV, [NODE_A], [POD_OTHER], MANAGER_IP, configured) == [
            net("10.0.0.0/8"),
            net("fd00::/8"),
        ]

    def test_auto_prefers_trusted_node_cidrs(self):
        decision = decide_pod_subnets(AUTO, [NODE_A, NODE_B], [POD_1, POD_OTHER], MANAGER_IP, [])
        assert decision.source is NODES
        assert decision.subnets == (net("10.244.0.0/24"), net("10.244.1.0/24"), net("fd00:244:1::/64"))

    def test_auto_falls_back_to_cover_when_manager_outside_node_cidrs(self):
        # e.g. EKS: nodes carry a podCIDR the VPC CNI never uses.
        decision = decide_pod_subnets(AUTO, [NODE_A], [POD_OTHER, HOST_POD], "100.64.3.9", [])
        assert decision.source is COVER
        assert decision.subnets == (net("100.64.3.0/24"),)
        assert "100.64.3.9" in decision.note

    def test_auto_falls_back_when_nodes_have_no_cidrs(self):
        subnets = compute_pod_subnets(AUTO, [NodeInfo("x")], [POD_1], MANAGER_IP, [])
        assert subnets == [net("10.244.0.0/24")]

    def test_needed_kinds(self):
        assert needed_kinds(AUTO) == {Kind.NODES, Kind.PODS}
        assert needed_kinds(NODES) == {Kind.NODES}
        assert needed_kinds(COVER) == {Kind.PODS}
        assert needed_kinds(ENV) == set()


# ---------------------------------------------------------------------------
# Event handling
# ---------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[ClusterNetwork] = []

    def __call__(self, network: ClusterNetwork) -> None:
        self.calls.append(network)

    @property
    def pods(self) -> list[list[str]]:
        return [[str(n) for n in c.pod_subnets] for c in self.calls]


SERVICE = net("10.96.0.0/12")


def tracker(strategy=AUTO, manager_ip=MANAGER_IP, configured=()) -> tuple[NetworkTracker, Recorder]:
    recorder = Recorder()
    t = NetworkTracker(
        strategy=strategy,
        on_change=recorder,
        service_subnets=[SERVICE],
        configured_pod_cidrs=configured,
        manager_pod_ip=manager_ip,
    )
    return t, recorder


class TestNetworkTracker:
    def test_nothing_published_until_all_needed_kinds_listed(self):
        t, rec = tracker()
        t.reset(Kind.NODES, [v1_node("n1", "10.244.1.0/24")])
        t.apply(Kind.NODES, "ADDED", v1_node("n2", "10.244.2.0/24"))
        assert rec.calls == []
        assert t.snapshot() is None
        t.reset(Kind.PODS, [v1_pod("p", "10.244.1.7")])
        assert rec.pods == [["10.244.1.0/24", "10.244.2.0/24"]]
        first = rec.calls[0]
        assert first.service_subnet == SERVICE
        assert first.service_subnets == (SERVICE,)
        assert first.pod_subnet_source == "nodePodCIDRs"
        assert (first.node_count, first.pod_count) == (2, 1)
        assert t.snapshot() == first

    def test_only_real_changes_are_published(self):
        t, rec = tracker(strategy=COVER)
        t.reset(Kind.PODS, [v1_pod("a", "10.1.0.5"), v1_pod("b", "10.1.0.9")])
        assert rec.pods == [["10.1.0.0/24"]]
        events = [
            ("MODIFIED", v1_pod("a", "10.1.0.5")),  # status noise: same IP
            ("ADDED", v1_pod("c", "10.1.0.77")),  # inside the covered /24
            ("ADDED", v1_pod("proxy", "192.168.9.9", host_network=True)),  # node IP, must not count
            ("BOOKMARK", {"metadata": {"resourceVersion": "42"}}),
            ("DELETED", v1_pod("never-seen", "10.9.9.9")),
            ("ADDED", v1_pod("far", "10.7.3.3")),  # new /16 group: change
            ("MODIFIED", v1_pod("far", "10.7.3.3", phase="Succeeded")),  # finished: change back
            ("ADDED", v1_pod("d", "10.1.2.1")),  # widens the 10.1 group: change
            ("DELETED", v1_pod("d", "10.1.2.1")),  # and back
        ]
        for event_type, obj in events:
            t.apply(Kind.PODS, event_type, obj)
        assert rec.pods == [
            ["10.1.0.0/24"],
            ["10.1.0.0/24", "10.7.3.0/24"],
            ["10.1.0.0/24"],
            ["10.1.0.0/22"],
            ["10.1.0.0/24"],
        ]
        assert rec.calls[-1].pod_count == 3

    def test_counts_alone_do_not_publish(self):
        t, rec = tracker(strategy=NODES)
        t.reset(Kind.NODES, [v1_node("n1", "10.244.0.0/16")])
        t.apply(Kind.NODES, "ADDED", v1_node("n2", "10.244.5.0/24"))  # covered by n1's: same network
        assert len(rec.calls) == 1
        assert t.snapshot() is rec.calls[0]  # the snapshot is what was last published
        t.apply(Kind.NODES, "DELETED", v1_node("n1", "10.244.0.0/16"))
        assert rec.pods[-1] == []  # only n2 left, and the manager IP is not in it: untrusted

    def test_auto_switches_from_cover_to_nodes_when_a_node_proves_trustworthy(self):
        t, rec = tracker()
        t.reset(Kind.NODES, [v1_node("n1", "10.244.0.0/24")])
        t.reset(Kind.PODS, [v1_pod("mgr", MANAGER_IP), v1_pod("p", "10.244.0.3")])
        assert rec.calls[-1].pod_subnet_source == "coverPodIPs"
        assert rec.pods[-1] == ["10.244.0.0/23"]
        t.apply(Kind.NODES, "ADDED", v1_node("n2", "10.244.1.0/24"))
        assert rec.calls[-1].pod_subnet_source == "nodePodCIDRs"
        assert rec.pods[-1] == ["10.244.0.0/24", "10.244.1.0/24"]
        assert len(rec.calls) == 2

    def test_relist_replaces_state(self):
        t, rec = tracker(strategy=COVER)
        t.reset(Kind.PODS, [v1_pod("a", "10.1.0.5"), v1_pod("b", "10.2.0.5")])
        t.reset(Kind.PODS, [v1_pod("a", "10.1.0.5")])  # b was deleted while the watch was down
        assert rec.pods == [["10.1.0.0/24", "10.2.0.0/24"], ["10.1.0.0/24"]]

    def test_raw_dict_events(self):
        t, rec = tracker(strategy=COVER)
        t.reset(Kind.PODS, [])
        assert rec.pods == [[]]
        raw = {"metadata": {"namespace": "x", "name": "y"}, "status": {"podIP": "10.3.0.1", "phase": "Running"}}
        t.apply(Kind.PODS, "ADDED", raw)
        assert rec.pods[-1] == ["10.3.0.0/24"]

    def test_environment_publishes_on_refresh_without_resources(self):
        t, rec = tracker(strategy=ENV, configured=[net("10.244.0.0/16")])
        assert t.needed == frozenset()
        assert rec.calls == []
        t.refresh()
        t.refresh()
        assert rec.pods == [["10.244.0.0/16"]]
        assert rec.calls[0].pod_subnet_source == "environment"

    def test_nodes_unavailable_under_auto(self):
        t, rec = tracker()
        t.reset(Kind.PODS, [v1_pod("p", "10.244.1.7")])
        assert rec.calls == []
        t.mark_unavailable(Kind.NODES, "403 Forbidden")
        assert rec.pods == [["10.244.1.0/24"]]

    def test_failing_callback_does_not_break_tracking(self):
        calls = []

        def explode(network):
            calls.append(network)
            raise RuntimeError("boom")

        t = NetworkTracker(strategy=COVER, on_change=explode)
        t.reset(Kind.PODS, [v1_pod("a", "10.1.0.1")])
        t.apply(Kind.PODS, "ADDED", v1_pod("b", "10.2.0.1"))
        assert [len(c.pod_subnets) for c in calls] == [1, 2]

    def test_closed_tracker_publishes_nothing(self):
        t, rec = tracker(strategy=COVER)
        t.reset(Kind.PODS, [])
        t.close()
        t.apply(Kind.PODS, "ADDED", v1_pod("a", "10.1.0.1"))
        assert len(rec.calls) == 1

    def test_equality_ignores_counts(self):
        a = ClusterNetwork((SERVICE,), (net("10.1.0.0/24"),), "coverPodIPs", 1, 2)
        b = ClusterNetwork((SERVICE,), (net("10.1.0.0/24"),), "nodePodCIDRs", 5, 9)
        assert a == b
        assert ClusterNetwork((), ()).service_subnet is None


# ---------------------------------------------------------------------------
# Service CIDR probe with a fake CoreV1Api
# ---------------------------------------------------------------------------


def api_error(status: int, message: str = "", reason: str = "") -> ApiException:
    exc = ApiException(status=status, reason=reason or "error")
    exc.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": "Invalid",
            "code": status,
        }
    )
    return exc


def refusal(cidr: str, probe: str = "1.1.1.1") -> ApiException:
    return api_error(
        422,
        f'Service "tether-service-cidr-probe" is invalid: spec.clusterIPs: Invalid value: []string{{"{probe}"}}: '
        f"failed to allocate IP {probe}: the provided IP ({probe}) is not in the valid range. "
        f"The range of valid IPs is {cidr}",
    )


class _Released:
    def __init__(self, body: dict | None = None) -> None:
        self.data = json.dumps(body or {}).encode()

    def release_conn(self) -> None:
        pass


class FakeCore:
    """Answers create_namespaced_service per ClusterIP from a script of results/exceptions."""

    def __init__(self, answers: dict[str, list], services: list[dict] | None = None) -> None:
        self.answers = answers
        self.services = services or []
        self.created: list[tuple[str, str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    def create_namespaced_service(self, namespace, body, **kwargs):
        self.created.append((namespace, body.metadata.name, body.spec.cluster_ip))
        assert body.spec.ports[0].port == 80
        answer = self.answers[body.spec.cluster_ip].pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return _Released()

    def delete_namespaced_service(self, name, namespace, **kwargs):
        self.deleted.append((namespace, name))
        return _Released()

    def list_service_for_all_namespaces(self, **kwargs):
        return _Released({"metadata": {"resourceVersion": "5"}, "items": self.services})


class TestProbe:
    def test_refusal_is_parsed(self):
        core = FakeCore({"1.1.1.1": [refusal("10.96.0.0/12")]})
        assert probe_service_cidr(core, "tether") == net("10.96.0.0/12")
        assert core.created == [("tether", "tether-service-cidr-probe", "1.1.1.1")]
        assert core.deleted == []

    def test_message_only_in_causes_or_raw_body(self):
        exc = ApiException(status=422, reason="Unprocessable Entity")
        exc.body = json.dumps(
            {"message": "", "details": {"causes": [{"message": "The range of valid IPs is 10.43.0.0/16"}]}}
        )
        assert probe_service_cidr(FakeCore({"1.1.1.1": [exc]}), "ns") == net("10.43.0.0/16")
        raw = ApiException(status=422, reason="x")
        raw.body = "plain text: The range of valid IPs is 10.0.0.0/16\n"
        assert probe_service_cidr(FakeCore({"1.1.1.1": [raw]}), "ns") == net("10.0.0.0/16")

    def test_unexpected_creation_is_deleted(self):
        core = FakeCore({"1.1.1.1": [None]})
        assert probe_service_cidr(core, "tether") is None
        assert core.deleted == [("tether", "tether-service-cidr-probe")]

    def test_stale_probe_is_replaced(self):
        core = FakeCore({"1.1.1.1": [api_error(409, "already exists"), refusal("10.96.0.0/12")]})
        assert probe_service_cidr(core, "tether") == net("10.96.0.0/12")
        assert core.deleted == [("tether", "tether-service-cidr-probe")]
        assert len(core.created) == 2

    def test_forbidden_or_other_wording_tells_nothing(self):
        assert probe_service_cidr(FakeCore({"1.1.1.1": [api_error(403, "forbidden")]}), "ns") is None
        assert probe_service_cidr(FakeCore({"1.1.1.1": [api_error(422, "some new wording")]}), "ns") is None

    def test_unreachable_api_raises(self):
        with pytest.raises(ConnectionRefusedError):
            probe_service_cidr(FakeCore({"1.1.1.1": [ConnectionRefusedError()]}), "ns")
        with pytest.raises(ApiException):
            probe_service_cidr(FakeCore({"1.1.1.1": [api_error(503, "unavailable")]}), "ns")

    def test_ipv6_only_cluster(self):
        core = FakeCore(
            {
                "1.1.1.1": [api_error(422, 'spec.ipFamilies[0]: Invalid value: "IPv4": not configured')],
                "2001:db8::1": [refusal("fd00:10:96::/112", "2001:db8::1")],
            }
        )
        assert probe_service_cidrs(core, "ns") == [net("fd00:10:96::/112")]

    def test_dual_stack_cluster(self):
        core = FakeCore(
            {"1.1.1.1": [refusal("10.96.0.0/16")], "2001:db8::1": [refusal("fd00:10:96::/112", "2001:db8::1")]}
        )
        assert probe_service_cidrs(core, "ns") == [net("10.96.0.0/16"), net("fd00:10:96::/112")]


class TestDiscoverServiceSubnets:
    def test_override_skips_the_probe(self):
        core = FakeCore({})
        config = ManagerConfig(service_cidr=net("10.43.0.0/16"))
        assert discover_service_subnets(core, config, "ns") == (net("10.43.0.0/16"),)
        assert core.created == []

    def test_probe(self):
        core = FakeCore({"1.1.1.1": [refusal("10.96.0.0/12")], "2001:db8::1": [api_error(422, "IPv6 not configured")]})
        assert discover_service_subnets(core, ManagerConfig(), "ns") == (net("10.96.0.0/12"),)

    def test_fallback_from_cluster_ips(self):
        services = [
            {"metadata": {"name": "kubernetes"}, "spec": {"clusterIP": "10.100.0.1", "clusterIPs": ["10.100.0.1"]}},
            {"metadata": {"name": "dns"}, "spec": {"clusterIP": "10.100.0.10"}},
            {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None"}},
        ]
        core = FakeCore(
            {"1.1.1.1": [api_error(403, "forbidden")], "2001:db8::1": [api_error(403, "forbidden")]}, services
        )
        assert discover_service_subnets(core, ManagerConfig(), "ns") == (net("10.100.0.0/16"),)


# ---------------------------------------------------------------------------
# The list/watch loop against an in-process API server on loopback
# ---------------------------------------------------------------------------


class FakeApiServer:
    """Just enough of the Kubernetes API for ClusterDiscovery: list+watch nodes/pods, refuse ClusterIPs."""

    def __init__(self, service_cidr: str = "10.96.0.0/12") -> None:
        self.cond = threading.Condition()
        self.rv = 10
        self.objects: dict[str, dict[str, dict]] = {"nodes": {}, "pods": {}}
        self.log: dict[str, list[tuple[int, str, dict]]] = {"nodes": [], "pods": []}
        self.expired: set[str] = set()
        self.closing = False
        self.service_cidr = service_cidr
        self.requests: list[tuple[str, str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                server.requests.append(("GET", url.path, query))
                kind = {"/api/v1/nodes": "nodes", "/api/v1/pods": "pods"}.get(url.path)
                if kind is None:
                    return self._json(404, {"kind": "Status", "code": 404, "message": "not found"})
                if query.get("watch") == "true":
                    return self._watch(kind, query)
                with server.cond:
                    items = list(server.objects[kind].values())
                    rv = server.rv
                return self._json(
                    200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}, "items": items}
                )

            def do_POST(self):
                url = urlparse(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(("POST", url.path, body))
                ip_ = body["spec"]["clusterIP"]
                if ":" in ip_:
                    message = f'Service "{body["metadata"]["name"]}" is invalid: IPv6 is not configured'
                else:
                    message = (
                        f'Service "{body["metadata"]["name"]}" is invalid: spec.clusterIPs: Invalid value: '
                        f'[]string{{"{ip_}"}}: failed to allocate IP {ip_}: the provided IP ({ip_}) is not in '
                        f"the valid range. The range of valid IPs is {server.service_cidr}"
                    )
                self._json(
                    422,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": message,
                        "reason": "Invalid",
                        "code": 422,
                    },
                )

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, kind, query):
                since = int(query.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(query.get("timeoutSeconds", 60))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while time.monotonic() < deadline:
                        with server.cond:
                            if server.closing:
                                break
                            if kind in server.expired:
                                server.expired.discard(kind)
                                gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
                                self._chunk(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                                break
                            pending = [e for e in server.log[kind] if e[0] > since]
                            if not pending:
                                server.cond.wait(0.05)
                                continue
                        for rv, event_type, obj in pending:
                            self._chunk(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")
                            since = rv
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client went away

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def put(self, kind: str, obj: dict, *, event: str | None = "ADDED", silently: bool = False) -> None:
        with self.cond:
            self.rv += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
            key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
            if event == "DELETED":
                self.objects[kind].pop(key, None)
            else:
                self.objects[kind][key] = obj
            if not silently:
                self.log[kind].append((self.rv, event, obj))
            self.cond.notify_all()

    def expire(self, kind: str) -> None:
        with self.cond:
            self.expired.add(kind)
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


def raw_node(name: str, cidr: str) -> dict:
    return {"kind": "Node", "metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}


def raw_pod(name: str, pod_ip: str, namespace: str = "default") -> dict:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app"}]},
        "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]},
    }


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def api():
    server = FakeApiServer()
    yield server
    server.close()


@pytest.fixture
def api_client(api):
    configuration = client.Configuration(host=api.url)
    with client.ApiClient(configuration) as api_client:
        yield api_client


class TestClusterDiscoveryLoopback:
    @pytest.mark.timeout(30)
    def test_snapshot_changes_relist_and_prompt_stop(self, api, api_client):
        api.put("nodes", raw_node("n1", "10.244.0.0/24"))
        api.put("pods", raw_pod("tether-manager", "10.244.0.5", "tether"))
        rec = Recorder()
        lock = threading.Lock()

        def on_change(network):
            with lock:
                rec(network)

        discovery = ClusterDiscovery(
            api_client, ManagerConfig(), "tether", "10.244.0.5", on_change, watch_timeout=60, backoff_initial=0.1
        )
        discovery.start()
        try:
            assert discovery.wait_ready(5)
            first = discovery.snapshot()
            assert first == ClusterNetwork((net("10.96.0.0/12"),), (net("10.244.0.0/24"),))
            assert rec.calls == [first]
            probe = [r for r in api.requests if r[0] == "POST"]
            assert probe[0][1] == "/api/v1/namespaces/tether/services"
            assert probe[0][2]["spec"]["clusterIP"] == "1.1.1.1"
            assert probe[0][2]["metadata"]["name"] == "tether-service-cidr-probe"

            # A watched change is published once.
            api.put("nodes", raw_node("n2", "10.244.1.0/24"))
            assert wait_for(lambda: len(rec.calls) == 2)
            assert rec.pods[-1] == ["10.244.0.0/24", "10.244.1.0/24"]

            # A pod update that changes nothing is not published; the next real change is.
            api.put("pods", raw_pod("tether-manager", "10.244.0.5", "tether"), event="MODIFIED")
            api.put("nodes", raw_node("n3", "10.244.2.0/24"))
            assert wait_for(lambda: len(rec.calls) == 3)
            assert rec.pods[-1] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]

            # A deletion the watch never saw is found by the relist after 410 Gone.
            api.put("nodes", raw_node("n3", "10.244.2.0/24"), event="DELETED", silently=True)
            api.expire("nodes")
            assert wait_for(lambda: len(rec.calls) == 4)
            assert rec.pods[-1] == ["10.244.0.0/24", "10.244.1.0/24"]
            lists = [r for r in api.requests if r[1] == "/api/v1/nodes" and r[2].get("watch") != "true"]
            assert len(lists) == 2
            watches = [r[2] for r in api.requests if r[1] == "/api/v1/nodes" and r[2].get("watch") == "true"]
            assert watches[0]["timeoutSeconds"] == "60"
            assert watches[0]["resourceVersion"] == "12"  # from the list, not from scratch
        finally:
            started = time.monotonic()
            discovery.stop()
            elapsed = time.monotonic() - started
        # The watches were open with timeoutSeconds=60; stop must not wait for them.
        assert elapsed < 2.0
        assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("tether-discovery"))
        calls = len(rec.calls)
        api.put("nodes", raw_node("n9", "10.9.0.0/24"))
        time.sleep(0.2)
        assert len(rec.calls) == calls

    @pytest.mark.timeout(30)
    def test_environment_strategy_reads_no_nodes_or_pods(self, api, api_client):
        config = ManagerConfig(
            pod_cidr_strategy=ENV, pod_cidrs=(net("10.244.0.0/16"),), service_cidr=net("10.43.0.0/16")
        )
        rec = Recorder()
        discovery = ClusterDiscovery(api_client, config, "tether", None, rec)
        discovery.start()
        try:
            assert discovery.wait_ready(5)
            assert rec.calls == [ClusterNetwork((net("10.43.0.0/16"),), (net("10.244.0.0/16"),))]
        finally:
            discovery.stop()
        assert api.requests == []

    @pytest.mark.timeout(30)
    def test_unreachable_api_is_retried_and_stop_still_prompt(self):
        configuration = client.Configuration(host="http://127.0.0.1:9")  # discard port: refused
        configuration.retries = False
        with client.ApiClient(configuration) as dead:
            discovery = ClusterDiscovery(dead, ManagerConfig(), "tether", None, Recorder(), backoff_initial=0.05)
            discovery.start()
            assert not discovery.wait_ready(0.5)
            assert discovery.snapshot() is None
            started = time.monotonic()
            discovery.stop()
            assert time.monotonic() - started < 2.0
