"""Reading the OS's routing tables, for conflict detection: the interface and the Linux reader.

``RouteReader.read()`` returns every route of every table (both families) as ``OSRoute``s, in a
stable order. What counts as a conflict is decided elsewhere (``conflicts.find_conflicts``); the
reader only leaves out what cannot carry traffic right now:

* routes whose output device is down (not administratively up, or no carrier / not operationally
  up: a VPN interface that is configured but not connected). A multipath route becomes one
  ``OSRoute`` per usable next hop; dead and link-down next hops are left out.
* Routes without an output device (``blackhole``, ``unreachable``, ``prohibit``, ``throw``, routes
  through a nexthop group) are kept, with their type and ``device=None``.

The Linux reader (pyroute2, rtnetlink dumps without a table filter, i.e. all tables) remembers the
network namespace of the thread that created it and reads there, whichever thread calls ``read``.
``read`` blocks for a few netlink round trips and works inside a running event loop (it then runs
on a short-lived thread); asyncio code should prefer ``await reader.read_async()``.

Platform table: ``open_reader()`` picks the reader for ``sys.platform``; macOS and Windows raise
``UnsupportedPlatform`` until they have one.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import importlib
import ipaddress
import socket
import sys
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tether.helper.root.routing.apply import UnsupportedPlatform
from tether.helper.root.routing.conflicts import OSRoute

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from tether.helper.root.vif.tun_linux import NetnsPin

__all__ = [
    "PLATFORMS",
    "LinuxRouteReader",
    "RouteReadError",
    "RouteReader",
    "UnsupportedPlatform",
    "open_reader",
    "routes_from_message",
]

IFF_UP = 0x1
IFF_RUNNING = 0x40  # set by the kernel while the device is operationally up (carrier, not dormant)
RTNH_F_DEAD = 0x1
RTNH_F_LINKDOWN = 0x10
_UNUSABLE = RTNH_F_DEAD | RTNH_F_LINKDOWN


class RouteReadError(Exception):
    """Reading the routing table failed; the message says why, ``code`` is the errno if there was one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RouteReader(abc.ABC):
    """Reads the OS's routes (all tables, both families)."""

    @abc.abstractmethod
    def read(self) -> list[OSRoute]:
        """Every usable route, sorted (see the module docstring). Raises ``RouteReadError``."""

    async def read_async(self) -> list[OSRoute]:
        """``read`` on a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.read)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the reader holds (the Linux reader: its namespace descriptor)."""

    def __enter__(self) -> RouteReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- Linux -------------------------------------------------------------------------------------------


def _is_up(flags: int) -> bool:
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def _gateway(attrs: Any) -> str | None:
    gateway = attrs.get("RTA_GATEWAY")
    if gateway:
        return gateway
    via = attrs.get("RTA_VIA")  # an IPv4 route through an IPv6 next hop
    if isinstance(via, Mapping):
        return via.get("addr") or None
    if via is not None:
        with contextlib.suppress(Exception):
            return via.get("addr") or None
    return None


def routes_from_message(msg: Any, links: Mapping[int, tuple[str, int]]) -> list[OSRoute]:
    """The usable routes in one rtnetlink route message (pyroute2 ``rtmsg``).

    ``links`` maps interface index to (name, flags). Zero routes when every output device is down
    or unknown (gone since the dump began); several for a multipath route.
    """
    version = 4 if msg["family"] == socket.AF_INET else 6
    dst = msg.get("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
    destination = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
    common = {
        "destination": destination,
        "table": msg.get("RTA_TABLE") or msg["table"],
        "protocol": msg["proto"],
        "metric": msg.get("RTA_PRIORITY") or 0,
        "scope": msg["scope"],
        "type": msg["type"],
    }

    def hop(oif: int | None, gateway: str | None, flags: int) -> OSRoute | None:
        if oif is None:
            return OSRoute(device=None, gateway=gateway, **common)
        link = links.get(oif)
        if link is None or not _is_up(link[1]) or flags & _UNUSABLE:
            return None
        return OSRoute(device=link[0], gateway=gateway, **common)

    multipath = msg.get("RTA_MULTIPATH")
    if multipath:
        found = (hop(nh["oif"], _gateway(nh), nh["flags"]) for nh in multipath)
        return [route for route in found if route is not None]
    route = hop(msg.get("RTA_OIF"), _gateway(msg), msg["flags"])
    return [] if route is None else [route]


def _iproute() -> IPRoute:
    from pyroute2 import IPRoute

    return IPRoute()


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    return exc.errno if isinstance(exc, OSError) else None


class LinuxRouteReader(RouteReader):
    """Routes of all tables over rtnetlink, read in the namespace this reader was created in."""

    def __init__(self) -> None:
        from tether.helper.root.vif.tun_linux import NetnsPin

        self._netns: NetnsPin = NetnsPin()

    def read(self) -> list[OSRoute]:
        return self._netns.call(self._read)

    def close(self) -> None:
        self._netns.close()

    def _read(self) -> list[OSRoute]:
        try:
            with _iproute() as ipr:
                links = {
                    msg["index"]: (msg.get("IFLA_IFNAME") or f"if{msg['index']}", msg["flags"])
                    for msg in ipr.link("dump")
                }
                routes: set[OSRoute] = set()
                for family in (socket.AF_INET, socket.AF_INET6):
                    try:
                        messages = ipr.route("dump", family=family)
                    except Exception as exc:
                        if family == socket.AF_INET6 and _code(exc) in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
                            continue  # a kernel without IPv6
                        raise
                    for msg in messages:
                        routes.update(routes_from_message(msg, links))
        except RouteReadError:
            raise
        except Exception as exc:
            raise RouteReadError(f"cannot read the routing table: {exc}", code=_code(exc)) from exc
        return sorted(routes, key=OSRoute.sort_key)


# --- the platform table ------------------------------------------------------------------------------

ReaderFactory = Callable[[], RouteReader]


PLATFORMS: dict[str, ReaderFactory] = {
    "linux": LinuxRouteReader,
    "darwin": lambda: importlib.import_module("tether.helper.root.routing.os_routes_darwin").DarwinRouteReader(),
    "windows": lambda: importlib.import_module("tether.helper.root.routing.os_routes_windows").WindowsRouteReader(),
}


def open_reader(platform: str = sys.platform) -> RouteReader:
    """The route reader for this platform, reading in the calling thread's network namespace."""
    from tether.helper.root.vif.device import platform_key

    factory = PLATFORMS.get(platform_key(platform))
    if factory is None:
        raise UnsupportedPlatform(f"no route reader for platform {platform!r}")
    return factory()
