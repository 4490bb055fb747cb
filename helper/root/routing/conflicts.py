"""VPN conflicts: which cluster subnets overlap a route the OS already has. Pure: no I/O.

A VPN (or a Docker bridge, or the home LAN) that routes a range overlapping a cluster subnet makes
routing that subnet into the TUN a choice between two networks: the longer prefix wins in the
kernel, so either hosts behind the other route become unreachable or part of the cluster does. We
refuse instead of choosing silently, and name each subnet and the route it collides with.

``find_conflicts(subnets, routes)``: a cluster subnet conflicts with an existing route whose
destination overlaps it (either contains the other), except

* default routes (``0.0.0.0/0``, ``::/0``) and the two ``/1`` halves some VPNs install to override
  the default route without replacing it (``0.0.0.0/1`` + ``128.0.0.0/1``, ``::/1`` + ``8000::/1``):
  they carry "everything else", and a more specific cluster route is what the user wants;
* our own routes: on one of our TUN devices (``own_devices``) or carrying our protocol number
  (``ROUTE_PROTO``, 126);
* a route exactly equal to the subnet (same prefix: applying ours then reports whose route it is);
* routes that are not unicast (``local``, ``broadcast``, ``multicast``, ``anycast``, ``blackhole``,
  ``unreachable``, ``prohibit``, ``throw``, …): the kernel's ``local`` table entries for the
  machine's own addresses are such, and none of them leads to hosts we would cut off;
* link-local and multicast destinations (``169.254.0.0/16``, ``fe80::/10``, ``224.0.0.0/4``,
  ``ff00::/8``): per-link, never a path to a network;
* subnets inside an ``allowed`` range (``allowConflictingSubnets``): the user has said the cluster
  may take that range over. A subnet only partly inside an allowed range still conflicts.

IPv4 and IPv6 never conflict with each other. The result is sorted (subnet, then route), so the same
tables always give the same list and the same message.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tether.helper.root.journal import MAIN_TABLE, ROUTE_PROTO
from tether.helper.root.routing.table import IPAddress, IPNetwork, parse_address, parse_subnet, sort_key

__all__ = [
    "PROTOCOL_NAMES",
    "ROUTE_TYPE_NAMES",
    "SCOPE_NAMES",
    "Conflict",
    "ConflictError",
    "OSRoute",
    "find_conflicts",
    "format_conflicts",
    "ignore_reason",
    "suggest_allowed",
]

# rtnetlink numbers and the names iproute2 shows for them (rtnetlink.h, /etc/iproute2/rt_protos).
ROUTE_TYPE_NAMES: dict[int, str] = {
    0: "unspec",
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
    11: "xresolve",
}
PROTOCOL_NAMES: dict[int, str] = {
    0: "unspec",
    1: "redirect",
    2: "kernel",
    3: "boot",
    4: "static",
    8: "gated",
    9: "ra",
    10: "mrt",
    11: "zebra",
    12: "bird",
    13: "dnrouted",
    14: "xorp",
    15: "ntk",
    16: "dhcp",
    17: "mrouted",
    18: "keepalived",
    42: "babel",
    99: "openr",
    186: "bgp",
    187: "isis",
    188: "ospf",
    189: "rip",
    192: "eigrp",
}
SCOPE_NAMES: dict[int, str] = {0: "universe", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
TABLE_NAMES: dict[int, str] = {253: "default", 254: "main", 255: "local"}

_HALVES = {0, 1}  # prefix lengths of "everything" routes: the default route and the two /1 halves
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_MULTICAST = (ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8"))


def _named(value: str | int, names: dict[int, str], what: str) -> str | int:
    """A known number becomes its name; a numeric string a number; names are lower-cased."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"route {what} must be a name or a number, got {value!r}")
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise ValueError(f"route {what} must not be empty")
        if not (text.isascii() and text.isdigit()):  # "³" would make int() raise
            return text
        value = int(text)
    return names.get(value, value)


