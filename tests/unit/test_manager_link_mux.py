"""The helper's manager link and the tunnel mux, against an in-process manager on loopback (manager_address):
the mux is opened when advertised, flows fall back to gRPC streams when it is not or cannot be had, and losing
it is losing the manager (the link reconnects, with a new mux)."""

import asyncio
import ipaddress
import logging
import socket

import grpc
import kubernetes
import pytest
from echo_servers import LOOPBACK_ALLOWED

from tether.helper.root.tunnel import manager_link
from tether.helper.root.tunnel.manager_link import ManagerLink, VersionSkewError, client_info
from tether.helper.root.tunnel.streams import GrpcTunnelStream, MuxTunnelStream, TunnelOpener
from tether.helper.root.vif.flowstream import OPENED, FlowProtocol
from tether.manager.agents import AgentRegistry
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.grpcopts import grpc_options
from tether.manager.api.skew import COMPATIBILITY_WINDOW, Side, Skew, Verdict
from tether.manager.api.version import API_LEVEL, __version__
from tether.manager.clusterinfo import ClusterInfoHub
from tether.manager.config import DEFAULT_TUNNEL_MUX_PORT
from tether.manager.dns import ClusterResolver
from tether.manager.resolvconf import ResolverConfig
from tether.manager.server import ManagerService
from tether.manager.sessions import SessionTable
from tether.manager.tunnel.mux_server import MuxListener
from tether.runtime import eventloop

pytestmark = pytest.mark.usefixtures("each_event_loop")

