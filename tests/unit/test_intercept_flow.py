"""Intercepts in-process on loopback: the real manager services, a real agent taking an app port, and the
helper's answer (``helper.root.intercept.answer``) dialing a "local" server, over gRPC streams.

The agent listens on its agent port and passes connections to the app (an echo server) while nobody
intercepts; once a client holds the intercept they go to the client's local server instead (which answers
after the peer's half-close, so both directions' eof are carried); a local port nothing listens on resets
the connection; another client's claim names the holder; the client going away ends its intercepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable

import grpc
from test_agents import LOOPBACK, LOOPBACK_ALLOWED, Harness, free_port

from tether.helper.root.intercept.answer import answer
from tether.manager.agent.agent import AgentSettings, TetherAgent
from tether.manager.agentauth import AgentAuthenticator
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.grpcopts import grpc_options
from tether.manager.clusterinfo import ClusterInfoHub
from tether.manager.dns import ClusterResolver
from tether.manager.intercepts import InterceptTable
from tether.manager.resolvconf import ResolverConfig
from tether.manager.server import AgentService, ManagerService


class InterceptHarness(Harness):
    """The agent takes the echo server's port (the app) on an agent port of its own."""

    async def start_manager(self) -> None:
        resolver = ClusterResolver(ResolverConfig(nameservers=(LOOPBACK,), search=(), ndots=1), "cluster.local")
        self.server = grpc.aio.server(options=grpc_options())
        table = InterceptTable()
        service = ManagerService(
            self.sessions, ClusterInfoHub(), resolver, self.agents, destinations=LOOPBACK_ALLOWED, intercepts=table
        )
        pb_grpc.add_ManagerServicer_to_server(service, self.server)
        authenticator = AgentAuthenticator(self.cluster, self.cluster)
        pb_grpc.add_AgentsServicer_to_server(AgentService(self.agents, authenticator, table), self.server)
        assert self.server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        await self.server.start()

    async def run_agent(self, pod: str = "web-0") -> TetherAgent:
        self.agent_port = free_port()
        settings = AgentSettings(
            manager=f"127.0.0.1:{self.port}",
            namespace="default",
            workload="web",
            pod_name=pod,
            pod_ip="127.0.0.1",
            min_backoff=0.05,
            max_backoff=0.2,
            remain_interval=0.5,
            token_file=self.token_file(pod),
            intercept_ports=((self.agent_port, self.echo_port),),
            app_env_names='["GREETING"]',
        )
        self.agent = TetherAgent(settings)
        self.agent.environment["GREETING"] = "hi"
        self.agent_task = asyncio.ensure_future(self.agent.run())
        await asyncio.wait_for(self.agent.connected.wait(), 10)
        return self.agent

    def spec(self, local_port: int = 0) -> pb.InterceptSpec:
        return pb.InterceptSpec(
            workload=pb.WorkloadRef(namespace="default", name="web", kind="Deployment"),
            port=self.echo_port,
            service="web",
            service_port=80,
            local_port=local_port,
        )

    async def intercept(self, session: str, local_port: int) -> pb.InterceptInfo:
        request = pb.InterceptRequest(session_id=session, spec=self.spec(local_port))
        return await self.stub.CreateIntercept(request)

    async def taken(self, count: int) -> pb.InterceptList:
        """Wait until `count` intercepts are reported taken by the agent."""
        while True:
            listing = await self.stub.ListIntercepts(pb.SessionInfo(session_id=self.session))
            if sum(i.agents_intercepting for i in listing.intercepts) == count and all(
                i.agents_intercepting for i in listing.intercepts
            ):
                return listing
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def answering(h: InterceptHarness, local: Callable[[str, str, int], int | None]):
    """The helper's part: take intercepted dials for the harness's session and answer them."""
    call = h.stub.WatchInterceptDials(pb.SessionInfo(session_id=h.session))
    await call.initial_metadata()
    tasks: set[asyncio.Task[None]] = set()

    async def take() -> None:
        async for request in call:
            tasks.add(asyncio.ensure_future(answer(h.stub, h.session, None, request, local)))

    watcher = asyncio.ensure_future(take())
    try:
        yield
    finally:
        watcher.cancel()
        call.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(watcher, *tasks, return_exceptions=True)


async def local_server() -> tuple[asyncio.Server, int]:
    """Answers "local:" + everything it got, once the peer half-closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(b"local:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    received = await reader.read()
    writer.close()
    return received


def run(scenario) -> None:
    async def main() -> None:
        async with InterceptHarness() as h:
            await asyncio.wait_for(scenario(h), 60)

    asyncio.run(main())


def test_the_app_answers_until_intercepted_then_the_local_server_does_then_the_app_again():
    payload = os.urandom(1024 * 1024)

    async def scenario(h: InterceptHarness) -> None:
        assert await exchange(h.agent_port, b"to the app") == b"to the app"
        server, port = await local_server()
        async with answering(h, lambda ns, name, p: port if (ns, name, p) == ("default", "web", h.echo_port) else None):
            info = await h.intercept(h.session, port)
            assert info.client == "t" and info.since_unix_ms > 0
            listing = await h.taken(1)
            assert dict(listing.intercepts[0].environment) == {"GREETING": "hi"}
            [report] = listing.agents
            assert [(p.port, p.agent_port, p.intercepted_by) for p in report.ports] == [
                (h.echo_port, h.agent_port, "t")
            ]
            received = await exchange(h.agent_port, payload)
            assert hashlib.sha256(received).digest() == hashlib.sha256(b"local:" + payload).digest()
            await h.stub.RemoveIntercept(pb.InterceptRequest(session_id=h.session, spec=h.spec()))
            while h.agent.interceptor.intercepted:
                await asyncio.sleep(0.02)
            assert await exchange(h.agent_port, b"app again") == b"app again"
        server.close()
        assert h.agent.interceptor.stats.intercepted == 1 and h.agent.interceptor.stats.forwarded == 2

    run(scenario)


def test_a_local_port_nothing_listens_on_resets_the_connection():
    async def scenario(h: InterceptHarness) -> None:
        closed = free_port()
        async with answering(h, lambda ns, name, p: closed):
            await h.intercept(h.session, closed)
            await h.taken(1)
            try:
                received = await exchange(h.agent_port, b"anyone?")
            except ConnectionResetError:
                received = b""
            assert received == b""
            assert h.agent.interceptor.stats.refused == 1

    run(scenario)


def test_another_clients_intercept_is_refused_naming_who_and_since():
    async def scenario(h: InterceptHarness) -> None:
        other = (await h.stub.ArriveAsClient(pb.ClientInfo(name="bob@laptop", namespace="default"))).session_id
        await h.intercept(other, 9)
        try:
            await h.intercept(h.session, 9)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
            assert f"default/web port {h.echo_port} is already intercepted by bob@laptop since " in exc.details()
        else:
            raise AssertionError("a second client took an intercepted port")

    run(scenario)


def test_a_client_that_stops_answering_loses_its_intercepts():
    async def scenario(h: InterceptHarness) -> None:
        async with answering(h, lambda ns, name, p: None):
            await h.intercept(h.session, 9)
            await h.taken(1)
        while (await h.stub.ListIntercepts(pb.SessionInfo(session_id=h.session))).intercepts:
            await asyncio.sleep(0.02)
        while h.agent.interceptor.intercepted:
            await asyncio.sleep(0.02)
        assert await exchange(h.agent_port, b"back to the app") == b"back to the app"

    run(scenario)
