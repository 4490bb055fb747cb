"""A tunnel mux connection: many flows (streams) on one transport, with per-stream credit and keep-alive.

Both ends share this; the manager serves it (``mux_server``), the helper opens it (``helper/tunnel/mux_client``).
It is an asyncio Protocol: what arrives is decoded in ``data_received`` and handed to its stream there and
then (no task or queue per byte); what is sent in one turn of the event loop is gathered and written once at
its end, so frames of many streams (or a flow's eof and end, data and window updates) share a system call:
on the paths through the API server a send costs far more than the bytes it carries.

Limits hold whatever the peer does: frames are checked by ``muxframe``, a stream's DATA beyond the credit
it was given, more queued messages than a flow ever needs, more bytes held for streams whose flow is not open
yet than a client ever sends, frames for streams never opened all end the connection with a logged reason (a
GOAWAY tells the peer). A stream that was closed here ignores late frames.

Credit before the dial: the side that accepts streams (the manager) gives a new stream only
``muxframe.INITIAL_WINDOW`` and grants the rest of ``STREAM_WINDOW`` with its dial answer, so a peer that opens
streams it never means to use cannot make the manager hold a full window for each.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import AsyncIterator, Callable

from google.protobuf.message import DecodeError

from tether.manager.api import manager_pb2 as pb
from tether.manager.api import muxframe as mf
from tether.manager.api.muxframe import MuxProtocolError

log = logging.getLogger("tether.manager.api.mux")

PING_INTERVAL = 10.0
IDLE_TIMEOUT = 30.0
# Streams open at once on one connection; the netstack's flow tables hold fewer.
MAX_STREAMS = 100_000
# MESSAGE frames waiting unread on one stream: a flow sends a handful (open, dial, eof, abort) in its life.
MAX_QUEUED_MESSAGES = 16
# Their bytes: eof and abort are small, so a stream never needs more than one largest message's worth.
MAX_QUEUED_MESSAGE_BYTES = mf.MAX_MESSAGE
# Bytes (DATA and MESSAGE) one connection may hold for streams whose full window is not granted yet: a client
# sends nothing but its open before the dial answer, this allows a first batch on many streams at once.
MAX_HELD_BEFORE_OPEN = 4 * 1024 * 1024
# Gathered frames are written once this much is waiting, without waiting for the loop's turn to end.
FLUSH_AT = 256 * 1024

Item = pb.TunnelMessage | bytes


class MuxStreamError(ConnectionError):
    """The stream ended abnormally: the peer reset it, or the connection is gone."""


class MuxStream:
    """One flow on a mux connection.

    Receiving: ``read()`` returns the next TunnelMessage, or ``bytes`` for DATA, or None once the peer ended
    the stream; taking DATA returns its credit to the peer. A ``sink`` may take DATA the moment it arrives
    instead, while nothing is queued before it. Sending: ``send_data`` waits for credit (``try_send_data``
    sends only if it need not wait), messages need none. ``end()`` (done, cleanly), ``reset()`` (abnormally)
    and ``finish()`` (a reset unless the peer has ended) finish the stream on this side; after that, late
    frames from the peer are ignored.
    """

    __slots__ = (
        "_credit_waiters", "_ended", "_error", "_held", "_inbox", "_message_bytes", "_messages", "_outstanding",
        "_to_grant", "_waiter", "_window", "closed", "conn", "credit", "first_message_hook", "id", "sink", "task",
    )  # fmt: skip

    def __init__(
        self, conn: MuxConnection, stream_id: int, credit: int = mf.STREAM_WINDOW, window: int = mf.STREAM_WINDOW
    ) -> None:
        """``credit``: what the peer lets us send before its first WINDOW frame; ``window``: what we let it send
        (the opener of a stream starts with ``INITIAL_WINDOW`` credit, the acceptor with that window)."""
        self.conn = conn
        self.id = stream_id
        self._inbox: collections.deque[Item] = collections.deque()
        self._messages = 0
        self._message_bytes = 0
        self._window = window  # DATA bytes the peer may have in flight
        # Bytes queued here while the window is not fully granted (they count against the connection's limit).
        self._held = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._error: MuxStreamError | None = None
        self.credit = credit  # DATA bytes we may still send
        self._credit_waiters: list[asyncio.Future[None]] = []
        self._outstanding = 0  # DATA bytes the peer sent that we have not yet returned as credit
        self._to_grant = 0  # bytes handed on since our last WINDOW frame
        self.closed = False  # we sent END or RESET, or the stream failed
        self.task: asyncio.Task[None] | None = None  # the server's flow handler
        # Takes DATA as it arrives, while nothing is queued and the reader waits: returns how many bytes it took
        # (the rest is queued for ``read``). Saves a task switch per read on the latency path.
        self.sink: Callable[[bytes], int] | None = None
        # Shown the first message as it arrives (it is also queued for ``read``): a dial answer acted on at once.
        self.first_message_hook: Callable[[pb.TunnelMessage], None] | None = None

    def __repr__(self) -> str:
        return f"<mux stream {self.id}{' closed' if self.closed else ''}>"

    @property
    def queued(self) -> int:
        """Bytes received and not yet read: DATA, and messages as serialized (limits, tests)."""
        return self._outstanding + self._message_bytes

    # --- frames from the peer (called by the connection) ---

    def _on_data(self, payload: bytes) -> None:
        outstanding = self._outstanding + len(payload)
        if outstanding > self._window:
            raise MuxProtocolError(f"stream {self.id} sent {outstanding} bytes beyond its window of {self._window}")
        self._outstanding = outstanding
        sink = self.sink
        if sink is not None and self._waiter is not None and not self._inbox:
            taken = sink(payload)
            if taken:
                self._returned(taken)
                if taken == len(payload):
                    return
                payload = payload[taken:]
        if self._window < mf.STREAM_WINDOW:
            self._hold(len(payload))
        self._inbox.append(payload)
        self._wake()

    def _on_message(self, message: pb.TunnelMessage) -> None:
        size = message.ByteSize()  # as counted again when it is read
        if self._messages >= MAX_QUEUED_MESSAGES:
            raise MuxProtocolError(f"stream {self.id} has {self._messages} messages waiting unread")
        if self._message_bytes + size > MAX_QUEUED_MESSAGE_BYTES:
            raise MuxProtocolError(f"stream {self.id} has {self._message_bytes + size} bytes of messages waiting")
        self._messages += 1
        self._message_bytes += size
        if self._window < mf.STREAM_WINDOW:
            self._hold(size)
        self._inbox.append(message)
        self._wake()
        hook = self.first_message_hook
        if hook is not None:
            self.first_message_hook = None
            hook(message)

    def _hold(self, size: int) -> None:
        self._held += size
        self.conn.held_before_open += size
        if self.conn.held_before_open > MAX_HELD_BEFORE_OPEN:
            raise MuxProtocolError(
                f"{self.conn.held_before_open} bytes sent on streams whose flow is not open yet "
                f"(at most {MAX_HELD_BEFORE_OPEN})"
            )

    def _release(self, size: int) -> None:
        size = min(size, self._held)
        self._held -= size
        self.conn.held_before_open -= size

    def grant_window(self) -> None:
        """The flow is open: let the peer have the full window (a no-op once it has)."""
        increment = mf.STREAM_WINDOW - self._window
        if increment > 0:
            self._window = mf.STREAM_WINDOW
            self._release(self._held)  # what waits now is an open flow's, bounded by its window
            if not self.closed:
                self.conn.write(mf.window(self.id, increment))

    def _on_window(self, increment: int) -> None:
        credit = self.credit + increment
        if credit > mf.MAX_CREDIT:
            raise MuxProtocolError(f"stream {self.id} was given {credit} bytes of credit")
        self.credit = credit
        self._wake_senders()

    def _on_end(self) -> None:
        self._ended = True
        self._wake()

    def fail(self, error: MuxStreamError) -> None:
        """The stream is over without a clean end (reset by the peer, connection lost): wake everyone with it."""
        if self._error is None:
            self._error = error
        self.closed = True
        self._inbox.clear()
        self._release(self._held)
        self._wake()
        self._wake_senders()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_senders(self) -> None:
        waiters, self._credit_waiters = self._credit_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- the flow's side ---

    async def read(self) -> Item | None:
        inbox = self._inbox
        while not inbox:
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            self._waiter = self.conn.loop.create_future()
            await self._waiter
        if self._error is not None:
            raise self._error
        item = inbox.popleft()
        if type(item) is bytes:
            self._release(len(item))
            self._returned(len(item))
        else:
            self._messages -= 1
            size = item.ByteSize()
            self._message_bytes -= size
            self._release(size)
        return item

    def _returned(self, size: int) -> None:
        self._outstanding -= size
        grant = self._to_grant + size
        # Batched: a request/response flow returns nothing until it has moved a quarter window. A sender stuck
        # for credit means more than three quarters are out, so over half sits in our inbox and will be taken.
        if grant >= mf.WINDOW_UPDATE_STEP and not self.closed:
            self._to_grant = 0
            self.conn.write(mf.window(self.id, grant))
        else:
            self._to_grant = grant

    async def messages(self) -> AsyncIterator[pb.TunnelMessage]:
        """What the peer sends, as TunnelMessages (DATA as data messages), ending when the peer ends."""
        while (item := await self.read()) is not None:
            yield pb.TunnelMessage(data=item) if type(item) is bytes else item

    async def send_data(self, data: bytes) -> None:
        """Send DATA (at most ``muxframe.MAX_DATA`` bytes) once the peer has given credit for it."""
        size = len(data)
        while self.credit < size or self.conn.paused:
            if self.closed:
                break
            if self.conn.paused:
                await self.conn.drain()
                continue
            waiter = self.conn.loop.create_future()
            self._credit_waiters.append(waiter)
            await waiter
        if self.closed:
            raise self._error or MuxStreamError(f"stream {self.id} is closed")
        self.credit -= size
        self.conn.write_data(self.id, data)

    def try_send_data(self, data: bytes) -> bool:
        """Send at once if the credit and the connection allow (False: nothing was sent; use ``send_data``).
        More than ``muxframe.MAX_DATA`` goes as several frames."""
        size = len(data)
        if self.closed or self.credit < size or self.conn.paused:
            return False
        self.credit -= size
        if size <= mf.MAX_DATA:
            self.conn.write_data(self.id, data)
        else:
            view = memoryview(data)
            for start in range(0, size, mf.MAX_DATA):
                self.conn.write_data(self.id, view[start : start + mf.MAX_DATA])
        return True

    def flush(self) -> None:
        """Send what was written on this stream (and the rest of the connection's outbox) now."""
        self.conn.flush()

    async def send_message(self, message: pb.TunnelMessage) -> None:
        if self.conn.paused and not self.closed:
            await self.conn.drain()
        self.send_message_now(message)

    def send_message_now(self, message: pb.TunnelMessage) -> None:
        """Send a message without waiting for the connection to drain (a flow's open: small, once)."""
        if self.closed:
            raise self._error or MuxStreamError(f"stream {self.id} is closed")
        self.conn.write(mf.frame(self.id, mf.MESSAGE, message.SerializeToString()))
        if self._window < mf.STREAM_WINDOW and message.WhichOneof("kind") == "dial" and message.dial.ok:
            self.grant_window()  # the destination accepted: now the client may send a full window

    async def send(self, message: pb.TunnelMessage) -> None:
        """The gRPC stream's ``write``: data as DATA frames, every other message as a MESSAGE frame."""
        if message.WhichOneof("kind") == "data":
            await self.send_data(message.data)
        else:
            await self.send_message(message)

    def end(self) -> None:
        """This side is done with the stream (a clean end)."""
        if not self.closed:
            self.closed = True
            self.conn.write(mf.end(self.id))
        self.conn.forget(self)

    def finish(self, reason: str) -> None:
        """Done with the stream, as a gRPC client cancelling its call: a RESET unless the peer ended it already."""
        if self._ended and not self.closed:
            self.closed = True
            self.conn.forget(self)
        else:
            self.reset(reason)

    def reset(self, reason: str) -> None:
        """End the stream abnormally, both ways."""
        if not self.closed:
            self.conn.write(mf.reset(self.id, reason))
            self.fail(MuxStreamError(f"stream {self.id} was reset: {reason}"))
        self.conn.forget(self)


class MuxConnection(asyncio.Protocol):
    """What both ends of a mux connection do; subclasses add the hello and how streams are opened."""

    role = "peer"

    def __init__(self, ping_interval: float = PING_INTERVAL, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.BaseTransport | None = None
        self.peer = "?"
        self.streams: dict[int, MuxStream] = {}
        self.streams_opened = 0
        self.last_stream_id = 0
        self.held_before_open = 0  # bytes queued on streams not yet granted their full window
        self.paused = False
        # The reason the connection ended, once it has.
        self.closed: asyncio.Future[str] = self.loop.create_future()
        self._decoder = mf.FrameDecoder()
        self._outbox = bytearray()
        self._flush_handle: asyncio.Handle | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._ping_interval = ping_interval
        self._idle_timeout = idle_timeout
        self._last_received = self.loop.time()
        self._keepalive: asyncio.TimerHandle | None = None
        self._closing = False
        # Called after each read's frames were handed on (the helper writes what its streams' sinks produced).
        self.after_receive: Callable[[], None] | None = None

    # --- transport events ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        self._last_received = self.loop.time()
        if self._ping_interval > 0:
            self._keepalive = self.loop.call_later(self._ping_interval, self._tick)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_received = self.loop.time()
        try:
            for stream, ftype, payload in self._decoder.feed(data):
                if stream:
                    self._stream_frame(stream, ftype, payload)
                else:
                    self._connection_frame(ftype, payload)
                if self._closing:
                    return
        except MuxProtocolError as exc:
            log.warning("tunnel mux %s %s broke the protocol: %s; closing", self.role, self.peer, exc)
            self.close(f"protocol error: {exc}")
        except Exception:
            log.exception("tunnel mux %s %s: handling a frame failed; closing", self.role, self.peer)
            self.close("internal error")
        finally:
            if self.after_receive is not None:
                self.after_receive()

    def eof_received(self) -> bool:
        return False  # a mux connection has no half-close: the peer is gone

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"the connection was lost: {exc}" if exc else "the connection was closed"
        self._finish(reason)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its limit (or until the connection ends)."""
        while self.paused and not self._closing:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    # --- frames ---

    def _connection_frame(self, ftype: int, payload: bytes) -> None:
        if ftype == mf.PING:
            if not self.paused:  # a peer that pings and does not read gets no growing pile of pongs
                self.write(mf.pong(payload))
        elif ftype == mf.PONG:
            pass  # its arrival already counts as a sign of life
        elif ftype == mf.GOAWAY:
            reason = mf.parse_reason(payload)
            log.info("tunnel mux %s %s is going away: %s", self.role, self.peer, reason)
            self._shutdown(f"the peer went away: {reason}", goaway=False)
        elif ftype == mf.HELLO:
            self.on_hello(payload)
        else:
            self.on_welcome(payload)

    def _stream_frame(self, stream_id: int, ftype: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            self.on_unknown_stream(stream_id, ftype, payload)
        elif ftype == mf.DATA:
            stream._on_data(payload)
        elif ftype == mf.MESSAGE:
            stream._on_message(parse_message(payload))
        elif ftype == mf.WINDOW:
            stream._on_window(mf.parse_window(payload))
        elif ftype == mf.END:
            stream._on_end()
        else:  # RESET
            self.forget(stream)
            stream.fail(MuxStreamError(f"the peer reset the stream: {mf.parse_reason(payload)}"))
            self.on_reset(stream)

    # --- what subclasses decide ---

    def on_hello(self, payload: bytes) -> None:
        raise MuxProtocolError(f"an unexpected HELLO from the {self.role}'s peer")

    def on_welcome(self, payload: bytes) -> None:
        raise MuxProtocolError(f"an unexpected WELCOME from the {self.role}'s peer")

    def on_unknown_stream(self, stream_id: int, ftype: int, payload: bytes) -> None:
        """A frame for a stream not in the table: closed here already (ignored), or never opened (refused)."""
        if stream_id > self.last_stream_id:
            raise MuxProtocolError(f"a {mf.FrameType(ftype).name} frame for stream {stream_id}, never opened")

    def on_reset(self, stream: MuxStream) -> None:
        """The peer reset ``stream`` (already failed and forgotten)."""

    # --- the streams' side ---

    def add(self, stream: MuxStream) -> None:
        self.streams[stream.id] = stream
        self.streams_opened += 1
        if stream.id > self.last_stream_id:
            self.last_stream_id = stream.id

    def forget(self, stream: MuxStream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]

    def write(self, data: bytes) -> None:
        if self._closing or self.transport is None:
            return
        outbox = self._outbox
        outbox += data
        if len(outbox) >= FLUSH_AT:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def write_data(self, stream_id: int, payload: bytes | memoryview) -> None:
        if self._closing or self.transport is None:
            return
        outbox = self._outbox
        outbox += mf.header(stream_id, mf.DATA, len(payload))
        outbox += payload
        if len(outbox) >= FLUSH_AT:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def flush(self) -> None:
        """Write what has been gathered now, not at the end of this turn of the loop (a batch is complete)."""
        if self._outbox:
            self._flush()

    def _flush(self) -> None:
        """Write what this turn of the loop gathered, in one go (a system call costs more than the bytes)."""
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        if self._outbox and self.transport is not None and not self._closing:
            data, self._outbox = self._outbox, bytearray()
            self.transport.write(data)  # type: ignore[attr-defined]

    # --- keep-alive and the end ---

    def _tick(self) -> None:
        self._keepalive = None
        if self._closing:
            return
        idle = self.loop.time() - self._last_received
        if idle >= self._idle_timeout:
            log.warning("tunnel mux %s %s: nothing received for %.0fs; closing", self.role, self.peer, idle)
            self.close(f"nothing received for {idle:.0f}s")
            return
        if idle >= self._ping_interval / 2:
            self.write(mf.ping(os.urandom(8)))
        self._keepalive = self.loop.call_later(self._ping_interval / 2, self._tick)

    def close(self, reason: str = "closing") -> None:
        """Tell the peer why (GOAWAY), end every stream, and close the transport once what is queued is out."""
        self._shutdown(reason, goaway=True)

    def _shutdown(self, reason: str, goaway: bool) -> None:
        if self._closing:
            return
        transport = self.transport
        if transport is not None:
            if goaway:
                self._outbox += mf.goaway(reason)
            if self._outbox:
                data, self._outbox = self._outbox, bytearray()
                transport.write(data)  # type: ignore[attr-defined]
        self._closing = True
        self._finish(reason)
        if transport is not None:
            transport.close()

    def _finish(self, reason: str) -> None:
        self._closing = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        streams, self.streams = list(self.streams.values()), {}
        for stream in streams:
            stream.fail(MuxStreamError(f"the tunnel mux connection ended: {reason}"))
            self.on_reset(stream)
        self.resume_writing()  # wake anyone waiting to drain: their streams have failed
        if not self.closed.done():
            self.closed.set_result(reason)


def parse_message(payload: bytes) -> pb.TunnelMessage:
    try:
        message = pb.TunnelMessage.FromString(payload)
    except DecodeError as exc:
        raise MuxProtocolError(f"a MESSAGE frame that is no TunnelMessage: {exc}") from None
    kind = message.WhichOneof("kind")
    if kind is None:
        raise MuxProtocolError("an empty MESSAGE frame")
    if kind == "data":
        raise MuxProtocolError("a data message in a MESSAGE frame (data travels in DATA frames)")
    return message
