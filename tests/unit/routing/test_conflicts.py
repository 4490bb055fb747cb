"""VPN conflict rules (pure): real-world routing tables, written as `ip route show table all` prints them."""

from __future__ import annotations

import ipaddress

import pytest

from tether.helper.root.routing.conflicts import (
    Conflict,
    ConflictError,
    OSRoute,
    find_conflicts,
    format_conflicts,
    ignore_reason,
    suggest_allowed,
)
from tether.helper.root.routing.table import InvalidSubnet

ROUTE_TYPES = {"unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable", "prohibit", "throw"}
TABLES = {"main": 254, "local": 255, "default": 253}
FLAGS = {"linkdown", "onlink", "dead", "pervasive", "offload", "notify"}


def parse_routes(text: str) -> list[OSRoute]:
    """A tiny parser for `ip route show table all` / `ip -6 route show table all` lines."""
    routes = []
    for raw in text.strip().splitlines():
        tokens = raw.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        kind = tokens.pop(0) if tokens[0] in ROUTE_TYPES else "unicast"
        dst = tokens.pop(0)
        if dst == "default":
            dst = "::/0" if ":" in raw else "0.0.0.0/0"
        elif "/" not in dst:
            dst += "/128" if ":" in dst else "/32"
        fields: dict[str, str] = {}
        while tokens:
            key = tokens.pop(0)
            if key in FLAGS:
                continue
            fields[key] = tokens.pop(0)
        table = fields.get("table", "main")
        routes.append(
            OSRoute(
                destination=ipaddress.ip_network(dst),
                device=fields.get("dev"),
                gateway=fields.get("via"),
                table=TABLES.get(table) or int(table),
                protocol=fields.get("proto", "boot"),
                metric=int(fields.get("metric", 0)),
                scope=fields.get("scope", "universe"),
                type=kind,
            )
        )
    return routes


def described(conflicts: list[Conflict]) -> list[str]:
    return [c.describe() for c in conflicts]


# --- real-world tables -------------------------------------------------------------------------------

HOME = """
default via 192.168.1.1 dev wlp2s0 proto dhcp src 192.168.1.23 metric 600
192.168.1.0/24 dev wlp2s0 proto kernel scope link src 192.168.1.23 metric 600
local 192.168.1.23 dev wlp2s0 table local proto kernel scope host src 192.168.1.23
broadcast 192.168.1.255 dev wlp2s0 table local proto kernel scope link src 192.168.1.23
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1
broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1
169.254.0.0/16 dev wlp2s0 scope link metric 1000
"""

OPENVPN = """
0.0.0.0/1 via 10.8.0.1 dev tun0
128.0.0.0/1 via 10.8.0.1 dev tun0
10.0.0.0/8 via 10.8.0.1 dev tun0
10.8.0.0/24 dev tun0 proto kernel scope link src 10.8.0.6
203.0.113.7 via 192.168.1.1 dev wlp2s0
local 10.8.0.6 dev tun0 table local proto kernel scope host src 10.8.0.6
broadcast 10.8.0.255 dev tun0 table local proto kernel scope link src 10.8.0.6
"""

WIREGUARD_FULL = """
default dev wg0 table 51820 scope link
local 10.66.66.2 dev wg0 table local proto kernel scope host src 10.66.66.2
default dev wg0 table 51820 metric 1024 pref medium
"""

DOCKER = """
172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown
172.18.0.0/16 dev br-3f2a1c proto kernel scope link src 172.18.0.1
"""

CORPORATE = """
10.0.0.0/8 dev vpn0 via 10.0.0.1 proto static metric 50
"""

TETHER = """
10.130.0.0/16 dev tether0 proto 126 scope link
10.132.0.0/16 dev tether0 proto 126 scope link
10.0.0.0/9 dev tether1 scope link
fd00:10:96::/112 dev tether0 proto 126 metric 1024 pref medium
"""

IPV6 = """
default via fe80::1 dev wlp2s0 proto ra metric 600 pref medium
::/1 dev wg0 metric 1024 pref medium
8000::/1 dev wg0 metric 1024 pref medium
2001:db8:1::/64 dev wlp2s0 proto ra metric 600 pref medium
fd00::/8 dev corp0 proto static metric 1024 pref medium
fe80::/64 dev wlp2s0 proto kernel metric 1024 pref medium
local 2001:db8:1::23 dev wlp2s0 table local proto kernel metric 0 pref medium
multicast ff00::/8 dev wlp2s0 table local proto kernel metric 256 pref medium
unreachable fd12::/16 dev lo metric 1024 pref medium
"""


