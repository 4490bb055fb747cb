"""The manager's gRPC service in-process on loopback, against real local servers."""

import asyncio
import hashlib
import ipaddress
import os
import socket
import time

import grpc
import pytest
from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer
from echo_servers import LOOPBACK_ALLOWED, UdpEcho, echo_handler

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.framing import Protocol
from tether.manager.api.grpcopts import grpc_options
from tether.manager.api.skew import Side
from tether.manager.clusterinfo import ClusterInfoHub
from tether.manager.destinations import DestinationPolicy
from tether.manager.dns import ClusterResolver, unpack_record
from tether.manager.resolvconf import ResolverConfig
from tether.manager.server import ManagerService
from tether.manager.sessions import SessionTable

LOOPBACK = ipaddress.ip_address("127.0.0.1")


class ClusterZone(BaseResolver):
    """A tiny cluster DNS: one service, one TXT record, NXDOMAIN for the rest."""

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname)
        if name == "web.default.svc.cluster.local." and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(name, QTYPE.A, rdata=A("10.96.0.20"), ttl=30))
        elif name == "web.default.svc.cluster.local.":
            pass  # the name exists, with no record of this type
        elif name == "info.default.svc.cluster.local." and request.q.qtype == QTYPE.TXT:
            reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT("lab"), ttl=30))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def dns_port():
    server = DNSServer(ClusterZone(), address="127.0.0.1", port=0)
    server.start_thread()
    yield server.server.server_address[1]
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Harness:
    def __init__(self, dns_port: int, destinations: DestinationPolicy = LOOPBACK_ALLOWED) -> None:
        self.dns_port = dns_port
        self.destinations = destinations

    async def __aenter__(self) -> "Harness":
        self.hub = ClusterInfoHub()
        self.sessions = SessionTable(idle_timeout=30)
        resolver = ClusterResolver(
            ResolverConfig(nameservers=(LOOPBACK,), search=("svc.cluster.local.",), ndots=5),
            "cluster.local",
            port=self.dns_port,
        )
        self.server = grpc.aio.server(options=grpc_options())
        service = ManagerService(self.sessions, self.hub, resolver, destinations=self.destinations)
        pb_grpc.add_ManagerServicer_to_server(service, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=grpc_options())
        self.stub = pb_grpc.ManagerStub(self.channel)
        self.echo = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        self.echo_port = self.echo.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
        self.udp_port = self.udp.get_extra_info("sockname")[1]
        self.session = (await self.stub.ArriveAsClient(pb.ClientInfo(name="t", namespace="default"))).session_id
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.udp.close()
        self.echo.close()
        await self.channel.close()
        await self.server.stop(0)


def run(coro_fn, dns_port, destinations: DestinationPolicy = LOOPBACK_ALLOWED):
    async def main():
        async with Harness(dns_port, destinations) as h:
            await asyncio.wait_for(coro_fn(h), 60)

    asyncio.run(main())


def test_version_and_sessions(dns_port):
    async def scenario(h: Harness) -> None:
        version = await h.stub.Version(pb.Empty())
        assert version.name == "tether-manager" and version.api_level >= 1
        await h.stub.Remain(pb.RemainRequest(session=pb.SessionInfo(session_id=h.session)))
        await h.stub.Depart(pb.SessionInfo(session_id=h.session))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await h.stub.Remain(pb.RemainRequest(session=pb.SessionInfo(session_id=h.session)))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert h.session in raised.value.details()

    run(scenario, dns_port)


def test_watch_cluster_info_sends_snapshot_then_changes(dns_port):
    async def scenario(h: Harness) -> None:
        h.hub.publish(pb.ClusterInfo(manager_port=1))
        call = h.stub.WatchClusterInfo(pb.SessionInfo(session_id=h.session))
        assert (await call.read()).manager_port == 1
        h.hub.publish(pb.ClusterInfo(manager_port=2))
        assert (await call.read()).manager_port == 2
        call.cancel()

    run(scenario, dns_port)


async def open_flow(h: Harness, protocol: Protocol, port: int, **kw: float) -> grpc.aio.StreamStreamCall:
    call = h.stub.Tunnel()
    await call.write(framing.open_message(h.session, protocol, (LOOPBACK, port), **kw))
    return call


def test_tcp_tunnel_echoes_10mb_byte_exact_with_half_close(dns_port):
    payload = os.urandom(10 * 1024 * 1024)

    async def scenario(h: Harness) -> None:
        call = await open_flow(h, Protocol.TCP, h.echo_port)
        assert (await call.read()).dial.ok

        async def send() -> None:
            for piece in framing.chunks(payload):
                await call.write(framing.data_message(piece))
            await call.write(framing.eof_message())

        sender = asyncio.ensure_future(send())
        received = bytearray()
        frames = 0
        while True:
            message = await call.read()
            kind = message.WhichOneof("kind")
            if kind == "eof":
                break
            assert kind == "data"
            received += message.data
            frames += 1
        await sender
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert frames < len(payload) // 16384, "bulk data must travel in large frames"
        await call.done_writing()

    run(scenario, dns_port)


def test_closed_port_is_refused_promptly(dns_port):
    async def scenario(h: Harness) -> None:
        started = time.monotonic()
        call = await open_flow(h, Protocol.TCP, free_port())
        result = (await call.read()).dial
        assert not result.ok
        assert result.reason == pb.DialResult.REFUSED
        assert "tcp://127.0.0.1:" in result.error
        assert time.monotonic() - started < 2

    run(scenario, dns_port)


