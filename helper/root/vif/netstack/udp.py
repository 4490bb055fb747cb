"""UDP flows: one per (app address, app port, destination address, destination port).

The first datagram of a new 4-tuple creates the flow (``DialRequested``) and
every datagram, that one included, becomes a ``Datagram`` event right away,
boundaries kept; the owner queues them until its tunnel stream is open. The
owner's ``send()`` builds one reply datagram from the destination back to the
app. A flow with no traffic either way for ``udp_idle_timeout`` ends with
``Closed(flow, "idle")``. ``refuse()``/``unreachable()`` answer the flow's
first datagram with ICMP port/host unreachable and end the flow; a later
datagram on the same 4-tuple starts a new flow.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tether.helper.root.vif.netstack.context import StackContext
from tether.helper.root.vif.netstack.events import Closed
from tether.helper.root.vif.netstack.icmp import destination_unreachable
from tether.helper.root.vif.netstack.packets import UdpTemplate


class UdpFlow:
    """The owner's handle on one UDP flow."""

    __slots__ = (
        "accepted", "app_addr", "app_port", "ctx", "deadline", "dst_addr", "dst_port", "first_packet",
        "heap_deadline", "key", "last_active", "max_payload", "open", "table", "tag", "tpl",
    )  # fmt: skip

    protocol = "udp"

    def __init__(
        self,
        ctx: StackContext,
        table: dict[bytes, UdpFlow],
        key: bytes,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        first_packet: bytes,
    ) -> None:
        self.ctx = ctx
        self.table = table  # the stack's UDP flows by key, which this one leaves when it ends
        self.key = key
        self.app_addr, self.app_port, self.dst_addr, self.dst_port = src, sport, dst, dport
        self.tpl = UdpTemplate(dst, src, dport, sport, ctx.config.partial_checksums)
        self.tag: Any = None
        self.open = True
        self.accepted = False
        self.first_packet = first_packet
        v6 = len(src) == 16
        self.max_payload = min(ctx.config.mtu, 65535) - (48 if v6 else 28)
        self.last_active = ctx.now
        self.deadline: float | None = None
        self.heap_deadline: float | None = None
        ctx.timers.set(self, ctx.now + ctx.config.udp_idle_timeout)

    @property
    def src(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
        return ipaddress.ip_address(self.app_addr), self.app_port

    @property
    def dst(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
        return ipaddress.ip_address(self.dst_addr), self.dst_port

    @property
    def closed(self) -> bool:
        return not self.open

    def __repr__(self) -> str:
        (sa, sp), (da, dp) = self.src, self.dst
        if sa.version == 6:
            return f"udp [{sa}]:{sp}->[{da}]:{dp}"
        return f"udp {sa}:{sp}->{da}:{dp}"

    def accept(self) -> None:
        """The dial worked (optional for UDP: datagrams flow either way)."""
        self.accepted = True

    def send(self, payload: bytes | bytearray | memoryview) -> bool:
        """One datagram to the app; False if the flow is closed or the payload does not fit the MTU (counted)."""
        if not self.open:
            return False
        if len(payload) > self.max_payload:
            self.ctx.counters["udp_too_big"] += 1
            return False
        self.ctx.out.append(self.tpl.datagram(payload))
        self.last_active = self.ctx.now
        return True

    def refuse(self) -> None:
        """Nothing listens there: ICMP port unreachable to the app, and the flow ends."""
        if self.open:
            self.ctx.out.append(destination_unreachable(self.first_packet, self.app_addr, self.dst_addr, True))
            self._finish("refused")

    def unreachable(self) -> None:
        """The destination cannot be reached: ICMP host unreachable to the app, and the flow ends."""
        if self.open:
            self.ctx.out.append(destination_unreachable(self.first_packet, self.app_addr, self.dst_addr, False))
            self._finish("unreachable")

    def close(self) -> None:
        """Forget the flow (``Closed(flow, "closed")``); a later datagram starts a new one."""
        if self.open:
            self._finish("closed")

    abort = close

    def received(self) -> None:
        self.last_active = self.ctx.now

    def on_timer(self, now: float) -> None:
        if not self.open:
            return
        expiry = self.last_active + self.ctx.config.udp_idle_timeout
        if now >= expiry:
            self._finish("idle")
        else:
            self.ctx.timers.set(self, expiry)

    def _finish(self, reason: str) -> None:
        self.open = False
        self.first_packet = b""
        ctx = self.ctx
        ctx.timers.set(self, None)
        ctx.events.append(Closed(self, reason))
        if self.table.get(self.key) is self:
            del self.table[self.key]
