"""What carries one flow to the manager: a tunnel mux stream, or (fallback) a gRPC ``Manager.Tunnel`` stream.

The VIF sees only its own stream interface (``vif.flowstream``): :class:`TunnelOpener` is its stream creator
and carrier, and the streams here map its typed events onto the manager's tunnel messages: the open
(``framing.open_message``) goes out when the stream is opened, the manager's DialResult becomes OPENED or a
Refused, eof and abort messages become EOF and Aborted, the end of the stream ENDED. Data stays bytes both
ways. Either way the manager runs the same flow code; failures of the carrier are ConnectionErrors.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tether.helper.root.tunnel.mux_client import MuxClient
from tether.helper.root.vif.flowstream import (
    ENDED,
    EOF,
    OPENED,
    Aborted,
    DialFailure,
    Endpoint,
    FlowProtocol,
    IPAddress,
    Opened,
    Refused,
    StreamEvent,
    StreamRefusedError,
)
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.mux import MuxStream
from tether.manager.api.muxframe import MAX_DATA

log = logging.getLogger("tether.helper.root.tunnel")

_EOF_MESSAGE = framing.eof_message()
_PROTOCOLS = {FlowProtocol.TCP: framing.Protocol.TCP, FlowProtocol.UDP: framing.Protocol.UDP}
_FAILURES = {
    pb.DialResult.REFUSED: DialFailure.REFUSED,
    pb.DialResult.UNREACHABLE: DialFailure.UNREACHABLE,
    pb.DialResult.TIMEOUT: DialFailure.TIMEOUT,
}
_NO_ANSWER = Refused(DialFailure.UNREACHABLE, "the manager ended the stream without a dial answer")

# Optional hook (--proxy-via): (destination ip, port) -> (ip, port, via) to open the tunnel to, or None to keep
# the destination. ``via`` is (namespace, name, kind) of the workload whose agent dials, or None (the manager).
# Raising LookupError refuses the flow as unreachable (a virtual IP nobody handed out). The app's side of the
# flow keeps the original addresses: the netstack terminates it locally.
DestinationMapper = Callable[[IPAddress, int], tuple[IPAddress, int, tuple[str, str, str] | None] | None]


class TunnelBrokenError(ConnectionError):
    """The stream's carrier failed (a gRPC error, a lost connection); the text says how."""


def _refused(dial: pb.DialResult) -> Refused:
    # Reasons this client does not know (NONE, INVALID, newer ones) refuse: the app hears "connection refused".
    return Refused(_FAILURES.get(dial.reason, DialFailure.INVALID), dial.error)


def _first_event(message: pb.TunnelMessage | None) -> Opened | Refused:
    """The manager's answer to the open; anything but a DialResult means it ended the flow without one."""
    if message is None or message.WhichOneof("kind") != "dial":
        return _NO_ANSWER
    return OPENED if message.dial.ok else _refused(message.dial)


def _event(message: pb.TunnelMessage) -> StreamEvent | None:
    """A message after the dial answer as a flow event; None for one a flow ignores."""
    kind = message.WhichOneof("kind")
    if kind == "eof":
        return EOF
    if kind == "abort":
        return Aborted(message.abort)
    if kind == "dial" and not message.dial.ok:
        return _refused(message.dial)  # a UDP destination answered ICMP unreachable after the fact
    return None


class MuxTunnelStream:
    """A flow on the tunnel mux."""

    __slots__ = ("_on_opened", "_stream")

    def __init__(self, stream: MuxStream) -> None:
        self._stream = stream
        self._on_opened: Callable[[], None] | None = None

    def start(self, request: pb.TunnelMessage) -> None:
        self._stream.send_message_now(request)  # no round trip of its own: the manager dials on this frame

    def on_opened(self, callback: Callable[[], None]) -> None:
        self._on_opened = callback
        self._stream.first_message_hook = self._first_message

    def _first_message(self, message: pb.TunnelMessage) -> None:
        # Called by the mux as the answer arrives (the mux's after-receive hook then has the engine write).
        if self._on_opened is not None and message.WhichOneof("kind") == "dial" and message.dial.ok:
            self._on_opened()

    async def opened(self) -> Opened | Refused:
        first = await self._stream.read()
        return _NO_ANSWER if type(first) is bytes else _first_event(first)

    async def read(self) -> bytes | StreamEvent:
        # A coroutine of its own around the mux stream's read: what the flow's sink takes as it arrives (the
        # latency path) never comes through here, only data that had to wait for room, and messages.
        while True:
            item = await self._stream.read()
            if type(item) is bytes:
                return item
            if item is None:
                return ENDED
            event = _event(item)
            if event is not None:
                return event

    def write(self, data: bytes) -> Awaitable[None]:  # the stream's own coroutine when one frame will do
        if len(data) <= MAX_DATA:
            return self._stream.send_data(data)
        return self._write_frames(data)

    async def _write_frames(self, data: bytes) -> None:
        for piece in framing.chunks(data, MAX_DATA):
            await self._stream.send_data(piece)

    async def write_eof(self) -> None:
        await self._stream.send_message(_EOF_MESSAGE)

    def try_write(self, data: bytes) -> bool:
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
        self._stream.first_message_hook = None
        self._on_opened = None
        self._stream.finish("the client ended the flow")


