"""The helper's DNS server: cluster names to the manager, everything else to the original upstream.

Wiring (what the helper does)::

    server = DNSServer(lookup=manager_lookup, rules=RulesConfig(...), upstream=UpstreamAddress("192.0.2.1"),
                       mark=DNS_BYPASS_MARK)
    host, port = await server.listen("127.0.0.1", 0)
    ...
    server.set_rules(new_config)      # cluster config changed: flushes the cache
    server.set_rewrite(rewriter)      # --proxy-via: A/AAAA answers to VIPs (or pass rewrite=...); flushes too
    await server.close()

`lookup(name, qtype) -> (rcode, records)` asks the cluster; its records are owned by `name` (the
name the rules chose, e.g. ``web.default.svc.cluster.local.`` for ``web.``) and are renamed here to
what the client asked. The server never raises into the event loop: malformed input is answered
FORMERR (or dropped when not even the header parses), failures and timeouts SERVFAIL.

The hot path: a cached cluster answer is a ready packed reply keyed by the client's raw question;
serving it is a hand parse of the header, a dict lookup and a two-field restamp, with no dnslib.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import cast

from dnslib import CLASS, QTYPE, RCODE, RR

from tether.helper.root.dns.cache import LRU, Answer, AnswerCache
from tether.helper.root.dns.rules import RulesConfig, decide
from tether.helper.root.dns.upstream import Forwarder, UpstreamAddress
from tether.helper.root.dns.wire import (
    BadQuery,
    Query,
    Unanswerable,
    answer_reply,
    error_reply,
    is_truncated,
    parse_query,
)
from tether.helper.root.dns.wire import restamp as restamp_reply
from tether.helper.root.fdlimit import dns_caps
from tether.helper.root.recursion import DNS_NOT_CHECKED, is_looped_query, is_probe_name

log = logging.getLogger("tether.helper.root.dns")

ClusterLookup = Callable[[str, int], Awaitable[tuple[int, list[RR]]]]
# Optional hook (--proxy-via): (name asked of the cluster, qtype, its records) -> the records to answer with.
AnswerRewrite = Callable[[str, int, list[RR]], list[RR]]

# The types the cluster can answer; anything else for a cluster name is NOTIMP (reference behaviour).
CLUSTER_TYPES = frozenset(QTYPE.reverse[t] for t in ("A", "AAAA", "CNAME", "SRV", "PTR", "TXT", "MX", "NS"))
_SIBLING = {QTYPE.A: QTYPE.AAAA, QTYPE.AAAA: QTYPE.A}

_CLUSTER_NAME = re.compile(r"[a-z0-9_*.-]+")

ANSWER_TTL = 4
LOOKUP_TIMEOUT = 4.0
UPSTREAM_TIMEOUT = 3.0
MAX_PENDING_UDP = 1024  # queries waiting on a lookup; beyond this, new ones are dropped, not queued
MAX_PENDING_PER_TCP = 32
TCP_IDLE_TIMEOUT = 10.0
MAX_PROBES_SEEN = 64


@dataclass
class Counters:
    queries: int = 0
    cluster: int = 0
    upstream: int = 0
    cache_hits: int = 0
    errors: int = 0  # answered FORMERR/NOTIMP/SERVFAIL because of bad input or a failed lookup
    dropped: int = 0  # not answered at all (no header, a response, overload)
    loops: int = 0  # our own forwarded queries that came back to us (dropped)
    tcp_evicted: int = 0  # idle TCP connections closed to make room for a new one (at the cap)
    tcp_refused: int = 0  # TCP connections closed at once: at the cap and none idle
    recursions: int = 0  # cluster lookups that came back to us through the cluster's DNS (answered upstream)
    probes: int = 0  # recursion probe names received (each one proves the cluster's DNS forwards to us)

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


CacheKey = tuple[str, int]  # (name asked of the manager, qtype)
ReplyKey = tuple[bytes, int]  # (the client's raw question, reply size limit)


class DNSServer:
    def __init__(
        self,
        lookup: ClusterLookup,
        rules: RulesConfig,
        upstream: UpstreamAddress | None,
        *,
        mark: int | None = None,
        cache: AnswerCache[CacheKey] | None = None,
        answer_ttl: int = ANSWER_TTL,
        lookup_timeout: float = LOOKUP_TIMEOUT,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
        rewrite: AnswerRewrite | None = None,
        max_tcp_connections: int | None = None,
        max_upstream_sockets: int | None = None,
    ) -> None:
        caps = dns_caps()  # the share of the fd limit that leaves the API and teardown their reserve
        self.max_tcp_connections = max_tcp_connections or caps.tcp_connections
        self.max_upstream_sockets = max_upstream_sockets or caps.upstream_sockets
        self._lookup = lookup
        self._rewrite = rewrite
        self._rules = rules
        self.mark = mark
        self.upstream_timeout = upstream_timeout
        self._forwarder = self._make_forwarder(upstream)
        self.answers: AnswerCache[CacheKey] = cache if cache is not None else AnswerCache()
        # Packed replies for exact questions, each tied to the cached Answer it was built from.
        self._replies: LRU[ReplyKey, tuple[CacheKey, Answer, bytes]] = LRU(
            self.answers.max_entries * 2, self.answers.clock
        )
        self.answer_ttl = answer_ttl
        self.lookup_timeout = lookup_timeout
        self.counters = Counters()
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Open TCP connections, oldest first, each with its queries being answered (none: idle).
        self._connections: dict[asyncio.StreamWriter, set[asyncio.Task[None]]] = {}
        self._connection_tasks: set[asyncio.Task[None]] = set()
        self.addresses: list[tuple[str, int]] = []
        # The DNS recursion mode (see recursion.py): set by the session once its probe has run.
        self.recursion = DNS_NOT_CHECKED
        self._probes_seen: set[str] = set()

    # --- configuration -----------------------------------------------------------------------

    @property
    def rules(self) -> RulesConfig:
        return self._rules

    def set_rules(self, rules: RulesConfig) -> None:
        """Swap the name rules; cached answers were chosen under the old ones, so they all go."""
        self._rules = rules
        self.flush()

    # --- proxy-via hook: applied to cluster answers before they are cached, so cached ones carry it too ---

    @property
    def rewrite(self) -> AnswerRewrite | None:
        return self._rewrite

    def set_rewrite(self, rewrite: AnswerRewrite | None) -> None:
        """Swap the answer rewrite; cached answers were rewritten by the old one, so they all go."""
        self._rewrite = rewrite
        self.flush()

    def set_upstream(self, upstream: UpstreamAddress | None) -> None:
        self._forwarder = self._make_forwarder(upstream)

    def _make_forwarder(self, upstream: UpstreamAddress | None) -> Forwarder | None:
        if upstream is None:
            return None
        return Forwarder(upstream, self.mark, self.upstream_timeout, max_sockets=self.max_upstream_sockets)

    @property
    def tcp_connections(self) -> int:
        return len(self._connections)

    @property
    def upstream(self) -> UpstreamAddress | None:
        return self._forwarder.upstream if self._forwarder else None

    def flush(self) -> None:
        self.answers.flush()
        self._replies.clear()

    # --- sockets -------------------------------------------------------------------------------

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Serve UDP and TCP on host:port (0: an ephemeral port free for both); returns the bound address."""
        loop = asyncio.get_running_loop()
        for _attempt in range(10):
            transport, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), local_addr=(host, port))
            bound = transport.get_extra_info("sockname")[1]
            try:
                server = await asyncio.start_server(self._serve_tcp, host, bound, reuse_address=True)
            except OSError:
                transport.close()
                if port:
                    raise
                continue  # the UDP port we were given is taken for TCP: try another
            self._udp.append(transport)
            self._tcp.append(server)
            self.addresses.append((host, bound))
            log.info("dns server listening on %s port %d (udp+tcp)", host, bound)
            return host, bound
        raise OSError(f"no port on {host} is free for both UDP and TCP")

    async def close(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        for writer in list(self._connections):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.answers.close()
        if self._connection_tasks:
            await asyncio.wait(self._connection_tasks, timeout=5)
        for server in self._tcp:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._udp.clear()
        self._tcp.clear()
        self.addresses.clear()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def looped(self, peer: tuple[str, int] | None) -> bool:
        """A query from one of our own forwarding sockets: the redirect caught it. Answering it would
        forward it again, round and round; drop it, so the original forward times out once instead."""
        forwarder = self._forwarder
        if forwarder is None or not forwarder.is_own(peer):
            return False
        self.counters.loops += 1
        if self.counters.loops == 1:
            log.warning("dns: a forwarded query came back to us from %s: is the bypass mark honoured?", peer)
        return True

    def probe_came_back(self, name: str) -> bool:
        """Whether the recursion probe ``name`` has reached this server (through the cluster's DNS)."""
        return name.lower().rstrip(".") in self._probes_seen

    # --- answering -----------------------------------------------------------------------------

    async def handle(self, data: bytes, tcp: bool = False) -> bytes | None:
        """The reply to one DNS message (None: send nothing)."""
        reply, query = self.answer_now(data, tcp)
        if query is None:
            return reply
        return await self.answer_later(query, data, tcp)

    def answer_now(self, data: bytes, tcp: bool) -> tuple[bytes | None, Query | None]:
        """What can be answered without waiting: errors and cached replies.

        Returns (reply, None) when done (reply None: drop), or (None, query) when a lookup is needed.
        """
        self.counters.queries += 1
        try:
            query = parse_query(data)
        except Unanswerable:
            self.counters.dropped += 1
            return None, None
        except BadQuery as exc:
            self.counters.errors += 1
            log.debug("dns: %s", exc)
            return exc.reply, None
        ready = self._replies.get((query.question, query.limit(tcp)))
        if ready is not None:
            key, answer, template = ready
            if self.answers.get(key) is answer:
                self.counters.cache_hits += 1
                self.counters.cluster += 1
                return restamp_reply(template, query), None
        return None, query

    async def answer_later(self, query: Query, data: bytes, tcp: bool) -> bytes | None:
        try:
            if is_probe_name(query.text):
                # Only a cluster whose DNS forwards to this machine hands us a probe name: note it, and
                # answer at once so the probe's own lookup ends instead of going round again.
                self.counters.probes += 1
                if len(self._probes_seen) >= MAX_PROBES_SEEN:
                    self._probes_seen.clear()  # a connect asks one probe at a time; this only bounds junk
                self._probes_seen.add(query.text.lower().rstrip("."))
                return error_reply(query, RCODE.NXDOMAIN)
            decision = decide(query.text, self._rules)
            if decision.cluster and is_looped_query(
                self.recursion, in_flight=self.answers.pending((decision.name, query.qtype)) is not None
            ):
                # Our own lookup of this name, back from the cluster's DNS: asking the cluster again
                # would loop; the upstream answers what the cluster's DNS would have asked it anyway.
                self.counters.recursions += 1
                return await self._forward(query, data, tcp)
            if not decision.cluster:
                self.counters.upstream += 1
                return await self._forward(query, data, tcp)
            self.counters.cluster += 1
            if not _CLUSTER_NAME.fullmatch(decision.name):
                # Bytes outside letters, digits, "-" and "_" (we escaped them as text): no cluster
                # holds such a name, and the manager would refuse it; don't bother it.
                return error_reply(query, RCODE.NXDOMAIN)
            if query.qtype not in CLUSTER_TYPES or query.qclass != CLASS.IN:
                self.counters.errors += 1
                return error_reply(query, RCODE.NOTIMP)
            return await self._cluster(query, decision.name, tcp)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dns: answering %s %s failed", query.text, QTYPE.get(query.qtype))
            self.counters.errors += 1
            return error_reply(query, RCODE.SERVFAIL)

    async def _cluster(self, query: Query, name: str, tcp: bool) -> bytes:
        key: CacheKey = (name, query.qtype)
        try:
            answer, cached = await self.answers.resolve(key, lambda: self._ask_cluster(name, query.qtype))
        except TimeoutError:
            log.warning("dns: cluster lookup of %s %s timed out", name, QTYPE.get(query.qtype))
            self.counters.errors += 1
            return error_reply(query, RCODE.SERVFAIL)
        except Exception:
            log.exception("dns: cluster lookup of %s %s failed", name, QTYPE.get(query.qtype))
            self.counters.errors += 1
            return error_reply(query, RCODE.SERVFAIL)
        if cached:
            self.counters.cache_hits += 1
        if query.qtype in _SIBLING:
            answer = await self._sibling_rule(key, answer)
        limit = query.limit(tcp)
        reply = answer_reply(query, answer.rcode, answer.records, name, self.answer_ttl, limit)
        expires = self.answers.expiry(key)
        if expires is not None and self.answers.get(key) is answer:
            self._replies.put((query.question, limit), (key, answer, reply), expires)
        return reply

    async def _ask_cluster(self, name: str, qtype: int) -> Answer:
        async with asyncio.timeout(self.lookup_timeout):
            rcode, records = await self._lookup(name, qtype)
        if self._rewrite is not None:
            records = self._rewrite(name, qtype, list(records))
        return Answer.of(rcode, records)

    async def _sibling_rule(self, key: CacheKey, answer: Answer) -> Answer:
        """A name with addresses of one family only must not look nonexistent for the other.

        When A fails (NXDOMAIN, SERVFAIL...) but AAAA for the same name succeeded, or the other way
        round, the failing one becomes NOERROR with no data; otherwise clients that ask both at once
        (getaddrinfo) may give up on the name. A lookup of the sibling still running is waited for.
        """
        name, qtype = key
        other: CacheKey = (name, _SIBLING[qtype])
        empty = Answer(RCODE.NOERROR)
        if answer.positive:
            sibling = self.answers.get(other)
            if sibling is not None and sibling.rcode != RCODE.NOERROR:
                self.answers.put(other, empty)
            return answer
        if answer.rcode == RCODE.NOERROR:
            return answer
        sibling = self.answers.get(other)
        pending = self.answers.pending(other)
        if sibling is None and pending is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.lookup_timeout):
                    sibling = await asyncio.shield(pending)
        if sibling is not None and sibling.positive:
            self.answers.put(key, empty)
            return empty
        return answer

    async def _forward(self, query: Query, data: bytes, tcp: bool) -> bytes:
        forwarder = self._forwarder
        if forwarder is None:
            self.counters.errors += 1
            return error_reply(query, RCODE.REFUSED)  # nowhere to send it: let the OS try its next server
        try:
            if tcp:
                return await forwarder.tcp(data, query)
            reply = await forwarder.udp(data, query)
            if is_truncated(reply):
                # Retry over TCP ourselves; if the whole answer still does not fit the client's UDP
                # limit, hand on the truncated one so the client comes back over TCP.
                with contextlib.suppress(OSError, TimeoutError):
                    full = await forwarder.tcp(data, query)
                    if len(full) <= query.payload:
                        return full
            return reply
        except (OSError, TimeoutError) as exc:
            log.debug("dns: upstream %s for %s: %s", forwarder.upstream, query.text, exc)
            self.counters.errors += 1
            return error_reply(query, RCODE.SERVFAIL)

    # --- transports ----------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # close() ends idle connections by closing their transport (readexactly then fails and this
        # returns normally); cancelling this task instead makes asyncio log a spurious error.
        if not self._make_room():
            self.counters.tcp_refused += 1
            writer.close()
            return
        pending: set[asyncio.Task[None]] = set()
        self._connections[writer] = pending
        connection = asyncio.current_task()
        if connection is not None:
            self._connection_tasks.add(connection)
            connection.add_done_callback(self._connection_tasks.discard)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                # Checked once data arrives: a forwarder sends only after it has recorded its source.
                if self.looped(writer.get_extra_info("peername")):
                    break
                if len(pending) >= MAX_PENDING_PER_TCP:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)  # done ones discard themselves
                # RFC 7766 6.2.1.1: queries on one connection may be answered out of order.
                one = self._spawn(self._tcp_one(data, writer))
                pending.add(one)
                one.add_done_callback(pending.discard)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            self._connections.pop(writer, None)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _make_room(self) -> bool:
        """Room for one more TCP connection: at the cap, the oldest idle one is closed (RFC 7766 6.2.3 lets a
        server under pressure close idle connections); False if every one has a query in progress."""
        if len(self._connections) < self.max_tcp_connections:
            return True
        for writer, pending in self._connections.items():
            if not pending:
                del self._connections[writer]
                writer.close()  # its reader fails and its task ends by itself
                self.counters.tcp_evicted += 1
                return True
        return False

    async def _tcp_one(self, data: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self.handle(data, tcp=True)
        except Exception:
            log.exception("dns: TCP query failed")
            return
        if reply is not None and not writer.is_closing():
            writer.write(struct.pack("!H", len(reply)) + reply)


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self.server
        try:
            reply, query = server.answer_now(data, tcp=False)
        except Exception:  # a bug must cost one query, not the server
            log.exception("dns: UDP query failed")
            return
        if reply is not None:
            self._send(reply, addr)
        elif query is not None:
            if server.looped(addr):
                return
            if self.pending >= MAX_PENDING_UDP:
                server.counters.dropped += 1
                return
            self.pending += 1
            server._spawn(self._later(query, data, addr))

    async def _later(self, query: Query, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self.server.answer_later(query, data, tcp=False)
            if reply is not None:
                self._send(reply, addr)
        finally:
            self.pending -= 1

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier reply (the client went away): nothing to do.
        log.debug("dns: udp socket error: %s", exc)
