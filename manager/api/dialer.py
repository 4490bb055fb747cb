"""Dial a flow's destination and pipe the tunnel stream to it; or pipe a stream to a connection already made.

The manager dials cluster destinations with it, an agent dials from its pod (--proxy-via), the helper dials
the user's local port for an intercepted connection, and an agent pipes a connection it accepted for an
intercept (:func:`pipe_tcp`): one copy of the byte pump, its flow control, half-close and aborts. It is in
the manager's API face because both ends of the tunnel use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
import typing
from collections.abc import AsyncIterator, Callable
from typing import cast

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.framing import FlowSpec, Protocol, TunnelError
from tether.manager.api.streamwriter import Send
from tether.manager.api.wire import IPAddress

log = logging.getLogger("tether.manager.tunnel")

# A UDP flow buffers at most this many datagrams toward a slow client; more are dropped, as a network would.
UDP_QUEUE_DEPTH = 512


class FlowAbortedError(Exception):
    """The client ended the flow abnormally."""


class FastPath(typing.Protocol):
    """What a carrier that can move a TCP flow's bytes without a task switch offers (a tunnel mux stream).

    ``try_send_data`` sends to the client at once, or returns False (then ``send`` is awaited as usual); a
    ``sink`` the flow sets is handed the client's data as it arrives and returns how much it took (the rest
    comes through ``incoming``). Only the latency changes: order, back-pressure and errors stay the flow's.
    """

    sink: Callable[[bytes], int] | None

    def try_send_data(self, data: bytes) -> bool: ...

    def flush(self) -> None:
        """Send what ``try_send_data`` took now rather than at the end of this turn of the loop."""


async def run_flow(
    spec: FlowSpec, incoming: AsyncIterator[pb.TunnelMessage], send: Send, fast: FastPath | None = None
) -> None:
    if spec.protocol is Protocol.TCP:
        await _run_tcp(spec, incoming, send, fast)
    else:
        await _run_udp(spec, incoming, send)


# Bytes read from a pod and not yet taken by the flow's sender; above this, reading from the pod pauses.
_POD_READ_LIMIT = 2 * framing.MAX_CHUNK


class _PodConnection(asyncio.Protocol):
    """The pod's end of a TCP flow, read and written without streams.

    Reads keep the transport's own ``bytes`` objects and hand them on as they are (one per message when they
    fit), writes go straight to the transport, and each side's back-pressure is the transport's: reading
    pauses while the client has not taken what came, and ``drain`` waits while the pod does not read.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._interrupted: BaseException | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._reader: asyncio.Future[None] | None = None
        self._drainer: asyncio.Future[None] | None = None
        # Sends to the client at once (True) or cannot (False); tried while the flow's reader waits with nothing
        # buffered, so order is kept.
        self.forward: Callable[[bytes], bool] | None = None
        self.forwarded: Callable[[], None] | None = None  # after a read was forwarded: send it now

    # --- transport events ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they are one in all but name
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        forward = self.forward
        if (
            forward is not None
            and self._reader is not None
            and not self._chunks
            and len(data) <= framing.MAX_CHUNK
            and forward(data)
        ):
            if self.forwarded is not None:
                self.forwarded()
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= _POD_READ_LIMIT and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return True  # keep the transport open: the client may still be sending (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        self._error = exc
        self._wake_reader()
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_exception(ConnectionResetError("Connection lost"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)

    def _wake_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.set_result(None)

    # --- the flow's side ---

    def interrupt(self, exc: BaseException) -> None:
        """Make a pending (or the next) ``read`` raise ``exc``: the other direction failed."""
        self._interrupted = exc
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.set_exception(exc)

    async def read(self) -> bytes:
        """What the pod sent, at most MAX_CHUNK bytes; b"" once it sent FIN."""
        if self._interrupted is not None:
            raise self._interrupted
        while not self._chunks:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            self._reader = self._loop.create_future()
            await self._reader
        chunks = self._chunks
        first = chunks[0]
        if len(chunks) == 1 and len(first) <= framing.MAX_CHUNK:
            data = first
            chunks.clear()
        else:
            taken, size = 0, 0
            while taken < len(chunks) and size + len(chunks[taken]) <= framing.MAX_CHUNK:
                size += len(chunks[taken])
                taken += 1
            if taken == 0:  # one chunk bigger than a message
                data = first[: framing.MAX_CHUNK]
                chunks[0] = first[framing.MAX_CHUNK :]
            else:
                data = b"".join(chunks[:taken])
                del chunks[:taken]
        self._size -= len(data)
        if self._reading_paused and self._size < _POD_READ_LIMIT // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        if self._lost or self.transport is None:
            raise ConnectionResetError("Connection lost")
        self.transport.write(data)
        if self._writing_paused:
            self._drainer = self._loop.create_future()
            await self._drainer  # back-pressure: a slow cluster peer stops us pulling from the stream

    def write_now(self, data: bytes) -> int:
        """Write if the pod's side is not holding us back: all of ``data`` (taken) or nothing (0)."""
        if self._lost or self._writing_paused or self.transport is None:
            return 0
        self.transport.write(data)
        return len(data)

    def write_eof(self) -> None:
        if self.transport is not None and not self._lost and self.transport.can_write_eof():
            self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _connect(address: IPAddress, port: int) -> socket.socket:
    """A connected non-blocking socket, as ``loop.create_connection`` would dial it minus the resolving and, as
    a destination in the cluster usually answers within the connect call itself, without a turn of the loop."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # The client's own stack decides when to send; connect_accepted_socket leaves Nagle on with asyncio's loop.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex((str(address), port))
        if error == errno.EINPROGRESS:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not error and not _connected(sock):
                writable = loop.create_future()
                loop.add_writer(sock.fileno(), _set_done, writable)
                try:
                    await writable
                finally:
                    loop.remove_writer(sock.fileno())
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, f"connect to {address} port {port}: {os.strerror(error)}")
    except BaseException:
        sock.close()
        raise
    return sock


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False  # ENOTCONN: still connecting
    return True


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _run_tcp(
    spec: FlowSpec, incoming: AsyncIterator[pb.TunnelMessage], send: Send, fast: FastPath | None
) -> None:
    try:
        async with asyncio.timeout(spec.dial_timeout):
            sock = await _connect(*spec.destination)
    except (OSError, TimeoutError) as exc:
        log.info("dial %s failed: %s", spec.describe(), exc or type(exc).__name__)
        await send(framing.dial_failed(framing.dial_reason_for(exc), f"dial {spec.describe()}: {exc or 'timeout'}"))
        return
    # Connected: the client's connect waits for this answer, not for the transport made next (nothing the client
    # sends can arrive before it has the answer), nor for the rest of this turn of the loop.
    try:
        await send(framing.dial_ok())
    except BaseException:
        sock.close()
        raise
    if fast is not None:
        fast.flush()
    await pipe_tcp(spec, sock, incoming, send, fast)


async def pipe_tcp(
    spec: FlowSpec,
    sock: socket.socket,
    incoming: AsyncIterator[pb.TunnelMessage],
    send: Send,
    fast: FastPath | None = None,
) -> None:
    """Pipe a connected socket (dialed, or accepted) to an open flow's stream until both sides are done; the
    socket is closed on return. The peer's eof becomes a FIN, the socket's FIN an eof; an abort either way
    resets the other side."""
    try:
        _, pod = await asyncio.get_running_loop().connect_accepted_socket(_PodConnection, sock)
    except OSError as exc:  # the socket broke in the meantime: as if the destination had reset it
        sock.close()
        with contextlib.suppress(Exception):
            await send(framing.abort_message(f"{spec.describe()}: {exc}"))
        return
    except BaseException:
        sock.close()
        raise

    async def client_to_remote() -> None:
        async for message in incoming:
            kind = message.WhichOneof("kind")
            if kind == "data":
                await pod.write(message.data)
            elif kind == "eof":
                pod.write_eof()
                return
            elif kind == "abort":
                raise FlowAbortedError(message.abort)
            else:
                raise TunnelError(f"unexpected {kind} message on an open TCP flow")
        raise FlowAbortedError("the client closed the stream without eof")

    def upward_done(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            pod.interrupt(task.exception())  # type: ignore[arg-type]

    # The client's side in a task of its own, the pod's in this one. Either failing ends the flow; a clean
    # end needs both: the pod's FIN passed on as eof and the client's eof passed on as FIN.
    upward = asyncio.ensure_future(client_to_remote())
    upward.add_done_callback(upward_done)
    if fast is not None:
        pod.forward, pod.forwarded = fast.try_send_data, fast.flush
        fast.sink = pod.write_now
    try:
        while payload := await pod.read():
            await send(framing.data_message(payload))
        await send(framing.eof_message())
        await upward
    except FlowAbortedError as exc:
        log.debug("flow %s aborted by client: %s", spec.describe(), exc)
    except (ConnectionError, OSError) as exc:
        log.debug("flow %s: %s", spec.describe(), exc)
        with contextlib.suppress(Exception):
            await send(framing.abort_message(f"{spec.describe()}: {exc}"))
    finally:
        if fast is not None:
            fast.sink = None
        pod.forward = pod.forwarded = None
        upward.remove_done_callback(upward_done)
        upward.cancel()
        pod.close()


class _DatagramRelay(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue(UDP_QUEUE_DEPTH)
        self.last_activity = time.monotonic()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.last_activity = time.monotonic()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected UDP socket: the client answers its app the same way.
        log.debug("udp error: %s", exc)
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(exc)


async def _run_udp(spec: FlowSpec, incoming: AsyncIterator[pb.TunnelMessage], send: Send) -> None:
    loop = asyncio.get_running_loop()
    host, port = str(spec.destination[0]), spec.destination[1]
    try:
        transport, relay = await loop.create_datagram_endpoint(_DatagramRelay, remote_addr=(host, port))
    except OSError as exc:
        await send(framing.dial_failed(framing.dial_reason_for(exc), f"dial {spec.describe()}: {exc}"))
        return
    await send(framing.dial_ok())

    async def client_to_remote() -> None:
        async for message in incoming:
            kind = message.WhichOneof("kind")
            if kind == "data":
                if len(message.data) > framing.MAX_DATAGRAM:
                    raise TunnelError(f"datagram of {len(message.data)} bytes exceeds {framing.MAX_DATAGRAM}")
                relay.last_activity = time.monotonic()
                transport.sendto(message.data)
            elif kind in ("eof", "abort"):
                return
            else:
                raise TunnelError(f"unexpected {kind} message on a UDP flow")

    async def remote_to_client() -> None:
        while True:
            item = await relay.queue.get()
            if isinstance(item, BaseException):
                reason = framing.dial_reason_for(item)
                await send(framing.dial_failed(reason, f"{spec.describe()}: {item}"))
                return
            await send(framing.data_message(item))

    async def idle_watch() -> None:
        while True:
            remaining = relay.last_activity + spec.idle_timeout - time.monotonic()
            if remaining <= 0:
                log.debug("udp flow %s idle for %.0fs, closing", spec.describe(), spec.idle_timeout)
                await send(framing.abort_message(f"idle for {spec.idle_timeout:g}s"))
                return
            await asyncio.sleep(remaining)

    tasks = [asyncio.ensure_future(c) for c in (client_to_remote(), remote_to_client(), idle_watch())]
    try:
        # Any one ending ends the flow: the client closed, or the flow went idle.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        transport.close()
