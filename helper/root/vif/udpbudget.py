"""How many UDP datagrams the VIF may hold for flows whose stream is not taking them: per flow and in total.

TCP needs no such budget: an app's bytes are held only up to the window the netstack advertised. UDP has no
window, so an app (any local user can send to a routed address) flooding a flow whose stream waits for its dial
or for credit would have every datagram kept. This budget is what bounds that: a datagram over a flow's share or
over the total is dropped and counted, as a congested router drops it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# Bookkeeping a held datagram costs besides its payload (the bytes object, the queue's slot): counting it makes
# a flood of empty datagrams spend the budget too.
DATAGRAM_OVERHEAD = 128


@dataclass(frozen=True)
class UdpQueueLimits:
    # Datagrams and bytes one flow may hold while its stream cannot take them.
    flow_datagrams: int = 256
    flow_bytes: int = 512 * 1024
    # Bytes all UDP flows together may hold.
    total_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("flow_datagrams", "flow_bytes", "total_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be positive")


class UdpQueueBudget:
    """The total held across flows, and the drops (``counters``: ``udp_drop_flow_queue``,
    ``udp_drop_total_queue``). Each flow keeps its own count and calls ``take``/``give_back``."""

    def __init__(self, limits: UdpQueueLimits | None = None) -> None:
        self.limits = limits or UdpQueueLimits()
        self.held = 0
        self.counters: Counter[str] = Counter()

    @staticmethod
    def cost(size: int) -> int:
        return size + DATAGRAM_OVERHEAD

    def take(self, flow_datagrams: int, flow_bytes: int, size: int) -> bool:
        """May a flow already holding ``flow_datagrams``/``flow_bytes`` hold one more of ``size`` bytes? If so
        it is counted in the total; if not, the drop is counted."""
        limits, cost = self.limits, self.cost(size)
        if flow_datagrams >= limits.flow_datagrams or flow_bytes + cost > limits.flow_bytes:
            self.counters["udp_drop_flow_queue"] += 1
            return False
        if self.held + cost > limits.total_bytes:
            self.counters["udp_drop_total_queue"] += 1
            return False
        self.held += cost
        return True

    def give_back(self, cost: int) -> None:
        self.held -= cost