LOOPBACK = ipaddress.ip_address("127.0.0.1")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Manager:
    """A manager on loopback: gRPC, and a tunnel mux unless ``mux`` is "none" or "advertised-only"."""

    def __init__(self, mux: str = "serve") -> None:
        self.mux = mux

    async def __aenter__(self) -> "Manager":
        self.sessions = SessionTable(idle_timeout=30)
        resolver = ClusterResolver(ResolverConfig(nameservers=(LOOPBACK,), search=(), ndots=1), "cluster.local")
        hub = ClusterInfoHub()
        hub.publish(pb.ClusterInfo(manager_port=1))
        self.service = ManagerService(
            self.sessions, hub, resolver, AgentRegistry(idle_timeout=30), destinations=LOOPBACK_ALLOWED
        )
        self.server = grpc.aio.server(options=grpc_options())
        pb_grpc.add_ManagerServicer_to_server(self.service, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.listener = MuxListener(self.service.flows.check_session, self.service.flows.serve_stream)
        if self.mux == "serve":
            self.service.tunnel_mux_port = await self.listener.start("127.0.0.1", 0)
        elif self.mux == "advertised-only":
            self.service.tunnel_mux_port = _closed_port()
        self.echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        self.echo_port = self.echo.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.listener.close()
        self.echo.close()
        await self.server.stop(0)

    def link(self) -> ManagerLink:
        return ManagerLink(
            kubernetes.client.Configuration(), "tether", client_info("t@test", "default"), f"127.0.0.1:{self.port}"
        )


def _open(opener: TunnelOpener, port: int) -> MuxTunnelStream | GrpcTunnelStream:
    return opener.open(FlowProtocol.TCP, (LOOPBACK, 40000), (LOOPBACK, port))


async def _echo_flow(opener: TunnelOpener, port: int, payload: bytes) -> bytes:
    stream = _open(opener, port)
    first = await stream.opened()
    assert first is OPENED, first
    await stream.write(payload)
    await stream.write_eof()
    received = bytearray()
    while isinstance(item := await stream.read(), bytes):
        received += item
    stream.close()
    return bytes(received)


def _opener(link: ManagerLink) -> TunnelOpener:
    opener = TunnelOpener()
    opener.stub, opener.session_id, opener.mux = link.stub, link.session_id, link.mux
    return opener


def run(coro):
    eventloop.run(asyncio.wait_for(coro, 30))


def test_the_link_opens_the_advertised_mux_and_flows_take_it():
    async def main():
        async with Manager() as manager:
            link = manager.link()
            await link.open()
            try:
                assert link.mux is not None and link.mux.usable
                opener = _opener(link)
                probe = _open(opener, manager.echo_port)
                assert isinstance(probe, MuxTunnelStream)
                probe.close()
                assert await _echo_flow(opener, manager.echo_port, b"over the mux") == b"over the mux"
                assert opener.opened == {"mux": 2}
            finally:
                await link.close()
            assert link.mux is None
            for _ in range(100):  # the manager hears the goodbye a moment later
                if not manager.listener.connections:
                    break
                await asyncio.sleep(0.01)
            assert not manager.listener.connections

    run(main())


@pytest.mark.parametrize("mux", ["none", "advertised-only"])
def test_without_a_usable_mux_flows_use_grpc_streams(mux, caplog):
    async def main():
        async with Manager(mux) as manager:
            link = manager.link()
            await link.open()
            try:
                assert link.mux is None
                opener = _opener(link)
                probe = _open(opener, manager.echo_port)
                assert isinstance(probe, GrpcTunnelStream)
                probe.close()
                assert await _echo_flow(opener, manager.echo_port, b"over grpc") == b"over grpc"
            finally:
                await link.close()

    with caplog.at_level(logging.INFO, logger="tether.helper.manager"):
        run(main())
    expected = "offers no tunnel mux" if mux == "none" else "cannot open the tunnel mux through 127.0.0.1:"
    assert expected in caplog.text


def test_losing_the_mux_is_losing_the_manager_and_the_link_comes_back_with_a_new_one(monkeypatch):
    monkeypatch.setattr("tether.helper.root.tunnel.manager_link.BACKOFF_FIRST", 0.01)

    async def main():
        async with Manager() as manager:
            link = manager.link()
            await link.open()
            statuses: list[str] = []
            back = asyncio.Event()

            async def on_info(info: pb.ClusterInfo) -> None:
                pass

            def on_status(status: str, detail: str) -> None:
                statuses.append(f"{status}: {detail}")
                if status == "connected":
                    back.set()

            first = link.mux
            link.supervise(on_info, on_status)
            try:
                await asyncio.sleep(0.05)
                for connection in list(manager.listener.connections):
                    connection.close("the traffic-manager is stopping")
                await asyncio.wait_for(back.wait(), 10)
                assert statuses[0].startswith("reconnecting: the tunnel mux connection ended"), statuses
                assert link.mux is not None and link.mux is not first and link.mux.usable
                opener = _opener(link)
                assert await _echo_flow(opener, manager.echo_port, b"again") == b"again"
            finally:
                await link.close()

    run(main())


def test_the_default_mux_port_is_not_the_grpc_port():
    assert DEFAULT_TUNNEL_MUX_PORT != 8081


@pytest.mark.parametrize(
    ("reported", "refusal"),
    [
        (Side("0.9.0", 0), "is too old for this client: manager 0.9.0 (API level 0)"),
        (Side("99.1.0", API_LEVEL + COMPATIBILITY_WINDOW), None),
        (Side("99.2.0", API_LEVEL + COMPATIBILITY_WINDOW + 1), "is newer than this client supports"),
    ],
)
def test_the_link_judges_the_managers_version_before_it_arrives(reported, refusal):
    async def main():
        async with Manager(mux="none") as manager:
            manager.service.identity = reported
            link = manager.link()
            try:
                if refusal is None:
                    await link.open()
                    assert (link.version, link.api_level) == (reported.version, reported.api_level)
                    assert len(manager.sessions) == 1
                    return
                with pytest.raises(VersionSkewError) as refused:
                    await link.open()
                message = str(refused.value)
                assert refusal in message
                assert f"tether {__version__} (API level {API_LEVEL})" in message
                assert len(manager.sessions) == 0  # refused before arriving
                if reported.api_level < API_LEVEL:
                    assert message.endswith("tether manager upgrade --namespace tether")
                else:
                    assert "Upgrade tether on this machine" in message
            finally:
                await link.close()

    run(main())


def test_the_managers_own_refusal_of_an_old_client_is_a_version_skew_error(monkeypatch):
    """Even when the client's check of the Version answer passes, FAILED_PRECONDITION at arrival is the
    manager's skew refusal, and reaches the user with its words."""
    monkeypatch.setattr(manager_link, "judge_manager", lambda *args: Skew(Verdict.COMPATIBLE, ""))

    async def main():
        async with Manager(mux="none") as manager:
            manager.service.min_client_api_level = API_LEVEL + 1
            link = manager.link()
            try:
                with pytest.raises(VersionSkewError, match=f"serves clients of API level {API_LEVEL + 1} or later"):
                    await link.open()
            finally:
                await link.close()

    run(main())
