"""The manager's tether-agents: which agents are alive for which workload, and splicing client flows to them.

A client's Tunnel whose open names a workload in ``via`` (``--proxy-via``) is dialed by one of that
workload's agents instead of by the manager:

1. :meth:`AgentRegistry.splice` picks a live agent (round-robin over the workload's agents) and
   queues a :class:`DialRequest` with a fresh, unguessable flow id on that agent's ``WatchDials``
   stream;
2. the agent opens an ``Agents.Tunnel`` stream whose first message names the flow
   (:meth:`AgentRegistry.attach`); it must do so within the flow's dial timeout;
3. from then on messages are piped both ways unchanged — the agent's dial result, data, eof and abort
   to the client; the client's data, eof and abort to the agent. Every write is awaited, so a slow
   reader on either side slows the other (gRPC flow control end to end).

The flow is over when the agent ends its stream (the way the manager's own Tunnel handler returns
when its dial is done). Either side going away ends the other with an abort that says who left.

Intercepts run the same splice the other way round (:meth:`AgentRegistry.splice_to`): the agent's stream
for a connection it accepted is the client side, and the intercepting client — watching for dials on
``Manager.WatchInterceptDials`` (:meth:`AgentRegistry.client_watching`) — is the dialer: it dials its local
port and attaches its answer stream with the flow id, exactly as an agent does.

Agent liveness reuses the session table: an agent keeps its session with ``Remain``; one that is
idle past the timeout, departs, or whose ``WatchDials`` stream ends is removed, and any flow still
waiting for it fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from tether.manager.agentauth import AgentClaim
from tether.manager.agentdns import AgentLookups
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.framing import FlowSpec
from tether.manager.api.streamwriter import Send, StreamWriter
from tether.manager.api.wire import IPAddress
from tether.manager.sessions import SessionTable, UnknownSessionError

log = logging.getLogger("tether.manager.agents")

#: (namespace, name, kind) of a workload; kind "" matches any kind.
WorkloadKey = tuple[str, str, str]
#: Why a flow for a workload without a live agent fails. The manager never injects one for a client: it cannot
#: tell which Kubernetes user a port-forwarded client is, so the client injects with its user's credentials.
NO_AGENT = (
    "no agent has arrived for it (tether connect injects the sidecar into a --proxy-via workload without one, "
    "with your own credentials; its pods get an agent as they restart)"
)

WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# The messages each side may send once a flow is spliced.
_FROM_AGENT = frozenset({"dial", "data", "eof", "abort"})
_FROM_CLIENT = frozenset({"data", "eof", "abort"})


class AgentError(ValueError):
    """An agent's arrival or flow message is invalid; the text names the offending value."""


class UnknownAgentError(UnknownSessionError):
    def __str__(self) -> str:
        return f"unknown or expired tether-agent {self.session_id!r}"


class UnknownFlowError(KeyError):
    def __str__(self) -> str:
        return f"unknown or expired agent flow {self.args[0]!r}"


def describe_workload(namespace: str, name: str, kind: str = "") -> str:
    return f"{kind} {namespace}/{name}" if kind else f"{namespace}/{name}"


def check_workload(namespace: str, name: str, kind: str) -> None:
    """Raise AgentError unless namespace/name/kind name a workload an agent can serve."""
    if len(namespace) > 63 or not _LABEL.fullmatch(namespace):
        raise AgentError(f'agent namespace "{namespace}" is not a valid DNS-1123 label')
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        raise AgentError(f'agent workload name "{name}" is not a valid DNS-1123 subdomain')
    if kind not in WORKLOAD_KINDS:
        raise AgentError(f'agent workload kind "{kind}" is not one of {", ".join(WORKLOAD_KINDS)}')


def claim_of(info: pb.AgentInfo) -> AgentClaim:
    """What an arriving agent claims to be; raises AgentError naming an invalid value."""
    workload = info.workload
    check_workload(workload.namespace, workload.name, workload.kind)
    if not info.pod_name:
        raise AgentError("an agent must give its pod name")
    pod_ip: IPAddress | None = None
    if info.pod_ip:
        if len(info.pod_ip) not in (4, 16):
            raise AgentError(f"agent pod IP must be 4 or 16 bytes, got {len(info.pod_ip)}")
        pod_ip = ipaddress.ip_address(info.pod_ip)
    return AgentClaim(workload.namespace, workload.name, workload.kind, info.pod_name, pod_ip)


