"""Frames fuzzed against live mux connections: the manager's end and the helper's, over a real socketpair.

An adversary speaks the protocol to a connected ``MuxServerConnection`` (with a flow handler that echoes, so
credit flows both ways) or ``MuxClient`` (with streams open and reading): valid frame sequences with mutated
fields (stream ids, declared lengths, window increments, credit overruns, opens and closes out of order,
payloads that are no TunnelMessage, hellos and welcomes where none belong). Whatever arrives, the connection
either goes on or ends with a logged reason that is a protocol error, never an internal one; nothing is
logged as an exception; what it sends back is well-formed; what it holds stays within its limits. Cases whose
sequence was left unmutated must leave the connection open.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import socket
from dataclasses import dataclass, field

from fuzz_harness import arun, captured_logs, errors

from tether.helper.root.tunnel.mux_client import MuxClient
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import muxframe as mf
from tether.manager.api.mux import FLUSH_AT, MAX_QUEUED_MESSAGES, MuxConnection, MuxStream, MuxStreamError
from tether.manager.tunnel.mux_server import MuxServerConnection
from tether.runtime import eventloop

SESSION = "fuzz-session"
OPEN = pb.TunnelMessage(open=pb.TunnelOpen()).SerializeToString()
EOF = pb.TunnelMessage(eof=pb.Empty()).SerializeToString()
ABORT = pb.TunnelMessage(abort="fuzzed").SerializeToString()
# Credit a valid sequence may hand out on one stream: what it holds must stay under MAX_CREDIT.
VALID_WINDOW_BUDGET = mf.MAX_CREDIT - mf.STREAM_WINDOW


# How cases ended, by kind: the run must reach the stream and credit checks, not only the frame decoder.
REACHED: collections.Counter[str] = collections.Counter()
MUST_REACH = ("open", "beyond its window", "bytes of credit", "messages waiting unread", "never opened")


def _kind(conn: MuxConnection) -> str:
    if not conn.closed.done():
        return "open"
    reason = conn.closed.result()
    return next((kind for kind in MUST_REACH[1:] if kind in reason), "other")


def _reached_everything() -> None:
    missing = [kind for kind in MUST_REACH if not REACHED[kind]]
    assert not missing, f"no case reached {missing}; reached {dict(REACHED)}"


@dataclass
class _Peer(asyncio.Protocol):
    """The adversary's end: keeps what the connection under test sends."""

    received: bytearray = field(default_factory=bytearray)
    transport: asyncio.Transport | None = None
    lost: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


