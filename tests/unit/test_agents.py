"""tether-agents in-process on loopback: the manager's registry and splicing, and a real agent dialing flows.

The manager's own dialer is replaced by one that fails the test, so every flow that works was dialed by
the agent; the agent's counters say what it dialed.
"""

import asyncio
import dataclasses
import hashlib
import ipaddress
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer
from echo_servers import LOOPBACK_ALLOWED, UdpEcho, echo_handler

from tests.doubles.fake_token_reviewer import FakeCluster
from tether.manager.agent.agent import AgentSettings, TetherAgent
from tether.manager.agent.resolve import PodResolver, cluster_domain_of
from tether.manager.agent.token import TokenFile
from tether.manager.agentauth import AgentAuthenticator
from tether.manager.agents import NO_AGENT, AgentError, AgentRegistry, UnknownAgentError
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.framing import Protocol
from tether.manager.api.grpcopts import grpc_options
from tether.manager.clusterinfo import ClusterInfoHub
from tether.manager.dns import ClusterResolver, unpack_record
from tether.manager.resolvconf import ResolverConfig, parse_resolv_conf
from tether.manager.server import AgentService, ManagerService
from tether.manager.sessions import SessionTable
from tether.manager.tunnel import flows as flows_module

LOOPBACK = ipaddress.ip_address("127.0.0.1")
WEB = ("default", "web", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_info(pod: str = "web-0", name: str = "web", kind: str = "Deployment", ip: bytes = LOOPBACK.packed):
    return pb.AgentInfo(
        workload=pb.WorkloadRef(namespace="default", name=name, kind=kind), pod_name=pod, pod_ip=ip, version="t"
    )


# --- the registry on its own ----------------------------------------------------------------------


def test_arrival_is_validated_and_names_the_value():
    async def scenario() -> None:
        agents = AgentRegistry(idle_timeout=10)
        for info, text in (
            (agent_info(name="Web"), '"Web"'),
            (agent_info(kind="Pod"), '"Pod"'),
            (agent_info(kind=""), '""'),
            (agent_info(pod=""), "pod name"),
            (agent_info(ip=b"\x01\x02"), "4 or 16 bytes"),
        ):
            with pytest.raises(AgentError, match=text):
                agents.arrive(info)
        assert len(agents) == 0

    asyncio.run(scenario())


def test_pick_round_robins_over_watching_agents_of_the_workload_and_kind():
    async def scenario() -> None:
        agents = AgentRegistry(idle_timeout=10)
        a, b = agents.arrive(agent_info("web-0")), agents.arrive(agent_info("web-1"))
        other = agents.arrive(agent_info("cat-0", name="catalog"))
        assert agents.pick(*WEB) is None, "an agent that does not watch for dials is not live"
        for agent in (a, b, other):
            agent.watchers = 1
        picked = [agents.pick(*WEB).pod_name for _ in range(4)]
        assert picked == ["web-0", "web-1", "web-0", "web-1"]
        assert agents.pick("default", "web", "Deployment") in (a, b)
        assert agents.pick("default", "web", "StatefulSet") is None
        assert agents.pick("default", "catalog") is other
        assert agents.pick("shop", "web") is None

    asyncio.run(scenario())


def test_idle_agents_expire_and_their_watch_ends():
    async def scenario() -> None:
        now = [0.0]
        agents = AgentRegistry(idle_timeout=10, clock=lambda: now[0])
        agent = agents.arrive(agent_info())
        watch = agents.watching(agent)
        pending = asyncio.ensure_future(anext(watch.__enter__()))
        await asyncio.sleep(0)
        assert agents.live(*WEB) == [agent]
        now[0] = 5
        agents.remain(agent.agent_id)
        now[0] = 12
        assert agents.expire() == []
        now[0] = 16
        assert agents.expire() == [agent]
        with pytest.raises(StopAsyncIteration):
            await pending
        watch.__exit__(None, None, None)
        with pytest.raises(UnknownAgentError, match=agent.agent_id):
            agents.remain(agent.agent_id)
        assert agents.live(*WEB) == []

    asyncio.run(scenario())


async def refused_with(call: grpc.aio.StreamStreamCall, first: pb.TunnelMessage) -> grpc.StatusCode:
    """Send ``first`` on an agent Tunnel call; the status the manager ends the call with."""
    await call.write(first)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    return raised.value.code()


# --- manager + agent over gRPC on loopback ---------------------------------------------------------


async def manager_must_not_dial(*args: object) -> None:
    raise AssertionError("a flow with via was dialed by the manager")


class Harness:
    """A manager (both services), one agent for default/web, a TCP echo and a UDP echo server."""

    def __init__(self, start_agent: bool = True) -> None:
        self.start_agent = start_agent

    async def __aenter__(self) -> "Harness":
        self.sessions = SessionTable(idle_timeout=30)
        self.agents = AgentRegistry(idle_timeout=30)
        # The API server as TokenReview and pod reads see it: each agent's pod, and its token on disk.
        self.cluster = FakeCluster()
        for pod, workload in (("web-0", "web"), ("web-1", "web"), ("lazy-0", "lazy"), ("other-0", "other")):
            self.cluster.add_pod("default", pod, "127.0.0.1", owners=[("Deployment", workload)])
        self.tokens = Path(tempfile.mkdtemp(prefix="tether-agent-tokens-"))
        self.port = free_port()
        await self.start_manager()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=grpc_options())
        self.stub = pb_grpc.ManagerStub(self.channel)
        self.agents_stub = pb_grpc.AgentsStub(self.channel)
        self.echo = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        self.echo_port = self.echo.sockets[0].getsockname()[1]
        self.udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
        self.udp_port = self.udp.get_extra_info("sockname")[1]
        self.session = (await self.stub.ArriveAsClient(pb.ClientInfo(name="t", namespace="default"))).session_id
        self.agent: TetherAgent | None = None
        self.agent_task: asyncio.Task | None = None
        if self.start_agent:
            await self.run_agent()
        return self

    async def start_manager(self) -> None:
        resolver = ClusterResolver(ResolverConfig(nameservers=(LOOPBACK,), search=(), ndots=1), "cluster.local")
        self.server = grpc.aio.server(options=grpc_options())
        service = ManagerService(self.sessions, ClusterInfoHub(), resolver, self.agents, destinations=LOOPBACK_ALLOWED)
        pb_grpc.add_ManagerServicer_to_server(service, self.server)
        authenticator = AgentAuthenticator(self.cluster, self.cluster)
        pb_grpc.add_AgentsServicer_to_server(AgentService(self.agents, authenticator), self.server)
        assert self.server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port
        await self.server.start()

    async def run_agent(self, pod: str = "web-0") -> TetherAgent:
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
        )
        self.agent = TetherAgent(settings)
        self.agent_task = asyncio.ensure_future(self.agent.run())
        await asyncio.wait_for(self.agent.connected.wait(), 10)
        return self.agent

    def token_file(self, pod: str) -> Path:
        path = self.tokens / pod
        if not path.exists():
            path.write_text(self.cluster.issue("default", pod) + "\n")
        return path

    def auth(self, pod: str) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying the pod's token, as its agent sends it."""
        return TokenFile(self.token_file(pod)).metadata()

    async def __aexit__(self, *exc: object) -> None:
        shutil.rmtree(self.tokens, ignore_errors=True)
        if self.agent_task is not None:
            self.agent.stop()
            await asyncio.wait_for(self.agent_task, 10)
        self.udp.close()
        self.echo.close()
        await self.channel.close()
        await self.server.stop(0)

    async def open_flow(self, protocol: Protocol, port: int, via=WEB, **kw: float) -> grpc.aio.StreamStreamCall:
        call = self.stub.Tunnel()
        await call.write(framing.open_message(self.session, protocol, (LOOPBACK, port), via=via, **kw))
        return call


