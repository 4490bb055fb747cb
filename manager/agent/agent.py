"""The tether-agent's work: keep a session with the manager, take the dials it pushes, and dial them here.

The agent runs in the workload's pod (a sidecar), so what it dials is dialed from the pod's network
namespace — its loopback included. Each dial is run by the manager's own dialer
(:func:`tether.manager.api.dialer.run_flow`) over an ``Agents.Tunnel`` stream that the manager
splices to the client's stream.

One gRPC channel serves the agent's life (gRPC reconnects it); the session on it — arrive, keep-alive,
``WatchDials`` — is started again with backoff whenever it ends (the manager restarted, expired the
agent, or the connection broke). Flows already running are not touched by a new session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tether.manager.agent.intercept import Interceptor, PortPair, TunnelCall, app_environment
from tether.manager.agent.resolve import PodResolver
from tether.manager.agent.token import DEFAULT_TOKEN_FILE, TokenFile, TokenFileError
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.dialer import run_flow
from tether.manager.api.framing import FlowSpec, TunnelError
from tether.manager.api.grpcopts import reconnecting_channel_options
from tether.manager.api.streamwriter import Send, StreamWriter, incoming_messages, rpc_error
from tether.manager.api.version import __version__
from tether.runtime.atomicfile import write_atomic

log = logging.getLogger("tether.agent")

RunFlow = Callable[[FlowSpec, AsyncIterator[pb.TunnelMessage], Send], Awaitable[None]]
#: How long a finished flow waits for the manager to close its stream before cancelling it.
CLOSE_TIMEOUT = 10.0


class AgentRefusedError(Exception):
    """The manager refused this agent's arrival (bad workload, pod or kind, or a token for another pod);
    retrying will not help."""


#: Arrival refusals that retrying cannot change.
_FINAL = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True)
class AgentSettings:
    manager: str  # HOST:PORT of the manager's gRPC port
    namespace: str
    workload: str
    kind: str = "Deployment"
    pod_name: str = ""
    pod_ip: str = ""
    remain_interval: float = 5.0
    min_backoff: float = 0.2
    max_backoff: float = 5.0
    ready_file: Path | None = None
    #: the pod's projected service-account token, sent on every call
    token_file: Path = DEFAULT_TOKEN_FILE
    #: (agent port, app port): where the Service's traffic now arrives, and the app's port it is meant for
    intercept_ports: tuple[PortPair, ...] = ()
    #: JSON list of the app container's variable names the injector copied into this container
    app_env_names: str = ""

    def info(self) -> pb.AgentInfo:
        return pb.AgentInfo(
            workload=pb.WorkloadRef(namespace=self.namespace, name=self.workload, kind=self.kind),
            pod_name=self.pod_name,
            pod_ip=ipaddress.ip_address(self.pod_ip).packed if self.pod_ip else b"",
            version=__version__,
        )


@dataclass
class AgentStats:
    """What the agent has done, for logs and tests."""

    dials: int = 0  # dial requests taken
    dialed: int = 0  # dials that connected
    failed: int = 0  # dials that did not
    active: int = 0  # flows running now
    sessions: int = 0  # times the agent arrived at the manager
    lookups: int = 0  # cluster names resolved for intercepting clients
    destinations: collections.Counter[str] = field(default_factory=collections.Counter)


class TetherAgent:
    def __init__(self, settings: AgentSettings, run: RunFlow = run_flow) -> None:
        self.settings = settings
        self.stats = AgentStats()
        self.agent_id = ""
        self._run = run
        self._token = TokenFile(settings.token_file)
        self._stop = asyncio.Event()
        self._flows: set[asyncio.Task[None]] = set()
        #: set while the agent has a session with the manager and watches for dials
        self.connected = asyncio.Event()
        self._stub: pb_grpc.AgentsStub | None = None
        self.interceptor = Interceptor(settings.intercept_ports, self._open_intercept_tunnel)
        self.environment = app_environment(os.environ, settings.app_env_names)
        #: resolves intercepting clients' cluster names as this pod does
        self.resolver = PodResolver(settings.namespace)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until :meth:`stop`: keep a session with the manager and dial what it asks."""
        channel = grpc.aio.insecure_channel(self.settings.manager, options=reconnecting_channel_options())
        stub = self._stub = pb_grpc.AgentsStub(channel)
        delay = self.settings.min_backoff
        # The app's traffic flows through the agent ports whether or not the manager is there.
        await self.interceptor.start()
        try:
            while not self._stop.is_set():
                arrived = await self._session(stub)
                if self._stop.is_set():
                    break
                delay = self.settings.min_backoff if arrived else min(delay * 2, self.settings.max_backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        finally:
            await self.interceptor.close()
            for task in list(self._flows):
                task.cancel()
            if self._flows:
                await asyncio.wait(self._flows, timeout=2)
            await channel.close()

    async def _session(self, stub: pb_grpc.AgentsStub) -> bool:
        """One session: arrive, then watch for dials until the stream ends. False if it never arrived."""
        fields = {"manager": self.settings.manager, "workload": self._workload()}
        try:
            session = await stub.Arrive(self.settings.info(), timeout=10, metadata=self._token.metadata())
        except TokenFileError as exc:
            log.warning("cannot arrive at the manager", extra={**fields, "error": str(exc)})
            return False
        except grpc.aio.AioRpcError as exc:
            log.warning("cannot arrive at the manager", extra={**fields, "error": rpc_error(exc)})
            if exc.code() in _FINAL:
                raise AgentRefusedError(exc.details() or "invalid agent") from None
            return False
        self.agent_id = self.interceptor.agent_id = session.agent_id
        self.stats.sessions += 1
        log.info(
            "arrived at the manager", extra={**fields, "agent": session.agent_id[:8], "pod": self.settings.pod_name}
        )
        self._write_ready_file()
        watch = stub.WatchDials(session, metadata=self._token.metadata())
        tasks = [
            asyncio.ensure_future(self._take_dials(stub, watch)),
            asyncio.ensure_future(self._remain(stub, session)),
            asyncio.ensure_future(self._stop.wait()),
        ]
        try:
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                # The manager sends headers once it counts this agent as live.
                await asyncio.wait_for(watch.initial_metadata(), 10)
            self.connected.set()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, grpc.aio.AioRpcError):
                    log.warning("lost the manager", extra={**fields, "error": rpc_error(exc)})
                elif isinstance(exc, TokenFileError):
                    log.warning("lost the manager", extra={**fields, "error": str(exc)})
                elif exc is not None:
                    raise exc
        finally:
            self.connected.clear()
            if self._stop.is_set():
                with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError, TokenFileError):
                    await stub.Depart(session, timeout=2, metadata=self._token.metadata())
            for task in tasks:
                task.cancel()
            watch.cancel()
        if not self._stop.is_set():
            log.info("session with the manager ended; arriving again", extra=fields)
        return True

    async def _take_dials(self, stub: pb_grpc.AgentsStub, watch: grpc.aio.UnaryStreamCall) -> None:
        async for request in watch:
            if request.HasField("intercepts"):
                self.interceptor.update(request.intercepts)
                await self._report(stub)
                continue
            if request.HasField("dns"):
                task = asyncio.ensure_future(self._resolve(stub, self.agent_id, request))
                self._flows.add(task)
                task.add_done_callback(self._flows.discard)
                continue
            task = asyncio.ensure_future(self._serve(stub, self.agent_id, request))
            self._flows.add(task)
            task.add_done_callback(self._flows.discard)

    async def _report(self, stub: pb_grpc.AgentsStub) -> None:
        """Tell the manager which ports this agent sends to a client now, and the app's environment."""
        report = pb.AgentReport(agent_id=self.agent_id, ports=self.interceptor.ports(), environment=self.environment)
        try:
            await stub.Report(report, timeout=10, metadata=self._token.metadata())
        except (grpc.aio.AioRpcError, TokenFileError) as exc:
            log.warning("cannot report to the manager: %s", exc)

    async def _resolve(self, stub: pb_grpc.AgentsStub, agent_id: str, request: pb.DialRequest) -> None:
        """Resolve a client's name in this pod and answer the manager (which answers the client)."""
        self.stats.lookups += 1
        reply = await self.resolver.answer(agent_id, request)
        try:
            await stub.AnswerDNS(reply, timeout=10, metadata=self._token.metadata())
        except (grpc.aio.AioRpcError, TokenFileError) as exc:
            log.debug("cannot answer lookup %s: %s", request.flow_id[:8], exc)

    async def _open_intercept_tunnel(self) -> TunnelCall:
        assert self._stub is not None
        return _GrpcTunnel(self._stub.Tunnel(metadata=self._token.metadata()))

    async def _remain(self, stub: pb_grpc.AgentsStub, session: pb.AgentSession) -> None:
        interval = self.settings.remain_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await stub.Remain(session, timeout=max(interval * 2, 5.0), metadata=self._token.metadata())
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    log.info("the manager forgot this agent", extra={"agent": session.agent_id[:8]})
                    return
                raise

    async def _serve(self, stub: pb_grpc.AgentsStub, agent_id: str, request: pb.DialRequest) -> None:
        """Dial one flow here and carry it over its own Agents.Tunnel stream."""
        try:
            metadata = self._token.metadata()
        except TokenFileError as exc:
            # The manager gives up on the flow when it is not taken in time, and tells the client.
            log.warning("cannot take flow %s: %s", request.flow_id[:8], exc)
            return
        self.stats.dials += 1
        self.stats.active += 1
        call = stub.Tunnel(metadata=metadata)
        send = StreamWriter(call.write)
        try:
            await send(pb.TunnelMessage(agent_flow=pb.AgentFlow(agent_id=agent_id, flow_id=request.flow_id)))
            try:
                spec = framing.parse_open(pb.TunnelMessage(open=request.open))
            except TunnelError as exc:
                await self._count(send, framing.dial_failed(pb.DialResult.INVALID, str(exc)))
            else:
                self.stats.destinations[spec.describe()] += 1
                log.debug("dialing %s", spec.describe())
                try:
                    await self._run(spec, incoming_messages(call), lambda message: self._count(send, message))
                except TunnelError as exc:
                    log.warning("flow %s broke the protocol: %s", spec.describe(), exc)
                    await send(framing.abort_message(str(exc)))
            await send.drain()  # run_flow may have cancelled a task mid-write; done_writing must come after it
            await call.done_writing()
            # The manager ends the stream once it has passed our last message on.
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while await call.read() is not grpc.aio.EOF:
                    pass
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, TimeoutError) as exc:
            log.debug("flow %s ended: %r", request.flow_id[:8], exc)
        finally:
            self.stats.active -= 1
            call.cancel()

    async def _count(self, send: Send, message: pb.TunnelMessage) -> None:
        if message.WhichOneof("kind") == "dial":
            if message.dial.ok:
                self.stats.dialed += 1
            else:
                self.stats.failed += 1
        await send(message)

    def _workload(self) -> str:
        s = self.settings
        return f"{s.kind} {s.namespace}/{s.workload}"

    def _write_ready_file(self) -> None:
        path = self.settings.ready_file
        if path is None or path.exists():
            return
        # A marker for whoever waits on this process (the lab), meaningless after a reboot: no fsync.
        write_atomic(path, f"{os.getpid()}\n", fsync=False)


class _GrpcTunnel(TunnelCall):
    """An Agents.Tunnel call as the interceptor uses it."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call
        self.write = StreamWriter(call.write)  # type: ignore[method-assign, assignment]
        self._broken = False

    async def read(self) -> pb.TunnelMessage | None:
        if self._broken:
            return None
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            self._broken = True
            return framing.abort_message(f"the manager's stream broke: {rpc_error(exc)}")
        return None if message is grpc.aio.EOF else message

    async def finish(self) -> None:
        try:
            await self.write.drain()  # type: ignore[attr-defined]
            await self._call.done_writing()
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while await self._call.read() is not grpc.aio.EOF:
                    pass
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, TimeoutError):
            pass
        finally:
            self._call.cancel()
