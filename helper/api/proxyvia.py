"""``--proxy-via CIDR=WORKLOAD`` values and the rules they expand to (pure: no I/O).

Syntax (repeatable)::

    --proxy-via 10.128.0.0/9=echo           a strict CIDR (host bits clear)
    --proxy-via all=echo                    a symbol: also | service | pods | all
    --proxy-via service=payments/gateway    WORKLOAD as name or namespace/name

``also`` stands for the also-proxy subnets, ``service`` for the cluster's service subnets, ``pods`` for its
pod subnets and ``all`` for all three. WORKLOAD names a Deployment, ReplicaSet or StatefulSet whose agent
dials (and so the flow leaves from inside that workload's pod); without a namespace it is looked up in
the connection's namespace. Both parts are DNS-1123 labels (lower case letters, digits and "-").

Checks, each an error naming the offending value:

* per value (``parse_proxy_via``): the ``=``, the CIDR or symbol, the workload name;
* across values (``parse_proxy_vias``): two CIDRs that overlap, a symbol given twice, ``all`` together
  with another symbol;
* after expansion (``resolve``): a symbol's subnets overlapping another entry's subnets.
  A symbol that expands to nothing (``also`` without also-proxy subnets) yields no rule: the cluster's
  subnets can change during a session and ``resolve`` runs again each time.

Whether the workloads exist is the caller's question to the cluster: ``check_workloads(specs, namespace,
find)`` with ``find(namespace, name) -> kind | None``, run once at connect (it blocks; call it from a
thread). It fills in the kind the manager uses to find the agent.

Rules and matching: ``resolve`` returns rules in the order of the values; ``combine`` appends the
automatic-remap rules (``auto_rules``: workload None, "the manager dials") after them. Where two rules
contain an address, the first wins (see ``rewrite.match_rule``), so an explicit ``--proxy-via`` beats
the automatic remap of a conflicting subnet that overlaps it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SYMBOLS = ("also", "service", "pods", "all")
_ALL_COVERS = ("also", "service", "pods")
AUTO_SOURCE = "auto-resolve"
WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_RULE = 'lower case letters, digits and "-", starting and ending with a letter or digit, at most 63 characters'


class ProxyViaError(ValueError):
    """A --proxy-via value that cannot be used; the message names it (``value``) and says why."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f'invalid --proxy-via "{value}": {reason}')


class WorkloadRef(NamedTuple):
    """The workload whose agent dials; a plain (namespace, name, kind) tuple, as ``TunnelOpen.via`` wants.

    ``kind`` is "" when the manager is to find the workload by name.
    """

    namespace: str
    name: str
    kind: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ProxyViaSpec:
    """One parsed --proxy-via value: a network or a symbol, and the workload."""

    value: str  # as the user wrote it, for messages
    network: IPNetwork | None  # None: ``symbol`` is set
    symbol: str | None
    workload: str
    namespace: str | None = None  # None: the connection's namespace
    kind: str = ""  # filled in by check_workloads

    def ref(self, namespace: str) -> WorkloadRef:
        return WorkloadRef(self.namespace or namespace, self.workload, self.kind)

    @property
    def target(self) -> str:
        return self.symbol if self.symbol is not None else str(self.network)


@dataclass(frozen=True)
class ProxyRule:
    """Answers (and so flows) inside ``network`` go through VIPs dialed by ``workload`` (None: the manager)."""

    network: IPNetwork
    workload: WorkloadRef | None
    source: str = ""  # the --proxy-via value, or "auto-resolve"

    def __str__(self) -> str:
        return f"{self.network} via {self.workload or 'the traffic-manager'}"


# --- parsing -------------------------------------------------------------------------------------------


def _check_label(value: str, what: str, text: str) -> None:
    if not text:
        raise ProxyViaError(value, f"the {what} is empty")
    if len(text) > 63 or not _LABEL.fullmatch(text):
        hint = f' (did you mean "{text.lower()}"?)' if text != text.lower() and _LABEL.fullmatch(text.lower()) else ""
        raise ProxyViaError(value, f'{what} "{text}" is not a valid name: {_LABEL_RULE}{hint}')


