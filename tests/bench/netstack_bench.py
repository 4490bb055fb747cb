"""In-process netstack throughput: the stack against a minimal synthetic app endpoint, no TUN, no sockets.

    python tests/bench/netstack_bench.py [megabytes]

For each MTU it moves the data app→owner ("upload": the app's segments in,
our ACKs out) and owner→app ("download": our segments out, the app's ACKs
in, one per two segments as Linux sends them), then times small
request/response round trips. "stack" columns count only the time spent
inside NetStack calls; "wall" includes the synthetic peer (which builds or
parses its packets in Python too).
"""

from __future__ import annotations

import os
import struct
import sys
import time

from tether.helper.root.vif.netstack import Data, DialRequested, NetStack, NetStackConfig
from tether.helper.root.vif.netstack.packets import ACK, PSH, SYN, TcpTemplate

APP, SVC = bytes((10, 1, 0, 2)), bytes((10, 96, 0, 10))
SPORT, DPORT = 40000, 80
CHUNK = 256 * 1024  # what one tunnel message carries
_SEQ_ACK = struct.Struct("!II")


class Clock:
    def __init__(self) -> None:
        self.stack = 0.0

    def timed(self, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        self.stack += time.perf_counter() - t
        return result


class Peer:
    """The app side: builds segments with the same templates, parses only seq/ack/window/flags."""

    def __init__(self, mtu: int) -> None:
        self.tpl = TcpTemplate(APP, SVC, SPORT, DPORT)
        self.mss = mtu - 40
        self.seq = 1000
        self.ack = 0
        self.wscale = 7
        self.window = 0xFFFF  # << 7: 8 MB
        self.received = 0
        self.peer_window = 0
        self.peer_ack = 0

    def syn(self) -> bytes:
        opts = bytes((2, 4)) + self.mss.to_bytes(2, "big") + bytes((1, 3, 3, self.wscale))
        packet = self.tpl.segment(self.seq, 0, SYN, 0xFFFF, b"", opts)
        self.seq += 1
        return packet

    def segment(self, payload: bytes | memoryview = b"", flags: int = ACK) -> bytes:
        packet = self.tpl.segment(self.seq, self.ack, flags, self.window, payload)
        self.seq += len(payload)
        return packet

    def receive(self, packets: list[bytes], ack_every: int = 2) -> list[bytes]:
        """Take our segments (in order), return the ACKs the app would send."""
        acks = []
        unacked = 0
        for p in packets:
            seq, ack = _SEQ_ACK.unpack_from(p, 24)
            flags = p[33]
            hlen = (p[32] >> 4) * 4
            self.peer_ack = ack
            window = int.from_bytes(p[34:36], "big")
            self.peer_window = window if flags & SYN else window << 5  # we advertise a shift of 5 (1 MiB buffer)
            if flags & SYN:
                self.ack = seq + 1
                acks.append(self.segment())
                continue
            size = len(p) - 20 - hlen
            if size and seq == self.ack:
                self.ack = seq + size
                self.received += size
                unacked += 1
                if unacked >= ack_every:
                    acks.append(self.segment())
                    unacked = 0
        if unacked:
            acks.append(self.segment())
        return acks


def connect(stack: NetStack, peer: Peer, clock: Clock, now: float):
    stack.input(peer.syn(), now)
    [event] = stack.events()
    assert isinstance(event, DialRequested)
    event.flow.accept()
    for ack in peer.receive(stack.output(now)):
        stack.input(ack, now)
    return event.flow


def download(mtu: int, total: int) -> tuple[float, float, int]:
    stack = NetStack(NetStackConfig(mtu=mtu, seed=1, snd_buf=4 << 20))
    peer, clock, now = Peer(mtu), Clock(), 0.0
    flow = connect(stack, peer, clock, now)
    chunk = os.urandom(CHUNK)  # random: zeros would make the checksum's int.from_bytes artificially cheap
    offered = 0
    packets = 0
    start = time.perf_counter()
    while peer.received < total:
        while offered < total:
            n = clock.timed(flow.send, memoryview(chunk)[: min(CHUNK, total - offered)])
            offered += n
            if n < CHUNK:
                break
        out = clock.timed(stack.output, now)
        packets += len(out)
        for ack in peer.receive(out):
            clock.timed(stack.input, ack, now)
        clock.timed(stack.events)
    return time.perf_counter() - start, clock.stack, packets


def upload(mtu: int, total: int, batch: int = 64) -> tuple[float, float, int]:
    stack = NetStack(NetStackConfig(mtu=mtu, seed=1))
    peer, clock, now = Peer(mtu), Clock(), 0.0
    flow = connect(stack, peer, clock, now)
    payload = memoryview(os.urandom(peer.mss))
    sent = delivered = packets = 0
    start = time.perf_counter()
    while delivered < total:
        in_flight_limit = (peer.peer_ack + peer.peer_window) & 0xFFFFFFFF
        segments = []
        while len(segments) < batch and sent < total:
            room = (in_flight_limit - peer.seq) & 0xFFFFFFFF
            if room >= 1 << 31 or room < peer.mss:
                break
            segments.append(peer.segment(payload, ACK | PSH))
            sent += peer.mss
        packets += len(segments)
        for s in segments:
            clock.timed(stack.input, s, now)
        for event in clock.timed(stack.events):
            if isinstance(event, Data):
                delivered += len(event.data)
                clock.timed(flow.consumed, len(event.data))
        peer.receive(clock.timed(stack.output, now))
    return time.perf_counter() - start, clock.stack, packets


def request_response(rounds: int = 20000) -> tuple[float, float]:
    stack = NetStack(NetStackConfig(mtu=65000, seed=1))
    peer, clock, now = Peer(65000), Clock(), 0.0
    flow = connect(stack, peer, clock, now)
    request, response = b"q" * 100, b"r" * 200
    start = time.perf_counter()
    for _ in range(rounds):
        clock.timed(stack.input, peer.segment(request, ACK | PSH), now)
        for event in clock.timed(stack.events):
            clock.timed(flow.send, response)
            clock.timed(flow.consumed, len(event.data))
        peer.receive(clock.timed(stack.output, now), ack_every=1 << 30)  # the next request carries the ACK
    wall = time.perf_counter() - start
    return wall / rounds, clock.stack / rounds


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    total = megabytes * 1_000_000
    print(f"netstack in-process, {megabytes} MB per row")
    print(f"{'direction':<10} {'mtu':>6} {'packets':>9} {'wall MB/s':>10} {'stack MB/s':>11} {'stack us/pkt':>13}")
    for mtu in (1500, 9000, 65535):
        for name, run in (("download", download), ("upload", upload)):
            wall, stack_time, packets = run(mtu, total)
            print(
                f"{name:<10} {mtu:>6} {packets:>9} {total / wall / 1e6:>10.0f} {total / stack_time / 1e6:>11.0f}"
                f" {stack_time / packets * 1e6:>13.1f}"
            )
    wall_rr, stack_rr = request_response()
    print(f"request/response (100 B / 200 B): {wall_rr * 1e6:.1f} us per round trip, {stack_rr * 1e6:.1f} us in stack")


if __name__ == "__main__":
    main()
