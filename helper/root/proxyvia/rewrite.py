"""Cluster DNS answers to VIPs, and VIPs back to real destinations (pure, apart from a warning log).

``rewrite_records(records, rules, table)``: each A/AAAA record whose address lies in a rule's network gets
the VIP of (address, that rule's workload) instead; the first rule containing the address wins (see
``spec``: --proxy-via rules come before the automatic remap's). Other records (CNAME, SRV, TXT, ...)
pass unchanged, and so does every TTL (the DNS server answers with its own short TTL anyway).

Loopback answers (127.0.0.0/8, ::1): a cluster name that resolves to a loopback address (a mesh listening
on the pod's loopback) means "this pod's own loopback", which only an agent inside a pod can reach. Unless
a rule's network contains the address itself (``--proxy-via 127.0.0.0/8=NAME`` says which workload
explicitly), it is mapped to the workload of the *first* rule that has one, in the order of the
--proxy-via values (``loopback_workload``); with no such rule (no --proxy-via, or only the automatic
remap, where the manager dials) loopback answers pass unchanged.

A record whose VIP cannot be given (the virtual subnet is exhausted, or there is no IPv6 one) is dropped
with a warning: the real address would be useless (it is not routed) and a wrong one harmful.

``Rewriter`` is the DNS server's ``rewrite`` hook: ``server = DNSServer(..., rewrite=Rewriter(table,
rules))``. The server stores rewritten answers in its cache, so a cached answer carries the same VIPs.
``Rewriter.set_rules`` swaps the rules and keeps the table (VIPs are never reassigned in a session); the
caller then flushes the server's cache (``server.flush()``) so that answers follow the new rules.

``destination_mapper(table)`` is the tunnel opener's ``map_destination`` hook: a VIP becomes (real
address, same port, the workload as ``TunnelOpen.via`` wants it or None); other destinations map to None
(unchanged); a VIP in the virtual subnet that was never handed out raises ``UnknownVirtualIP``, which
the opener refuses and the engine answers as unreachable.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence

from dnslib import AAAA, QTYPE, RR, A

from tether.helper.api.proxyvia import IPNetwork, ProxyRule, WorkloadRef
from tether.helper.root.proxyvia.vips import IPAddress, VipExhausted, VipTable

log = logging.getLogger("tether.helper.root.proxyvia")

# The DNS server's hook: (the name the cluster was asked, qtype, its records) -> the records to answer.
AnswerRewrite = Callable[[str, int, list[RR]], list[RR]]
# The VIF engine's hook: (destination address, port) -> (address, port, via) to dial, or None (unchanged).
DestinationMapper = Callable[[IPAddress, int], tuple[IPAddress, int, tuple[str, str, str] | None] | None]

_ADDRESS_TYPES = {QTYPE.A: A, QTYPE.AAAA: AAAA}


class UnknownVirtualIP(LookupError):
    """A destination in the virtual subnet that no DNS answer handed out (a stale or guessed address)."""


def match_rule(rules: Iterable[ProxyRule], address: IPAddress) -> ProxyRule | None:
    """The first rule whose network contains the address."""
    for rule in rules:
        if rule.network.version == address.version and address in rule.network:
            return rule
    return None


def loopback_workload(rules: Iterable[ProxyRule]) -> WorkloadRef | None:
    """Whose loopback a loopback answer means: the workload of the first rule that has one."""
    return next((rule.workload for rule in rules if rule.workload is not None), None)


def virtual_subnets_to_route(table: VipTable, rules: Sequence[ProxyRule]) -> list[IPNetwork]:
    """The virtual subnets the session routes into the TUN: a family's when a rule of that family exists, or
    both when loopback answers are mapped (127.0.0.0/8 gets IPv4 VIPs, ::1 IPv6 ones)."""
    loopback = loopback_workload(rules) is not None
    versions = {rule.network.version for rule in rules}
    return [subnet for subnet in table.subnets if loopback or subnet.version in versions]


def rewrite_records(
    records: Sequence[RR],
    rules: Sequence[ProxyRule],
    table: VipTable,
    *,
    loopback: WorkloadRef | None = None,
) -> list[RR]:
    """The records with addresses inside the rules' networks (and loopback ones) replaced by VIPs.

    ``loopback``: the workload for loopback answers no rule contains, when already known (it is
    ``loopback_workload(rules)``, computed here when None).
    """
    if loopback is None:
        loopback = loopback_workload(rules)
    result: list[RR] = []
    for record in records:
        kind = _ADDRESS_TYPES.get(record.rtype)
        if kind is None:
            result.append(record)
            continue
        try:
            address = ipaddress.ip_address(bytes(record.rdata.data))
        except (AttributeError, TypeError, ValueError):
            result.append(record)  # not an address we can read: not ours to judge
            continue
        rule = match_rule(rules, address)
        if rule is not None:
            workload = rule.workload
        elif address.is_loopback and loopback is not None:
            workload = loopback
        else:
            result.append(record)
            continue
        try:
            vip = table.assign(address, workload)
        except VipExhausted as exc:
            log.warning("dns: dropping %s %s of %s: %s", QTYPE.get(record.rtype), address, record.rname, exc)
            continue
        result.append(RR(record.rname, record.rtype, record.rclass, record.ttl, kind(str(vip))))
    return result


class Rewriter:
    """The DNS server's rewrite hook: the session's VipTable and the current rules."""

    def __init__(self, table: VipTable, rules: Iterable[ProxyRule] = ()) -> None:
        self.table = table
        self._rules: tuple[ProxyRule, ...] = ()
        self._loopback: WorkloadRef | None = None
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[ProxyRule, ...]:
        return self._rules

    def set_rules(self, rules: Iterable[ProxyRule]) -> bool:
        """Swap the rules (the table and its VIPs stay); True when they changed (then flush the DNS cache)."""
        new = tuple(rules)
        changed = new != self._rules
        self._rules = new
        self._loopback = loopback_workload(new)
        return changed

    def __call__(self, name: str, qtype: int, records: list[RR]) -> list[RR]:
        if not self._rules:
            return records
        return rewrite_records(records, self._rules, self.table, loopback=self._loopback)


def destination_mapper(table: VipTable) -> DestinationMapper:
    """The tunnel opener's map_destination hook over the session's VipTable."""

    def map_destination(address: IPAddress, port: int) -> tuple[IPAddress, int, tuple[str, str, str] | None] | None:
        if not table.contains(address):
            return None
        entry = table.lookup(address)
        if entry is None:
            raise UnknownVirtualIP(f"{address} is in the virtual IP subnet but no DNS answer gave it out")
        real, workload = entry
        return real, port, workload

    return map_destination
