"""The manager's end of the tunnel mux: check a client's hello, run each stream's flow like a Tunnel stream.

Bounded per caller: a session may hold a few connections, a connection at most ``max_streams`` streams (the
session's flow cap: streams beyond it are reset without running anything), and a new stream gets only the
initial window until its dial answer (``mux``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tether.manager.api import manager_pb2 as pb
from tether.manager.api import muxframe as mf
from tether.manager.api.mux import IDLE_TIMEOUT, MAX_STREAMS, PING_INTERVAL, MuxConnection, MuxStream, parse_message
from tether.manager.api.muxframe import MuxProtocolError
from tether.manager.limits import KeyedLimit, LimitReachedError, ManagerLimits

log = logging.getLogger("tether.manager.api.mux")

# (session id) -> None, or raise (a KeyError, e.g. UnknownSessionError) naming why the session is not usable.
SessionCheck = Callable[[str], object]
# (first message, the rest as TunnelMessages, send, the connection's session id): one flow, as Manager.Tunnel runs it.
FlowHandler = Callable[[pb.TunnelMessage, MuxStream, str], Awaitable[None]]
# (session id) -> None, or raise LimitReachedError: may the session have one more connection?
Admit = Callable[[str], None]


class MuxServerConnection(MuxConnection):
    role = "client"  # whom the logs are about: the manager's peer

    def __init__(
        self,
        check_session: SessionCheck,
        handler: FlowHandler,
        ping_interval: float = PING_INTERVAL,
        idle_timeout: float = IDLE_TIMEOUT,
        max_streams: int = MAX_STREAMS,
        admit: Admit | None = None,
    ) -> None:
        super().__init__(ping_interval, idle_timeout)
        self._check_session = check_session
        self._handler = handler
        self._max_streams = max_streams
        self._admit = admit
        self.session_id = ""
        self.streams_refused = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        log.debug("tunnel mux connection from %s", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.session_id:
            log.info(
                "tunnel mux connection ended",
                extra={
                    "session": self.session_id[:8],
                    "peer": self.peer,
                    "streams": self.streams_opened,
                    "refused": self.streams_refused,
                },
            )

    def on_hello(self, payload: bytes) -> None:
        if self.session_id:
            raise MuxProtocolError("a second HELLO")
        version, session_id = mf.parse_hello(payload)
        if version != mf.VERSION:
            self._refuse(f"tunnel mux version {version} is not supported; this manager speaks {mf.VERSION}")
            return
        try:
            self._check_session(session_id)
            if self._admit is not None:
                self._admit(session_id)
        except (KeyError, LimitReachedError) as exc:
            self._refuse(str(exc))
            return
        self.session_id = session_id
        self.write(mf.welcome())
        log.info("tunnel mux connected", extra={"session": session_id[:8], "peer": self.peer})

    def _refuse(self, reason: str) -> None:
        log.warning("tunnel mux connection from %s refused: %s", self.peer, reason)
        self.close(reason)

    def on_unknown_stream(self, stream_id: int, ftype: int, payload: bytes) -> None:
        if not self.session_id:
            raise MuxProtocolError(f"a {mf.FrameType(ftype).name} frame before the HELLO")
        if stream_id <= self.last_stream_id:
            return  # a stream that has ended here; the client had not heard yet
        if ftype != mf.MESSAGE:
            raise MuxProtocolError(f"a {mf.FrameType(ftype).name} frame for stream {stream_id}, never opened")
        first = parse_message(payload)
        stream = MuxStream(self, stream_id, window=mf.INITIAL_WINDOW)  # the rest comes with the dial answer
        self.add(stream)
        if len(self.streams) > self._max_streams:
            if not self.streams_refused:
                log.warning(
                    "tunnel mux %s has more than %d streams open; resetting new ones",
                    self.peer,
                    self._max_streams,
                    extra={"session": self.session_id[:8]},
                )
            self.streams_refused += 1
            stream.reset(f"more than {self._max_streams} streams at once")
            return
        stream.task = self.loop.create_task(self._serve(stream, first))

    async def _serve(self, stream: MuxStream, first: pb.TunnelMessage) -> None:
        try:
            await self._handler(first, stream, self.session_id)
        except asyncio.CancelledError:
            pass  # the client reset the stream, or the connection ended
        except Exception:
            log.exception("tunnel mux stream %d failed", stream.id)
            stream.reset("the manager failed to run the flow")
        finally:
            stream.end()

    def on_reset(self, stream: MuxStream) -> None:
        # As gRPC cancels a handler whose client cancelled its call.
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()


class MuxListener:
    """Accepts tunnel mux connections on one TCP port; ``close`` says goodbye to every client."""

    def __init__(
        self,
        check_session: SessionCheck,
        handler: FlowHandler,
        ping_interval: float = PING_INTERVAL,
        idle_timeout: float = IDLE_TIMEOUT,
        limits: ManagerLimits | None = None,
    ) -> None:
        self._check_session = check_session
        self._handler = handler
        self._ping_interval = ping_interval
        self._idle_timeout = idle_timeout
        self._limits = limits or ManagerLimits()
        self._per_session = KeyedLimit(self._limits.mux_connections_per_session, "tunnel mux connections")
        self.connections: set[MuxServerConnection] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with port 0). OSError when the port cannot be had."""
        self._server = await asyncio.get_running_loop().create_server(self._connection, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _connection(self) -> MuxServerConnection:
        connection = MuxServerConnection(
            self._check_session,
            self._handler,
            self._ping_interval,
            self._idle_timeout,
            max_streams=self._limits.flows_per_session,
            admit=lambda session_id: self._per_session.acquire(session_id, f"session {session_id[:8]}"),
        )
        self.connections.add(connection)
        connection.closed.add_done_callback(lambda _: self._ended(connection))
        return connection

    def _ended(self, connection: MuxServerConnection) -> None:
        self.connections.discard(connection)
        if connection.session_id:  # set only once admitted
            self._per_session.release(connection.session_id)

    def close(self, reason: str = "the traffic-manager is stopping") -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close(reason)