def test_parser_reads_what_ip_route_prints():
    route = parse_routes(CORPORATE)[0]
    assert route == OSRoute("10.0.0.0/8", "vpn0", "10.0.0.1", protocol="static", metric=50)
    local = parse_routes("local 10.8.0.6 dev tun0 table local proto kernel scope host src 10.8.0.6")[0]
    assert (local.type, local.table, local.scope, str(local.destination)) == ("local", 255, "host", "10.8.0.6/32")


def test_openvpn_halves_are_ignored_but_the_pushed_private_route_conflicts():
    routes = parse_routes(HOME + OPENVPN)
    conflicts = find_conflicts(["10.130.0.0/16", "10.132.0.0/16"], routes)
    assert described(conflicts) == [
        'subnet 10.130.0.0/16 overlaps with existing route "10.0.0.0/8 dev tun0 via 10.8.0.1"',
        'subnet 10.132.0.0/16 overlaps with existing route "10.0.0.0/8 dev tun0 via 10.8.0.1"',
    ]


def test_openvpn_tunnel_subnet_inside_a_cluster_range_conflicts_too():
    routes = parse_routes(OPENVPN)
    conflicts = find_conflicts(["10.8.0.0/16"], routes)
    assert [c.route.describe() for c in conflicts] == ["10.0.0.0/8 dev tun0 via 10.8.0.1", "10.8.0.0/24 dev tun0"]


def test_wireguard_full_tunnel_has_only_a_default_route_so_no_conflict():
    routes = parse_routes(HOME + WIREGUARD_FULL)
    assert find_conflicts(["10.43.0.0/16", "10.42.0.0/16", "fd00:43::/112"], routes) == []


def test_docker_bridge_equal_to_a_cluster_subnet_is_not_a_conflict():
    assert find_conflicts(["172.17.0.0/16"], parse_routes(DOCKER)) == []


def test_docker_bridges_inside_a_wide_cluster_range_conflict():
    conflicts = find_conflicts(["172.16.0.0/12"], parse_routes(DOCKER))
    assert described(conflicts) == [
        'subnet 172.16.0.0/12 overlaps with existing route "172.17.0.0/16 dev docker0"',
        'subnet 172.16.0.0/12 overlaps with existing route "172.18.0.0/16 dev br-3f2a1c"',
    ]


def test_corporate_slash_8_over_the_cluster_and_the_exact_message():
    conflicts = find_conflicts(["10.132.0.0/16", "10.130.0.0/16"], parse_routes(HOME + CORPORATE))
    assert [str(c.subnet) for c in conflicts] == ["10.130.0.0/16", "10.132.0.0/16"]
    error = ConflictError(conflicts)
    lines = str(error).splitlines()
    assert lines[0] == 'subnet 10.130.0.0/16 overlaps with existing route "10.0.0.0/8 dev vpn0 via 10.0.0.1"'
    assert lines[1] == 'subnet 10.132.0.0/16 overlaps with existing route "10.0.0.0/8 dev vpn0 via 10.0.0.1"'
    assert error.conflicts == tuple(conflicts)
    assert error.subnets == [ipaddress.ip_network("10.130.0.0/16"), ipaddress.ip_network("10.132.0.0/16")]


def test_home_lan_inside_the_pod_range_conflicts():
    conflicts = find_conflicts(["192.168.0.0/16", "10.96.0.0/12"], parse_routes(HOME))
    assert described(conflicts) == [
        'subnet 192.168.0.0/16 overlaps with existing route "192.168.1.0/24 dev wlp2s0"',
    ]
    assert conflicts[0].route.protocol == "kernel"


def test_an_exactly_equal_route_is_not_a_conflict():
    routes = parse_routes("10.43.0.0/16 via 10.0.0.1 dev vpn0 proto static")
    assert find_conflicts(["10.43.0.0/16"], routes) == []
    assert len(find_conflicts(["10.43.0.0/17"], routes)) == 1
    assert len(find_conflicts(["10.42.0.0/15"], routes)) == 1


def test_routes_on_our_tun_or_with_our_protocol_are_ignored():
    routes = parse_routes(TETHER)
    subnets = ["10.130.0.0/16", "10.132.0.0/16", "10.0.0.0/8", "fd00:10:96::/108"]
    # tether0's routes carry proto 126; tether1's route does not but the device is ours.
    assert find_conflicts(subnets, routes, own_devices=["tether1"]) == []
    assert described(find_conflicts(subnets, routes)) == [
        'subnet 10.0.0.0/8 overlaps with existing route "10.0.0.0/9 dev tether1"',
    ]
    assert find_conflicts(subnets, routes, own_devices="tether1") == []
    assert ignore_reason(routes[0]) == "our own route (protocol 126)"
    assert OSRoute("10.1.0.0/16", "x", protocol="126").is_ours


