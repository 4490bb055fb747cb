from netstack_helpers import APP, APP6, SVC, SVC6, Harness

from tether.helper.root.vif.netstack import Closed, Datagram, DialRequested, UdpFlow
from tether.helper.root.vif.netstack.packets import build_icmp, build_udp


def open_udp(h: Harness, src: str = APP, dst: str = SVC, payload: bytes = b"q1") -> UdpFlow:
    h.feed(build_udp(src, dst, 5353, 53, payload))
    events = h.events()
    assert [type(e) for e in events] == [DialRequested, Datagram]
    return events[0].flow


def test_datagrams_keep_their_boundaries():
    h = Harness()
    flow = open_udp(h)
    assert flow.protocol == "udp"
    assert (str(flow.src[0]), flow.src[1], str(flow.dst[0]), flow.dst[1]) == (APP, 5353, SVC, 53)
    h.feed(
        build_udp(APP, SVC, 5353, 53, b"second"),
        build_udp(APP, SVC, 5353, 53, b""),
        build_udp(APP, SVC, 5353, 53, b"x"),
    )
    events = h.events()
    assert [(e.flow, e.data) for e in events] == [(flow, b"second"), (flow, b""), (flow, b"x")]
    flow.accept()
    assert flow.send(b"answer one") and flow.send(b"answer two")
    replies = h.output()
    assert [(str(p.src), p.sport, str(p.dst), p.dport, p.payload) for p in replies] == [
        (SVC, 53, APP, 5353, b"answer one"),
        (SVC, 53, APP, 5353, b"answer two"),
    ]


def test_flows_are_per_4_tuple():
    h = Harness()
    h.feed(
        build_udp(APP, SVC, 1000, 53, b"a"), build_udp(APP, SVC, 1001, 53, b"b"), build_udp(APP, SVC, 1000, 53, b"c")
    )
    events = h.events()
    assert [type(e).__name__ for e in events] == ["DialRequested", "Datagram", "DialRequested", "Datagram", "Datagram"]
    assert h.stack.udp_flows == 2
    assert events[4].flow is events[0].flow


def test_idle_expiry():
    h = Harness(udp_idle_timeout=60)
    flow = open_udp(h)
    h.advance(40)
    h.feed(build_udp(APP, SVC, 5353, 53, b"still here"))
    h.events()
    h.advance(40)  # 80 s after opening, 40 after the last datagram
    assert h.events() == []
    flow.send(b"reply")  # sending counts as activity too
    h.advance(59)
    assert h.events() == []
    h.advance(1)
    assert [(type(e), e.flow, e.reason) for e in h.events()] == [(Closed, flow, "idle")]
    assert h.stack.udp_flows == 0
    assert not flow.send(b"late")
    assert h.stack.next_deadline() is None
    h.feed(build_udp(APP, SVC, 5353, 53, b"again"))
    assert [type(e) for e in h.events()] == [DialRequested, Datagram]


def test_refused_udp_gets_port_unreachable():
    h = Harness()
    h.feed(first := build_udp(APP, SVC, 5353, 53, b"anyone?"))
    flow = h.events()[0].flow
    flow.refuse()
    [icmp] = h.output()
    assert (icmp.proto, icmp.icmp_type, icmp.icmp_code) == (1, 3, 3)
    assert (str(icmp.src), str(icmp.dst)) == (SVC, APP)
    assert icmp.payload[4:] == first
    assert [e.reason for e in h.events()] == ["refused"]
    assert h.stack.udp_flows == 0


def test_refused_udp_v6_and_unreachable():
    h = Harness()
    flow = open_udp(h, APP6, SVC6)
    flow.refuse()
    [icmp] = h.output()
    assert (icmp.version, icmp.icmp_type, icmp.icmp_code) == (6, 1, 4)
    assert [e.reason for e in h.events()] == ["refused"]
    flow = open_udp(h, APP6, SVC6)
    flow.unreachable()
    [icmp] = h.output()
    assert (icmp.icmp_type, icmp.icmp_code) == (1, 3)
    assert [e.reason for e in h.events()] == ["unreachable"]
    flow = open_udp(h)
    flow.unreachable()
    [icmp] = h.output()
    assert (icmp.icmp_type, icmp.icmp_code) == (3, 1)


def test_icmp_error_quotes_at_most_576_bytes():
    h = Harness(mtu=9000)
    flow = open_udp(h, payload=bytes(4000))
    flow.refuse()
    raw = h.raw_output()[0]
    assert len(raw) == 576


