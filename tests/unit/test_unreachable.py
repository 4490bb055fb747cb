"""The words for an API server the Kubernetes client cannot reach: real client calls, a real pproxy on loopback,
and one-answer proxies for the refusals pproxy does not make (a 403 to CONNECT, a SOCKS5 error reply)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import kubernetes
import pytest

from tests.proxy_servers import ProxyServer
from tether.helper.api.proxies import parse_proxy_url
from tether.helper.root.kube.unreachable import describe_unreachable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failure(server: str, proxy: str | None) -> BaseException:
    configuration = kubernetes.client.Configuration()
    configuration.host = server
    configuration.proxy = proxy
    configuration.retries = 0
    client = kubernetes.client.ApiClient(configuration)
    try:
        with pytest.raises(Exception) as caught:
            kubernetes.client.CoreV1Api(client).list_namespace(_request_timeout=10)
    finally:
        client.close()
    return caught.value


def _words(server: str, proxy: str | None) -> str:
    words = describe_unreachable(_failure(server, proxy), server, parse_proxy_url(proxy, "p") if proxy else None)
    assert words is not None
    return words


@contextlib.contextmanager
def _answering(reply: bytes, handshake: bytes = b"") -> Iterator[int]:
    """A proxy that reads the client's first message, sends ``handshake`` if any, reads again, then ``reply``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                if handshake:
                    conn.sendall(handshake)
                    conn.recv(4096)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


@pytest.mark.parametrize("scheme", ["socks5", "http"])
def test_a_proxy_that_refuses_is_named_not_the_server_and_its_credentials_are_masked(scheme):
    port = _free_port()  # nobody listens
    server = f"http://127.0.0.1:{_free_port()}"
    words = _words(server, f"{scheme}://alice:s3cret@127.0.0.1:{port}")
    assert words == (
        f"cannot reach the API server {server} through the proxy {scheme}://***@127.0.0.1:{port}: "
        "the proxy refused the connection"
    )


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "http"])
def test_a_proxy_that_cannot_reach_the_server_says_so(scheme):
    server = f"http://127.0.0.1:{_free_port()}"  # closed: pproxy drops the client's connection
    ports = {"socks5": _free_port(), "http": _free_port()}
    with ProxyServer([f"{kind}://127.0.0.1:{port}" for kind, port in ports.items()]):
        proxy = f"{scheme}://127.0.0.1:{ports[scheme.rstrip('h')]}"
        words = _words(server, proxy)
    assert words == (
        f"cannot reach the API server {server} through the proxy {proxy}: "
        "the proxy closed the connection without an answer (can it reach the API server?)"
    )


def test_a_refused_tunnel_quotes_the_proxy_answer():
    server = "https://127.0.0.1:6443"  # https: urllib3 asks for a CONNECT tunnel
    with _answering(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n") as port:
        words = _words(server, f"http://127.0.0.1:{port}")
    assert words.endswith(f"through the proxy http://127.0.0.1:{port}: the proxy refused the tunnel: 403 Forbidden")


def test_a_socks_error_reply_is_worded():
    # method "no authentication", then reply 0x05 ("connection refused") to the CONNECT request
    reply = b"\x05\x05\x00\x01" + bytes(6)
    with _answering(reply, handshake=b"\x05\x00") as port:
        words = _words("http://10.0.0.1:6443", f"socks5://127.0.0.1:{port}")
    assert words == (
        f"cannot reach the API server http://10.0.0.1:6443 through the proxy socks5://127.0.0.1:{port}: "
        "the proxy could not open the connection: connection refused"
    )


def test_a_direct_refusal_names_the_server():
    server = f"http://127.0.0.1:{_free_port()}"
    assert _words(server, None) == f"cannot reach the API server {server}: connection refused"


def test_other_errors_are_left_to_their_own_words():
    assert describe_unreachable(ValueError("bad"), "http://x:1", None) is None
    assert describe_unreachable(ConnectionRefusedError(111, "refused"), "http://x:1", None) is None
