"""Writing a flow's tunnel messages to its gRPC stream, as every end of a Tunnel stream must.

:data:`Send` is the sending half of a flow as the dialer, the manager's splice
and the agent see it; :class:`StreamWriter` makes a gRPC stream's ``write`` one
that cancellation cannot leave half-done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb

__all__ = ["Send", "StreamWriter"]

Send = Callable[[pb.TunnelMessage], Awaitable[None]]


class StreamWriter:
    """Writes to one gRPC stream, one at a time, each surviving the cancellation of its caller.

    gRPC core allows one send in progress per stream; a send abandoned half-way (its task cancelled)
    stays in progress, and the stream can then never be closed properly. So every write runs in a
    shielded task that holds the stream's lock until it is done, and :meth:`drain` waits for the last.
    """

    def __init__(self, write: Send) -> None:
        self._write = write
        self._lock = asyncio.Lock()

    async def __call__(self, message: pb.TunnelMessage) -> None:
        task = asyncio.ensure_future(self._locked(message))
        task.add_done_callback(_retrieve)
        await asyncio.shield(task)

    async def _locked(self, message: pb.TunnelMessage) -> None:
        async with self._lock:
            await self._write(message)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until no write is in progress or queued."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._lock:
                pass


def _retrieve(task: asyncio.Future[None]) -> None:
    # A write whose caller was cancelled fails unobserved (its stream is gone); that is expected.
    if not task.cancelled():
        task.exception()


async def incoming_messages(call: grpc.aio.StreamStreamCall) -> AsyncIterator[pb.TunnelMessage]:
    """The peer's messages as the manager passes them on; a broken stream reads as an abort, so the flow ends
    the way it would had the peer aborted."""
    while True:
        try:
            message = await call.read()
        except grpc.aio.AioRpcError as exc:
            yield framing.abort_message(f"the manager's stream broke: {rpc_error(exc)}")
            return
        if message is grpc.aio.EOF:
            return
        yield message


def rpc_error(exc: grpc.aio.AioRpcError) -> str:
    """A failed call's code, with its details when it has any."""
    return f"{exc.code().name}: {exc.details()}" if exc.details() else exc.code().name
