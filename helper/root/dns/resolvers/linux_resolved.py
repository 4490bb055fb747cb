"""Linux with systemd-resolved: per-link DNS and routing domains on the TUN, set over D-Bus.

resolved asks a link's DNS servers only for the names matching that link's domains when the link is
not a default route. So the TUN link gets our server (with its port: SetLinkDNSEx), the routing-only
domains the DNS rules claim (`~cluster.local`, `~<namespace>`, `~svc`, include-suffixes, reverse zones),
our search domain as an ordinary domain (resolved appends it to single labels, `web` becomes
`web.<search>`, which the rules map back), DefaultRoute off, and DNSSEC, DNS-over-TLS, LLMNR and
mDNS off. Names outside those domains (`.com` ...) never reach our server. RevertLink undoes all of
it; the kernel link going away undoes it too.

Crash safety: apply() records the link in the helper's journal (kind ``resolved-link``); the
cleanup step below reverts a link that still exists under that name and index.

The pure part is `link_calls()`; the bus is behind `Resolve1`, so the tests can use a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tether.helper.root.cleanup import register_cleanup
from tether.helper.root.dns.resolvers.base import DIES_WITH_HELPER, IPAddress, ResolverError, ResolverSettings
from tether.helper.root.dns.resolvers.linux_nft import nameservers
from tether.helper.root.journal import ExtraRecord

if TYPE_CHECKING:
    from tether.helper.root.journal import Journal

log = logging.getLogger("tether.helper.root.dns.resolvers")

MODE = "systemd-resolved"
KIND = "resolved-link"
SERVICE = "org.freedesktop.resolve1"
PATH = "/org/freedesktop/resolve1"
INTERFACE = "org.freedesktop.resolve1.Manager"
RESOLVED_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
# `<svc>.<namespace>.svc` is asked as is: route the `svc` label too.
EXTRA_ROUTING = ("svc",)

# (method, D-Bus signature, arguments)
Call = tuple[str, str, list[Any]]
T = TypeVar("T")


class Resolve1(Protocol):
    """The org.freedesktop.resolve1.Manager object, reduced to what we need."""

    def call(self, method: str, signature: str, args: list[Any]) -> None: ...

    def dns_servers(self) -> list[tuple[int, int, bytes]]:
        """The Manager's DNS property: (ifindex, family, address) for every configured server."""
        ...


def _domain(name: str) -> str:
    return name.strip().rstrip(".").lower()


def link_domains(settings: ResolverSettings) -> list[tuple[str, bool]]:
    """SetLinkDomains' (domain, routing_only) pairs: the search domain searchable, the rest routing-only."""
    search = _domain(settings.search_domain)
    pairs: list[tuple[str, bool]] = [(search, False)] if search else []
    for name in (*settings.routing_domains, *EXTRA_ROUTING):
        domain = _domain(name)
        if domain and domain != search and (domain, True) not in pairs:
            pairs.append((domain, True))
    return pairs


def link_calls(settings: ResolverSettings, ifindex: int) -> list[Call]:
    """Every call apply() makes on the TUN link, in order."""
    family = socket.AF_INET if settings.server.version == 4 else socket.AF_INET6
    server = (family, settings.server.packed, settings.port, "")
    return [
        ("SetLinkDNSEx", "ia(iayqs)", [ifindex, [list(server)]]),
        ("SetLinkDomains", "ia(sb)", [ifindex, [list(pair) for pair in link_domains(settings)]]),
        ("SetLinkDefaultRoute", "ib", [ifindex, False]),
        ("SetLinkDNSSEC", "is", [ifindex, "no"]),
        ("SetLinkDNSOverTLS", "is", [ifindex, "no"]),
        ("SetLinkLLMNR", "is", [ifindex, "no"]),
        ("SetLinkMulticastDNS", "is", [ifindex, "no"]),
    ]


def servers_from_property(entries: Sequence[tuple[int, int, bytes]], skip_ifindex: int | None) -> list[IPAddress]:
    """The addresses in resolved's DNS property, global ones first, without our own link's."""
    ordered = sorted(entries, key=lambda e: e[0] != 0)  # stable: the global servers (ifindex 0) first
    found: list[IPAddress] = []
    for ifindex, family, raw in ordered:
        if skip_ifindex is not None and ifindex == skip_ifindex:
            continue
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(bytes(raw))
        if address not in found:
            found.append(address)
    return found


