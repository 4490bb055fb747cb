"""The manager's per-caller caps over its real gRPC service on loopback: sessions per client address, cluster-info
watches and flows per session, the UDP idle timeout a client may ask for, and the size of what a call may send."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import grpc
import pytest
from echo_servers import LOOPBACK_ALLOWED

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.framing import MAX_MESSAGE_BYTES, Protocol
from tether.manager.api.grpcopts import grpc_options, server_options
from tether.manager.clusterinfo import ClusterInfoHub
from tether.manager.dns import ClusterResolver
from tether.manager.limits import KeyedLimit, LimitReachedError, ManagerLimits
from tether.manager.resolvconf import ResolverConfig
from tether.manager.server import ManagerService
from tether.manager.sessions import SessionTable

LOOPBACK = ipaddress.ip_address("127.0.0.1")
LIMITS = ManagerLimits(flows_per_session=2, sessions_per_address=2, watches_per_session=2)


class Manager:
    def __init__(self, limits: ManagerLimits = LIMITS) -> None:
        self.limits = limits

    async def __aenter__(self) -> Manager:
        self.hub = ClusterInfoHub()
        self.hub.publish(pb.ClusterInfo(manager_port=1))
        self.sessions = SessionTable(idle_timeout=30, per_address=self.limits.sessions_per_address)
        resolver = ClusterResolver(ResolverConfig(nameservers=(LOOPBACK,), search=(), ndots=1), "cluster.local")
        self.server = grpc.aio.server(options=server_options(self.limits.flows_per_session))
        service = ManagerService(self.sessions, self.hub, resolver, limits=self.limits, destinations=LOOPBACK_ALLOWED)
        pb_grpc.add_ManagerServicer_to_server(service, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        # The client may send more than the manager takes: the manager's own limit must refuse it.
        options = [*grpc_options(), ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES)]
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        self.stub = pb_grpc.ManagerStub(self.channel)
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        self.udp_port = self.udp.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.udp.close()
        await self.channel.close()
        await self.server.stop(0)

    async def arrive(self) -> str:
        return (await self.stub.ArriveAsClient(pb.ClientInfo(name="t", namespace="default"))).session_id

    async def udp_flow(self, session: str) -> tuple[grpc.aio.StreamStreamCall, pb.TunnelMessage]:
        """A UDP flow to a bound socket that never answers, and the manager's dial answer."""
        call = self.stub.Tunnel()
        await call.write(framing.open_message(session, Protocol.UDP, (LOOPBACK, self.udp_port)))
        return call, await call.read()


def run(scenario, limits: ManagerLimits = LIMITS) -> None:
    async def main() -> None:
        async with Manager(limits) as manager:
            await asyncio.wait_for(scenario(manager), 30)

    asyncio.run(main())


def test_a_client_address_holds_a_capped_number_of_sessions(caplog):
    async def scenario(m: Manager) -> None:
        first, _second = await m.arrive(), await m.arrive()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await m.arrive()
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "client address 127.0.0.1 has 2 sessions, at most 2" in raised.value.details()
        await m.stub.Depart(pb.SessionInfo(session_id=first))
        await m.arrive()  # room again

    with caplog.at_level(logging.WARNING):
        run(scenario)
    assert "refusing a session" in caplog.text


def test_a_session_holds_a_capped_number_of_cluster_info_watches():
    async def scenario(m: Manager) -> None:
        session = await m.arrive()
        watches = [m.stub.WatchClusterInfo(pb.SessionInfo(session_id=session)) for _ in range(2)]
        for watch in watches:
            assert (await watch.read()).manager_port == 1
        third = m.stub.WatchClusterInfo(pb.SessionInfo(session_id=session))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await third.read()
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 cluster-info watches open, at most 2" in raised.value.details()
        watches[0].cancel()
        for _ in range(50):  # the cancelled watch's handler ends a little later
            again = m.stub.WatchClusterInfo(pb.SessionInfo(session_id=session))
            try:
                assert (await again.read()).manager_port == 1
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("a cancelled watch never gave its place back")
        # Another session has places of its own.
        other = await m.arrive()
        assert (await m.stub.WatchClusterInfo(pb.SessionInfo(session_id=other)).read()).manager_port == 1

    run(scenario)