def _parse_cidr(value: str, text: str) -> IPNetwork:
    address_text, slash, prefix_text = text.partition("/")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        symbols = ", ".join(SYMBOLS)
        raise ProxyViaError(value, f'"{text}" is neither a CIDR nor one of the symbols {symbols}') from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ProxyViaError(value, f'"{text}": a zone index (%...) cannot name a subnet')
    if not slash:
        raise ProxyViaError(
            value, f'"{text}" has no prefix length (write {address}/{address.max_prefixlen} for one address)'
        )
    if not (prefix_text.isascii() and prefix_text.isdigit()):
        raise ProxyViaError(value, f'prefix length "{prefix_text}" is not a number')
    prefix = int(prefix_text)
    if prefix > address.max_prefixlen:
        raise ProxyViaError(value, f"prefix length {prefix} is out of range for IPv{address.version}")
    network = ipaddress.ip_network((address, prefix), strict=False)
    if network.network_address != address:
        raise ProxyViaError(value, f'"{text}" has host bits set; did you mean {network}?')
    return network


def parse_proxy_via(value: str) -> ProxyViaSpec:
    """One ``CIDR=WORKLOAD`` value."""
    if not isinstance(value, str):
        raise ProxyViaError(repr(value), f"expected a string, got {type(value).__name__}")
    text = value.strip()
    target, equals, workload = text.partition("=")
    target, workload = target.strip(), workload.strip()
    if not equals:
        raise ProxyViaError(value, "expected CIDR=WORKLOAD (for example all=echo)")
    if not target:
        raise ProxyViaError(value, "the CIDR (or also, service, pods, all) before the = is empty")
    if target.lower() in SYMBOLS:
        network, symbol = None, target.lower()
    else:
        network, symbol = _parse_cidr(value, target), None
    if not workload:
        raise ProxyViaError(value, "the workload after the = is empty")
    namespace: str | None = None
    if "/" in workload:
        parts = workload.split("/")
        if len(parts) != 2:
            raise ProxyViaError(value, f'workload "{workload}" must be NAME or NAMESPACE/NAME')
        namespace, workload = parts
        _check_label(value, "namespace", namespace)
    _check_label(value, "workload", workload)
    return ProxyViaSpec(value=value, network=network, symbol=symbol, workload=workload, namespace=namespace)


def parse_proxy_vias(values: Iterable[str]) -> list[ProxyViaSpec]:
    """Every --proxy-via value, checked one by one and against each other."""
    if isinstance(values, str):  # a lone string would iterate by character
        values = [values]
    specs: list[ProxyViaSpec] = []
    symbols: dict[str, ProxyViaSpec] = {}
    for value in values:
        spec = parse_proxy_via(value)
        if spec.symbol is not None:
            earlier = symbols.get(spec.symbol)
            if earlier is not None:
                raise ProxyViaError(value, f'the symbol "{spec.symbol}" is already given by "{earlier.value}"')
            if spec.symbol == "all" and symbols:
                other = next(iter(symbols.values()))
                raise ProxyViaError(value, f'"all" includes "{other.symbol}", already given by "{other.value}"')
            if spec.symbol in _ALL_COVERS and "all" in symbols:
                raise ProxyViaError(value, f'"{spec.symbol}" is already included in "{symbols["all"].value}"')
            symbols[spec.symbol] = spec
        else:
            assert spec.network is not None
            for earlier in specs:
                if earlier.network is not None and _overlap(earlier.network, spec.network):
                    raise ProxyViaError(value, f'{spec.network} overlaps {earlier.network} of "{earlier.value}"')
        specs.append(spec)
    return specs


def _overlap(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)  # type: ignore[arg-type]


# --- the cluster's side ------------------------------------------------------------------------------------

# (namespace, name) -> the kind of the workload of that name ("Deployment", "ReplicaSet", "StatefulSet"),
# or None when there is none.
WorkloadFinder = Callable[[str, str], str | None]


