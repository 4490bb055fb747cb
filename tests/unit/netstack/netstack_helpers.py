"""Test support: a stack with a hand-cranked clock, and the app's side of TCP connections driven by tests."""

from __future__ import annotations

from tether.helper.root.vif.netstack import DialRequested, Event, NetStack, NetStackConfig, TcpFlow
from tether.helper.root.vif.netstack.packets import ACK, FIN, PSH, RST, SYN, Decoded, build_tcp, decode

APP = "10.1.0.2"
SVC = "10.96.0.10"
APP6 = "fd00::2"
SVC6 = "fd96::10"


def reference_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way: a loop over 16-bit words with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Harness:
    def __init__(self, **config: object) -> None:
        settings = {"seed": 7, "mtu": 1500, **config}
        self.stack = NetStack(NetStackConfig(**settings))
        self.now = 1000.0

    def feed(self, *packets: bytes) -> None:
        for packet in packets:
            self.stack.input(packet, self.now)

    def raw_output(self) -> list[bytes]:
        return self.stack.output(self.now)

    def output(self) -> list[Decoded]:
        return [decode(p) for p in self.stack.output(self.now)]

    def events(self) -> list[Event]:
        return self.stack.events()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.stack.on_timer(self.now)

    def run_until(self, deadline: float) -> None:
        """Fire every timer up to ``deadline``, one deadline at a time."""
        while True:
            due = self.stack.next_deadline()
            if due is None or due > deadline:
                break
            self.now = max(self.now, due)
            self.stack.on_timer(self.now)
        self.now = deadline


class App:
    """The app's end of one TCP connection. Keeps its own seq/ack; receives in order only."""

    def __init__(
        self,
        h: Harness,
        port: int = 40000,
        dst: tuple[str, int] = (SVC, 80),
        src: str = APP,
        isn: int = 1000,
        window: int = 65535,
        mss: int | None = 1460,
        wscale: int | None = None,
        sack: bool = False,
    ) -> None:
        self.h = h
        self.src = src
        self.port = port
        self.dst = dst
        self.seq = isn
        self.isn = isn
        self.ack = 0
        self.window = window
        self.mss = mss
        self.wscale = wscale
        self.sack = sack
        self.received = bytearray()
        self.got_fin = False
        self.got_rst = False
        self.flow: TcpFlow | None = None
        self.syn_ack: Decoded | None = None
        self.peer_window = 0

    # --- building and sending ---

    def packet(
        self,
        flags: int,
        payload: bytes = b"",
        seq: int | None = None,
        ack: int | None = None,
        window: int | None = None,
        options: bytes = b"",
    ) -> bytes:
        return build_tcp(
            self.src,
            self.dst[0],
            self.port,
            self.dst[1],
            self.seq if seq is None else seq,
            self.ack if ack is None else ack,
            flags,
            self.window if window is None else window,
            payload,
            options,
        )

    def send(self, flags: int, payload: bytes = b"", **kw: int) -> bytes:
        packet = self.packet(flags, payload, **kw)
        if "seq" not in kw:
            self.seq += len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        self.h.feed(packet)
        return packet

    def syn_options(self) -> bytes:
        opts = b""
        if self.mss is not None:
            opts += bytes((2, 4)) + self.mss.to_bytes(2, "big")
        if self.sack:
            opts += bytes((1, 1, 4, 2))
        if self.wscale is not None:
            opts += bytes((1, 3, 3, self.wscale))
        return opts

    def syn(self) -> bytes:
        return self.send(SYN, options=self.syn_options(), ack=0)

    def data(self, payload: bytes) -> bytes:
        return self.send(ACK | PSH, payload)

    def fin(self) -> bytes:
        return self.send(ACK | FIN)

    def send_ack(self) -> bytes:
        return self.send(ACK)

    # --- receiving ---

    def mine(self, packets: list[Decoded]) -> list[Decoded]:
        return [p for p in packets if p.proto == 6 and p.dport == self.port and p.sport == self.dst[1]]

    def absorb(self, packets: list[Decoded]) -> bool:
        """Take the stack's packets for this flow; True if any moved our ack (so an ACK is owed)."""
        moved = False
        for p in self.mine(packets):
            if p.flags & RST:
                self.got_rst = True
                continue
            if p.flags & SYN:
                self.syn_ack = p
                self.ack = (p.seq + 1) & 0xFFFFFFFF
                moved = True
            elif p.seq == self.ack:
                self.received += p.payload
                self.ack = (self.ack + len(p.payload)) & 0xFFFFFFFF
                if p.flags & FIN:
                    self.ack = (self.ack + 1) & 0xFFFFFFFF
                    self.got_fin = True
                moved = moved or bool(p.payload) or bool(p.flags & FIN)
            self.peer_window = p.window
        return moved

    def connect(self) -> TcpFlow:
        """SYN, owner accepts, SYN-ACK, ACK: an established connection."""
        self.syn()
        events = [e for e in self.h.events() if isinstance(e, DialRequested)]
        assert len(events) == 1, events
        self.flow = events[0].flow
        self.flow.accept()
        self.absorb(self.h.output())
        assert self.syn_ack is not None
        self.send_ack()
        return self.flow


def pump(h: Harness, apps: dict[int, App], rounds: int = 1000) -> None:
    """Let the stack and the apps exchange packets until nothing moves; apps ACK whatever they received."""
    for _ in range(rounds):
        packets = h.output()
        if not packets:
            return
        owed = set()
        for p in packets:
            app = apps.get(p.dport)
            if app is not None and app.absorb([p]):
                owed.add(p.dport)
        for port in owed:
            apps[port].send_ack()
    raise AssertionError("no quiescence")
