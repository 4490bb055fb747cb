"""The DNS server on 127.0.0.1 with a fake cluster lookup and a real dnslib upstream on loopback."""

import asyncio
import random
import socket
import statistics
import struct
import time

import pytest
from dns_support import RULES, FakeCluster, LoopThread, ask, serving, tcp_exchange, udp_exchange
from dnslib import EDNS0, QTYPE, RCODE, DNSError, DNSRecord

from tether.helper.root.dns.rules import RulesConfig
from tether.helper.root.dns.server import DNSServer
from tether.helper.root.dns.upstream import UpstreamAddress
from tether.helper.root.dns.wire import skip_name


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def records(reply: DNSRecord) -> list[tuple[str, str, int, str]]:
    return [(str(rr.rname), QTYPE.get(rr.rtype), rr.ttl, str(rr.rdata)) for rr in reply.rr]


@pytest.mark.parametrize(
    ("name", "qtype", "expected"),
    [
        ("web.default.", "A", [("web.default.", "A", 4, "10.96.0.20")]),
        ("web", "AAAA", [("web.", "AAAA", 4, "fd00:10::20")]),
        ("Web.Default.svc.cluster.local", "A", [("Web.Default.svc.cluster.local.", "A", 4, "10.96.0.20")]),
        (
            "_http._tcp.web.default",
            "SRV",
            [("_http._tcp.web.default.", "SRV", 4, "0 100 80 web.default.svc.cluster.local.")],
        ),
        ("info.default.svc", "TXT", [("info.default.svc.", "TXT", 4, '"hello from the cluster"')]),
        ("20.0.96.10.in-addr.arpa", "PTR", [("20.0.96.10.in-addr.arpa.", "PTR", 4, "web.default.svc.cluster.local.")]),
        ("mail.default", "MX", [("mail.default.", "MX", 4, "10 web.default.svc.cluster.local.")]),
        ("alias.default", "CNAME", [("alias.default.", "CNAME", 4, "web.default.svc.cluster.local.")]),
        (
            "alias.default",
            "A",
            [
                ("alias.default.", "CNAME", 4, "web.default.svc.cluster.local."),
                ("web.default.svc.cluster.local.", "A", 4, "10.96.0.20"),
            ],
        ),
        ("cluster.local", "NS", [("cluster.local.", "NS", 4, "ns.cluster.local.")]),
    ],
)
def test_cluster_types(upstream, name, qtype, expected):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            reply = await ask(server.addresses[0][1], name, qtype)
            assert reply.header.rcode == RCODE.NOERROR and reply.header.qr and reply.header.ra
            assert records(reply) == expected
            assert str(reply.q.qname) == (name if name.endswith(".") else name + ".")

    run(scenario())


def test_other_types_for_cluster_names_are_notimp(upstream):
    async def scenario():
        cluster = FakeCluster()
        async with serving(cluster, upstream) as server:
            port = server.addresses[0][1]
            for qtype in ("HINFO", "ANY", "CAA"):
                reply = await ask(port, "web.default.", qtype)
                assert reply.header.rcode == RCODE.NOTIMP and not reply.rr
            assert cluster.calls == []

    run(scenario())


