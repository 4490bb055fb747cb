"""The pod-subnet strategies as plain functions: which subnets each gives, and which resources it reads."""

from __future__ import annotations

from ipaddress import ip_address as ip
from ipaddress import ip_network as net

from discovery_support import AUTO, COVER, ENV, MANAGER_IP, NODES

from tether.manager.discovery.decode import NodeInfo, PodInfo
from tether.manager.discovery.strategy import Kind, compute_pod_subnets, decide_pod_subnets, needed_kinds

NODE_A = NodeInfo("a", (net("10.244.0.0/24"),))
NODE_B = NodeInfo("b", (net("10.244.1.0/24"), net("fd00:244:1::/64")))
POD_1 = PodInfo("ns/p1", (ip("10.244.0.5"),), phase="Running")
POD_2 = PodInfo("ns/p2", (ip("10.244.1.7"),), phase="Running")
POD_OTHER = PodInfo("ns/p3", (ip("100.64.3.9"),), phase="Running")
HOST_POD = PodInfo("kube-system/proxy", (ip("192.168.5.10"),), host_network=True, phase="Running")
DONE_POD = PodInfo("ns/job", (ip("172.30.0.4"),), phase="Succeeded")


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
