"""Loopback echo servers for the manager's unit tests (dialed flows need something to reach)."""

from __future__ import annotations

import asyncio
import ipaddress

from tether.manager.destinations import DestinationPolicy

#: The manager refuses loopback destinations unless allowed: these tests' servers listen there.
LOOPBACK_ALLOWED = DestinationPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")))


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """TCP: every byte back, until the client's eof."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    """UDP: each datagram back to its sender, prefixed with ``echo:``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]