@dataclass(frozen=True)
class OSRoute:
    """One route of the OS's routing tables, as far as conflicts are concerned.

    Strings are accepted and parsed (``OSRoute("10.0.0.0/8", "vpn0", "10.0.0.1")``). Numbers the
    kernel uses for protocol, scope and type become iproute2's names where they have one
    (``protocol=4`` is ``"static"``); unknown numbers stay numbers (our ``126``).
    ``device`` is None for routes without an output device (blackhole, unreachable, nexthop groups).
    """

    destination: IPNetwork
    device: str | None = None
    gateway: IPAddress | None = None
    table: int = MAIN_TABLE
    protocol: str | int = "boot"
    metric: int = 0
    scope: str | int = "universe"
    type: str = "unicast"

    def __post_init__(self) -> None:
        object.__setattr__(self, "destination", parse_subnet(self.destination, what="route destination"))  # type: ignore[arg-type]
        if self.gateway is not None:
            object.__setattr__(self, "gateway", parse_address(self.gateway, what="route gateway"))  # type: ignore[arg-type]
        if self.device == "":
            object.__setattr__(self, "device", None)
        object.__setattr__(self, "protocol", _named(self.protocol, PROTOCOL_NAMES, "protocol"))
        object.__setattr__(self, "scope", _named(self.scope, SCOPE_NAMES, "scope"))
        kind = _named(self.type, ROUTE_TYPE_NAMES, "type")
        object.__setattr__(self, "type", str(kind))
        object.__setattr__(self, "table", int(self.table))
        object.__setattr__(self, "metric", int(self.metric))

    @property
    def version(self) -> int:
        return self.destination.version

    @property
    def is_ours(self) -> bool:
        """Carries our protocol number (what our route applier puts on every route it adds)."""
        return self.protocol in (ROUTE_PROTO, str(ROUTE_PROTO))

    def describe(self) -> str:
        """User-facing text: ``10.0.0.0/8 dev vpn0 via 10.0.0.1`` (``table N`` outside the main table)."""
        parts = [] if self.type == "unicast" else [self.type]
        parts.append(str(self.destination))
        if self.device:
            parts.append(f"dev {self.device}")
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        if self.table not in (MAIN_TABLE, 0):
            parts.append(f"table {TABLE_NAMES.get(self.table, self.table)}")
        return " ".join(parts)

    def sort_key(self) -> tuple:
        return (
            *sort_key(self.destination),
            self.table != MAIN_TABLE,  # the main table first, then by number
            self.table,
            self.metric,
            self.device or "",
            str(self.gateway or ""),
            str(self.protocol),
            str(self.scope),
            self.type,
        )

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class Conflict:
    """A cluster subnet and an existing route that overlaps it."""

    subnet: IPNetwork
    route: OSRoute

    def __post_init__(self) -> None:
        object.__setattr__(self, "subnet", parse_subnet(self.subnet, what="cluster subnet"))  # type: ignore[arg-type]

    def describe(self) -> str:
        return f'subnet {self.subnet} overlaps with existing route "{self.route.describe()}"'

    def sort_key(self) -> tuple:
        return (*sort_key(self.subnet), *self.route.sort_key())

    def __str__(self) -> str:
        return self.describe()


def ignore_reason(route: OSRoute, *, own_devices: Iterable[str] = ()) -> str | None:
    """Why ``route`` can never conflict with a cluster subnet, or None if it can."""
    if route.type != "unicast":
        return f"{route.type} route"
    if route.is_ours:
        return "our own route (protocol 126)"
    if route.device is not None and route.device in set(own_devices):
        return f"on our device {route.device}"
    if route.destination.prefixlen in _HALVES:
        return "default route" if route.destination.prefixlen == 0 else "half of the default route"
    dst = route.destination
    if any(dst.version == special.version and dst.subnet_of(special) for special in _LINK_LOCAL):  # type: ignore[arg-type]
        return "link-local destination"
    if any(dst.version == special.version and dst.subnet_of(special) for special in _MULTICAST):  # type: ignore[arg-type]
        return "multicast destination"
    return None


