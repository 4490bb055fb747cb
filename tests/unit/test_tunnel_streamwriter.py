"""StreamWriter: one write at a time per stream, and a write outlives the cancellation of its caller."""

from __future__ import annotations

import asyncio
import gc

import pytest

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.streamwriter import StreamWriter


class SlowStream:
    """A stream whose writes each wait for the test to let them through, and that notices overlapping ones.

    ``send`` is the StreamWriter over it.
    """

    def __init__(self, *, fail: bool = False) -> None:
        self.gate = asyncio.Event()
        self.started: list[bytes] = []
        self.written: list[bytes] = []
        self.in_progress = 0
        self.fail = fail
        self.send = StreamWriter(self.write)

    async def write(self, message: pb.TunnelMessage) -> None:
        self.in_progress += 1
        assert self.in_progress == 1, "gRPC core allows one send in progress per stream"
        self.started.append(message.data)
        try:
            await self.gate.wait()
            if self.fail:
                raise ConnectionError("stream gone")
            self.written.append(message.data)
        finally:
            self.in_progress -= 1

    async def begin(self, data: bytes) -> asyncio.Future[None]:
        """A caller's write of ``data``, given the time to start."""
        caller = asyncio.ensure_future(self.send(framing.data_message(data)))
        await asyncio.sleep(0.01)
        return caller


def test_writes_go_one_at_a_time_in_order():
    async def scenario() -> None:
        stream = SlowStream()
        writes = [await stream.begin(bytes([i])) for i in range(3)]
        assert stream.started == [b"\x00"]
        stream.gate.set()
        await asyncio.gather(*writes)
        assert stream.written == [b"\x00", b"\x01", b"\x02"]

    asyncio.run(scenario())


def test_a_cancelled_caller_leaves_its_write_to_finish():
    async def scenario() -> None:
        stream = SlowStream()
        caller = await stream.begin(b"first")
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert stream.in_progress == 1  # still sending: gRPC would never let the stream close otherwise
        second = await stream.begin(b"second")
        assert stream.started == [b"first"]
        stream.gate.set()
        await second
        await stream.send.drain()
        assert stream.written == [b"first", b"second"]

    asyncio.run(scenario())


def test_drain_waits_for_the_last_write_but_not_forever():
    async def scenario() -> None:
        stream = SlowStream()
        caller = await stream.begin(b"x")
        await stream.send.drain(timeout=0.05)  # the write never ends: drain gives up quietly
        assert stream.written == []
        stream.gate.set()
        await stream.send.drain()
        assert stream.written == [b"x"]
        await caller

    asyncio.run(scenario())


def test_a_failed_write_nobody_awaits_is_not_reported():
    reported: list[dict] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        stream = SlowStream(fail=True)
        caller = await stream.begin(b"x")
        caller.cancel()
        stream.gate.set()
        await stream.send.drain()
        gc.collect()  # an unretrieved task exception is reported when the task is collected

    asyncio.run(scenario())
    assert reported == []