@dataclass
class _Script:
    """The adversary's frames for one case, and what it knows of the streams (to stay valid when unmutated)."""

    rng: random.Random
    mutate: float  # chance that an operation is mutated
    # Credit a stream starts with: a manager grants only a first window until the stream's dial succeeds.
    start_window: int = mf.STREAM_WINDOW
    frames: list[bytes] = field(default_factory=list)
    mutated: bool = False
    next_id: int = 1
    live: dict[int, int] = field(default_factory=dict)  # stream -> DATA bytes sent on it (valid only)
    messages: dict[int, int] = field(default_factory=dict)
    windows: dict[int, int] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)

    def roll(self) -> bool:
        hit = self.rng.random() < self.mutate
        self.mutated |= hit
        return hit

    def some_stream(self) -> int | None:
        """A live stream, or (mutated) any id at all; None: nothing valid to address."""
        rng = self.rng
        if self.roll():
            return rng.choice((0, self.next_id + rng.randint(0, 3), mf.MAX_STREAM_ID, rng.getrandbits(32), *self.done))
        return rng.choice(list(self.live)) if self.live else None

    def add(self, stream: int, ftype: int, payload: bytes) -> None:
        stream &= mf.MAX_STREAM_ID  # ids past the last one wrap, as 32 bits on the wire do
        if self.roll():
            self.frames.append(self._broken(stream, ftype, payload))
        else:
            self.frames.append(mf.frame(stream, ftype, payload))

    def _broken(self, stream: int, ftype: int, payload: bytes) -> bytes:
        rng = self.rng
        how = rng.randrange(5)
        if how == 0:  # a declared length that is not the payload's
            length = rng.choice((0, len(payload) + 1, max(0, len(payload) - 1), 0xFFFFFF, rng.getrandbits(24)))
            return mf.header(stream, ftype, length) + payload
        if how == 1:  # a type that is not this one (or none at all)
            return mf.frame(stream, rng.randrange(16), payload[: rng.choice((0, 1, 4, 8, len(payload)))])
        if how == 2:  # a payload cut short or grown
            return mf.frame(stream, ftype, payload[: rng.randint(0, len(payload))] + rng.randbytes(rng.randint(0, 9)))
        if how == 3:  # bytes flipped
            raw = bytearray(mf.frame(stream, ftype, payload))
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            return bytes(raw)
        return rng.randbytes(rng.randint(1, 24))  # noise

    # --- operations ---

    def open(self) -> None:
        stream = self.next_id
        if self.roll():
            stream = self.rng.choice((0, stream + self.rng.randint(1, 50), *self.done, *self.live, mf.MAX_STREAM_ID))
        payload = OPEN
        if self.roll():
            payload = self.rng.choice((b"", self.rng.randbytes(12), pb.TunnelMessage(data=b"x").SerializeToString()))
        self.add(stream, mf.MESSAGE, payload)
        if not self.mutated and stream == self.next_id:
            self.live[stream] = 0
            self.messages[stream] = 1
            self.windows[stream] = 0
        self.next_id = max(self.next_id, stream + 1) if stream else self.next_id

    def data(self, overrun: bool) -> None:
        stream = self.some_stream()
        if stream is None:
            return
        sent = self.live.get(stream, 0)
        room = self.start_window - sent
        size = min(self.rng.choice((0, 1, 100, 1400, 65536, mf.MAX_DATA)), room)
        if overrun and self.roll():
            for _ in range(room // mf.MAX_DATA + 1):  # a sender that ignores the credit it was given
                self.add(stream, mf.DATA, bytes(mf.MAX_DATA))
            return
        self.add(stream, mf.DATA, self.rng.randbytes(size))
        if stream in self.live:
            self.live[stream] = sent + size

    def message(self) -> None:
        stream = self.some_stream()
        if stream is None:
            return
        if self.roll():  # a pile of messages nobody reads
            for _ in range(MAX_QUEUED_MESSAGES + 1):
                self.add(stream, mf.MESSAGE, EOF)
            return
        if self.messages.get(stream, 0) >= MAX_QUEUED_MESSAGES // 2:
            return  # an unread pile is refused by design; valid sequences stay well under
        self.add(stream, mf.MESSAGE, self.rng.choice((EOF, ABORT)))
        if stream in self.messages:
            self.messages[stream] += 1

    def window(self) -> None:
        stream = self.some_stream()
        if stream is None:
            return
        increment = self.rng.choice((1, 4096, mf.WINDOW_UPDATE_STEP))
        if self.roll():
            increment = self.rng.choice((0, mf.MAX_CREDIT, 0xFFFFFFFF, self.rng.getrandbits(32)))
        elif self.windows.get(stream, 0) + increment > VALID_WINDOW_BUDGET:
            return
        self.frames.append(mf.window(stream & mf.MAX_STREAM_ID, increment))
        if stream in self.windows:
            self.windows[stream] += increment

    def close(self) -> None:
        stream = self.some_stream()
        if stream is None:
            return
        if self.rng.random() < 0.5:
            self.add(stream, mf.END, b"")
        else:
            self.add(stream, mf.RESET, self.rng.randbytes(self.rng.randint(0, 40)))
        if stream in self.live:
            del self.live[stream]
            self.done.append(stream)

    def ping(self) -> None:
        ftype = self.rng.choice((mf.PING, mf.PONG))
        self.add(0, ftype, self.rng.randbytes(8))

    def attack(self, opens: bool) -> None:
        """One breach of the stream or credit rules, amid valid frames."""
        rng = self.rng
        self.mutated = True
        if not self.live and opens:
            self.live[self.next_id] = self.messages[self.next_id] = self.windows[self.next_id] = 0
            self.frames.append(mf.frame(self.next_id, mf.MESSAGE, OPEN))
            self.next_id += 1
        stream = rng.choice(list(self.live)) if self.live else self.next_id
        kind = rng.randrange(6)
        if kind == 0:  # DATA past the credit given
            self.frames += [mf.frame(stream, mf.DATA, bytes(mf.MAX_DATA))] * (mf.STREAM_WINDOW // mf.MAX_DATA + 1)
        elif kind == 1:  # credit never given back to anyone: a window past MAX_CREDIT
            self.frames.append(mf.window(stream, rng.choice((mf.MAX_CREDIT, 0xFFFFFFFF))))
        elif kind == 2:  # a pile of messages
            self.frames += [mf.frame(stream, mf.MESSAGE, EOF)] * (MAX_QUEUED_MESSAGES + 1)
        elif kind == 3:  # a frame for a stream never opened
            ftype = rng.choice((mf.DATA, mf.WINDOW, mf.END, mf.RESET))
            payload = {mf.WINDOW: b"\0\0\0\1", mf.DATA: b"x", mf.RESET: b"why"}.get(ftype, b"")
            self.frames.append(mf.frame(self.next_id + rng.randint(0, 1000), ftype, payload))
        elif kind == 4:  # an open below the last id, or again on a live stream
            self.frames.append(mf.frame(rng.choice((max(1, stream - 1), stream)), mf.MESSAGE, OPEN))
        else:  # closed, then used: END and RESET, then DATA
            self.frames += [mf.end(stream), mf.reset(stream, "gone"), mf.frame(stream, mf.DATA, b"late")]
            self.live.pop(stream, None)
            self.done.append(stream)

    def stray(self) -> None:
        """What is never valid here: a second hello, a welcome to the manager, a goaway."""
        if self.roll():
            ftype = self.rng.choice((mf.HELLO, mf.WELCOME, mf.GOAWAY))
            self.add(0, ftype, self.rng.randbytes(self.rng.choice((0, 1, 9))))


def _script(rng: random.Random, opens: bool) -> _Script:
    """Valid operations, with random mutations (some cases) or one targeted attack at a random point (others)."""
    window = mf.INITIAL_WINDOW if opens else mf.STREAM_WINDOW
    script = _Script(rng, mutate=rng.choice((0.0, 0.02, 0.1, 0.3)), start_window=window)
    attack_at = rng.randint(0, 20) if script.mutate == 0 and rng.random() < 0.7 else -1
    overrun = rng.random() < 0.1
    operations = [script.data, script.message, script.window, script.close, script.ping, script.stray]
    if opens:
        operations.append(script.open)
    for number in range(rng.randint(1, 40)):
        if number == attack_at:
            script.attack(opens)
        operation = rng.choice(operations)
        if operation == script.data:
            script.data(overrun)
        else:
            operation()
    return script


def _chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """The bytes as the socket might deliver them: whole, one at a time near the start, or cut anywhere."""
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 12)))) if len(data) > 1 else []
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


