"""The hooks: the DNS server's answer rewrite (on loopback), the tunnel opener's destination mapper under the
VIF engine (FakeTun), and TunnelOpen.via through the framing."""

import asyncio
import ipaddress
import socket

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from tests.doubles.fake_tun import FakeTun
from tether.helper.root.dns.rules import RulesConfig
from tether.helper.root.dns.server import DNSServer
from tether.helper.root.proxyvia import Rewriter, VipTable, WorkloadRef, destination_mapper, parse_proxy_vias, resolve
from tether.helper.root.tunnel.streams import TunnelOpener
from tether.helper.root.vif.engine import VifEngine
from tether.helper.root.vif.netstack import NetStack, NetStackConfig
from tether.helper.root.vif.netstack.packets import ACK, RST, SYN, build_tcp, build_udp, decode
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.framing import Protocol, TunnelError

ip = ipaddress.ip_address
RULES = RulesConfig(namespace="default", mapped_namespaces=frozenset({"default"}))
ECHO = WorkloadRef("default", "echo", "Deployment")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# --- the DNS server's rewrite hook -------------------------------------------------------------------------


class Cluster:
    def __init__(self):
        self.calls = []

    async def __call__(self, name, qtype):
        self.calls.append((name, qtype))
        if name == "web.default.svc.cluster.local." and qtype == QTYPE.A:
            return RCODE.NOERROR, [RR(name, QTYPE.A, rdata=A("10.96.1.10"), ttl=30)]
        if name == "outside.default.svc.cluster.local." and qtype == QTYPE.A:
            return RCODE.NOERROR, [RR(name, QTYPE.A, rdata=A("192.0.2.7"), ttl=30)]
        return RCODE.NXDOMAIN, []


async def ask(port, name, qtype="A"):
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, DNSRecord.question(name, qtype).pack())
        async with asyncio.timeout(5):
            return DNSRecord.parse(await loop.sock_recv(sock, 4096))


def addresses(reply):
    return [str(rr.rdata) for rr in reply.rr]


def rewriter_for(*values, table=None):
    rules = resolve(parse_proxy_vias(values), ["10.96.0.0/12"], ["10.244.0.0/16"], [], namespace="default")
    return Rewriter(table or VipTable("246.246.0.0/16"), rules)


def test_dns_answers_carry_vips_and_the_cache_keeps_them():
    async def scenario():
        cluster = Cluster()
        rewriter = rewriter_for("service=echo")
        server = DNSServer(cluster, RULES, None, rewrite=rewriter)
        _, port = await server.listen("127.0.0.1", 0)
        try:
            first = await ask(port, "web.default")
            assert first.header.rcode == RCODE.NOERROR
            assert addresses(first) == ["246.246.0.1"]
            assert first.rr[0].ttl == server.answer_ttl
            again = await ask(port, "web.default")
            assert addresses(again) == ["246.246.0.1"]
            assert len(cluster.calls) == 1 and server.counters.cache_hits == 1  # from the cache
            # outside every rule: unchanged
            assert addresses(await ask(port, "outside.default")) == ["192.0.2.7"]
            assert rewriter.table.lookup(ip("246.246.0.1")) == (ip("10.96.1.10"), WorkloadRef("default", "echo"))

            # a rules change / flush keeps the table: the same name gets the same VIP after a fresh lookup
            server.set_rules(RULES)
            rewriter.set_rules(rewriter_for("all=echo").rules)
            server.set_rewrite(rewriter)
            assert addresses(await ask(port, "web.default")) == ["246.246.0.1"]
            assert len(cluster.calls) == 3
            server.flush()
            assert addresses(await ask(port, "web.default")) == ["246.246.0.1"]
            assert len(rewriter.table) == 1

            # no hook: real addresses again
            server.set_rewrite(None)
            assert server.rewrite is None
            assert addresses(await ask(port, "web.default")) == ["10.96.1.10"]
        finally:
            await server.close()

    run(scenario())


def test_dns_without_hook_is_unchanged():
    async def scenario():
        server = DNSServer(Cluster(), RULES, None)
        _, port = await server.listen("127.0.0.1", 0)
        try:
            assert server.rewrite is None
            assert addresses(await ask(port, "web.default")) == ["10.96.1.10"]
        finally:
            await server.close()

    run(scenario())


# --- the VIF engine's destination mapper -------------------------------------------------------------------

APP = "169.254.116.1"


class FakeCall:
    """One Tunnel stream: records what the engine writes, answers the open with `dial`."""

    def __init__(self, dial):
        self.written = []
        self.replies = asyncio.Queue()
        self.replies.put_nowait(dial)
        self.cancelled = False

    async def write(self, message):
        self.written.append(message)

    async def read(self):
        return await self.replies.get()

    def cancel(self):
        self.cancelled = True

    def done(self):
        return self.cancelled


class FakeStub:
    def __init__(self, dial):
        self.dial = dial
        self.calls = []

    def Tunnel(self):  # the gRPC method name
        call = FakeCall(self.dial)
        self.calls.append(call)
        return call


