"""Checks on everything a client sends the helper (pure: no I/O).

Each check raises ``ValidationError`` with a message that names the field and the offending value;
the server answers those with INVALID_ARGUMENT. The CLI and tray use the same functions to refuse bad
input before calling.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from tether.helper.api.dnsmodes import PLATFORM_MODES, Mode, platform_family
from tether.helper.api.proxies import ProxyEnvironment, ProxyError
from tether.helper.api.proxyvia import ProxyViaError, parse_proxy_vias

MAX_KUBECONFIG_BYTES = 1024 * 1024
MAX_CIDRS = 256
MAX_NAMESPACES = 256
MAX_ENV_VARS = 4096
MAX_ENV_BYTES = 1024 * 1024
MAX_CONTEXT_NAME = 253
MAX_CLIENT_NAME = 64
MAX_SUFFIXES = 256
MAX_DNS_NAME = 253

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")


class ValidationError(ValueError):
    """Bad input; the message names the value."""


def _shown(value: str, limit: int = 80) -> str:
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text) if any(not c.isprintable() for c in text) or not text else f'"{text}"'


def cidr(value: str, field: str = "subnet") -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR with no host bits set; "10.1.2.3/16" is refused with a hint to use "10.1.0.0/16"."""
    text = value.strip()
    if not text or text != value:
        raise ValidationError(f"{field}: {_shown(value)} is not a CIDR (expected e.g. 10.0.0.0/8)")
    if "/" not in text:
        try:
            host = ipaddress.ip_address(text)
        except ValueError:
            raise ValidationError(f"{field}: {_shown(value)} is not a CIDR (expected e.g. 10.0.0.0/8)") from None
        raise ValidationError(
            f"{field}: {_shown(value)} has no prefix length (expected e.g. {text}/{host.max_prefixlen})"
        )
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValidationError(f"{field}: {_shown(value)} is not a CIDR (expected e.g. 10.0.0.0/8)") from None
    raise ValidationError(f"{field}: {_shown(value)} has host bits set; did you mean {network}?")


