"""Applying a RoutePlan on macOS with the documented ``route`` and ``ifconfig`` commands.

* Routes: ``route -n add [-inet6] -net CIDR -interface utunN`` (``-host ADDR`` for a single address) and
  the same with ``delete``. What is present is read back each time (``netstat -rn``: static routes on our
  device), so a route somebody deleted is put back by the next apply. macOS routes carry no protocol
  number, so "ours" means static routes on our own utun, which nobody else configures.
* Addresses: ``ifconfig utunN inet A A alias`` (point to point: the peer is the address itself) and
  ``ifconfig utunN inet6 A prefixlen 128 alias``; removed with ``-alias``. Only addresses an earlier apply
  of this applier added are ever removed.
* Order and failure as on Linux: addresses, new routes, stale routes, stale addresses (make before break);
  on a failure what this call did is undone in reverse and RouteError names the route or address. A route
  that exists already ("File exists") is reported with the conflicting route netstat shows.
* Journal: each route is recorded (kind ``macos-route``) before it is added and forgotten once deleted.
  The routes go with the utun when the helper dies, so the crash cleanup step (registered here) only deletes
  a recorded route that netstat still shows, static, on the recorded device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from tether.helper.root.cleanup import register_cleanup
from tether.helper.root.oscommand import CommandFailed, CommandRunner, run_command
from tether.helper.root.routing.apply import Change, RouteApplier, RouteError, roll_back
from tether.helper.root.routing.os_routes_darwin import DarwinRouteReader
from tether.helper.root.routing.table import EMPTY_PLAN, IPInterface, IPNetwork, RoutePlan, parse_subnet, sort_key

if TYPE_CHECKING:
    from tether.helper.root.journal import ExtraRecord, Journal

__all__ = ["JOURNAL_KIND", "DarwinRouteApplier", "address_command", "cleanup_routes", "route_command"]

JOURNAL_KIND = "macos-route"
# What route(8) prints when the route to add exists, or the one to delete does not.
_EXISTS = "File exists"
_GONE = ("not in table", "No such process")


def route_command(verb: str, net: IPNetwork, device: str) -> list[str]:
    """``route -n add|delete [-inet6] -net CIDR|-host ADDR -interface DEVICE``."""
    if verb not in ("add", "delete"):
        raise ValueError(f"invalid route verb {verb!r}")
    family = ["-inet6"] if net.version == 6 else []
    target = ["-host", str(net.network_address)] if net.prefixlen == net.max_prefixlen else ["-net", str(net)]
    return ["route", "-n", verb, *family, *target, "-interface", device]


def address_command(verb: str, iface: IPInterface, device: str) -> list[str]:
    """``ifconfig DEVICE inet A A alias`` / ``inet6 A prefixlen 128 alias``; ``-alias`` to remove."""
    if verb not in ("add", "delete"):
        raise ValueError(f"invalid address verb {verb!r}")
    address = str(iface.ip)
    if iface.version == 4:
        argv = ["ifconfig", device, "inet", address]
        return [*argv, address, "alias"] if verb == "add" else [*argv, "-alias"]
    argv = ["ifconfig", device, "inet6", address]
    return [*argv, "prefixlen", "128", "alias"] if verb == "add" else [*argv, "-alias"]


class DarwinRouteApplier(RouteApplier):
    def __init__(
        self,
        device: str,
        *,
        journal: Journal | None = None,
        run: CommandRunner | None = None,
    ) -> None:
        self.device = device
        self._journal = journal
        self._run = run or run_command
        self._reader = DarwinRouteReader(self._run)
        self._applied = EMPTY_PLAN

    @property
    def applied(self) -> RoutePlan:
        return self._applied

    def _present_routes(self) -> set[IPNetwork]:
        return {
            r.destination
            for r in self._reader.read()
            if r.device == self.device and r.protocol == "static" and r.type == "unicast"
        }

    def _existing_same(self, net: IPNetwork) -> str | None:
        try:
            routes = self._reader.read()
        except Exception:
            return None
        for route in routes:
            if route.destination == net and route.device != self.device:
                return route.describe()
        return None

    def _route(self, verb: str, net: IPNetwork) -> None:
        try:
            self._run(route_command(verb, net, self.device))
        except CommandFailed as exc:
            if verb == "delete" and any(text in str(exc) for text in _GONE):
                return
            existing = self._existing_same(net) if _EXISTS in str(exc) else None
            reason = (
                f'the same route already exists ("{existing}"); another program (a VPN?) owns it'
                if existing
                else str(exc)
            )
            word = "add" if verb == "add" else "remove"
            raise RouteError(
                f"cannot {word} route {net} dev {self.device}: {reason}",
                device=self.device,
                item=net,
                code=exc.returncode,
                existing=existing,
            ) from exc

    def remove_route(self, net: IPNetwork) -> None:
        """Delete one route through our device (gone already is fine), outside any plan."""
        self._route("delete", net)

    def _address(self, verb: str, iface: IPInterface) -> None:
        try:
            self._run(address_command(verb, iface, self.device))
        except CommandFailed as exc:
            word = "add" if verb == "add" else "remove"
            raise RouteError(
                f"cannot {word} address {iface} on {self.device}: {exc}", device=self.device, item=iface
            ) from exc

    def _record(self, nets: Iterable[IPNetwork], *, add: bool) -> None:
        if self._journal is None:
            return
        for net in nets:
            key = f"{net} dev {self.device}"
            if add:
                self._journal.add_record(JOURNAL_KIND, key, {"dst": str(net), "dev": self.device}, module=__name__)
            else:
                self._journal.remove_record(JOURNAL_KIND, key)

    def apply(self, plan: RoutePlan) -> Change:
        try:
            present = self._present_routes()
        except Exception as exc:
            raise RouteError(f"cannot apply routes on {self.device}: {exc}", device=self.device) from exc
        add_routes = sorted(set(plan.routes) - present, key=sort_key)
        del_routes = sorted(present - set(plan.routes), key=sort_key)
        add_addresses = sorted(set(plan.addresses) - set(self._applied.addresses), key=sort_key)
        del_addresses = sorted(set(self._applied.addresses) - set(plan.addresses), key=sort_key)

        self._record(add_routes, add=True)  # write-ahead: a crash half-way leaves them recorded
        steps: list[tuple[Callable[[], None], Callable[[], None], str]] = [
            *(
                (lambda i=i: self._address("add", i), lambda i=i: self._address("delete", i), f"address {i}")
                for i in add_addresses
            ),
            *(
                (lambda n=n: self._route("add", n), lambda n=n: self._route("delete", n), f"route {n}")
                for n in add_routes
            ),
            *(
                (lambda n=n: self._route("delete", n), lambda n=n: self._route("add", n), f"route {n}")
                for n in del_routes
            ),
            *(
                (lambda i=i: self._address("delete", i), lambda i=i: self._address("add", i), f"address {i}")
                for i in del_addresses
            ),
        ]
        done: list[tuple[Callable[[], None], str]] = []
        try:
            for do, undo, what in steps:
                do()
                done.append((undo, what))
        except RouteError as exc:
            roll_back([(what, undo) for undo, what in done], exc)
            self._record(add_routes, add=False)
            raise
        self._record(del_routes, add=False)
        self._applied = plan
        return RoutePlan(routes=tuple(add_routes), addresses=tuple(add_addresses)), RoutePlan(
            routes=tuple(del_routes), addresses=tuple(del_addresses)
        )


def cleanup_routes(records: Sequence[ExtraRecord], run: CommandRunner | None = None) -> list[str]:
    """The crash cleanup step for ``macos-route`` records (see the module docstring)."""
    runner = run or run_command
    if not records:
        return []
    present = {(str(r.destination), r.device) for r in DarwinRouteReader(runner).read() if r.protocol == "static"}
    removed: list[str] = []
    for record in records:
        dst, dev = str(record.data.get("dst", "")), str(record.data.get("dev", ""))
        if (dst, dev) not in present:
            continue
        DarwinRouteApplier(dev, run=runner).remove_route(parse_subnet(dst, what="journaled route"))
        removed.append(f"route {dst} dev {dev}")
    return removed


register_cleanup(JOURNAL_KIND, cleanup_routes)