def test_unknown_session_and_bad_open_are_rejected(dns_port):
    async def scenario(h: Harness) -> None:
        call = h.stub.Tunnel()
        await call.write(framing.open_message("nope", Protocol.TCP, (LOOPBACK, h.echo_port)))
        result = (await call.read()).dial
        assert not result.ok and result.reason == pb.DialResult.INVALID and "'nope'" in result.error
        call = h.stub.Tunnel()
        await call.write(framing.data_message(b"hello"))
        result = (await call.read()).dial
        assert not result.ok and "must be open" in result.error

    run(scenario, dns_port)


def test_udp_tunnel_keeps_datagram_boundaries_and_expires_when_idle(dns_port):
    async def scenario(h: Harness) -> None:
        call = await open_flow(h, Protocol.UDP, h.udp_port, idle_timeout=0.5)
        assert (await call.read()).dial.ok
        datagrams = [b"a", b"bb" * 100, os.urandom(60000)]
        for datagram in datagrams:
            await call.write(framing.data_message(datagram))
        replies = [(await call.read()).data for _ in datagrams]
        assert sorted(replies, key=len) == [b"echo:" + d for d in datagrams]
        ending = await asyncio.wait_for(call.read(), 5)
        assert ending.WhichOneof("kind") == "abort" and "idle" in ending.abort

    run(scenario, dns_port)


def test_lookup_dns(dns_port):
    async def scenario(h: Harness) -> None:
        async def lookup(name: str, qtype: int) -> pb.DNSResponse:
            return await h.stub.LookupDNS(pb.DNSRequest(session_id=h.session, name=name, qtype=qtype))

        fqdn = await lookup("web.default.svc.cluster.local.", QTYPE.A)
        assert fqdn.rcode == RCODE.NOERROR
        [record] = [unpack_record(raw) for raw in fqdn.answers]
        assert str(record.rname) == "web.default.svc.cluster.local." and str(record.rdata) == "10.96.0.20"

        short = await lookup("web", QTYPE.A)
        [record] = [unpack_record(raw) for raw in short.answers]
        assert str(record.rname) == "web." and str(record.rdata) == "10.96.0.20"

        dotted = await lookup("web.default", QTYPE.A)
        assert str(unpack_record(dotted.answers[0]).rdata) == "10.96.0.20"

        txt = await lookup("info", QTYPE.TXT)
        assert str(unpack_record(txt.answers[0]).rdata) == '"lab"'

        no_data = await lookup("web", QTYPE.AAAA)
        assert no_data.rcode == RCODE.NOERROR and not no_data.answers

        missing = await lookup("nothere", QTYPE.A)
        assert missing.rcode == RCODE.NXDOMAIN and not missing.answers

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await lookup("bad..name", QTYPE.A)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bad..name" in raised.value.details()

    run(scenario, dns_port)


POD_IP = ipaddress.ip_address("192.0.2.10")


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1", str(POD_IP)],
)
def test_the_manager_refuses_to_dial_its_own_pod_and_link_local_addresses(dns_port, address):
    """The attack: any client dials the manager pod's own loopback (here: a live echo server), its pod IP, or
    the cloud metadata address. Refused before any dial, naming the address and the setting."""
    destination = ipaddress.ip_address(address)

    async def scenario(h: Harness) -> None:
        accepted = []
        h.echo.close()
        h.echo = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", h.echo_port)
        for protocol in (Protocol.TCP, Protocol.UDP):
            call = h.stub.Tunnel()
            port = h.echo_port if protocol is Protocol.TCP else h.udp_port
            await call.write(framing.open_message(h.session, protocol, (destination, port), dial_timeout=2))
            result = (await call.read()).dial
            assert not result.ok and result.reason == pb.DialResult.REFUSED, result
            shown = getattr(destination, "ipv4_mapped", None) or destination
            assert f"does not dial {shown}" in result.error and "tunnel.allowDestinations" in result.error
        assert accepted == []

    run(scenario, dns_port, DestinationPolicy(pod_ip=POD_IP))


def test_an_allowed_destination_is_dialed(dns_port):
    async def scenario(h: Harness) -> None:
        call = await open_flow(h, Protocol.TCP, h.echo_port)
        assert (await call.read()).dial.ok
        call.cancel()

    allowed = DestinationPolicy(pod_ip=POD_IP, allowed=(ipaddress.ip_network("127.0.0.1/32"),))
    run(scenario, dns_port, allowed)


def test_a_too_old_client_is_refused_naming_both_versions(dns_port):
    """A manager that serves clients from API level 2 refuses a level-1 client (and one that states no level,
    which spoke level 1) with FAILED_PRECONDITION, and opens no session for it."""

    async def main() -> None:
        sessions = SessionTable(idle_timeout=30)
        resolver = ClusterResolver(ResolverConfig(nameservers=(LOOPBACK,)), "cluster.local", port=dns_port)
        service = ManagerService(
            sessions, ClusterInfoHub(), resolver, identity=Side("2.0.0", 3), min_client_api_level=2
        )
        server = grpc.aio.server(options=grpc_options())
        pb_grpc.add_ManagerServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=grpc_options()) as channel:
                stub = pb_grpc.ManagerStub(channel)
                version = await stub.Version(pb.Empty())
                assert (version.version, version.api_level, version.min_client_api_level) == ("2.0.0", 3, 2)
                for level in (1, 0):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await stub.ArriveAsClient(pb.ClientInfo(name="old", version="1.0.0", api_level=level))
                    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                    details = refused.value.details()
                    assert "tether 1.0.0 (API level 1)" in details and "manager 2.0.0 (API level 3)" in details
                    assert "serves clients of API level 2 or later" in details
                assert len(sessions) == 0
                arrived = await stub.ArriveAsClient(pb.ClientInfo(name="new", version="1.9.0", api_level=2))
                assert arrived.session_id and len(sessions) == 1
        finally:
            await server.stop(0)

    asyncio.run(asyncio.wait_for(main(), 60))
