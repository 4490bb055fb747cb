import ipaddress
import random

import pytest
from linux_capture import CAPTURE
from netstack_helpers import reference_checksum

from tether.helper.root.vif.netstack.checksum import checksum, fold, verify, word_sum
from tether.helper.root.vif.netstack.packets import (
    ACK,
    FIN,
    PSH,
    SYN,
    PacketError,
    TcpTemplate,
    UdpTemplate,
    build_icmp,
    build_tcp,
    build_udp,
    decode,
    parse_ip,
    parse_tcp,
    parse_tcp_options,
    partial_checksum_offsets,
    tcp_options,
)


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# --- checksum ---


def test_rfc1071_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (after the end-around carry).
    data = hexbytes("0001 f203 f4f5 f6f7")
    assert fold(word_sum(data)) == 0xDDF2
    assert checksum(data) == 0x220D == reference_checksum(data)


def test_known_ipv4_header():
    # A textbook IPv4 header whose checksum field (b861) is correct.
    header = hexbytes("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")
    assert verify(header)
    zeroed = header[:10] + b"\0\0" + header[12:]
    assert checksum(zeroed) == 0xB861
    assert not verify(header[:10] + b"\xb8\x62" + header[12:])


@pytest.mark.parametrize("size", [0, 1, 2, 3, 39, 40, 1459, 1460, 9001, 65494, 65535])
def test_checksum_matches_reference(size):
    rng = random.Random(size)
    for _ in range(3):
        data = rng.randbytes(size)
        assert checksum(data) == reference_checksum(data) % 0xFFFF
        filler = checksum(data + b"\0" * (size % 2))
        assert verify(data + b"\0" * (size % 2) + filler.to_bytes(2, "big"))


def test_checksum_all_ones_and_big_values():
    data = b"\xff" * 70000
    assert checksum(data) == reference_checksum(data) % 0xFFFF
    assert fold(0xFFFF) == 0 and fold(0x1_0000) == 1


def test_fold_equals_modulo_for_huge_numbers():
    rng = random.Random(5)
    for bits in (10, 4095, 4096, 4097, 70000, 524288, 600001):
        value = rng.getrandbits(bits)
        assert fold(value) == value % 0xFFFF


# --- hand-made packets, independent of the builders ---


def handmade_syn() -> bytes:
    ip = bytearray(hexbytes("45 00 00 2c  12 34 40 00  40 06 00 00  0a 01 00 02  0a 60 00 0a"))
    ip[10:12] = reference_checksum(bytes(ip)).to_bytes(2, "big")
    tcp = bytearray(
        hexbytes(
            "9c 40 00 50  00 00 03 e8  00 00 00 00  60 02 ff ff  00 00 00 00"  # 40000 -> 80, seq 1000, SYN, doff 6
            "02 04 05 b4"  # MSS 1460
        )
    )
    pseudo = hexbytes("0a 01 00 02  0a 60 00 0a  00 06 00 18")
    tcp[16:18] = reference_checksum(pseudo + bytes(tcp)).to_bytes(2, "big")
    return bytes(ip + tcp)


def test_handmade_syn_parses():
    p = decode(handmade_syn())
    assert (p.version, p.proto) == (4, 6)
    assert (str(p.src), str(p.dst), p.sport, p.dport) == ("10.1.0.2", "10.96.0.10", 40000, 80)
    assert (p.seq, p.ack, p.flags, p.window, p.mss) == (1000, 0, SYN, 65535, 1460)
    assert p.payload == b""


def test_builder_matches_handmade_bytes():
    hand = handmade_syn()
    built = build_tcp("10.1.0.2", "10.96.0.10", 40000, 80, 1000, 0, SYN, 65535, options=hexbytes("020405b4"))
    # Same TCP header and payload; our IPv4 header differs only in the identification field (and so its checksum).
    assert built[20:] == hand[20:]
    assert built[:4] == hand[:4] and built[6:10] == hand[6:10] and built[12:20] == hand[12:20]


def test_handmade_udp_v6():
    src = ipaddress.ip_address("fd00::2").packed
    dst = ipaddress.ip_address("fd96::10").packed
    udp = bytearray(hexbytes("d4 31 00 35 00 0d 00 00") + b"hello")
    pseudo = src + dst + (13).to_bytes(4, "big") + hexbytes("00 00 00 11")
    udp[6:8] = reference_checksum(pseudo + bytes(udp)).to_bytes(2, "big")
    packet = hexbytes("60 00 00 00 00 0d 11 40") + src + dst + bytes(udp)
    p = decode(packet)
    assert (p.version, p.proto, p.sport, p.dport, p.payload) == (6, 17, 54321, 53, b"hello")
    assert build_udp("fd00::2", "fd96::10", 54321, 53, b"hello") == packet


# --- recorded from Linux ---


def test_linux_packets_decode_and_verify():
    kinds = set()
    for _direction, text in CAPTURE:
        p = decode(bytes.fromhex(text))
        kinds.add((p.version, p.proto))
    assert kinds == {(4, 6), (4, 17), (4, 1), (6, 6), (6, 17), (6, 58)}