def cidrs(values: Iterable[str], field: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    items = list(values)
    if len(items) > MAX_CIDRS:
        raise ValidationError(f"{field}: {len(items)} subnets given, at most {MAX_CIDRS} are allowed")
    return [cidr(v, field) for v in items]


def proxy_vias(values: Iterable[str]) -> None:
    """--proxy-via values, checked alone and against each other (overlaps, repeated symbols)."""
    items = list(values)
    if len(items) > MAX_CIDRS:
        raise ValidationError(f"proxy-via: {len(items)} values given, at most {MAX_CIDRS} are allowed")
    try:
        parse_proxy_vias(items)
    except ProxyViaError as exc:
        raise ValidationError(str(exc)) from None


def namespace(value: str, field: str = "namespace", *, allow_empty: bool = True) -> str:
    """A Kubernetes namespace name: a DNS-1123 label (lower-case letters, digits, '-'; at most 63)."""
    if not value and allow_empty:
        return value
    if len(value) > 63 or not _LABEL.fullmatch(value):
        raise ValidationError(
            f"{field}: {_shown(value)} is not a valid namespace name (a DNS-1123 label: at most 63 lower-case "
            "letters, digits or '-', starting and ending with a letter or digit)"
        )
    return value


def namespaces(values: Iterable[str], field: str = "mapped namespaces") -> list[str]:
    items = list(values)
    if len(items) > MAX_NAMESPACES:
        raise ValidationError(f"{field}: {len(items)} namespaces given, at most {MAX_NAMESPACES} are allowed")
    return [namespace(v, field, allow_empty=False) for v in items]


def context_name(value: str, field: str = "context") -> str:
    """A kubeconfig context name: any printable text up to 253 characters (empty: the current context)."""
    if len(value) > MAX_CONTEXT_NAME:
        raise ValidationError(f"{field}: {_shown(value)} is longer than {MAX_CONTEXT_NAME} characters")
    if not value.isprintable():
        raise ValidationError(f"{field}: {_shown(value)} contains control characters")
    return value


def is_ascii_number(text: str) -> bool:
    """True for a non-empty run of the digits 0-9 only. ``str.isdigit`` alone also accepts "³" (which
    ``int`` then refuses with an uncaught ValueError) and "٣" (which ``int`` silently reads as 3)."""
    return text.isascii() and text.isdigit()


def port_number(text: str, field: str = "port", *, within: str | None = None, allow_zero: bool = False) -> int:
    """A TCP/UDP port written in the digits 0-9, from 1 (or 0 with ``allow_zero``) to 65535."""
    where = f" in {_shown(within)}" if within is not None else ""
    if not is_ascii_number(text):
        raise ValidationError(f"{field} {_shown(text)}{where} is not a number written with the digits 0-9")
    port = int(text)
    lowest = 0 if allow_zero else 1
    if not lowest <= port <= 65535:
        raise ValidationError(f"{field} {text}{where} is not between {lowest} and 65535")
    return port


# gRPC reads a target starting with one of these as a local socket, not as HOST:PORT ("unix:80" is the file
# "80"): a group member could point the root helper at any socket on the machine.
_LOCAL_SOCKET_SCHEMES = ("unix:", "unix-abstract:")


def manager_address(value: str, field: str = "manager address") -> tuple[str, int]:
    """host:port, where host is a DNS name, an IPv4 address or a bracketed IPv6 address; never a unix socket."""
    if value.lower().startswith(_LOCAL_SOCKET_SCHEMES):
        raise ValidationError(
            f"{field}: {_shown(value)} names a local socket; the traffic-manager is reached over TCP only "
            "(HOST:PORT, e.g. tether-manager.tether:8081)"
        )
    host, sep, port_text = value.rpartition(":")
    bad = f"{field}: {_shown(value)} is not HOST:PORT (e.g. tether-manager.tether:8081 or [fd00::1]:8081)"
    if not sep or not host or not port_text:
        raise ValidationError(bad)
    port = port_number(port_text, f"{field}: port", within=value)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValidationError(f"{field}: {_shown(host)} in {_shown(value)} is not an IPv6 address") from None
        return host[1:-1], port
    if ":" in host:
        raise ValidationError(f"{field}: {_shown(value)}: put an IPv6 address in brackets, e.g. [{host}]:{port}")
    try:
        ipaddress.IPv4Address(host)
        return host, port
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(len(label) <= 63 and _HOST_LABEL.fullmatch(label) for label in labels):
        raise ValidationError(f"{field}: {_shown(host)} in {_shown(value)} is not a valid host name")
    return host, port


def env_name(value: str, field: str = "environment") -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValidationError(
            f"{field}: {_shown(value)} is not a valid variable name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return value


def environment(values: Mapping[str, str], field: str = "environment") -> dict[str, str]:
    if len(values) > MAX_ENV_VARS:
        raise ValidationError(f"{field}: {len(values)} variables given, at most {MAX_ENV_VARS} are allowed")
    total = 0
    for name, value in values.items():
        env_name(name, field)
        if "\0" in value:
            raise ValidationError(f"{field}: the value of {name} contains a NUL character")
        total += len(name.encode()) + len(value.encode()) + 2
    if total > MAX_ENV_BYTES:
        raise ValidationError(f"{field}: {total} bytes in all, at most {MAX_ENV_BYTES} are allowed")
    return dict(values)


def portable_environment(values: Mapping[str, str]) -> dict[str, str]:
    """The subset of an environment that ``environment()`` accepts (clients send this)."""
    return {k: v for k, v in values.items() if _ENV_NAME.fullmatch(k) and "\0" not in v}


def kubeconfig_text(value: str, field: str = "kubeconfig") -> str:
    if not value.strip():
        raise ValidationError(f"{field}: empty; send the kubeconfig of the context to connect to")
    size = len(value.encode())
    if size > MAX_KUBECONFIG_BYTES:
        raise ValidationError(f"{field}: {size} bytes, at most {MAX_KUBECONFIG_BYTES} (1 MiB) are allowed")
    return value


def client_name(value: str, field: str = "client name") -> str:
    if len(value) > MAX_CLIENT_NAME or not value.isprintable():
        raise ValidationError(f"{field}: {_shown(value)} must be printable and at most {MAX_CLIENT_NAME} characters")
    return value


def dns_suffix(value: str, field: str = "DNS suffix", *, allow_public: bool = True) -> str:
    """A domain suffix such as ".corp.example" or "corp.example"; returned in the dotted form ".corp.example".

    With ``allow_public`` False a public suffix or TLD (".com", ".dev", ".co.uk") is refused: sending
    all of it to the cluster would hand the cluster everyone's names under it."""
    text = value.strip().lower().rstrip(".")
    if text.startswith("."):
        text = text[1:]
    labels = text.split(".") if text else []
    if (
        not labels
        or len(text) > MAX_DNS_NAME
        or value != value.strip()
        or not all(len(label) <= 63 and _HOST_LABEL.fullmatch(label) for label in labels)
    ):
        raise ValidationError(
            f"{field}: {_shown(value)} is not a domain suffix (expected e.g. .corp.example: dot-separated labels "
            "of letters, digits and '-')"
        )
    if not allow_public:
        from tether.helper.api.suffixes import is_public_suffix  # deferred: the list is loaded on first use

        if is_public_suffix(text):
            raise ValidationError(
                f"{field}: {_shown(value)} is a public suffix (a TLD or a suffix anyone can register under); "
                "only a private domain may be sent to the cluster (e.g. .corp.example.com)"
            )
    return "." + text


def dns_suffixes(values: Iterable[str], field: str, *, allow_public: bool = True) -> list[str]:
    items = list(values)
    if len(items) > MAX_SUFFIXES:
        raise ValidationError(f"{field}: {len(items)} suffixes given, at most {MAX_SUFFIXES} are allowed")
    return [dns_suffix(v, field, allow_public=allow_public) for v in items]


def dns_mode(value: str, platform: str = sys.platform, field: str = "dns-mode") -> Mode | None:
    """A forced resolver mode (None when empty: the helper chooses); refused when unknown or not for this platform."""
    if not value:
        return None
    try:
        mode = Mode(value)
    except ValueError:
        known = ", ".join(m.value for m in Mode)
        raise ValidationError(f"{field}: {_shown(value)} is not a resolver mode (one of: {known})") from None
    usable = PLATFORM_MODES.get(platform_family(platform) or "", ())
    if mode not in usable:
        here = ", ".join(m.value for m in usable) or "none"
        raise ValidationError(f"{field}: {mode.value} does not exist on {platform} (modes here: {here})")
    return mode


def connect_request(request: Any) -> None:
    """Check every field of a ``ConnectRequest``; raise ValidationError on the first bad one."""
    kubeconfig_text(request.kubeconfig)
    context_name(request.context)
    namespace(request.namespace, "namespace")
    namespace(request.manager_namespace, "manager namespace")
    if request.manager_address:
        manager_address(request.manager_address)
    cidrs(request.also_proxy, "also-proxy")
    cidrs(request.never_proxy, "never-proxy")
    cidrs(request.allow_conflicting_subnets, "allow-conflicting-subnets")
    proxy_vias(request.proxy_via)
    if request.virtual_subnet:
        cidr(request.virtual_subnet, "virtual-subnet")
    namespaces(request.mapped_namespaces)
    dns_suffixes(request.dns_include_suffixes, "DNS include-suffixes", allow_public=False)
    dns_suffixes(request.dns_exclude_suffixes, "DNS exclude-suffixes")
    environment(dict(request.environment))
    proxy_environment(request.proxy_environment)
    client_name(request.client_name)
    dns_mode(request.dns_mode)


def proxy_environment(message: Any) -> ProxyEnvironment:
    """The caller's proxy variables from a ``ProxyEnvironment`` message, each proxy URL checked."""
    env = ProxyEnvironment(https_proxy=message.https_proxy, http_proxy=message.http_proxy, no_proxy=message.no_proxy)
    try:
        return env.check()
    except ProxyError as exc:
        raise ValidationError(str(exc)) from None
