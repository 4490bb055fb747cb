"""Wire formats: IPv4/IPv6, TCP, UDP and ICMP headers, parsed and built (pure).

The parsers are the hot path: they take a ``memoryview`` and return plain
tuples and payload slices (no copies, no objects per packet) or raise
``PacketError`` whose ``reason`` names a drop counter. Nothing else may escape
them, whatever the bytes.

Accepted: IPv4 without fragmentation (MF set or a fragment offset → dropped as
``fragment``; options are skipped), IPv6 with hop-by-hop and destination-options
extension headers skipped (a fragment header → ``fragment``, anything else that
is not TCP/UDP/ICMPv6 → ``protocol``). Trailing bytes beyond the IP length are
ignored. Checksums are verified when asked and computed on output, or, with
``partial`` templates, left as CHECKSUM_PARTIAL for a virtio-net offload: the
field holds the pseudo-header sum and whoever finishes the packet sums from the
transport header on (csum_start = IP header length, csum_offset 16 for TCP and
6 for UDP).

The builders precompute what is constant per flow (``TcpTemplate``,
``UdpTemplate``) so one segment costs one ``struct.pack`` plus one checksum pass
over the payload; the IP and pseudo-header sums are done with integers.

``decode()`` is the slow, friendly parser for tests and debugging.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from tether.helper.root.vif.netstack.checksum import checksum, fold, word_sum

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58

TTL = 64
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV6_HEADER = struct.Struct("!IHBB16s16s")
TCP_HEADER = struct.Struct("!HHIIHHHH")
UDP_HEADER = struct.Struct("!HHHH")
_V4_TCP = struct.Struct("!BBHHHBBH4s4sHHIIHHHH")
_V6_TCP = struct.Struct("!IHBB16s16sHHIIHHHH")
_V4_UDP = struct.Struct("!BBHHHBBH4s4sHHHH")
_V6_UDP = struct.Struct("!IHBB16s16sHHHH")
_MSS_OPTION = struct.Struct("!BBH")

_IPV6_SKIPPABLE = frozenset((0, 60))  # hop-by-hop options, destination options
_IPV6_FRAGMENT = 44
_MAX_IPV6_EXTENSIONS = 8
_DF = 0x4000


class PacketError(ValueError):
    """A packet to drop; ``reason`` is a short counter name such as ``truncated`` or ``tcp_checksum``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_ip(packet: memoryview, verify: bool = True) -> tuple[int, int, bytes, bytes, int, memoryview]:
    """Split an IP packet into (version, protocol, src, dst, pseudo_sum, l4).

    ``pseudo_sum`` is the word sum of the source and destination addresses (the
    address part of the TCP/UDP/ICMPv6 pseudo-header); ``l4`` is the transport
    header and payload, cut to the length the IP header claims.
    """
    size = len(packet)
    if size < 20:
        raise PacketError("truncated")
    version = packet[0] >> 4
    if version == 4:
        vihl, _tos, total, _ident, frag, _ttl, proto, _cs, src, dst = IPV4_HEADER.unpack_from(packet)
        ihl = (vihl & 0x0F) << 2
        if ihl < 20 or total < ihl:
            raise PacketError("bad_header")
        if total > size:
            raise PacketError("truncated")
        if frag & 0x3FFF:
            raise PacketError("fragment")
        if verify and fold(int.from_bytes(packet[:ihl], "big")):
            raise PacketError("ip_checksum")
        return 4, proto, src, dst, int.from_bytes(packet[12:20], "big"), packet[ihl:total]
    if version == 6:
        if size < 40:
            raise PacketError("truncated")
        _vtf, plen, proto, _hops, src, dst = IPV6_HEADER.unpack_from(packet)
        end = 40 + plen
        if end > size:
            raise PacketError("truncated")
        if plen == 0:
            raise PacketError("bad_header")  # jumbograms or nothing at all
        offset = 40
        hops = 0
        while proto in _IPV6_SKIPPABLE:
            hops += 1
            if hops > _MAX_IPV6_EXTENSIONS or offset + 8 > end:
                raise PacketError("ipv6_extension")
            proto = packet[offset]
            offset += (packet[offset + 1] + 1) << 3
        if proto == _IPV6_FRAGMENT:
            raise PacketError("fragment")
        if offset > end:
            raise PacketError("ipv6_extension")
        return 6, proto, src, dst, int.from_bytes(packet[8:40], "big"), packet[offset:end]
    raise PacketError("ip_version")


