"""The manager's answers fuzzed against the helper's session logic.

ClusterInfo with mutated subnets (address bytes of any length, prefixes past the family's width, host bits),
cluster domains and suffixes goes through ``plan_routes``/``plan_dns`` and the DNS rules built from them: a
plan within the default policy, or a ValueError or PolicyError naming the value, never another exception.
LookupDNS answers with malformed resource records and odd rcodes go through the session's ``_lookup`` into
the real DNS server: every query gets a reply a client can parse, and nothing is logged as an unexpected exception.
"""

from __future__ import annotations

import ipaddress
import random
import struct

from dnslib import AAAA, CNAME, QTYPE, RR, SRV, TXT, A, DNSBuffer, DNSRecord
from fuzz_harness import arun, captured_logs, errors, nasty, run

from tests.doubles.fake_manager_answers import FakeAnswerLink
from tether.helper.api import helper_pb2 as pb
from tether.helper.root import session
from tether.helper.root.connection import Connection
from tether.helper.root.dns.rules import RulesConfig, decide
from tether.helper.root.dns.server import DNSServer
from tether.helper.root.plan import Remapping, plan_dns, plan_routes
from tether.helper.root.policy import PolicyError
from tether.helper.root.server.caller import Caller
from tether.manager.api import manager_pb2 as mpb
from tether.runtime import eventloop

NAMES = ("web.default.svc.cluster.local.", "web.default.", "web.", "x.corp.example.", "1.0.96.10.in-addr.arpa.")
DOMAINS = ("cluster.local.", "cluster.local", "", ".", "..", "a..b.", "com.", "-x.", "x" * 300 + ".", "\u00e9t\u00e9.")


def _subnet(rng: random.Random) -> mpb.Subnet:
    size = rng.choice((4, 4, 16, 16, 0, 3, 5, 17))
    prefix = rng.choice((0, 1, 8, 12, 16, 24, 32, 33, 64, 128, 129, 255, rng.getrandbits(32)))
    if rng.random() < 0.5 and size in (4, 16):  # a network without host bits, as a sane manager sends
        address = ipaddress.ip_address(rng.randbytes(size))
        prefix = min(prefix, address.max_prefixlen)
        network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        return mpb.Subnet(ip=network.network_address.packed, prefix_len=prefix)
    return mpb.Subnet(ip=rng.randbytes(size), prefix_len=prefix)


def _subnets(rng: random.Random) -> list[mpb.Subnet]:
    return [_subnet(rng) for _ in range(rng.choice((0, 1, 2, 5)))]


def _suffixes(rng: random.Random) -> list[str]:
    return [rng.choice((".corp.example", "org", ".", "", nasty(rng))) for _ in range(rng.choice((0, 1, 3)))]


def _cluster_info(rng: random.Random) -> mpb.ClusterInfo:
    info = mpb.ClusterInfo(
        pod_subnets=_subnets(rng),
        service_subnets=_subnets(rng),
        manager_pod_ip=rng.randbytes(rng.choice((0, 4, 16, 7))),
        manager_port=rng.getrandbits(32),
        dns=mpb.DNSConfig(
            cluster_domain=rng.choice((*DOMAINS, nasty(rng))),
            include_suffixes=_suffixes(rng),
            exclude_suffixes=_suffixes(rng),
        ),
        routing=mpb.RoutingConfig(
            also_proxy_subnets=_subnets(rng),
            never_proxy_subnets=_subnets(rng),
            allow_conflicting_subnets=_subnets(rng),
        ),
    )
    if rng.random() < 0.2:
        info.service_subnet.CopyFrom(_subnet(rng))  # an older manager's single subnet
    return info


def _plan_case(rng: random.Random) -> None:
    info = _cluster_info(rng)
    request = pb.ConnectRequest(namespace="default")
    try:
        plan = plan_routes(info, request, Remapping(), never_route=("192.0.2.1", "fd00::53"))
        mapped = frozenset({"default"})
        rules = plan_dns(info, request, namespace="default", mapped_namespaces=mapped, routes=plan.routes)
    except (ValueError, PolicyError) as exc:
        assert str(exc), "a refusal without a message"
        return
    for route in plan.routes.routes:
        assert isinstance(route, ipaddress.IPv4Network | ipaddress.IPv6Network), route
        # Whatever the cluster sends, the default policy holds: nothing wider than a /8 (IPv4) or /32 (IPv6).
        assert route.prefixlen >= (8 if route.version == 4 else 32), route
    assert isinstance(rules, RulesConfig)
    for name in NAMES:
        decide(name, rules)


