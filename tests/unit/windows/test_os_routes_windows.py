"""The Windows route reader over recorded Get-NetRoute / Get-NetIPInterface answers."""

from __future__ import annotations

import ipaddress

import pytest

from tests.doubles.fake_powershell import FakePowerShell
from tests.unit.windows.conftest import fixture
from tether.helper.root.routing.conflicts import OSRoute
from tether.helper.root.routing.os_routes import PLATFORMS, RouteReadError, open_reader
from tether.helper.root.routing.os_routes_windows import WindowsRouteReader


def reader() -> tuple[WindowsRouteReader, FakePowerShell]:
    shell = FakePowerShell(
        {"Get-NetIPInterface": fixture("get-netipinterface.json"), "Get-NetRoute": fixture("get-netroute.json")}
    )
    return WindowsRouteReader(shell), shell


def by_destination(routes: list[OSRoute], dst: str) -> list[OSRoute]:
    return [r for r in routes if r.destination == ipaddress.ip_network(dst)]


def test_the_reader_runs_exactly_the_documented_commands():
    r, shell = reader()
    r.read()
    assert shell.scripts == [
        "ConvertTo-Json -Compress -Depth 4 -InputObject @(Get-NetIPInterface -ConnectionState 'Connected' "
        "| Select-Object InterfaceIndex,InterfaceAlias,AddressFamily)",
        "ConvertTo-Json -Compress -Depth 4 -InputObject @(Get-NetRoute -PolicyStore 'ActiveStore' "
        "| Select-Object DestinationPrefix,NextHop,InterfaceIndex,InterfaceAlias,RouteMetric,InterfaceMetric,Protocol)",
    ]


def test_a_vpn_adapters_routes_are_read_with_gateway_and_metric():
    routes = reader()[0].read()
    (vpn,) = by_destination(routes, "10.0.0.0/8")
    assert vpn.device == "wg-corp"
    assert vpn.gateway == ipaddress.ip_address("10.8.0.1")
    assert vpn.metric == 5 and vpn.protocol == "netmgmt" and vpn.scope == "universe"
    (on_link,) = by_destination(routes, "10.8.0.0/16")
    assert on_link.gateway is None and on_link.scope == "link"


def test_default_routes_of_disconnected_interfaces_are_left_out():
    routes = reader()[0].read()
    (default,) = by_destination(routes, "0.0.0.0/0")
    assert default.device == "Wi-Fi" and default.gateway == ipaddress.ip_address("192.168.1.1")
    assert default.metric == 35
    (v6,) = by_destination(routes, "::/0")
    assert v6.gateway == ipaddress.ip_address("fe80::1") and v6.protocol == "autostatic"


def test_routes_through_our_adapter_carry_our_protocol():
    routes = reader()[0].read()
    (ours,) = by_destination(routes, "10.96.0.0/12")
    assert ours.is_ours and ours.device == "tether0"
    assert not any(r.is_ours for r in routes if r.device != "tether0")


def test_on_link_ipv6_next_hop_is_no_gateway():
    (link_local,) = by_destination(reader()[0].read(), "fe80::/64")
    assert link_local.gateway is None


def test_a_failing_command_is_a_read_error():
    shell = FakePowerShell(fail={"Get-NetRoute": "Access is denied"})
    with pytest.raises(RouteReadError, match="Access is denied"):
        WindowsRouteReader(shell).read()


def test_a_malformed_row_is_named():
    shell = FakePowerShell(
        {"Get-NetIPInterface": '{"InterfaceIndex":3}', "Get-NetRoute": '{"DestinationPrefix":"x","InterfaceIndex":3}'}
    )
    with pytest.raises(RouteReadError, match="'x'"):
        WindowsRouteReader(shell).read()


def test_the_platform_table_gives_windows_the_windows_reader():
    assert isinstance(open_reader("win32"), WindowsRouteReader)
    assert isinstance(PLATFORMS["windows"](), WindowsRouteReader)
