"""The tunnel mux's wire format: frames, their limits, and an incremental decoder that checks them (pure).

One TCP connection from a client to the manager pod (through the API server's port-forward, or direct)
carries many flows. Each flow is a *stream*: the client's TunnelMessages (open, eof, abort) and the
manager's (dial, eof, abort) travel as MESSAGE frames, the flow's bytes (TCP) or datagrams (UDP) as
DATA frames, so both ends run the same flow code as on the gRPC ``Manager.Tunnel``.

A frame is an 8-byte header and a payload::

    stream id  u32   0 is the connection itself; the client numbers its streams 1, 2, 3, ...
    type       u8
    length     u24   payload bytes; each type has its own limit (below)

all big-endian. Connection frames (stream 0):

    HELLO    client, first frame: version u8, then the session id (UTF-8) from ArriveAsClient
    WELCOME  server's answer to a good hello: version u8
    GOAWAY   either side, the last frame before it closes: why (UTF-8)
    PING     8 opaque bytes; answered by a PONG with the same bytes (keep-alive)
    PONG

Stream frames (stream id > 0):

    MESSAGE  one serialized TunnelMessage (never data); the client's first on a stream is its open
    DATA     the flow's bytes: a piece of the TCP stream, or exactly one UDP datagram (may be empty)
    WINDOW   u32 > 0: the receiver has passed on that many more DATA bytes; the sender may send that much more
    END      the sender is done with the stream and sends nothing more on it (a gRPC stream's clean end)
    RESET    the stream ends abnormally, both ways: why (UTF-8)

Flow control: each side may have at most ``STREAM_WINDOW`` DATA bytes of a stream in flight (sent, and not
yet returned by WINDOW); the receiver returns credit as it hands bytes on, so a slow reader on either side
holds the sender back instead of making anyone buffer without bound. The client starts a stream with only
``INITIAL_WINDOW`` of credit: the manager sends a WINDOW frame for the rest right after a successful dial
answer (version 2; version 1 started both ways with the full window).
"""

from __future__ import annotations

import enum
import struct

VERSION = 2
HEADER_SIZE = 8
# The largest DATA payload: one TunnelMessage's worth on the gRPC path, so the flow code chunks alike.
MAX_DATA = 256 * 1024
# Credit per stream and direction; a multiple of MAX_DATA so a bulk flow keeps several frames in flight.
STREAM_WINDOW = 1024 * 1024
# The client's credit on a new stream, before the manager's dial answer grants the rest of STREAM_WINDOW: room
# for a first batch (one largest datagram) sent with the open, not for a window per stream it never dials.
INITIAL_WINDOW = 64 * 1024
# Credit is returned in steps of at least this much (or when the stream's inbox runs dry), not per frame.
WINDOW_UPDATE_STEP = STREAM_WINDOW // 4
MAX_MESSAGE = 64 * 1024
MAX_REASON = 4096
MAX_SESSION_ID = 256
MAX_STREAM_ID = 0xFFFFFFFF
# Credit a stream may accumulate: more than this means the peer returns credit it was never given.
MAX_CREDIT = 1 << 31

_HEADER = struct.Struct("!II")
_U32 = struct.Struct("!I")


