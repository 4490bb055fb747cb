"""The DNS server's recursion handling: probe names, and cluster lookups that come back through the cluster.

The "cluster" here forwards the names it does not know to our own server, as a local cluster's DNS that
uses the host's resolver does; the upstream is a real dnslib server on loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress

from dns_support import ask, serving
from dnslib import QTYPE, RCODE, RR, DNSRecord

from tether.helper.root import recursion
from tether.helper.root.dns.rules import RulesConfig

RULES = RulesConfig(
    namespace="default",
    mapped_namespaces=frozenset({"default"}),
    include_suffixes=(".corp",),
    routed_subnets=(ipaddress.ip_network("10.96.0.0/12"),),
)
MAX_DEPTH = 5


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


class LoopingCluster:
    """A cluster whose DNS forwards every name to our server (at most MAX_DEPTH deep, so a test without
    the protection ends); records each lookup."""

    def __init__(self) -> None:
        self.port = 0
        self.calls: list[str] = []

    async def __call__(self, name: str, qtype: int) -> tuple[int, list[RR]]:
        self.calls.append(name)
        if len(self.calls) > MAX_DEPTH:
            return RCODE.SERVFAIL, []
        reply = await ask(self.port, name, QTYPE.get(qtype))
        return reply.header.rcode, list(reply.rr)


def test_a_probe_name_is_noted_and_answered_nxdomain_without_any_lookup(upstream):  # type: ignore[no-untyped-def]
    async def scenario():  # type: ignore[no-untyped-def]
        cluster = LoopingCluster()
        async with serving(cluster, upstream, rules=RULES) as server:
            name = recursion.probe_name()
            assert not server.probe_came_back(name)
            reply = await ask(server.addresses[0][1], name.upper())
            assert reply.header.rcode == RCODE.NXDOMAIN
            assert server.probe_came_back(name)
            assert not server.probe_came_back(recursion.probe_name())
            assert cluster.calls == []
            assert not any(seen[1] == name for seen in upstream.zone.seen)  # the probe never leaves the machine
            assert server.counters.probes == 1

    run(scenario())


def test_a_detected_loop_is_answered_from_the_upstream_after_one_cluster_lookup(upstream):  # type: ignore[no-untyped-def]
    async def scenario():  # type: ignore[no-untyped-def]
        cluster = LoopingCluster()
        async with serving(cluster, upstream, rules=RULES) as server:
            cluster.port = server.addresses[0][1]
            server.recursion = recursion.DNS_DETECTED
            before = [s[1] for s in upstream.zone.seen].count("nothere.corp.")
            reply = await ask(cluster.port, "nothere.corp.")
            assert reply.header.rcode == RCODE.NXDOMAIN  # the upstream's answer, through the cluster
            assert cluster.calls == ["nothere.corp."]
            assert server.counters.recursions == 1
            assert [s[1] for s in upstream.zone.seen].count("nothere.corp.") == before + 1

    run(scenario())


def test_without_detection_the_same_cluster_loops(upstream):  # type: ignore[no-untyped-def]
    """The check above can fail: with the mode left at "none" the looped query is treated as a cluster name."""

    async def scenario():  # type: ignore[no-untyped-def]
        cluster = LoopingCluster()
        async with serving(cluster, upstream, rules=RULES, lookup_timeout=1) as server:
            cluster.port = server.addresses[0][1]
            server.recursion = recursion.DNS_NONE
            before = [s[1] for s in upstream.zone.seen].count("nothere.corp.")
            # The looped copy joins the first lookup's cache entry, so the first lookup waits on itself until
            # the lookup timeout: the name fails instead of getting the upstream's answer.
            reply: DNSRecord = await ask(cluster.port, "nothere.corp.")
            assert reply.header.rcode == RCODE.SERVFAIL
            assert server.counters.recursions == 0
            assert [s[1] for s in upstream.zone.seen].count("nothere.corp.") == before

    run(scenario())
