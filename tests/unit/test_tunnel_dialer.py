"""The manager's dial of a flow's destination (``dialer._connect``), on both event loops."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from tether.manager.api import dialer
from tether.runtime import eventloop

pytestmark = pytest.mark.usefixtures("each_event_loop")

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def test_a_dialed_connection_sends_small_writes_at_once():
    async def main() -> tuple[int, tuple[str, int]]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sock = await dialer._connect(LOOPBACK, port)
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), sock.getpeername()
        finally:
            sock.close()
            server.close()

    nodelay, peer = eventloop.run(main())
    assert nodelay == 1 and peer[0] == "127.0.0.1"


def test_a_closed_port_fails_naming_the_destination():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused

        async def main() -> None:
            await dialer._connect(LOOPBACK, port)

        with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1 port {port}"):
            eventloop.run(main())
