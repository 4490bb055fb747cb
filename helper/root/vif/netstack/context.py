"""The state every flow shares with its stack: clock, config, output and event queues, timers, counters.

What only TCP flows share (their table and the lists ``output()`` and ``events()`` go through) is
``tcp.TcpTable``; the UDP flows' table is a plain dict. Neither is known here, so the flows may import this.
"""

from __future__ import annotations

import random
from collections import Counter

from tether.helper.root.vif.netstack.config import NetStackConfig
from tether.helper.root.vif.netstack.events import Event
from tether.helper.root.vif.netstack.timers import Timers


class StackContext:
    """Plain shared state; the flows append to these lists directly (they are the hot path)."""

    __slots__ = ("config", "counters", "events", "now", "out", "rng", "timers")

    def __init__(self, config: NetStackConfig) -> None:
        self.config = config
        self.now = 0.0
        self.out: list[bytes] = []  # packets for the TUN, in order
        self.events: list[Event] = []
        self.timers = Timers()
        self.counters: Counter[str] = Counter()
        self.rng = random.Random(config.seed)
