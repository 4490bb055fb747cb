"""Which query names go to the cluster, and under which name the manager is asked (pure).

Names are compared in lower case with a trailing dot, so ``Web.Default`` and ``web.default.`` are
the same question. The order of the checks matters and mirrors the reference behaviour:

1. reverse names (``*.in-addr.arpa.``, ``*.ip6.arpa.``) go to the cluster exactly when the address
   lies in a routed subnet: the cluster can only know the names of addresses it routes;
2. names under the cluster domain always go to the cluster;
3. an excluded suffix (``.com`` ...) sends the name upstream, unless an include-suffix at least as
   long also matches (``.corp.example.com`` beats ``.com``);
4. include-suffixes, ``<x>.<mapped-ns>`` / ``<x>.<mapped-ns>.svc``, single labels and
   ``<label>.<search domain>`` go to the cluster;
5. everything else goes upstream.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_EXCLUDE_SUFFIXES = (".com", ".io", ".net", ".org", ".ru")
DEFAULT_SEARCH_DOMAIN = "tether.local."
DEFAULT_CLUSTER_DOMAIN = "cluster.local."

_V4_REVERSE = "in-addr.arpa."
_V6_REVERSE = "ip6.arpa."


def absolute(name: str) -> str:
    """Lower case with exactly one trailing dot; the root is "."."""
    name = name.strip().lower().rstrip(".")
    return name + "." if name else "."


def _suffix(value: str) -> str:
    """A suffix as ".example.com." so that a plain endswith() only matches whole labels."""
    return "." + absolute(value).lstrip(".")


@dataclass(frozen=True)
class RulesConfig:
    """Everything the name rules depend on; the helper builds a new one when the cluster's config changes."""

    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    namespace: str = "default"
    mapped_namespaces: frozenset[str] = frozenset()
    include_suffixes: tuple[str, ...] = ()
    exclude_suffixes: tuple[str, ...] = DEFAULT_EXCLUDE_SUFFIXES
    search_domain: str = DEFAULT_SEARCH_DOMAIN
    routed_subnets: tuple[Subnet, ...] = field(default=())

    def __post_init__(self) -> None:
        # Normalise once here so that decide() on the query path is plain string comparisons.
        # object.__setattr__ is the documented way to fill fields of a frozen dataclass.
        if not self.cluster_domain.strip(". "):
            raise ValueError(f"cluster domain {self.cluster_domain!r} is empty")
        if not self.namespace or "." in self.namespace:
            raise ValueError(f"namespace {self.namespace!r} must be a single non-empty label")
        object.__setattr__(self, "cluster_domain", absolute(self.cluster_domain))
        object.__setattr__(self, "namespace", self.namespace.lower())
        object.__setattr__(self, "mapped_namespaces", frozenset(ns.lower().strip(".") for ns in self.mapped_namespaces))
        object.__setattr__(self, "include_suffixes", tuple(_suffix(s) for s in self.include_suffixes if s.strip(".")))
        object.__setattr__(self, "exclude_suffixes", tuple(_suffix(s) for s in self.exclude_suffixes if s.strip(".")))
        object.__setattr__(self, "search_domain", absolute(self.search_domain) if self.search_domain.strip(".") else "")
        object.__setattr__(self, "routed_subnets", tuple(ipaddress.ip_network(s) for s in self.routed_subnets))


class Target(enum.Enum):
    CLUSTER = "cluster"
    UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class Decision:
    target: Target
    # For CLUSTER: the absolute name to ask the manager. For UPSTREAM: the normalised query name.
    name: str

    @property
    def cluster(self) -> bool:
        return self.target is Target.CLUSTER


