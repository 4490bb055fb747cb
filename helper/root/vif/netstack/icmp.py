"""ICMP and ICMPv6: echo answered locally, destination-unreachable errors built for refused dials.

Echo: the tunnel carries only TCP and UDP, so pings to routed (cluster)
addresses are answered here, by the stack, with an echo reply from the pinged
address (``answer_ping``, on by default). ``ping <cluster ip>`` then shows that
the route and the helper work; it says nothing about whether a pod with that
address exists or is up, and its round-trip time is the helper's, not the
cluster's. With ``answer_ping`` off, echo requests are dropped (counted).

Errors: when the owner reports a failed dial we answer the app's packet with
destination unreachable — *port* unreachable (ICMP 3/3, ICMPv6 1/4) for a
refused UDP flow, which an app sees as ECONNREFUSED on its next call, and
*host/address* unreachable (ICMP 3/1, ICMPv6 1/3) for an unreachable
destination, which aborts a TCP connect() at once with EHOSTUNREACH instead of
letting it time out. The error quotes the offending packet as RFC 1812 and
RFC 4443 ask (up to 576 / 1280 bytes in all) and comes from the address the app
tried to reach.

ICMP arriving from apps other than echo requests (errors about our packets,
router solicitations, MLD reports, ...) is counted and dropped.
"""

from __future__ import annotations

from tether.helper.root.vif.netstack.checksum import checksum, word_sum
from tether.helper.root.vif.netstack.context import StackContext
from tether.helper.root.vif.netstack.packets import PROTO_ICMP, PROTO_ICMPV6, PacketError, ip_packet, pseudo_sum

ECHO_REQUEST_V4, ECHO_REPLY_V4 = 8, 0
ECHO_REQUEST_V6, ECHO_REPLY_V6 = 128, 129
UNREACHABLE_V4, UNREACHABLE_V6 = 3, 1
# (host, port) codes per family
_CODES = {4: (1, 3), 6: (3, 4)}
_QUOTE_LIMIT = {4: 576 - 20 - 8, 6: 1280 - 40 - 8}


def _message(version: int, src: bytes, dst: bytes, icmp_type: int, code: int, rest: bytes | memoryview) -> bytes:
    head = bytes((icmp_type, code))
    if version == 6:
        length = 4 + len(rest)
        cs = -(word_sum(head) + word_sum(rest) + pseudo_sum(src, dst, PROTO_ICMPV6, length)) % 0xFFFF
        return ip_packet(src, dst, PROTO_ICMPV6, head + cs.to_bytes(2, "big") + rest)
    cs = checksum(rest, word_sum(head))
    return ip_packet(src, dst, PROTO_ICMP, head + cs.to_bytes(2, "big") + rest)


def destination_unreachable(offending: bytes, src: bytes, dst: bytes, port: bool) -> bytes:
    """The error answering ``offending`` (a packet from ``src`` to ``dst``), sent from ``dst`` back to ``src``."""
    version = 6 if len(src) == 16 else 4
    code = _CODES[version][1 if port else 0]
    icmp_type = UNREACHABLE_V6 if version == 6 else UNREACHABLE_V4
    quote = offending[: _QUOTE_LIMIT[version]]
    return _message(version, dst, src, icmp_type, code, b"\0\0\0\0" + quote)


def handle(ctx: StackContext, version: int, src: bytes, dst: bytes, psum: int, l4: memoryview) -> None:
    """An ICMP/ICMPv6 message from an app: answer an echo request, count and drop anything else."""
    size = len(l4)
    if size < 8:
        raise PacketError("truncated")
    counters = ctx.counters
    if ctx.config.verify_checksums:
        extra = psum + PROTO_ICMPV6 + size if version == 6 else 0
        if (word_sum(l4) + extra) % 0xFFFF:
            raise PacketError("icmp_checksum")
    icmp_type = l4[0]
    request, reply = (ECHO_REQUEST_V6, ECHO_REPLY_V6) if version == 6 else (ECHO_REQUEST_V4, ECHO_REPLY_V4)
    if icmp_type != request or l4[1] != 0:
        counters["icmp_ignored"] += 1
        return
    if not ctx.config.answer_ping:
        counters["icmp_echo_ignored"] += 1
        return
    ctx.out.append(_message(version, dst, src, reply, 0, l4[4:]))
    counters["icmp_echo_replied"] += 1
