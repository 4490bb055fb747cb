"""The route table computation (pure): collapsing, carving, families, the TUN address, diff, validation."""

from __future__ import annotations

import ipaddress

import pytest

from tether.helper.root.routing.table import (
    EMPTY_PLAN,
    MAX_ROUTES,
    InvalidSubnet,
    PlanError,
    RoutePlan,
    carve,
    choose_addresses,
    compute_plan,
    diff,
    parse_address,
    parse_subnet,
)


def nets(*texts: str) -> tuple:
    return tuple(ipaddress.ip_network(t) for t in texts)


def routes(plan: RoutePlan) -> list[str]:
    return [str(r) for r in plan.routes]


def test_service_and_pods():
    plan = compute_plan(service_subnets=["10.43.0.0/16"], pod_subnets=["10.42.0.0/24", "10.42.1.0/24"])
    assert routes(plan) == ["10.42.0.0/24", "10.42.1.0/24", "10.43.0.0/16"]
    assert [str(a) for a in plan.addresses] == ["169.254.116.1/32"]


def test_covered_subnets_collapse():
    plan = compute_plan(
        service_subnets=["10.43.0.0/16"],
        pod_subnets=["10.0.0.0/8", "10.42.0.0/16", "10.42.7.0/24"],
        also_proxy=["10.43.5.0/24", "10.0.0.0/8"],
    )
    assert routes(plan) == ["10.0.0.0/8"]


def test_adjacent_subnets_are_not_merged():
    # Each route stays recognisable as the subnet it came from.
    assert routes(compute_plan(pod_subnets=["10.1.0.0/24", "10.1.1.0/24"])) == ["10.1.0.0/24", "10.1.1.0/24"]


def test_never_proxy_is_carved_out():
    plan = compute_plan(service_subnets=["10.43.0.0/16"], never_proxy=["10.43.128.0/17"])
    assert routes(plan) == ["10.43.0.0/17"]
    plan = compute_plan(service_subnets=["10.43.0.0/16"], never_proxy=["10.43.0.0/18"])
    assert routes(plan) == ["10.43.64.0/18", "10.43.128.0/17"]


def test_never_proxy_covering_a_whole_subnet_removes_it():
    plan = compute_plan(service_subnets=["10.43.0.0/16"], pod_subnets=["192.168.5.0/24"], never_proxy=["10.0.0.0/8"])
    assert routes(plan) == ["192.168.5.0/24"]


def test_never_proxy_outside_is_a_no_op():
    plan = compute_plan(service_subnets=["10.43.0.0/16"], never_proxy=["172.16.0.0/12", "fd00::/8"])
    assert routes(plan) == ["10.43.0.0/16"]


def test_api_server_ip_inside_a_routed_subnet_is_carved():
    plan = compute_plan(pod_subnets=["10.0.0.0/8"], never_route=["10.0.0.1", "10.200.3.4"])
    got = set(plan.routes)
    for ip in ("10.0.0.1", "10.200.3.4"):
        assert not any(ipaddress.ip_address(ip) in r for r in got)
    # Everything else of 10/8 is still covered, exactly once.
    assert sum(r.num_addresses for r in got) == 2**24 - 2
    for probe in ("10.0.0.0", "10.0.0.2", "10.200.3.3", "10.200.3.5", "10.255.255.255"):
        assert sum(ipaddress.ip_address(probe) in r for r in got) == 1
    # A /32 out of a /8 leaves 24 pieces; the second /32 splits one of those (a /9) into 23 more.
    assert len(got) == 24 - 1 + 23


def test_never_route_outside_routed_changes_nothing():
    plan = compute_plan(service_subnets=["10.43.0.0/16"], never_route=["192.168.1.1", "2001:db8::53"])
    assert routes(plan) == ["10.43.0.0/16"]


def test_also_proxy_is_routed_and_never_proxy_wins():
    plan = compute_plan(service_subnets=["10.43.0.0/16"], also_proxy=["192.168.50.0/24"])
    assert routes(plan) == ["10.43.0.0/16", "192.168.50.0/24"]
    plan = compute_plan(also_proxy=["192.168.50.0/24"], never_proxy=["192.168.50.0/25"])
    assert routes(plan) == ["192.168.50.128/25"]


