"""Which proxy carries the connection to an API server, decided the way kubectl decides it (pure logic).

kubectl (client-go over Go's net/http) takes the cluster entry's ``proxy-url`` when the kubeconfig has one,
whatever the environment says; otherwise the proxy environment: ``HTTPS_PROXY`` for an https:// server,
``HTTP_PROXY`` for an http:// one (the upper-case name wins over the lower-case one when both are set),
unless ``NO_PROXY`` exempts the server or the server is ``localhost`` or a loopback address, which are never
proxied. ``NO_PROXY`` is a comma-separated list of: ``*`` (nothing is proxied), IP addresses, CIDRs, domain
names (``example.com`` matches it and every name under it; ``.example.com`` only the names under it), each
optionally with ``:port`` (then only that port matches).

Proxy URLs may use http, https, socks5 or socks5h (the proxy resolves the name); an environment value without
a scheme means http, as in Go. Credentials in a proxy URL are never shown: ``ProxyURL.masked`` replaces them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

SCHEMES = ("http", "https", "socks5", "socks5h")
DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
MAX_PROXY_URL = 2048
MAX_NO_PROXY = 16 * 1024


class ProxyError(ValueError):
    """A proxy setting cannot be used; the message names the setting and its (masked) value."""


@dataclass(frozen=True)
class ProxyURL:
    scheme: str
    host: str  # without brackets for IPv6
    port: int
    username: str = ""
    password: str = ""

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The full URL, credentials included: for the client libraries only, never for showing."""
        auth = ""
        if self.username or self.password:
            auth = quote(self.username, safe="") + (":" + quote(self.password, safe="") if self.password else "") + "@"
        return f"{self.scheme}://{auth}{self.hostport}"

    @property
    def masked(self) -> str:
        """The URL as it may be shown and logged."""
        auth = "***@" if self.username or self.password else ""
        return f"{self.scheme}://{auth}{self.hostport}"

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"ProxyURL({self.masked!r})"


def mask(text: str) -> str:
    """``text`` with anything between ``://`` and the last ``@`` of its authority replaced: safe to show."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    shown = (scheme + sep if sep else "") + authority + slash + path
    return "".join(c if c.isprintable() else "?" for c in shown[:200])


def parse_proxy_url(text: str, setting: str, *, default_scheme: str = "") -> ProxyURL:
    """The proxy URL in ``text``; ``setting`` names where it came from, for the error.

    ``default_scheme``: taken when ``text`` has none (the environment's ``proxy.corp:3128`` means http)."""
    where = f'{setting} "{mask(text)}"'
    if len(text) > MAX_PROXY_URL:
        raise ProxyError(f"{setting}: {len(text)} characters, a proxy URL has at most {MAX_PROXY_URL}")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise ProxyError(f"{where} contains spaces or control characters")
    if "://" not in text and default_scheme:
        text = f"{default_scheme}://{text}"
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ProxyError(f"{where} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f'scheme "{scheme}"' if scheme else "no scheme"
        raise ProxyError(f"{where} has {shown}; a proxy URL's scheme must be one of {', '.join(SCHEMES)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyError(f"{where}: a proxy URL is scheme://[user:password@]host[:port], with no path or query")
    host = parts.hostname or ""
    if not host:
        raise ProxyError(f"{where} names no host")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2].rpartition(":")[2]
        raise ProxyError(f'{where} has port "{port_text}", not a number from 1 to 65535') from None
    if port == 0:
        raise ProxyError(f'{where} has port "0", not a number from 1 to 65535')
    return ProxyURL(
        scheme=scheme,
        host=host,
        port=port or DEFAULT_PORTS[scheme],
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


@dataclass(frozen=True)
class ProxyEnvironment:
    """The proxy variables of the user's environment, as the client found them."""

    https_proxy: str = ""
    http_proxy: str = ""
    no_proxy: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyEnvironment:
        def first(*names: str) -> str:
            return next((environ[n] for n in names if environ.get(n)), "")

        return cls(
            https_proxy=first("HTTPS_PROXY", "https_proxy"),
            http_proxy=first("HTTP_PROXY", "http_proxy"),
            no_proxy=first("NO_PROXY", "no_proxy"),
        )

    def check(self) -> ProxyEnvironment:
        """Raise ProxyError for a value that cannot be used (naming the variable); else return self."""
        for name, value in (("HTTPS_PROXY", self.https_proxy), ("HTTP_PROXY", self.http_proxy)):
            if value:
                parse_proxy_url(value, name, default_scheme="http")
        if len(self.no_proxy) > MAX_NO_PROXY:
            raise ProxyError(f"NO_PROXY: {len(self.no_proxy)} characters, at most {MAX_NO_PROXY} are allowed")
        if not self.no_proxy.isprintable():
            raise ProxyError(f'NO_PROXY "{mask(self.no_proxy)}" contains control characters')
        return self


def _split_port(entry: str) -> tuple[str, int | None]:
    """(host part, port or None) of a NO_PROXY entry: ``host:port``, ``[v6]:port``, a bare v6 address."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port) if port.isdigit() else None
    return entry, None


def bypasses(host: str, port: int, no_proxy: str, *, loopback: bool = True) -> bool:
    """Whether ``NO_PROXY`` (or, with ``loopback``, Go's rule that localhost is never proxied) exempts
    ``host:port`` from the proxy environment."""
    host = host.lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if loopback and (host == "localhost" or (address is not None and address.is_loopback)):
        return True
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            if address is not None:
                try:
                    if address in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    pass  # not a CIDR: Go skips it too
            continue
        name, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        try:
            entry_address = ipaddress.ip_address(name)
        except ValueError:
            entry_address = None
        if entry_address is not None:  # an IP entry matches only that address
            if entry_address == address:
                return True
            continue
        if name.startswith("*."):
            name = name[1:]
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif name and (host == name or host.endswith("." + name)):
            return True
    return False


def choose_proxy(server: str, kubeconfig_proxy_url: str, environment: ProxyEnvironment) -> ProxyURL | None:
    """The proxy for the API server at ``server`` (a URL), or None to connect directly.

    Raises ProxyError naming the setting when the one that applies cannot be used."""
    if kubeconfig_proxy_url:
        return parse_proxy_url(kubeconfig_proxy_url, "the kubeconfig's proxy-url")
    try:
        parts = urlsplit(server)
        port = parts.port
    except ValueError:
        raise ProxyError(f'the API server "{mask(server)}" is not a URL with a valid port') from None
    secure = parts.scheme.lower() != "http"
    name, value = ("HTTPS_PROXY", environment.https_proxy) if secure else ("HTTP_PROXY", environment.http_proxy)
    if not value:
        return None
    if bypasses(parts.hostname or "", port or (443 if secure else 80), environment.no_proxy):
        return None
    return parse_proxy_url(value, name, default_scheme="http")
