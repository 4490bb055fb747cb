"""DNS messages on the wire (pure): strict query parsing, error replies, and cluster answers.

Queries are parsed by hand rather than with dnslib: the server must judge hostile input (garbage,
bogus counts, pointer loops) without ever raising anything but our own errors, and the parse is
also the cache key of the hot path, so it has to be cheap. Replies carrying records are packed with
dnslib, once per question, and memoised by the server.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

HEADER = struct.Struct("!HHHHHH")
MAX_NAME = 255  # RFC 1035 2.3.4, wire length including the length bytes and the root
MAX_LABEL = 63
CLASSIC_UDP_LIMIT = 512
# What we offer EDNS clients for our own answers: the DNS flag day 2020 size that avoids fragmentation.
EDNS_UDP_LIMIT = 1232
TCP_LIMIT = 65535

_QR = 0x8000
_OPCODE = 0x7800
_RD = 0x0100
_CD = 0x0010


class Unanswerable(ValueError):
    """Not even a query header (or a response, which must never be answered): drop it."""


class BadQuery(ValueError):
    """A query we can name but not serve; `reply` is the error answer to send back."""

    def __init__(self, message: str, reply: bytes) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    qname: bytes  # the name in wire form (length-prefixed labels and the root), exactly as sent
    qtype: int
    qclass: int
    question: bytes  # name, type and class exactly as sent: the cache key of ready replies
    edns: bool
    payload: int  # the largest UDP reply the client accepts (512 without EDNS)

    @property
    def text(self) -> str:
        """The name as text for the rules ("web.default."); odd bytes are escaped, never guessed."""
        return name_text(self.qname)

    def limit(self, tcp: bool) -> int:
        """The largest reply of ours this client takes over this transport."""
        return TCP_LIMIT if tcp else min(self.payload, EDNS_UDP_LIMIT) if self.edns else CLASSIC_UDP_LIMIT


def header_reply(data: bytes, rcode: int, question: bytes = b"") -> bytes:
    """An answerless reply with the query's id, opcode, RD and CD and the given rcode."""
    qid, flags = struct.unpack_from("!HH", data)
    flags = _QR | 0x0080 | (flags & (_OPCODE | _RD | _CD)) | (rcode & 0xF)  # 0x0080: recursion available
    return HEADER.pack(qid, flags, 1 if question else 0, 0, 0, 0) + question