async def _settle(peer: _Peer, conn: MuxConnection) -> None:
    """Let both ends run until nothing more moves (no wall-clock condition: a bounded number of quiet turns)."""
    quiet = 0
    last = -1
    while quiet < 3:
        await asyncio.sleep(0.0005)
        size = len(peer.received)
        quiet = quiet + 1 if size == last else 0
        last = size
        if conn.closed.done() and peer.lost:
            return


async def _echo(first: pb.TunnelMessage, stream: MuxStream, session: str) -> None:
    """A flow that returns what it gets: the manager's end both takes and spends credit."""
    try:
        while (item := await stream.read()) is not None:
            if type(item) is bytes:
                await stream.send_data(item)
    except MuxStreamError:
        pass  # reset or the connection ended: as a real flow, nothing more to do


async def _stall(first: pb.TunnelMessage, stream: MuxStream, session: str) -> None:
    """A flow that reads nothing (a slow reader): credit is never returned, so the window must hold."""
    await asyncio.Event().wait()


async def _drain(stream: MuxStream) -> None:
    try:
        while await stream.read() is not None:
            pass
    except MuxStreamError:
        pass


def _check_bounds(conn: MuxConnection, opened: int) -> None:
    assert conn._decoder.pending <= mf.HEADER_SIZE + mf.MAX_DATA, f"decoder holds {conn._decoder.pending} bytes"
    assert len(conn._outbox) < FLUSH_AT, f"{len(conn._outbox)} bytes waiting to be written"
    assert len(conn.streams) <= opened, f"{len(conn.streams)} streams from {opened} opens"
    for stream in conn.streams.values():
        queued = sum(len(item) for item in stream._inbox if type(item) is bytes)
        assert queued <= mf.STREAM_WINDOW, f"stream {stream.id} holds {queued} bytes"
        assert stream._messages <= MAX_QUEUED_MESSAGES, f"stream {stream.id} holds {stream._messages} messages"
        assert 0 <= stream.credit <= mf.MAX_CREDIT, f"stream {stream.id} has {stream.credit} credit"
        assert 0 <= stream._outstanding <= mf.STREAM_WINDOW, f"stream {stream.id}: {stream._outstanding} outstanding"