def check_workloads(specs: Sequence[ProxyViaSpec], namespace: str, find: WorkloadFinder) -> list[ProxyViaSpec]:
    """The specs with each workload's kind filled in; ProxyViaError naming every workload that is missing.

    ``find`` asks the cluster (blocking: run this in a thread); it is called once per distinct workload.
    An exception from ``find`` (the API server is unreachable...) propagates unchanged.
    """
    kinds: dict[tuple[str, str], str | None] = {}
    missing: list[ProxyViaSpec] = []
    for spec in specs:
        key = (spec.namespace or namespace, spec.workload)
        if key not in kinds:
            kinds[key] = find(*key)
        if not kinds[key]:
            missing.append(spec)
    if missing:
        first = missing[0]
        kinds_text = ", ".join(WORKLOAD_KINDS[:-1]) + f" or {WORKLOAD_KINDS[-1]}"
        names = "; ".join(f'"{spec.namespace or namespace}/{spec.workload}" (from "{spec.value}")' for spec in missing)
        raise ProxyViaError(first.value, f"no {kinds_text} named {names}")
    return [replace(spec, kind=kinds[(spec.namespace or namespace, spec.workload)] or "") for spec in specs]


def _networks(values: Iterable[str | IPNetwork], what: str) -> list[IPNetwork]:
    networks: list[IPNetwork] = []
    for value in values:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(value)
            continue
        try:
            networks.append(ipaddress.ip_network(value))
        except ValueError as exc:
            raise ValueError(f'invalid {what} "{value}": {exc}') from None
    return networks


def _drop_covered(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """In order, without duplicates and without networks inside an earlier or later one of the list."""
    unique = list(dict.fromkeys(networks))
    return [
        n
        for n in unique
        if not any(o != n and o.version == n.version and n.subnet_of(o) for o in unique)  # type: ignore[arg-type]
    ]


def resolve(
    specs: Sequence[ProxyViaSpec],
    service_subnets: Iterable[str | IPNetwork],
    pod_subnets: Iterable[str | IPNetwork],
    also_subnets: Iterable[str | IPNetwork],
    *,
    namespace: str,
) -> list[ProxyRule]:
    """The rules the specs stand for in a cluster with these subnets, in the order of the specs.

    ``namespace`` is the connection's (for workloads given without one). Raises ProxyViaError when a
    symbol's subnets overlap another entry's.
    """
    by_symbol = {
        "service": _networks(service_subnets, "service subnet"),
        "pods": _networks(pod_subnets, "pod subnet"),
        "also": _networks(also_subnets, "also-proxy subnet"),
    }
    by_symbol["all"] = [*by_symbol["service"], *by_symbol["pods"], *by_symbol["also"]]
    rules: list[ProxyRule] = []
    owners: list[int] = []  # the index of the spec each rule came from
    for index, spec in enumerate(specs):
        if spec.symbol is not None:
            networks = _drop_covered(by_symbol[spec.symbol])
        else:
            assert spec.network is not None
            networks = [spec.network]
        workload = spec.ref(namespace)
        for network in networks:
            for owner, earlier in zip(owners, rules, strict=True):
                if owner != index and _overlap(earlier.network, network):
                    raise ProxyViaError(
                        spec.value, f'{spec.target} ({network}) overlaps {earlier.network} of "{earlier.source}"'
                    )
            rules.append(ProxyRule(network, workload, spec.value))
            owners.append(index)
    return rules


def auto_rules(conflicting: Iterable[str | IPNetwork]) -> list[ProxyRule]:
    """Automatic remap (--auto-resolve): the conflicting cluster subnets behind VIPs that the manager dials."""
    return [ProxyRule(n, None, AUTO_SOURCE) for n in _drop_covered(_networks(conflicting, "conflicting subnet"))]


def combine(proxy_via: Sequence[ProxyRule], auto: Sequence[ProxyRule]) -> list[ProxyRule]:
    """--proxy-via rules first (they win where both contain an address), then the automatic ones."""
    return [*proxy_via, *auto]


def translated_subnets(rules: Iterable[ProxyRule]) -> list[IPNetwork]:
    """The cluster subnets behind VIPs: the session leaves them out of the routes (see the package docstring)."""
    return _drop_covered(rule.network for rule in rules)
