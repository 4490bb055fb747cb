"""The TUN device, route plans applied with pyroute2, and crash cleanup — for real, inside a throwaway netns.

Each test makes its own network namespace ``tether-test-tun-<random>``; everything (the TUN, routes,
addresses, sockets, nftables tables) is created by a thread that moved into it with setns(2), and
the namespace is deleted at the end, also on failure. Nothing touches the host's namespace.
Needs root, /dev/net/tun and ``ip netns``; skipped otherwise.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import json
import os
import secrets
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from tether.helper.root import cleanup
from tether.helper.root.journal import ROUTE_PROTO, Journal, read_journal
from tether.helper.root.routing.table import RoutePlan, compute_plan

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
MTU = 60000


def _unavailable() -> str:
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (TUN devices and network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns does not work here: {probe.stderr.strip()}"
    return ""


_REASON = _unavailable()
pytestmark = pytest.mark.skipif(bool(_REASON), reason=_REASON or "available")


# --- namespace plumbing ------------------------------------------------------------------------------


@pytest.fixture
def tun_ns():
    name = f"tether-test-tun-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


_libc = ctypes.CDLL(None, use_errno=True)


def call_in(netns: str, fn: Callable[[], T], timeout: float = 120) -> T:
    """fn() on a new thread that moved into netns (only that thread moves; it ends there)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
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


