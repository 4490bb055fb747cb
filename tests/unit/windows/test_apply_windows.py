"""The Windows route applier: the exact New-/Remove-NetRoute commands, rollback, journal and cleanup."""

from __future__ import annotations

import ipaddress
import json

import pytest

from tests.doubles.fake_powershell import FakePowerShell
from tether.helper.root.cleanup import registered_kinds
from tether.helper.root.journal import Journal
from tether.helper.root.powershell import Command, PowerShellError, render
from tether.helper.root.routing.apply import PLATFORMS, RouteError, open_applier
from tether.helper.root.routing.apply_windows import JOURNAL_KIND, WindowsRouteApplier, cleanup_routes
from tether.helper.root.routing.table import RoutePlan, parse_subnet

INDEX = 52


class Adapter:
    """The adapter's state, as Get-NetRoute and Get-NetIPAddress report it; changed by the commands."""

    def __init__(self, fail_on: str = "") -> None:
        self.routes = {"255.255.255.255/32": 2, "224.0.0.0/4": 2}  # Windows' own (Local) routes
        self.addresses: set[str] = set()
        self.fail_on = fail_on
        self.shell = FakePowerShell(
            {
                "Get-NetIPInterface": json.dumps([{"InterfaceIndex": INDEX}]),
                "Get-NetRoute": lambda c: json.dumps(
                    [{"DestinationPrefix": d, "Protocol": p} for d, p in self.routes.items()]
                ),
                "Get-NetIPAddress": lambda c: json.dumps(
                    [{"IPAddress": a.split("/")[0], "PrefixLength": int(a.split("/")[1])} for a in self.addresses]
                ),
                "New-NetRoute": self._new_route,
                "Remove-NetRoute": self._remove_route,
                "New-NetIPAddress": self._new_address,
                "Remove-NetIPAddress": lambda c: "",
            }
        )

    def _new_route(self, c: Command) -> str:
        if c.param("DestinationPrefix") == self.fail_on:
            raise PowerShellError("New-NetRoute failed: The parameter is incorrect.")
        self.routes[str(c.param("DestinationPrefix"))] = 3
        return ""

    def _remove_route(self, c: Command) -> str:
        if self.routes.pop(str(c.param("DestinationPrefix")), None) is None:
            raise PowerShellError("No matching MSFT_NetRoute objects found")
        return ""

    def _new_address(self, c: Command) -> str:
        self.addresses.add(f"{c.param('IPAddress')}/{c.param('PrefixLength')}")
        return ""


def plan(*routes: str, addresses: tuple[str, ...] = ()) -> RoutePlan:
    return RoutePlan(
        routes=tuple(parse_subnet(r, what="route") for r in routes),
        addresses=tuple(ipaddress.ip_interface(a) for a in addresses),
    )


def test_apply_runs_the_documented_commands():
    adapter = Adapter()
    applier = WindowsRouteApplier("tether0", shell=adapter.shell)
    applier.apply(plan("10.96.0.0/12", "10.244.0.0/16", addresses=("100.64.0.1/32",)))
    writes = [s for s in adapter.shell.scripts if not s.startswith("ConvertTo-Json")]
    assert writes == [
        "New-NetIPAddress -InterfaceIndex 52 -IPAddress '100.64.0.1' -PrefixLength 32 -PolicyStore 'ActiveStore'",
        "New-NetRoute -DestinationPrefix '10.96.0.0/12' -InterfaceIndex 52 -PolicyStore 'ActiveStore'",
        "New-NetRoute -DestinationPrefix '10.244.0.0/16' -InterfaceIndex 52 -PolicyStore 'ActiveStore'",
    ]
    assert adapter.shell.scripts[0] == (
        "ConvertTo-Json -Compress -Depth 4 -InputObject @(Get-NetIPInterface -InterfaceAlias 'tether0' "
        "| Select-Object InterfaceIndex)"
    )