@dataclass
class Agent:
    agent_id: str
    namespace: str
    workload: str
    kind: str
    pod_name: str
    pod_ip: IPAddress | None
    version: str
    dials: asyncio.Queue[pb.DialRequest | None] = field(default_factory=asyncio.Queue)
    watchers: int = 0
    flows: int = 0  # flows dialed through this agent, for logs and tests
    #: what the agent last reported (its ports, who intercepts them, its app's environment)
    report: pb.AgentReport | None = None

    @property
    def short(self) -> str:
        return f"{self.pod_name} ({self.agent_id[:8]})"

    @property
    def claim(self) -> AgentClaim:
        return AgentClaim(self.namespace, self.workload, self.kind, self.pod_name, self.pod_ip)

    def serves(self, namespace: str, name: str, kind: str) -> bool:
        return (self.namespace, self.workload) == (namespace, name) and kind in ("", self.kind)


class _Flow:
    """One client flow handed to an agent: waiting for the agent's stream, then spliced."""

    def __init__(self, flow_id: str, agent: Agent, spec: FlowSpec, to_client: StreamWriter) -> None:
        self.flow_id = flow_id
        self.agent = agent
        self.spec = spec
        self.to_client = to_client
        self.to_agent: StreamWriter | None = None
        loop = asyncio.get_running_loop()
        # Result: None once the agent's stream is attached; an exception when the agent cannot take it.
        self.attached: asyncio.Future[None] = loop.create_future()
        # Result: None when the agent ended the flow; else why the other side must be aborted.
        self.done: asyncio.Future[str | None] = loop.create_future()

    def finish(self, reason: str | None) -> None:
        if not self.done.done():
            self.done.set_result(reason)

    def describe(self) -> str:
        return f"{self.spec.describe()} via {self.agent.short}"