def decide(qname: str, config: RulesConfig) -> Decision:
    name = absolute(qname)
    if name == ".":
        return Decision(Target.UPSTREAM, name)
    if name.endswith(_V4_REVERSE) or name.endswith(_V6_REVERSE):
        address = reverse_address(name)
        routed = address is not None and any(address in subnet for subnet in config.routed_subnets)
        return Decision(Target.CLUSTER if routed else Target.UPSTREAM, name)
    if _under(name, config.cluster_domain):
        return Decision(Target.CLUSTER, name)
    dotted = "." + name
    longest_include = max((len(s) for s in config.include_suffixes if dotted.endswith(s)), default=0)
    longest_exclude = max((len(s) for s in config.exclude_suffixes if dotted.endswith(s)), default=0)
    if longest_exclude > longest_include:
        return Decision(Target.UPSTREAM, name)
    if longest_include:
        return Decision(Target.CLUSTER, name)
    service = _service_name(name, config)
    if service is not None:
        return Decision(Target.CLUSTER, service)
    return Decision(Target.UPSTREAM, name)


def _under(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _service_name(name: str, config: RulesConfig) -> str | None:
    """The cluster name for a short service name, or None when the name is not one."""
    labels = name[:-1].split(".")
    if config.search_domain and _under(name, config.search_domain) and name != config.search_domain:
        # The OS appended our search domain to a short name: judge what the user typed.
        typed = name[: -len(config.search_domain) - 1] + "."
        if typed.count(".") == 1:
            return _in_namespace(typed, config.namespace, config)
        return _service_name(typed, config)
    if len(labels) == 1:
        return _in_namespace(name, config.namespace, config)
    if len(labels) >= 2 and labels[-1] in config.mapped_namespaces:
        return _in_namespace(".".join(labels[:-1]) + ".", labels[-1], config)
    if len(labels) >= 3 and labels[-1] == "svc" and labels[-2] in config.mapped_namespaces:
        return _in_namespace(".".join(labels[:-2]) + ".", labels[-2], config)
    return None


def _in_namespace(prefix: str, namespace: str, config: RulesConfig) -> str:
    return f"{prefix}{namespace}.svc.{config.cluster_domain}"


def reverse_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a full reverse name stands for; None for partial or malformed names."""
    name = absolute(name)
    try:
        if name.endswith("." + _V4_REVERSE):
            octets = name[: -len(_V4_REVERSE) - 1].split(".")
            if len(octets) != 4 or not all(o.isdigit() and (o == "0" or not o.startswith("0")) for o in octets):
                return None
            return ipaddress.IPv4Address(".".join(reversed(octets)))
        if name.endswith("." + _V6_REVERSE):
            nibbles = name[: -len(_V6_REVERSE) - 1].split(".")
            if len(nibbles) != 32 or not all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
                return None
            return ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16))
    except ValueError:
        return None
    return None


def reverse_zones(subnets: Iterable[Subnet]) -> tuple[str, ...]:
    """Reverse-lookup zones covering the subnets, for resolvers that route by domain (resolved, macOS).

    Zones sit on label boundaries (8 bits for IPv4, 4 for IPv6), so a /12 becomes sixteen /16 zones.
    """
    zones: list[str] = []
    for subnet in subnets:
        step = 8 if subnet.version == 4 else 4
        boundary = -(-subnet.prefixlen // step) * step
        for part in subnet.subnets(new_prefix=boundary):
            labels = part.network_address.reverse_pointer.split(".")
            keep = boundary // step
            # reverse_pointer lists every octet/nibble; drop the ones below the zone's boundary.
            zone = ".".join(labels[len(labels) - 2 - keep :]) + "."
            if zone not in zones:
                zones.append(zone)
    return tuple(zones)


def routing_domains(config: RulesConfig) -> tuple[str, ...]:
    """The domains an OS resolver should send to our server (for per-domain resolver modes)."""
    domains = [config.cluster_domain]
    domains += [f"{ns}." for ns in sorted(config.mapped_namespaces)]
    domains += [s.lstrip(".") for s in config.include_suffixes]
    if config.search_domain:
        domains.append(config.search_domain)
    domains += reverse_zones(config.routed_subnets)
    return tuple(dict.fromkeys(domains))