def _networks(values: Iterable[str | IPNetwork], what: str) -> list[IPNetwork]:
    if isinstance(values, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
        values = [values]  # a lone string would iterate by character
    return sorted({parse_subnet(v, what=what) for v in values}, key=sort_key)


def find_conflicts(
    subnets: Iterable[str | IPNetwork],
    routes: Iterable[OSRoute],
    *,
    own_devices: Iterable[str] = (),
    allowed: Iterable[str | IPNetwork] = (),
) -> list[Conflict]:
    """Every (cluster subnet, existing route) pair that overlaps; see the module docstring for the rules.

    ``subnets`` are the cluster's (service, pod, also-proxy) subnets; ``routes`` all routes of all
    the OS's tables; ``own_devices`` our TUN devices; ``allowed`` the allowConflictingSubnets ranges.
    Sorted by subnet, then route. Invalid subnets raise ``InvalidSubnet`` naming the value.
    """
    cluster = _networks(subnets, "cluster subnet")
    allow = set(_networks(allowed, "allowed conflicting subnet"))
    own = set(own_devices) if not isinstance(own_devices, str) else {own_devices}
    candidates = sorted({r for r in routes if ignore_reason(r, own_devices=own) is None}, key=OSRoute.sort_key)
    # Two CIDRs overlap only when one holds the other: a route holding the subnet is found by looking up each
    # of the subnet's supernets, routes inside it by bisection in the routes sorted by address. Linear scans of
    # both lists made thousands of subnets a freeze of the event loop.
    by_destination: dict[IPNetwork, list[OSRoute]] = {}
    for route in candidates:
        by_destination.setdefault(route.destination, []).append(route)
    starts = [sort_key(r.destination)[:2] for r in candidates]
    allow_lengths = _lengths(allow)
    route_lengths = _lengths(by_destination)
    found: list[Conflict] = []
    for subnet in cluster:
        if any(parent in allow for parent in _supernets(subnet, allow_lengths, inclusive=True)):
            continue
        for parent in _supernets(subnet, route_lengths, inclusive=False):
            found.extend(Conflict(subnet, route) for route in by_destination.get(parent, ()))
        first = int(subnet.network_address)
        at = bisect.bisect_left(starts, (subnet.version, first))
        end = bisect.bisect_right(starts, (subnet.version, first + subnet.num_addresses - 1))
        inside = (route for route in candidates[at:end] if route.destination.prefixlen > subnet.prefixlen)
        found.extend(Conflict(subnet, route) for route in inside)
    return sorted(found, key=Conflict.sort_key)


def _lengths(networks: Iterable[IPNetwork]) -> dict[int, list[int]]:
    """The prefix lengths present, per IP version, longest first."""
    lengths: dict[int, set[int]] = {}
    for network in networks:
        lengths.setdefault(network.version, set()).add(network.prefixlen)
    return {version: sorted(found, reverse=True) for version, found in lengths.items()}


def _supernets(net: IPNetwork, lengths: dict[int, list[int]], *, inclusive: bool) -> Iterator[IPNetwork]:
    """The networks that hold ``net`` (itself too when ``inclusive``) with one of ``lengths``, widest last."""
    for prefix in lengths.get(net.version, ()):
        if prefix < net.prefixlen:
            yield net.supernet(new_prefix=prefix)
        elif inclusive and prefix == net.prefixlen:
            yield net


def suggest_allowed(conflicts: Iterable[Conflict]) -> list[IPNetwork]:
    """The allow list that would accept these conflicts: the conflicting cluster subnets themselves."""
    return sorted({c.subnet for c in conflicts}, key=sort_key)


def format_conflicts(conflicts: Iterable[Conflict], suggested: Iterable[IPNetwork] = ()) -> str:
    """One line per conflict, then how to get out of it (see ``ConflictError``).

    ``suggested``: what the cluster's settings propose to allow; only the user's confirmation (or the
    admin's policy) makes it allowed, so it is shown, not applied."""
    items = sorted(conflicts, key=Conflict.sort_key)
    if not items:
        return "no conflicting routes"
    lines = [c.describe() for c in items]
    allow_args = " ".join(f"--allow-conflicting-subnets {s}" for s in suggest_allowed(items))
    lines += [
        "Routing these subnets into the cluster could cut off hosts reached through those routes. Ways out:",
        "  - allow the conflict (the cluster wins for those subnets): --allow-conflicting-subnets CIDR, "
        f"or allow_conflicting_subnets in the admin's /etc/tether/policy.toml; here: {allow_args}",
        "  - reach them through a workload instead of routing them: --proxy-via CIDR=WORKLOAD "
        "(CIDR may be also, service, pods, all, or a CIDR)",
        "  - remap the conflicting subnets to virtual IPs automatically: --auto-resolve",
    ]
    offered = sorted(set(suggested), key=sort_key)
    if offered:
        confirm = " ".join(f"--allow-conflicting-subnets {s}" for s in offered)
        lines.append(f"The cluster's settings suggest allowing {', '.join(map(str, offered))}; to accept: {confirm}")
    return "\n".join(lines)


class ConflictError(Exception):
    """Cluster subnets overlap existing routes. ``str()``: one line per conflict, then the ways out.

    The first line is exactly the first conflict's ``describe()``; ``conflicts`` keeps them all.
    """

    def __init__(self, conflicts: Iterable[Conflict], suggested: Iterable[IPNetwork] = ()) -> None:
        self.conflicts: tuple[Conflict, ...] = tuple(sorted(conflicts, key=Conflict.sort_key))
        if not self.conflicts:
            raise ValueError("ConflictError needs at least one conflict")
        self.suggested = tuple(suggested)
        super().__init__(format_conflicts(self.conflicts, self.suggested))

    @property
    def subnets(self) -> list[IPNetwork]:
        """The conflicting cluster subnets (what ``suggest_allowed`` offers)."""
        return suggest_allowed(self.conflicts)
