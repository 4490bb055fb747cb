"""The macOS route applier: the exact route/ifconfig commands, read-back, all-or-nothing, journal and cleanup."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.doubles.fake_commands import FakeCommands
from tether.helper.root.journal import ExtraRecord, Journal
from tether.helper.root.routing import apply_darwin
from tether.helper.root.routing.apply import PLATFORMS, RouteError, open_applier
from tether.helper.root.routing.apply_darwin import (
    DarwinRouteApplier,
    address_command,
    cleanup_routes,
    route_command,
)
from tether.helper.root.routing.table import EMPTY_PLAN, RoutePlan

FIXTURES = Path(__file__).parent / "fixtures"
INET = (FIXTURES / "netstat_inet_vpn.txt").read_text()
HEADER = "Routing tables\n\nInternet:\nDestination        Gateway            Flags               Netif Expire\n"
NETSTAT4 = ("netstat", "-rn", "-f", "inet")


def netstat(*rows: str) -> str:
    return HEADER + "".join(f"{row}\n" for row in rows)


def test_route_commands():
    net = ipaddress.ip_network
    assert route_command("add", net("10.96.0.0/12"), "utun7") == [
        "route", "-n", "add", "-net", "10.96.0.0/12", "-interface", "utun7",
    ]  # fmt: skip
    assert route_command("delete", net("fd00:10::/64"), "utun7") == [
        "route", "-n", "delete", "-inet6", "-net", "fd00:10::/64", "-interface", "utun7",
    ]  # fmt: skip
    assert route_command("add", net("10.0.0.7/32"), "utun7") == [
        "route", "-n", "add", "-host", "10.0.0.7", "-interface", "utun7",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="'change'"):
        route_command("change", net("10.0.0.0/8"), "utun7")


def test_address_commands():
    iface = ipaddress.ip_interface
    assert address_command("add", iface("169.254.116.1/32"), "utun7") == [
        "ifconfig", "utun7", "inet", "169.254.116.1", "169.254.116.1", "alias",
    ]  # fmt: skip
    assert address_command("delete", iface("169.254.116.1/32"), "utun7") == [
        "ifconfig", "utun7", "inet", "169.254.116.1", "-alias",
    ]  # fmt: skip
    assert address_command("add", iface("fd00::1/128"), "utun7") == [
        "ifconfig", "utun7", "inet6", "fd00::1", "prefixlen", "128", "alias",
    ]  # fmt: skip


def changes(run: FakeCommands) -> list[list[str]]:
    return [argv for argv in run.commands if argv[0] != "netstat"]


def test_apply_adds_what_is_missing_and_removes_what_is_stale():
    # 10.43.0.0/16 is there already (static on our device); 10.42.0.0/16 is stale.
    run = FakeCommands({NETSTAT4: netstat(
        "10.42/16           link#21            UCS                 utun7",
        "10.43/16           link#21            UCS                 utun7",
        "169.254.116.1      169.254.116.1      UH                  utun7",
    )})  # fmt: skip
    applier = DarwinRouteApplier("utun7", run=run)
    plan = RoutePlan(routes=("10.43.0.0/16", "10.96.0.0/12"), addresses=("169.254.116.1/32",))
    added, removed = applier.apply(plan)
    assert changes(run) == [
        ["ifconfig", "utun7", "inet", "169.254.116.1", "169.254.116.1", "alias"],
        ["route", "-n", "add", "-net", "10.96.0.0/12", "-interface", "utun7"],
        ["route", "-n", "delete", "-net", "10.42.0.0/16", "-interface", "utun7"],
    ]
    assert [str(r) for r in added.routes] == ["10.96.0.0/12"]
    assert [str(r) for r in removed.routes] == ["10.42.0.0/16"]
    assert applier.applied == plan


def test_clear_removes_routes_and_the_addresses_it_added():
    run = FakeCommands()
    applier = DarwinRouteApplier("utun7", run=run)
    applier.apply(RoutePlan(routes=(), addresses=("169.254.116.1/32",)))
    run.answers[NETSTAT4] = netstat("10.96/12           link#21            UCS                 utun7")
    run.commands.clear()
    applier.clear()
    assert changes(run) == [
        ["route", "-n", "delete", "-net", "10.96.0.0/12", "-interface", "utun7"],
        ["ifconfig", "utun7", "inet", "169.254.116.1", "-alias"],
    ]
    assert applier.applied == EMPTY_PLAN


def test_a_vpns_same_route_is_named_and_nothing_is_left_half_done(tmp_path):
    run = FakeCommands(
        {NETSTAT4: INET},
        fail={("route", "-n", "add", "-net", "172.17.4.0/24"): "route: writing to routing socket: File exists"},
    )
    journal = Journal(tmp_path / "journal.json")
    applier = DarwinRouteApplier("utun7", run=run, journal=journal)
    with pytest.raises(RouteError, match=r'172\.17\.4\.0/24 dev utun7: the same route already exists \("172') as info:
        applier.apply(RoutePlan(routes=("10.100.0.0/16", "172.17.4.0/24"), addresses=("169.254.116.1/32",)))
    assert "utun4" in info.value.existing
    assert changes(run)[-2:] == [
        ["route", "-n", "delete", "-net", "10.100.0.0/16", "-interface", "utun7"],
        ["ifconfig", "utun7", "inet", "169.254.116.1", "-alias"],
    ]
    assert applier.applied == EMPTY_PLAN
    assert journal.state.records == ()


def test_routes_are_journaled_while_they_exist(tmp_path):
    journal = Journal(tmp_path / "journal.json")
    run = FakeCommands()
    applier = DarwinRouteApplier("utun7", run=run, journal=journal)
    applier.apply(RoutePlan(routes=("10.96.0.0/12",)))
    assert journal.state.records == (
        ExtraRecord(
            "macos-route",
            "10.96.0.0/12 dev utun7",
            {"dst": "10.96.0.0/12", "dev": "utun7"},
            "tether.helper.root.routing.apply_darwin",
        ),
    )
    run.answers[NETSTAT4] = netstat("10.96/12           link#21            UCS                 utun7")
    applier.clear()
    assert journal.state.records == ()


def test_deleting_a_route_already_gone_is_fine():
    run = FakeCommands(fail={("route", "-n", "delete"): "route: writing to routing socket: not in table"})
    DarwinRouteApplier("utun7", run=run).remove_route(ipaddress.ip_network("10.96.0.0/12"))
    assert run.matching("route") == [["route", "-n", "delete", "-net", "10.96.0.0/12", "-interface", "utun7"]]


def test_cleanup_deletes_only_recorded_routes_still_on_their_device():
    run = FakeCommands({NETSTAT4: netstat(
        "10.96/12           link#21            UCS                 utun7",
        "10.100/16          link#18            UCS                 utun4",
    )})  # fmt: skip
    records = [
        ExtraRecord("macos-route", "a", {"dst": "10.96.0.0/12", "dev": "utun7"}),
        ExtraRecord("macos-route", "b", {"dst": "10.100.0.0/16", "dev": "utun7"}),  # now a VPN's, on utun4
        ExtraRecord("macos-route", "c", {"dst": "10.42.0.0/16", "dev": "utun9"}),  # gone with its utun
    ]
    assert cleanup_routes(records, run) == ["route 10.96.0.0/12 dev utun7"]
    assert run.matching("route") == [["route", "-n", "delete", "-net", "10.96.0.0/12", "-interface", "utun7"]]
    assert cleanup_routes([], run) == []


def test_cleanup_step_is_registered():
    from tether.helper.root.cleanup import registered_kinds

    assert "macos-route" in registered_kinds()


def test_darwin_row_of_the_platform_table(monkeypatch):
    run = FakeCommands()
    monkeypatch.setattr(apply_darwin, "run_command", run)
    applier = open_applier("utun7", platform="darwin")
    assert isinstance(applier, DarwinRouteApplier)
    applier.apply(RoutePlan(routes=("10.96.0.0/12",)))
    assert run.matching("route") == [["route", "-n", "add", "-net", "10.96.0.0/12", "-interface", "utun7"]]
    assert "darwin" in PLATFORMS
