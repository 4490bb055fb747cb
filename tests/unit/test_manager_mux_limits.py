"""A hostile tunnel mux client against the manager's real listener over loopback TCP: what the manager holds
stays bounded (counted in bytes queued on its streams, and by tracemalloc), and it says why it cut the client off.

The flows here never get a dial answer, as when their destinations hang: that is when a client could make the
manager hold what it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import tracemalloc

import pytest

from tether.manager.api import framing
from tether.manager.api import muxframe as mf
from tether.manager.api.framing import Protocol
from tether.manager.limits import ManagerLimits
from tether.manager.sessions import UnknownSessionError
from tether.manager.tunnel.mux_server import MuxListener
from tether.runtime import eventloop

pytestmark = pytest.mark.usefixtures("each_event_loop")

SESSION = "0123456789abcdef"
STREAMS = 1600
# What the manager may hold for this connection: the mux's budget for unopened streams (4 MiB) and a frame.
BOUND = 4 * 1024 * 1024 + mf.MAX_DATA + mf.HEADER_SIZE
OPEN = framing.open_message(SESSION, Protocol.TCP, (ipaddress.ip_address("127.0.0.1"), 9)).SerializeToString()


def check_session(session_id: str) -> None:
    if session_id != SESSION:
        raise UnknownSessionError(session_id)


async def dial_hangs(first, stream, session_id) -> None:
    await asyncio.Event().wait()


class Watch:
    """The most the listener's connections held at once, sampled as the attack goes."""

    def __init__(self, listener: MuxListener) -> None:
        self.listener = listener
        self.most = 0
        self.most_streams = 0
        self.seen: set = set()

    def sample(self) -> None:
        self.seen |= self.listener.connections
        for connection in self.listener.connections:
            held = sum(stream.queued for stream in connection.streams.values())
            self.most = max(self.most, held)
            self.most_streams = max(self.most_streams, len(connection.streams))
            assert held <= BOUND, f"the manager holds {held} bytes for one client after {connection.streams_opened}"


async def attack(per_stream: bytes) -> tuple[Watch, str, int, int]:
    """Open STREAMS streams, each with ``per_stream`` of DATA behind its open, and no dial answer coming.
    Returns the watch, why the manager ended the connection ("" if it did not), and tracemalloc's growth and
    peak. (The client may not read the GOAWAY: a close with its data unread resets the connection.)"""
    listener = MuxListener(check_session, dial_hangs)
    port = await listener.start("127.0.0.1", 0)
    watch = Watch(listener)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(mf.hello(SESSION))
        data = [mf.frame(0, mf.DATA, chunk) for chunk in framing.chunks(per_stream, mf.MAX_DATA)] if per_stream else []
        with contextlib.suppress(ConnectionError):
            for stream_id in range(1, STREAMS + 1):
                writer.write(mf.frame(stream_id, mf.MESSAGE, OPEN))
                for frame in data:
                    writer.write(stream_id.to_bytes(4, "big") + frame[4:])
                await writer.drain()
                await asyncio.sleep(0)
                watch.sample()
                if not listener.connections:
                    break
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), 10)
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.close()
        listener.close()
    reasons = [c.closed.result() for c in watch.seen if c.closed.done()]
    return watch, (reasons[0] if reasons else ""), now - base, peak - base


def test_data_sent_before_the_dial_answer_beyond_the_initial_window_cuts_the_client_off(caplog):
    # 1 MiB behind each open: what the old full window let a client push on every stream before any dial.
    with caplog.at_level(logging.WARNING):
        watch, reason, _, peak = eventloop.run(asyncio.wait_for(attack(b"x" * mf.STREAM_WINDOW), 60))
    assert "beyond its window" in reason
    assert watch.most <= 64 * 1024 + mf.MAX_DATA
    assert "broke the protocol" in caplog.text
    print(f"\n1 MiB per stream before the dial: held at most {watch.most} bytes, tracemalloc peak +{peak} bytes")


def test_many_streams_each_pushing_its_initial_window_are_cut_off_at_the_connections_budget(caplog):
    # 64 KiB behind each of 1,600 opens (100 MiB in all, none of it dialed): the manager stops at its budget.
    with caplog.at_level(logging.WARNING):
        watch, reason, growth, peak = eventloop.run(asyncio.wait_for(attack(b"y" * (64 * 1024)), 60))
    assert "not open yet" in reason, reason
    assert watch.most <= BOUND
    assert peak < 32 * 1024 * 1024  # a tenth of what the client sent, including the streams' own objects
    assert "not open yet" in caplog.text
    print(
        f"\n{STREAMS} streams x 64 KiB before the dial: held at most {watch.most} bytes on "
        f"{watch.most_streams} streams; tracemalloc +{growth} bytes after, peak +{peak}"
    )


def test_streams_beyond_the_sessions_cap_are_reset_without_running_and_logged_once(caplog):
    async def main() -> tuple[int, int, int]:
        started = 0

        async def counting(first, stream, session_id) -> None:
            nonlocal started
            started += 1
            await asyncio.Event().wait()

        listener = MuxListener(check_session, counting, limits=ManagerLimits(flows_per_session=1000))
        port = await listener.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(mf.hello(SESSION))
        for stream_id in range(1, STREAMS + 1):
            writer.write(mf.frame(stream_id, mf.MESSAGE, OPEN))
        await writer.drain()
        resets = 0
        decoder = mf.FrameDecoder()
        while resets < STREAMS - 1000:
            resets += sum(1 for _, t, _ in decoder.feed(await reader.read(65536)) if t == mf.RESET)
        (connection,) = listener.connections
        open_streams = len(connection.streams)
        writer.close()
        listener.close()
        return started, resets, open_streams

    with caplog.at_level(logging.WARNING):
        started, resets, open_streams = eventloop.run(asyncio.wait_for(main(), 60))
    assert (started, resets, open_streams) == (1000, STREAMS - 1000, 1000)
    assert caplog.text.count("streams open; resetting new ones") == 1
