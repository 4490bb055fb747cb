"""Gathering the facts `decide()` chooses from (the I/O half of choosing a resolver mode).

Files are read below a root (a test lays out a temporary one like a host); the system bus is asked
whether systemd-resolved and NetworkManager are there and how they are set up. Every probe that
cannot be made leaves its field at the "not found" value and the bus's failure in `bus_error`.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tether.helper.root.dns.resolvers.choose import Probes

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

RESOLVED = "org.freedesktop.resolve1"
NETWORKMANAGER = "org.freedesktop.NetworkManager"
# Each bus call is local and quick; a hung bus must not hang the connect.
BUS_TIMEOUT = 3.0


@dataclass(frozen=True)
class BusFacts:
    resolved_on_bus: bool = False
    resolved_resolv_conf_mode: str = ""
    networkmanager_dns: str = ""  # the running NetworkManager's DnsManager Mode
    error: str = ""


async def probe_host(root: Path = Path("/"), platform: str = sys.platform, bus_address: str | None = None) -> Probes:
    """Read the probes below `root` and ask the system bus (`bus_address`, default the system bus) on Linux."""
    resolv = root / "etc/resolv.conf"
    try:
        resolv_conf: str | None = resolv.read_text()
    except OSError:
        resolv_conf = None
    link = os.readlink(resolv) if resolv.is_symlink() else None
    if not platform.startswith("linux"):
        return Probes(platform, resolv_conf, resolv_conf_link=link)
    bus = await bus_facts(bus_address)
    configured_nm = networkmanager_configured_dns(root)
    wsl = is_wsl(root)
    return Probes(
        platform,
        resolv_conf,
        resolved_on_bus=bus.resolved_on_bus,
        resolv_conf_link=link,
        resolved_resolv_conf_mode=bus.resolved_resolv_conf_mode,
        networkmanager_dns=bus.networkmanager_dns or configured_nm,
        networkmanager_on_bus=bool(bus.networkmanager_dns),
        wsl=wsl,
        wsl_generates_resolv_conf=wsl_generates_resolv_conf(root) if wsl else True,
        bus_error=bus.error,
    )


async def bus_facts(address: str | None = None) -> BusFacts:
    """Ask the system bus who is there; a bus that cannot be reached gives empty facts and the reason."""
    try:
        bus = await asyncio.wait_for(_connect(address), BUS_TIMEOUT)
    except Exception as exc:  # dbus-fast raises its own errors for a bad address or auth
        return BusFacts(error=f"no system bus: {exc or type(exc).__name__}")
    try:
        return await asyncio.wait_for(_ask(bus), BUS_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return BusFacts(error=f"the system bus did not answer: {exc or type(exc).__name__}")
    finally:
        bus.disconnect()


async def _connect(address: str | None) -> MessageBus:
    # imported here: only Linux has a system bus to ask, and dbus-fast is not installed on Windows
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    bus = MessageBus(bus_address=address) if address else MessageBus(bus_type=BusType.SYSTEM)
    return await bus.connect()


async def _ask(bus: MessageBus) -> BusFacts:
    resolved = await _has_owner(bus, RESOLVED)
    mode = await _property(bus, RESOLVED, "/org/freedesktop/resolve1", f"{RESOLVED}.Manager", "ResolvConfMode")
    nm_dns = ""
    if await _has_owner(bus, NETWORKMANAGER):
        path = "/org/freedesktop/NetworkManager/DnsManager"
        nm_dns = await _property(bus, NETWORKMANAGER, path, f"{NETWORKMANAGER}.DnsManager", "Mode")
    return BusFacts(resolved, mode if resolved else "", nm_dns)


async def _has_owner(bus: MessageBus, name: str) -> bool:
    from dbus_fast import Message, MessageType

    reply = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="NameHasOwner",
            signature="s",
            body=[name],
        )
    )
    return reply is not None and reply.message_type == MessageType.METHOD_RETURN and bool(reply.body[0])


async def _property(bus: MessageBus, name: str, path: str, interface: str, prop: str) -> str:
    from dbus_fast import Message, MessageType

    """A string property, or "" when the service has no such property (older systemd, NetworkManager)."""
    reply = await bus.call(
        Message(
            destination=name,
            path=path,
            interface="org.freedesktop.DBus.Properties",
            member="Get",
            signature="ss",
            body=[interface, prop],
        )
    )
    if reply is None or reply.message_type != MessageType.METHOD_RETURN:
        return ""
    value = reply.body[0].value
    return value if isinstance(value, str) else ""


def networkmanager_config_files(root: Path) -> list[Path]:
    """NetworkManager's configuration in its reading order (NetworkManager.conf(5)): the /usr/lib then /run
    snippets, the main file, the /etc snippets; an /etc snippet hides an earlier one of the same name, as /run
    hides /usr/lib."""
    etc = root / "etc/NetworkManager"
    mine = {p.name for p in (etc / "conf.d").glob("*.conf")}
    early: dict[str, Path] = {}
    for folder in (root / "usr/lib/NetworkManager/conf.d", root / "run/NetworkManager/conf.d"):
        early.update((p.name, p) for p in folder.glob("*.conf") if p.name not in mine)
    return [
        *(early[name] for name in sorted(early)),
        etc / "NetworkManager.conf",
        *sorted((etc / "conf.d").glob("*.conf")),
    ]


def networkmanager_configured_dns(root: Path) -> str:
    """The `dns=` of NetworkManager's [main] section as configured (a later file wins).

    "" when no NetworkManager configuration exists; "default" when it exists without a dns= line."""
    found = ""
    for path in networkmanager_config_files(root):
        try:
            text = path.read_text()
        except OSError:
            continue
        found = found or "default"
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string(text, str(path))
        except configparser.Error:
            continue
        found = parser.get("main", "dns", fallback=found).strip() or found
    return found


def is_wsl(root: Path) -> bool:
    try:
        return "microsoft" in (root / "proc/version").read_text().lower()
    except OSError:
        return False


def wsl_generates_resolv_conf(root: Path) -> bool:
    """/etc/wsl.conf [network] generateResolvConf; WSL generates it unless told false."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string((root / "etc/wsl.conf").read_text())
    except (OSError, configparser.Error):
        return True
    return parser.get("network", "generateResolvConf", fallback="true").strip().lower() not in ("false", "0", "no")
