"""The cluster-answer cache: TTL per answer kind, LRU bound, whole flush, and in-flight coalescing.

The OS is told TTL 4 s so that it comes back to us often; this cache is what keeps those repeated
questions off the manager. Positive answers live ``positive_ttl`` (60 s), negative ones (NXDOMAIN,
or NOERROR without records) ``negative_ttl`` (5 s) so that a service created a moment ago shows up
quickly. Other failures (SERVFAIL, timeouts, exceptions) are never stored.

Identical concurrent questions share one lookup: the first starts it as a task of its own and
every caller awaits it through ``asyncio.shield``, so a caller that gives up (its client went away,
its own timeout fired) cannot cancel the lookup the others wait for.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from dnslib import RCODE, RR

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True, eq=False)
class Answer:
    """One cluster answer as the manager gave it (records owned by the name the manager was asked).

    Compared by identity: the server checks that a memoised reply still belongs to the cached answer.
    """

    rcode: int
    records: tuple[RR, ...] = ()

    @property
    def positive(self) -> bool:
        return self.rcode == RCODE.NOERROR and bool(self.records)

    @property
    def negative(self) -> bool:
        return self.rcode == RCODE.NXDOMAIN or (self.rcode == RCODE.NOERROR and not self.records)

    @classmethod
    def of(cls, rcode: int, records: Sequence[RR]) -> Answer:
        return cls(rcode, tuple(records))


class LRU(Generic[K, V]):
    """A size-bounded mapping with an expiry time per entry; the least recently used goes first."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"cache size {max_entries} must be at least 1")
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def expiry(self, key: K) -> float | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None else None

    def put(self, key: K, value: V, expires_at: float) -> None:
        self._entries[key] = (expires_at, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return entry[1] if entry is not None else None

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class AnswerCache(Generic[K]):
    def __init__(
        self,
        positive_ttl: float = 60.0,
        negative_ttl: float = 5.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self._answers: LRU[K, Answer] = LRU(max_entries, clock)
        self._inflight: dict[K, asyncio.Task[Answer]] = {}
        self._tasks: set[asyncio.Task[Answer]] = set()  # every running lookup, shared or not, for close()
        # Bumped by flush(): a lookup started under an older config must not fill the new cache.
        self._generation = 0
        self.lookups = 0  # lookups actually started (not coalesced, not cached)

    @property
    def max_entries(self) -> int:
        return self._answers.max_entries

    def get(self, key: K) -> Answer | None:
        return self._answers.get(key)

    def expiry(self, key: K) -> float | None:
        return self._answers.expiry(key)

    def put(self, key: K, answer: Answer) -> None:
        ttl = self.positive_ttl if answer.positive else self.negative_ttl if answer.negative else 0.0
        if ttl > 0:
            self._answers.put(key, answer, self.clock() + ttl)

    def discard(self, key: K) -> None:
        self._answers.pop(key)

    def pending(self, key: K) -> asyncio.Task[Answer] | None:
        return self._inflight.get(key)

    def flush(self) -> None:
        self._answers.clear()
        self._inflight.clear()  # the tasks keep running for their current waiters, but are no longer shared
        self._generation += 1

    def __len__(self) -> int:
        return len(self._answers)

    async def resolve(self, key: K, fetch: Callable[[], Awaitable[Answer]]) -> tuple[Answer, bool]:
        """The cached answer, or the result of one shared fetch(); the flag says whether it was cached."""
        cached = self._answers.get(key)
        if cached is not None:
            return cached, True
        task = self._inflight.get(key)
        if task is None:
            self.lookups += 1
            task = asyncio.get_running_loop().create_task(self._fetch(key, fetch, self._generation))
            self._inflight[key] = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task), False

    async def _fetch(self, key: K, fetch: Callable[[], Awaitable[Answer]], generation: int) -> Answer:
        try:
            answer = await fetch()
            if generation == self._generation:
                self.put(key, answer)
            return answer
        finally:
            if self._inflight.get(key) is asyncio.current_task():
                del self._inflight[key]

    async def close(self) -> None:
        """Cancel lookups still running (server shutdown)."""
        tasks = list(self._tasks)
        self._inflight.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
