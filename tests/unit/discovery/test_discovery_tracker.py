"""NetworkTracker: lists and watch events in, a ClusterNetwork out only when the subnets really change."""

from __future__ import annotations

from ipaddress import ip_network as net

from discovery_support import AUTO, COVER, ENV, MANAGER_IP, NODES, Recorder, v1_node, v1_pod

from tether.manager.discovery.strategy import Kind
from tether.manager.discovery.tracker import ClusterNetwork, NetworkTracker

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