def test_local_broadcast_multicast_and_other_non_unicast_routes_are_ignored():
    table = """
local 10.43.0.5 dev eth0 table local proto kernel scope host src 10.43.0.5
broadcast 10.43.255.255 dev eth0 table local proto kernel scope link src 10.43.0.5
multicast 239.0.0.0/8 dev eth0 table local
anycast 10.43.1.0 dev eth0 table local proto kernel scope link
blackhole 10.43.7.0/24
unreachable 10.43.8.0/24
prohibit 10.43.9.0/24
throw 10.43.10.0/24
"""
    routes = parse_routes(table)
    assert find_conflicts(["10.43.0.0/16"], routes) == []
    assert [ignore_reason(r) for r in routes] == [f"{r.type} route" for r in routes]


def test_link_local_and_multicast_destinations_are_ignored():
    routes = parse_routes(
        """
169.254.0.0/16 dev eth0 scope link metric 1000
224.0.0.0/4 dev eth0 scope link
fe80::/64 dev eth0 proto kernel metric 256
ff02::/16 dev eth0 metric 256
"""
    )
    assert find_conflicts(["169.254.0.0/15", "224.0.0.0/3", "fe80::/9", "ff00::/8"], routes) == []
    assert ignore_reason(routes[0]) == "link-local destination"
    assert ignore_reason(routes[1]) == "multicast destination"


def test_default_routes_in_any_table_are_ignored():
    routes = parse_routes(
        """
default via 192.168.1.1 dev eth0 table 100
default dev wg0 table 51820
0.0.0.0/1 dev wg0
128.0.0.0/1 dev wg0
"""
    )
    assert find_conflicts(["10.0.0.0/8", "192.168.0.0/16", "0.0.0.0/2"], routes) == []


def test_allowed_range_covers_the_service_subnet_but_not_the_pods():
    routes = parse_routes(CORPORATE)
    conflicts = find_conflicts(["10.130.0.0/16", "10.0.0.0/16"], routes, allowed=["10.128.0.0/9"])
    assert described(conflicts) == [
        'subnet 10.0.0.0/16 overlaps with existing route "10.0.0.0/8 dev vpn0 via 10.0.0.1"'
    ]
    # Exactly the subnets, as the dialog suggests:
    both = find_conflicts(["10.130.0.0/16", "10.0.0.0/16"], routes)
    assert find_conflicts(["10.130.0.0/16", "10.0.0.0/16"], routes, allowed=suggest_allowed(both)) == []
    # An allowed range inside the subnet does not cover it.
    assert len(find_conflicts(["10.130.0.0/16"], routes, allowed=["10.130.0.0/17"])) == 1
    # A lone string is one range, not characters.
    assert find_conflicts("10.130.0.0/16", routes, allowed="10.130.0.0/16") == []


def test_ipv6_cases():
    routes = parse_routes(IPV6)
    # The /1 halves, the default route, the unreachable route, link-local and multicast never count.
    conflicts = find_conflicts(["fd00:10:96::/112", "fd12::/64", "2001:db8::/32", "fe80::/96", "fc00::/8"], routes)
    assert described(conflicts) == [
        'subnet 2001:db8::/32 overlaps with existing route "2001:db8:1::/64 dev wlp2s0"',
        'subnet fd00:10:96::/112 overlaps with existing route "fd00::/8 dev corp0"',
        'subnet fd12::/64 overlaps with existing route "fd00::/8 dev corp0"',
    ]
    assert find_conflicts(["fd12::/16"], routes) == [Conflict(ipaddress.ip_network("fd12::/16"), routes[4])]


def test_ipv4_and_ipv6_never_conflict():
    routes = [OSRoute("10.0.0.0/8", "vpn0"), OSRoute("fd00::/8", "vpn0"), OSRoute("::ffff:0:0/96", "x")]
    assert find_conflicts(["::a00:0/104"], routes[:1]) == []
    assert find_conflicts(["10.1.0.0/16"], routes[1:]) == []
    assert len(find_conflicts(["10.1.0.0/16", "fd00:1::/64"], routes)) == 2


def test_order_is_deterministic():
    routes = parse_routes(OPENVPN + CORPORATE + DOCKER)
    subnets = ["172.16.0.0/12", "10.132.0.0/16", "10.8.0.0/16"]
    first = find_conflicts(subnets, routes)
    assert find_conflicts(list(reversed(subnets)), list(reversed(routes))) == first
    assert find_conflicts(subnets, routes + routes) == first  # duplicates collapse
    assert [str(c.subnet) for c in first] == ["10.8.0.0/16"] * 3 + ["10.132.0.0/16"] * 2 + ["172.16.0.0/12"] * 2


