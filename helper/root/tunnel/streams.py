"""What carries one flow to the manager: a tunnel mux stream, or (fallback) a gRPC ``Manager.Tunnel`` stream.

The VIF's flow bridge sees only :class:`TunnelStream`: send the open and get the first answer, then read
(``bytes`` for data, a TunnelMessage for the rest, None once the manager ended the stream), write data and
eof, close. Either way the manager runs the same flow code; failures of the carrier are ConnectionErrors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from tether.helper.root.tunnel.mux_client import MuxClient
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.mux import MuxStream

_EOF_MESSAGE = framing.eof_message()


class TunnelBrokenError(ConnectionError):
    """The stream's carrier failed (a gRPC error, a lost connection); the text says how."""


class TunnelStream(Protocol):
    def start(self, request: pb.TunnelMessage, early: Callable[[pb.TunnelMessage], None] | None = None) -> None:
        """Begin the flow: its open goes out now if the carrier can send without waiting, else in first_reply.
        ``early``, if the carrier can, is shown the manager's first answer the moment it arrives (before
        first_reply returns it), for what must not wait for a task switch."""

    async def first_reply(self) -> pb.TunnelMessage | None:
        """The manager's first answer to the open (None: it ended the stream without one)."""

    async def read(self) -> bytes | pb.TunnelMessage | None:
        """Data as bytes, any other message as it is; None once the manager has ended the stream."""

    async def write_data(self, data: bytes) -> None:
        """At most ``framing.MAX_CHUNK`` bytes (TCP), or one datagram (UDP)."""

    async def write_eof(self) -> None: ...

    def try_write_data(self, data: bytes) -> bool:
        """Write at once, without waiting, if the carrier can (any size); False: nothing written, use write_data."""

    def try_write_eof(self) -> bool:
        """Write the eof at once if the carrier can; False: use write_eof."""

    def set_sink(self, sink: Callable[[bytes], int]) -> None:
        """From now on, data may be handed to ``sink`` as it arrives while ``read`` waits; the sink returns how
        many bytes it took, the rest comes from ``read``. A carrier that cannot does nothing."""

    def close(self) -> None:
        """Done with the stream: if the manager has not ended it, it is cancelled."""


class MuxTunnelStream:
    """A flow on the tunnel mux."""

    __slots__ = ("_stream",)

    def __init__(self, stream: MuxStream) -> None:
        self._stream = stream

    def start(self, request: pb.TunnelMessage, early: Callable[[pb.TunnelMessage], None] | None = None) -> None:
        self._stream.first_message_hook = early
        self._stream.send_message_now(request)  # no round trip of its own: the manager dials on this frame

    async def first_reply(self) -> pb.TunnelMessage | None:
        first = await self._stream.read()
        return pb.TunnelMessage(data=first) if type(first) is bytes else first

    def read(self) -> Any:  # the stream's own coroutine: no wrapper on the hot path
        return self._stream.read()

    def write_data(self, data: bytes) -> Any:
        return self._stream.send_data(data)

    async def write_eof(self) -> None:
        await self._stream.send_message(_EOF_MESSAGE)

    def try_write_data(self, data: bytes) -> bool:
        return self._stream.try_send_data(data)

    def try_write_eof(self) -> bool:
        if self._stream.closed:
            return False  # write_eof raises what ended the stream
        self._stream.send_message_now(_EOF_MESSAGE)
        return True

    def set_sink(self, sink: Callable[[bytes], int]) -> None:
        self._stream.sink = sink

    def close(self) -> None:
        self._stream.sink = None
        self._stream.finish("the client ended the flow")


