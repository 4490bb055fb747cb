"""Capped exponential backoff for reaching the helper again (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next()`` gives ``initial``, then doubles up to ``cap``; ``reset()`` once the helper answered.

    The cap is short on purpose: a user who just ran ``sudo systemctl start tether-helper`` looks at the
    tray next, and it should have noticed by then.
    """

    initial: float = 0.5
    cap: float = 8.0
    factor: float = 2.0
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        delay = self._next or self.initial
        self._next = min(delay * self.factor, self.cap)
        return min(delay, self.cap)

    def reset(self) -> None:
        self._next = 0.0