def test_unknown_cluster_name_is_nxdomain_and_known_name_without_type_is_nodata(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            port = server.addresses[0][1]
            assert (await ask(port, "nothing.default.")).header.rcode == RCODE.NXDOMAIN
            nodata = await ask(port, "info.default.", "MX")
            assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr

    run(scenario())


def test_odd_bytes_in_a_cluster_name_are_nxdomain_without_a_lookup(upstream):
    async def scenario():
        cluster = FakeCluster()
        async with serving(cluster, upstream) as server:
            data = bytearray(DNSRecord.question("web.default.", "A").pack())
            data[13] = 0xE9  # "web" becomes b"\xe9eb", which is not UTF-8
            reply = await udp_exchange(server.addresses[0][1], bytes(data))
            assert struct.unpack_from("!H", reply, 2)[0] & 0xF == RCODE.NXDOMAIN
            assert reply[12:] == bytes(data[12:])  # the question is echoed exactly
            assert cluster.calls == []

    run(scenario())


def test_upstream_forwarding_preserves_id_and_upstream_ttl(upstream):
    async def scenario():
        cluster = FakeCluster()
        async with serving(cluster, upstream) as server:
            port = server.addresses[0][1]
            for qid in (0x0001, 0x1234, 0xFFFF):
                reply = await ask(port, "www.example.com", "A", id=qid)
                assert reply.header.id == qid
                assert records(reply) == [("www.example.com.", "A", 300, "93.184.216.34")]
                assert ("udp", "www.example.com.", qid) in upstream.zone.seen
            missing = await ask(port, "missing.example.org.")
            assert missing.header.rcode == RCODE.NXDOMAIN
            assert cluster.calls == []
            assert server.counters.upstream == 4

    run(scenario())


def test_tcp_queries_for_cluster_and_upstream(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            port = server.addresses[0][1]
            cluster = await ask(port, "web.default.", "A", tcp=True)
            assert records(cluster) == [("web.default.", "A", 4, "10.96.0.20")]
            outside = await ask(port, "www.example.com.", "A", tcp=True, id=0x4242)
            assert outside.header.id == 0x4242 and outside.rr
            assert ("tcp", "www.example.com.", 0x4242) in upstream.zone.seen

    run(scenario())


def test_tcp_connection_carries_several_queries(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.addresses[0][1])
            queries = [DNSRecord.question(n, "A") for n in ("web.default.", "alias.default.", "www.example.com.")]
            for query in queries:
                data = query.pack()
                writer.write(struct.pack("!H", len(data)) + data)
            ids = set()
            for _ in queries:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
                ids.add(DNSRecord.parse(await reader.readexactly(length)).header.id)
            assert ids == {q.header.id for q in queries}
            writer.close()

    run(scenario())


def test_truncation_over_udp_and_the_full_answer_over_tcp(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            port = server.addresses[0][1]
            small = await ask(port, "big.default.", "TXT")
            assert small.header.tc and not small.rr
            full = await ask(port, "big.default.", "TXT", tcp=True)
            assert not full.header.tc and full.rr[0].ttl == 4
            edns = DNSRecord.question("big.default.", "TXT")
            edns.add_ar(EDNS0(udp_len=4096))
            big = DNSRecord.parse(await udp_exchange(port, edns.pack()))
            assert not big.header.tc and big.rr and big.ar[0].rtype == QTYPE.OPT
            # Upstream: truncated over UDP, so the server asks again over TCP; 1 KB still does not
            # fit a classic client, which gets the truncated reply and comes back over TCP.
            outside = await ask(port, "big.example.com.", "TXT")
            assert outside.header.tc
            assert ("tcp", "big.example.com.", outside.header.id) in upstream.zone.seen
            outside = await ask(port, "big.example.com.", "TXT", tcp=True)
            assert not outside.header.tc and outside.rr

    run(scenario())


def test_answers_are_cached_and_case_variants_share_them(upstream):
    async def scenario():
        cluster = FakeCluster()
        async with serving(cluster, upstream) as server:
            port = server.addresses[0][1]
            for name in ("web.default.", "web.default.", "WEB.default.", "web", "web.default.svc.cluster.local."):
                reply = await ask(port, name)
                assert records(reply)[0][3] == "10.96.0.20" and str(reply.rr[0].rname) == name.rstrip(".") + "."
            assert cluster.calls == [("web.default.svc.cluster.local.", QTYPE.A)]
            assert server.counters.cache_hits == 4 and server.counters.cluster == 5

    run(scenario())


def test_set_rules_flushes_the_cache(upstream):
    async def scenario():
        cluster = FakeCluster()
        async with serving(cluster, upstream) as server:
            port = server.addresses[0][1]
            await ask(port, "web.default.")
            server.set_rules(RulesConfig(namespace="default"))  # "default" is no longer mapped
            assert len(server.answers) == 0
            assert (await ask(port, "web.default.")).header.rcode == RCODE.NXDOMAIN  # now from upstream
            assert len(cluster.calls) == 1
            server.set_rules(RULES)
            assert records(await ask(port, "web.default."))[0][3] == "10.96.0.20"
            assert len(cluster.calls) == 2

    run(scenario())


def test_concurrent_identical_queries_make_one_lookup(upstream):
    async def scenario():
        cluster = FakeCluster(delay=0.05)
        async with serving(cluster, upstream) as server:
            port = server.addresses[0][1]
            replies = await asyncio.gather(*(ask(port, "web.default.") for _ in range(10)))
            assert all(records(r) == [("web.default.", "A", 4, "10.96.0.20")] for r in replies)
            assert cluster.calls == [("web.default.svc.cluster.local.", QTYPE.A)]

    run(scenario())


def test_a_fails_but_aaaa_succeeded_is_nodata(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            port = server.addresses[0][1]
            assert (await ask(port, "v6only.default.", "AAAA")).rr
            a = await ask(port, "v6only.default.", "A")
            assert a.header.rcode == RCODE.NOERROR and not a.rr
            # the other way round
            assert (await ask(port, "v4only.default.", "A")).rr
            aaaa = await ask(port, "v4only.default.", "AAAA")
            assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr
            # neither family: still NXDOMAIN
            assert (await ask(port, "nothing.default.", "A")).header.rcode == RCODE.NXDOMAIN
            assert (await ask(port, "nothing.default.", "AAAA")).header.rcode == RCODE.NXDOMAIN

    run(scenario())


def test_failed_a_cached_before_aaaa_succeeds_is_corrected(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            port = server.addresses[0][1]
            assert (await ask(port, "v6only.default.", "A")).header.rcode == RCODE.NXDOMAIN
            assert (await ask(port, "v6only.default.", "AAAA")).rr
            again = await ask(port, "v6only.default.", "A")
            assert again.header.rcode == RCODE.NOERROR and not again.rr

    run(scenario())


def test_a_and_aaaa_asked_together(upstream):
    async def scenario():
        async with serving(FakeCluster(delay=0.02), upstream) as server:
            port = server.addresses[0][1]
            a, aaaa = await asyncio.gather(ask(port, "v6only.default.", "A"), ask(port, "v6only.default.", "AAAA"))
            assert a.header.rcode == RCODE.NOERROR and not a.rr
            assert aaaa.rr

    run(scenario())


def test_lookup_timeout_and_failure_answer_servfail(upstream, caplog):
    async def scenario():
        async with serving(FakeCluster(), upstream, lookup_timeout=0.2) as server:
            port = server.addresses[0][1]
            started = time.monotonic()
            slow = await ask(port, "slow.default.")
            assert slow.header.rcode == RCODE.SERVFAIL and time.monotonic() - started < 2
            boom = await ask(port, "boom.default.")
            assert boom.header.rcode == RCODE.SERVFAIL
            assert "the manager went away" in caplog.text
            assert records(await ask(port, "web.default."))  # still serving
            assert server.counters.errors == 2

    run(scenario())


def test_upstream_down_answers_servfail(upstream):
    async def scenario():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
            hole.bind(("127.0.0.1", 0))  # a port where nothing answers
            dead = UpstreamAddress("127.0.0.1", hole.getsockname()[1])
            server = DNSServer(FakeCluster(), RULES, dead, upstream_timeout=0.3)
            _, port = await server.listen()
            try:
                assert (await ask(port, "www.example.com.")).header.rcode == RCODE.SERVFAIL
            finally:
                await server.close()

    run(scenario())


def test_an_upstream_that_is_ourselves_does_not_loop(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream, upstream_timeout=0.5) as server:
            port = server.addresses[0][1]
            server.set_upstream(UpstreamAddress("127.0.0.1", port))
            assert server.upstream == UpstreamAddress("127.0.0.1", port)
            assert (await ask(port, "www.example.com.")).header.rcode == RCODE.SERVFAIL
            assert (await ask(port, "www.example.com.", tcp=True)).header.rcode == RCODE.SERVFAIL
            assert server.counters.loops == 2 and server.counters.upstream == 2

    run(scenario())


def test_no_upstream_is_refused():
    async def scenario():
        async with serving(FakeCluster(), None) as server:
            assert (await ask(server.addresses[0][1], "www.example.com.")).header.rcode == RCODE.REFUSED

    run(scenario())


def _mutations(rng: random.Random, seeds: list[bytes], count: int) -> list[bytes]:
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 80)))
            continue
        data = bytearray(rng.choice(seeds))
        if kind == 1:  # bit flips
            for _ in range(rng.randrange(1, 6)):
                bit = rng.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
        elif kind == 2:  # truncation
            del data[rng.randrange(len(data)) :]
        elif kind == 3:  # bogus counts
            struct.pack_into("!HHHH", data, 4, *(rng.choice((0, 1, 2, 255, 65535)) for _ in range(4)))
        else:  # random bytes spliced in
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randrange(1, 20))
        # keep the QR bit clear on half of them so more reach the parser proper
        if data and len(data) > 2 and i % 2:
            data[2] &= 0x7F
        out.append(bytes(data))
    return out


def test_fuzzed_queries_never_kill_the_server(upstream):
    rng = random.Random(20240601)
    seeds = [
        DNSRecord.question(n, t).pack()
        for n, t in (
            ("web.default.", "A"),
            ("_http._tcp.web.default.", "SRV"),
            ("nothing.default.", "AAAA"),
            ("20.0.96.10.in-addr.arpa.", "PTR"),
            ("www.example.com.", "A"),
        )
    ]
    with_edns = DNSRecord.question("web.default.", "TXT")
    with_edns.add_ar(EDNS0(udp_len=1232))
    seeds.append(with_edns.pack())
    garbage = _mutations(rng, seeds, 4000)

    async def scenario():
        async with serving(FakeCluster(), upstream, upstream_timeout=0.5, lookup_timeout=0.5) as server:
            port = server.addresses[0][1]
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.connect(("127.0.0.1", port))
                replies = []
                for i, data in enumerate(garbage):
                    await loop.sock_sendall(sock, data)
                    if i % 50 == 0:
                        # Pace by what the server has read, not by time: on a loaded machine a fixed pause lets
                        # the socket buffer fill and the kernel drop most of the datagrams before they are read.
                        deadline = loop.time() + 5.0
                        while server.counters.queries < i - 200 and loop.time() < deadline:
                            await asyncio.sleep(0.002)
                            replies += _drain(sock)
                        replies += _drain(sock)
                await asyncio.sleep(1.0)
                replies += _drain(sock)
            for reply in replies:
                _assert_well_formed(reply)
            assert len(replies) > 1000
            assert records(await ask(port, "web.default."))[0][3] == "10.96.0.20"
            tcp = DNSRecord.parse(await tcp_exchange(port, DNSRecord.question("web.default.").pack()))
            assert tcp.rr
            counters = server.counters
            # the kernel may drop some datagrams when the socket buffer fills; those never reach us
            assert counters.queries > len(garbage) // 2 and counters.errors > 0 and counters.dropped > 0

    run(scenario())


def _assert_well_formed(reply: bytes) -> None:
    """Whatever we send back is a DNS response that parses (dnslib refuses labels that are not UTF-8,
    which we echo as the client sent them; those are checked by structure instead)."""
    assert struct.unpack_from("!H", reply, 2)[0] & 0x8000
    try:
        DNSRecord.parse(reply)
    except DNSError as exc:
        assert "Invalid label" in str(exc)
        assert skip_name(reply, 12) + 4 <= len(reply)


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


def test_tcp_garbage_and_stalled_clients_do_not_wedge(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            port = server.addresses[0][1]
            # a length prefix promising more than is ever sent, and a connection that sends nothing
            _, stalled = await asyncio.open_connection("127.0.0.1", port)
            stalled.write(b"\x01\x00abc")
            _, silent = await asyncio.open_connection("127.0.0.1", port)
            # a message too short for a header: dropped, and the connection ends when the client's does
            reader, junk = await asyncio.open_connection("127.0.0.1", port)
            junk.write(b"\x00\x03\x00\x01\x02")
            junk.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            # a message with a header but nothing else: FORMERR
            formerr = DNSRecord.parse(await tcp_exchange(port, struct.pack("!HHHHHH", 77, 0, 0, 0, 0, 0)))
            assert formerr.header.id == 77 and formerr.header.rcode == RCODE.FORMERR
            assert records(await ask(port, "web.default.", tcp=True))
            stalled.close()
            silent.close()

    run(scenario())


def test_listen_reports_the_port_and_serves_udp_and_tcp_on_it(upstream):
    async def scenario():
        async with serving(FakeCluster(), upstream) as server:
            host, port = server.addresses[0]
            assert host == "127.0.0.1" and port > 0
            assert (await ask(port, "web.default.")).rr and (await ask(port, "web.default.", tcp=True)).rr

    run(scenario())


def _latency(port: int, queries: list[bytes], rounds: int) -> list[float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
        samples = []
        for i in range(rounds):
            data = queries[i % len(queries)]
            started = time.perf_counter()
            sock.send(data)
            sock.recv(65535)
            samples.append(time.perf_counter() - started)
        return samples


def test_latency_on_loopback(upstream, capsys):
    """Cached answers must be cheap: measured with a blocking client on another thread."""
    loop = LoopThread()
    try:
        cluster = FakeCluster()
        server = DNSServer(cluster, RULES, upstream.address)
        _, port = loop.call(server.listen())
        cached = [DNSRecord.question("web.default.", "A").pack()]
        warm = _latency(port, cached, 50)
        assert len(warm) == 50
        cached_samples = _latency(port, cached, 2000)
        # Uncached: every query a new name, so each one goes through the rules, the lookup and dnslib.
        fresh = [DNSRecord.question(f"svc-{i}.default.", "A").pack() for i in range(2000)]
        uncached_samples = _latency(port, fresh, 2000)
        upstream_samples = _latency(port, [DNSRecord.question("www.example.com.", "A").pack()], 300)
        loop.call(server.close())
    finally:
        loop.stop()
    cached_p50 = statistics.median(cached_samples) * 1e6
    uncached_p50 = statistics.median(uncached_samples) * 1e6
    upstream_p50 = statistics.median(upstream_samples) * 1e6
    p99 = sorted(cached_samples)[int(len(cached_samples) * 0.99)] * 1e6
    with capsys.disabled():
        print(
            f"\n[dns latency, loopback] cached p50 {cached_p50:.0f} us (p99 {p99:.0f} us), "
            f"uncached cluster p50 {uncached_p50:.0f} us, upstream p50 {upstream_p50:.0f} us"
        )
    assert cached_p50 < 300