def test_linux_syn_options():
    syn = decode(bytes.fromhex(CAPTURE[1][1]))
    assert syn.flags == SYN
    assert syn.mss == 65000 - 40
    assert syn.wscale == 10
    assert syn.sack_permitted


def test_linux_packets_rebuilt_identically_by_builders():
    """Our builders produce Linux's exact bytes for its TCP/UDP segments (checksums included)."""
    for _direction, text in CAPTURE:
        raw = bytes.fromhex(text)
        p = decode(raw)
        if p.proto == 6:
            rebuilt = TcpTemplate(p.src.packed, p.dst.packed, p.sport, p.dport).segment(
                p.seq, p.ack, p.flags, p.window, p.payload, p.options
            )
        elif p.proto == 17:
            rebuilt = build_udp(p.src.packed, p.dst.packed, p.sport, p.dport, p.payload)
        else:
            continue
        if p.version == 4:
            # IPv4 identification and the header checksum differ (Linux numbers its packets).
            assert rebuilt[20:] == raw[20:]
        else:
            assert rebuilt[8:] == raw[8:]  # flow label differs


def test_icmp_builder_matches_linux_echo():
    for _direction, text in CAPTURE:
        raw = bytes.fromhex(text)
        p = decode(raw)
        if p.icmp_type in (8, 128):
            rebuilt = build_icmp(p.src.packed, p.dst.packed, p.icmp_type, p.icmp_code, p.payload)
            assert rebuilt[-len(p.payload) - 4 :] == raw[-len(p.payload) - 4 :]


# --- round trips ---


@pytest.mark.parametrize(("src", "dst"), [("10.1.0.2", "10.96.0.10"), ("fd00::2", "fd96::10")])
@pytest.mark.parametrize("payload", [b"", b"x", b"hello", bytes(range(256)) * 7])
def test_tcp_round_trip(src, dst, payload):
    opts = tcp_options(1460, 7, True)
    raw = build_tcp(src, dst, 1234, 443, 0xFFFFFFF0 + 5, 77, ACK | PSH | FIN, 512, payload, opts)
    p = decode(raw)
    assert (str(p.src), str(p.dst), p.sport, p.dport) == (src, dst, 1234, 443)
    assert (p.seq, p.ack, p.flags, p.window) == ((0xFFFFFFF0 + 5) & 0xFFFFFFFF, 77, ACK | PSH | FIN, 512)
    assert (p.mss, p.wscale, p.sack_permitted) == (1460, 7, True)
    assert p.payload == payload


@pytest.mark.parametrize(("src", "dst"), [("10.1.0.2", "10.96.0.10"), ("fd00::2", "fd96::10")])
@pytest.mark.parametrize("payload", [b"", b"a", b"datagram" * 100])
def test_udp_round_trip(src, dst, payload):
    p = decode(build_udp(src, dst, 5353, 53, payload))
    assert (str(p.src), str(p.dst), p.sport, p.dport, p.payload) == (src, dst, 5353, 53, payload)


def test_udp_zero_checksum_is_shown_as_ffff():
    # Find a payload whose checksum computes to zero: it must go out as 0xffff (RFC 768).
    for i in range(200000):
        raw = build_udp("10.0.0.1", "10.0.0.2", 1, 2, i.to_bytes(3, "big"))
        if raw[26:28] == b"\xff\xff":
            assert decode(raw).payload == i.to_bytes(3, "big")
            return
    pytest.fail("no zero-checksum payload found")


# --- rejects ---


def good_v4() -> bytes:
    return build_tcp("10.1.0.2", "10.96.0.10", 40000, 80, 1, 2, ACK, 100, b"payload!")


def reason(packet: bytes) -> str:
    with pytest.raises(PacketError) as info:
        decode(packet)
    return info.value.reason


def test_rejects():
    p = good_v4()
    assert reason(b"") == "truncated"
    assert reason(p[:19]) == "truncated"
    assert reason(p[:30]) == "truncated"  # total length says more
    assert reason(b"\x55" + p[1:]) == "ip_version"
    assert reason(b"\x44" + p[1:]) == "bad_header"  # IHL 16 bytes
    assert reason(b"\x4f" + p[1:]) == "bad_header"  # IHL 60 > total length... or bad sum
    bad = bytearray(p)
    bad[8] ^= 1  # TTL: breaks the header checksum
    assert reason(bytes(bad)) == "ip_checksum"
    bad = bytearray(p)
    bad[-1] ^= 0x10
    assert reason(bytes(bad)) == "tcp_checksum"
    bad = bytearray(p)
    bad[32] = 0x40  # TCP data offset 16 bytes
    assert reason(bytes(bad)) == "bad_header"


def test_trailing_bytes_are_ignored():
    p = decode(good_v4() + b"\0" * 10)
    assert p.payload == b"payload!"


def refragment(packet: bytes, frag_field: int) -> bytes:
    out = bytearray(packet)
    out[6:8] = frag_field.to_bytes(2, "big")
    out[10:12] = b"\0\0"
    out[10:12] = checksum(bytes(out[:20])).to_bytes(2, "big")
    return bytes(out)


