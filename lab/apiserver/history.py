"""The recent changes of the store, one event per resourceVersion, that watches follow and resume from."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
from collections.abc import AsyncIterator

from tether.lab.apiserver.kinds import Kind, Obj


@dataclasses.dataclass(frozen=True)
class Event:
    rv: int
    kind: Kind
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None  # the previous state for MODIFIED, so selectors can see objects enter and leave


class Expired(Exception):
    """The history no longer reaches back to the resourceVersion a watch asked to resume from."""


class History:
    """The last ``limit`` events, which hold consecutive resourceVersions, and a wake-up for their readers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.floor = 0  # every event after this resourceVersion is kept
        self._events: collections.deque[Event] = collections.deque()
        self._changed = asyncio.Event()

    def append(self, event: Event) -> None:
        self._events.append(event)
        while len(self._events) > self.limit:
            self.floor = self._events.popleft().rv
        self.notify()

    def notify(self) -> None:
        """Wake every reader waiting in :meth:`after` (to read new events, or to see ``closing`` set)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def after(self, since: int, closing: asyncio.Event) -> AsyncIterator[Event]:
        """The events after resourceVersion ``since``, then each new one as it comes, until ``closing`` is set
        (and notified); :class:`Expired` if those after ``since`` are no longer all kept."""
        cursor = since
        while not closing.is_set():
            changed = self._changed
            if cursor < self.floor:
                raise Expired()
            if self._events and cursor < self._events[-1].rv:
                # The log holds consecutive resourceVersions, so the position of cursor+1 is known.
                start = max(cursor + 1 - self._events[0].rv, 0)
                batch = list(itertools.islice(self._events, start, None))  # a copy: writes go on while we send
                for event in batch:
                    yield event
                cursor = batch[-1].rv
                continue
            await changed.wait()
