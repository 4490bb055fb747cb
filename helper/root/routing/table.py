"""The routes and addresses the TUN device should have, computed from the cluster's subnets. Pure: no I/O.

``compute_plan`` turns the cluster's service and pod subnets, the user's also-proxy and never-proxy
subnets, and the IPs that must never go into the TUN (the API server's, the upstream DNS server's)
into a ``RoutePlan``:

1. Routed = service + pod + also-proxy subnets; a subnet equal to or inside another routed one is
   dropped (the wider route already carries it).
2. Never-proxy subnets and never-route IPs are *carved out*: a routed subnet that contains one is
   replaced by the pieces around it (``ipaddress``'s ``address_exclude``); a routed subnet inside
   one disappears. We carve rather than add "route back via the original gateway" routes (what
   Telepresence does) because the original route is a moving target: it changes when the user
   switches Wi-Fi or a VPN comes up, and a pinned gateway goes stale or was never known (a VPN
   interface without one). A carved-out range simply never matches our routes, so the kernel
   keeps choosing whatever route the OS has for it, now and after any change. The price is a few
   more routes (a /32 out of a /8 leaves 24), bounded by ``MAX_ROUTES``.
3. IPv4 and IPv6 are handled separately and never cover each other.
4. The TUN's own address, one per family that has routes, as a host address (/32, /128) so it adds
   no prefix route of its own. IPv4: ``169.254.116.1`` — link-local (RFC 3927) addresses are never
   routed beyond a link, so no host the user wants to reach is behind it, and as a /32 it does not
   take the link-local range from other interfaces; we avoid the well-known ones (169.254.169.254
   metadata, 169.254.20.10 NodeLocal DNS). It becomes the source address of connections through
   the TUN, which never leaves the machine (the netstack terminates them), and it is outside every
   cluster subnet, so the netstack's "a pod IP arriving on the TUN is a loop" check stays valid.
   IPv6: ``fd74:6574:6865:7200::1``, a unique local address whose 40-bit global ID spells
   "tether" (link-local IPv6 would not be chosen as the source for global destinations). If a
   candidate falls inside a routed subnet (someone routes 169.254.0.0/16), the next one is tried
   (``192.0.0.8``, the IPv4 "dummy address" of RFC 7600), and as a last resort the last usable
   address of the first routed subnet that has one — never a subnet's network or broadcast
   address, whose loss made pods holding them unreachable in Telepresence, nor an address no
   interface can hold (multicast, reserved: the last address of ``::/0`` is multicast); when a
   subnet covers everything, a routed candidate.

``diff(old, new)`` gives the ``(add, remove)`` plans for applying a change incrementally.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

__all__ = [
    "ADDRESS_CANDIDATES",
    "EMPTY_PLAN",
    "MAX_ROUTES",
    "MAX_SUBNETS",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "InvalidSubnet",
    "PlanError",
    "RoutePlan",
    "carve",
    "choose_addresses",
    "compute_plan",
    "diff",
    "drop_covered",
    "parse_address",
    "parse_subnet",
    "sort_key",
]

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface

# Carving many IPs out of wide subnets could make thousands of routes; refuse rather than flood the table.
MAX_ROUTES = 1024
# Subnets to route (service, pod, also-proxy together) and to carve out (never-proxy, never-route together) that
# a plan accepts: the cluster (or a manager a group member chose) sends these, and planning runs on the helper's
# event loop. Real clusters need tens; a node-per-/24 cluster a few thousand.
MAX_SUBNETS = 4096

ADDRESS_CANDIDATES: dict[int, tuple[str, ...]] = {
    4: ("169.254.116.1", "192.0.0.8"),
    6: ("fd74:6574:6865:7200::1",),
}


class InvalidSubnet(ValueError):
    """A subnet or IP given to the route computation is malformed; names the value and the setting."""

    def __init__(self, value: object, what: str, reason: str) -> None:
        self.value = value
        self.what = what
        self.reason = reason
        shown = value if isinstance(value, str) else repr(value)
        super().__init__(f'invalid {what} "{shown}": {reason}')


class PlanError(ValueError):
    """The inputs are valid one by one but no sensible plan exists for them."""


def sort_key(item: IPNetwork | IPInterface) -> tuple[int, int, int]:
    """IPv4 before IPv6, then by address, then wider first."""
    net = item.network if isinstance(item, IPv4Interface | IPv6Interface) else item
    addr = item.ip if isinstance(item, IPv4Interface | IPv6Interface) else item.network_address
    return (net.version, int(addr), net.prefixlen)


# --- parsing ---------------------------------------------------------------------------------------


def parse_subnet(value: str | IPNetwork, *, what: str = "subnet") -> IPNetwork:
    """A CIDR, strictly: a prefix length is required and host bits must be clear."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if not isinstance(value, str):
        raise InvalidSubnet(value, what, f"expected a CIDR string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidSubnet(value, what, "empty value")
    addr_text, slash, prefix_text = text.partition("/")
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        raise InvalidSubnet(value, what, f'"{addr_text}" is not an IP address') from None
    if isinstance(addr, IPv6Address) and addr.scope_id:
        raise InvalidSubnet(value, what, "a zone index (%...) cannot name a route")
    if not slash:
        raise InvalidSubnet(value, what, f"missing prefix length (write {addr}/{addr.max_prefixlen} for one address)")
    if not (prefix_text.isascii() and prefix_text.isdigit()):
        raise InvalidSubnet(value, what, f'prefix length "{prefix_text}" is not a number')
    prefix = int(prefix_text)
    if prefix > addr.max_prefixlen:
        raise InvalidSubnet(value, what, f"prefix length {prefix} is out of range for IPv{addr.version}")
    net = ipaddress.ip_network((addr, prefix), strict=False)
    if net.network_address != addr:
        raise InvalidSubnet(value, what, f"host bits are set; did you mean {net}?")
    return net


def parse_address(value: str | IPAddress | IPNetwork, *, what: str = "IP") -> IPAddress:
    """One IP address: ``10.0.0.1``, or a single-address CIDR ``10.0.0.1/32``."""
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if isinstance(value, IPv4Network | IPv6Network):
        if value.num_addresses != 1:
            raise InvalidSubnet(str(value), what, "expected one address, got a subnet")
        return value.network_address
    if not isinstance(value, str):
        raise InvalidSubnet(value, what, f"expected an IP address string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidSubnet(value, what, "empty value")
    if "/" in text:
        net = parse_subnet(text, what=what)
        if net.num_addresses != 1:
            raise InvalidSubnet(value, what, "expected one address, got a subnet")
        return net.network_address
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidSubnet(value, what, "not an IP address") from None
    if isinstance(addr, IPv6Address) and addr.scope_id:
        raise InvalidSubnet(value, what, "a zone index (%...) cannot name a route")
    return addr


def _parse_interface(value: str | IPInterface) -> IPInterface:
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value
    if not isinstance(value, str) or "/" not in value:
        raise InvalidSubnet(value, "TUN address", "expected ADDRESS/PREFIX")
    try:
        return ipaddress.ip_interface(value.strip())
    except ValueError:
        raise InvalidSubnet(value, "TUN address", "not an address with a prefix length") from None


# --- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutePlan:
    """Routes (networks) through the TUN and addresses on it. Sorted, duplicates removed.

    Strings are accepted and parsed strictly (``RoutePlan(routes=["10.43.0.0/16"])``).
    """

    routes: tuple[IPNetwork, ...] = ()
    addresses: tuple[IPInterface, ...] = ()

    def __post_init__(self) -> None:
        routes = {parse_subnet(r, what="route") for r in self.routes}  # type: ignore[arg-type]
        addresses = {_parse_interface(a) for a in self.addresses}  # type: ignore[arg-type]
        object.__setattr__(self, "routes", tuple(sorted(routes, key=sort_key)))
        object.__setattr__(self, "addresses", tuple(sorted(addresses, key=sort_key)))

    def routes_for(self, version: int) -> tuple[IPNetwork, ...]:
        return tuple(r for r in self.routes if r.version == version)

    def addresses_for(self, version: int) -> tuple[IPInterface, ...]:
        return tuple(a for a in self.addresses if a.version == version)

    @property
    def is_empty(self) -> bool:
        return not (self.routes or self.addresses)

    def __str__(self) -> str:
        routes = ", ".join(map(str, self.routes)) or "none"
        addresses = ", ".join(map(str, self.addresses)) or "none"
        return f"routes: {routes}; addresses: {addresses}"


EMPTY_PLAN = RoutePlan()


def _span(net: IPNetwork) -> tuple[int, int, int]:
    """(family, first address, last address) as integers: what the sweeps below compare."""
    first = int(net.network_address)
    return net.version, first, first + net.num_addresses - 1


def drop_covered(subnets: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Remove subnets equal to or inside another one of the same family; sorted. O(n log n): one sort, then a
    sweep, because two CIDRs are either nested or disjoint: after sorting by start (wider first), a subnet is
    covered exactly when it ends no later than the furthest end kept so far in its family."""
    kept: list[IPNetwork] = []
    family, reach = 0, -1
    for net in sorted(set(subnets), key=sort_key):
        version, _, last = _span(net)
        if version == family and last <= reach:
            continue
        kept.append(net)
        family, reach = version, last
    return kept


def carve(subnets: Iterable[IPNetwork], exclusions: Iterable[IPNetwork]) -> list[IPNetwork]:
    """``subnets`` minus ``exclusions``, as the fewest networks that cover exactly what is left.

    Each piece is split in halves only where a hole lies inside it, and finds its holes by bisection in the
    sorted, disjoint holes: the work grows with pieces plus holes times the prefix depth, not their product."""
    holes = drop_covered(exclusions)
    spans = [_span(h) for h in holes]
    pieces: list[IPNetwork] = []
    for net in drop_covered(subnets):
        version, first, last = _span(net)
        # The holes are disjoint and sorted, so their ends are sorted too: the first that may overlap is the
        # first ending at or after this piece's start.
        start = bisect.bisect_left(spans, (version, first, first), key=lambda s: (s[0], s[2], s[2]))
        end = start
        while end < len(spans) and spans[end][0] == version and spans[end][1] <= last:
            end += 1
        _carve_one(net, spans[start:end], pieces)
    return pieces


def _carve_one(net: IPNetwork, holes: list[tuple[int, int, int]], out: list[IPNetwork]) -> None:
    """Append ``net`` minus ``holes`` (sorted spans, each overlapping ``net``) to ``out``, in address order."""
    if not holes:
        out.append(net)
        return
    _, first, last = _span(net)
    if any(h_first <= first and last <= h_last for _, h_first, h_last in holes):
        return  # entirely excluded (then it is the only hole: CIDRs are nested or disjoint)
    low, high = net.subnets(prefixlen_diff=1)  # type: ignore[misc]
    middle = _span(low)[2]
    _carve_one(low, [h for h in holes if h[1] <= middle], out)
    _carve_one(high, [h for h in holes if h[2] > middle], out)


def choose_addresses(
    routes: Sequence[IPNetwork],
    avoid: Iterable[IPAddress] = (),
    candidates: Mapping[int, Sequence[str]] | None = None,
) -> tuple[IPInterface, ...]:
    """The TUN's address per family that has routes (see the module docstring for the choice)."""
    candidates = ADDRESS_CANDIDATES if candidates is None else candidates
    avoid_set = set(avoid)
    chosen: list[IPInterface] = []
    for version in (4, 6):
        family = [r for r in routes if r.version == version]
        if not family:
            continue
        address = _pick_address(version, family, avoid_set, candidates.get(version, ()))
        chosen.append(ipaddress.ip_interface((address, address.max_prefixlen)))
    return tuple(chosen)


def _pick_address(version: int, routes: list[IPNetwork], avoid: set[IPAddress], candidates: Sequence[str]) -> IPAddress:
    for text in candidates:
        addr = parse_address(text, what="TUN address candidate")
        if addr.version != version:
            raise InvalidSubnet(text, f"IPv{version} TUN address candidate", f"is IPv{addr.version}")
        if addr not in avoid and not any(addr in r for r in routes):
            return addr
    # Last resort: inside a routed subnet, never its network or broadcast address. The address is
    # local, so connections to it stay on this machine instead of reaching the cluster.
    for net in routes:
        if net.num_addresses >= 4:
            addr = net.broadcast_address - 1
            if addr not in avoid and _assignable(addr):
                return addr
    # A subnet that covers everything (::/0, 0.0.0.0/0) routes every candidate, and its last address is
    # multicast or reserved, which no interface can hold: a routed candidate is then as good as any.
    for text in candidates:
        addr = parse_address(text, what="TUN address candidate")
        edges = any(addr in (r.network_address, r.broadcast_address) for r in routes)
        if addr not in avoid and _assignable(addr) and not edges:
            return addr
    raise PlanError(f"no IPv{version} address available for the TUN device: every candidate is routed or excluded")


def _assignable(addr: IPAddress) -> bool:
    """Whether an interface can hold ``addr`` as a unicast address of its own."""
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback or addr.is_reserved:
        return False
    return not (isinstance(addr, IPv4Address) and addr == IPv4Address("255.255.255.255"))


def _subnets(values: Iterable[str | IPNetwork], what: str) -> list[IPNetwork]:
    if isinstance(values, str):  # a lone string would iterate by character
        values = [values]
    return [parse_subnet(v, what=what) for v in values]


def _check_count(count: int, what: str) -> None:
    if count > MAX_SUBNETS:
        raise PlanError(f"{count} {what} is more than the limit of {MAX_SUBNETS}")


def compute_plan(
    *,
    service_subnets: Iterable[str | IPNetwork] = (),
    pod_subnets: Iterable[str | IPNetwork] = (),
    also_proxy: Iterable[str | IPNetwork] = (),
    never_proxy: Iterable[str | IPNetwork] = (),
    never_route: Iterable[str | IPAddress] = (),
    address_candidates: Mapping[int, Sequence[str]] | None = None,
) -> RoutePlan:
    """The routes and TUN addresses for a cluster (see the module docstring for the rules).

    ``never_route`` holds single IPs (the API server's, the upstream DNS server's). Every value is
    validated; an ``InvalidSubnet`` names the offending value and which setting it came from.
    """
    routed = [
        *_subnets(service_subnets, "service subnet"),
        *_subnets(pod_subnets, "pod subnet"),
        *_subnets(also_proxy, "also-proxy subnet"),
    ]
    _check_count(len(routed), "subnets to route (service, pod and also-proxy subnets together)")
    excluded = _subnets(never_proxy, "never-proxy subnet")
    if isinstance(never_route, str):
        never_route = [never_route]
    avoid = [parse_address(ip, what="never-route IP") for ip in never_route]  # type: ignore[arg-type]
    excluded += [ipaddress.ip_network((ip, ip.max_prefixlen)) for ip in avoid]
    _check_count(len(excluded), "subnets to carve out (never-proxy subnets and never-route IPs together)")
    routes = carve(routed, excluded)
    if len(routes) > MAX_ROUTES:
        raise PlanError(
            f"carving the never-proxy subnets and never-route IPs out of the routed subnets leaves "
            f"{len(routes)} routes (more than {MAX_ROUTES}); use fewer or wider exclusions"
        )
    return RoutePlan(routes=tuple(routes), addresses=choose_addresses(routes, avoid, address_candidates))


def diff(old: RoutePlan | None, new: RoutePlan) -> tuple[RoutePlan, RoutePlan]:
    """``(add, remove)``: what to add to and remove from ``old`` to get ``new``.

    Routes and addresses present in both are in neither, so applying the diff leaves them untouched.
    """
    old = old or EMPTY_PLAN
    old_routes, new_routes = set(old.routes), set(new.routes)
    old_addresses, new_addresses = set(old.addresses), set(new.addresses)
    add = RoutePlan(
        routes=tuple(new_routes - old_routes),
        addresses=tuple(new_addresses - old_addresses),
    )
    remove = RoutePlan(
        routes=tuple(old_routes - new_routes),
        addresses=tuple(old_addresses - new_addresses),
    )
    return add, remove
