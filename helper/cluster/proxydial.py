"""Open a connection to the API server through a proxy and hand it to an asyncio protocol.

The port-forward's websocket dials its own TCP connection (the Kubernetes client's proxy settings cover
only its REST calls), so it goes through the proxy here: an HTTP CONNECT tunnel (over TLS to the proxy for
an https:// proxy URL, verified against the system's CAs) or SOCKS5 (``socks5h``: the proxy resolves the
server's name; ``socks5``: we do). ``python-socks`` speaks the proxy protocols; once the tunnel stands, its
transport is given to the caller's protocol, after a TLS handshake with the API server when the server is
https://, so what follows is the same as on a direct connection.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

from python_socks import ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio.v2 import Proxy

from tether.helper.api.proxies import ProxyURL


class ProxyDialError(ConnectionError):
    """The proxy could not be reached or refused the tunnel; the text names the proxy (credentials masked)."""


def _proxy_client(proxy: ProxyURL) -> Proxy:
    socks = proxy.scheme in ("socks5", "socks5h")
    return Proxy(
        ProxyType.SOCKS5 if socks else ProxyType.HTTP,
        proxy.host,
        proxy.port,
        username=proxy.username or None,
        password=proxy.password or None,
        rdns=proxy.scheme == "socks5h",
        proxy_ssl=ssl.create_default_context() if proxy.scheme == "https" else None,
    )


async def connect_via_proxy(
    proxy: ProxyURL,
    host: str,
    port: int,
    protocol: asyncio.Protocol,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 30.0,
) -> tuple[asyncio.Transport, object]:
    """A connection to ``host:port`` through ``proxy``, with ``protocol`` made its protocol (and its
    ``connection_made`` called), TLS to the server when ``ssl_context`` is given.

    Returns the transport and an owner the caller must keep as long as the connection lives: the proxy
    client's stream, whose writer closes the transport when it is collected."""
    loop = asyncio.get_running_loop()
    try:
        stream = await _proxy_client(proxy).connect(host, port, timeout=timeout)
    except (ProxyError, ProxyTimeoutError, OSError, ssl.SSLError) as exc:
        raise ProxyDialError(f"through the proxy {proxy.masked}: {_detail(exc, proxy)}") from None
    transport = cast(asyncio.Transport, stream.writer.transport)
    if ssl_context is None:
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        return transport, stream
    try:
        tls = await asyncio.wait_for(
            loop.start_tls(transport, protocol, ssl_context, server_hostname=server_hostname or host), timeout
        )
    except BaseException:
        transport.abort()
        raise
    assert tls is not None
    protocol.connection_made(tls)
    return tls, stream


def _detail(exc: BaseException, proxy: ProxyURL) -> str:
    text = str(exc) or type(exc).__name__
    # python-socks names the proxy by host and port only; this keeps it so if that ever changes.
    for secret in (proxy.password, proxy.username):
        if secret:
            text = text.replace(secret, "***")
    return text