def parse_query(data: bytes) -> Query:
    if type(data) is not bytes:
        data = bytes(data)  # a bytearray (dnslib's pack() gives those) would leak mutable, unhashable slices
    if len(data) < HEADER.size:
        raise Unanswerable(f"{len(data)} bytes is shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & _QR:
        raise Unanswerable("a response, not a query")
    if flags & _OPCODE:
        # RFC 1035 4.1.1: NOTIMP is the answer for kinds of query a server does not support.
        raise BadQuery(f"opcode {(flags & _OPCODE) >> 11} is not QUERY", header_reply(data, RCODE.NOTIMP))
    if qdcount != 1:
        raise BadQuery(f"{qdcount} questions", header_reply(data, RCODE.FORMERR))
    try:
        end = skip_name(data, HEADER.size, allow_pointers=False)
        if end + 4 > len(data):
            raise ValueError("the question ends early")
        qtype, qclass = struct.unpack_from("!HH", data, end)
        offset = end + 4
        for _ in range(ancount + nscount):
            offset = _skip_record(data, offset)
        edns, payload = False, CLASSIC_UDP_LIMIT
        for _ in range(arcount):
            rtype, rclass, offset = _record_head(data, offset)
            if rtype == QTYPE.OPT:
                if edns:
                    raise ValueError("more than one OPT record")  # RFC 6891 6.1.1
                edns, payload = True, max(CLASSIC_UDP_LIMIT, rclass)
    except (ValueError, struct.error) as exc:
        raise BadQuery(f"malformed query: {exc}", header_reply(data, RCODE.FORMERR)) from None
    question = data[HEADER.size : end + 4]
    return Query(qid, flags, data[HEADER.size : end], qtype, qclass, question, edns, payload)


def skip_name(data: bytes, offset: int, allow_pointers: bool = True) -> int:
    """The offset just past the name at offset; raises ValueError for anything malformed."""
    total = 0
    while True:
        if offset >= len(data):
            raise ValueError("a name runs past the end of the message")
        length = data[offset]
        if length == 0:
            if total + 1 > MAX_NAME:
                raise ValueError("a name is longer than 255 bytes")
            return offset + 1
        if length & 0xC0 == 0xC0:
            if not allow_pointers:
                raise ValueError("a compression pointer in the question")
            if offset + 2 > len(data):
                raise ValueError("a compression pointer runs past the end")
            return offset + 2  # where it points does not matter for skipping
        if length > MAX_LABEL:
            raise ValueError(f"label length byte {length:#x} is not a label")
        total += length + 1
        if total > MAX_NAME:
            raise ValueError("a name is longer than 255 bytes")
        offset += length + 1


def _record_head(data: bytes, offset: int) -> tuple[int, int, int]:
    """Type and class of the record at offset, and the offset past the whole record."""
    offset = skip_name(data, offset)
    rtype, rclass, _ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
    offset += 10 + rdlength
    if offset > len(data):
        raise ValueError("a record's data runs past the end")
    return rtype, rclass, offset


def _skip_record(data: bytes, offset: int) -> int:
    return _record_head(data, offset)[2]


def name_labels(qname: bytes) -> list[bytes]:
    """The labels of a name in wire form that parse_query() accepted (no pointers)."""
    labels = []
    offset = 0
    while qname[offset]:
        length = qname[offset]
        labels.append(qname[offset + 1 : offset + 1 + length])
        offset += length + 1
    return labels


def name_text(qname: bytes) -> str:
    # A dot inside a label must not split it for the rules; escape it the way zone files do.
    labels = [raw.decode("ascii", "backslashreplace").replace(".", "\\.") for raw in name_labels(qname)]
    return ".".join(labels) + "."


def is_truncated(reply: bytes) -> bool:
    return len(reply) >= 4 and bool(reply[2] & 0x02)


def answers_query(reply: bytes, query: Query) -> bool:
    """A reply from upstream belongs to this query: a response with its id and (case-blind) question."""
    if len(reply) < HEADER.size + len(query.question):
        return False
    qid, flags = struct.unpack_from("!HH", reply)
    if qid != query.id or not flags & _QR:
        return False
    echoed = reply[HEADER.size : HEADER.size + len(query.question)]
    # Some resolvers leave the question out of error replies; accept those too.
    return echoed.lower() == query.question.lower() or struct.unpack_from("!H", reply, 4)[0] == 0


def error_reply(query: Query, rcode: int) -> bytes:
    data = HEADER.pack(query.id, query.flags, 1, 0, 0, 0)
    return header_reply(data, rcode, query.question)


def restamp(template: bytes, query: Query) -> bytes:
    """A memoised reply made this query's own: its id, and its RD and CD bits (RFC 1035, RFC 4035)."""
    flags = (struct.unpack_from("!H", template, 2)[0] & ~(_RD | _CD)) | (query.flags & (_RD | _CD))
    return struct.pack("!HH", query.id, flags) + template[4:]


def answer_reply(query: Query, rcode: int, records: Sequence[RR], owner: str, ttl: int, limit: int) -> bytes:
    """Our reply to a cluster question: records owned by `owner` (the name the manager was asked) are
    renamed to the client's own name, every TTL becomes `ttl`, and an oversize reply is truncated.
    """
    # Built from our own parse: dnslib's parser refuses labels that are not UTF-8, which clients may send.
    question = DNSQuestion(DNSLabel(name_labels(query.qname)), query.qtype, query.qclass)
    asked = DNSLabel(owner)
    reply = DNSRecord(DNSHeader(id=query.id, qr=1, ra=1, rd=bool(query.flags & _RD), rcode=rcode), q=question)
    for record in records:
        rname = question.qname if record.rname == asked else record.rname
        reply.add_answer(RR(rname, record.rtype, record.rclass, ttl, record.rdata))
    if query.edns:
        reply.add_ar(EDNS0(udp_len=EDNS_UDP_LIMIT))
    packed = reply.pack()
    if len(packed) <= limit:
        return packed
    reply.rr = []
    reply.header.tc = 1
    return reply.pack()