def test_a_second_apply_changes_only_the_difference_and_leaves_windows_routes():
    adapter = Adapter()
    applier = WindowsRouteApplier("tether0", shell=adapter.shell)
    applier.apply(plan("10.96.0.0/12", "10.244.0.0/16"))
    added, removed = applier.apply(plan("10.96.0.0/12", "10.50.0.0/16"))
    assert [str(r) for r in added.routes] == ["10.50.0.0/16"]
    assert [str(r) for r in removed.routes] == ["10.244.0.0/16"]
    assert (
        "Remove-NetRoute -DestinationPrefix '10.244.0.0/16' -InterfaceIndex 52 -PolicyStore 'ActiveStore' "
        "-Confirm:$false" in adapter.shell.scripts
    )
    applier.clear()
    assert adapter.routes == {"255.255.255.255/32": 2, "224.0.0.0/4": 2}


def test_a_failure_rolls_back_and_names_the_route():
    adapter = Adapter(fail_on="10.244.0.0/16")
    applier = WindowsRouteApplier("tether0", shell=adapter.shell)
    with pytest.raises(RouteError, match=r"cannot add route 10\.244\.0\.0/16 on tether0: .*parameter is incorrect"):
        applier.apply(plan("10.96.0.0/12", "10.244.0.0/16"))
    assert "10.96.0.0/12" not in adapter.routes
    assert applier.applied.is_empty


def test_routes_are_journaled_and_forgotten(tmp_path):
    journal = Journal(tmp_path / "journal.json")
    adapter = Adapter()
    applier = WindowsRouteApplier("tether0", journal=journal, shell=adapter.shell)
    applier.apply(plan("10.96.0.0/12"))
    (record,) = journal.state.records
    assert (record.kind, record.data, record.module) == (
        JOURNAL_KIND,
        {"dst": "10.96.0.0/12", "dev": "tether0"},
        "tether.helper.root.routing.apply_windows",
    )
    applier.clear()
    assert journal.state.records == ()


def test_a_missing_adapter_is_an_error_unless_clearing():
    shell = FakePowerShell({"Get-NetIPInterface": "[]"})
    applier = WindowsRouteApplier("tether0", shell=shell)
    with pytest.raises(RouteError, match="interface tether0 does not exist"):
        applier.apply(plan("10.96.0.0/12"))
    assert applier.clear() == (RoutePlan(), RoutePlan())


def test_cleanup_removes_recorded_routes_and_tolerates_gone_ones(tmp_path):
    journal = Journal(tmp_path / "journal.json")
    journal.add_record(JOURNAL_KIND, "tether0 10.96.0.0/12", {"dst": "10.96.0.0/12", "dev": "tether0"})
    journal.add_record(JOURNAL_KIND, "tether0 10.1.0.0/16", {"dst": "10.1.0.0/16", "dev": "tether0"})
    shell = FakePowerShell(
        {"Remove-NetRoute": lambda c: _gone(c) if c.param("DestinationPrefix") == "10.1.0.0/16" else ""}
    )
    assert cleanup_routes(journal.state.records, shell) == ["route 10.96.0.0/12 dev tether0"]
    assert shell.scripts[0] == (
        "Remove-NetRoute -DestinationPrefix '10.96.0.0/12' -InterfaceAlias 'tether0' -PolicyStore 'ActiveStore' "
        "-Confirm:$false"
    )
    assert JOURNAL_KIND in registered_kinds()


def _gone(c: Command) -> str:
    raise PowerShellError(f"{render(c)}: No matching MSFT_NetRoute objects found")


@pytest.mark.parametrize("alias", ["", "a\nb", "x" * 300])
def test_bad_aliases_are_refused(alias):
    with pytest.raises(ValueError, match="invalid interface alias"):
        WindowsRouteApplier(alias, shell=FakePowerShell())


def test_the_platform_table_gives_windows_the_windows_applier():
    assert isinstance(open_applier("tether0", platform="win32"), WindowsRouteApplier)
    assert isinstance(PLATFORMS["windows"]("tether0"), WindowsRouteApplier)
