"""The admin's limits on what a connection may do to the host, whatever the manager or the client sends (pure).

The cluster's settings and the client's request both come from people the root helper should not trust
with the whole machine: anyone who can edit the cluster's settings ConfigMap, or any member of the
``tether`` group pointing ``--manager-address`` at a manager of their own. The rules:

* Routes. A routed subnet (service, pod, also-proxy, virtual) shorter than the admin's minimum prefix
  (default /8 for IPv4, /32 for IPv6), and the default route or either of its halves whatever the
  minimum, is *refused*: the connect fails (or a live cluster-info change is not applied) with an error
  naming the subnet and the rule. Such a subnet is a take-over, not a cluster, and carving the host's
  ranges out of it would still capture the rest of the world.
* The host's own addresses, its gateways, the LANs it sits on (the on-link subnets of the devices that
  carry a default route), the manager's address and the admin's ``never_route`` subnets are *carved out*
  of whatever is routed, and the state reports each carve-out: a cluster subnet that merely includes
  one of them stays usable for the rest of its range.
* Conflicting routes may be taken over only where the user (``--allow-conflicting-subnets``) or the
  admin (``allow_conflicting_subnets``) allowed it; the cluster's own list is only a suggestion.
* DNS. The cluster domain and include-suffixes may not be a public suffix or TLD (refused), and a
  namespace named like one (``dev``, ``de``, ``ai``) is mapped as a name suffix only when the user
  listed it in ``--mapped-namespaces``.
* ``--manager-address`` is for root, or for group members when the admin allows it.

The host's networks come from the OS route list (``routing.open_reader``), read by the session.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tether.helper.api.suffixes import is_public_suffix
from tether.helper.root.routing.conflicts import OSRoute
from tether.helper.root.routing.table import IPAddress, IPNetwork, sort_key

DEFAULT_POLICY_PATH = "/etc/tether/policy.toml"
DEFAULT_MIN_PREFIX = {4: 8, 6: 32}


class PolicyError(Exception):
    """Something the cluster or the client asked for breaks the admin's policy; the message names it and the rule."""


@dataclass(frozen=True)
class Policy:
    """What the admin allows (``/etc/tether/policy.toml``); the defaults are what applies without the file."""

    min_prefix_v4: int = DEFAULT_MIN_PREFIX[4]
    min_prefix_v6: int = DEFAULT_MIN_PREFIX[6]
    never_route: tuple[IPNetwork, ...] = ()
    allow_conflicting_subnets: tuple[IPNetwork, ...] = ()
    allow_manager_address: bool = False
    source: str = "built-in defaults"

    def min_prefix(self, version: int) -> int:
        return self.min_prefix_v4 if version == 4 else self.min_prefix_v6


@dataclass(frozen=True)
class Forbidden:
    """A range that never goes into the TUN, and why (for the state's report)."""

    network: IPNetwork
    reason: str


# --- routes ------------------------------------------------------------------------------------------


def check_routed(subnets: Iterable[tuple[IPNetwork, str]], policy: Policy) -> None:
    """Raise PolicyError for the first (subnet, where it came from) that is too wide to route."""
    for subnet, origin in subnets:
        if subnet.prefixlen <= 1:
            what = "the default route" if subnet.prefixlen == 0 else "half of the default route"
            raise PolicyError(
                f"{origin} {subnet} is refused: it is {what}, which would send all of this machine's "
                "traffic to the cluster"
            )
        minimum = policy.min_prefix(subnet.version)
        if subnet.prefixlen < minimum:
            raise PolicyError(
                f"{origin} {subnet} is refused: IPv{subnet.version} subnets shorter than /{minimum} may not be "
                f"routed to a cluster (min_prefix_v{subnet.version} in {policy.source})"
            )


