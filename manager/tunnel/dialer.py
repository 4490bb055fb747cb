"""Dial a flow's destination inside the cluster and pipe the tunnel stream to it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from tether.manager.rpc import manager_pb2 as pb
from tether.manager.tunnel import framing
from tether.manager.tunnel.framing import FlowSpec, Protocol, TunnelError

log = logging.getLogger("tether.manager.tunnel")

Send = Callable[[pb.TunnelMessage], Awaitable[None]]
# A UDP flow buffers at most this many datagrams toward a slow client; more are dropped, as a network would.
UDP_QUEUE_DEPTH = 512


class FlowAbortedError(Exception):
    """The client ended the flow abnormally."""


async def run_flow(spec: FlowSpec, incoming: AsyncIterator[pb.TunnelMessage], send: Send) -> None:
    if spec.protocol is Protocol.TCP:
        await _run_tcp(spec, incoming, send)
    else:
        await _run_udp(spec, incoming, send)


async def _run_tcp(spec: FlowSpec, incoming: AsyncIterator[pb.TunnelMessage], send: Send) -> None:
    host, port = str(spec.destination[0]), spec.destination[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=framing.MAX_CHUNK), spec.dial_timeout
        )
    except (OSError, TimeoutError) as exc:
        log.info("dial %s failed: %s", spec.describe(), exc or type(exc).__name__)
        await send(framing.dial_failed(framing.dial_reason_for(exc), f"dial {spec.describe()}: {exc or 'timeout'}"))
        return
    await send(framing.dial_ok())

    async def client_to_remote() -> None:
        async for message in incoming:
            kind = message.WhichOneof("kind")
            if kind == "data":
                writer.write(message.data)
                # drain() is the back-pressure: a slow cluster peer stops us pulling from the stream.
                await writer.drain()
            elif kind == "eof":
                if writer.can_write_eof():
                    writer.write_eof()
                return
            elif kind == "abort":
                raise FlowAbortedError(message.abort)
            else:
                raise TunnelError(f"unexpected {kind} message on an open TCP flow")
        raise FlowAbortedError("the client closed the stream without eof")

    async def remote_to_client() -> None:
        while True:
            payload = await reader.read(framing.MAX_CHUNK)
            if not payload:
                await send(framing.eof_message())
                return
            await send(framing.data_message(payload))

    upward = asyncio.ensure_future(client_to_remote())
    downward = asyncio.ensure_future(remote_to_client())
    try:
        await _until_both_done_or_failure(upward, downward)
    except FlowAbortedError as exc:
        log.debug("flow %s aborted by client: %s", spec.describe(), exc)
    except (ConnectionError, OSError) as exc:
        log.debug("flow %s: %s", spec.describe(), exc)
        with contextlib.suppress(Exception):
            await send(framing.abort_message(f"{spec.describe()}: {exc}"))
    finally:
        for task in (upward, downward):
            task.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _until_both_done_or_failure(*tasks: asyncio.Future[None]) -> None:
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raises the first failure


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
