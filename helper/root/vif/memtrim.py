"""Giving memory back to the OS after a burst of flows has ended.

Ten thousand flows cost the helper some 50 MB; when they close, Python frees the objects but the C
allocator keeps the pages, so without help the helper would stay at its high-water mark for the rest of its
life. A closed flow's objects (its task, bridge, stream and their callbacks) refer to each other, so they
wait for the collector's oldest generation, which may not run for a long time after a burst. :class:`TrimPolicy`
(pure) decides when a collection and a trim are worth their tens of milliseconds: the flow count has fallen to a
quarter of the peak since the last trim, and that peak was a real burst. :func:`release_to_os` collects, then
asks glibc for the freed pages back (where there is glibc).

What stays after a 10,000-flow burst (measured with memreport, TETHER_MEMORY_REPORT): not glibc (its heap is
within 2 MB of where it started, thread arenas at 132 kB each) and not live objects (allocated pymalloc blocks
within 1 MB of the baseline, gc object count within 100) but pymalloc arenas: some 18-30 of the burst's 1 MiB
arenas stay mapped with 1,100-1,950 unused 16 kB pools among them, each arena kept by one or two pools that
still hold a block allocated late in the burst (timer handles, timestamps, contexts, dict key tables). CPython
frees an arena only when all its pools are empty and never hands unused pools' pages back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("tether.helper.vif")

#: How often the engine looks at its flow count (seconds).
CHECK_INTERVAL = 5.0


@dataclass
class TrimPolicy:
    """``burst``: the peak flow count below which nothing is worth giving back; ``fall``: the fraction of the
    peak the count must have fallen to."""

    burst: int = 512
    fall: float = 0.25
    peak: int = 0
    #: One more trim at the next look after a trim: flows that had just closed (TIME-WAIT, teardown still
    #: on its way) are freed only after it.
    follow_up: bool = False

    def observe(self, flows: int) -> bool:
        """Whether to trim now, given the current flow count (called every CHECK_INTERVAL)."""
        self.peak = max(self.peak, flows)
        if self.peak >= self.burst and flows <= self.peak * self.fall:
            self.peak = flows
            self.follow_up = True
            return True
        if self.follow_up:
            self.follow_up = False
            return True
        return False


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc.malloc_trim if libc is not None else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None  # musl, macOS, Windows: their allocators return memory on their own terms


@functools.cache
def _mi_collect() -> Callable[[bool], None] | None:
    try:
        return ctypes.CDLL(None).mi_collect  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None  # mimalloc is not loaded (see helper.root.allocator)


def release_to_os() -> bool:
    """Free what only cycles keep, and hand the allocator's free pages back to the OS; False where the
    second cannot be asked for."""
    gc.collect()
    collect = _mi_collect()
    if collect is not None:
        collect(True)  # mimalloc gives free pages back on its own, after a delay: now
    trim = _malloc_trim()
    if trim is None:
        return collect is not None
    trim(0)
    return True