def host_ranges(routes: Iterable[OSRoute], own_devices: Iterable[str] = ()) -> list[Forbidden]:
    """The host's own addresses, its gateways and its LANs, from the OS's route tables.

    Own addresses are the kernel's ``local`` routes; gateways the next hops of unicast routes; the LANs
    the on-link routes of the devices that carry a default route (or both of its halves, as VPNs do).
    Our own routes and devices are skipped: they are the connection, not the host."""
    own = set(own_devices)
    theirs = [r for r in routes if not r.is_ours and (r.device is None or r.device not in own)]
    uplinks = {r.device for r in theirs if r.type == "unicast" and r.destination.prefixlen <= 1 and r.device}
    found: dict[IPNetwork, str] = {}
    for route in theirs:
        dst = route.destination
        if route.type == "local" and dst.num_addresses == 1:
            found.setdefault(dst, f"an address of this machine ({route.device or 'no device'})")
        if route.type != "unicast":
            continue
        if route.gateway is not None:
            found.setdefault(_host(route.gateway), f"a gateway of this machine (via {route.device or '?'})")
        if route.device in uplinks and route.scope == "link" and dst.prefixlen > 1:
            found.setdefault(dst, f"the LAN this machine sits on ({route.device})")
    return [Forbidden(net, why) for net, why in sorted(found.items(), key=lambda item: sort_key(item[0]))]


def forbidden_ranges(
    host: Sequence[Forbidden], policy: Policy, manager_addresses: Iterable[IPAddress] = ()
) -> list[Forbidden]:
    """Everything carved out of the routes: the host's ranges, the manager's addresses, the admin's list."""
    return [
        *host,
        *(Forbidden(_host(a), "the traffic-manager's address") for a in manager_addresses),
        *(Forbidden(net, f"never_route in {policy.source}") for net in policy.never_route),
    ]


def carve_notes(routed: Iterable[IPNetwork], forbidden: Iterable[Forbidden]) -> tuple[str, ...]:
    """One sentence per forbidden range that lies in (or covers) a routed subnet: what the carving took out."""
    nets = list(routed)
    notes = []
    for item in forbidden:
        hits = [n for n in nets if n.version == item.network.version and n.overlaps(item.network)]  # type: ignore[arg-type]
        if hits:
            within = ", ".join(str(n) for n in hits)
            notes.append(f"{item.network} ({item.reason}) is not routed to the cluster, though inside {within}")
    return tuple(notes)


def _host(address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network((address, address.max_prefixlen))


# --- conflicts ---------------------------------------------------------------------------------------


def allowed_conflicts(user: Iterable[str | IPNetwork], policy: Policy) -> list[IPNetwork | str]:
    """Where the cluster's routes may override someone else's: the user's list and the admin's, not the cluster's."""
    return [*user, *policy.allow_conflicting_subnets]


# --- DNS ---------------------------------------------------------------------------------------------


def check_dns_claims(cluster_domain: str, include_suffixes: Iterable[str], origin: str) -> None:
    """Raise PolicyError when the cluster domain or an include-suffix is a public suffix or TLD."""
    for name, what in [(cluster_domain, "cluster domain"), *((s, "DNS include-suffix") for s in include_suffixes)]:
        if is_public_suffix(name):
            raise PolicyError(
                f'{what} "{name}" from {origin} is refused: it is a public suffix (a TLD or a suffix anyone '
                "can register under), and the cluster would answer for every name under it"
            )


def mappable_namespaces(namespaces: Iterable[str], explicit: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The namespaces to map as name suffixes, and those left out because their name is a public suffix.

    A namespace the user listed (``--mapped-namespaces``) is always mapped: they asked for it by name."""
    asked = set(explicit)
    left_out = tuple(sorted(ns for ns in namespaces if ns not in asked and is_public_suffix(ns)))
    return frozenset(namespaces) - set(left_out), left_out


# --- who may do what ---------------------------------------------------------------------------------


def check_manager_address(caller_uid: int, address: str, policy: Policy) -> None:
    """``--manager-address`` points root at a manager of the caller's choice: root only, unless the admin allows."""
    if address and caller_uid != 0 and not policy.allow_manager_address:
        raise PolicyError(
            f"--manager-address {address} is refused for uid {caller_uid}: only root may choose the traffic-manager's "
            f"address (the admin can allow group members with allow_manager_address = true in {policy.source})"
        )
