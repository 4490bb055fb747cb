"""The recursion checks' pure decisions (helper/root/recursion.py)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from tether.helper.root import recursion
from tether.helper.root.routing.conflicts import OSRoute

POD_1 = ip_network("10.244.1.0/24")
POD_2 = ip_network("10.244.2.0/24")
MANAGER = ip_address("10.244.1.15")

# The lab's --local workstation: a veth onto the cluster bridge, the pod range behind it, the default route
# (and a plain link) elsewhere, and Tether's own TUN.
LOCAL_ROUTES = [
    OSRoute("0.0.0.0/0", "eth0", "172.30.0.1"),
    OSRoute("172.30.0.0/24", "eth0", protocol="kernel", scope="link"),
    OSRoute("10.244.0.0/16", "node0", "10.244.1.1", protocol="static"),
    OSRoute("10.250.0.0/24", "node0", protocol="kernel", scope="link"),
    OSRoute("10.250.0.13/32", "node0", table=255, protocol="kernel", scope="host", type="local"),
    OSRoute("172.30.0.2/32", "eth0", table=255, protocol="kernel", scope="host", type="local"),
    OSRoute("10.96.0.0/16", "tether0", protocol=126),
]
# A VPN that claims the cluster's ranges: same shape of route, but the manager's pod is not behind it.
VPN_ROUTES = [OSRoute("0.0.0.0/0", "eth0", "172.30.0.1"), OSRoute("10.0.0.0/8", "vpn0", "100.64.0.1")]


def test_probe_names_are_unique_and_recognised_in_any_case() -> None:
    first, second = recursion.probe_name(), recursion.probe_name()
    assert first != second
    assert first.startswith("tether-recursion-") and first.endswith(".tether-recursion-check.")
    assert recursion.is_probe_name(first)
    assert recursion.is_probe_name(first.upper().rstrip("."))
    assert not recursion.is_probe_name("tether-recursion-check.")
    assert not recursion.is_probe_name("web.default.svc.cluster.local.")
    assert not recursion.is_probe_name("tether-recursion-x.example.com.")


def test_a_probe_token_outside_the_name_alphabet_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'a\.b'"):
        recursion.probe_name("a.b")


@pytest.mark.parametrize(
    ("answered", "came_back", "mode"),
    [
        (True, False, recursion.DNS_NONE),
        (True, True, recursion.DNS_DETECTED),
        (False, True, recursion.DNS_DETECTED),  # the loop is proven even when the answer was lost
        (False, False, recursion.DNS_NOT_CHECKED),
    ],
)
def test_dns_recursion_mode_follows_the_probe(answered: bool, came_back: bool, mode: str) -> None:
    assert recursion.dns_recursion_mode(answered=answered, came_back=came_back) == mode


def test_only_an_in_flight_name_under_a_detected_loop_is_looped() -> None:
    assert recursion.is_looped_query(recursion.DNS_DETECTED, in_flight=True)
    assert not recursion.is_looped_query(recursion.DNS_DETECTED, in_flight=False)
    assert not recursion.is_looped_query(recursion.DNS_NONE, in_flight=True)
    assert not recursion.is_looped_query(recursion.DNS_NOT_CHECKED, in_flight=True)


def test_candidates_skip_the_default_route_our_tun_and_non_unicast_routes() -> None:
    found = recursion.direct_route_candidates([POD_1, POD_2], LOCAL_ROUTES, own_devices=["tether0"])
    assert {s: r.device for s, r in found.items()} == {POD_1: "node0", POD_2: "node0"}
    assert recursion.direct_route_candidates([ip_network("10.96.0.0/16")], LOCAL_ROUTES, own_devices=["tether0"]) == {}
    assert recursion.direct_route_candidates([POD_1], [OSRoute("0.0.0.0/0", "eth0", "172.30.0.1")]) == {}


def test_the_most_specific_overlapping_route_is_the_candidate() -> None:
    routes = [OSRoute("10.0.0.0/8", "vpn0", "100.64.0.1"), OSRoute("10.244.1.0/24", "node0")]
    assert recursion.direct_route_candidates([POD_1], routes)[POD_1].device == "node0"


def test_the_probe_target_is_the_manager_pod_only_when_a_candidate_carries_it() -> None:
    found = recursion.direct_route_candidates([POD_1], LOCAL_ROUTES)
    assert recursion.probe_target(MANAGER, found) == MANAGER
    assert recursion.probe_target(ip_address("10.244.2.9"), found) is None
    assert recursion.probe_target(None, found) is None


def test_a_reached_manager_makes_every_pod_subnet_on_its_device_direct() -> None:
    found = recursion.direct_route_candidates([POD_1, POD_2], LOCAL_ROUTES, own_devices=["tether0"])
    local = recursion.local_cluster(found, LOCAL_ROUTES, reached=MANAGER)
    assert local.direct == (POD_1, POD_2)
    assert local.devices == ("node0",)
    assert local.cluster_networks == (ip_network("10.244.0.0/16"), ip_network("10.250.0.0/24"))
    assert "10.244.1.0/24, 10.244.2.0/24 reached directly via node0" in local.mode


def test_an_unreached_probe_leaves_everything_to_the_tunnel_and_the_conflict_check() -> None:
    found = recursion.direct_route_candidates([POD_1, POD_2], VPN_ROUTES)
    assert set(found) == {POD_1, POD_2}
    local = recursion.local_cluster(found, VPN_ROUTES, reached=None)
    assert local == recursion.LocalCluster()
    assert local.mode == recursion.CONNECT_NONE


def test_pod_subnets_behind_another_device_stay_in_the_tunnel() -> None:
    routes = [OSRoute("10.244.1.0/24", "node0"), OSRoute("10.244.2.0/24", "vpn0", "100.64.0.1")]
    found = recursion.direct_route_candidates([POD_1, POD_2], routes)
    assert recursion.local_cluster(found, routes, reached=MANAGER).direct == (POD_1,)


def test_refused_sources_are_the_pod_subnets_without_a_local_cluster() -> None:
    assert recursion.refused_sources([POD_2, POD_1], recursion.LocalCluster()) == [POD_1, POD_2]


def test_refused_sources_add_the_cluster_device_networks_minus_our_own_address() -> None:
    found = recursion.direct_route_candidates([POD_1, POD_2], LOCAL_ROUTES, own_devices=["tether0"])
    local = recursion.local_cluster(found, LOCAL_ROUTES, reached=MANAGER)
    own = recursion.own_addresses(LOCAL_ROUTES)
    assert own == [ip_address("10.250.0.13"), ip_address("172.30.0.2")]
    refused = recursion.refused_sources([POD_1, POD_2], local, own)
    # the pod subnets are inside 10.244.0.0/16, which stands for them; our own 10.250.0.13 is cut out
    assert ip_network("10.244.0.0/16") in refused
    assert POD_1 not in refused
    assert not any(ip_address("10.250.0.13") in n for n in refused)
    assert any(ip_address("10.250.0.11") in n for n in refused)  # a node
    assert any(ip_address("10.250.0.12") in n for n in refused)
    assert not any(ip_address("172.30.0.2") in n for n in refused)
    covered = sum(n.num_addresses for n in refused if n.subnet_of(ip_network("10.250.0.0/24")))
    assert covered == 255


def test_status_shows_both_recursion_modes() -> None:
    from tether.helper.api import helper_pb2 as pb
    from tether.helper.user.cli.control import describe_state, format_state

    state = pb.State(
        phase=pb.State.CONNECTED,
        connected_since_unix=1,
        owner_uid=0,
        dns_recursion=recursion.DNS_DETECTED,
        connect_recursion=recursion.LocalCluster((POD_1,), ("node0",)).mode,
        direct_subnets=[str(POD_1)],
        refused_sources=["10.244.0.0/16"],
    )
    lines = format_state(state).splitlines()
    assert any(line.startswith("dns recursion") and line.endswith(recursion.DNS_DETECTED) for line in lines)
    assert any(
        line.startswith("flow recursion") and "10.244.1.0/24 reached directly via node0" in line for line in lines
    )
    # the table's key column stays as wide as "connected since" makes it (scripts and tests read it)
    assert len(format_state(state).splitlines()[0]) - len("connected") == len("connected since  ")
    info = describe_state(state)
    assert info["direct_subnets"] == ["10.244.1.0/24"] and info["refused_sources"] == ["10.244.0.0/16"]