def _blocking(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, on a thread of its own (a loop may run here)."""
    result: list[T] = []
    error: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(factory()))  # type: ignore[arg-type]
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=main, name="resolve1", daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        raise ResolverError("systemd-resolved did not answer on the system bus within 30s")
    if error:
        raise error[0]
    return result[0]


class SystemBusResolve1:
    """resolve1 on the system bus through dbus-fast (a connection per call: calls are rare)."""

    async def _call(self, method: str, signature: str, args: list[Any]) -> list[Any]:
        from dbus_fast import Message, MessageType
        from dbus_fast.aio import MessageBus
        from dbus_fast.constants import BusType

        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        try:
            reply = await bus.call(
                Message(
                    destination=SERVICE,
                    path=PATH,
                    interface=INTERFACE if method != "Get" else "org.freedesktop.DBus.Properties",
                    member=method,
                    signature=signature,
                    body=args,
                )
            )
        finally:
            bus.disconnect()
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply.body else ""
            raise ResolverError(f"{reply.error_name}: {detail}")
        return list(reply.body)

    def call(self, method: str, signature: str, args: list[Any]) -> None:
        _blocking(lambda: self._call(method, signature, args))

    def dns_servers(self) -> list[tuple[int, int, bytes]]:
        body = _blocking(lambda: self._call("Get", "ss", [INTERFACE, "DNS"]))
        return [tuple(entry) for entry in body[0].value]  # type: ignore[misc]


def ifindex_of(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise ResolverError(f"no network link named {name!r} to configure in systemd-resolved") from None


class LinuxResolvedConfigurator:
    mode = MODE
    crash_safety = f"{DIES_WITH_HELPER} (resolved drops the settings of the TUN link, which goes with the helper)"

    def __init__(
        self,
        journal: Journal | None = None,
        bus: Resolve1 | None = None,
        resolv_conf: Path = RESOLVED_RESOLV_CONF,
        ifindex: Callable[[str], int] = ifindex_of,
    ) -> None:
        self.journal = journal
        self.bus = bus or SystemBusResolve1()
        self.resolv_conf = resolv_conf
        self.ifindex = ifindex
        self.link: tuple[str, int] | None = None  # the link apply() configured

    def upstream_nameservers(self) -> tuple[IPAddress, ...]:
        skip = self.link[1] if self.link else None
        try:
            found = servers_from_property(self.bus.dns_servers(), skip)
        except Exception as exc:
            log.info(
                "dns: cannot read systemd-resolved's DNS servers over D-Bus (%s); reading %s", exc, self.resolv_conf
            )
            found = []
        if found:
            return tuple(found)
        try:
            return nameservers(self.resolv_conf.read_text())
        except OSError as exc:
            raise ResolverError(f"cannot read {self.resolv_conf}: {exc.strerror}") from None

    def _call(self, call: Call, link: str) -> None:
        method, signature, args = call
        try:
            self.bus.call(method, signature, args)
        except Exception as exc:
            raise ResolverError(f"systemd-resolved {method} on link {link} (index {args[0]}) failed: {exc}") from None

    def apply(self, settings: ResolverSettings) -> None:
        index = self.ifindex(settings.tun_name)
        if self.journal is not None:
            self.journal.add_record(KIND, settings.tun_name, {"ifindex": index}, module=__name__)
        self.link = (settings.tun_name, index)
        try:
            for call in link_calls(settings, index):
                self._call(call, settings.tun_name)
        except ResolverError:
            with contextlib.suppress(ResolverError):
                self.revert()  # nothing half-applied
            raise
        log.info("dns: systemd-resolved sends %s to %s port %d", settings.tun_name, settings.server, settings.port)

    def revert(self) -> None:
        if self.link is None:
            return
        name, index = self.link
        if _link_is(name, index):
            self._call(("RevertLink", "i", [index]), name)
        self.link = None
        if self.journal is not None:
            self.journal.remove_record(KIND, name)

    def cleanup_stale(self) -> bool:
        return bool(revert_records([], self.bus))


def _link_is(name: str, index: int) -> bool:
    """The link `index` still exists and still has the name we configured."""
    try:
        return socket.if_indextoname(index) == name
    except OSError:
        return False


def revert_records(records: Sequence[ExtraRecord], bus: Resolve1 | None = None) -> list[str]:
    """The cleanup step: revert every journaled link that still exists (a vanished link took its settings along)."""
    done: list[str] = []
    for record in records:
        index = record.data.get("ifindex")
        if not isinstance(index, int) or not _link_is(record.key, index):
            continue
        bus = bus or SystemBusResolve1()
        try:
            bus.call("RevertLink", "i", [index])
        except Exception as exc:
            raise ResolverError(
                f"systemd-resolved RevertLink on link {record.key} (index {index}) failed: {exc}"
            ) from None
        done.append(f"reverted systemd-resolved settings of link {record.key}")
    return done


register_cleanup(KIND, lambda records: revert_records(records))