async def packet_from(tun, predicate, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        while not tun.written.empty():
            packet = decode(tun.take_written())
            if predicate(packet):
                return packet
        await asyncio.sleep(0.01)
    raise AssertionError("no such packet from the engine")


def engine_for(table, dial):
    tun = FakeTun(mtu=1500)
    opener = TunnelOpener()
    opener.stub, opener.session_id = FakeStub(dial), "s1"
    opener.map_destination = destination_mapper(table)
    engine = VifEngine(tun, NetStack(NetStackConfig(mtu=1500)), opener.open, opener)
    return tun, opener.stub, engine


def test_engine_opens_the_tunnel_to_the_real_address_via_the_workload():
    async def scenario():
        table = VipTable("246.246.0.0/16")
        vip = table.assign(ip("10.96.1.10"), ECHO)
        tun, stub, engine = engine_for(table, framing.dial_ok())
        engine.start()
        try:
            tun.inject(build_tcp(APP, str(vip), 40000, 80, seq=1000, flags=SYN))
            synack = await packet_from(tun, lambda p: p.flags & SYN)
            # the app keeps talking to the VIP
            assert (synack.src, synack.sport, synack.dst, synack.dport) == (vip, 80, ip(APP), 40000)
            assert synack.flags & ACK
            spec = framing.parse_open(stub.calls[0].written[0])
            assert spec.destination == (ip("10.96.1.10"), 80)
            assert spec.source == (ip(APP), 40000)
            assert spec.via == ("default", "echo", "Deployment")
            assert spec.protocol is Protocol.TCP
        finally:
            await engine.stop()
            tun.close()

    run(scenario())


def test_engine_leaves_other_destinations_and_auto_vips_without_via():
    async def scenario():
        table = VipTable("246.246.0.0/16")
        auto_vip = table.assign(ip("10.96.1.11"), None)
        tun, stub, engine = engine_for(table, framing.dial_failed(pb.DialResult.REFUSED, "refused"))
        engine.start()
        try:
            tun.inject(build_tcp(APP, "10.96.0.7", 40001, 7, seq=1, flags=SYN))
            await packet_from(tun, lambda p: p.flags & RST and p.sport == 7)
            tun.inject(build_udp(APP, str(auto_vip), 40002, 53, b"query"))
            for _ in range(200):
                if len(stub.calls) == 2 and stub.calls[1].written:
                    break
                await asyncio.sleep(0.01)
            plain = framing.parse_open(stub.calls[0].written[0])
            assert plain.destination == (ip("10.96.0.7"), 7) and plain.via is None
            auto = framing.parse_open(stub.calls[1].written[0])
            assert auto.destination == (ip("10.96.1.11"), 53) and auto.via is None
            assert auto.protocol is Protocol.UDP
        finally:
            await engine.stop()
            tun.close()

    run(scenario())


def test_engine_refuses_an_unknown_vip_without_a_tunnel():
    async def scenario():
        table = VipTable("246.246.0.0/16")
        tun, stub, engine = engine_for(table, framing.dial_ok())
        engine.start()
        try:
            tun.inject(build_tcp(APP, "246.246.3.3", 40003, 80, seq=1, flags=SYN))
            reply = await packet_from(tun, lambda p: p.icmp_type == 3)  # destination unreachable
            assert reply.dst == ip(APP)
            assert stub.calls == []
        finally:
            await engine.stop()
            tun.close()

    run(scenario())


# --- TunnelOpen.via ------------------------------------------------------------------------------------------


DST = (ip("10.96.0.7"), 7)


def test_via_round_trip():
    message = framing.open_message("s", Protocol.TCP, DST, via=("payments", "gateway", "StatefulSet"))
    wire = pb.TunnelMessage.FromString(message.SerializeToString())
    assert wire.open.via == pb.WorkloadRef(namespace="payments", name="gateway", kind="StatefulSet")
    assert framing.parse_open(wire).via == ("payments", "gateway", "StatefulSet")
    assert framing.parse_open(framing.open_message("s", Protocol.TCP, DST, via=ECHO)).via == tuple(ECHO)
    assert framing.parse_open(framing.open_message("s", Protocol.TCP, DST, via=("ns", "w", ""))).via == ("ns", "w", "")
    plain = framing.open_message("s", Protocol.TCP, DST)
    assert not plain.open.HasField("via")
    assert framing.parse_open(plain).via is None


@pytest.mark.parametrize(
    ("via", "complaint"),
    [
        (pb.WorkloadRef(namespace="", name="echo"), 'tunnel via workload namespace "" is not a valid DNS-1123 label'),
        (pb.WorkloadRef(namespace="default", name="Echo"), 'tunnel via workload name "Echo" is not a valid'),
        (pb.WorkloadRef(namespace="default", name="a/b"), 'name "a/b" is not a valid'),
        (pb.WorkloadRef(namespace="x" * 64, name="echo"), "is not a valid DNS-1123 label"),
        (
            pb.WorkloadRef(namespace="default", name="echo", kind="Pod"),
            'tunnel via workload kind "Pod" is not one of Deployment, ReplicaSet, StatefulSet',
        ),
    ],
)
def test_via_validation(via, complaint):
    message = pb.TunnelMessage(
        open=pb.TunnelOpen(protocol=pb.TCP, destination=pb.Endpoint(ip=bytes([10, 96, 0, 7]), port=7), via=via)
    )
    with pytest.raises(TunnelError) as caught:
        framing.parse_open(message)
    assert complaint in str(caught.value)