def run(scenario, monkeypatch, **harness):
    monkeypatch.setattr(flows_module, "run_flow", manager_must_not_dial)

    async def main():
        async with Harness(**harness) as h:
            await asyncio.wait_for(scenario(h), 60)

    asyncio.run(main())


def test_one_megabyte_echo_through_the_agent_is_byte_exact(monkeypatch):
    payload = os.urandom(1024 * 1024)

    async def scenario(h: Harness) -> None:
        call = await h.open_flow(Protocol.TCP, h.echo_port)
        result = (await call.read()).dial
        assert result.ok, result.error

        async def send() -> None:
            for piece in framing.chunks(payload, 64 * 1024):
                await call.write(framing.data_message(piece))
            await call.write(framing.eof_message())

        sender = asyncio.ensure_future(send())
        received = bytearray()
        while (message := await call.read()).WhichOneof("kind") == "data":
            received += message.data
        assert message.WhichOneof("kind") == "eof"
        await sender
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert (h.agent.stats.dials, h.agent.stats.dialed, h.agent.stats.failed) == (1, 1, 0)
        assert h.agent.stats.destinations == {f"tcp://127.0.0.1:{h.echo_port}": 1}
        await asyncio.sleep(0.1)
        assert h.agent.stats.active == 0

    run(scenario, monkeypatch)


