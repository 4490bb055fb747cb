"""The three ways out of a VPN conflict, as plain data (no Qt): what the conflict dialog shows and returns.

A conflict is a cluster subnet that overlaps a route some other interface (usually a VPN) already has.
The user picks one of:

* **allow** the conflict: route ranges into the cluster anyway (``allow_conflicting_subnets``). The list
  starts as the conflicting cluster subnets themselves; every range must be a CIDR and lie within the
  conflict (see ``check_allow_list``);
* **proxy via** a workload: hide the cluster's subnets (a symbol: also, service, pods, all) behind virtual
  IPs that the workload's agent dials (``proxy_via = ["SYMBOL=namespace/name"]``);
* **automatic remap**: the same with the traffic-manager dialing (``auto_resolve``).

Every function raises ``ValidationError`` (from the helper's own checks where one exists) naming the value.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tether.helper.api import validate
from tether.helper.api.proxyvia import SYMBOLS
from tether.helper.api.validate import ValidationError
from tether.helper.user.resolutions import Resolution

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_SYMBOL = "all"


class Choice(enum.Enum):
    ALLOW = "allow"
    PROXY_VIA = "proxy-via"
    AUTO_REMAP = "auto-remap"


TITLES = {
    Choice.ALLOW: "Allow the conflict",
    Choice.PROXY_VIA: "Proxy via a workload",
    Choice.AUTO_REMAP: "Remap automatically",
}

CONSEQUENCES = {
    Choice.ALLOW: (
        "These ranges are routed into the cluster ahead of the VPN, so while Tether is connected the hosts "
        "your VPN reaches inside them are out of reach."
    ),
    Choice.PROXY_VIA: (
        "The VPN keeps all its routes; the cluster's addresses get stand-in virtual IPs and the chosen "
        "workload makes the connections from inside the cluster, as if your laptop were that pod."
    ),
    Choice.AUTO_REMAP: (
        "The VPN keeps all its routes; only the conflicting cluster subnets get stand-in virtual IPs, "
        "dialed by the traffic-manager, so names work but you see virtual rather than real pod and service IPs."
    ),
}

SYMBOL_MEANINGS = {
    "all": "services, pods and also-proxy",
    "service": "service subnets",
    "pods": "pod subnets",
    "also": "also-proxy subnets",
}
assert set(SYMBOL_MEANINGS) == set(SYMBOLS)


@dataclass(frozen=True)
class ConflictRow:
    """One line of the dialog's table."""

    subnet: str  # the cluster's
    route: str  # the VPN's
    device: str
    gateway: str = ""
    description: str = ""


def rows(conflicts: Iterable[object]) -> list[ConflictRow]:
    """Table rows from ``pb.Conflict`` messages (anything with subnet/route/device/gateway/description)."""
    return [
        ConflictRow(
            subnet=getattr(c, "subnet", ""),
            route=getattr(c, "route", ""),
            device=getattr(c, "device", ""),
            gateway=getattr(c, "gateway", ""),
            description=getattr(c, "description", ""),
        )
        for c in conflicts
    ]


def _network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        return None


def _unique_networks(values: Iterable[str]) -> list[IPNetwork]:
    networks = {n for n in (_network(v) for v in values) if n is not None}
    return sorted(networks, key=lambda n: (n.version, n.network_address, n.prefixlen))


def default_allow_list(conflicts: Sequence[ConflictRow]) -> list[str]:
    """The cluster's own conflicting subnets: the smallest allow list that lets the connect go through."""
    return [str(n) for n in _unique_networks(c.subnet for c in conflicts)]


def parse_allow_text(text: str) -> list[str]:
    """One range per line (commas work too); blank lines and surrounding spaces ignored."""
    return [item.strip() for line in text.splitlines() for item in line.split(",") if item.strip()]


def _inside(network: IPNetwork, containers: Iterable[IPNetwork]) -> bool:
    return any(network.version == c.version and network.subnet_of(c) for c in containers)  # type: ignore[arg-type]


