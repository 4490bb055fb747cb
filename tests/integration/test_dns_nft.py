"""The Linux nftables resolver mode for real, inside a network namespace this test creates.

Layout inside the namespace ``tether-test-dns-<random>``: lo up with 192.0.2.1/32 on it; a dnslib
"upstream" resolver on 192.0.2.1:53; our DNS server on 127.0.0.1:<ephemeral>; a resolv.conf in a
temp dir naming 192.0.2.1. Every nft command runs as ``ip netns exec <ns> nft``; every socket is
made by a thread that moved into the namespace first, so nothing here touches the host's network.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger
from dnslib.server import DNSServer as LibServer

from tether.helper.root.dns.resolvers.base import DNS_BYPASS_MARK, ResolverError, ResolverSettings
from tether.helper.root.dns.resolvers.linux_nft import OWNED, TABLE, LinuxNftConfigurator
from tether.helper.root.dns.resolvers.nft_holder import open_lib_holder
from tether.helper.root.dns.rules import RulesConfig
from tether.helper.root.dns.server import DNSServer
from tether.helper.root.dns.upstream import UpstreamAddress

UPSTREAM_IP = "192.0.2.1"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _unavailable() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    return ""


pytestmark = pytest.mark.skipif(bool(_unavailable()), reason=_unavailable() or "available")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def dns_netns() -> Iterator[str]:
    name = f"tether-test-dns-{secrets.token_hex(4)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", f"{UPSTREAM_IP}/32", "dev", "lo")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(netns: str) -> None:
    """Move the calling thread (only) into netns, and prove it did."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)
    own = os.stat("/proc/thread-self/ns/net")
    target = os.stat(f"/run/netns/{netns}")
    assert (own.st_dev, own.st_ino) == (target.st_dev, target.st_ino), "setns did not take"


def in_netns(netns: str, fn: Callable[[], T], timeout: float = 30) -> T:
    """Run fn on a new thread inside netns; its sockets live there."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            _enter(netns)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "call in the namespace hung"
    if error:
        raise error[0]
    return result[0]


class NetnsLoop:
    """An asyncio loop on a thread that lives in netns (our DNS server runs here)."""

    def __init__(self, netns: str) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                _enter(netns)
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]

    def call(self, coro: object, timeout: float = 20) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class UpstreamZone(BaseResolver):
    """The original upstream: it knows www.example.com, and gives cluster names a tell-tale wrong answer."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        name = str(request.q.qname).lower()
        self.seen.append(name)
        reply = request.reply()
        if name == "www.example.com." and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("93.184.216.34"), ttl=300))
        elif name.startswith("web.default.") and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("203.0.113.99"), ttl=300))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def start_upstream(netns: str, host: str) -> tuple[UpstreamZone, list[LibServer]]:
    zone = UpstreamZone()

    def bind() -> list[LibServer]:
        quiet = DNSLogger(logf=lambda _msg: None)
        servers = [LibServer(zone, address=host, port=53, tcp=tcp, logger=quiet) for tcp in (False, True)]
        for server in servers:
            server.start_thread()
        return servers

    return zone, in_netns(netns, bind)


def stop_upstream(servers: list[LibServer]) -> None:
    for server in servers:
        server.stop()
        server.server.server_close()


async def cluster_lookup(name: str, qtype: int) -> tuple[int, list[RR]]:
    if name == "web.default.svc.cluster.local." and qtype == QTYPE.A:
        return RCODE.NOERROR, [RR(name, QTYPE.A, rdata=A("10.96.0.20"), ttl=30)]
    return RCODE.NXDOMAIN, []


RULES = RulesConfig(namespace="default", mapped_namespaces=frozenset({"default"}))


def query(netns: str, server: str, name: str, tcp: bool = False) -> DNSRecord:
    """A plain query from inside netns to server:53, as any program would send it."""
    question = DNSRecord.question(name, "A")

    def send() -> DNSRecord:
        return DNSRecord.parse(question.send(server, 53, tcp=tcp, timeout=3))

    reply = in_netns(netns, send)
    assert reply.header.id == question.header.id
    return reply


def answer(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def nft(netns: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args], input=stdin, capture_output=True, text=True, check=True
    )
    return done.stdout


def tables(netns: str) -> str:
    return nft(netns, "list", "tables")


def configurator(netns: str, resolv_conf: Path) -> LinuxNftConfigurator:
    return LinuxNftConfigurator(
        resolv_conf=resolv_conf, mark=DNS_BYPASS_MARK, nft=("ip", "netns", "exec", netns, "nft")
    )


@pytest.fixture
def stack(dns_netns, tmp_path):
    """Upstream on 192.0.2.1:53 and our server on 127.0.0.1, both inside netns."""
    netns = dns_netns
    zone, upstream_servers = start_upstream(netns, UPSTREAM_IP)
    loop = NetnsLoop(netns)
    server = DNSServer(cluster_lookup, RULES, UpstreamAddress(UPSTREAM_IP), mark=DNS_BYPASS_MARK)
    try:
        host, port = loop.call(server.listen("127.0.0.1", 0))
        resolv_conf = tmp_path / "resolv.conf"
        resolv_conf.write_text(f"# test resolv.conf\nnameserver {UPSTREAM_IP}\n")
        settings = ResolverSettings(server=host, port=port, tun_name="tether0")
        yield netns, zone, server, settings, resolv_conf
    finally:
        try:
            loop.call(server.close())
        finally:
            loop.stop()
            stop_upstream(upstream_servers)