def test_a_session_holds_a_capped_number_of_flows_and_gets_them_back(caplog):
    async def scenario(m: Manager) -> None:
        session = await m.arrive()
        open_flows = [await m.udp_flow(session) for _ in range(2)]
        assert all(answer.dial.ok for _, answer in open_flows)
        _, refused = await m.udp_flow(session)
        assert not refused.dial.ok and "has 2 flows open, at most 2" in refused.dial.error
        await open_flows[0][0].done_writing()  # the client ends one flow
        for _ in range(50):
            _, answer = await m.udp_flow(session)
            if answer.dial.ok:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("an ended flow never gave its place back")

    with caplog.at_level(logging.WARNING):
        run(scenario)
    assert caplog.text.count("refusing flows") == 1  # once per session, not per refused flow


def test_a_udp_flows_idle_timeout_is_the_managers_maximum_whatever_the_client_asks():
    async def scenario(m: Manager) -> None:
        session = await m.arrive()
        call = m.stub.Tunnel()
        day = 86_400.0
        await call.write(framing.open_message(session, Protocol.UDP, (LOOPBACK, m.udp_port), idle_timeout=day))
        assert (await call.read()).dial.ok
        ended = await call.read()  # without the cap the flow would stay a day; the test's timeout is 30 s
        assert ended.WhichOneof("kind") == "abort" and ended.abort == "idle for 0.2s"

    run(scenario, ManagerLimits(max_udp_idle_timeout=0.2))


def test_a_message_above_the_managers_receive_limit_is_refused():
    async def scenario(m: Manager) -> None:
        session = await m.arrive()
        call = m.stub.Tunnel()
        await call.write(framing.open_message(session, Protocol.TCP, (LOOPBACK, 9)))
        with pytest.raises(grpc.aio.AioRpcError):  # the write itself, or the read after it, fails
            await call.write(framing.data_message(b"x" * (MAX_MESSAGE_BYTES + 1)))
            await call.read()
            await call.read()
        assert await call.code() != grpc.StatusCode.OK  # the manager ended it (the client sees its write fail)
        unary = pb.DNSRequest(session_id=session, name="x" * (MAX_MESSAGE_BYTES + 1), qtype=1)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await m.stub.LookupDNS(unary)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    run(scenario)


def test_the_managers_server_caps_calls_per_connection():
    assert ("grpc.max_concurrent_streams", 2 + 64) in server_options(2)
    assert ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES) in server_options(2)


def test_keyed_limit_counts_per_key():
    limit = KeyedLimit(1, "things")
    limit.acquire("a")
    limit.acquire("b")
    with pytest.raises(LimitReachedError, match="a has 1 things open, at most 1"):
        limit.acquire("a")
    limit.release("a")
    limit.acquire("a")
    assert limit.total() == 2
    with pytest.raises(ValueError, match="at least 1"):
        ManagerLimits(flows_per_session=0)


def test_the_limits_are_settings_and_a_bad_one_is_named():
    from tether.manager.config import ConfigError, load_config

    env = {"LIMITS_FLOWS_PER_SESSION": "20000", "LIMITS_UDP_IDLE_TIMEOUT_MAX": "90"}
    limits = load_config(env, {"values.yaml": "limits:\n  sessionsPerAddress: 8\n"}).limits()
    assert (limits.flows_per_session, limits.sessions_per_address, limits.max_udp_idle_timeout) == (20000, 8, 90.0)
    assert load_config({}, None).limits() == ManagerLimits()
    with pytest.raises(ConfigError, match=r'limits\.flowsPerSession \(from env LIMITS_FLOWS_PER_SESSION\).*"0"'):
        load_config({"LIMITS_FLOWS_PER_SESSION": "0"}, None)
    with pytest.raises(ConfigError, match=r'limits\.udpIdleTimeoutMax.*"inf"'):
        load_config({"LIMITS_UDP_IDLE_TIMEOUT_MAX": "inf"}, None)
