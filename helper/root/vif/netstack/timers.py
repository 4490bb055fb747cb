"""One deadline per flow, kept in a heap with lazy deletion.

A flow object carries two slots: ``deadline`` (when it wants ``on_timer``; None
for never) and ``heap_deadline`` (its earliest entry in the heap). Moving a
deadline later, which happens on nearly every ACK, only writes the slot; the
earlier heap entry, when it comes due, is re-pushed at the real deadline. So
the heap stays about one entry per flow and nothing scans the flow table.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Protocol


class Timed(Protocol):
    deadline: float | None
    heap_deadline: float | None


class Timers:
    __slots__ = ("_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def set(self, flow: Timed, deadline: float | None) -> None:
        flow.deadline = deadline
        if deadline is not None and (flow.heap_deadline is None or deadline < flow.heap_deadline):
            flow.heap_deadline = deadline
            heapq.heappush(self._heap, (deadline, next(self._order), flow))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, flow = heap[0]
            if flow.heap_deadline == when and flow.deadline is not None:
                if flow.deadline <= when:
                    return when
                # Pushed back since: move the entry to the real deadline.
                heapq.heapreplace(heap, (flow.deadline, next(self._order), flow))
                flow.heap_deadline = flow.deadline
            else:
                heapq.heappop(heap)
                if flow.heap_deadline == when:
                    flow.heap_deadline = None
        return None

    def pop_due(self, now: float) -> list[Timed]:
        """Flows whose deadline has passed; their deadline is cleared (they re-arm in on_timer)."""
        heap = self._heap
        due: list[Timed] = []
        while heap and heap[0][0] <= now:
            when, _, flow = heapq.heappop(heap)
            if flow.heap_deadline != when:
                continue  # stale: a later duplicate of an entry already handled
            flow.heap_deadline = None
            deadline = flow.deadline
            if deadline is None:
                continue
            if deadline > now:
                flow.heap_deadline = deadline
                heapq.heappush(heap, (deadline, next(self._order), flow))
                continue
            flow.deadline = None
            due.append(flow)
        return due
