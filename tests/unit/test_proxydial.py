"""The port-forward's websocket, and the Kubernetes client's calls, through a real proxy (pproxy on loopback)."""

import asyncio
import copy
import os
import socket
import socketserver
import threading

import kubernetes
import pytest

from tests.doubles.certs import self_signed
from tests.proxy_servers import ProxyServer
from tether.helper.api.proxies import parse_proxy_url
from tether.helper.cluster.portforward import PodPortForward, PortForwardError
from tether.helper.cluster.proxydial import ProxyDialError, connect_via_proxy
from tether.lab.apiserver.server import LabApiServerThread
from tether.runtime import eventloop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def proxy():
    ports = {"http": _free_port(), "socks5": _free_port()}
    with ProxyServer([f"{scheme}://127.0.0.1:{port}" for scheme, port in ports.items()]) as server:
        server.ports = ports
        yield server


@pytest.fixture(scope="module")
def api():
    with LabApiServerThread(service_cidr="10.96.0.0/16") as srv:
        client = kubernetes.config.new_client_from_config_dict(srv.kubeconfig())
        yield srv, client.configuration
        client.close()


@pytest.fixture(scope="module")
def echo_pod(api):
    echo = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    echo.daemon_threads = True
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    v1 = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(api[1]))
    v1.create_namespace({"metadata": {"name": "proxied"}})
    v1.create_namespaced_pod(
        "proxied",
        {
            "metadata": {"name": "echo"},
            "spec": {"containers": [{"name": "main", "image": "lab/app:1"}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        },
    )
    yield echo.server_address[1]
    echo.shutdown()
    echo.server_close()


def _through(configuration, url):
    proxied = copy.copy(configuration)
    proxied.proxy = url
    return proxied


def _api_port(configuration) -> str:
    return configuration.host.rpartition(":")[2]


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
def test_port_forward_goes_through_the_proxy(scheme, proxy, api, echo_pod, each_event_loop):
    configuration = _through(api[1], f"{scheme}://127.0.0.1:{proxy.ports[scheme.rstrip('h')]}")
    before = len(proxy.connections())

    async def main():
        forward = PodPortForward(configuration, "proxied", "echo", echo_pod)
        host_port = await forward.listen_tcp()
        try:
            host, _, port = host_port.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            payload = os.urandom(300_000)
            writer.write(payload)
            assert await asyncio.wait_for(reader.readexactly(len(payload)), 10) == payload
            writer.close()
        finally:
            await forward.close()

    eventloop.run(main())
    carried = proxy.connections()[before:]
    assert (scheme.rstrip("h"), f"127.0.0.1:{_api_port(configuration)}") in carried


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
def test_kubernetes_client_calls_go_through_the_proxy(scheme, proxy, api):
    configuration = _through(api[1], f"{scheme}://127.0.0.1:{proxy.ports[scheme.rstrip('h')]}")
    before = len(proxy.connections())
    client = kubernetes.client.ApiClient(configuration)
    try:
        names = {ns.metadata.name for ns in kubernetes.client.CoreV1Api(client).list_namespace().items}
    finally:
        client.close()
    assert "default" in names
    carried = proxy.connections()[before:]
    assert (scheme.rstrip("h"), f"127.0.0.1:{_api_port(configuration)}") in carried


def test_an_unreachable_proxy_fails_clearly_without_its_credentials(api, each_event_loop):
    port = _free_port()  # nothing listens there
    configuration = _through(api[1], f"http://alice:s3cret@127.0.0.1:{port}")

    async def main():
        with pytest.raises(PortForwardError) as caught:
            await PodPortForward(configuration, "proxied", "echo", 80).probe()
        return str(caught.value)

    message = eventloop.run(main())
    assert f"through the proxy http://***@127.0.0.1:{port}" in message
    assert "s3cret" not in message and "alice" not in message


def test_a_proxy_that_refuses_the_tunnel_is_named(each_event_loop):
    """A CONNECT answered with 403 (a proxy's policy) is an error naming the proxy and the refusal."""

    async def refuse(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            proxy = parse_proxy_url(f"http://127.0.0.1:{port}", "x")
            with pytest.raises(ProxyDialError) as caught:
                await connect_via_proxy(proxy, "10.0.0.1", 443, asyncio.Protocol(), timeout=5)
            return str(caught.value)
        finally:
            server.close()

    message = eventloop.run(main())
    assert "through the proxy http://127.0.0.1:" in message and "403" in message


def test_an_https_proxy_is_reached_over_tls_and_verified(api, echo_pod, tmp_path, monkeypatch, each_event_loop):
    """https:// proxies: TLS to the proxy, verified against the system's CAs (here SSL_CERT_FILE's)."""
    cert_file, key_file = self_signed(tmp_path)
    port = _free_port()
    configuration = _through(api[1], f"https://127.0.0.1:{port}")

    async def main():
        forward = PodPortForward(configuration, "proxied", "echo", echo_pod)
        await forward.probe()
        await forward.close()

    with ProxyServer([f"http+ssl://127.0.0.1:{port}"], ssl_files=(cert_file, key_file)) as server:
        with pytest.raises(PortForwardError, match=f"through the proxy https://127.0.0.1:{port}.*certificate"):
            eventloop.run(main())  # the proxy's certificate is not one the system trusts
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        eventloop.run(main())
        assert ("http", f"127.0.0.1:{_api_port(configuration)}") in server.connections()