def parse_tcp(l4: memoryview, pseudo_sum: int, verify: bool = True) -> tuple[int, int, int, int, int, int, int]:
    """(sport, dport, seq, ack, flags, window, header_length) of a TCP segment; payload is ``l4[header_length:]``."""
    size = len(l4)
    if size < 20:
        raise PacketError("truncated")
    sport, dport, seq, ack, off_flags, window, _cs, _urg = TCP_HEADER.unpack_from(l4)
    hlen = (off_flags >> 10) & 0x3C
    if hlen < 20 or hlen > size:
        raise PacketError("bad_header")
    if verify and (word_sum(l4) + pseudo_sum + PROTO_TCP + size) % 0xFFFF:
        raise PacketError("tcp_checksum")
    if not sport or not dport:
        raise PacketError("bad_port")
    return sport, dport, seq, ack, off_flags & 0xFF, window, hlen


def parse_tcp_options(options: memoryview | bytes) -> tuple[int | None, int | None, bool]:
    """(mss, window_scale, sack_permitted) from a SYN's options; malformed tails are ignored, as Linux does."""
    mss: int | None = None
    wscale: int | None = None
    sack = False
    i = 0
    size = len(options)
    while i < size:
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= size:
            break
        length = options[i + 1]
        if length < 2 or i + length > size:
            break
        if kind == 2 and length == 4:
            mss = (options[i + 2] << 8) | options[i + 3]
        elif kind == 3 and length == 3:
            wscale = min(options[i + 2], 14)
        elif kind == 4 and length == 2:
            sack = True
        i += length
    return mss, wscale, sack


def has_sack_blocks(options: memoryview | bytes) -> bool:
    """True if a segment's options carry SACK blocks (kind 5)."""
    i = 0
    size = len(options)
    while i < size:
        kind = options[i]
        if kind == 0:
            return False
        if kind == 1:
            i += 1
            continue
        if kind == 5:
            return True
        if i + 1 >= size or options[i + 1] < 2:
            return False
        i += options[i + 1]
    return False


def parse_udp(l4: memoryview, pseudo_sum: int, version: int, verify: bool = True) -> tuple[int, int, memoryview]:
    """(sport, dport, payload) of a UDP datagram."""
    size = len(l4)
    if size < 8:
        raise PacketError("truncated")
    sport, dport, length, cs = UDP_HEADER.unpack_from(l4)
    if length < 8 or length > size:
        raise PacketError("bad_length")
    if verify:
        if cs == 0:
            if version == 6:
                raise PacketError("udp_checksum")  # mandatory in IPv6 (RFC 8200)
        elif (word_sum(l4[:length]) + pseudo_sum + PROTO_UDP + length) % 0xFFFF:
            raise PacketError("udp_checksum")
    if not sport or not dport:
        raise PacketError("bad_port")
    return sport, dport, l4[8:length]


def tcp_options(mss: int, wscale: int | None, sack_permitted: bool = False) -> bytes:
    """SYN-ACK options: MSS, plus window scale and SACK-permitted when the peer offered them (NOP-padded)."""
    opts = _MSS_OPTION.pack(2, 4, mss)
    if wscale is not None:
        opts += bytes((1, 3, 3, wscale))
    if sack_permitted:
        opts += b"\x01\x01\x04\x02"
    return opts


