"""Applying a RoutePlan on Windows through PowerShell's NetTCPIP cmdlets.

Commands (``N`` is the adapter's interface index, looked up by its alias, the TUN's name)::

    Get-NetIPInterface -InterfaceAlias <device>                       (the index; JSON)
    Get-NetRoute -InterfaceIndex N -PolicyStore ActiveStore           (what is there; JSON)
    Get-NetIPAddress -InterfaceIndex N                                (what is there; JSON)
    New-NetIPAddress -InterfaceIndex N -IPAddress A -PrefixLength P -PolicyStore ActiveStore
    New-NetRoute -DestinationPrefix CIDR -InterfaceIndex N -PolicyStore ActiveStore
    Remove-NetRoute -DestinationPrefix CIDR -InterfaceIndex N -PolicyStore ActiveStore -Confirm:$false
    Remove-NetIPAddress -InterfaceIndex N -IPAddress A -PolicyStore ActiveStore -Confirm:$false

* Only the active store is written: nothing survives a reboot, and removing the adapter removes its
  routes and addresses with it (the Wintun adapter is deleted on close and by crash cleanup).
* Ownership: Windows routes carry no owner number, so ours are the manually added routes
  (``Protocol`` NetMgmt) on our own adapter; the routes Windows adds itself there (Local: the
  address's /32, multicast, broadcast) are never touched.
* Order and rollback as on Linux: addresses, new routes, stale routes, stale addresses; on a failure
  what this call did is undone in reverse order and RouteError is raised.
* Journal: every route is recorded (kind ``windows.route``) before it is added, and forgotten once it is
  removed; ``tether helper cleanup`` removes recorded routes through the step this module registers.

Every value reaches PowerShell as a quoted literal (``tether.helper.root.powershell``); networks and
addresses are ``ipaddress`` objects, so their text is canonical before it is quoted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tether.helper.root.cleanup import register_cleanup
from tether.helper.root.journal import ExtraRecord
from tether.helper.root.powershell import Command, PowerShell, PowerShellError, PowerShellRunner, json_rows
from tether.helper.root.routing.apply import Change, RouteApplier, RouteError, roll_back
from tether.helper.root.routing.table import EMPTY_PLAN, IPInterface, IPNetwork, RoutePlan, sort_key

if TYPE_CHECKING:
    from tether.helper.root.journal import Journal

__all__ = ["JOURNAL_KIND", "WindowsRouteApplier", "cleanup_routes"]

JOURNAL_KIND = "windows.route"
STORE = ("PolicyStore", "ActiveStore")
MANUAL_PROTOCOLS = (3, "NetMgmt", "netmgmt")
MAX_ALIAS = 256


def validate_alias(device: str) -> str:
    if not isinstance(device, str) or not device or len(device) > MAX_ALIAS or not device.isprintable():
        raise ValueError(f"invalid interface alias {device!r}")
    return device


def add_route(index: int, net: IPNetwork) -> Command:
    return Command("New-NetRoute", (("DestinationPrefix", str(net)), ("InterfaceIndex", index), STORE))


def remove_route(index: int, net: IPNetwork) -> Command:
    return Command(
        "Remove-NetRoute", (("DestinationPrefix", str(net)), ("InterfaceIndex", index), STORE, ("Confirm", False))
    )


def add_address(index: int, iface: IPInterface) -> Command:
    return Command(
        "New-NetIPAddress",
        (("InterfaceIndex", index), ("IPAddress", str(iface.ip)), ("PrefixLength", iface.network.prefixlen), STORE),
    )


def remove_address(index: int, iface: IPInterface) -> Command:
    return Command(
        "Remove-NetIPAddress", (("InterfaceIndex", index), ("IPAddress", str(iface.ip)), STORE, ("Confirm", False))
    )


def interface_query(device: str) -> Command:
    return Command(
        "Get-NetIPInterface", (("InterfaceAlias", validate_alias(device)),), json=True, select=("InterfaceIndex",)
    )


def routes_query(index: int) -> Command:
    return Command(
        "Get-NetRoute", (("InterfaceIndex", index), STORE), json=True, select=("DestinationPrefix", "Protocol")
    )


def addresses_query(index: int) -> Command:
    return Command(
        "Get-NetIPAddress", (("InterfaceIndex", index), STORE), json=True, select=("IPAddress", "PrefixLength")
    )


class WindowsRouteApplier(RouteApplier):
    def __init__(self, device: str, *, journal: Journal | None = None, shell: PowerShell | None = None) -> None:
        self.device = validate_alias(device)
        self._journal = journal
        self.shell: PowerShell = shell or PowerShellRunner()
        self._applied = EMPTY_PLAN

    @property
    def applied(self) -> RoutePlan:
        return self._applied

    # --- reading ------------------------------------------------------------------------------------

    def _index(self) -> int | None:
        try:
            rows = json_rows(self.shell.run(interface_query(self.device)))
        except PowerShellError as exc:
            if exc.not_found:
                return None
            raise RouteError(f"cannot look up {self.device}: {exc}", device=self.device) from None
        return int(rows[0]["InterfaceIndex"]) if rows else None

    def _present_routes(self, index: int) -> set[IPNetwork]:
        rows = json_rows(self.shell.run(routes_query(index)))
        return {ipaddress.ip_network(r["DestinationPrefix"]) for r in rows if r.get("Protocol") in MANUAL_PROTOCOLS}

    def _present_addresses(self, index: int) -> set[IPInterface]:
        rows = json_rows(self.shell.run(addresses_query(index)))
        return {ipaddress.ip_interface(f"{r['IPAddress'].split('%')[0]}/{r['PrefixLength']}") for r in rows}

    # --- writing ------------------------------------------------------------------------------------

    def _do(self, command: Command, verb: str, item: object, *, gone_ok: bool = False) -> None:
        try:
            self.shell.run(command)
        except PowerShellError as exc:
            if gone_ok and exc.not_found:
                return
            raise RouteError(f"cannot {verb} {item} on {self.device}: {exc}", device=self.device, item=item) from None

    def _record(self, nets: Iterable[IPNetwork]) -> None:
        if self._journal is not None:
            for net in nets:
                self._journal.add_record(
                    JOURNAL_KIND, f"{self.device} {net}", {"dst": str(net), "dev": self.device}, module=__name__
                )

    def _forget(self, nets: Iterable[IPNetwork]) -> None:
        if self._journal is not None:
            for net in nets:
                self._journal.remove_record(JOURNAL_KIND, f"{self.device} {net}")

    def apply(self, plan: RoutePlan) -> Change:
        index = self._index()
        if index is None:
            if plan.is_empty:  # the adapter went away, and its routes with it
                removed, self._applied = self._applied, EMPTY_PLAN
                self._forget(removed.routes)
                return EMPTY_PLAN, removed
            raise RouteError(f"cannot apply routes: interface {self.device} does not exist", device=self.device)
        try:
            present_routes = self._present_routes(index)
            present_addresses = self._present_addresses(index)
        except (PowerShellError, KeyError, ValueError) as exc:
            raise RouteError(f"cannot read the routes of {self.device}: {exc}", device=self.device) from None
        add_routes = sorted(set(plan.routes) - present_routes, key=sort_key)
        del_routes = sorted(present_routes - set(plan.routes), key=sort_key)
        add_addresses = sorted(set(plan.addresses) - present_addresses, key=sort_key)
        del_addresses = sorted((set(self._applied.addresses) & present_addresses) - set(plan.addresses), key=sort_key)

        self._record(plan.routes)  # write-ahead, as on Linux
        undo: list[tuple[str, Callable[[], None]]] = []
        try:
            for iface in add_addresses:
                self._do(add_address(index, iface), "add address", iface)
                undo.append((f"address {iface}", lambda i=iface: self._do(remove_address(index, i), "remove", i)))
            for net in add_routes:
                self._do(add_route(index, net), "add route", net)
                undo.append((f"route {net}", lambda n=net: self._do(remove_route(index, n), "remove", n)))
            for net in del_routes:
                self._do(remove_route(index, net), "remove route", net, gone_ok=True)
                undo.append((f"route {net}", lambda n=net: self._do(add_route(index, n), "add", n)))
            for iface in del_addresses:
                self._do(remove_address(index, iface), "remove address", iface, gone_ok=True)
                undo.append((f"address {iface}", lambda i=iface: self._do(add_address(index, i), "add", i)))
        except RouteError as exc:
            roll_back(undo, exc)
            self._forget(set(add_routes) - set(self._applied.routes))
            raise
        self._forget(del_routes)
        self._applied = plan
        return RoutePlan(routes=tuple(add_routes), addresses=tuple(add_addresses)), RoutePlan(
            routes=tuple(del_routes), addresses=tuple(del_addresses)
        )


def cleanup_routes(records: Sequence[ExtraRecord], shell: PowerShell | None = None) -> list[str]:
    """The cleanup step for ``windows.route`` records: remove each route (gone already is fine)."""
    shell = shell or PowerShellRunner()
    removed: list[str] = []
    for record in records:
        data: dict[str, Any] = dict(record.data)
        net = ipaddress.ip_network(str(data["dst"]))
        alias = ("InterfaceAlias", validate_alias(str(data["dev"])))
        command = Command("Remove-NetRoute", (("DestinationPrefix", str(net)), alias, STORE, ("Confirm", False)))
        try:
            shell.run(command)
        except PowerShellError as exc:
            if not exc.not_found:
                raise
            continue
        removed.append(f"route {net} dev {data['dev']}")
    return removed


register_cleanup(JOURNAL_KIND, cleanup_routes)