def test_fragments_are_dropped():
    p = good_v4()
    assert reason(refragment(p, 0x2000)) == "fragment"  # MF
    assert reason(refragment(p, 0x0010)) == "fragment"  # offset
    assert decode(refragment(p, 0x4000)).payload == b"payload!"  # DF alone is fine


def test_ipv6_extension_headers():
    base = build_tcp("fd00::2", "fd96::10", 40000, 80, 1, 2, ACK, 100, b"hi")
    tcp = base[40:]
    # a hop-by-hop header (8 bytes: next=TCP, len=0, PadN) is skipped
    hbh = bytes((6, 0, 1, 4, 0, 0, 0, 0))
    packet = bytearray(base[:40]) + hbh + tcp
    packet[4:6] = (len(hbh) + len(tcp)).to_bytes(2, "big")
    packet[6] = 0
    assert decode(bytes(packet)).payload == b"hi"
    # a fragment header is dropped
    frag = bytes((6, 0, 0, 0, 0, 0, 0, 1))
    packet = bytearray(base[:40]) + frag + tcp
    packet[4:6] = (len(frag) + len(tcp)).to_bytes(2, "big")
    packet[6] = 44
    assert reason(bytes(packet)) == "fragment"
    # an extension header running past the packet
    packet = bytearray(base[:40]) + bytes((6, 200, 0, 0, 0, 0, 0, 0)) + tcp
    packet[4:6] = (8 + len(tcp)).to_bytes(2, "big")
    packet[6] = 60
    assert reason(bytes(packet)) == "ipv6_extension"
    # payload length beyond the buffer
    assert reason(base[:-1]) == "truncated"


def test_tcp_options_parsing_is_lenient():
    assert parse_tcp_options(b"") == (None, None, False)
    assert parse_tcp_options(bytes((2, 4, 5, 0xB4, 1, 3, 3, 20, 4, 2))) == (1460, 14, True)  # scale capped at 14
    assert parse_tcp_options(bytes((1, 1, 0, 2, 4, 5, 0xB4))) == (None, None, False)  # end of list
    assert parse_tcp_options(bytes((2, 4, 5))) == (None, None, False)  # truncated
    assert parse_tcp_options(bytes((2, 0, 5, 5))) == (None, None, False)  # zero length: no loop
    assert parse_tcp_options(bytes((2,))) == (None, None, False)
    assert parse_tcp_options(bytes((8, 10)) + bytes(8) + bytes((2, 4, 1, 0))) == (256, None, False)  # skip TS


def test_parse_ip_returns_l4_view():
    raw = good_v4()
    version, proto, src, dst, psum, l4 = parse_ip(memoryview(raw))
    assert (version, proto, src, dst) == (4, 6, bytes((10, 1, 0, 2)), bytes((10, 96, 0, 10)))
    sport, dport, seq, ack, flags, window, hlen = parse_tcp(l4, psum)
    assert (sport, dport, seq, ack, flags, window, hlen) == (40000, 80, 1, 2, ACK, 100, 20)
    assert bytes(l4[hlen:]) == b"payload!"


# --- checksum offload (virtio-net CHECKSUM_PARTIAL) ---


def finish_partial(packet: bytes) -> bytes:
    """What the kernel does with NEEDS_CSUM: sum from csum_start (field included), store the complement."""
    start, offset = partial_checksum_offsets(packet)
    l4 = bytearray(packet[start:])
    l4[offset : offset + 2] = reference_checksum(bytes(l4)).to_bytes(2, "big")
    return packet[:start] + bytes(l4)


@pytest.mark.parametrize(("src", "dst"), [("10.1.0.2", "10.96.0.10"), ("fd00::2", "fd96::10")])
@pytest.mark.parametrize("payload", [b"", b"odd", bytes(range(256)) * 9])
def test_partial_checksums_finish_to_the_full_ones(src, dst, payload):
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    full = TcpTemplate(s, d, 1, 2).segment(5, 6, ACK | PSH, 100, payload, tcp_options(1460, 3))
    partial = TcpTemplate(s, d, 1, 2, partial=True).segment(5, 6, ACK | PSH, 100, payload, tcp_options(1460, 3))
    assert partial != full or not payload
    assert finish_partial(partial) == full
    full_udp = UdpTemplate(s, d, 1, 2).datagram(payload)
    partial_udp = UdpTemplate(s, d, 1, 2, partial=True).datagram(payload)
    finished = finish_partial(partial_udp)
    start, offset = partial_checksum_offsets(full_udp)
    cs = start + offset
    assert finished[:cs] + finished[cs + 2 :] == full_udp[:cs] + full_udp[cs + 2 :]
    assert decode(finished).payload == payload  # (0 and 0xffff are the same sum; UDP shows 0 as 0xffff)


def test_partial_checksum_offsets():
    assert partial_checksum_offsets(build_tcp("10.0.0.1", "10.0.0.2", 1, 2, 0)) == (20, 16)
    assert partial_checksum_offsets(build_udp("fd00::1", "fd00::2", 1, 2, b"")) == (40, 6)
    assert partial_checksum_offsets(build_icmp("10.0.0.1", "10.0.0.2", 8, 0, bytes(4))) is None