def test_ipv6_kept_separate():
    plan = compute_plan(
        service_subnets=["10.43.0.0/16", "fd00:43::/112"],
        pod_subnets=["fd00:42::/56"],
        never_route=["fd00:42::1"],
    )
    assert plan.routes_for(4) == nets("10.43.0.0/16")
    v6 = plan.routes_for(6)
    assert ipaddress.ip_network("fd00:43::/112") in v6
    assert not any(ipaddress.ip_address("fd00:42::1") in r for r in v6)
    assert len(v6) == 1 + 72  # fd00:43::/112 plus the /56 split around one address
    assert [str(a) for a in plan.addresses] == ["169.254.116.1/32", "fd74:6574:6865:7200::1/128"]
    # IPv4 first, then IPv6.
    assert [r.version for r in plan.routes] == sorted(r.version for r in plan.routes)


def test_ipv4_exclusions_do_not_touch_ipv6():
    assert carve(nets("fd00::/64"), nets("0.0.0.0/0")) == list(nets("fd00::/64"))


def test_empty():
    plan = compute_plan()
    assert plan == EMPTY_PLAN
    assert plan.is_empty
    assert plan.addresses == ()


def test_address_only_for_families_with_routes():
    plan = compute_plan(pod_subnets=["fd00:42::/64"])
    assert [str(a) for a in plan.addresses] == ["fd74:6574:6865:7200::1/128"]


def _assert_not_network_or_broadcast(plan: RoutePlan) -> None:
    for address in plan.addresses:
        for route in plan.routes_for(address.version):
            assert address.ip not in (route.network_address, route.broadcast_address), (address, route)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"service_subnets": ["10.43.0.0/16"]},
        {"also_proxy": ["169.254.0.0/16"], "service_subnets": ["10.43.0.0/16"]},
        {"also_proxy": ["169.254.116.0/24", "192.0.0.0/24"], "pod_subnets": ["10.42.0.0/16"]},
        {"also_proxy": ["169.254.0.0/16", "192.0.0.0/24"]},
        {"also_proxy": ["0.0.0.0/1", "128.0.0.0/1"], "never_route": ["10.0.0.1"]},
        {"also_proxy": ["169.254.116.0/30", "192.0.0.8/29"]},
        {"pod_subnets": ["fd74:6574:6865:7200::/64", "fd00::/126"]},
    ],
)
def test_address_never_a_network_or_broadcast_address(kwargs):
    plan = compute_plan(**kwargs)
    assert plan.addresses
    _assert_not_network_or_broadcast(plan)


def test_address_falls_back_when_candidates_are_routed():
    plan = compute_plan(also_proxy=["169.254.0.0/16"])
    assert [str(a) for a in plan.addresses] == ["192.0.0.8/32"]
    plan = compute_plan(also_proxy=["169.254.0.0/16", "192.0.0.0/24"])
    # Last resort: the last usable address of the first routed subnet.
    assert [str(a) for a in plan.addresses] == ["169.254.255.254/32"]


def test_address_skips_never_route_ips():
    plan = compute_plan(service_subnets=["10.43.0.0/16"], never_route=["169.254.116.1"])
    assert [str(a) for a in plan.addresses] == ["192.0.0.8/32"]


def test_no_address_possible():
    with pytest.raises(PlanError, match="no IPv4 address"):
        choose_addresses(nets("10.0.0.0/31"), candidates={4: ("10.0.0.1",)})


def test_custom_candidates():
    plan = compute_plan(service_subnets=["10.43.0.0/16"], address_candidates={4: ("100.100.1.1",)})
    assert [str(a) for a in plan.addresses] == ["100.100.1.1/32"]
    with pytest.raises(InvalidSubnet, match="IPv4 TUN address candidate"):
        compute_plan(service_subnets=["10.43.0.0/16"], address_candidates={4: ("fd00::1",)})


def test_too_many_routes():
    many = [f"10.0.{i // 256}.{i % 256}" for i in range(0, 2 * MAX_ROUTES, 2)]
    with pytest.raises(PlanError, match="routes"):
        compute_plan(pod_subnets=["10.0.0.0/8"], never_route=many)


def test_diff():
    old = compute_plan(service_subnets=["10.43.0.0/16"], pod_subnets=["10.42.0.0/16"])
    new = compute_plan(service_subnets=["10.43.0.0/16"], pod_subnets=["10.44.0.0/16"], also_proxy=["fd00::/64"])
    add, remove = diff(old, new)
    assert routes(add) == ["10.44.0.0/16", "fd00::/64"]
    assert [str(a) for a in add.addresses] == ["fd74:6574:6865:7200::1/128"]
    assert routes(remove) == ["10.42.0.0/16"]
    assert remove.addresses == ()
    assert diff(new, new) == (EMPTY_PLAN, EMPTY_PLAN)
    add, remove = diff(None, new)
    assert add == new and remove == EMPTY_PLAN
    add, remove = diff(new, EMPTY_PLAN)
    assert add == EMPTY_PLAN and remove == new