def test_too_big_datagram_is_refused():
    h = Harness(mtu=1500)
    flow = open_udp(h)
    assert flow.send(bytes(1472))
    assert not flow.send(bytes(1473))
    assert h.stack.counters["udp_too_big"] == 1


def test_close_and_looping_source():
    h = Harness()
    flow = open_udp(h)
    flow.close()
    assert [e.reason for e in h.events()] == ["closed"]
    h.stack.set_refused_sources(["10.1.0.0/24"])
    h.feed(build_udp(APP, SVC, 5353, 53, b"loop"))
    assert h.events() == []
    [icmp] = h.output()
    assert icmp.icmp_type == 3 and icmp.icmp_code == 3
    assert h.stack.counters["udp_loop_refused"] == 1


def test_udp_flow_limit():
    h = Harness(max_udp_flows=1)
    h.feed(build_udp(APP, SVC, 1, 53, b"a"), build_udp(APP, SVC, 2, 53, b"b"))
    assert len(h.events()) == 2
    assert h.stack.counters["udp_flow_limit"] == 1


def test_ipv6_udp_without_checksum_is_dropped():
    h = Harness()
    packet = bytearray(build_udp(APP6, SVC6, 5353, 53, b"x"))
    packet[46:48] = b"\0\0"
    h.feed(bytes(packet))
    assert h.events() == []
    assert h.stack.counters["drop_udp_checksum"] == 1
    v4 = bytearray(build_udp(APP, SVC, 5353, 53, b"x"))
    v4[26:28] = b"\0\0"  # no checksum: allowed in IPv4
    h.feed(bytes(v4))
    assert len(h.events()) == 2


# --- ICMP ---


def test_ping_is_answered_locally():
    h = Harness()
    body = (0x1234).to_bytes(2, "big") + (7).to_bytes(2, "big") + b"payload of the ping"
    h.feed(build_icmp(APP, "10.96.5.5", 8, 0, body))
    [reply] = h.output()
    assert (str(reply.src), str(reply.dst), reply.icmp_type, reply.icmp_code, reply.payload) == (
        "10.96.5.5",
        APP,
        0,
        0,
        body,
    )
    assert h.events() == []
    assert h.stack.counters["icmp_echo_replied"] == 1


def test_ping6_is_answered_locally():
    h = Harness()
    body = b"\x00\x01\x00\x02abc"
    h.feed(build_icmp(APP6, SVC6, 128, 0, body))
    [reply] = h.output()
    assert (reply.version, str(reply.src), reply.icmp_type, reply.payload) == (6, SVC6, 129, body)


def test_ping_not_answered_when_disabled_and_other_icmp_ignored():
    h = Harness(answer_ping=False)
    h.feed(build_icmp(APP, SVC, 8, 0, b"\0\1\0\1"))
    h.feed(build_icmp(APP, SVC, 3, 3, bytes(32)))  # an error from the app: ignored
    h.feed(build_icmp(APP6, "ff02::2", 133, 0, bytes(4)))  # router solicitation
    assert h.output() == []
    assert h.stack.counters["icmp_echo_ignored"] == 1
    assert h.stack.counters["icmp_ignored"] == 2


def test_bad_icmp_checksum_dropped():
    h = Harness()
    packet = bytearray(build_icmp(APP, SVC, 8, 0, b"\0\1\0\1data"))
    packet[-1] ^= 1
    h.feed(bytes(packet))
    assert h.output() == []
    assert h.stack.counters["drop_icmp_checksum"] == 1


def test_icmpv4_inside_ipv6_is_not_icmp():
    h = Harness()
    packet = bytearray(build_icmp(APP6, SVC6, 128, 0, b"\0\1\0\1"))
    packet[6] = 1
    h.feed(bytes(packet))
    assert h.stack.counters["drop_protocol"] == 1


# --- checksum offload ---


def test_partial_checksum_mode_and_verified_input():
    h = Harness(partial_checksums=True)
    packet = bytearray(build_udp(APP, SVC, 5353, 53, b"q"))
    packet[26:28] = b"\x12\x34"  # a partial checksum, as the kernel hands them over with NEEDS_CSUM
    h.stack.input(bytes(packet), h.now)
    assert h.events() == [] and h.stack.counters["drop_udp_checksum"] == 1
    h.stack.input(bytes(packet), h.now, checksum_verified=True)
    [_, datagram] = h.events()
    datagram.flow.send(b"answer")
    [raw] = h.raw_output()
    src_dst = raw[12:20]
    expected = (int.from_bytes(src_dst) + 17 + 8 + 6) % 0xFFFF  # pseudo-header sum, not complemented
    assert int.from_bytes(raw[26:28]) == expected
