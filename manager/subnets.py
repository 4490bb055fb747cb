"""Pure subnet arithmetic for the traffic-manager's cluster discovery.

Nothing here does I/O: the functions take addresses, networks and API-server
messages and return networks, so the rules can be tested as plain functions.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

__all__ = [
    "IPAddress",
    "IPNetwork",
    "InvalidCIDR",
    "cover_ips",
    "drop_covered",
    "fallback_service_cidr",
    "fallback_service_cidrs",
    "parse_cidr",
    "parse_service_cidr_error",
    "parse_service_cidrs_error",
    "sort_key",
]

# Pod IPs are grouped per /16 (IPv4) or /64 (IPv6) before covering, so that
# pods in unrelated ranges do not merge into one huge route.
_COVER_GROUP_PREFIX = {4: 16, 6: 64}
# A covering network is never narrower than this. Pods come and go inside a
# node's block; a /32 per lone pod would churn the client's routes and miss the
# next pod scheduled next to it. Like Telepresence we never split on the last
# byte of the address.
_COVER_MAX_PREFIX = {4: 24, 6: 120}

# Width of the fallback service network built from known ClusterIPs.
#  * IPv4 /16: the reference behaviour, and it covers the common defaults
#    (k3s 10.43.0.0/16, most managed clusters). The widest range an API server
#    accepts (/12) would claim a million addresses of 10/8 and collide with
#    VPNs far more often.
#  * IPv6 /108: the API server refuses IPv6 service ranges wider than /108, and
#    CIDRs nest, so the /108 around any ClusterIP is guaranteed to contain the
#    whole range (kind's fd00:10:96::/112, for instance). Over-claiming inside
#    a ULA /108 costs nothing in practice.
_FALLBACK_PREFIX = {4: 16, 6: 108}
# The widest service range an API server allows per family (--service-cluster-ip-range).
_WIDEST_SERVICE_RANGE = {4: 12, 6: 108}

_SERVICE_RANGE_MARKER = re.compile(r"range of valid IPs is\s*", re.IGNORECASE)
# Characters that can make up a CIDR token; anything else ends the list.
_CIDR_TOKEN = re.compile(r"[0-9A-Fa-f:.]+/\d{1,3}")


class InvalidCIDR(ValueError):
    """A CIDR given by a user or a config source is malformed.

    ``value`` is the text as given, ``reason`` says what is wrong with it and
    ``what`` names the setting it was for (may be empty).
    """

    def __init__(self, value: str, reason: str, what: str = "") -> None:
        self.value = value
        self.reason = reason
        self.what = what
        super().__init__(self._render(with_what=True))

    @property
    def detail(self) -> str:
        """The message without the setting name, for callers that add their own context."""
        return self._render(with_what=False)

    def _render(self, *, with_what: bool) -> str:
        where = f" in {self.what}" if with_what and self.what else ""
        return f'invalid CIDR "{self.value}"{where}: {self.reason}'


def sort_key(net: IPNetwork) -> tuple[int, int, int]:
    """Deterministic order: IPv4 before IPv6, then by address, then wider first."""
    return (net.version, int(net.network_address), net.prefixlen)


def parse_cidr(text: str, *, what: str) -> IPNetwork:
    """Parse ``text`` as a CIDR, strictly.

    A bare address is refused (say ``/32`` if that is meant), and so is a
    network with host bits set, because ``10.1.2.3/16`` is almost always a typo
    for something and guessing which is worse than asking.
    """
    raw = text
    text = text.strip() if isinstance(text, str) else text
    if not isinstance(text, str):
        raise InvalidCIDR(str(raw), f"expected a string, got {type(raw).__name__}", what)
    if not text:
        raise InvalidCIDR(raw, "empty value", what)
    addr_text, slash, prefix_text = text.partition("/")
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        raise InvalidCIDR(raw, f'"{addr_text}" is not an IP address', what) from None
    if isinstance(addr, IPv6Address) and addr.scope_id:
        # A zone (fe80::1%eth0) only means something on one host; it cannot name a cluster route.
        raise InvalidCIDR(raw, f'"{addr_text}" has a zone index; use the address without "%{addr.scope_id}"', what)
    if not slash:
        raise InvalidCIDR(raw, f"missing prefix length (write {addr}/{addr.max_prefixlen} for one address)", what)
    if not (prefix_text.isascii() and prefix_text.isdigit()):
        raise InvalidCIDR(raw, f'prefix length "{prefix_text}" is not a number', what)
    prefix = int(prefix_text)
    if prefix > addr.max_prefixlen:
        raise InvalidCIDR(
            raw, f"prefix length {prefix} is out of range for IPv{addr.version} (0-{addr.max_prefixlen})", what
        )
    net = ipaddress.ip_network((addr, prefix), strict=False)
    if net.network_address != addr:
        raise InvalidCIDR(raw, f"{addr}/{prefix} has host bits set; did you mean {net}?", what)
    return net


def parse_service_cidrs_error(message: str) -> list[IPNetwork]:
    """Every service CIDR named in an API server's refusal of ClusterIP 1.1.1.1.

    The message ends ``The range of valid IPs is <CIDR>``. Clusters with
    several ServiceCIDR objects (MultiCIDRServiceAllocator) list them separated
    by spaces, with a trailing space; we also accept commas. Returns them
    sorted (IPv4 first), or an empty list when the message holds none.
    """
    if not isinstance(message, str):
        return []
    found: list[IPNetwork] = []
    for marker in _SERVICE_RANGE_MARKER.finditer(message):
        rest = message[marker.end() :]
        # Walk the tokens right after the marker; stop at the first that is not a CIDR,
        # so a sentence following the list cannot contribute stray values.
        for token in re.split(r"[\s,;]+", rest):
            token = token.strip("\"'()[]{}").rstrip(".")
            if not token:
                continue
            match = _CIDR_TOKEN.fullmatch(token)
            if match is None:
                break
            try:
                net = ipaddress.ip_network(token, strict=False)
            except ValueError:
                break
            if net not in found:
                found.append(net)
    return sorted(found, key=sort_key)


def parse_service_cidr_error(message: str) -> IPNetwork | None:
    """The service CIDR named in an API server's refusal of ClusterIP 1.1.1.1.

    Returns one network: the first IPv4 one when several are listed (dual-stack
    or multi-CIDR clusters), else the first IPv6 one, else ``None`` for a
    message that does not carry the ``range of valid IPs is`` phrase. Use
    :func:`parse_service_cidrs_error` to get all of them.
    """
    found = parse_service_cidrs_error(message)
    return found[0] if found else None


def _as_address(ip: str | IPAddress) -> IPAddress:
    return ip if isinstance(ip, IPv4Address | IPv6Address) else ipaddress.ip_address(str(ip).strip())


def _smallest_cover(lo: int, hi: int, version: int) -> IPNetwork:
    bits = 32 if version == 4 else 128
    prefix = bits - (lo ^ hi).bit_length()
    if version == 4:
        return IPv4Network((lo, prefix), strict=False)
    return IPv6Network((lo, prefix), strict=False)


def fallback_service_cidrs(cluster_ips: Iterable[str | IPAddress]) -> list[IPNetwork]:
    """Guess the service network(s) from ClusterIPs that are known to exist.

    Per address family: the smallest network covering all known ClusterIPs,
    widened to at least /16 (IPv4) or /108 (IPv6) — see ``_FALLBACK_PREFIX``.
    Covering all of them (not just one) finds e.g. kubeadm's 10.96.0.0/12 when
    services are spread over it. If the cover is wider than any single service
    range an API server allows, the IPs come from several ranges, and each
    /16 (/108) group is returned instead. Unparseable values and ``None``
    (headless services) are skipped.
    """
    by_family: dict[int, list[int]] = {4: [], 6: []}
    for raw in cluster_ips:
        if raw is None or str(raw).strip() in ("", "None"):
            continue
        try:
            addr = _as_address(raw)
        except ValueError:
            continue
        by_family[addr.version].append(int(addr))
    result: list[IPNetwork] = []
    for version, ints in by_family.items():
        if not ints:
            continue
        width = _FALLBACK_PREFIX[version]
        cover = _smallest_cover(min(ints), max(ints), version)
        if cover.prefixlen >= _WIDEST_SERVICE_RANGE[version]:
            result.append(cover if cover.prefixlen <= width else cover.supernet(new_prefix=width))
            continue
        groups = {_smallest_cover(i, i, version).supernet(new_prefix=width) for i in ints}
        result.extend(groups)
    return sorted(result, key=sort_key)


def fallback_service_cidr(cluster_ips: Iterable[str | IPAddress]) -> IPNetwork | None:
    """The preferred (IPv4 first) of :func:`fallback_service_cidrs`, or ``None`` without ClusterIPs."""
    found = fallback_service_cidrs(cluster_ips)
    return found[0] if found else None


def cover_ips(ips: Iterable[str | IPAddress]) -> list[IPNetwork]:
    """Smallest covering networks of a set of pod IPs.

    IPs are grouped per /16 (IPv4) or /64 (IPv6); each group becomes the
    smallest network that covers all its IPs, but never narrower than /24
    (IPv4) or /120 (IPv6) — see ``_COVER_MAX_PREFIX``. Sorted, IPv4 first.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for raw in ips:
        addr = _as_address(raw)
        shift = addr.max_prefixlen - _COVER_GROUP_PREFIX[addr.version]
        value = int(addr)
        groups.setdefault((addr.version, value >> shift), []).append(value)
    result: list[IPNetwork] = []
    for (version, _), values in groups.items():
        net = _smallest_cover(min(values), max(values), version)
        if net.prefixlen > _COVER_MAX_PREFIX[version]:
            net = net.supernet(new_prefix=_COVER_MAX_PREFIX[version])
        result.append(net)
    return sorted(result, key=sort_key)


def drop_covered(subnets: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Remove subnets equal to or covered by another one; sorted, IPv4 first.

    Subnets of different families never cover each other.
    """
    kept: list[IPNetwork] = []
    # Widest first, so each candidate only needs checking against what is kept.
    for net in sorted(set(subnets), key=lambda n: (n.version, n.prefixlen, int(n.network_address))):
        if not any(k.version == net.version and net.subnet_of(k) for k in kept):  # type: ignore[arg-type]
            kept.append(net)
    return sorted(kept, key=sort_key)
