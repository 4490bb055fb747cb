"""The state a flow shares with its stack: clock, output and event queues, timers, tables, counters."""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import TYPE_CHECKING

from tether.helper.root.vif.netstack.config import NetStackConfig
from tether.helper.root.vif.netstack.timers import Timers

if TYPE_CHECKING:
    from tether.helper.root.vif.netstack.events import Event
    from tether.helper.root.vif.netstack.tcp import TcpFlow
    from tether.helper.root.vif.netstack.udp import UdpFlow


class StackContext:
    """Plain shared state; the flows append to these lists directly (they are the hot path)."""

    __slots__ = (
        "config", "counters", "delacks", "dirty", "events", "now", "out", "readable", "rng", "tcp", "timers", "udp",
    )  # fmt: skip

    def __init__(self, config: NetStackConfig) -> None:
        self.config = config
        self.now = 0.0
        self.out: list[bytes] = []  # packets for the TUN, in order
        self.events: list[Event] = []
        self.dirty: list[TcpFlow] = []  # flows with something to transmit at the next output()
        self.readable: list[TcpFlow] = []  # flows with Data to report at the next events()
        self.timers = Timers()
        # Delayed ACKs in the order they fall due (one delay for all): (due, flow); stale when the flow's own
        # ``delack_due`` differs (its ACK went out meanwhile, on data or at once).
        self.delacks: deque[tuple[float, TcpFlow]] = deque()
        self.counters: Counter[str] = Counter()
        self.tcp: dict[bytes, TcpFlow] = {}
        self.udp: dict[bytes, UdpFlow] = {}
        self.rng = random.Random(config.seed)