class TcpTemplate:
    """Builds the TCP/IP packets of one flow direction; the address and port sums are precomputed."""

    __slots__ = ("_ip_sum", "_l4_sum", "_pseudo", "dport", "dst", "partial", "sport", "src", "v6")

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, partial: bool = False) -> None:
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.v6 = len(src) == 16
        self.partial = partial
        addresses = int.from_bytes(src + dst, "big")
        self._pseudo = addresses + PROTO_TCP
        self._l4_sum = addresses + PROTO_TCP + sport + dport
        self._ip_sum = 0x4500 + _DF + (TTL << 8 | PROTO_TCP) + addresses

    def segment(
        self,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: bytes | memoryview = b"",
        options: bytes = b"",
    ) -> bytes:
        """One packet; ``seq``/``ack`` may be unwrapped (they are reduced mod 2**32 here)."""
        seq &= 0xFFFFFFFF
        ack &= 0xFFFFFFFF
        hlen = 20 + len(options)
        length = hlen + len(payload)
        if self.partial:
            cs = (self._pseudo + length) % 0xFFFF  # CHECKSUM_PARTIAL: the pseudo-header sum, not complemented
        else:
            total = self._l4_sum + length + seq + ack + (hlen << 10 | flags) + window
            if payload:
                total += word_sum(payload)
            if options:
                total += int.from_bytes(options, "big")
            cs = -total % 0xFFFF
        off_flags = hlen << 10 | flags
        if self.v6:
            header = _V6_TCP.pack(
                0x60000000, length, PROTO_TCP, TTL, self.src, self.dst,
                self.sport, self.dport, seq, ack, off_flags, window, cs, 0,
            )  # fmt: skip
        else:
            ip_total = length + 20
            header = _V4_TCP.pack(
                0x45, 0, ip_total, 0, _DF, TTL, PROTO_TCP, -(self._ip_sum + ip_total) % 0xFFFF, self.src, self.dst,
                self.sport, self.dport, seq, ack, off_flags, window, cs, 0,
            )  # fmt: skip
        if options:
            return b"".join((header, options, payload))
        return header + payload if payload else header


class UdpTemplate:
    """Builds the UDP/IP packets of one flow direction."""

    __slots__ = ("_ip_sum", "_l4_sum", "_pseudo", "dport", "dst", "partial", "sport", "src", "v6")

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, partial: bool = False) -> None:
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.v6 = len(src) == 16
        self.partial = partial
        addresses = int.from_bytes(src + dst, "big")
        self._pseudo = addresses + PROTO_UDP
        self._l4_sum = addresses + PROTO_UDP + sport + dport
        self._ip_sum = 0x4500 + _DF + (TTL << 8 | PROTO_UDP) + addresses

    def datagram(self, payload: bytes | memoryview) -> bytes:
        length = 8 + len(payload)
        if self.partial:
            cs = (self._pseudo + length) % 0xFFFF
        else:
            cs = -(self._l4_sum + 2 * length + word_sum(payload)) % 0xFFFF or 0xFFFF
        if self.v6:
            header = _V6_UDP.pack(
                0x60000000, length, PROTO_UDP, TTL, self.src, self.dst, self.sport, self.dport, length, cs
            )
        else:
            ip_total = length + 20
            header = _V4_UDP.pack(
                0x45, 0, ip_total, 0, _DF, TTL, PROTO_UDP, -(self._ip_sum + ip_total) % 0xFFFF, self.src, self.dst,
                self.sport, self.dport, length, cs,
            )  # fmt: skip
        return header + payload


