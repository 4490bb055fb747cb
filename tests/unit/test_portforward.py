"""The helper's port-forward client: its websocket framing, and forwarding through the lab's API server."""

import asyncio
import hashlib
import itertools
import logging
import os
import re
import socket
import socketserver
import struct
import threading

import kubernetes
import pytest

from tests.doubles.certs import self_signed
from tether.helper.cluster import portforward
from tether.helper.cluster.portforward import PodPortForward, PortForwardError, client_frame
from tether.lab.apiserver.server import LabApiServerThread
from tether.runtime import eventloop

pytestmark = pytest.mark.usefixtures("each_event_loop")

MiB = 1 << 20
_namespaces = itertools.count(1)


# --- framing, without a server ------------------------------------------------------------------


def _unmask(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of one masked client frame."""
    first, second = frame[0], frame[1]
    assert second & 0x80, "client frames are masked"
    length, offset = second & 0x7F, 2
    if length == 126:
        length, offset = struct.unpack("!H", frame[2:4])[0], 4
    elif length == 127:
        length, offset = struct.unpack("!Q", frame[2:10])[0], 10
    key = frame[offset : offset + 4]
    body = frame[offset + 4 :]
    assert len(body) == length
    return first, bytes(b ^ key[i % 4] for i, b in enumerate(body))


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 65534, 65535, 65536, 300_000])
def test_client_frames_are_masked_and_sized(size):
    payload = os.urandom(size)
    first, body = _unmask(bytes(client_frame(0x2, payload, 0)))
    assert first == 0x82
    assert body == b"\x00" + payload


class _Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written = bytearray()
        self.closed = self.aborted = False
        self.reading = True

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True


class _Peer(portforward._Side):
    def __init__(self):
        self.transport = _Transport()
        self.closings = 0

    def close(self):
        self.closings += 1


def _server_frame(opcode, payload, final=True):
    size = len(payload)
    first = (0x80 if final else 0) | opcode
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def _upgraded_websocket(key="dGhlIHNhbXBsZSBub25jZQ=="):
    ws = portforward._WebSocket("ns/pod", 8081, b"GET / HTTP/1.1\r\n\r\n", key)
    transport = _Transport()
    ws.connection_made(transport)
    accept = ws._accept
    ws.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n".encode()
    )
    return ws, transport


def _run(coro):
    return eventloop.run(coro)


def test_websocket_reads_split_and_fragmented_frames_byte_by_byte():
    async def main():
        ws, transport = _upgraded_websocket()
        peer = _Peer()
        stream = (
            _server_frame(0x2, b"\x00" + (8081).to_bytes(2, "little"))
            + _server_frame(0x2, b"\x01" + (8081).to_bytes(2, "little"))
            + _server_frame(0x2, b"\x00hello ")
            + _server_frame(0x2, b"\x00", final=False)  # a fragmented message: the channel, then the data
            + _server_frame(0x9, b"are you there")  # a ping between the fragments
            + _server_frame(0x0, b"wor", final=False)
            + _server_frame(0x0, b"ld", final=True)
            + _server_frame(0x1, b"text is not ours")
            + _server_frame(0x2, b"\x00" + b"x" * 70_000)
        )
        for i in range(len(stream)):
            ws.data_received(stream[i : i + 1])
            if i == 10:
                assert ws.ready.done()
                ws.attach(peer)
        assert ws.ready.done() and ws.ready.exception() is None
        assert bytes(peer.transport.written) == b"hello world" + b"x" * 70_000
        first, pong = _unmask(bytes(transport.written[len(b"GET / HTTP/1.1\r\n\r\n") :]))
        assert first == 0x8A and pong == b"are you there"

    _run(main())


def test_websocket_data_before_a_peer_is_kept():
    async def main():
        ws, _ = _upgraded_websocket()
        ws.data_received(
            _server_frame(0x2, b"\x00\x01\x02") + _server_frame(0x2, b"\x01\x01\x02") + _server_frame(0x2, b"\x00early")
        )
        peer = _Peer()
        ws.attach(peer)
        ws.data_received(_server_frame(0x2, b"\x00 and late"))
        assert bytes(peer.transport.written) == b"early and late"

    _run(main())


def test_websocket_error_channel_is_logged(caplog):
    async def main():
        ws, _ = _upgraded_websocket()
        ws.attach(_Peer())
        ws.data_received(_server_frame(0x2, b"\x00\x01\x02") + _server_frame(0x2, b"\x01\x01\x02"))
        with caplog.at_level(logging.WARNING, logger="tether.helper.portforward"):
            ws.data_received(_server_frame(0x2, b"\x01dial tcp 10.0.0.1:8081: connection refused"))
        assert "connection refused" in caplog.text

    _run(main())


def test_websocket_close_frame_is_answered_and_ends_the_peer():
    async def main():
        ws, transport = _upgraded_websocket()
        peer = _Peer()
        ws.attach(peer)
        ws.data_received(_server_frame(0x8, b"\x03\xe8"))
        assert transport.closed
        first, body = _unmask(bytes(transport.written[len(b"GET / HTTP/1.1\r\n\r\n") :]))
        assert first == 0x88 and body == b"\x03\xe8"
        ws.connection_lost(None)
        assert peer.closings == 1

    _run(main())


@pytest.mark.parametrize(
    "frame",
    [
        bytes((0xC2, 1, 0)),  # RSV1: no extension was negotiated
        bytes((0x82, 0x81, 1, 2, 3, 4, 5)),  # masked by the server
        bytes((0x83, 0)),  # unknown opcode
        bytes((0x00, 0)),  # continuation without a message
        bytes((0x09, 0)),  # fragmented control frame
    ],
)
def test_websocket_protocol_errors_abort_the_connection(frame):
    async def main():
        ws, transport = _upgraded_websocket()
        ws.data_received(frame)
        assert transport.aborted
        with pytest.raises(PortForwardError):
            ws.ready.result()

    _run(main())


def test_websocket_refused_upgrade_says_why():
    async def main():
        ws = portforward._WebSocket("ns/pod", 8081, b"GET / HTTP/1.1\r\n\r\n", "k")
        transport = _Transport()
        ws.connection_made(transport)
        ws.data_received(
            b'HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{"kind":"Status",'
            b'"message":"pods \\"pod\\" not found"}'
        )
        with pytest.raises(PortForwardError, match=r'404 Not Found: pods "pod" not found'):
            ws.ready.result()
        assert transport.aborted

    _run(main())


def test_websocket_status_with_a_non_ascii_digit_is_a_clear_refusal():
    """Byte 0xb3 reads as "³" in latin-1, which str.isdigit() accepts and int() refuses with a bare ValueError."""

    async def main():
        ws = portforward._WebSocket("ns/pod", 8081, b"GET / HTTP/1.1\r\n\r\n", "k")
        ws.connection_made(_Transport())
        ws.data_received(b"HTTP/1.1 \xb301 Switching Protocols\r\n\r\n")
        with pytest.raises(PortForwardError, match="refused by the API server: ³01 Switching Protocols"):
            ws.ready.result()

    _run(main())


@pytest.mark.parametrize("server", ["http://api.example:³", "https://api.example:٣", "http://[fd00::1]:6٤43"])
def test_api_server_port_in_non_ascii_digits_is_refused_naming_it(server):
    configuration = kubernetes.client.Configuration()
    configuration.host = server
    with pytest.raises(
        PortForwardError, match=rf'the API server "{re.escape(server)}" has port ".+", not a number from 1'
    ):
        PodPortForward(configuration, "ns", "pod", 8081)


@pytest.mark.parametrize(
    ("server", "port"), [("http://api.example", 80), ("https://api.example", 443), ("https://[fd00::1]:6443", 6443)]
)
def test_api_server_port_default_and_explicit(server, port):
    configuration = kubernetes.client.Configuration()
    configuration.host = server
    assert PodPortForward(configuration, "ns", "pod", 8081)._port == port


def test_websocket_bad_accept_is_refused():
    async def main():
        ws = portforward._WebSocket("ns/pod", 8081, b"GET / HTTP/1.1\r\n\r\n", "k")
        ws.connection_made(_Transport())
        ws.data_received(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: nope\r\n\r\n"
        )
        with pytest.raises(PortForwardError, match="upgrade is invalid"):
            ws.ready.result()

    _run(main())


# --- through the lab's API server ---------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(256 * 1024):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def server():
    with LabApiServerThread(service_cidr="10.96.0.0/16") as srv:
        yield srv


@pytest.fixture(scope="module")
def configuration(server):
    api = kubernetes.config.new_client_from_config_dict(server.kubeconfig())
    yield api.configuration
    api.close()


@pytest.fixture(scope="module")
def echo_port():
    echo = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    echo.daemon_threads = True
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    yield echo.server_address[1]
    echo.shutdown()
    echo.server_close()


@pytest.fixture
def namespace(configuration):
    v1 = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    name = f"pf-{next(_namespaces)}"
    v1.create_namespace({"metadata": {"name": name}})
    v1.create_namespaced_pod(
        name,
        {
            "metadata": {"name": "echo"},
            "spec": {"containers": [{"name": "main", "image": "lab/app:1"}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        },
    )
    yield name
    v1.delete_namespace(name)


async def _exchange(reader, writer, payload):
    async def send():
        for i in range(0, len(payload), 100_000):
            writer.write(payload[i : i + 100_000])
            await writer.drain()

    sender = asyncio.ensure_future(send())
    received = await reader.readexactly(len(payload))
    await sender
    return received


def test_forward_carries_bytes_both_ways_over_unix_and_tcp(configuration, namespace, echo_port, tmp_path):
    async def main():
        forward = PodPortForward(configuration, namespace, "echo", echo_port)
        await forward.probe()
        path = await forward.listen_unix(tmp_path / "pf.sock")
        try:
            reader, writer = await asyncio.open_unix_connection(path.removeprefix("unix:"))
            for size in (1, 64, 5000):
                payload = os.urandom(size)
                assert await asyncio.wait_for(_exchange(reader, writer, payload), 10) == payload
            payload = os.urandom(8 * MiB)
            received = await asyncio.wait_for(_exchange(reader, writer, payload), 60)
            assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
            writer.close()
        finally:
            await forward.close()

        forward = PodPortForward(configuration, namespace, "echo", echo_port)
        host_port = await forward.listen_tcp()
        try:
            host, _, port = host_port.rpartition(":")
            connections = [await asyncio.open_connection(host, int(port)) for _ in range(5)]
            payloads = [os.urandom(300_000) for _ in connections]
            results = await asyncio.wait_for(
                asyncio.gather(*(_exchange(r, w, p) for (r, w), p in zip(connections, payloads, strict=True))), 60
            )
            assert results == payloads
            for _, w in connections:
                w.close()
        finally:
            await forward.close()

    _run(main())


class _Collect(asyncio.Protocol):
    """A protocol in this process, on a forwarded connection of its own (PodPortForward.connect)."""

    def __init__(self):
        self.received = bytearray()
        self.lost = asyncio.get_running_loop().create_future()
        self.more = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.received += data
        self.more.set()

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def test_connect_gives_a_protocol_in_process_a_transport_to_the_pod(configuration, namespace, echo_port):
    async def main():
        forward = PodPortForward(configuration, namespace, "echo", echo_port)
        try:
            transport, protocol = await forward.connect(_Collect)
            assert protocol.transport is transport and not transport.is_closing()
            payload = os.urandom(3 * MiB)
            for i in range(0, len(payload), 100_000):
                transport.write(payload[i : i + 100_000])
            while len(protocol.received) < len(payload):
                protocol.more.clear()
                await asyncio.wait_for(protocol.more.wait(), 10)
            assert bytes(protocol.received) == payload
            transport.close()
            assert await asyncio.wait_for(protocol.lost, 5) is None
            assert transport.is_closing()
        finally:
            await forward.close()

    _run(main())


def test_connect_to_a_closed_port_loses_the_connection(configuration, namespace):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    async def main():
        forward = PodPortForward(configuration, namespace, "echo", closed_port)
        try:
            transport, protocol = await forward.connect(_Collect)
            await asyncio.wait_for(protocol.lost, 10)  # the API server ends the websocket: the protocol hears it
            assert transport.is_closing()
        finally:
            await forward.close()

    _run(main())


def test_closing_the_forward_ends_connected_protocols(configuration, namespace, echo_port):
    async def main():
        forward = PodPortForward(configuration, namespace, "echo", echo_port)
        _, protocol = await forward.connect(_Collect)
        await forward.close()
        assert await asyncio.wait_for(protocol.lost, 5) is None

    _run(main())


def test_forward_to_a_closed_port_closes_the_local_connection(configuration, namespace, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    async def main():
        forward = PodPortForward(configuration, namespace, "echo", closed_port)
        host_port = await forward.listen_tcp()
        try:
            host, _, port = host_port.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            await forward.close()

    with caplog.at_level(logging.WARNING, logger="tether.helper.portforward"):
        _run(main())
    assert f"error forwarding port {closed_port}" in caplog.text


def test_forward_to_a_missing_pod_fails_clearly(configuration, namespace):
    async def main():
        forward = PodPortForward(configuration, namespace, "nope", 80)
        with pytest.raises(PortForwardError, match=rf"pod {namespace}/nope refused by the API server: 404"):
            await forward.probe()

    _run(main())


def test_forward_to_an_unreachable_api_server_fails_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    configuration = kubernetes.client.Configuration(host=f"http://127.0.0.1:{port}")

    async def main():
        with pytest.raises(PortForwardError, match="cannot reach the API server"):
            await PodPortForward(configuration, "ns", "pod", 80).probe()

    _run(main())


# --- TLS and a bearer token, against a minimal API server of our own ---------------------------


def test_forward_over_tls_with_a_token(tmp_path):
    import ssl

    from aiohttp import WSMsgType, web

    cert_file, key_file = self_signed(tmp_path)
    seen = {}

    async def portforward_handler(request):
        seen["authorization"] = request.headers.get("Authorization")
        seen["path"] = request.path_qs
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request)
        port = int(request.query["ports"])
        await ws.send_bytes(b"\x00" + port.to_bytes(2, "little"))
        await ws.send_bytes(b"\x01" + port.to_bytes(2, "little"))
        async for message in ws:
            if message.type == WSMsgType.BINARY and message.data[:1] == b"\x00":
                await ws.send_bytes(message.data)  # echo on the data channel
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/portforward", portforward_handler)
        runner = web.AppRunner(app)
        await runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        try:
            configuration = kubernetes.client.Configuration(
                host=f"https://127.0.0.1:{port}",
                api_key={"authorization": "t0ken"},
                api_key_prefix={"authorization": "Bearer"},
            )
            configuration.ssl_ca_cert = str(cert_file)
            forward = PodPortForward(configuration, "ns", "pod", 8081)
            host_port = await forward.listen_tcp()
            try:
                host, _, local_port = host_port.rpartition(":")
                reader, writer = await asyncio.open_connection(host, int(local_port))
                payload = os.urandom(200_000)
                assert await asyncio.wait_for(_exchange(reader, writer, payload), 10) == payload
                writer.close()
            finally:
                await forward.close()
            # a server the CA does not vouch for is refused
            configuration.ssl_ca_cert = None
            with pytest.raises(PortForwardError, match="cannot reach the API server"):
                await PodPortForward(configuration, "ns", "pod", 8081).probe()
        finally:
            await runner.cleanup()

    _run(main())
    assert seen == {"authorization": "Bearer t0ken", "path": "/api/v1/namespaces/ns/pods/pod/portforward?ports=8081"}
