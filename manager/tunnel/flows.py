"""Where a client's flow goes, whichever transport carries it (a gRPC Tunnel stream or a tunnel mux stream).

The first message must be a valid open from a live session; then the flow is dialed by the manager
(``dialer.run_flow``) or, with ``via``, by one of the workload's tether-agents (``AgentRegistry.splice``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from tether.manager.agents import AgentRegistry
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.framing import TunnelError
from tether.manager.api.mux import MuxStream
from tether.manager.api.streamwriter import Send
from tether.manager.destinations import DestinationPolicy
from tether.manager.sessions import SessionTable, UnknownSessionError
from tether.manager.tunnel.dialer import FastPath, run_flow

log = logging.getLogger("tether.manager.server")


class FlowServer:
    def __init__(
        self, sessions: SessionTable, agents: AgentRegistry, destinations: DestinationPolicy | None = None
    ) -> None:
        self._sessions = sessions
        self._agents = agents
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
        try:
            spec = framing.parse_open(first)
            if session_id is not None and spec.session_id != session_id:
                raise TunnelError("the open names another session than its tunnel mux connection")
            self._sessions.get(spec.session_id)
        except (TunnelError, UnknownSessionError) as exc:
            await send(framing.dial_failed(pb.DialResult.INVALID, str(exc)))
            return
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

    async def serve_stream(self, first: pb.TunnelMessage, stream: MuxStream, session_id: str) -> None:
        """A tunnel mux stream's flow (``mux_server.FlowHandler``)."""
        await self.serve(first, stream.messages(), stream.send, session_id, fast=stream)

    def check_session(self, session_id: str) -> None:
        """Raise UnknownSessionError unless the session is live (``mux_server.SessionCheck``)."""
        self._sessions.get(session_id)