def test_redirect_forward_revert(stack):
    netns, zone, server, settings, resolv_conf = stack
    linux = configurator(netns, resolv_conf)
    assert linux.upstream_nameservers()[0].compressed == UPSTREAM_IP
    assert linux.cleanup_stale() is False

    # before: the upstream answers directly, and gives the cluster name its own (wrong) answer
    assert answer(query(netns, UPSTREAM_IP, "web.default.")) == ["203.0.113.99"]
    assert server.counters.queries == 0

    linux.apply(settings)
    try:
        assert TABLE in tables(netns)
        # a plain query to the nameserver reaches our server; the cluster name is answered by the cluster
        seen_before = len(zone.seen)
        assert answer(query(netns, UPSTREAM_IP, "web.default.")) == ["10.96.0.20"]
        assert answer(query(netns, UPSTREAM_IP, "web.default.", tcp=True)) == ["10.96.0.20"]
        assert len(zone.seen) == seen_before  # the upstream never saw them
        # a non-cluster name: our server forwards it from a marked socket, which the rule lets through
        assert answer(query(netns, UPSTREAM_IP, "www.example.com.")) == ["93.184.216.34"]
        assert answer(query(netns, UPSTREAM_IP, "www.example.com.", tcp=True)) == ["93.184.216.34"]
        assert zone.seen[seen_before:] == ["www.example.com.", "www.example.com."]
        assert query(netns, UPSTREAM_IP, "missing.example.org.").header.rcode == RCODE.NXDOMAIN
        counters = server.counters
        assert counters.cluster == 2 and counters.upstream == 3 and counters.errors == 0
        # applying again replaces the table (one table, same rules)
        linux.apply(settings)
        assert tables(netns).count(TABLE) == 1
    finally:
        linux.revert()

    assert TABLE not in tables(netns)
    queries = server.counters.queries
    assert answer(query(netns, UPSTREAM_IP, "web.default.")) == ["203.0.113.99"]
    assert server.counters.queries == queries  # straight to the upstream again


def test_cleanup_stale_after_a_crash(stack):
    netns, _zone, _server, settings, resolv_conf = stack
    configurator(netns, resolv_conf).apply(settings)
    # the helper "crashed": a new process knows nothing but the marker on the table
    fresh = configurator(netns, resolv_conf)
    assert fresh.cleanup_stale() is True
    assert TABLE not in tables(netns)
    assert fresh.cleanup_stale() is False
    assert answer(query(netns, UPSTREAM_IP, "web.default.")) == ["203.0.113.99"]


def test_a_foreign_table_with_our_name_is_not_touched(stack):
    netns, _zone, _server, settings, resolv_conf = stack
    nft(netns, "-f", "-", stdin=f"table inet {TABLE} {{\n\tchain output {{\n\t}}\n}}\n")
    linux = configurator(netns, resolv_conf)
    assert linux.cleanup_stale() is False
    with pytest.raises(ResolverError, match="not ours"):
        linux.apply(settings)
    linux.revert()
    assert TABLE in tables(netns)


def test_loopback_nameserver_is_redirected_too(dns_netns, tmp_path):
    """A local resolver on 127.0.0.1:53 (dnsmasq-style) as the primary nameserver: DNAT in the output hook
    still sends the programs' queries to us, and our marked forwarding still reaches the local resolver."""
    netns = dns_netns
    zone, upstream_servers = start_upstream(netns, "127.0.0.1")
    loop = NetnsLoop(netns)
    server = DNSServer(cluster_lookup, RULES, UpstreamAddress("127.0.0.1"), mark=DNS_BYPASS_MARK)
    linux = None
    try:
        host, port = loop.call(server.listen("127.0.0.1", 0))
        resolv_conf = tmp_path / "resolv.conf"
        resolv_conf.write_text("nameserver 127.0.0.1\n")
        linux = configurator(netns, resolv_conf)
        linux.apply(ResolverSettings(server=host, port=port, tun_name="tether0"))
        assert answer(query(netns, "127.0.0.1", "web.default.")) == ["10.96.0.20"]
        assert answer(query(netns, "127.0.0.1", "www.example.com.")) == ["93.184.216.34"]
        assert zone.seen == ["www.example.com."]
        linux.revert()
        assert answer(query(netns, "127.0.0.1", "web.default.")) == ["203.0.113.99"]
    finally:
        if linux is not None:
            linux.revert()
        try:
            loop.call(server.close())
        finally:
            loop.stop()
            stop_upstream(upstream_servers)