def test_cluster_info_against_the_planner():
    run("session: ClusterInfo -> plan", _plan_case, cases=3000)


# --- DNS answers -------------------------------------------------------------------------------------


def _record(rng: random.Random, owner: str) -> bytes:
    """One answer record in wire form: a good one, one with a mutated field, or noise."""
    rr = rng.choice(
        (
            RR(owner, QTYPE.A, rdata=A("10.96.0.20"), ttl=30),
            RR(owner, QTYPE.AAAA, rdata=AAAA("fd00::20"), ttl=30),
            RR(owner, QTYPE.CNAME, rdata=CNAME("other.default.svc.cluster.local."), ttl=30),
            RR(owner, QTYPE.SRV, rdata=SRV(0, 0, 80, "web.default.svc.cluster.local."), ttl=30),
            RR(owner, QTYPE.TXT, rdata=TXT([b"x" * 200] * rng.randint(1, 6)), ttl=30),
        )
    )
    buffer = DNSBuffer()
    rr.pack(buffer)
    raw = bytearray(buffer.data)
    fixed = _name_length(raw)  # where TYPE, CLASS, TTL and RDLENGTH start (the owner is not compressed)
    how = rng.randrange(6)
    if how == 0:
        return bytes(raw)
    if how == 1:  # cut anywhere
        return bytes(raw[: rng.randint(0, len(raw))])
    if how == 2:  # an rdlength that lies
        struct.pack_into("!H", raw, fixed + 8, rng.getrandbits(16))
        return bytes(raw)
    if how == 3:  # a type or class that is not the rdata's
        struct.pack_into("!HH", raw, fixed, rng.getrandbits(16), rng.getrandbits(16))
        return bytes(raw)
    if how == 4:  # a name compression pointer into nowhere
        return b"\xc0" + bytes((rng.randrange(256),)) + bytes(raw[fixed:])
    return rng.randbytes(rng.randint(0, 40))


def _name_length(raw: bytearray) -> int:
    position = 0
    while position < len(raw) and raw[position]:
        position += raw[position] + 1
    return min(position + 1, len(raw))


async def _dns_case(rng: random.Random, server: DNSServer, link: FakeAnswerLink) -> None:
    owner = "web.default.svc.cluster.local."
    link.rcode = rng.choice((0, 0, 3, 2, 5, 15, 16, 255, -1, 1 << 31))
    link.answers = [_record(rng, owner) for _ in range(rng.choice((0, 1, 2, 8)))]
    qtype = rng.choice((QTYPE.A, QTYPE.AAAA, QTYPE.SRV, QTYPE.TXT, QTYPE.CNAME, QTYPE.PTR))
    question = DNSRecord.question(rng.choice(("web.default.", "web.", owner)), QTYPE[qtype])
    question.header.id = rng.getrandbits(16)
    server.flush()  # each case's answers, not a cached earlier one
    reply = await server.handle(question.pack(), tcp=rng.random() < 0.3)
    assert reply is not None, "a cluster query went unanswered"
    parsed = DNSRecord.parse(reply)
    assert parsed.header.id == question.header.id


def test_dns_answers_against_the_sessions_lookup():
    async def main() -> None:
        link = FakeAnswerLink()
        connection = Connection(request=pb.ConnectRequest(), caller=Caller(uid=1000, gid=1000, pid=1))
        connection.link = link  # type: ignore[assignment]
        rules = RulesConfig(namespace="default", mapped_namespaces=frozenset({"default"}))
        server = DNSServer(lambda name, qtype: session._lookup(connection, name, qtype), rules, upstream=None)
        with captured_logs() as records:
            await arun("session: LookupDNS answers -> DNS server", lambda rng: _dns_case(rng, server, link), cases=3000)
        problems = errors(records)
        assert not problems, problems[:3]

    eventloop.run(main())
