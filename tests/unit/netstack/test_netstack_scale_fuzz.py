import random
import time

import pytest
from netstack_helpers import APP, APP6, SVC, SVC6, App, Harness, pump

from tether.helper.root.vif.netstack import Closed, Data, Datagram, DialRequested, PeerClosed
from tether.helper.root.vif.netstack.checksum import checksum
from tether.helper.root.vif.netstack.packets import ACK, FIN, PSH, RST, SYN, build_icmp, build_tcp, build_udp, decode


def test_3000_concurrent_flows():
    h = Harness()
    apps = {}
    for i in range(3000):
        app = App(h, port=10000 + i, src=f"10.1.{i // 250}.{i % 250 + 1}", isn=i * 7919)
        apps[app.port] = app
        app.syn()
    dials = h.events()
    assert len(dials) == 3000 and all(isinstance(e, DialRequested) for e in dials)
    assert h.stack.tcp_flows == 3000
    for e in dials:
        e.flow.accept()
    started = time.perf_counter()
    for p in h.output():
        apps[p.dport].absorb([p])
    for app in apps.values():
        app.send_ack()
        app.data(f"hello {app.port}".encode())
    for e in h.events():
        assert isinstance(e, Data)
        e.flow.send(e.data.upper())
        e.flow.consumed(len(e.data))
    pump(h, apps)
    for app in apps.values():
        assert app.received == f"HELLO {app.port}".encode()
        app.fin()
    closing = h.events()
    assert len(closing) == 3000 and all(isinstance(e, PeerClosed) for e in closing)
    for e in closing:
        e.flow.close()
    pump(h, apps)
    done = h.events()
    assert len(done) == 3000 and all(isinstance(e, Closed) and e.reason == "done" for e in done)
    assert h.stack.tcp_flows == 0
    assert time.perf_counter() - started < 20


# --- fuzzing ---


def fix_checksums(packet: bytes) -> bytes:
    """Make a mutated packet's checksums right again (where its headers still make some sense)."""
    p = bytearray(packet)
    if len(p) < 20:
        return bytes(p)
    if p[0] >> 4 == 4:
        ihl = (p[0] & 15) * 4
        if ihl < 20 or len(p) < ihl:
            return bytes(p)
        p[10:12] = b"\0\0"
        p[10:12] = checksum(bytes(p[:ihl])).to_bytes(2, "big")
        total = min(int.from_bytes(p[2:4]), len(p))
        proto, start, pseudo_addr = p[9], ihl, bytes(p[12:20])
    elif p[0] >> 4 == 6 and len(p) >= 40:
        total = min(40 + int.from_bytes(p[4:6]), len(p))
        proto, start, pseudo_addr = p[6], 40, bytes(p[8:40])
    else:
        return bytes(p)
    l4 = p[start:total]
    offset = {6: 16, 17: 6, 1: 2, 58: 2}.get(proto)
    if offset is None or len(l4) < offset + 2:
        return bytes(p)
    l4[offset : offset + 2] = b"\0\0"
    pseudo = b"" if proto == 1 else pseudo_addr + bytes((0, proto)) + len(l4).to_bytes(2, "big")
    cs = checksum(pseudo + bytes(l4) + b"\0" * (len(l4) % 2))
    l4[offset : offset + 2] = cs.to_bytes(2, "big")
    p[start:total] = l4
    return bytes(p)


def samples() -> list[bytes]:
    opts = bytes((2, 4, 5, 0xB4, 1, 3, 3, 7, 4, 2, 1, 1))
    return [
        build_tcp(APP, SVC, 4000, 80, 1, 0, SYN, 65535, options=opts),
        build_tcp(APP, SVC, 4000, 80, 2, 1, ACK | PSH, 65535, b"data" * 30),
        build_tcp(APP, SVC, 4000, 80, 2, 1, ACK | FIN, 65535),
        build_tcp(APP6, SVC6, 4000, 443, 1, 0, SYN, 65535, options=opts),
        build_tcp(APP6, SVC6, 4000, 443, 2, 1, ACK, 100, b"x" * 7),
        build_udp(APP, SVC, 5000, 53, b"query"),
        build_udp(APP6, SVC6, 5000, 53, b"query6"),
        build_icmp(APP, SVC, 8, 0, b"\0\1\0\2ping"),
        build_icmp(APP6, SVC6, 128, 0, b"\0\1\0\2ping6"),
    ]