def test_udp_through_the_agent_keeps_datagrams(monkeypatch):
    async def scenario(h: Harness) -> None:
        call = await h.open_flow(Protocol.UDP, h.udp_port)
        assert (await call.read()).dial.ok
        for datagram in (b"one", b"two" * 1000):
            await call.write(framing.data_message(datagram))
            assert (await call.read()).data == b"echo:" + datagram
        call.cancel()
        assert h.agent.stats.destinations == {f"udp://127.0.0.1:{h.udp_port}": 1}

    run(scenario, monkeypatch)


def test_refused_port_through_the_agent_is_refused_promptly(monkeypatch):
    async def scenario(h: Harness) -> None:
        port = free_port()
        started = time.monotonic()
        call = await h.open_flow(Protocol.TCP, port, dial_timeout=10)
        result = (await call.read()).dial
        assert not result.ok and result.reason == pb.DialResult.REFUSED, result.error
        assert f"tcp://127.0.0.1:{port}" in result.error
        assert time.monotonic() - started < 2
        assert await call.read() is grpc.aio.EOF
        assert (h.agent.stats.dialed, h.agent.stats.failed) == (0, 1)

    run(scenario, monkeypatch)


def test_no_agent_for_the_workload_is_rejected_promptly_with_the_reason(monkeypatch):
    async def scenario(h: Harness) -> None:
        started = time.monotonic()
        call = await h.open_flow(Protocol.TCP, h.echo_port, via=("default", "catalog", ""), dial_timeout=10)
        result = (await call.read()).dial
        assert not result.ok and result.reason == pb.DialResult.UNREACHABLE
        assert result.error.startswith("no tether-agent for workload default/catalog: ")
        # the workload has an agent, but not of the kind asked for
        call = await h.open_flow(Protocol.TCP, h.echo_port, via=("default", "web", "StatefulSet"))
        assert "no tether-agent for workload StatefulSet default/web" in (await call.read()).dial.error
        call = await h.open_flow(Protocol.TCP, h.echo_port, via=("shop", "catalog", ""))
        error = (await call.read()).dial.error
        assert error == f"no tether-agent for workload shop/catalog: {NO_AGENT}"
        assert time.monotonic() - started < 2
        assert h.agent.stats.dials == 0

    run(scenario, monkeypatch)


