"""The pods/portforward websocket, with the official client and with a raw aiohttp client as Tether uses."""

import asyncio
import os
import socket
import socketserver
import threading

import aiohttp
import pytest
from apiserver_support import MiB, pod
from kubernetes.stream import portforward


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(256 * 1024):
            self.request.sendall(data)


class _Greeter(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"hello and goodbye")


def _tcp_server(handler):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def echo_port():
    server = _tcp_server(_Echo)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_portforward_with_the_official_client(v1, ns, echo_port):
    v1.create_namespaced_pod(ns, pod("echo", ip="127.0.0.1"))
    forward = portforward(v1.connect_get_namespaced_pod_portforward, "echo", ns, ports=str(echo_port))
    sock = forward.socket(echo_port)
    sock.settimeout(30)
    payload = os.urandom(MiB)
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(256 * 1024)
        assert chunk, f"connection closed after {len(received)} bytes"
        received += chunk
    sender.join()
    assert bytes(received) == payload
    assert forward.error(echo_port) is None
    sock.close()


async def _aiohttp_forward(url, ns, name, port, payload):
    """What Tether's own client does: a raw websocket, channel byte first, the port announced first."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{url}/api/v1/namespaces/{ns}/pods/{name}/portforward?ports={port}",
            protocols=("v4.channel.k8s.io",),
            max_msg_size=0,
        ) as ws,
    ):
        assert ws.protocol == "v4.channel.k8s.io"
        announced = [(await ws.receive_bytes(timeout=10)) for _ in range(2)]
        assert announced == [bytes([0]) + port.to_bytes(2, "little"), bytes([1]) + port.to_bytes(2, "little")]

        async def send():
            for i in range(0, len(payload), 64 * 1024):
                await ws.send_bytes(b"\x00" + payload[i : i + 64 * 1024])

        sender = asyncio.create_task(send())
        received, errors = bytearray(), bytearray()
        while len(received) < len(payload):
            message = await ws.receive(timeout=30)
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            (received if message.data[0] == 0 else errors).extend(message.data[1:])
        await sender
        return bytes(received), bytes(errors)


def test_portforward_with_raw_aiohttp(server, v1, ns, echo_port):
    v1.create_namespaced_pod(ns, pod("echo", ip="127.0.0.1"))
    payload = os.urandom(MiB)
    received, errors = asyncio.run(_aiohttp_forward(server.url, ns, "echo", echo_port, payload))
    assert errors == b""
    assert received == payload


def test_portforward_closes_when_the_pod_closes(server, v1, ns):
    greeter = _tcp_server(_Greeter)
    try:
        port = greeter.server_address[1]
        v1.create_namespaced_pod(ns, pod("greeter", ip="127.0.0.1"))

        async def run():
            async with aiohttp.ClientSession() as session:
                url = f"{server.url}/api/v1/namespaces/{ns}/pods/greeter/portforward?ports={port}"
                async with session.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws:
                    frames = []
                    async for message in ws:
                        frames.append(message.data)
                    return frames, ws.closed

        frames, closed = asyncio.run(asyncio.wait_for(run(), 10))
        assert b"".join(f[1:] for f in frames[2:] if f[0] == 0) == b"hello and goodbye"
        assert closed
    finally:
        greeter.shutdown()
        greeter.server_close()


def test_portforward_dial_failure_is_reported_on_the_error_channel(server, v1, ns):
    port = _free_port()
    v1.create_namespaced_pod(ns, pod("dead", ip="127.0.0.1"))

    async def run():
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/api/v1/namespaces/{ns}/pods/dead/portforward?ports={port}"
            async with session.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws:
                return [message.data async for message in ws]

    frames = asyncio.run(asyncio.wait_for(run(), 10))
    errors = b"".join(f[1:] for f in frames[2:] if f[0] == 1).decode()
    assert f"error forwarding port {port} to pod {ns}/dead" in errors
    assert "refused" in errors.lower()


def test_portforward_needs_a_pod_with_an_ip(server, v1, ns):
    v1.create_namespaced_pod(ns, pod("pending", phase="Pending"))

    async def status(name):
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/api/v1/namespaces/{ns}/pods/{name}/portforward?ports=80"
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await session.ws_connect(url, protocols=("v4.channel.k8s.io",))
            return exc.value.status

    assert asyncio.run(status("missing")) == 404
    assert asyncio.run(status("pending")) == 400
