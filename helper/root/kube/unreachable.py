"""The words for a Kubernetes client call that could not reach the API server, directly or through a proxy.

The Kubernetes client (urllib3, with PySocks for SOCKS) raises ``MaxRetryError`` around the real cause and
names the *target* in its text even when it was the proxy that refused: a SOCKS proxy that is down reads as
"SOCKSConnection(host=<API server>): Connection refused". ``describe_unreachable`` follows the exception
chain to the cause and says who failed: the proxy itself (refused, silent, unknown name), the proxy's answer
(a refused tunnel, a SOCKS error, a connection closed without an answer) or the API server. The proxy is
shown by its masked URL only; the texts quoted from the libraries carry no credentials (PySocks names the
proxy by host and port, a refused tunnel by its status line).
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import socks
import urllib3.exceptions

from tether.helper.api.proxies import ProxyURL

_CHAIN_LIMIT = 12
_TUNNEL_FAILED = "Tunnel connection failed: "


def describe_unreachable(exc: BaseException, server: str, proxy: ProxyURL | None) -> str | None:
    """One line naming the API server (and the proxy, masked) and why, or None when ``exc`` is not the
    Kubernetes client failing to reach the server (it is then worded elsewhere)."""
    if not isinstance(exc, urllib3.exceptions.HTTPError):
        return None
    chain = list(_chain(exc))
    where = f"the API server {server}" + (f" through the proxy {proxy.masked}" if proxy else "")
    reason = _through_proxy(chain) if proxy else None
    return f"cannot reach {where}: {reason or _direct(chain)}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(current))
        yield current
        # urllib3 keeps its causes in attributes of its own, not in __cause__
        nested = getattr(current, "reason", None) if isinstance(current, urllib3.exceptions.MaxRetryError) else None
        if nested is None and isinstance(current, urllib3.exceptions.ProxyError):
            nested = current.original_error
        if nested is None and isinstance(current, urllib3.exceptions.ProtocolError) and len(current.args) > 1:
            nested = current.args[1] if isinstance(current.args[1], BaseException) else None
        if nested is None and isinstance(current, socks.ProxyError):  # PySocks wraps a SOCKS reply in "Socket error"
            nested = current.socket_err
        current = nested or current.__cause__ or current.__context__


def _through_proxy(chain: list[BaseException]) -> str | None:
    for exc in chain:
        if isinstance(exc, socks.ProxyConnectionError):  # PySocks: the SOCKS proxy itself was not reached
            return _at_the_proxy(exc.socket_err)
        if isinstance(exc, socks.SOCKS5AuthError):
            return f"the proxy refused the credentials ({_socks_words(exc)})"
        if isinstance(exc, socks.SOCKS5Error | socks.SOCKS4Error):
            return f"the proxy could not open the connection: {_socks_words(exc)}"
        if isinstance(exc, socks.GeneralProxyError) and exc.socket_err is None:
            return f"the proxy failed: {_socks_words(exc)}"
        if isinstance(exc, urllib3.exceptions.ProxyError):  # an HTTP proxy: not reached, or its answer
            original = exc.original_error
            if isinstance(original, OSError) and str(original).startswith(_TUNNEL_FAILED):
                return f"the proxy refused the tunnel: {str(original)[len(_TUNNEL_FAILED) :].strip()}"
            if isinstance(original, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError):
                return _at_the_proxy(_root_os_error(chain) or original)
        if isinstance(exc, http.client.RemoteDisconnected):
            return "the proxy closed the connection without an answer (can it reach the API server?)"
    return None


def _at_the_proxy(error: BaseException | None) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "the proxy refused the connection"
    if _timed_out(error):
        return "the proxy did not answer in time"
    return f"cannot connect to the proxy: {_os_words(error)}"


def _timed_out(error: BaseException | None) -> bool:
    # urllib3 2 derives NewConnectionError (any failed connect) from ConnectTimeoutError: not a timeout
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        return False
    return isinstance(error, TimeoutError | urllib3.exceptions.TimeoutError)


def _direct(chain: list[BaseException]) -> str:
    if any(_timed_out(exc) for exc in chain):
        return "timed out"
    if any(isinstance(exc, http.client.RemoteDisconnected) for exc in chain):
        return "the connection was closed without an answer"
    return _os_words(_root_os_error(chain) or chain[-1])


def _root_os_error(chain: list[BaseException]) -> OSError | None:
    # the last OSError of the chain is the socket's own (urllib3's wrappers are OSErrors too)
    found = [exc for exc in chain if isinstance(exc, OSError) and not isinstance(exc, urllib3.exceptions.HTTPError)]
    return found[-1] if found else None


def _os_words(error: BaseException | None) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, socket.gaierror):
        return f"the name cannot be resolved ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    if error is None:
        return "unknown error"
    return str(error) or type(error).__name__


def _socks_words(exc: socks.ProxyError) -> str:
    # PySocks writes "0x05: Connection refused": the code is for the proxy's log, the words are for the user
    text = exc.msg.partition(": ")[2] if exc.msg.startswith("0x") else exc.msg
    return text[:1].lower() + text[1:] if text else type(exc).__name__
