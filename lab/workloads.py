"""The lab's sample servers, one process per pod: `python -m tether.lab.workloads KIND ...`.

Kinds:

* ``http``     GET / -> "hello from <app> (pod <pod>, <ip>)"; GET /<path> -> the path; optional
               extra listener on 127.0.0.1 only (``--loopback-port``). ``--greeting`` takes a
               template with {app} {pod} {ip} {local} (the address the client reached).
* ``echo``     TCP echo (large reads, flow-controlled, any number of connections).
* ``udp-echo`` UDP echo.
* ``whoami``   TCP: answers each connection with the address it came from, "<ip> <port>\n", and closes
               (who a connection originates from: the manager's pod, or an intercepted pod's agent).
* ``bulk``     HTTP: GET /bytes/N streams N bytes of the pattern (byte i is i % 251) with a
               Content-Length; POST /sha256 answers {"sha256": hex, "length": n} for the body.
               Raw TCP: ``--source-port`` reads a line "N" and sends N pattern bytes, then closes;
               ``--sink-port`` reads to EOF and answers "<length> <sha256 hex>".

Only the standard library (and ``tether.runtime``, which imports nothing else), so a pod starts fast.
Writes ``--ready-file`` once every socket listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from tether.runtime import eventloop
from tether.runtime.atomicfile import write_atomic

PATTERN_PERIOD = 251
PATTERN = bytes(range(PATTERN_PERIOD)) * 1024  # 257 KB, a whole number of periods
CHUNK = 256 * 1024
MAX_HEADER_LINES = 100


def pattern_bytes(n: int) -> bytes:
    """The first n bytes of the bulk pattern (for clients that verify)."""
    whole, rest = divmod(n, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


# --- a small HTTP/1.1 server --------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    reader: asyncio.StreamReader
    local: str
    _remaining: int | None = None  # Content-Length left; None = chunked or no body
    _chunked: bool = False
    _done: bool = False

    async def body_chunks(self) -> AsyncIterator[bytes]:
        if self._chunked:
            while not self._done:
                size_line = await self.reader.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._done = True
                    break
                left = size
                while left:
                    data = await self.reader.read(min(left, CHUNK))
                    if not data:
                        raise ConnectionError("body truncated")
                    left -= len(data)
                    yield data
                await self.reader.readline()
        else:
            while self._remaining:
                data = await self.reader.read(min(self._remaining, CHUNK))
                if not data:
                    raise ConnectionError("body truncated")
                self._remaining -= len(data)
                yield data

    async def drain_body(self) -> None:
        async for _ in self.body_chunks():
            pass


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    #: when set, the body is streamed from here and `length` is the Content-Length
    stream: AsyncIterator[bytes] | None = None
    length: int = 0


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
Handler = Callable[[Request], Awaitable[Response]]


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, str, dict[str, str]] | None:
    line = await reader.readline()
    while line in (b"\r\n", b"\n"):
        line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise ValueError("bad request line")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        key, _, value = h.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    local = writer.get_extra_info("sockname")[0]
    try:
        while True:
            head = await _read_head(reader)
            if head is None:
                return
            method, target, version, headers = head
            req = Request(method, target.split("?", 1)[0], headers, reader, local)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                req._chunked = True
            else:
                req._remaining = int(headers.get("content-length", "0") or 0)
            conn = headers.get("connection", "").lower()
            keep_alive = (version == "HTTP/1.1" and conn != "close") or conn == "keep-alive"
            resp = await handler(req)
            await req.drain_body()
            length = resp.length if resp.stream is not None else len(resp.body)
            head_text = (
                f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}\r\n"
                f"Content-Type: {resp.content_type}\r\n"
                f"Content-Length: {length}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
            )
            writer.write(head_text.encode("latin-1"))
            if method == "HEAD":
                pass
            elif resp.stream is not None:
                async for chunk in resp.stream:
                    writer.write(chunk)
                    await writer.drain()
            else:
                writer.write(resp.body)
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return
    finally:
        writer.close()


def text(body: str, status: int = 200) -> Response:
    return Response(status, (body + "\n").encode())


def hello_handler(greeting: str, app: str, pod: str, ip: str) -> Handler:
    async def handle(req: Request) -> Response:
        if req.path == "/":
            return text(greeting.format(app=app, pod=pod, ip=ip, local=req.local))
        return text(req.path)

    return handle


async def _pattern_stream(n: int) -> AsyncIterator[bytes]:
    while n > 0:
        chunk = PATTERN if n >= len(PATTERN) else PATTERN[:n]
        n -= len(chunk)
        yield chunk


async def bulk_handler(req: Request) -> Response:
    if req.method in ("GET", "HEAD") and req.path.startswith("/bytes/"):
        try:
            n = int(req.path.removeprefix("/bytes/"))
        except ValueError:
            return text(f"not a byte count: {req.path}", 400)
        if n < 0:
            return text("negative byte count", 400)
        return Response(200, content_type="application/octet-stream", stream=_pattern_stream(n), length=n)
    if req.path == "/sha256":
        if req.method != "POST":
            return text("POST a body to /sha256", 405)
        digest = hashlib.sha256()
        length = 0
        async for chunk in req.body_chunks():
            digest.update(chunk)
            length += len(chunk)
        body = json.dumps({"sha256": digest.hexdigest(), "length": length})
        return Response(200, (body + "\n").encode(), "application/json")
    if req.path == "/":
        return text("bulk: GET /bytes/N, POST /sha256")
    return text(f"not found: {req.path}", 404)


# --- raw TCP and UDP ------------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    """Echo with flow control: stop reading while the peer is not reading our writes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # close once everything written is flushed


class UdpEchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def serve_source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = await reader.readline()
        n = int(line.strip() or b"0")
        async for chunk in _pattern_stream(n):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve_whoami(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    try:
        writer.write(f"{peer[0]} {peer[1]}\n".encode())
        await writer.drain()
    except OSError:
        pass  # the client left first: nothing to tell it
    finally:
        writer.close()


async def serve_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    digest = hashlib.sha256()
    length = 0
    try:
        while data := await reader.read(CHUNK):
            digest.update(data)
            length += len(data)
        writer.write(f"{length} {digest.hexdigest()}\n".encode())
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


# --- main -----------------------------------------------------------------------------------------


async def _tcp(handler: Callable[..., Awaitable[None]], host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(handler, host, port, limit=1 << 20, backlog=1024, reuse_address=True)


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    servers: list[object] = []  # kept referenced for the life of the process
    host = args.host
    if args.kind == "http":
        greeting = args.greeting or "hello from {app} (pod {pod}, {ip})"
        handle = hello_handler(greeting, args.app, args.pod_name, args.pod_ip)
        servers.append(await _tcp(lambda r, w: serve_http(r, w, handle), host, args.port))
        if args.loopback_port:
            lo_handle = hello_handler("hello from {app} on loopback (pod {pod})", args.app, args.pod_name, "")
            servers.append(await _tcp(lambda r, w: serve_http(r, w, lo_handle), "127.0.0.1", args.loopback_port))
    elif args.kind == "echo":
        servers.append(await loop.create_server(EchoProtocol, host, args.port, backlog=1024, reuse_address=True))
    elif args.kind == "udp-echo":
        servers.append(await loop.create_datagram_endpoint(UdpEchoProtocol, local_addr=(host, args.port)))
    elif args.kind == "whoami":
        servers.append(await _tcp(serve_whoami, host, args.port))
    elif args.kind == "bulk":
        servers.append(await _tcp(lambda r, w: serve_http(r, w, bulk_handler), host, args.port))
        if args.source_port:
            servers.append(await _tcp(serve_source, host, args.source_port))
        if args.sink_port:
            servers.append(await _tcp(serve_sink, host, args.sink_port))
    if args.write_file:
        # What the pod wrote into its volume, for whoever mounts the volume elsewhere (tether intercept --mount).
        write_atomic(args.write_file, f"written by pod {args.pod_name}\n", fsync=False)
    if args.ready_file:
        # A marker for the lab's wait, meaningless after a reboot: no fsync.
        write_atomic(args.ready_file, f"{os.getpid()}\n", fsync=False)
    await asyncio.Event().wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tether.lab.workloads", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["http", "echo", "udp-echo", "bulk", "whoami"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    p.add_argument("--app", default="web", help="app name used in greetings")
    p.add_argument("--greeting", default="", help="template for GET /: {app} {pod} {ip} {local}")
    p.add_argument("--loopback-port", type=int, default=0, help="also listen on 127.0.0.1:PORT (http)")
    p.add_argument("--source-port", type=int, default=0)
    p.add_argument("--sink-port", type=int, default=0)
    p.add_argument("--pod-name", default=os.environ.get("POD_NAME", socket.gethostname()))
    p.add_argument("--pod-ip", default=os.environ.get("POD_IP", ""))
    p.add_argument("--ready-file", default="")
    p.add_argument(
        "--write-file", default="", help="write a line naming this pod into this file as it starts (a volume's)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