class GrpcTunnelStream:
    """A flow on a ``Manager.Tunnel`` call of its own (one opened ahead when there is one)."""

    __slots__ = ("_call", "_opener", "_request")

    def __init__(self, opener: TunnelOpener) -> None:
        self._opener = opener
        self._call: grpc.aio.StreamStreamCall | None = None
        self._request: pb.TunnelMessage | None = None

    def start(self, request: pb.TunnelMessage) -> None:
        self._request = request  # a gRPC write is awaited: it goes out in opened()

    def on_opened(self, callback: Callable[[], None]) -> None:
        pass  # the answer is read by opened() itself

    async def opened(self) -> Opened | Refused:
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
        return _first_event(None if first is grpc.aio.EOF else first)

    async def read(self) -> bytes | StreamEvent:
        assert self._call is not None
        while True:
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                raise _broken(exc) from None
            if message is grpc.aio.EOF:
                return ENDED
            if message.WhichOneof("kind") == "data":
                return message.data
            event = _event(message)
            if event is not None:
                return event

    async def write(self, data: bytes) -> None:
        for piece in framing.chunks(data):
            await self._write(framing.data_message(piece))

    async def write_eof(self) -> None:
        await self._write(_EOF_MESSAGE)

    def try_write(self, data: bytes) -> bool:
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
    """The VIF's stream creator (``open``) and carrier: the tunnel mux when there is one, else gRPC Tunnel
    streams on the manager stub with the current session (all of which change on reconnect).

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
        self.map_destination: DestinationMapper | None = None  # --proxy-via: VIPs to real destinations
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

    def open(
        self, protocol: FlowProtocol, source: Endpoint, destination: Endpoint
    ) -> MuxTunnelStream | GrpcTunnelStream:
        """The stream for a new flow, its open sent at once on the mux (on gRPC, when it is first awaited)."""
        if not self.ready():
            raise StreamRefusedError(DialFailure.UNREACHABLE, "no session with the traffic-manager")
        via = None
        if self.map_destination is not None:
            try:
                mapped = self.map_destination(*destination)
            except LookupError as exc:
                raise StreamRefusedError(DialFailure.UNREACHABLE, str(exc)) from None
            if mapped is not None:
                destination, via = (mapped[0], mapped[1]), mapped[2]
        return self.open_via(protocol, source, destination, via)

    def open_via(
        self, protocol: FlowProtocol, source: Endpoint, destination: Endpoint, via: tuple[str, str, str] | None
    ) -> MuxTunnelStream | GrpcTunnelStream:
        """A stream to ``destination`` dialed by the agent of ``via`` (namespace, name, kind), from inside its
        pod (loopback included), or by the manager when None; the open is sent as in :meth:`open`."""
        if not self.ready():
            raise StreamRefusedError(DialFailure.UNREACHABLE, "no session with the traffic-manager")
        request = framing.open_message(
            self.session_id, _PROTOCOLS[protocol], destination, source, dial_timeout=self.dial_timeout, via=via
        )
        stream = self._stream()
        try:
            stream.start(request)
        except BaseException:
            stream.close()
            raise
        return stream

    def _stream(self) -> MuxTunnelStream | GrpcTunnelStream:
        """The carrier of a new flow: a mux stream while the mux is up, else a gRPC Tunnel stream."""
        mux = self.mux
        if mux is not None and mux.usable:
            self.opened["mux"] += 1
            return MuxTunnelStream(mux.open_stream())
        self.opened["grpc"] += 1
        return GrpcTunnelStream(self)

    # --- the carrier's side of the engine (vif.flowstream.Carrier) ---

    def flush(self) -> None:
        """Send what flows wrote to the mux now (the end of a batch of packets from the TUN)."""
        if self._mux is not None:
            self._mux.flush()

    def set_after_receive(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the mux has handed on what it read (the VIF then writes what the streams'
        sinks gave the netstack, in the same turn of the loop)."""
        self._after_receive = callback
        if self._mux is not None:
            self._mux.after_receive = callback

    def close(self) -> None:
        """The VIF has stopped: let the stream opened ahead go, and say how the flows were carried."""
        self.discard()
        log.info(
            "tunnel flows: %d on the tunnel mux, %d on gRPC Tunnel streams", self.opened["mux"], self.opened["grpc"]
        )

    # --- gRPC streams opened ahead ---

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