class GrpcTunnelStream:
    """A flow on a ``Manager.Tunnel`` call of its own (one opened ahead when there is one)."""

    __slots__ = ("_call", "_opener", "_request")

    def __init__(self, opener: TunnelOpener) -> None:
        self._opener = opener
        self._call: grpc.aio.StreamStreamCall | None = None
        self._request: pb.TunnelMessage | None = None

    def start(self, request: pb.TunnelMessage, early: Callable[[pb.TunnelMessage], None] | None = None) -> None:
        self._request = request  # a gRPC write is awaited: it goes out in first_reply (and early is not called)

    async def first_reply(self) -> pb.TunnelMessage | None:
        opener, request = self._opener, self._request
        assert request is not None, "start() first"
        self._call, ahead = opener.tunnel()
        try:
            try:
                await self._call.write(request)
                first = await self._call.read()
                if ahead and first is grpc.aio.EOF:
                    raise ConnectionError("the stream opened ahead was closed")
            except (grpc.aio.AioRpcError, ConnectionError):
                if not ahead or not opener.ready():
                    raise
                # The stream opened ahead died with its connection, or the manager let it go: once more, anew.
                self._call.cancel()
                self._call = opener.stub.Tunnel()
                await self._call.write(request)
                first = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise _broken(exc) from None
        opener.prepare()
        return None if first is grpc.aio.EOF else first

    async def read(self) -> bytes | pb.TunnelMessage | None:
        assert self._call is not None
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise _broken(exc) from None
        if message is grpc.aio.EOF:
            return None
        return message.data if message.WhichOneof("kind") == "data" else message

    async def write_data(self, data: bytes) -> None:
        await self._write(framing.data_message(data))

    async def write_eof(self) -> None:
        await self._write(_EOF_MESSAGE)

    def try_write_data(self, data: bytes) -> bool:
        return False  # a gRPC write is always awaited

    def try_write_eof(self) -> bool:
        return False

    def set_sink(self, sink: Callable[[bytes], int]) -> None:
        pass

    async def _write(self, message: pb.TunnelMessage) -> None:
        assert self._call is not None
        try:
            await self._call.write(message)
        except grpc.aio.AioRpcError as exc:
            raise _broken(exc) from None

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()


def _broken(exc: grpc.aio.AioRpcError) -> TunnelBrokenError:
    return TunnelBrokenError(f"{exc.code().name}: {exc.details()}")


class TunnelOpener:
    """Where flows' streams come from: the tunnel mux when there is one, else gRPC Tunnel streams on the
    manager stub with the current session (all of which change on reconnect).

    Without the mux, one Tunnel stream is kept opened ahead (its headers sent, the manager's handler waiting
    for the Open), so a new connection's dial does not also wait for a stream to be set up at both ends: the
    next one is opened once the current flow has its dial answer, off the new connection's path. A mux
    stream costs no round trip of its own.
    """

    def __init__(self) -> None:
        self.stub: Any = None
        self.session_id = ""
        self._mux: MuxClient | None = None
        self._after_receive: Callable[[], None] | None = None
        self.dial_timeout = 5.0
        self.open_ahead = True
        self._spare: tuple[Any, grpc.aio.StreamStreamCall] | None = None  # (stub, call) opened ahead on that stub
        self.opened: Counter[str] = Counter()  # flows per carrier ("mux", "grpc"), for logs and tests

    def ready(self) -> bool:
        return self.stub is not None and bool(self.session_id)

    @property
    def mux(self) -> MuxClient | None:
        return self._mux

    @mux.setter
    def mux(self, mux: MuxClient | None) -> None:
        self._mux = mux
        if mux is not None:
            mux.after_receive = self._after_receive

    def set_after_receive(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the mux has handed on what it read (the VIF then writes what the streams'
        sinks gave the netstack, in the same turn of the loop)."""
        self._after_receive = callback
        if self._mux is not None:
            self._mux.after_receive = callback

    def flush(self) -> None:
        """Send what flows wrote to the mux now (the end of a batch of packets from the TUN)."""
        if self._mux is not None:
            self._mux.flush()

    def stream(self) -> TunnelStream:
        """The carrier of a new flow: a mux stream while the mux is up, else a gRPC Tunnel stream."""
        mux = self.mux
        if mux is not None and mux.usable:
            self.opened["mux"] += 1
            return MuxTunnelStream(mux.open_stream())
        self.opened["grpc"] += 1
        return GrpcTunnelStream(self)

    def tunnel(self) -> tuple[grpc.aio.StreamStreamCall, bool]:
        """A Tunnel stream for a new flow, and whether it was opened ahead (and so may have died meanwhile)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            stub, call = spare
            if stub is self.stub and not call.done():
                return call, True
            call.cancel()
        return self.stub.Tunnel(), False

    def prepare(self) -> None:
        """Open the next flow's stream ahead, if there is none (and the session is up, without a mux)."""
        if self.open_ahead and self._spare is None and self.ready() and not (self.mux and self.mux.usable):
            self._spare = (self.stub, self.stub.Tunnel())

    def discard(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare[1].cancel()