def test_same_prefix_in_two_tables_is_two_conflicts():
    routes = [OSRoute("10.0.0.0/8", "vpn0", table=100), OSRoute("10.0.0.0/8", "vpn0")]
    assert described(find_conflicts(["10.1.0.0/16"], routes)) == [
        'subnet 10.1.0.0/16 overlaps with existing route "10.0.0.0/8 dev vpn0"',
        'subnet 10.1.0.0/16 overlaps with existing route "10.0.0.0/8 dev vpn0 table 100"',
    ]


# --- OSRoute ------------------------------------------------------------------------------------------


def test_describe():
    assert OSRoute("10.0.0.0/8", "vpn0", "10.0.0.1").describe() == "10.0.0.0/8 dev vpn0 via 10.0.0.1"
    assert OSRoute("10.0.0.0/8", "vpn0").describe() == "10.0.0.0/8 dev vpn0"
    assert OSRoute("10.0.0.0/8", "vpn0", table=51820).describe() == "10.0.0.0/8 dev vpn0 table 51820"
    assert OSRoute("10.0.0.0/8", "", type="blackhole").describe() == "blackhole 10.0.0.0/8"
    assert OSRoute("10.0.0.0/8", "vpn0", "fe80::1").describe() == "10.0.0.0/8 dev vpn0 via fe80::1"


def test_numbers_become_iproute2_names():
    route = OSRoute("10.0.0.0/8", "vpn0", protocol=4, scope=253, type=1)  # type: ignore[arg-type]
    assert (route.protocol, route.scope, route.type) == ("static", "link", "unicast")
    assert route == OSRoute("10.0.0.0/8", "vpn0", protocol="STATIC", scope="link")
    assert OSRoute("10.0.0.0/8", protocol="126").protocol == 126
    assert OSRoute("10.0.0.0/8", type=6).type == "blackhole"  # type: ignore[arg-type]


def test_invalid_values_are_named():
    with pytest.raises(InvalidSubnet, match=r'"10\.0\.0\.1/8"'):
        OSRoute("10.0.0.1/8")  # type: ignore[arg-type]
    with pytest.raises(InvalidSubnet, match="cluster subnet"):
        find_conflicts(["10.0.0.0/33"], [])
    with pytest.raises(InvalidSubnet, match="allowed conflicting subnet"):
        find_conflicts([], [], allowed=["nope"])


# --- the error ------------------------------------------------------------------------------------------


def test_error_text_names_every_conflict_and_the_three_ways_out():
    routes = parse_routes(CORPORATE + HOME)
    conflicts = find_conflicts(["10.130.0.0/16", "192.168.0.0/16"], routes)
    error = ConflictError(conflicts)
    text = str(error)
    lines = text.splitlines()
    assert lines[0] == conflicts[0].describe()
    assert lines[1] == 'subnet 192.168.0.0/16 overlaps with existing route "192.168.1.0/24 dev wlp2s0"'
    hint = "\n".join(lines[2:])
    assert "--allow-conflicting-subnets CIDR" in hint
    assert "allow_conflicting_subnets in the admin's /etc/tether/policy.toml" in hint
    assert "--allow-conflicting-subnets 10.130.0.0/16 --allow-conflicting-subnets 192.168.0.0/16" in hint
    assert "--proxy-via CIDR=WORKLOAD" in hint
    for symbol in ("also", "service", "pods", "all"):
        assert symbol in hint
    assert "--auto-resolve" in hint
    assert format_conflicts(conflicts) == text


def test_the_clusters_allow_list_is_offered_for_the_user_to_confirm():
    conflicts = find_conflicts(["10.130.0.0/16"], parse_routes(CORPORATE))
    text = str(ConflictError(conflicts, suggested=[ipaddress.ip_network("10.130.0.0/16")]))
    assert text.splitlines()[-1] == (
        "The cluster's settings suggest allowing 10.130.0.0/16; to accept: --allow-conflicting-subnets 10.130.0.0/16"
    )


def test_error_needs_conflicts_and_sorts_them():
    with pytest.raises(ValueError):
        ConflictError([])
    a = Conflict(ipaddress.ip_network("10.1.0.0/16"), OSRoute("10.0.0.0/8", "vpn0"))
    b = Conflict(ipaddress.ip_network("10.0.0.0/16"), OSRoute("10.0.0.0/8", "vpn0"))
    assert ConflictError([a, b]).conflicts == (b, a)
    assert (
        str(ConflictError([a])).splitlines()[0]
        == 'subnet 10.1.0.0/16 overlaps with existing route "10.0.0.0/8 dev vpn0"'
    )


def test_suggest_allowed_is_the_conflicting_subnets_once_each():
    routes = parse_routes(OPENVPN)
    conflicts = find_conflicts(["10.8.0.0/16", "10.130.0.0/16"], routes)
    assert len(conflicts) == 3
    assert suggest_allowed(conflicts) == [ipaddress.ip_network("10.8.0.0/16"), ipaddress.ip_network("10.130.0.0/16")]
