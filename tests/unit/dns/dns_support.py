"""Shared pieces for the DNS tests: a fake cluster zone, a real dnslib upstream on loopback, clients.

A plain module (not conftest.py) so the tests can import its helpers by a name no other folder uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import AsyncIterator

from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, SRV, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger
from dnslib.server import DNSServer as LibServer

from tether.helper.root.dns.rules import RulesConfig
from tether.helper.root.dns.server import DNSServer
from tether.helper.root.dns.upstream import UpstreamAddress

CLUSTER = "default.svc.cluster.local."
BIG_TXT = [("x" * 200).encode()] * 5  # about 1 KB: more than a classic UDP reply holds

RULES = RulesConfig(
    namespace="default",
    mapped_namespaces=frozenset({"default"}),
    routed_subnets=(ipaddress.ip_network("10.96.0.0/12"),),
)


def _zone(name: str, qtype: int) -> tuple[int, list[RR]]:
    """The cluster's records for `name` (the name the server asked), owned by that name."""
    short = name.removesuffix(CLUSTER)
    records = {
        ("web.", QTYPE.A): [RR(name, QTYPE.A, rdata=A("10.96.0.20"), ttl=30)],
        ("web.", QTYPE.AAAA): [RR(name, QTYPE.AAAA, rdata=AAAA("fd00:10::20"), ttl=30)],
        ("v6only.", QTYPE.AAAA): [RR(name, QTYPE.AAAA, rdata=AAAA("fd00:10::66"), ttl=30)],
        ("v4only.", QTYPE.A): [RR(name, QTYPE.A, rdata=A("10.96.0.44"), ttl=30)],
        ("_http._tcp.web.", QTYPE.SRV): [RR(name, QTYPE.SRV, rdata=SRV(0, 100, 80, "web." + CLUSTER), ttl=30)],
        ("info.", QTYPE.TXT): [RR(name, QTYPE.TXT, rdata=TXT("hello from the cluster"), ttl=30)],
        ("big.", QTYPE.TXT): [RR(name, QTYPE.TXT, rdata=TXT(BIG_TXT), ttl=30)],
        ("mail.", QTYPE.MX): [RR(name, QTYPE.MX, rdata=MX("web." + CLUSTER, 10), ttl=30)],
        ("alias.", QTYPE.CNAME): [RR(name, QTYPE.CNAME, rdata=CNAME("web." + CLUSTER), ttl=30)],
        ("alias.", QTYPE.A): [
            RR(name, QTYPE.CNAME, rdata=CNAME("web." + CLUSTER), ttl=30),
            RR("web." + CLUSTER, QTYPE.A, rdata=A("10.96.0.20"), ttl=30),
        ],
    }
    if name == "cluster.local." and qtype == QTYPE.NS:
        return RCODE.NOERROR, [RR(name, QTYPE.NS, rdata=NS("ns.cluster.local."), ttl=30)]
    if name == "20.0.96.10.in-addr.arpa." and qtype == QTYPE.PTR:
        return RCODE.NOERROR, [RR(name, QTYPE.PTR, rdata=PTR("web." + CLUSTER), ttl=30)]
    if (short, qtype) in records:
        return RCODE.NOERROR, records[(short, qtype)]
    if short in ("v6only.", "v4only."):
        return RCODE.NXDOMAIN, []  # one family only, and the other looks nonexistent: the A/AAAA rule's case
    if any(known == short for known, _ in records):
        return RCODE.NOERROR, []  # the name exists without this type
    return RCODE.NXDOMAIN, []


class FakeCluster:
    """The injected lookup: the zone above, with hooks for slow and failing names; records every call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.delay = delay

    async def __call__(self, name: str, qtype: int) -> tuple[int, list[RR]]:
        self.calls.append((name, qtype))
        if name.startswith("slow."):
            await asyncio.sleep(3600)
        if name.startswith("boom."):
            raise RuntimeError("the manager went away")
        if self.delay:
            await asyncio.sleep(self.delay)
        return _zone(name, qtype)


class UpstreamZone(BaseResolver):
    """The "real" upstream: one A record, a big TXT that does not fit UDP, NXDOMAIN for the rest."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []  # (protocol, name, id)

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        protocol = getattr(handler, "protocol", "udp")
        name = str(request.q.qname).lower()
        self.seen.append((protocol, name, request.header.id))
        reply = request.reply()
        if name == "www.example.com." and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("93.184.216.34"), ttl=300))
        elif name == "big.example.com." and request.q.qtype == QTYPE.TXT:
            if protocol == "udp":
                reply.header.tc = 1
            else:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(BIG_TXT), ttl=300))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class Upstream:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.zone = UpstreamZone()
        quiet = DNSLogger(logf=lambda _msg: None)
        self.udp = LibServer(self.zone, address=host, port=0, logger=quiet)
        self.port = self.udp.server.server_address[1]
        self.tcp = LibServer(self.zone, address=host, port=self.port, tcp=True, logger=quiet)
        self.address = UpstreamAddress(host, self.port)

    def start(self) -> None:
        self.udp.start_thread()
        self.tcp.start_thread()

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.stop()
            server.server.server_close()


@contextlib.asynccontextmanager
async def serving(lookup: FakeCluster, upstream: Upstream | None, **options: object) -> AsyncIterator[DNSServer]:
    server = DNSServer(lookup, options.pop("rules", RULES), upstream.address if upstream else None, **options)
    await server.listen("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()


async def udp_exchange(port: int, payload: bytes, timeout: float = 3.0) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, payload)
        async with asyncio.timeout(timeout):
            return await loop.sock_recv(sock, 65535)


async def tcp_exchange(port: int, payload: bytes, timeout: float = 3.0) -> bytes:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(struct.pack("!H", len(payload)) + payload)
            length = struct.unpack("!H", await reader.readexactly(2))[0]
            return await reader.readexactly(length)
        finally:
            writer.close()


async def ask(port: int, name: str, qtype: str = "A", tcp: bool = False, **kw: object) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    for key, value in kw.items():
        setattr(query.header, key, value)
    exchange = tcp_exchange if tcp else udp_exchange
    reply = DNSRecord.parse(await exchange(port, query.pack()))
    assert reply.header.id == query.header.id
    return reply


class LoopThread:
    """An event loop on a thread of its own, for measuring with a blocking client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: object, timeout: float = 10.0) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
