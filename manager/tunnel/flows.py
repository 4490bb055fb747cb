"""Where a client's flow goes, whichever transport carries it (a gRPC Tunnel stream or a tunnel mux stream).

The first message must be a valid open from a live session that is below its cap of open flows (counted
over both carriers); then the flow is dialed by the manager (``dialer.run_flow``) or, with ``via``, by one of
the workload's tether-agents (``AgentRegistry.splice``). A UDP flow's idle timeout is the client's wish up to
the manager's maximum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

from tether.manager.agents import AgentError, AgentRegistry, UnknownFlowError
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.dialer import FastPath, run_flow
from tether.manager.api.framing import FlowSpec, TunnelError
from tether.manager.api.mux import MuxStream
from tether.manager.api.streamwriter import Send
from tether.manager.destinations import DestinationPolicy
from tether.manager.limits import KeyedLimit, LimitReachedError, ManagerLimits
from tether.manager.sessions import SessionTable, UnknownSessionError

log = logging.getLogger("tether.manager.server")


class FlowServer:
    def __init__(
        self,
        sessions: SessionTable,
        agents: AgentRegistry,
        limits: ManagerLimits | None = None,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self._agents = agents
        self.limits = limits or ManagerLimits()
        self.flows = KeyedLimit(self.limits.flows_per_session, "flows")
        self._warned: set[str] = set()  # sessions whose reaching the cap was logged (once, not per refused flow)
        self._destinations = destinations if destinations is not None else DestinationPolicy()

    async def serve(
        self,
        first: pb.TunnelMessage,
        incoming: AsyncIterator[pb.TunnelMessage],
        send: Send,
        session_id: str | None = None,
        fast: FastPath | None = None,
    ) -> None:
        """Run one flow; returns when it is over. ``session_id``: the flow's carrier belongs to that session;
        ``fast``: the carrier can also move bytes without a task switch (see ``dialer.FastPath``)."""
        if first.WhichOneof("kind") == "agent_flow":
            await self._answer(first.agent_flow, incoming, send, session_id)
            return
        try:
            spec = framing.parse_open(first)
            if session_id is not None and spec.session_id != session_id:
                raise TunnelError("the open names another session than its tunnel mux connection")
            self._sessions.get(spec.session_id)
            self.flows.acquire(spec.session_id, f"session {spec.session_id[:8]}")
        except (TunnelError, UnknownSessionError) as exc:
            await send(framing.dial_failed(pb.DialResult.INVALID, str(exc)))
            return
        except LimitReachedError as exc:
            if spec.session_id not in self._warned:
                self._warned.add(spec.session_id)
                log.warning("refusing flows: %s", exc, extra={"session": spec.session_id[:8]})
            await send(framing.dial_failed(pb.DialResult.INVALID, str(exc)))
            return
        try:
            await self._run(self._clamped(spec, first), first, incoming, send, fast)
        finally:
            self.flows.release(spec.session_id)
            if self.flows.held(spec.session_id) < self.flows.limit // 2:
                self._warned.discard(spec.session_id)

    async def _run(
        self,
        spec: FlowSpec,
        first: pb.TunnelMessage,
        incoming: AsyncIterator[pb.TunnelMessage],
        send: Send,
        fast: FastPath | None,
    ) -> None:
        if spec.via is not None:
            await self._agents.splice(spec, first.open, incoming, send)
            return
        refusal = self._destinations.refusal(spec.destination[0])
        if refusal is not None:
            log.warning("dial %s refused: %s", spec.describe(), refusal)
            await send(framing.dial_failed(pb.DialResult.REFUSED, refusal))
            return
        try:
            await run_flow(spec, incoming, send, fast)
        except TunnelError as exc:
            log.warning("tunnel %s broke the protocol: %s", spec.describe(), exc)
            with contextlib.suppress(Exception):
                await send(framing.abort_message(str(exc)))

    async def _answer(
        self, flow: pb.AgentFlow, incoming: AsyncIterator[pb.TunnelMessage], send: Send, session_id: str | None
    ) -> None:
        """A client's answer to an intercepted connection it was asked to dial (``WatchInterceptDials``): its
        stream is spliced to the agent's, as an agent's answer to a --proxy-via dial is to the client's."""
        try:
            if session_id is not None and flow.agent_id != session_id:
                raise TunnelError("the answer names another session than its tunnel mux connection")
            self._sessions.get(flow.agent_id)
            await self._agents.attach(flow, incoming, send)
        except (TunnelError, UnknownSessionError, UnknownFlowError, AgentError) as exc:
            log.info("intercept answer refused: %s", exc, extra={"session": flow.agent_id[:8]})
            with contextlib.suppress(Exception):
                await send(framing.abort_message(str(exc)))

    def _clamped(self, spec: FlowSpec, first: pb.TunnelMessage) -> FlowSpec:
        """The flow as the manager allows it: a UDP idle timeout no longer than its maximum (the open passed to
        an agent says the same)."""
        longest = self.limits.max_udp_idle_timeout
        if spec.idle_timeout <= longest:
            return spec
        first.open.idle_timeout_ms = int(longest * 1000)
        return dataclasses.replace(spec, idle_timeout=longest)

    async def serve_stream(self, first: pb.TunnelMessage, stream: MuxStream, session_id: str) -> None:
        """A tunnel mux stream's flow (``mux_server.FlowHandler``)."""
        if first.WhichOneof("kind") == "agent_flow":
            # An answer to an intercepted connection: the dial is done (on the client's machine), so the stream
            # gets its full window now, as a flow the manager dialed gets it with its dial answer.
            stream.grant_window()
        await self.serve(first, stream.messages(), stream.send, session_id, fast=stream)

    def check_session(self, session_id: str) -> None:
        """Raise UnknownSessionError unless the session is live (``mux_server.SessionCheck``)."""
        self._sessions.get(session_id)
