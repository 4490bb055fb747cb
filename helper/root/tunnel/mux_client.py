"""The helper's end of the tunnel mux: one connection to the manager pod that carries every flow.

Opened after the session has arrived (the hello names it); the manager answers WELCOME or, for a session it
does not know, GOAWAY with the reason. Streams are opened here, by number, and cost no round trip: a flow's
open goes out as its first frame and the manager dials at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tether.manager.api import muxframe as mf
from tether.manager.api.mux import IDLE_TIMEOUT, PING_INTERVAL, MuxConnection, MuxStream, MuxStreamError
from tether.manager.api.muxframe import MuxProtocolError

# Opens a transport for a protocol: a port-forward's ``connect``, or ``loop.create_connection`` to an address.
TransportOpener = Callable[[Callable[[], "MuxClient"]], Awaitable[tuple[asyncio.BaseTransport, "MuxClient"]]]


class MuxClient(MuxConnection):
    role = "manager"  # whom the logs are about

    def __init__(
        self, session_id: str, ping_interval: float = PING_INTERVAL, idle_timeout: float = IDLE_TIMEOUT
    ) -> None:
        super().__init__(ping_interval, idle_timeout)
        self.session_id = session_id
        self.welcomed: asyncio.Future[None] = self.loop.create_future()
        self.welcomed.add_done_callback(_retrieve)  # a refusal is read by whoever waits; nobody else must warn
        self._next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.write(mf.hello(self.session_id))

    def on_welcome(self, payload: bytes) -> None:
        if self.welcomed.done():
            raise MuxProtocolError("a second WELCOME")
        if payload[0] != mf.VERSION:
            raise MuxProtocolError(f"the manager speaks tunnel mux version {payload[0]}, not {mf.VERSION}")
        self.welcomed.set_result(None)

    def _finish(self, reason: str) -> None:
        super()._finish(reason)
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"the manager did not take the tunnel mux: {reason}"))

    @property
    def usable(self) -> bool:
        return self.welcomed.done() and not self.closed.done()

    def open_stream(self) -> MuxStream:
        """A new stream; its first frame must be the flow's open."""
        if self.closed.done():
            raise MuxStreamError(f"the tunnel mux connection ended: {self.closed.result()}")
        stream_id = self._next_id
        if stream_id > mf.MAX_STREAM_ID:
            self.close("stream ids are used up")
            raise MuxStreamError("the tunnel mux connection has used up its stream ids")
        self._next_id = stream_id + 1
        stream = MuxStream(self, stream_id, credit=mf.INITIAL_WINDOW)  # the rest comes with the dial answer
        self.add(stream)
        return stream


async def connect_mux(open_transport: TransportOpener, session_id: str, timeout: float = 10.0) -> MuxClient:
    """Open a mux connection for the session and wait for the manager's welcome."""
    _, client = await asyncio.wait_for(open_transport(lambda: MuxClient(session_id)), timeout)
    try:
        await asyncio.wait_for(asyncio.shield(client.welcomed), timeout)
    except BaseException:
        client.close("no welcome")
        raise
    return client


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
