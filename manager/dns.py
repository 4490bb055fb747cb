"""LookupDNS: resolve a client's name with the manager pod's own resolver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from dnslib import CLASS, QTYPE, RCODE, RR, DNSBuffer, DNSLabel, DNSQuestion, DNSRecord

from tether.manager.resolvconf import ResolverConfig, candidate_names, parse_resolv_conf

log = logging.getLogger("tether.manager.dns")

QUERY_TIMEOUT = 2.0
ATTEMPTS = 2


class DNSLookupError(ValueError):
    """A query that cannot be asked (bad name or type); the text names the value."""


@dataclass(frozen=True)
class LookupResult:
    rcode: int
    answers: list[RR]


class _UncompressedBuffer(DNSBuffer):
    # Records travel one by one, so a compression pointer into another record would dangle.
    def encode_name(self, name: object) -> None:
        self.encode_name_nocompress(name)


def pack_record(record: RR) -> bytes:
    buffer = _UncompressedBuffer()
    record.pack(buffer)
    return bytes(buffer.data)


def unpack_record(raw: bytes) -> RR:
    return RR.parse(DNSBuffer(raw))


def validate_query(name: str, qtype: int) -> None:
    if not 0 < qtype < 65536:
        raise DNSLookupError(f"DNS type {qtype} is out of range")
    if len(name) > 253 or any(len(label) > 63 for label in name.rstrip(".").split(".") if label):
        raise DNSLookupError(f"DNS name {name!r} is too long")
    if ".." in name or any(c.isspace() or ord(c) < 33 for c in name):
        raise DNSLookupError(f"DNS name {name!r} is malformed")


class ClusterResolver:
    def __init__(self, config: ResolverConfig, cluster_domain: str, port: int = 53) -> None:
        if not config.nameservers:
            raise ValueError("the pod's resolv.conf names no nameserver")
        self._config = config
        self._cluster_domain = cluster_domain
        self._port = port

    @classmethod
    def from_resolv_conf(cls, path: Path, cluster_domain: str) -> ClusterResolver:
        return cls(parse_resolv_conf(path.read_text()), cluster_domain)

    async def lookup(self, name: str, qtype: int, client_namespace: str) -> LookupResult:
        validate_query(name, qtype)
        last = LookupResult(RCODE.NXDOMAIN, [])
        for candidate in candidate_names(name, client_namespace, self._config, self._cluster_domain):
            reply = await self._ask(candidate, qtype)
            if reply is None:
                last = LookupResult(RCODE.SERVFAIL, [])
                continue
            rcode = reply.header.rcode
            if rcode == RCODE.NOERROR and reply.rr:
                return LookupResult(rcode, _renamed(reply.rr, DNSLabel(candidate), _absolute_label(name)))
            if rcode == RCODE.NOERROR:
                # The name exists without this type: that is the answer, the search stops (as in libc).
                return LookupResult(rcode, [])
            last = LookupResult(rcode, [])
        return last

    async def _ask(self, name: str, qtype: int) -> DNSRecord | None:
        query = DNSRecord(q=DNSQuestion(name, qtype, CLASS.IN))
        for attempt in range(ATTEMPTS):
            for server in self._config.nameservers:
                try:
                    return await _udp_exchange(query, str(server), self._port, QUERY_TIMEOUT)
                except (TimeoutError, OSError) as exc:
                    log.debug("dns %s %s via %s attempt %d: %s", name, QTYPE.get(qtype), server, attempt, exc)
        log.warning("no nameserver answered %s %s", name, QTYPE.get(qtype))
        return None


def _absolute_label(name: str) -> DNSLabel:
    return DNSLabel(name if name.endswith(".") else name + ".")


def _renamed(records: list[RR], resolved: DNSLabel, asked: DNSLabel) -> list[RR]:
    """Answer under the name the client asked, so its reply matches its question."""
    if resolved == asked:
        return records
    for record in records:
        if record.rname == resolved:
            record.rname = asked
    return records


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.reply: asyncio.Future[DNSRecord] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        with contextlib.suppress(Exception):
            record = DNSRecord.parse(data)
            if record.header.id == self.query_id and not self.reply.done():
                self.reply.set_result(record)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _udp_exchange(query: DNSRecord, server: str, port: int, timeout: float) -> DNSRecord:
    loop = asyncio.get_running_loop()
    transport, exchange = await loop.create_datagram_endpoint(
        lambda: _Exchange(query.header.id), remote_addr=(server, port)
    )
    try:
        transport.sendto(query.pack())
        reply = await asyncio.wait_for(exchange.reply, timeout)
    finally:
        transport.close()
    if reply.header.tc:
        return await _tcp_exchange(query, server, port, timeout)
    return reply


async def _tcp_exchange(query: DNSRecord, server: str, port: int, timeout: float) -> DNSRecord:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(server, port), timeout)
    try:
        packed = query.pack()
        writer.write(len(packed).to_bytes(2, "big") + packed)
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), timeout), "big")
        return DNSRecord.parse(await asyncio.wait_for(reader.readexactly(length), timeout))
    finally:
        writer.close()
