"""The macOS route reader: netstat's abbreviated destinations, the rows left out, and the commands run."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.doubles.fake_commands import FakeCommands
from tether.helper.root.routing import os_routes
from tether.helper.root.routing.conflicts import OSRoute, find_conflicts
from tether.helper.root.routing.os_routes import RouteReadError, open_reader
from tether.helper.root.routing.os_routes_darwin import DarwinRouteReader, parse_destination, parse_netstat

FIXTURES = Path(__file__).parent / "fixtures"
INET = (FIXTURES / "netstat_inet_vpn.txt").read_text()
INET6 = (FIXTURES / "netstat_inet6_vpn.txt").read_text()
LEGACY = (FIXTURES / "netstat_inet_legacy.txt").read_text()


@pytest.mark.parametrize(
    ("text", "version", "flags", "network"),
    [
        ("default", 4, "UGSc", "0.0.0.0/0"),
        ("default", 6, "UGcI", "::/0"),
        ("10.96/12", 4, "UCS", "10.96.0.0/12"),
        ("127", 4, "UCS", "127.0.0.0/8"),
        ("169.254", 4, "UCS", "169.254.0.0/16"),
        ("192.168.1", 4, "UCS", "192.168.1.0/24"),
        ("192.168.1.1", 4, "UH", "192.168.1.1/32"),
        ("192.168.1.1/32", 4, "UCS", "192.168.1.1/32"),
        ("224.0.0/4", 4, "UmCS", "224.0.0.0/4"),
        ("fe80::%en0/64", 6, "UCI", "fe80::/64"),
        ("fe80::1%lo0", 6, "UHLI", "fe80::1/128"),
        ("fd7a:115c:a1e0::/48", 6, "UGcIg", "fd7a:115c:a1e0::/48"),
    ],
)
def test_parse_destination(text, version, flags, network):
    assert parse_destination(text, version, flags) == ipaddress.ip_network(network)


@pytest.mark.parametrize(("text", "version"), [("10.0.0.0.1", 4), ("fe80::zz", 6), ("link#4", 4)])
def test_parse_destination_names_bad_text(text, version):
    with pytest.raises(ValueError, match=repr(text)):
        parse_destination(text, version)


def by_destination(routes: list[OSRoute]) -> dict[str, list[OSRoute]]:
    found: dict[str, list[OSRoute]] = {}
    for route in routes:
        found.setdefault(str(route.destination), []).append(route)
    return found


def test_ipv4_with_a_vpn():
    routes = by_destination(parse_netstat(INET))
    assert [(r.device, r.gateway) for r in routes["0.0.0.0/0"]] == [
        ("en0", ipaddress.ip_address("192.168.1.1")),
        ("utun4", None),
    ]
    assert routes["10.96.0.0/12"] == [OSRoute("10.96.0.0/12", "utun4", None, protocol="static")]
    assert routes["172.17.4.0/24"] == [OSRoute("172.17.4.0/24", "utun4", "10.8.0.1", protocol="static")]
    assert routes["10.8.0.1/32"] == [OSRoute("10.8.0.1/32", "utun4", "10.8.0.5", protocol="kernel", scope="host")]
    assert routes["198.18.0.0/15"][0].device == "utun4"
    assert routes["203.0.113.0/24"][0].type == "unreachable"  # R: a reject route
    assert routes["224.0.0.0/4"][0].type == "multicast"
    # link-layer entries (a MAC as the gateway) are the ARP cache, not routes
    assert "192.168.1.255/32" not in routes and "224.0.0.251/32" not in routes
    assert [r.gateway for r in routes["192.168.1.1/32"]] == [None]
    assert len(parse_netstat(INET)) == 16


def test_ipv6_scopes_are_dropped():
    routes = by_destination(parse_netstat(INET6))
    assert {(r.device, str(r.gateway)) for r in routes["::/0"]} == {("utun0", "fe80::"), ("en0", "fe80::1")}
    assert routes["fd7a:115c:a1e0::/48"][0].device == "utun4"
    assert {r.device for r in routes["fe80::/64"]} == {"lo0", "en0", "utun0"}
    assert "fe80::1c2b:3a4d:5e6f:7081/128" not in routes  # NDP cache entry
    assert routes["fe80::1/128"][0].device == "lo0"


def test_older_layout_with_refs_and_use_columns():
    routes = by_destination(parse_netstat(LEGACY))
    assert routes["0.0.0.0/0"] == [OSRoute("0.0.0.0/0", "en0", "10.0.2.2", protocol="static")]
    assert routes["10.0.2.0/24"][0].device == "en0"
    assert "10.0.2.2/32" in routes and all(r.gateway is None for r in routes["10.0.2.2/32"])


def test_routes_not_up_are_left_out():
    text = "Internet:\nDestination Gateway Flags Netif Expire\n10.1/16 10.8.0.1 GSc utun9\n"
    assert parse_netstat(text) == []


def test_a_row_that_does_not_fit_names_its_line():
    with pytest.raises(RouteReadError, match="line 3"):
        parse_netstat("Internet:\nDestination Gateway Flags Netif Expire\n10.1/16 10.8.0.1\n")
    with pytest.raises(RouteReadError, match=r"'10\.1\.2\.3\.4/16'"):
        parse_netstat("Internet:\nDestination Gateway Flags Netif Expire\n10.1.2.3.4/16 10.8.0.1 UGS utun9\n")


def test_the_vpns_routes_conflict_with_a_cluster_inside_them():
    conflicts = find_conflicts(["10.100.0.0/16", "172.17.4.0/26"], parse_netstat(INET), own_devices=["utun7"])
    assert {(str(c.subnet), c.route.device) for c in conflicts} == {
        ("10.100.0.0/16", "utun4"),
        ("172.17.4.0/26", "utun4"),
    }


def test_reader_runs_both_netstat_commands():
    run = FakeCommands({("netstat", "-rn", "-f", "inet"): INET, ("netstat", "-rn", "-f", "inet6"): INET6})
    routes = DarwinRouteReader(run).read()
    assert run.commands == [["netstat", "-rn", "-f", "inet"], ["netstat", "-rn", "-f", "inet6"]]
    assert len(routes) == len(parse_netstat(INET)) + len(parse_netstat(INET6))
    assert routes == sorted(routes, key=OSRoute.sort_key)


def test_reader_failure_is_a_route_read_error():
    run = FakeCommands(fail={("netstat",): "netstat: sysctl: Operation not permitted"})
    with pytest.raises(RouteReadError, match="Operation not permitted"):
        DarwinRouteReader(run).read()


def test_darwin_row_of_the_platform_table(monkeypatch):
    from tether.helper.root.routing import os_routes_darwin

    run = FakeCommands({("netstat", "-rn", "-f", "inet"): LEGACY})
    monkeypatch.setattr(os_routes_darwin, "run_command", run)
    reader = open_reader(platform="darwin")
    assert isinstance(reader, DarwinRouteReader)
    assert str(reader.read()[0].destination) == "0.0.0.0/0"
    assert "darwin" in os_routes.PLATFORMS