def _check_output(sent: bytes) -> None:
    """What the connection sent must itself be a well-formed frame stream (the decoder raises otherwise)."""
    decoder = mf.FrameDecoder()
    decoder.feed(sent)
    assert decoder.pending == 0, f"the connection sent a partial frame ({decoder.pending} bytes)"


async def _connected(conn_factory: object) -> tuple[MuxConnection, _Peer, list[socket.socket]]:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    _, conn = await loop.create_connection(conn_factory, sock=a)  # type: ignore[arg-type]
    _, peer = await loop.create_connection(_Peer, sock=b)
    return conn, peer, [a, b]


async def _play(rng: random.Random, conn: MuxConnection, peer: _Peer, script: _Script, opened: int) -> None:
    assert peer.transport is not None
    for chunk in _chunks(rng, b"".join(script.frames)):
        if peer.transport.is_closing():
            break  # the connection under test hung up
        peer.transport.write(chunk)
        await asyncio.sleep(0)
    await _settle(peer, conn)
    _check_bounds(conn, opened)


def _verdict(conn: MuxConnection, records: list[logging.LogRecord], script: _Script, peer: _Peer) -> None:
    problems = errors(records)
    assert not problems, problems
    REACHED[_kind(conn)] += 1
    if conn.closed.done():
        reason = conn.closed.result()
        assert reason and not reason.startswith("internal error"), reason
        assert any(r.levelno >= logging.INFO for r in records), f"closed ({reason}) without a log line"
        assert script.mutated, f"an unmutated sequence closed the connection: {reason}"
    _check_output(bytes(peer.received))


async def _server_case(rng: random.Random) -> None:
    with captured_logs() as records:
        handler = rng.choice((_echo, _stall))
        conn, peer, socks = await _connected(lambda: MuxServerConnection(lambda _: None, handler, 0, 0))
        try:
            script = _script(rng, opens=True)
            if script.roll():
                hello = rng.choice((mf.frame(0, mf.HELLO, bytes((mf.VERSION,)) + rng.randbytes(5)), b"", OPEN))
            else:
                hello = mf.hello(SESSION)
            script.frames.insert(0, hello)
            await _play(rng, conn, peer, script, opened=len(script.frames))  # any frame may open one
            _verdict(conn, records, script, peer)
        finally:
            conn.close("case over")
            await _settle(peer, conn)
            for sock in socks:
                sock.close()
        await asyncio.sleep(0)
        problems = errors(records)  # the flows' ends, once the connection closed under them
        assert not problems, problems


async def _client_case(rng: random.Random) -> None:
    with captured_logs() as records:
        conn, peer, socks = await _connected(lambda: MuxClient(SESSION, 0, 0))
        assert isinstance(conn, MuxClient)
        readers = []
        try:
            script = _script(rng, opens=False)
            for _ in range(streams := rng.randint(0, 4)):
                stream = conn.open_stream()
                stream.send_message_now(pb.TunnelMessage(open=pb.TunnelOpen()))
                stream.try_send_data(rng.randbytes(rng.choice((0, 10, 5000))))
                if rng.random() < 0.5:  # else a slow reader: credit is never returned, so the window must hold
                    readers.append(asyncio.ensure_future(_drain(stream)))
                script.live[stream.id] = 0
                script.messages[stream.id] = 0
                script.windows[stream.id] = 0
            script.next_id = conn._next_id
            welcome = mf.welcome()
            if script.roll():
                welcome = rng.choice((mf.welcome(rng.randrange(256)), b"", mf.goaway("no such session")))
            script.frames.insert(0, welcome)
            await _play(rng, conn, peer, script, opened=streams)
            _verdict(conn, records, script, peer)
        finally:
            conn.close("case over")
            await _settle(peer, conn)
            await asyncio.gather(*readers)
            for sock in socks:
                sock.close()
        problems = errors(records)
        assert not problems, problems


def test_frames_against_the_managers_end():
    REACHED.clear()
    eventloop.run(arun("mux: manager end", _server_case, cases=600))
    _reached_everything()


def test_frames_against_the_helpers_end():
    REACHED.clear()
    eventloop.run(arun("mux: helper end", _client_case, cases=600))
    _reached_everything()
