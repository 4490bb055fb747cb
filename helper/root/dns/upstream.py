"""Forwarding non-cluster queries to the original upstream resolver, from marked sockets.

The Linux resolver mode redirects every port-53 packet bound for the upstream to our server; the
firewall recognises our own forwarded queries by their SO_MARK and lets them through. So every
socket made here carries the mark (when one is set), over UDP and TCP alike.

Each UDP query gets a fresh socket (a fresh source port): replies can then only come from the
upstream we connected to, for the query we sent, and concurrent clients that happen to use the
same query id cannot be confused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from tether.helper.root.dns.wire import Query, answers_query

# Resend a UDP query this often until the overall timeout: one lost datagram must not cost seconds.
RETRANSMIT_AFTER = 1.0


class UpstreamError(OSError):
    """The upstream gave no usable answer; the text says why."""


@dataclass(frozen=True)
class UpstreamAddress:
    host: str
    port: int = 53

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # a literal address: resolving the resolver would recurse into us
        if not 0 < self.port < 65536:
            raise ValueError(f"upstream port {self.port} is out of range")

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ipaddress.ip_address(self.host).version == 6 else socket.AF_INET


def marked_socket(family: socket.AddressFamily, kind: socket.SocketKind, mark: int | None) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if mark:
            so_mark = getattr(socket, "SO_MARK", None)
            if so_mark is None:
                raise UpstreamError("SO_MARK exists only on Linux; run without a mark here")
            # Needs CAP_NET_ADMIN: the helper is root; an unprivileged test passes mark=None.
            sock.setsockopt(socket.SOL_SOCKET, so_mark, mark)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Forwarder:
    def __init__(
        self, upstream: UpstreamAddress, mark: int | None = None, timeout: float = 3.0, *, max_sockets: int = 512
    ) -> None:
        self.upstream = upstream
        # Sockets open towards the upstream at once; queries beyond wait (within their timeout) for one to close,
        # so a flood of non-cluster names cannot spend the helper's file descriptors.
        self.max_sockets = max_sockets
        self._sockets = asyncio.Semaphore(max_sockets)
        self.open_sockets = 0
        self.mark = mark
        self.timeout = timeout
        # Local (address, port) of every forwarding socket now open. If one of our own queries comes
        # back to our server (the firewall did not honour the mark), it arrives from one of these.
        self.sources: set[tuple[str, int]] = set()

    def is_own(self, peer: tuple[str, int] | tuple[str, int, int, int] | None) -> bool:
        return peer is not None and (peer[0], peer[1]) in self.sources

    @contextlib.contextmanager
    def _tracked(self, sock: socket.socket) -> Iterator[None]:
        source = sock.getsockname()[:2]
        self.sources.add(source)
        try:
            yield
        finally:
            self.sources.discard(source)

    @contextlib.asynccontextmanager
    async def _socket_slot(self) -> AsyncIterator[None]:
        """One of ``max_sockets``, waited for at most the query's timeout."""
        async with asyncio.timeout(self.timeout):
            await self._sockets.acquire()
        self.open_sockets += 1
        try:
            yield
        finally:
            self.open_sockets -= 1
            self._sockets.release()

    async def udp(self, data: bytes, query: Query) -> bytes:
        async with self._socket_slot():
            return await self._udp(asyncio.get_running_loop(), data, query)

    async def _udp(self, loop: asyncio.AbstractEventLoop, data: bytes, query: Query) -> bytes:
        address = (self.upstream.host, self.upstream.port)
        with marked_socket(self.upstream.family, socket.SOCK_DGRAM, self.mark) as sock:
            await loop.sock_connect(sock, address)
            with self._tracked(sock):
                deadline = loop.time() + self.timeout
                while (remaining := deadline - loop.time()) > 0:
                    await loop.sock_sendall(sock, data)
                    try:
                        async with asyncio.timeout(min(RETRANSMIT_AFTER, remaining)):
                            while True:
                                reply = await loop.sock_recv(sock, 65535)
                                if answers_query(reply, query):
                                    return reply
                    except TimeoutError:
                        continue
        raise TimeoutError(f"upstream {self.upstream.host}:{self.upstream.port} did not answer in {self.timeout}s")

    async def tcp(self, data: bytes, query: Query) -> bytes:
        loop = asyncio.get_running_loop()
        async with self._socket_slot(), asyncio.timeout(self.timeout):
            sock = marked_socket(self.upstream.family, socket.SOCK_STREAM, self.mark)
            try:
                await loop.sock_connect(sock, (self.upstream.host, self.upstream.port))
            except BaseException:
                sock.close()
                raise
            with self._tracked(sock):
                reader, writer = await asyncio.open_connection(sock=sock)
                try:
                    writer.write(struct.pack("!H", len(data)) + data)
                    await writer.drain()
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                    reply = await reader.readexactly(length)
                except asyncio.IncompleteReadError:
                    raise UpstreamError("upstream closed the TCP connection before answering") from None
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        if not answers_query(reply, query):
            raise UpstreamError("upstream's TCP reply does not match the query")
        return reply
