"""Noticing route changes while connected: a VPN that comes up (or goes away) after we connected.

``RouteMonitor`` listens to rtnetlink notifications for IPv4 and IPv6 routes (and links: a device
going up or down changes which routes the reader reports), waits for a burst of them to settle
(``debounce``, 200 ms by default, but never longer than ``max_delay`` after the first one), re-reads
the whole table through its ``RouteReader`` and awaits ``callback(routes)`` with it. The session
runs ``find_conflicts`` on that list and reports what changed.

* It runs on the asyncio loop that calls ``start``: the netlink socket is watched with
  ``loop.add_reader`` (a plain ``AF_NETLINK`` socket bound to the multicast groups, the same thing
  pyroute2's ``bind(groups=...)`` does), so nothing blocks the loop and no thread is left running.
  Re-reads happen on a worker thread (``reader.read_async``).
* The socket is opened in the network namespace of the thread that created the monitor (and the
  default reader reads there too), whichever thread later calls ``start``.
* Notifications about routes carrying our own protocol number (126, what our route applier adds)
  are ignored: they are never conflicts, and re-reading after each of our own changes is waste.
* One refresh at a time: changes that arrive during a refresh cause one more refresh after it.
  Errors of the reader or the callback are logged and the monitor keeps going; a netlink buffer
  overrun (ENOBUFS: notifications were lost) is treated as a change.
* ``stop()`` unhooks the socket, cancels a pending or running refresh and returns within about a
  second. Subscribe first, then read: start the monitor before the initial conflict check (or pass
  ``initial=True``), so a change between the two is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from tether.helper.root.journal import ROUTE_PROTO
from tether.helper.root.routing.apply import UnsupportedPlatform
from tether.helper.root.routing.conflicts import OSRoute
from tether.helper.root.routing.os_routes import RouteReader

if TYPE_CHECKING:
    from tether.helper.root.vif.tun_linux import NetnsPin

__all__ = [
    "DEFAULT_DEBOUNCE",
    "DEFAULT_GROUPS",
    "DEFAULT_MAX_DELAY",
    "RTMGRP_IPV4_ROUTE",
    "RTMGRP_IPV6_ROUTE",
    "RTMGRP_LINK",
    "RouteMonitor",
    "is_relevant",
]

log = logging.getLogger(__name__)

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40  # 1 << (RTNLGRP_IPV4_ROUTE - 1)
RTMGRP_IPV6_ROUTE = 0x400  # 1 << (RTNLGRP_IPV6_ROUTE - 1)
DEFAULT_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
NLMSG_OVERRUN = 4

DEFAULT_DEBOUNCE = 0.2
DEFAULT_MAX_DELAY = 1.0
STOP_TIMEOUT = 1.0
RECV_SIZE = 1 << 16
RCVBUF = 1 << 20

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags

Callback = Callable[[list[OSRoute]], Awaitable[None]]


def is_relevant(data: bytes, ignore_protocols: Iterable[int] = (ROUTE_PROTO,)) -> bool:
    """Whether a datagram of rtnetlink notifications holds a route or link change we care about."""
    ignored = set(ignore_protocols)
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind = _NLMSGHDR.unpack_from(data, offset)[:2]
        if length < _NLMSGHDR.size or offset + length > len(data):
            return True  # malformed or truncated: re-read to be safe
        if kind in (RTM_NEWLINK, RTM_DELLINK, NLMSG_OVERRUN):
            return True
        if kind in (RTM_NEWROUTE, RTM_DELROUTE):
            body = offset + _NLMSGHDR.size
            if body + _RTMSG.size > offset + length:
                return True
            protocol = _RTMSG.unpack_from(data, body)[5]
            if protocol not in ignored:
                return True
        offset += (length + 3) & ~3
    return False


def _open_socket(groups: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


class RouteMonitor:
    """Calls ``callback(routes)`` with the fresh route list after the OS's routes change.

    ``reader`` defaults to a Linux reader created here (and closed by ``stop``/``close``).
    ``trigger()`` asks for a refresh without a netlink event (e.g. "check again now").
    A monitor runs once: after ``stop`` (which may be called from the callback) make a new one.
    """

    def __init__(
        self,
        callback: Callback,
        *,
        reader: RouteReader | None = None,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
        groups: int = DEFAULT_GROUPS,
        ignore_protocols: Iterable[int] = (ROUTE_PROTO,),
    ) -> None:
        if not sys.platform.startswith("linux"):
            raise UnsupportedPlatform(f"watching routes on {sys.platform} is not implemented yet")
        if debounce < 0 or max_delay < debounce:
            raise ValueError(f"need 0 <= debounce ({debounce}) <= max_delay ({max_delay})")
        from tether.helper.root.vif.tun_linux import NetnsPin

        self._callback = callback
        self._netns: NetnsPin = NetnsPin()
        self._own_reader = reader is None
        if reader is None:
            from tether.helper.root.routing.os_routes import LinuxRouteReader

            reader = LinuxRouteReader()
        self.reader: RouteReader = reader
        self.debounce = debounce
        self.max_delay = max_delay
        self.groups = groups
        self.ignore_protocols = frozenset(ignore_protocols)
        self.refreshes = 0  # completed refreshes (the callback was called), for status and tests
        self.last_routes: list[OSRoute] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._first_event: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False

    @property
    def running(self) -> bool:
        return self._sock is not None

    async def start(self, *, initial: bool = False) -> None:
        """Subscribe on the running loop; with ``initial`` also refresh once right away."""
        if self._sock is not None:
            raise RuntimeError("route monitor already started")
        loop = asyncio.get_running_loop()
        groups = self.groups
        sock = self._netns.call(lambda: _open_socket(groups))
        self._loop, self._sock = loop, sock
        loop.add_reader(sock.fileno(), self._on_readable)
        if initial:
            self._fire()

    async def stop(self) -> None:
        """Unsubscribe and cancel any pending refresh; returns within about ``STOP_TIMEOUT`` s."""
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
            sock.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._first_event = None
        self._again = False
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
        self.close()

    def close(self) -> None:
        """Release the namespace pin and the reader we created. ``stop`` calls it."""
        if self._sock is not None:
            raise RuntimeError("stop the route monitor before closing it")
        self._netns.close()
        if self._own_reader:
            self.reader.close()

    async def __aenter__(self) -> RouteMonitor:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def trigger(self) -> None:
        """Ask for a refresh, debounced like a netlink event. Call from the monitor's loop."""
        if self._sock is not None:
            self._schedule()

    # --- events -------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        changed = False
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped notifications: assume a change
                    changed = True
                    continue
                if exc.errno == errno.EINTR:
                    continue
                log.warning("route monitor: reading netlink notifications failed: %s", exc)
                changed = True
                break
            if not data:
                break
            if not changed and is_relevant(data, self.ignore_protocols):
                changed = True
        if changed:
            self._schedule()

    def _schedule(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        if self._first_event is None:
            self._first_event = now
        when = min(now + self.debounce, self._first_event + self.max_delay)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._first_event = None
        if self._sock is None or self._loop is None:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # refresh once more when the current one is done
            return
        self._task = self._loop.create_task(self._refresh(), name="tether-route-monitor")

    async def _refresh(self) -> None:
        while True:
            self._again = False
            try:
                routes = await self.reader.read_async()
            except Exception as exc:
                log.warning("route monitor: re-reading the routing table failed: %s", exc)
            else:
                self.last_routes = routes
                try:
                    await self._callback(routes)
                except Exception:
                    log.exception("route monitor: the route-change callback failed")
                self.refreshes += 1
            if not self._again or self._sock is None:
                return
