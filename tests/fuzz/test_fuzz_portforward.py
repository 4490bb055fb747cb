"""The API server's bytes fuzzed against the port-forward's websocket client (helper/cluster/portforward.py).

Over a real socketpair, an adversary answers the upgrade (a good 101, or a status line, headers or accept
key that is wrong) and sends v4.channel.k8s.io frames: port announcements, data split and fragmented, pings
and closes, with mutated opcodes, reserved bits, masks, lengths and channels. The client must fail with a
PortForwardError or carry on, never raise anything else into the event loop; its buffers stay bounded; and
when nothing was mutated, the local end receives exactly the data-channel bytes that were sent.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct

from fuzz_harness import arun, captured_logs, errors

from tether.helper.cluster import portforward
from tether.helper.cluster.portforward import DATA_CHANNEL, ERROR_CHANNEL, PortForwardError
from tether.runtime import eventloop

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
REQUEST = b"GET / HTTP/1.1\r\n\r\n"
READ_SIZE = 256 * 1024  # the most either event loop reads at once
# Latin-1 (how the head is read) has digits that are not ASCII ones: "\xb3" is "\u00b3", superscript three.
ODD_STATUS = ("\u00b3\u00b9", "1\u00b3", "\u00b2\u00b9", "abc", "", "1010", "200", "-101")


class _Sink(portforward._Side):
    """The local end of the forward, on a real socket: what the websocket hands on is read at the far end."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _frame(opcode: int, payload: bytes, final: bool = True, rsv: int = 0, masked: bool = False) -> bytes:
    first = (0x80 if final else 0) | rsv << 4 | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    return head + (b"\0\0\0\0" if masked else b"") + payload


def _head(rng: random.Random, accept: str) -> tuple[bytes, bool]:
    """The answer to the upgrade, and whether it was mutated."""
    status, headers = "101", {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept}
    mutated = rng.random() < 0.2
    if mutated:
        how = rng.randrange(5)
        if how == 0:
            status = rng.choice(ODD_STATUS)
        elif how == 1:
            headers["Sec-WebSocket-Accept"] = rng.choice(("", "nope", accept[:-1]))
        elif how == 2:
            headers["Sec-WebSocket-Extensions"] = "permessage-deflate"
        elif how == 3:
            headers.pop("Upgrade")
        else:
            return rng.randbytes(rng.randint(0, 200)) + rng.choice((b"", b"\r\n\r\n")), True
    lines = [f"HTTP/1.1 {status} Switching Protocols", *(f"{k}: {v}" for k, v in headers.items())]
    body = b'{"kind":"Status","message":"pods \\"x\\" not found"}' if status != "101" else b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, mutated


def _frames(rng: random.Random) -> tuple[list[bytes], bytes, bool]:
    """Frames after the upgrade, the data-channel bytes they carry, and whether any was mutated."""
    port = (8081).to_bytes(2, "little")
    frames = [_frame(2, bytes((DATA_CHANNEL,)) + port), _frame(2, bytes((ERROR_CHANNEL,)) + port)]
    expected = bytearray()
    mutated = False
    for _ in range(rng.randint(0, 25)):
        kind = rng.randrange(6)
        data = rng.randbytes(rng.choice((0, 1, 5, 125, 126, 1000, 65536, 70_000)))
        if kind == 0:  # data, whole
            frames.append(_frame(2, bytes((DATA_CHANNEL,)) + data))
            expected += data
        elif kind == 1:  # data, fragmented, with a ping between the pieces
            cut = rng.randint(0, len(data))
            frames += [
                _frame(2, bytes((DATA_CHANNEL,)) + data[:cut], final=False),
                _frame(9, rng.randbytes(rng.randint(0, 125))),
                _frame(0, data[cut:]),
            ]
            expected += data
        elif kind == 2:  # error-channel text, and text messages (not part of the protocol: skipped)
            frames.append(_frame(2, bytes((ERROR_CHANNEL,)) + b"dial tcp: connection refused"))
            frames.append(_frame(1, data))
        elif kind == 3:
            frames.append(_frame(10, rng.randbytes(8)))  # an unasked pong
        elif kind == 4 and rng.random() < 0.3:  # the mutations
            mutated = True
            frames.append(
                rng.choice(
                    (
                        _frame(rng.randrange(16), data[:125], final=rng.random() < 0.5),
                        _frame(2, data, rsv=rng.randint(1, 7)),
                        _frame(2, data, masked=True),
                        _frame(9, data + bytes(126)),  # an oversized control frame
                        _frame(0, data),  # a continuation with no message
                        _frame(2, bytes((rng.randrange(256),)) + data, final=False) + _frame(2, data),
                        struct.pack("!BBQ", 0x82, 127, rng.getrandbits(64)),  # a length beyond anything
                        rng.randbytes(rng.randint(1, 12)),
                    )
                )
            )
        elif kind == 5 and rng.random() < 0.1:
            mutated = True
            frames.append(_frame(8, b"\x03\xe8"))  # the server closes: the rest is not read
    return frames, bytes(expected), mutated


async def _read_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 16):
        got += chunk
    return bytes(got)


async def _one(rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    raised: list[object] = []
    loop.set_exception_handler(lambda _, context: raised.append(context.get("exception") or context["message"]))
    server, client = socket.socketpair()
    local, far = socket.socketpair()
    server.setblocking(False)
    far.setblocking(False)
    with captured_logs() as records:
        ws = portforward._WebSocket("ns/pod", 8081, REQUEST, KEY)
        await loop.create_connection(lambda: ws, sock=client)
        _, sink = await loop.create_connection(_Sink, sock=local)
        head, head_mutated = _head(rng, ws._accept)
        frames, expected, frames_mutated = _frames(rng)
        stream = head + b"".join(frames)
        reader = asyncio.ensure_future(_read_all(far))
        position = 0
        while position < len(stream) and not ws.closed:
            step = rng.choice((1, 7, 100, 4096, 1 << 16, len(stream)))
            try:
                await loop.sock_sendall(server, stream[position : position + step])
            except ConnectionError:
                break  # the client hung up (it refused what it read)
            position += step
            await asyncio.sleep(0)
            if ws.ready.done() and ws.ready.exception() is None and ws.peer is None:
                ws.attach(sink)
            # The answer's head is refused past its limit, checked per read: at most the limit and one read.
            assert len(ws._buffer) <= portforward._MAX_RESPONSE_HEAD + READ_SIZE, len(ws._buffer)
            assert len(ws._message) <= portforward._MAX_TEXT and len(ws._control) <= 125
        for _ in range(50):  # let the last bytes through (a bounded number of turns, no clock)
            await asyncio.sleep(0)
        if ws.ready.done() and ws.ready.exception() is None and ws.peer is None:
            ws.attach(sink)
        server.close()
        await asyncio.sleep(0.001)
        sink.close()
        received = await asyncio.wait_for(reader, 5)
        far.close()
        if ws.ready.done() and ws.ready.exception() is not None:
            assert isinstance(ws.ready.exception(), PortForwardError), repr(ws.ready.exception())
        elif not head_mutated and not frames_mutated:
            assert ws.ready.done(), "a good upgrade and both announcements left the forward unready"
            assert received == expected, f"{len(received)} bytes handed on, {len(expected)} sent"
        ws.abort()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert not raised, raised
    problems = errors(records)
    assert not problems, problems


def test_server_bytes_against_the_websocket_client():
    eventloop.run(arun("port-forward: websocket client", _one, cases=500))