def test_agent_going_away_mid_flow_aborts_the_clients_flow_and_removes_the_agent(monkeypatch):
    async def scenario(h: Harness) -> None:
        call = await h.open_flow(Protocol.TCP, h.echo_port)
        assert (await call.read()).dial.ok
        await call.write(framing.data_message(b"ping"))
        assert (await call.read()).data == b"ping"
        h.agent_task.cancel()  # the agent dies: its channel closes with the flow open
        with pytest.raises(asyncio.CancelledError):
            await h.agent_task
        h.agent_task = None
        message = await asyncio.wait_for(call.read(), 5)
        assert message.WhichOneof("kind") == "abort"
        assert "tether-agent web-0" in message.abort and "went away" in message.abort
        for _ in range(100):
            if not h.agents.live(*WEB):
                break
            await asyncio.sleep(0.05)
        assert h.agents.live(*WEB) == []
        call = await h.open_flow(Protocol.TCP, h.echo_port)
        assert "no tether-agent for workload default/web" in (await call.read()).dial.error

    run(scenario, monkeypatch)


def test_client_going_away_mid_flow_ends_the_agents_flow(monkeypatch):
    async def scenario(h: Harness) -> None:
        call = await h.open_flow(Protocol.TCP, h.echo_port)
        assert (await call.read()).dial.ok
        assert h.agent.stats.active == 1
        call.cancel()
        for _ in range(100):
            if h.agent.stats.active == 0:
                break
            await asyncio.sleep(0.05)
        assert h.agent.stats.active == 0

    run(scenario, monkeypatch)


def test_dials_are_shared_round_robin_between_two_agents(monkeypatch):
    async def scenario(h: Harness) -> None:
        first = h.agent
        second = TetherAgent(dataclasses.replace(first.settings, pod_name="web-1", token_file=h.token_file("web-1")))
        task = asyncio.ensure_future(second.run())
        try:
            await asyncio.wait_for(second.connected.wait(), 10)
            for _ in range(4):
                call = await h.open_flow(Protocol.TCP, h.echo_port)
                assert (await call.read()).dial.ok
                await call.write(framing.eof_message())
                assert (await call.read()).WhichOneof("kind") == "eof"
                await call.done_writing()
            assert (first.stats.dials, second.stats.dials) == (2, 2)
        finally:
            second.stop()
            await task

    run(scenario, monkeypatch)


def test_agent_that_never_takes_the_flow_times_out_and_never_sees_the_session(monkeypatch):
    async def scenario(h: Harness) -> None:
        lazy = h.auth("lazy-0")
        session = await h.agents_stub.Arrive(agent_info("lazy-0", name="lazy"), metadata=lazy)
        watch = h.agents_stub.WatchDials(session, metadata=lazy)
        for _ in range(100):
            if h.agents.live("default", "lazy"):
                break
            await asyncio.sleep(0.02)
        started = time.monotonic()
        call = await h.open_flow(Protocol.TCP, h.echo_port, via=("default", "lazy", ""), dial_timeout=0.5)
        request = await next_dial(watch)
        assert request.open.session_id == "", "a client's session id must never reach an agent"
        assert request.open.destination.port == h.echo_port and request.flow_id
        result = (await call.read()).dial
        assert not result.ok and result.reason == pb.DialResult.TIMEOUT
        assert "lazy-0" in result.error and "did not take the flow" in result.error
        assert 0.4 < time.monotonic() - started < 2
        # too late now; and a flow can only be taken by the agent it was given to
        late = pb.TunnelMessage(agent_flow=pb.AgentFlow(agent_id=session.agent_id, flow_id=request.flow_id))
        assert await refused_with(h.agents_stub.Tunnel(metadata=lazy), late) == grpc.StatusCode.NOT_FOUND
        bad_first = framing.data_message(b"x")
        assert await refused_with(h.agents_stub.Tunnel(metadata=lazy), bad_first) == grpc.StatusCode.INVALID_ARGUMENT
        watch.cancel()

    run(scenario, monkeypatch, start_agent=False)


