"""Reading the OS's routes, finding VPN conflicts in them, and watching them change — for real, in a throwaway netns.

Each test makes its own network namespace ``tether-test-conf-<random>`` with veth pairs inside it:
``vpn0`` (up, carrier, 10.0.0.2/24) and ``vpn1`` (up, but its peer is down: no carrier). The code
under test runs on a thread that moved into the namespace with setns(2) (or is created there and
then used from elsewhere); routes are changed with ``ip -n <ns>``. The namespace is deleted at the
end, also on failure. Nothing touches the host's routes. Needs root and ``ip netns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.doubles.fake_routing import FakeRouteReader
from tether.helper.root.routing.conflicts import ConflictError, OSRoute, find_conflicts
from tether.helper.root.routing.monitor import RouteMonitor
from tether.helper.root.routing.os_routes import LinuxRouteReader

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def _unavailable() -> str:
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns does not work here: {probe.stderr.strip()}"
    return ""


_REASON = _unavailable()
pytestmark = pytest.mark.skipif(bool(_REASON), reason=_REASON or "available")


# --- namespace plumbing ------------------------------------------------------------------------------


def ip(netns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True, capture_output=True, text=True)


@pytest.fixture
def ns():
    name = f"tether-test-conf-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        ip(name, "link", "set", "lo", "up")
        ip(name, "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn0p")
        ip(name, "link", "set", "vpn0p", "up")
        ip(name, "link", "set", "vpn0", "up")
        ip(name, "addr", "add", "10.0.0.2/24", "dev", "vpn0")
        ip(name, "link", "add", "vpn1", "type", "veth", "peer", "name", "vpn1p")
        ip(name, "link", "set", "vpn1", "up")  # the peer stays down: vpn1 has no carrier
        ip(name, "addr", "add", "10.9.0.2/24", "dev", "vpn1")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


_libc = ctypes.CDLL(None, use_errno=True)


def enter(netns: str) -> None:
    """Move the calling thread (only it) into netns."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in(netns: str, fn: Callable[[], T], timeout: float = 60) -> T:
    """fn() on a new thread that moved into netns (the thread ends there)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            enter(netns)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call in {netns} did not finish in {timeout}s")
    if error:
        raise error[0]
    return result[0]


def read_in(netns: str) -> list[OSRoute]:
    def read() -> list[OSRoute]:
        with LinuxRouteReader() as reader:
            return reader.read()

    return call_in(netns, read)


def by_text(routes: list[OSRoute]) -> set[str]:
    return {r.describe() for r in routes}


def has(routes: list[OSRoute], destination: str) -> bool:
    net = ipaddress.ip_network(destination)
    return any(r.destination == net for r in routes)


# --- the reader ----------------------------------------------------------------------------------------


def test_reader_sees_all_tables_and_only_up_links(ns):
    ip(ns, "route", "add", "10.0.0.0/8", "via", "10.0.0.1", "dev", "vpn0", "proto", "static", "metric", "50")
    ip(ns, "route", "add", "172.20.0.0/16", "dev", "vpn0", "table", "100")
    ip(ns, "route", "add", "10.10.0.0/16", "dev", "vpn1")  # on the link without carrier
    ip(ns, "route", "add", "blackhole", "192.0.2.0/24")
    ip(ns, "route", "add", "10.50.0.0/16", "nexthop", "via", "10.0.0.1", "dev", "vpn0", "nexthop", "via", "10.0.0.3")
    ip(ns, "-6", "route", "add", "fd00:1::/64", "dev", "vpn0", "table", "200")

    reader = call_in(ns, LinuxRouteReader)
    try:
        # Created inside the namespace, read from this (host) thread: it still reads the namespace.
        routes = reader.read()
    finally:
        reader.close()
    text = by_text(routes)
    assert "10.0.0.0/8 dev vpn0 via 10.0.0.1" in text
    assert "172.20.0.0/16 dev vpn0 table 100" in text
    assert "fd00:1::/64 dev vpn0 table 200" in text
    assert "blackhole 192.0.2.0/24" in text
    assert {"10.50.0.0/16 dev vpn0 via 10.0.0.1", "10.50.0.0/16 dev vpn0 via 10.0.0.3"} <= text
    assert "local 10.0.0.2/32 dev vpn0 table local" in text
    assert not has(routes, "10.10.0.0/16")  # vpn1 has no carrier
    assert not has(routes, "10.9.0.0/24")
    assert all(r.device != "vpn1" for r in routes)
    corporate = next(r for r in routes if r.describe() == "10.0.0.0/8 dev vpn0 via 10.0.0.1")
    assert (corporate.protocol, corporate.metric, corporate.table, corporate.type) == ("static", 50, 254, "unicast")
    assert routes == sorted(routes, key=OSRoute.sort_key)

    # Once vpn1 has a carrier, its routes count.
    ip(ns, "link", "set", "vpn1p", "up")
    deadline = time.monotonic() + 5
    while True:
        routes = read_in(ns)
        if has(routes, "10.10.0.0/16") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "10.10.0.0/16 dev vpn1" in by_text(routes)


def test_reader_works_inside_a_running_loop(ns):
    ip(ns, "route", "add", "10.0.0.0/8", "via", "10.0.0.1", "dev", "vpn0")

    async def scenario() -> tuple[list[OSRoute], list[OSRoute]]:
        with LinuxRouteReader() as reader:
            return reader.read(), await reader.read_async()

    direct, threaded = call_in(ns, lambda: asyncio.run(scenario()))
    assert direct == threaded
    assert "10.0.0.0/8 dev vpn0 via 10.0.0.1" in by_text(direct)


def test_conflicts_found_in_the_real_table(ns):
    ip(ns, "route", "add", "10.0.0.0/8", "via", "10.0.0.1", "dev", "vpn0")
    ip(ns, "route", "add", "10.140.0.0/16", "dev", "vpn0", "proto", "126")  # ours: never a conflict
    ip(ns, "route", "add", "10.10.0.0/16", "dev", "vpn1")  # down link: not a conflict

    routes = read_in(ns)
    conflicts = find_conflicts(["10.130.0.0/16", "10.140.0.0/15", "10.10.0.0/17", "10.0.0.0/24"], routes)
    assert [c.describe() for c in conflicts] == [
        'subnet 10.0.0.0/24 overlaps with existing route "10.0.0.0/8 dev vpn0 via 10.0.0.1"',
        'subnet 10.10.0.0/17 overlaps with existing route "10.0.0.0/8 dev vpn0 via 10.0.0.1"',
        'subnet 10.130.0.0/16 overlaps with existing route "10.0.0.0/8 dev vpn0 via 10.0.0.1"',
        'subnet 10.140.0.0/15 overlaps with existing route "10.0.0.0/8 dev vpn0 via 10.0.0.1"',
    ]  # 10.0.0.0/24 equals the kernel's route for vpn0's address (not a conflict), but the /8 holds it
    error = ConflictError(conflicts)
    assert str(error).splitlines()[0] == conflicts[0].describe()
    assert find_conflicts(["10.130.0.0/16"], routes, allowed=["10.128.0.0/9"]) == []


# --- the monitor ----------------------------------------------------------------------------------------


class Recorder:
    """Collects the monitor's callbacks (on the monitor's loop) with timestamps."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[OSRoute]]] = []
        self.changed = asyncio.Event()

    async def __call__(self, routes: list[OSRoute]) -> None:
        self.calls.append((time.monotonic(), routes))
        self.changed.set()

    async def wait_for(self, predicate: Callable[[list[OSRoute]], bool], timeout: float) -> float:
        """Seconds until a callback whose routes satisfy predicate (TimeoutError if none)."""
        start = time.monotonic()
        seen = len(self.calls)
        while True:
            for at, routes in self.calls[seen:]:
                if predicate(routes):
                    return at - start
            seen = len(self.calls)
            self.changed.clear()
            remaining = timeout - (time.monotonic() - start)
            if remaining <= 0:
                raise TimeoutError(f"no matching route callback in {timeout}s ({len(self.calls)} calls)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


async def ip_async(netns: str, *args: str) -> None:
    await asyncio.to_thread(ip, netns, *args)


def test_monitor_reports_a_route_added_and_removed(ns):
    async def scenario() -> dict[str, float]:
        recorder = Recorder()
        monitor = RouteMonitor(recorder)
        await monitor.start()
        try:
            await asyncio.sleep(0.1)
            assert recorder.calls == []  # nothing changed yet
            await ip_async(ns, "route", "add", "10.0.0.0/8", "via", "10.0.0.1", "dev", "vpn0")
            added = await recorder.wait_for(lambda r: "10.0.0.0/8 dev vpn0 via 10.0.0.1" in by_text(r), 2)
            conflicts = find_conflicts(["10.130.0.0/16"], recorder.calls[-1][1])
            assert [c.describe() for c in conflicts] == [
                'subnet 10.130.0.0/16 overlaps with existing route "10.0.0.0/8 dev vpn0 via 10.0.0.1"'
            ]
            await ip_async(ns, "route", "del", "10.0.0.0/8", "via", "10.0.0.1", "dev", "vpn0")
            removed = await recorder.wait_for(lambda r: not has(r, "10.0.0.0/8"), 2)
            assert find_conflicts(["10.130.0.0/16"], recorder.calls[-1][1]) == []
            assert monitor.last_routes == recorder.calls[-1][1]
        finally:
            started = time.monotonic()
            await monitor.stop()
            stopped = time.monotonic() - started
        assert not monitor.running
        return {"added": added, "removed": removed, "stop": stopped}

    times = call_in(ns, lambda: asyncio.run(scenario()))
    assert times["added"] < 2 and times["removed"] < 2
    assert times["stop"] < 1


def test_monitor_debounces_a_burst_into_one_refresh(ns):
    batch = "".join(f"route add 10.{i}.0.0/16 via 10.0.0.1 dev vpn0\n" for i in range(100, 140))

    async def scenario() -> list[tuple[float, list[OSRoute]]]:
        recorder = Recorder()
        async with RouteMonitor(recorder, debounce=0.2):
            await asyncio.to_thread(
                subprocess.run, ["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True, capture_output=True
            )
            await recorder.wait_for(lambda r: all(has(r, f"10.{i}.0.0/16") for i in range(100, 140)), 3)
            await asyncio.sleep(0.5)  # nothing more should come
        return recorder.calls

    calls = call_in(ns, lambda: asyncio.run(scenario()))
    assert 1 <= len(calls) <= 2, [len(r) for _, r in calls]


def test_monitor_ignores_our_own_routes_but_sees_links_come_up(ns):
    ip(ns, "route", "add", "10.10.0.0/16", "dev", "vpn1")  # no carrier yet: not reported

    async def scenario() -> None:
        recorder = Recorder()
        async with RouteMonitor(recorder):
            await ip_async(ns, "route", "add", "10.130.0.0/16", "dev", "vpn0", "proto", "126")
            await asyncio.sleep(0.6)
            assert recorder.calls == []  # our own protocol: no refresh
            await ip_async(ns, "link", "set", "vpn1p", "up")
            await recorder.wait_for(lambda r: "10.10.0.0/16 dev vpn1" in by_text(r), 3)

    call_in(ns, lambda: asyncio.run(scenario()))


def test_monitor_stays_in_the_namespace_it_was_created_in(ns):
    # Created inside the namespace, run on a loop in this (host) thread: the socket and the reads are
    # the namespace's. (Only reads and netlink subscriptions happen here; nothing in the host changes.)
    recorder_holder: list[Recorder] = []

    async def scenario() -> None:
        recorder = Recorder()
        recorder_holder.append(recorder)
        monitor = call_in(ns, lambda: RouteMonitor(recorder))
        async with monitor:
            await ip_async(ns, "route", "add", "10.77.0.0/16", "via", "10.0.0.1", "dev", "vpn0")
            await recorder.wait_for(lambda r: "10.77.0.0/16 dev vpn0 via 10.0.0.1" in by_text(r), 2)
            routes = recorder.calls[-1][1]
            assert any(r.device == "vpn0" for r in routes)

    asyncio.run(scenario())


def test_monitor_stop_is_prompt_during_a_slow_callback(ns):
    async def scenario() -> float:
        entered = asyncio.Event()

        async def slow(routes: list[OSRoute]) -> None:
            entered.set()
            await asyncio.sleep(30)

        monitor = call_in(ns, lambda: RouteMonitor(slow, reader=FakeRouteReader([OSRoute("10.0.0.0/8", "vpn0")])))
        await monitor.start(initial=True)
        await asyncio.wait_for(entered.wait(), 2)
        started = time.monotonic()
        await monitor.stop()
        return time.monotonic() - started

    assert call_in(ns, lambda: asyncio.run(scenario())) < 1


def test_monitor_survives_a_failing_callback_and_reader(ns):
    async def scenario() -> int:
        reader = FakeRouteReader([OSRoute("10.0.0.0/8", "vpn0")])
        calls: list[int] = []

        async def flaky(routes: list[OSRoute]) -> None:
            calls.append(len(routes))
            if len(calls) == 1:
                raise RuntimeError("boom")

        monitor = RouteMonitor(flaky, reader=reader, debounce=0.01, max_delay=0.05)
        async with monitor:
            monitor.trigger()
            await asyncio.sleep(0.2)
            reader.error = OSError("netlink went away")
            monitor.trigger()
            await asyncio.sleep(0.2)
            reader.error = None
            monitor.trigger()
            await asyncio.sleep(0.2)
        return len(calls)

    assert call_in(ns, lambda: asyncio.run(scenario())) == 2