def test_without_the_mark_forwarding_would_loop_and_is_caught(dns_netns, tmp_path):
    """The mark is what keeps our forwarding out of the redirect: an unmarked server's forwarded query
    comes back to itself; it recognises its own source, drops it, and answers SERVFAIL once."""
    netns = dns_netns
    _zone, upstream_servers = start_upstream(netns, UPSTREAM_IP)
    loop = NetnsLoop(netns)
    server = DNSServer(cluster_lookup, RULES, UpstreamAddress(UPSTREAM_IP), mark=None, upstream_timeout=1.0)
    linux = None
    try:
        host, port = loop.call(server.listen("127.0.0.1", 0))
        resolv_conf = tmp_path / "resolv.conf"
        resolv_conf.write_text(f"nameserver {UPSTREAM_IP}\n")
        linux = configurator(netns, resolv_conf)
        linux.apply(ResolverSettings(server=host, port=port, tun_name="tether0"))
        assert query(netns, UPSTREAM_IP, "www.example.com.").header.rcode == RCODE.SERVFAIL
        assert query(netns, UPSTREAM_IP, "www.example.com.", tcp=True).header.rcode == RCODE.SERVFAIL
        assert server.counters.loops >= 2
        assert server.counters.upstream == 2  # the looped copies were never forwarded again
    finally:
        if linux is not None:
            linux.revert()
        try:
            loop.call(server.close())
        finally:
            loop.stop()
            stop_upstream(upstream_servers)


def test_a_stale_conntrack_entry_does_not_send_our_marked_query_back_to_us(stack):
    """A program's query from port P was redirected to our server, and conntrack remembers that translation.
    Our forwarding socket then gets the same port P: the nat chain (and its mark rule) is consulted only for a
    connection's first packet, so without the notrack rule the remembered translation sends our own marked
    query back to our server instead of the upstream."""
    netns, zone, server, settings, resolv_conf = stack
    linux = configurator(netns, resolv_conf)
    linux.apply(settings)
    try:
        listing = nft(netns, "list", "table", "inet", TABLE)
        assert "type filter hook output priority raw" in listing or "priority -300" in listing
        assert f"meta mark {DNS_BYPASS_MARK:#010x} notrack" in listing

        def from_port(port: int, mark: int | None) -> tuple[int, bytes]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                if mark is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                sock.bind(("0.0.0.0", port))
                sock.settimeout(3)
                sock.sendto(DNSRecord.question("www.example.com.", "A").pack(), (UPSTREAM_IP, 53))
                return sock.getsockname()[1], sock.recv(4096)

        port, _ = in_netns(netns, lambda: from_port(0, None))  # a program's query: redirected, and tracked
        assert server.counters.queries == 1
        seen = len(zone.seen)
        _, reply = in_netns(netns, lambda: from_port(port, DNS_BYPASS_MARK))  # ours, from the same port
        assert answer(DNSRecord.parse(reply)) == ["93.184.216.34"]
        assert server.counters.queries == 1, "our own marked query came back to our server"
        assert zone.seen[seen:] == ["www.example.com."]
    finally:
        linux.revert()


def test_sockets_here_really_live_in_the_namespace(dns_netns):
    """Guard for the others: 192.0.2.1 exists inside the namespace only, so binding it proves where we are."""

    def bind() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((UPSTREAM_IP, 0))
            return sock.getsockname()[1]

    assert in_netns(dns_netns, bind) > 0


def test_an_owned_table_redirects_and_goes_with_its_socket(stack):
    """The helper's table (flags owner through its own libnftables socket): updates and revert go through that
    socket, no other may touch it, and closing the socket (what the helper's death does) removes it."""
    netns, _zone, server, settings, resolv_conf = stack
    holders = []

    def hold():
        holders.append(in_netns(netns, open_lib_holder))  # the socket is made in the namespace
        return holders[-1]

    prefix = ("ip", "netns", "exec", netns, "nft")
    linux = LinuxNftConfigurator(resolv_conf=resolv_conf, mark=DNS_BYPASS_MARK, nft=prefix, holder=hold)
    linux.apply(settings)
    assert linux.crash_safety == OWNED
    assert "flags owner" in nft(netns, "list", "table", "inet", TABLE)
    assert answer(query(netns, UPSTREAM_IP, "web.default.")) == ["10.96.0.20"]
    linux.apply(settings)  # an update through the same socket
    assert len(holders) == 1 and tables(netns).count(TABLE) == 1
    with pytest.raises(subprocess.CalledProcessError):  # another socket (the nft command) may not delete it
        nft(netns, "delete", "table", "inet", TABLE)
    linux.revert()
    assert TABLE not in tables(netns)

    # the crash: the socket closes without a revert
    crashed = LinuxNftConfigurator(resolv_conf=resolv_conf, mark=DNS_BYPASS_MARK, nft=prefix, holder=hold)
    crashed.apply(settings)
    assert TABLE in tables(netns)
    holders[-1].close()
    assert TABLE not in tables(netns)
    queries = server.counters.queries
    assert answer(query(netns, UPSTREAM_IP, "web.default.")) == ["203.0.113.99"]  # straight to the upstream
    assert server.counters.queries == queries