def ip_json(netns: str, *args: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", "-n", netns, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def our_routes(netns: str) -> dict[str, dict]:
    """Routes with our protocol number in the main table, both families, keyed by destination."""
    found = {}
    for family in ("-4", "-6"):
        for route in ip_json(netns, family, "route", "show", "table", "main"):
            if route.get("protocol") != str(ROUTE_PROTO):
                continue
            dst = route["dst"]
            if "/" not in dst:
                dst += "/32" if family == "-4" else "/128"
            found[dst] = route
    return found


def links(netns: str) -> dict[str, dict]:
    return {link["ifname"]: link for link in ip_json(netns, "link", "show")}


def addresses(netns: str, dev: str) -> set[str]:
    out = ip_json(netns, "addr", "show", "dev", dev)
    return {f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"]} if out else set()


def plan_dsts(plan: RoutePlan) -> set[str]:
    return {str(r) for r in plan.routes}


# --- route events (to see that an incremental apply leaves kept routes alone) ----------------------------

RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTM_NEWROUTE, RTM_DELROUTE = 24, 25


def route_monitor() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
    sock.bind((0, RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
    return sock


def route_events(sock: socket.socket, proto: int = ROUTE_PROTO) -> list[tuple[str, str]]:
    """("new"|"del", "dst/len") for every queued route notification with protocol ``proto``."""
    events = []
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return events
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=LH", data, offset)
            body = data[offset + 16 : offset + length]
            offset += (length + 3) & ~3
            if kind not in (RTM_NEWROUTE, RTM_DELROUTE):
                continue
            family, dst_len, _, _, _, rt_proto = struct.unpack_from("=BBBBBB", body)
            if rt_proto != proto:
                continue
            dst = "0.0.0.0" if family == socket.AF_INET else "::"
            pos = 12
            while pos + 4 <= len(body):
                rta_len, rta_type = struct.unpack_from("=HH", body, pos)
                if rta_len < 4:
                    break
                if rta_type == 1:  # RTA_DST
                    dst = socket.inet_ntop(family, body[pos + 4 : pos + rta_len])
                pos += (rta_len + 3) & ~3
            events.append(("new" if kind == RTM_NEWROUTE else "del", f"{dst}/{dst_len}"))


# --- packets -----------------------------------------------------------------------------------------------


def ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp4_packet(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    header = header[:10] + struct.pack("!H", ip_checksum(header)) + header[12:]
    return header + udp


def parse_udp4(packet: bytes) -> tuple[str, int, str, int, bytes] | None:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    ihl = (packet[0] & 0x0F) * 4
    src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
    sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
    return src, sport, dst, dport, packet[ihl + 8 : ihl + length]


def wait_for_udp(dev, dst: str, timeout: float = 5) -> tuple[str, int, str, int, bytes]:
    """Read packets from the TUN until a UDP datagram to ``dst`` shows up (IPv6 chatter is skipped)."""
    deadline = timeout
    while deadline > 0:
        ready, _, _ = select.select([dev.fileno()], [], [], 0.2)
        deadline -= 0.2
        if not ready:
            continue
        for packet in dev.read_batch(16):
            parsed = parse_udp4(packet)
            if parsed and parsed[2] == dst:
                return parsed
    raise AssertionError(f"no UDP datagram to {dst} came out of the TUN")


# --- tests ----------------------------------------------------------------------------------------------------


def test_device_basics(tun_ns):
    from tether.helper.root.vif.device import TunError
    from tether.helper.root.vif.tun_linux import TunLinux

    def body() -> None:
        with TunLinux("tether0", mtu=MTU) as dev:
            assert dev.name == "tether0"
            with pytest.raises(TunError, match="exists"):
                TunLinux("tether0")
            with TunLinux() as second:  # the pattern tether%d takes the next free name
                assert second.name == "tether1"
            assert dev.read() is None
            assert dev.read_batch() == []

            link = links(tun_ns)["tether0"]
            assert link["mtu"] == MTU
            assert "UP" in link["flags"]
            assert link["ifalias"].startswith(f"tether-helper pid={os.getpid()} ")
            # IPv6 autoconfiguration is off: no link-local address, no router solicitations.
            assert addresses(tun_ns, "tether0") == set()

            dev.add_address("169.254.116.1/32")
            dev.add_address("169.254.116.1/32")  # idempotent
            assert addresses(tun_ns, "tether0") == {"169.254.116.1/32"}
            dev.remove_address("169.254.116.1/32")
            dev.remove_address("169.254.116.1/32")
            assert addresses(tun_ns, "tether0") == set()
        assert dev.closed
        assert "tether0" not in links(tun_ns)
        assert "tether1" not in links(tun_ns)

    call_in(tun_ns, body)


def test_invalid_arguments():
    from tether.helper.root.vif.tun_linux import TunLinux

    for name in ("", "x" * 16, "bad name", "tether%s", "a/b"):
        with pytest.raises(ValueError, match="invalid device name"):
            TunLinux(name)
    for mtu in (0, 100, 70000):
        with pytest.raises(ValueError, match="invalid MTU"):
            TunLinux("tether9", mtu=mtu)


def test_close_from_another_namespace_reaches_the_device(tun_ns):
    from tether.helper.root.vif.tun_linux import TunLinux

    dev = call_in(tun_ns, lambda: TunLinux("tether0", mtu=1500))
    assert "tether0" in links(tun_ns)
    dev.close()  # this (main) thread is in another namespace; the device remembers its own
    assert "tether0" not in links(tun_ns)


def test_asyncio_reader_gets_packets(tun_ns):
    from tether.helper.root.routing.apply_linux import LinuxRouteApplier
    from tether.helper.root.vif.tun_linux import TunLinux

    def body() -> list[tuple]:
        async def main() -> list[tuple]:
            with TunLinux("tether0", mtu=MTU) as dev:
                applier = LinuxRouteApplier(dev.name)
                applier.apply(compute_plan(service_subnets=["10.44.0.0/16"]))  # blocking works inside a loop too
                await applier.apply_async(compute_plan(service_subnets=["10.43.0.0/16"]))
                assert set(our_routes(tun_ns)) == {"10.43.0.0/16"}
                got: list[tuple] = []
                done = asyncio.Event()

                def readable() -> None:
                    for packet in dev.read_batch():
                        parsed = parse_udp4(packet)
                        if parsed and parsed[2].startswith("10.43."):
                            got.append(parsed)
                    if len(got) == 3:
                        done.set()

                loop = asyncio.get_running_loop()
                loop.add_reader(dev.fileno(), readable)
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    for i in range(3):
                        sock.sendto(b"x" * 30000, (f"10.43.0.{10 + i}", 53))
                    await asyncio.wait_for(done.wait(), 5)
                finally:
                    loop.remove_reader(dev.fileno())
                    sock.close()
                await applier.clear_async()
                applier.close()
                return got

        return asyncio.run(main())

    got = call_in(tun_ns, body)
    assert [g[2] for g in got] == ["10.43.0.10", "10.43.0.11", "10.43.0.12"]
    assert all(len(g[4]) == 30000 for g in got), "large datagrams arrive whole with the large MTU"


def test_plan_apply_change_crash_and_cleanup(tun_ns, tmp_path):
    from tether.helper.root.routing.apply_linux import LinuxRouteApplier
    from tether.helper.root.vif.tun_linux import TunLinux

    journal_path = tmp_path / "run" / "journal.json"
    plan1 = compute_plan(
        service_subnets=["10.43.0.0/16", "fd00:43::/112"],
        pod_subnets=["10.42.0.0/16"],
        never_route=["10.43.0.1"],  # e.g. the API server
    )
    plan2 = compute_plan(
        service_subnets=["10.43.0.0/16", "fd00:43::/112"],
        pod_subnets=["10.42.0.0/16"],
        also_proxy=["192.168.77.0/24"],
        never_route=["10.43.0.2"],
    )
    leaked: list = []

    def body() -> None:
        journal = Journal(journal_path)
        dev = TunLinux("tether0", mtu=MTU, journal=journal)
        applier = LinuxRouteApplier(dev.name, journal=journal)

        # 1. Apply: our routes, with our proto, on our device; our addresses.
        added, removed = applier.apply(plan1)
        assert added == plan1 and removed.is_empty
        routes = our_routes(tun_ns)
        assert set(routes) == plan_dsts(plan1)
        assert all(r["dev"] == "tether0" and r["protocol"] == str(ROUTE_PROTO) for r in routes.values()), routes
        assert "10.43.0.1/32" not in routes and "10.43.0.0/32" in routes
        assert {str(a) for a in plan1.addresses} <= addresses(tun_ns, "tether0")
        assert {r.dst for r in journal.state.routes} == plan_dsts(plan1)
        assert applier.apply(plan1) == (RoutePlan(), RoutePlan()), "re-applying the same plan changes nothing"

        # 2. Packets: the kernel routes a datagram into the TUN, and takes one written into it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.bind(("0.0.0.0", 0))
        port = sock.getsockname()[1]
        sock.sendto(b"ping", ("10.42.3.4", 9999))
        src, sport, dst, dport, payload = wait_for_udp(dev, "10.42.3.4")
        assert (src, sport, dst, dport, payload) == ("169.254.116.1", port, "10.42.3.4", 9999, b"ping")
        assert dev.write(udp4_packet("10.42.3.4", 9999, src, port, b"pong"))
        assert sock.recvfrom(100) == (b"pong", ("10.42.3.4", 9999))
        sock.close()

        # 3. A changed plan is applied incrementally: only the difference moves.
        monitor = route_monitor()
        added, removed = applier.apply(plan2)
        events = route_events(monitor)
        monitor.close()
        assert {str(r) for r in added.routes} == plan_dsts(plan2) - plan_dsts(plan1)
        assert {str(r) for r in removed.routes} == plan_dsts(plan1) - plan_dsts(plan2)
        assert set(events) == {("new", d) for d in plan_dsts(plan2) - plan_dsts(plan1)} | {
            ("del", d) for d in plan_dsts(plan1) - plan_dsts(plan2)
        }
        touched = {d for _, d in events}
        for kept in ("10.42.0.0/16", "fd00:43::/112", "10.43.128.0/17"):
            assert kept in plan_dsts(plan2) and kept not in touched, f"{kept} was re-created"
        assert set(our_routes(tun_ns)) == plan_dsts(plan2)
        assert {r.dst for r in journal.state.routes} == plan_dsts(plan2)

        # Other tables' worth of state that cleanup must find by its markers (nft, when available).
        if shutil.which("nft"):
            mark = str(journal.owner)
            subprocess.run(["nft", "add", "table", "inet", "tether_test", f'{{ comment "{mark}" ; }}'], check=True)
            subprocess.run(["nft", "add", "table", "inet", "tether_foreign"], check=True)

        # 4. Crash: drop everything without closing (the descriptor stays open, as if inherited).
        leaked.extend([dev._fd, dev._netns, applier._netns])

    call_in(tun_ns, body)
    assert "tether0" in links(tun_ns) and our_routes(tun_ns), "the crash left the device and routes"
    assert read_journal(journal_path).links == ("tether0",)

    try:
        # Somebody else's link and route (a VPN, say) must survive cleanup.
        subprocess.run(["ip", "-n", tun_ns, "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn1"], check=True)
        subprocess.run(["ip", "-n", tun_ns, "link", "set", "vpn0", "up"], check=True)
        subprocess.run(["ip", "-n", tun_ns, "route", "add", "10.0.0.0/8", "dev", "vpn0", "proto", "static"], check=True)

        report = call_in(tun_ns, lambda: cleanup.run(journal_path))
        assert report.ok, report
        assert report.journal == "read"
        assert not journal_path.exists()
        assert "link tether0" in report.removed
        assert not [name for name in links(tun_ns) if name.startswith("tether")]
        assert our_routes(tun_ns) == {}
        assert "vpn0" in links(tun_ns)
        assert [r["dst"] for r in ip_json(tun_ns, "route", "show", "proto", "static")] == ["10.0.0.0/8"]
        if shutil.which("nft"):
            tables = subprocess.run(
                ["ip", "netns", "exec", tun_ns, "nft", "list", "tables"], capture_output=True, text=True
            )
            assert "tether_test" not in tables.stdout
            assert "tether_foreign" in tables.stdout, "a tether_* table without our comment is not ours"

        # Again: nothing to do, nothing done.
        again = call_in(tun_ns, lambda: cleanup.run(journal_path))
        assert again.ok and again.removed == [] and again.journal == "missing"
    finally:
        fd, *pins = leaked
        with pytest.raises(OSError) as gone:
            os.read(fd, 1)  # the link was deleted under the open descriptor
        assert gone.value.errno in (errno.EBADFD, errno.EIO, errno.EAGAIN)
        os.close(fd)
        for pin in pins:
            pin.close()


def test_cleanup_without_journal_uses_markers(tun_ns, tmp_path):
    from tether.helper.root.routing.apply_linux import LinuxRouteApplier
    from tether.helper.root.vif.tun_linux import TunLinux

    journal_path = tmp_path / "journal.json"
    leaked: list = []

    def crash() -> None:
        dev = TunLinux(mtu=1500)  # no journal at all
        applier = LinuxRouteApplier(dev.name)
        applier.apply(compute_plan(service_subnets=["10.43.0.0/16", "fd00:43::/112"]))
        leaked.extend([dev._fd, dev._netns, applier._netns])

    call_in(tun_ns, crash)
    try:
        journal_path.write_text("{ this is not a journal")
        report = call_in(tun_ns, lambda: cleanup.run(journal_path))
        assert report.ok, report
        assert report.journal == "corrupt"
        assert not journal_path.exists()
        assert our_routes(tun_ns) == {}
        assert not [name for name in links(tun_ns) if name.startswith("tether")]
    finally:
        os.close(leaked[0])
        for pin in leaked[1:]:
            pin.close()


def test_conflicting_route_is_named_and_nothing_stays_half_applied(tun_ns):
    from tether.helper.root.routing.apply import RouteError
    from tether.helper.root.routing.apply_linux import LinuxRouteApplier
    from tether.helper.root.vif.tun_linux import TunLinux

    subprocess.run(["ip", "-n", tun_ns, "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn1"], check=True)
    subprocess.run(["ip", "-n", tun_ns, "link", "set", "vpn0", "up"], check=True)
    subprocess.run(["ip", "-n", tun_ns, "route", "add", "10.50.0.0/16", "dev", "vpn0", "proto", "static"], check=True)

    def body() -> None:
        with TunLinux("tether0", mtu=MTU) as dev:
            applier = LinuxRouteApplier(dev.name)
            good = compute_plan(service_subnets=["10.43.0.0/16"])
            applier.apply(good)
            bad = compute_plan(
                service_subnets=["10.43.0.0/16"], pod_subnets=["10.40.0.0/16", "10.50.0.0/16", "fd00:42::/64"]
            )
            with pytest.raises(RouteError) as info:
                applier.apply(bad)
            message = str(info.value)
            assert "10.50.0.0/16" in message and "vpn0" in message and "already exists" in message, message
            assert info.value.item == ipaddress.ip_network("10.50.0.0/16")
            # Rolled back: exactly the earlier plan, the foreign route untouched.
            assert set(our_routes(tun_ns)) == plan_dsts(good)
            assert addresses(tun_ns, "tether0") == {str(a) for a in good.addresses}
            assert applier.applied == good
            assert [r["dev"] for r in ip_json(tun_ns, "route", "show", "10.50.0.0/16")] == ["vpn0"]
            applier.clear()
            assert our_routes(tun_ns) == {}
            assert addresses(tun_ns, "tether0") == set()
            applier.close()

    call_in(tun_ns, body)


def test_missing_device_is_a_clear_error(tun_ns):
    from tether.helper.root.routing.apply import RouteError
    from tether.helper.root.routing.apply_linux import LinuxRouteApplier

    def body() -> None:
        applier = LinuxRouteApplier("tether7")
        with pytest.raises(RouteError, match="device tether7 does not exist"):
            applier.apply(compute_plan(service_subnets=["10.43.0.0/16"]))
        applier.close()

    call_in(tun_ns, body)


def test_clear_after_the_device_is_gone(tun_ns, tmp_path):
    from tether.helper.root.routing.apply_linux import LinuxRouteApplier
    from tether.helper.root.vif.tun_linux import TunLinux

    def body() -> None:
        journal = Journal(tmp_path / "journal.json")
        dev = TunLinux("tether0", mtu=1500, addresses=["169.254.116.1/32"], journal=journal)
        assert addresses(tun_ns, "tether0") == {"169.254.116.1/32"}
        applier = LinuxRouteApplier(dev.name, journal=journal)
        plan = compute_plan(service_subnets=["10.43.0.0/16"])
        applier.apply(plan)
        assert journal.state.links == ("tether0",) and journal.state.routes
        dev.close()  # the kernel drops the device's routes with it
        assert our_routes(tun_ns) == {}
        added, removed = applier.clear()
        assert added.is_empty and removed == plan
        assert journal.state.is_empty
        applier.close()

    call_in(tun_ns, body)