class AgentRegistry:
    """Live agents by workload, and the flows between clients and agents. Runs on one event loop."""

    def __init__(
        self,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = SessionTable(idle_timeout, clock)
        self._agents: dict[str, Agent] = {}
        self._flows: dict[str, _Flow] = {}
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}
        #: clients watching for intercepted connections to dial, by session id
        self._clients: dict[str, Agent] = {}
        #: lookups waiting for an agent's answer (LookupDNS with via, Agents.AnswerDNS)
        self.lookups = AgentLookups(self.pick, NO_AGENT)

    # --- agents ----------------------------------------------------------------------------------

    def arrive(self, info: pb.AgentInfo) -> Agent:
        claim = claim_of(info)
        session = self._sessions.arrive(info.pod_name, claim.namespace, info.version)
        agent = Agent(
            session.session_id, claim.namespace, claim.workload, claim.kind, claim.pod_name, claim.pod_ip, info.version
        )
        self._agents[agent.agent_id] = agent
        return agent

    def get(self, agent_id: str) -> Agent:
        try:
            self._sessions.get(agent_id)
        except UnknownSessionError:
            raise UnknownAgentError(agent_id) from None
        return self._agents[agent_id]

    def remain(self, agent_id: str) -> Agent:
        agent = self.get(agent_id)
        self._sessions.remain(agent_id)
        return agent

    def depart(self, agent_id: str) -> Agent | None:
        self._sessions.depart(agent_id)
        agent = self._agents.pop(agent_id, None)
        if agent is not None:
            self._removed(agent, "departed")
        return agent

    def expire(self) -> list[Agent]:
        expired = []
        for session in self._sessions.expire():
            agent = self._agents.pop(session.session_id, None)
            if agent is not None:
                self._removed(agent, "expired")
                expired.append(agent)
        return expired

    def _removed(self, agent: Agent, why: str) -> None:
        for _ in range(max(1, agent.watchers)):
            agent.dials.put_nowait(None)  # ends its WatchDials streams
        for flow in [f for f in self._flows.values() if f.agent is agent and not f.attached.done()]:
            flow.attached.set_exception(LookupError(f"tether-agent {agent.short} {why} before it took the flow"))

    def live(self, namespace: str, name: str, kind: str = "") -> list[Agent]:
        """Agents that serve the workload and are watching for dials now."""
        return [a for a in self._agents.values() if a.watchers > 0 and a.serves(namespace, name, kind)]

    def pick(self, namespace: str, name: str, kind: str = "") -> Agent | None:
        agents = self.live(namespace, name, kind)
        if not agents:
            return None
        turn = next(self._turns.setdefault((namespace, name), itertools.count()))
        return agents[turn % len(agents)]

    def __len__(self) -> int:
        return len(self._agents)

    @contextlib.contextmanager
    def watching(self, agent: Agent) -> Iterator[AsyncIterator[pb.DialRequest]]:
        """The agent's DialRequests as they come, ending when the agent is removed. The agent is live
        from entering this until leaving it, and is removed (it went away) when its last watch ends."""
        agent.watchers += 1
        try:
            yield self._dials(agent)
        finally:
            agent.watchers -= 1
            if agent.watchers == 0 and self._agents.get(agent.agent_id) is agent:
                log.info("tether-agent went away", extra=agent_fields(agent))
                self.depart(agent.agent_id)

    def agents(self) -> list[Agent]:
        """Every live agent (watching for dials)."""
        return [a for a in self._agents.values() if a.watchers > 0]

    def tell(self, namespace: str, name: str, intercepts: pb.AgentIntercepts) -> int:
        """Push the workload's intercepts to its live agents; returns how many were told."""
        agents = self.live(namespace, name)
        for agent in agents:
            agent.dials.put_nowait(pb.DialRequest(intercepts=intercepts))
        return len(agents)

    @contextlib.contextmanager
    def client_watching(self, session_id: str, name: str) -> Iterator[AsyncIterator[pb.DialRequest]]:
        """A client's intercepted connections to dial, as DialRequests, while it watches (one watch per
        session: a new one replaces the old, whose stream ends)."""
        old = self._clients.pop(session_id, None)
        if old is not None:
            self._removed(old, "watches again")
        client = Agent(session_id, "", name, "client", f"client {name}", None, "")
        client.watchers = 1
        self._clients[session_id] = client
        try:
            yield self._dials(client, self._clients)
        finally:
            if self._clients.get(session_id) is client:
                del self._clients[session_id]
                self._removed(client, "stopped watching")

    def client_dialer(self, session_id: str) -> Agent | None:
        return self._clients.get(session_id)

    async def _dials(self, agent: Agent, table: dict[str, Agent] | None = None) -> AsyncIterator[pb.DialRequest]:
        table = self._agents if table is None else table
        while table.get(agent.agent_id) is agent:
            request = await agent.dials.get()
            if request is None:
                return
            yield request

    # --- flows -----------------------------------------------------------------------------------

    async def splice(
        self, spec: FlowSpec, open_request: pb.TunnelOpen, client_messages: AsyncIterator[pb.TunnelMessage], send: Send
    ) -> None:
        """Run a client's ``via`` flow through one of the workload's agents; returns when the flow is over.

        ``client_messages`` is the rest of the client's Tunnel stream, ``send`` writes to it.
        """
        to_client = StreamWriter(send)
        try:
            await self._splice(spec, open_request, client_messages, to_client)
        finally:
            await to_client.drain()  # the client's stream ends when this returns: no write may be in progress

    async def _splice(
        self,
        spec: FlowSpec,
        open_request: pb.TunnelOpen,
        client_messages: AsyncIterator[pb.TunnelMessage],
        to_client: StreamWriter,
    ) -> None:
        assert spec.via is not None
        namespace, name, kind = spec.via
        agent = self.pick(namespace, name, kind)
        if agent is None:
            error = f"no tether-agent for workload {describe_workload(namespace, name, kind)}: {NO_AGENT}"
            log.info("dial %s rejected: %s", spec.describe(), error)
            await to_client(framing.dial_failed(pb.DialResult.UNREACHABLE, error))
            return
        await self._splice_to(agent, spec, open_request, client_messages, to_client)

    async def splice_to(
        self,
        dialer: Agent,
        spec: FlowSpec,
        open_request: pb.TunnelOpen,
        client_messages: AsyncIterator[pb.TunnelMessage],
        send: Send,
    ) -> None:
        """Run a flow through the given dialer (an agent, or a client watching for intercepted dials)."""
        to_client = StreamWriter(send)
        try:
            await self._splice_to(dialer, spec, open_request, client_messages, to_client)
        finally:
            await to_client.drain()

    async def _splice_to(
        self,
        agent: Agent,
        spec: FlowSpec,
        open_request: pb.TunnelOpen,
        client_messages: AsyncIterator[pb.TunnelMessage],
        to_client: StreamWriter,
    ) -> None:
        flow = _Flow(secrets.token_urlsafe(18), agent, spec, to_client)
        self._flows[flow.flow_id] = flow
        request = pb.TunnelOpen()
        request.CopyFrom(open_request)
        request.session_id = ""  # a client's session id lets its holder act as the client: agents never see it
        agent.flows += 1
        agent.dials.put_nowait(pb.DialRequest(flow_id=flow.flow_id, open=request))
        try:
            try:
                await asyncio.wait_for(asyncio.shield(flow.attached), spec.dial_timeout)
            except TimeoutError:
                waited = f"{spec.dial_timeout:g}s"
                error = f"dial {spec.describe()}: tether-agent {agent.short} did not take the flow in {waited}"
                await to_client(framing.dial_failed(pb.DialResult.TIMEOUT, error))
                return
            except LookupError as exc:
                await to_client(framing.dial_failed(pb.DialResult.UNREACHABLE, f"dial {spec.describe()}: {exc}"))
                return
            await self._client_side(flow, client_messages)
        finally:
            self._flows.pop(flow.flow_id, None)
            if not flow.done.done():
                flow.finish("the client went away")
            if not flow.attached.done():
                flow.attached.cancel()

    async def _client_side(self, flow: _Flow, client_messages: AsyncIterator[pb.TunnelMessage]) -> None:
        to_agent = flow.to_agent
        assert to_agent is not None

        agent_gone = f"tether-agent {flow.agent.short} went away"

        async def client_to_agent() -> None:
            last = ""
            async for message in client_messages:
                last = message.WhichOneof("kind") or ""
                if last not in _FROM_CLIENT:
                    raise framing.TunnelError(f"unexpected {last or 'empty'} message on an open flow")
                await _passing(to_agent, message, agent_gone)
            if last not in ("eof", "abort"):
                # What the manager's own dialer does when a client's stream ends without eof.
                await _passing(to_agent, framing.abort_message("the client closed the stream"), agent_gone)

        upward = asyncio.ensure_future(client_to_agent())
        try:
            await asyncio.wait([upward, flow.done], return_when=asyncio.FIRST_COMPLETED)
            if upward.done() and not flow.done.done():
                exc = upward.exception()
                if isinstance(exc, _PeerGoneError):
                    flow.finish(str(exc))
                elif exc is not None:  # a protocol error, or the client's stream broke
                    log.debug("flow %s: client side ended: %r", flow.describe(), exc)
                    flow.finish(str(exc) if isinstance(exc, framing.TunnelError) else "the client went away")
                # The client half-closed: the agent's side may still be sending; wait for it to end.
                await flow.done
            reason = flow.done.result()
            if reason is not None:
                with contextlib.suppress(Exception):
                    await flow.to_client(framing.abort_message(reason))
        finally:
            upward.cancel()

    async def attach(self, first: pb.AgentFlow, agent_messages: AsyncIterator[pb.TunnelMessage], send: Send) -> None:
        """Serve an agent's Agents.Tunnel stream for the flow ``first`` names; returns when the flow is over."""
        flow = self._flows.get(first.flow_id)
        if flow is None or flow.attached.done():
            raise UnknownFlowError(first.flow_id)
        if flow.agent.agent_id != first.agent_id:
            raise AgentError(f"agent flow {first.flow_id!r} was not given to tether-agent {first.agent_id!r}")
        to_agent = StreamWriter(send)
        flow.to_agent = to_agent
        flow.attached.set_result(None)

        async def agent_to_client() -> None:
            async for message in agent_messages:
                kind = message.WhichOneof("kind") or ""
                if kind not in _FROM_AGENT:
                    raise framing.TunnelError(f"unexpected {kind or 'empty'} message from an agent")
                await _passing(flow.to_client, message, "the client went away")

        downward = asyncio.ensure_future(agent_to_client())
        try:
            await asyncio.wait([downward, flow.done], return_when=asyncio.FIRST_COMPLETED)
            if downward.done():
                exc = downward.exception()
                if exc is None:
                    flow.finish(None)  # the agent ended the flow, as the manager's own Tunnel handler does
                elif isinstance(exc, _PeerGoneError):
                    flow.finish(str(exc))
                elif isinstance(exc, framing.TunnelError):
                    flow.finish(f"tether-agent {flow.agent.short} broke the protocol: {exc}")
                else:  # the agent's stream broke
                    log.debug("flow %s: agent side ended: %r", flow.describe(), exc)
                    flow.finish(f"tether-agent {flow.agent.short} went away")
            reason = flow.done.result()
            if reason is not None:
                with contextlib.suppress(Exception):
                    await to_agent(framing.abort_message(reason))
        finally:
            downward.cancel()
            # Reached by cancellation too: the agent's stream broke, i.e. the agent went away.
            flow.finish(f"tether-agent {flow.agent.short} went away")
            await to_agent.drain()


class _PeerGoneError(Exception):
    """Passing a message on failed: the other side of the splice is gone (the text says which)."""


async def _passing(write: StreamWriter, message: pb.TunnelMessage, gone: str) -> None:
    try:
        await write(message)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise _PeerGoneError(gone) from exc


def agent_fields(agent: Agent) -> dict[str, object]:
    return {
        "agent": agent.agent_id[:8],
        "workload": describe_workload(agent.namespace, agent.workload, agent.kind),
        "pod": agent.pod_name,
        "pod_ip": str(agent.pod_ip) if agent.pod_ip else "",
    }


async def expire_agents(agents: AgentRegistry, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for agent in agents.expire():
            log.info("tether-agent expired", extra=agent_fields(agent))