def ip_packet(src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    """Wrap a finished transport message in an IPv4 or IPv6 header (by address size)."""
    if len(src) == 16:
        return IPV6_HEADER.pack(0x60000000, len(l4), proto, TTL, src, dst) + l4
    total = 20 + len(l4)
    header_sum = 0x4500 + total + (TTL << 8 | proto) + int.from_bytes(src + dst, "big")
    return IPV4_HEADER.pack(0x45, 0, total, 0, 0, TTL, proto, -header_sum % 0xFFFF, src, dst) + l4


def partial_checksum_offsets(packet: bytes | memoryview) -> tuple[int, int] | None:
    """(csum_start, csum_offset) for a virtio_net_hdr in front of one of our packets; None if it is complete.

    With ``partial_checksums`` every TCP and UDP packet the stack emits is partial
    and every other one (ICMP) complete; the stack emits IPv4 without options and
    IPv6 without extension headers.
    """
    if packet[0] >> 4 == 6:
        start, proto = 40, packet[6]
    else:
        start, proto = 20, packet[9]
    if proto == PROTO_TCP:
        return start, 16
    if proto == PROTO_UDP:
        return start, 6
    return None


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """The word sum of a TCP/UDP/ICMPv6 pseudo-header."""
    return int.from_bytes(src + dst, "big") + proto + length


# --- builders and a decoder for tests and debugging (not the hot path) ---


def _raw(address: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if isinstance(address, bytes):
        return address
    return ipaddress.ip_address(address).packed


def build_tcp(
    src: str | bytes,
    dst: str | bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int = 0,
    flags: int = ACK,
    window: int = 65535,
    payload: bytes = b"",
    options: bytes = b"",
) -> bytes:
    return TcpTemplate(_raw(src), _raw(dst), sport, dport).segment(seq, ack, flags, window, payload, options)


def build_udp(src: str | bytes, dst: str | bytes, sport: int, dport: int, payload: bytes) -> bytes:
    return UdpTemplate(_raw(src), _raw(dst), sport, dport).datagram(payload)


def build_icmp(src: str | bytes, dst: str | bytes, icmp_type: int, code: int, body: bytes) -> bytes:
    """An ICMP (IPv4) or ICMPv6 message; ``body`` is everything after the checksum field."""
    s, d = _raw(src), _raw(dst)
    message = bytes((icmp_type, code, 0, 0)) + body
    if len(s) == 16:
        cs = checksum(message, pseudo_sum(s, d, PROTO_ICMPV6, len(message)))
        proto = PROTO_ICMPV6
    else:
        cs = checksum(message)
        proto = PROTO_ICMP
    return ip_packet(s, d, proto, message[:2] + cs.to_bytes(2, "big") + message[4:])


@dataclass
class Decoded:
    """A parsed packet, for tests and logs."""

    version: int
    proto: int
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    window: int = 0
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    icmp_type: int = -1
    icmp_code: int = -1
    payload: bytes = b""
    options: bytes = field(default=b"", repr=False)

    @property
    def flag_names(self) -> str:
        return "".join(name for bit, name in zip((SYN, FIN, RST, PSH, ACK), "SFRPA", strict=True) if self.flags & bit)


def decode(packet: bytes | bytearray | memoryview) -> Decoded:
    """Parse and checksum-verify any packet the stack understands; raise ``PacketError`` otherwise."""
    view = memoryview(packet)
    version, proto, src, dst, psum, l4 = parse_ip(view)
    out = Decoded(version, proto, ipaddress.ip_address(src), ipaddress.ip_address(dst))
    if proto == PROTO_TCP:
        out.sport, out.dport, out.seq, out.ack, out.flags, out.window, hlen = parse_tcp(l4, psum)
        out.options = bytes(l4[20:hlen])
        out.mss, out.wscale, out.sack_permitted = parse_tcp_options(out.options)
        out.payload = bytes(l4[hlen:])
    elif proto == PROTO_UDP:
        out.sport, out.dport, payload = parse_udp(l4, psum, version)
        out.payload = bytes(payload)
    elif proto in (PROTO_ICMP, PROTO_ICMPV6):
        if len(l4) < 8:
            raise PacketError("truncated")
        extra = pseudo_sum(src, dst, PROTO_ICMPV6, len(l4)) if proto == PROTO_ICMPV6 else 0
        if (word_sum(l4) + extra) % 0xFFFF:
            raise PacketError("icmp_checksum")
        out.icmp_type, out.icmp_code = l4[0], l4[1]
        out.payload = bytes(l4[4:])
    else:
        raise PacketError("protocol")
    return out