def _where(conflicts: Sequence[ConflictRow]) -> str:
    routes = []
    for c in conflicts:
        text = f"{c.route} on {c.device}" if c.device else c.route
        if text not in routes:
            routes.append(text)
    return ", ".join(routes)


def check_allow_list(values: Sequence[str], conflicts: Sequence[ConflictRow]) -> tuple[str, ...]:
    """The allow list, checked: each a CIDR, each within the conflict; duplicates dropped, order kept.

    "Within the conflict" means inside one of the conflicting VPN routes, or inside one of the conflicting
    cluster subnets: when the VPN's route is the narrower one (a /16 VPN inside a /8 pod range), allowing the
    cluster subnet itself is the only allow that works, and it is not inside the route.
    """
    if not values:
        raise ValidationError("allow: give at least one range (the conflicting cluster subnets are the usual choice)")
    validate.cidrs(values, "allow")  # the count limit; each value is checked again below for its own message
    routes = _unique_networks(c.route for c in conflicts)
    subnets = _unique_networks(c.subnet for c in conflicts)
    accepted: list[str] = []
    for value in values:
        network = validate.cidr(value, "allow")
        if not _inside(network, [*routes, *subnets]):
            raise ValidationError(
                f'allow: "{value}" is not inside a conflicting VPN route ({_where(conflicts)}) '
                f"or a conflicting cluster subnet ({', '.join(str(s) for s in subnets)})"
            )
        if str(network) not in accepted:
            accepted.append(str(network))
    return tuple(accepted)


def still_conflicting(allowed: Sequence[str], conflicts: Sequence[ConflictRow]) -> list[str]:
    """Conflicting cluster subnets that the allow list does not fully cover (the helper would refuse again)."""
    allow = _unique_networks(allowed)
    return [str(s) for s in _unique_networks(c.subnet for c in conflicts) if not _inside(s, allow)]


def proxy_via_value(symbol: str, workload: str) -> str:
    """``SYMBOL=WORKLOAD``, checked by the helper's own --proxy-via rules."""
    if symbol not in SYMBOLS:
        raise ValidationError(f'proxy-via: "{symbol}" is not one of {", ".join(SYMBOLS)}')
    if not workload:
        raise ValidationError("proxy-via: pick the workload whose pod makes the connections")
    value = f"{symbol}={workload}"
    validate.proxy_vias([value])
    return value


def build_resolution(
    choice: Choice,
    conflicts: Sequence[ConflictRow],
    *,
    allow: Sequence[str] = (),
    symbol: str = DEFAULT_SYMBOL,
    workload: str = "",
) -> Resolution:
    """The Resolution for the chosen way out; ValidationError naming the bad value."""
    if choice is Choice.ALLOW:
        return Resolution(allow_conflicting_subnets=check_allow_list(allow, conflicts))
    if choice is Choice.PROXY_VIA:
        return Resolution(proxy_via=(proxy_via_value(symbol, workload),))
    return Resolution(auto_resolve=True)


@dataclass(frozen=True)
class Preselection:
    """What a remembered Resolution puts in the dialog."""

    choice: Choice
    allow: tuple[str, ...] = ()
    symbol: str = DEFAULT_SYMBOL
    workload: str = ""


def preselection(resolution: Resolution) -> Preselection | None:
    """The dialog's state for a remembered Resolution; None when it holds nothing the dialog can show.

    A Resolution written by the CLI may combine several ways out; the dialog shows one, in the order
    auto-remap, proxy-via, allow (the helper applies proxy-via before the automatic remap anyway).
    """
    if resolution.auto_resolve:
        return Preselection(Choice.AUTO_REMAP)
    for value in resolution.proxy_via:
        target, _, workload = value.partition("=")
        if target in SYMBOLS and workload:
            return Preselection(Choice.PROXY_VIA, symbol=target, workload=workload)
    if resolution.allow_conflicting_subnets:
        return Preselection(Choice.ALLOW, allow=tuple(resolution.allow_conflicting_subnets))
    return None
