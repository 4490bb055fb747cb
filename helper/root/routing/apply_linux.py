"""Applying a RoutePlan on Linux with pyroute2 (rtnetlink).

* Our routes carry protocol number ``ROUTE_PROTO`` (126) as the ownership marker. The kernel keeps
  it and matches it on delete, so removing "dst X proto 126" can never remove a VPN's route to X.
  What is present is read back from the kernel each time (routes with our proto on our device), so
  a route somebody deleted is put back by the next apply, and our routes are the only ones we list.
* They live in the main table: routes there take part in every ordinary lookup with the usual
  longest-prefix-wins rule, next to the OS's and the VPN's routes. A dedicated table would need an
  ``ip rule`` with a priority of its own, which interacts badly with VPNs' policy rules
  (WireGuard's fwmark rules and ``suppress_prefixlength``) and hides our routes from ``ip route``.
* Routes are added with NLM_F_EXCL (never "replace"): if somebody has the very same route (same
  prefix and metric, e.g. a VPN), the kernel answers EEXIST and we report whose route it is.
* Order: addresses, then new routes, then stale routes go, then stale addresses (make before break:
  no moment where traffic for a subnet falls back to the default route). On any failure, what this
  call did is undone in reverse order and RouteError is raised.
* Addresses: the plan's addresses are added to the device; only addresses an earlier apply of this
  applier added are ever removed (the kernel may own others).

The applier remembers the network namespace it was created in and does its netlink work there.
Calls block (a few netlink round trips); from asyncio prefer ``apply_async`` (a worker thread).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.helper.root.journal import MAIN_TABLE, ROUTE_PROTO, RouteRecord
from tether.helper.root.routing.apply import Change, RouteApplier, RouteError, roll_back
from tether.helper.root.routing.table import EMPTY_PLAN, IPInterface, IPNetwork, RoutePlan, sort_key
from tether.helper.root.vif.tun_linux import NetnsPin

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from tether.helper.root.journal import Journal

__all__ = ["LinuxRouteApplier", "describe_route"]

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
IFA_F_NODAD = 0x02
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL)


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    return exc.errno if isinstance(exc, OSError) else None


def _strerror(exc: BaseException) -> str:
    code = _code(exc)
    if code:
        with contextlib.suppress(ValueError):
            return os.strerror(code)
    return str(exc)


def _network_of(msg: Any) -> IPNetwork:
    family = 4 if msg["family"] == 2 else 6
    dst = msg.get("RTA_DST") or ("0.0.0.0" if family == 4 else "::")
    return ipaddress.ip_network(f"{dst}/{msg['dst_len']}")


def _ifname(ipr: IPRoute, index: int | None) -> str:
    if index is None:
        return "?"
    with contextlib.suppress(Exception):
        return ipr.link("get", index=index)[0].get("IFLA_IFNAME") or f"if{index}"
    return f"if{index}"


def describe_route(ipr: IPRoute, msg: Any) -> str:
    """A route message in `ip route` style: "10.0.0.0/8 via 10.0.0.1 dev vpn0 proto static metric 50"."""
    parts = [str(_network_of(msg))]
    gateway = msg.get("RTA_GATEWAY")
    if gateway:
        parts.append(f"via {gateway}")
    if msg.get("RTA_OIF") is not None:
        parts.append(f"dev {_ifname(ipr, msg.get('RTA_OIF'))}")
    parts.append(f"proto {msg['proto']}")
    if msg.get("RTA_PRIORITY"):
        parts.append(f"metric {msg.get('RTA_PRIORITY')}")
    table = msg.get("RTA_TABLE") or msg["table"]
    if table != MAIN_TABLE:
        parts.append(f"table {table}")
    return " ".join(parts)


def _iproute() -> IPRoute:
    from pyroute2 import IPRoute

    return IPRoute()


class LinuxRouteApplier(RouteApplier):
    def __init__(
        self,
        device: str,
        *,
        journal: Journal | None = None,
        proto: int = ROUTE_PROTO,
        table: int = MAIN_TABLE,
    ) -> None:
        self.device = device
        self.proto = proto
        self.table = table
        self._journal = journal
        self._applied = EMPTY_PLAN
        self._netns = NetnsPin()

    @property
    def applied(self) -> RoutePlan:
        return self._applied

    def close(self) -> None:
        """Forget the pinned namespace. Does not remove routes (``clear`` does)."""
        self._netns.close()

    def apply(self, plan: RoutePlan) -> Change:
        return self._netns.call(lambda: self._apply(plan))

    # --- netlink ------------------------------------------------------------------------------------

    def _record(self, net: IPNetwork) -> RouteRecord:
        return RouteRecord(dst=str(net), dev=self.device, proto=self.proto, table=self.table)

    def _route_args(self, index: int, net: IPNetwork) -> dict[str, Any]:
        return {
            "dst": str(net),
            "oif": index,
            "proto": self.proto,
            "table": self.table,
            "scope": RT_SCOPE_LINK if net.version == 4 else RT_SCOPE_UNIVERSE,
        }

    def _present_routes(self, ipr: IPRoute, index: int) -> set[IPNetwork]:
        found = set()
        for msg in ipr.route("dump", proto=self.proto, table=self.table):
            if msg.get("RTA_OIF") == index:
                found.add(_network_of(msg))
        return found

    def _present_addresses(self, ipr: IPRoute, index: int) -> set[IPInterface]:
        return {
            ipaddress.ip_interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
            for msg in ipr.addr("dump", index=index)
            if msg.get("IFA_ADDRESS")
        }

    def _existing_same(self, ipr: IPRoute, net: IPNetwork) -> str | None:
        """Somebody else's route with the same destination, described, if there is one."""
        with contextlib.suppress(Exception):
            for msg in ipr.route("dump", table=self.table):
                if msg["proto"] != self.proto and _network_of(msg) == net:
                    return describe_route(ipr, msg)
        return None

    def _add_route(self, ipr: IPRoute, index: int, net: IPNetwork) -> None:
        try:
            ipr.route("add", **self._route_args(index, net))
        except Exception as exc:
            code = _code(exc)
            existing = self._existing_same(ipr, net) if code == errno.EEXIST else None
            if existing:
                reason = f'the same route already exists ("{existing}"); another program (a VPN?) owns it'
            elif code == errno.EACCES and net.version == 6:
                reason = "permission denied (is IPv6 disabled on this device?)"
            else:
                reason = _strerror(exc)
            raise RouteError(
                f"cannot add route {net} dev {self.device}: {reason}",
                device=self.device,
                item=net,
                code=code,
                existing=existing,
            ) from exc

    def _del_route(self, ipr: IPRoute, index: int, net: IPNetwork) -> None:
        try:
            ipr.route("del", **self._route_args(index, net))
        except Exception as exc:
            if _code(exc) in _GONE:
                return
            raise RouteError(
                f"cannot remove route {net} dev {self.device}: {_strerror(exc)}",
                device=self.device,
                item=net,
                code=_code(exc),
            ) from exc

    def _addr(self, ipr: IPRoute, command: str, index: int, iface: IPInterface) -> None:
        kwargs: dict[str, Any] = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
        if command == "add" and iface.version == 6:
            kwargs["flags"] = IFA_F_NODAD
        try:
            ipr.addr(command, **kwargs)
        except Exception as exc:
            code = _code(exc)
            if command == "del" and code in _GONE:
                return
            verb = "add" if command == "add" else "remove"
            raise RouteError(
                f"cannot {verb} address {iface} on {self.device}: {_strerror(exc)}",
                device=self.device,
                item=iface,
                code=code,
            ) from exc

    def _forget_all(self) -> Change:
        removed = self._applied
        if self._journal is not None:
            self._journal.remove_routes(self._record(r) for r in removed.routes)
        self._applied = EMPTY_PLAN
        return EMPTY_PLAN, removed

    # --- the transaction -------------------------------------------------------------------------------

    def _apply(self, plan: RoutePlan) -> Change:
        with _iproute() as ipr:
            found = ipr.link_lookup(ifname=self.device)
            if not found:
                if plan.is_empty:
                    # Clearing after the device went away: its routes and addresses went with it.
                    return self._forget_all()
                raise RouteError(f"cannot apply routes: device {self.device} does not exist", device=self.device)
            index = found[0]
            present_routes = self._present_routes(ipr, index)
            present_addresses = self._present_addresses(ipr, index)
            add_routes = sorted(set(plan.routes) - present_routes, key=sort_key)
            del_routes = sorted(present_routes - set(plan.routes), key=sort_key)
            add_addresses = sorted(set(plan.addresses) - present_addresses, key=sort_key)
            del_addresses = sorted(
                (set(self._applied.addresses) & present_addresses) - set(plan.addresses), key=sort_key
            )

            if self._journal is not None:
                # Write-ahead: a crash half-way leaves them recorded (the proto marks them as well).
                self._journal.add_routes(self._record(r) for r in plan.routes)
            undo: list[tuple[str, Callable[[], None]]] = []
            try:
                for iface in add_addresses:
                    self._addr(ipr, "add", index, iface)
                    undo.append((f"address {iface}", lambda i=iface: self._addr(ipr, "del", index, i)))
                for net in add_routes:
                    self._add_route(ipr, index, net)
                    undo.append((f"route {net}", lambda n=net: self._del_route(ipr, index, n)))
                for net in del_routes:
                    self._del_route(ipr, index, net)
                    undo.append((f"route {net}", lambda n=net: self._add_route(ipr, index, n)))
                for iface in del_addresses:
                    self._addr(ipr, "del", index, iface)
                    undo.append((f"address {iface}", lambda i=iface: self._addr(ipr, "add", index, i)))
            except RouteError as exc:
                roll_back(undo, exc)
                if self._journal is not None and add_routes:
                    with contextlib.suppress(Exception):  # if this fails the records stay; cleanup copes
                        present_after = self._present_routes(ipr, index)
                        self._journal.remove_routes(self._record(r) for r in add_routes if r not in present_after)
                raise

        if self._journal is not None and del_routes:
            self._journal.remove_routes(self._record(r) for r in del_routes)
        self._applied = plan
        return RoutePlan(routes=tuple(add_routes), addresses=tuple(add_addresses)), RoutePlan(
            routes=tuple(del_routes), addresses=tuple(del_addresses)
        )