def test_a_flow_given_to_one_agent_cannot_be_taken_by_another(monkeypatch):
    async def scenario(h: Harness) -> None:
        owner = await h.agents_stub.Arrive(agent_info("lazy-0", name="lazy"), metadata=h.auth("lazy-0"))
        thief = await h.agents_stub.Arrive(agent_info("other-0", name="other"), metadata=h.auth("other-0"))
        watch = h.agents_stub.WatchDials(owner, metadata=h.auth("lazy-0"))
        while not h.agents.live("default", "lazy"):
            await asyncio.sleep(0.02)
        await h.open_flow(Protocol.TCP, h.echo_port, via=("default", "lazy", ""), dial_timeout=5)
        request = await next_dial(watch)
        stolen = pb.TunnelMessage(agent_flow=pb.AgentFlow(agent_id=thief.agent_id, flow_id=request.flow_id))
        assert await refused_with(h.agents_stub.Tunnel(metadata=h.auth("other-0")), stolen) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        watch.cancel()

    run(scenario, monkeypatch, start_agent=False)


def test_agent_arrives_again_after_the_manager_restarts(monkeypatch):
    async def scenario(h: Harness) -> None:
        assert h.agent.stats.sessions == 1
        await h.server.stop(0)
        h.agents = AgentRegistry(idle_timeout=30)  # a new manager knows no agents
        await h.start_manager()
        for _ in range(200):
            if h.agents.live(*WEB):
                break
            await asyncio.sleep(0.05)
        assert [a.pod_name for a in h.agents.live(*WEB)] == ["web-0"]
        assert h.agent.stats.sessions == 2
        h.session = (await h.stub.ArriveAsClient(pb.ClientInfo(name="t", namespace="default"))).session_id
        call = await h.open_flow(Protocol.TCP, h.echo_port)
        assert (await call.read()).dial.ok
        call.cancel()

    run(scenario, monkeypatch)


def test_a_client_breaking_the_protocol_mid_flow_ends_both_sides(monkeypatch):
    async def scenario(h: Harness) -> None:
        call = await h.open_flow(Protocol.TCP, h.echo_port)
        assert (await call.read()).dial.ok
        await call.write(framing.open_message(h.session, Protocol.TCP, (LOOPBACK, h.echo_port)))
        message = await asyncio.wait_for(call.read(), 5)
        assert message.WhichOneof("kind") == "abort" and "unexpected open message" in message.abort
        for _ in range(100):
            if h.agent.stats.active == 0:
                break
            await asyncio.sleep(0.05)
        assert h.agent.stats.active == 0

    run(scenario, monkeypatch)


# --- the tether-agent command line ------------------------------------------------------------------


def test_agent_cli_takes_the_downward_api_environment_and_names_bad_values(monkeypatch, capsys):
    from tether.manager.agent import main as agent_main
    from tether.manager.agent.main import build_parser, main, settings_from

    monkeypatch.setattr(agent_main.logs, "configure", lambda *args: None)  # leave pytest's logging alone
    monkeypatch.setenv("POD_NAME", "web-0")
    monkeypatch.setenv("POD_NAMESPACE", "default")
    monkeypatch.setenv("POD_IP", "10.244.1.11")
    monkeypatch.setenv("TETHER_MANAGER", "tether-manager.tether.svc.cluster.local:8081")
    settings = settings_from(build_parser().parse_args(["--workload", "web"]))
    assert (settings.namespace, settings.workload, settings.kind) == ("default", "web", "Deployment")
    assert (settings.pod_name, settings.pod_ip) == ("web-0", "10.244.1.11")
    assert settings.info().pod_ip == bytes([10, 244, 1, 11])
    for argv, text in (
        (["--workload", "web", "--manager", "nohost"], '--manager "nohost" is not HOST:PORT'),
        (["--workload", "web", "--manager", "manager:³"], '--manager "manager:³" is not HOST:PORT'),
        (["--workload", "web", "--manager", "manager:٣"], '--manager "manager:٣" is not HOST:PORT'),
        (["--workload", "Web"], '"Web" is not a valid DNS-1123 subdomain'),
        (["--workload", "web", "--pod-ip", "10.1"], '--pod-ip "10.1" is not an IP address'),
        ([], "--workload is required"),
    ):
        assert main(argv) == 2
        assert text in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "--proxy-via" in capsys.readouterr().out