class FrameType(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    GOAWAY = 3
    PING = 4
    PONG = 5
    MESSAGE = 6
    DATA = 7
    WINDOW = 8
    END = 9
    RESET = 10


HELLO, WELCOME, GOAWAY, PING, PONG = (
    FrameType.HELLO,
    FrameType.WELCOME,
    FrameType.GOAWAY,
    FrameType.PING,
    FrameType.PONG,
)
MESSAGE, DATA, WINDOW, END, RESET = (
    FrameType.MESSAGE,
    FrameType.DATA,
    FrameType.WINDOW,
    FrameType.END,
    FrameType.RESET,
)

CONNECTION_TYPES = frozenset((HELLO, WELCOME, GOAWAY, PING, PONG))
# The largest payload of each type; lengths above are refused as soon as the header is read.
_MAX_LENGTH = {
    HELLO: 1 + MAX_SESSION_ID,
    WELCOME: 1,
    GOAWAY: MAX_REASON,
    PING: 8,
    PONG: 8,
    MESSAGE: MAX_MESSAGE,
    DATA: MAX_DATA,
    WINDOW: 4,
    END: 0,
    RESET: MAX_REASON,
}
# Exact lengths, for the types that have one.
_EXACT_LENGTH = {WELCOME: 1, PING: 8, PONG: 8, WINDOW: 4, END: 0}
# Indexed by type number: the limit, or -1 for a type that does not exist.
_LIMITS = tuple(_MAX_LENGTH.get(t, -1) for t in range(max(FrameType) + 1))

Frame = tuple[int, int, bytes]  # (stream id, type, payload)


class MuxProtocolError(ValueError):
    """What the peer sent breaks the mux protocol; the connection ends, and the text says why."""


# --- encoding ----------------------------------------------------------------------------------------


def header(stream: int, ftype: int, length: int) -> bytes:
    return _HEADER.pack(stream, ftype << 24 | length)


def frame(stream: int, ftype: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(stream, ftype << 24 | len(payload)) + payload


def hello(session_id: str, version: int = VERSION) -> bytes:
    encoded = session_id.encode()
    if not 0 < len(encoded) <= MAX_SESSION_ID:
        raise ValueError(f"a session id must be 1 to {MAX_SESSION_ID} bytes, got {len(encoded)}")
    return frame(0, HELLO, bytes((version,)) + encoded)


def welcome(version: int = VERSION) -> bytes:
    return frame(0, WELCOME, bytes((version,)))


def goaway(reason: str) -> bytes:
    return frame(0, GOAWAY, _reason(reason))


def ping(opaque: bytes) -> bytes:
    return frame(0, PING, opaque)


def pong(opaque: bytes) -> bytes:
    return frame(0, PONG, opaque)


def window(stream: int, increment: int) -> bytes:
    return _HEADER.pack(stream, WINDOW << 24 | 4) + _U32.pack(increment)


def end(stream: int) -> bytes:
    return _HEADER.pack(stream, END << 24)


def reset(stream: int, reason: str) -> bytes:
    return frame(stream, RESET, _reason(reason))


def _reason(text: str) -> bytes:
    encoded = text.encode(errors="replace")
    if len(encoded) <= MAX_REASON:
        return encoded
    return encoded[:MAX_REASON].decode(errors="ignore").encode()  # cut on a character boundary


# --- payloads ----------------------------------------------------------------------------------------


def parse_hello(payload: bytes) -> tuple[int, str]:
    """(version, session id) of a HELLO payload."""
    if len(payload) < 2:
        raise MuxProtocolError("a hello without a session id")
    try:
        session_id = payload[1:].decode()
    except UnicodeDecodeError:
        raise MuxProtocolError("a hello whose session id is not UTF-8") from None
    return payload[0], session_id


def parse_window(payload: bytes) -> int:
    (increment,) = _U32.unpack(payload)
    if increment == 0:
        raise MuxProtocolError("a window update of 0 bytes")
    return increment


def parse_reason(payload: bytes) -> str:
    return payload.decode(errors="replace")


# --- decoding ----------------------------------------------------------------------------------------


class FrameDecoder:
    """Bytes in, whole frames out, in order; a frame that breaks the format raises MuxProtocolError.

    Checks what the format alone decides: known type, the right kind of stream id, the length limits.
    What frames mean (which may come when) is the connection's business.
    """

    __slots__ = ("_head", "_pieces", "_remaining", "_stream", "_type", "failed")

    def __init__(self) -> None:
        self._head = b""  # a header split between reads
        self._pieces: list[bytes] = []  # the payload so far of a frame split between reads
        self._remaining = -1  # payload bytes still to come; -1: expecting a header
        self._stream = 0
        self._type = 0
        self.failed = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held (tests and limits)."""
        return len(self._head) + sum(len(p) for p in self._pieces)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self.failed:
            raise MuxProtocolError("the stream already broke the protocol")
        try:
            return self._feed(data)
        except MuxProtocolError:
            self.failed = True
            raise

    def _feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        frames: list[Frame] = []
        size = len(data)
        pos = 0
        if self._remaining > 0:
            take = min(self._remaining, size)
            self._pieces.append(bytes(data[:take]))
            self._remaining -= take
            pos = take
            if self._remaining:
                return frames
            frames.append(self._finish(b"".join(self._pieces)))
            self._pieces = []
        elif self._head:
            need = HEADER_SIZE - len(self._head)
            head = self._head + bytes(data[:need])
            if len(head) < HEADER_SIZE:
                self._head = head
                return frames
            self._head = b""
            pos = need
            length = self._start(head, 0)
            if length == 0:
                frames.append(self._finish(b""))
            else:
                take = min(length, size - pos)
                chunk = bytes(data[pos : pos + take])
                pos += take
                if take == length:
                    frames.append(self._finish(chunk))
                else:
                    self._pieces = [chunk]
                    self._remaining = length - take
                    return frames
        # The common case: whole frames within this read.
        while pos < size:
            if size - pos < HEADER_SIZE:
                self._head = bytes(data[pos:])
                break
            length = self._start(data, pos)
            pos += HEADER_SIZE
            end = pos + length
            if end <= size:
                frames.append(self._finish(bytes(data[pos:end])))
                pos = end
            else:
                self._pieces = [bytes(data[pos:])]
                self._remaining = end - size
                break
        return frames

    def _start(self, data: bytes | bytearray | memoryview, pos: int) -> int:
        stream, word = _HEADER.unpack_from(data, pos)
        ftype, length = word >> 24, word & 0xFFFFFF
        limit = _LIMITS[ftype] if ftype < len(_LIMITS) else -1
        if limit < 0:
            raise MuxProtocolError(f"unknown frame type {ftype}")
        if length > limit:
            raise MuxProtocolError(f"a {FrameType(ftype).name} frame of {length} bytes (at most {limit})")
        exact = _EXACT_LENGTH.get(ftype)
        if exact is not None and length != exact:
            raise MuxProtocolError(f"a {FrameType(ftype).name} frame of {length} bytes (must be {exact})")
        if (ftype in CONNECTION_TYPES) != (stream == 0):
            where = "stream 0" if stream == 0 else f"stream {stream}"
            raise MuxProtocolError(f"a {FrameType(ftype).name} frame on {where}")
        self._stream, self._type = stream, ftype
        self._remaining = -1
        return length

    def _finish(self, payload: bytes) -> Frame:
        self._remaining = -1
        return self._stream, self._type, payload
