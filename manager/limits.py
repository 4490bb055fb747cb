"""How much one client may hold at once on the traffic-manager, and a counter that enforces it per key (pure).

Each cap is per caller, not global: one session, or one client address, reaching its cap is refused with a
reason naming the cap, while others go on. The figures are the chart's settings (``limits.*`` in ``config``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

# Flows (tunnel mux streams and gRPC Tunnel streams together) one session may have open at once: above the
# 10,000 concurrent flows one workstation is meant to carry.
DEFAULT_FLOWS_PER_SESSION = 16_384
# Sessions one client address may hold. Through the API server's port-forward every client comes from the
# same address, so this bounds a flood, not a team.
DEFAULT_SESSIONS_PER_ADDRESS = 256
# Tunnel mux connections one session may have at once: one, and another while it reconnects.
DEFAULT_MUX_CONNECTIONS_PER_SESSION = 4
# WatchClusterInfo streams one session may have at once (a client keeps one; a reconnect overlaps briefly).
DEFAULT_WATCHES_PER_SESSION = 4
# The longest a UDP flow may stay open without a datagram, whatever its client asks for.
DEFAULT_MAX_UDP_IDLE_TIMEOUT = 300.0


@dataclass(frozen=True)
class ManagerLimits:
    flows_per_session: int = DEFAULT_FLOWS_PER_SESSION
    sessions_per_address: int = DEFAULT_SESSIONS_PER_ADDRESS
    mux_connections_per_session: int = DEFAULT_MUX_CONNECTIONS_PER_SESSION
    watches_per_session: int = DEFAULT_WATCHES_PER_SESSION
    max_udp_idle_timeout: float = DEFAULT_MAX_UDP_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("flows_per_session", "sessions_per_address", "mux_connections_per_session"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.watches_per_session < 1:
            raise ValueError(f"watches_per_session must be at least 1, got {self.watches_per_session}")
        if not self.max_udp_idle_timeout > 0:
            raise ValueError(f"max_udp_idle_timeout must be positive, got {self.max_udp_idle_timeout}")


class LimitReachedError(Exception):
    """A caller is at its cap; the text names what, whose, and the cap."""


class KeyedLimit:
    """Counts what each key holds and refuses the one over ``limit``; ``what`` names it in the error."""

    def __init__(self, limit: int, what: str) -> None:
        if limit < 1:
            raise ValueError(f"a limit of {what} must be at least 1, got {limit}")
        self.limit = limit
        self._what = what
        self._held: dict[Hashable, int] = {}

    def acquire(self, key: Hashable, label: str = "") -> None:
        """Take one for ``key``, or raise LimitReachedError (``label``: how the error names the key)."""
        held = self._held.get(key, 0)
        if held >= self.limit:
            raise LimitReachedError(f"{label or key} has {held} {self._what} open, at most {self.limit}")
        self._held[key] = held + 1

    def release(self, key: Hashable) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, key: Hashable) -> int:
        return self._held.get(key, 0)

    def total(self) -> int:
        return sum(self._held.values())