def mutate(rng: random.Random, packet: bytes) -> bytes:
    p = bytearray(packet)
    choice = rng.randrange(6)
    if choice == 0:
        return bytes(p[: rng.randrange(len(p) + 1)])  # truncation
    if choice == 1:
        for _ in range(rng.randrange(1, 4)):  # bit flips
            i = rng.randrange(len(p))
            p[i] ^= 1 << rng.randrange(8)
    elif choice == 2:  # a length field rewritten
        field = rng.choice([(2, 2), (4, 2), (0, 1), (24, 2), (32, 1), (44, 2), (52, 1)])
        at, size = field
        if at + size <= len(p):
            p[at : at + size] = rng.randrange(1 << (8 * size)).to_bytes(size, "big")
    elif choice == 3:
        p += rng.randbytes(rng.randrange(1, 40))  # trailing junk
    elif choice == 4:
        i = rng.randrange(len(p))
        p[i:i] = rng.randbytes(rng.randrange(1, 8))  # insertion
    else:
        i = rng.randrange(len(p))
        p[i] = rng.randrange(256)
    return fix_checksums(bytes(p)) if rng.random() < 0.6 else bytes(p)


def drive_owner(h: Harness, rng: random.Random) -> None:
    for e in h.events():
        flow = e.flow
        if isinstance(e, DialRequested):
            rng.choice([flow.accept, flow.accept, flow.refuse, flow.unreachable, lambda: None])()
        elif isinstance(e, Data):
            action = rng.randrange(5)
            if action == 0:
                flow.consumed(len(e.data))
            elif action == 1:
                flow.send(e.data)
            elif action == 2:
                flow.close()
            elif action == 3:
                flow.abort()
        elif isinstance(e, Datagram):
            flow.send(e.data[:100])
        elif isinstance(e, PeerClosed):
            flow.close()


def check_outputs(h: Harness) -> None:
    for raw in h.raw_output():
        decode(raw)  # everything we emit must be well-formed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_never_raises_and_stack_stays_usable(seed):
    rng = random.Random(seed)
    h = Harness(max_retries=3, dial_timeout=5)
    base = samples()
    # an established flow that the random packets will hit too
    victim = App(h, port=4000, isn=0)
    victim.connect()
    for i in range(4000):
        kind = rng.random()
        if kind < 0.15:
            packet = rng.randbytes(rng.randrange(0, 120))
            if packet and rng.random() < 0.5:
                packet = bytes((rng.choice((0x45, 0x60)),)) + packet[1:]
        elif kind < 0.75:
            packet = mutate(rng, rng.choice(base))
        else:
            # well-formed segments with random fields, aimed at live and dead flows
            src, dst = rng.choice([(APP, SVC), (APP6, SVC6)])
            port = rng.choice([4000, 4001, 4002])
            flags = rng.randrange(64)
            seq = rng.choice([rng.randrange(1 << 32), victim.seq, victim.seq + rng.randrange(-3000, 3000)])
            ack = rng.choice([rng.randrange(1 << 32), victim.ack, victim.ack + rng.randrange(-3000, 3000)])
            payload = rng.randbytes(rng.choice([0, 0, 1, 10, 1000]))
            packet = build_tcp(
                src, dst, port, 80 if src == APP else 443, seq, ack, flags, rng.randrange(65536), payload
            )
        h.stack.input(packet, h.now)
        if i % 50 == 0:
            drive_owner(h, rng)
            check_outputs(h)
        if i % 200 == 0:
            h.advance(rng.choice([0.01, 0.3, 2.0, 10.0]))
    drive_owner(h, rng)
    check_outputs(h)
    counters = h.stack.counters
    assert counters["internal_error"] == 0, h.stack.last_error
    assert sum(v for k, v in counters.items() if k.startswith("drop_")) > 1000
    # the mutations reach past the parsers into the flows
    assert counters["tcp_opened"] > 10 and counters["udp_opened"] > 10 and counters["icmp_echo_replied"] > 10
    assert counters["tcp_challenge_ack"] + counters["tcp_rst_ignored"] > 10
    # and a fresh connection still works end to end
    h.run_until(h.now + 1000)
    h.events()
    h.raw_output()
    app = App(h, port=31337, isn=123)
    flow = app.connect()
    app.data(b"ping")
    [event] = [e for e in h.events() if isinstance(e, Data)]
    assert event.data == b"ping"
    flow.send(b"pong")
    flow.close()
    app.absorb(h.output())
    assert app.received == b"pong" and app.got_fin


def test_fuzz_garbage_only_counts_drops():
    rng = random.Random(99)
    h = Harness()
    for _ in range(3000):
        h.stack.input(rng.randbytes(rng.randrange(0, 100)), h.now)
    assert h.stack.counters["internal_error"] == 0
    assert h.events() == []
    assert h.stack.rx_packets == 3000
    assert sum(v for k, v in h.stack.counters.items() if k.startswith("drop_")) >= 2900


def test_rst_storm_on_unknown_flows_does_not_echo_rsts():
    h = Harness()
    for i in range(100):
        h.feed(build_tcp(APP, SVC, 1000 + i, 80, i, i, RST | ACK, 0))
    assert h.output() == []
