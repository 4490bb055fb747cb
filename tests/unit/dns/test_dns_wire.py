"""Query parsing and reply building on the wire (pure)."""

import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, TXT, A, DNSRecord

from tether.helper.root.dns.wire import (
    CLASSIC_UDP_LIMIT,
    EDNS_UDP_LIMIT,
    TCP_LIMIT,
    BadQuery,
    Unanswerable,
    answer_reply,
    answers_query,
    error_reply,
    parse_query,
    restamp,
)


def packed(name: str = "web.default.", qtype: str = "A", edns: int = 0, **header: int) -> bytes:
    query = DNSRecord.question(name, qtype)
    for key, value in header.items():
        setattr(query.header, key, value)
    if edns:
        query.add_ar(EDNS0(udp_len=edns))
    return query.pack()


def rcode_of(reply: bytes) -> int:
    return struct.unpack_from("!H", reply, 2)[0] & 0xF


def test_parse_plain_query():
    data = packed("Web.Default.", "AAAA", id=0x1234)
    query = parse_query(data)
    assert query.id == 0x1234 and query.qtype == QTYPE.AAAA and query.qclass == 1
    assert query.qname == b"\x03Web\x07Default\x00"
    assert query.text == "Web.Default."
    assert query.question == data[12:]
    assert not query.edns and query.payload == CLASSIC_UDP_LIMIT
    assert query.limit(tcp=False) == CLASSIC_UDP_LIMIT and query.limit(tcp=True) == TCP_LIMIT


def test_parse_edns_payload():
    query = parse_query(packed(edns=4096))
    assert query.edns and query.payload == 4096
    assert query.limit(tcp=False) == EDNS_UDP_LIMIT
    assert parse_query(packed(edns=100)).payload == CLASSIC_UDP_LIMIT


def test_root_and_odd_labels_as_text():
    assert parse_query(packed(".")).text == "."
    data = bytearray(packed("a.b."))
    data[13] = ord(".")  # the label "a" becomes "."
    assert parse_query(bytes(data)).text == "\\..b."


@pytest.mark.parametrize("data", [b"", b"\x00" * 11])
def test_no_header_is_dropped(data):
    with pytest.raises(Unanswerable):
        parse_query(data)


def test_responses_are_dropped():
    with pytest.raises(Unanswerable):
        parse_query(packed(qr=1))


def test_other_opcodes_get_notimp():
    with pytest.raises(BadQuery) as info:
        parse_query(packed(opcode=2))
    assert rcode_of(info.value.reply) == RCODE.NOTIMP


def header(qdcount: int = 1, ancount: int = 0, nscount: int = 0, arcount: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0xBEEF, 0x0100, qdcount, ancount, nscount, arcount)


QUESTION = b"\x03web\x07default\x00\x00\x01\x00\x01"

MALFORMED = {
    "no question": header(qdcount=0),
    "two questions": header(qdcount=2) + QUESTION * 2,
    "truncated name": header() + b"\x03web\x07def",
    "missing type": header() + b"\x03web\x00\x00",
    "pointer in question": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "label length 64": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "name over 255": header() + b"\x3f" + b"a" * 63 + (b"\x3f" + b"a" * 63) * 3 + b"\x00\x00\x01\x00\x01",
    "bogus answer count": header(ancount=3) + QUESTION,
    "bogus additional count": header(arcount=65535) + QUESTION,
    "record past the end": header(arcount=1) + QUESTION + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x10",
    "two OPT records": header(arcount=2) + QUESTION + (b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00") * 2,
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_queries_get_formerr_with_their_id(data):
    with pytest.raises(BadQuery) as info:
        parse_query(data)
    reply = info.value.reply
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply)
    assert qid == 0xBEEF and flags & 0x8000 and flags & 0x0100 and flags & 0xF == RCODE.FORMERR
    assert (qd, an, ns, ar) == (0, 0, 0, 0)


def test_error_reply_echoes_the_question():
    query = parse_query(packed("web.default.", "HINFO", id=7))
    reply = DNSRecord.parse(error_reply(query, RCODE.NOTIMP))
    assert reply.header.id == 7 and reply.header.rcode == RCODE.NOTIMP and reply.header.qr
    assert str(reply.q.qname) == "web.default." and reply.q.qtype == QTYPE.HINFO


def test_answer_reply_renames_owner_and_rewrites_ttl():
    query = parse_query(packed("Web.Default.", "A", id=9))
    records = [
        RR("web.default.svc.cluster.local.", QTYPE.A, rdata=A("10.96.0.20"), ttl=300),
        RR("other.default.svc.cluster.local.", QTYPE.A, rdata=A("10.96.0.21"), ttl=300),
    ]
    reply = DNSRecord.parse(answer_reply(query, RCODE.NOERROR, records, "web.default.svc.cluster.local.", 4, 512))
    assert [str(rr.rname) for rr in reply.rr] == ["Web.Default.", "other.default.svc.cluster.local."]
    assert all(rr.ttl == 4 for rr in reply.rr)
    assert reply.header.id == 9 and reply.header.ra and reply.header.rd and not reply.header.aa
    assert records[0].ttl == 300  # the cached records are not changed


def test_answer_reply_truncates_over_the_limit_and_carries_edns():
    query = parse_query(packed("big.default.", "TXT", edns=4096))
    records = [RR("big.default.", QTYPE.TXT, rdata=TXT([b"x" * 200] * 10))]
    small = DNSRecord.parse(answer_reply(query, RCODE.NOERROR, records, "big.default.", 4, 512))
    assert small.header.tc and not small.rr and small.ar[0].rtype == QTYPE.OPT
    full = DNSRecord.parse(answer_reply(query, RCODE.NOERROR, records, "big.default.", 4, TCP_LIMIT))
    assert not full.header.tc and len(full.rr) == 1


def test_restamp_takes_id_rd_and_cd_from_the_query():
    template = answer_reply(parse_query(packed(id=1)), RCODE.NOERROR, [], "web.default.", 4, 512)
    query = parse_query(packed(id=0xABCD, rd=0, cd=1))
    reply = DNSRecord.parse(restamp(template, query))
    assert reply.header.id == 0xABCD and not reply.header.rd and reply.header.cd and reply.header.qr


def test_answers_query_checks_id_and_question():
    query = parse_query(packed("www.example.com.", id=5))
    good = DNSRecord.question("WWW.example.com.").reply()
    good.header.id = 5
    assert answers_query(good.pack(), query)
    good.header.id = 6
    assert not answers_query(good.pack(), query)
    other = DNSRecord.question("evil.example.com.").reply()
    other.header.id = 5
    assert not answers_query(other.pack(), query)
    assert not answers_query(packed("www.example.com.", id=5), query)  # a query, not a reply