async def next_dial(watch: grpc.aio.UnaryStreamCall) -> pb.DialRequest:
    """The next dial on a WatchDials stream, past the intercepts the manager tells every agent first."""
    while (request := await watch.read()).HasField("intercepts"):
        pass
    return request


# --- lookups resolved in the agent's pod (an intercepting client's cluster DNS) --------------------


class PodZone(BaseResolver):
    """The pod's cluster DNS: two services, NXDOMAIN for the rest (what a pod's nameserver answers)."""

    RECORDS = {"echo.default.svc.cluster.local.": "10.96.1.11", "catalog.webshop.svc.cluster.local.": "10.96.1.14"}

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        address = self.RECORDS.get(str(request.q.qname))
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=5))
        return reply


def test_lookups_via_a_workload_are_resolved_with_its_pods_resolv_conf(monkeypatch):
    zone = DNSServer(PodZone(), address="127.0.0.1", port=0)
    zone.start_thread()
    resolv = Path(tempfile.mkdtemp(prefix="tether-pod-etc-")) / "resolv.conf"
    resolv.write_text(
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5\n"
    )

    async def lookup(h: Harness, name: str, workload: str = "web") -> pb.DNSResponse:
        via = pb.WorkloadRef(namespace="default", name=workload)
        return await h.stub.LookupDNS(pb.DNSRequest(session_id=h.session, name=name, qtype=QTYPE.A, via=via))

    def addresses(reply: pb.DNSResponse) -> list[tuple[str, str]]:
        return [(str(r.rname), str(r.rdata)) for r in map(unpack_record, reply.answers)]

    async def scenario(h: Harness) -> None:
        h.agent.resolver = PodResolver("default", resolv, port=zone.server.server_address[1])
        # a single label is a service of the pod's namespace; other names follow the pod's search path
        assert addresses(await lookup(h, "echo")) == [("echo.", "10.96.1.11")]
        assert addresses(await lookup(h, "catalog.webshop")) == [("catalog.webshop.", "10.96.1.14")]
        assert (await lookup(h, "nothing")).rcode == RCODE.NXDOMAIN
        assert h.agent.stats.lookups == 3
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await lookup(h, "echo", workload="lazy")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no tether-agent for workload default/lazy" in refused.value.details()
        # a pod without a resolv.conf: the agent's reason reaches the client
        h.agent.resolver = PodResolver("default", resolv.parent / "missing")
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await lookup(h, "echo")
        assert "cannot read the pod's" in failed.value.details()
        # an answer for a lookup the agent was never asked is refused
        with pytest.raises(grpc.aio.AioRpcError) as stray:
            await h.agents_stub.AnswerDNS(
                pb.AgentDNSAnswer(agent_id=h.agent.agent_id, flow_id="made-up"), metadata=h.auth("web-0")
            )
        assert stray.value.code() == grpc.StatusCode.NOT_FOUND

    try:
        run(scenario, monkeypatch)
    finally:
        zone.stop()
        shutil.rmtree(resolv.parent, ignore_errors=True)


def test_cluster_domain_is_read_off_the_pods_search_path():
    def config(search: str) -> ResolverConfig:
        return parse_resolv_conf(f"search {search}\nnameserver 10.96.0.10\n")

    assert cluster_domain_of(config("shop.svc.corp.example svc.corp.example corp.example"), "shop") == "corp.example."
    assert cluster_domain_of(config("example.com"), "shop") == "cluster.local."