def test_plan_normalises():
    plan = RoutePlan(routes=("10.2.0.0/16", "fd00::/64", "10.1.0.0/16", "10.1.0.0/16"), addresses=("169.254.116.1/32",))
    assert routes(plan) == ["10.1.0.0/16", "10.2.0.0/16", "fd00::/64"]
    assert plan == RoutePlan(routes=nets("fd00::/64", "10.1.0.0/16", "10.2.0.0/16"), addresses=plan.addresses)
    assert "10.1.0.0/16" in str(plan)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"service_subnets": ["10.43.0.1/16"]},
            'invalid service subnet "10.43.0.1/16": host bits are set; did you mean 10.43.0.0/16?',
        ),
        ({"pod_subnets": ["10.42.0.0"]}, 'invalid pod subnet "10.42.0.0": missing prefix length (write 10.42.0.0/32'),
        ({"also_proxy": ["10.1.0.0/33"]}, 'invalid also-proxy subnet "10.1.0.0/33": prefix length 33 is out of range'),
        ({"never_proxy": ["bogus/8"]}, 'invalid never-proxy subnet "bogus/8": "bogus" is not an IP address'),
        ({"never_proxy": [""]}, 'invalid never-proxy subnet "": empty value'),
        ({"never_proxy": ["10.0.0.0/x"]}, 'invalid never-proxy subnet "10.0.0.0/x": prefix length "x" is not a number'),
        ({"never_route": ["10.0.0.300"]}, 'invalid never-route IP "10.0.0.300": not an IP address'),
        ({"never_route": ["10.0.0.0/24"]}, 'invalid never-route IP "10.0.0.0/24": expected one address, got a subnet'),
        ({"service_subnets": [42]}, 'invalid service subnet "42": expected a CIDR string, got int'),
        ({"pod_subnets": ["fe80::/64%eth0"]}, "invalid pod subnet"),
    ],
)
def test_validation_names_the_value(kwargs, message):
    with pytest.raises(InvalidSubnet) as info:
        compute_plan(**kwargs)
    assert message in str(info.value)


def test_a_lone_string_is_one_subnet():
    assert routes(compute_plan(service_subnets="10.43.0.0/16", never_route="10.43.0.1")) == routes(
        compute_plan(service_subnets=["10.43.0.0/16"], never_route=["10.43.0.1"])
    )


def test_parse_helpers():
    assert parse_subnet(" 10.0.0.0/8 ") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_address("10.0.0.1/32") == ipaddress.ip_address("10.0.0.1")
    assert parse_address(ipaddress.ip_network("fd00::1/128")) == ipaddress.ip_address("fd00::1")
    with pytest.raises(InvalidSubnet, match="zone index"):
        parse_address("fe80::1%eth0")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # Every candidate is routed and the last address of ::/0 is ffff:...:fffe, a multicast address
        # no interface can hold; the kernel refused it and the TUN had no IPv6 address.
        ({"also_proxy": ["::/0"]}, "fd74:6574:6865:7200::1/128"),
        ({"also_proxy": ["0.0.0.0/0"]}, "169.254.116.1/32"),
        ({"also_proxy": ["::/1", "8000::/1"]}, "fd74:6574:6865:7200::1/128"),
        ({"also_proxy": ["0.0.0.0/1", "128.0.0.0/1"]}, "169.254.116.1/32"),
    ],
)
def test_a_subnet_covering_everything_still_gets_a_unicast_address(kwargs, expected):
    plan = compute_plan(**kwargs)
    assert [str(a) for a in plan.addresses] == [expected]


@pytest.mark.parametrize("subnet", ["::/0", "0.0.0.0/0"])
def test_covering_everything_with_holes_gives_an_assignable_address(subnet):
    avoid = ["fd74:6574:6865:7200::1", "fd00::5"] if ":" in subnet else ["169.254.116.1", "192.0.0.8", "10.0.0.1"]
    plan = compute_plan(also_proxy=[subnet], never_route=avoid)
    (address,) = plan.addresses
    assert not (address.ip.is_multicast or address.ip.is_reserved or address.ip.is_unspecified)
    assert str(address.ip) not in avoid
    assert any(address.ip in route for route in plan.routes)
    _assert_not_network_or_broadcast(plan)
