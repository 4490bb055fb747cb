"""Giving memory back to the OS after a burst of flows has ended.

Ten thousand flows cost the helper some 50 MB; when they close, Python frees the objects but the C
allocator keeps the pages, so without help the helper would stay at its high-water mark for the rest of its
life. A closed flow's objects (its task, bridge, stream and their callbacks) refer to each other, so they
wait for the collector's oldest generation, which may not run for a long time after a burst. :class:`TrimPolicy`
(pure) decides when a collection and a trim are worth their tens of milliseconds: the flow count has fallen to a
quarter of the peak since the last trim, and that peak was a real burst. :func:`release_to_os` collects, then
asks glibc for the freed pages back (where there is glibc).

What stayed after a 10,000-flow burst under CPython's own allocator (pymalloc; measured with memreport,
TETHER_MEMORY_REPORT): not glibc (its heap within 2 MB of where it started, thread arenas at 132 kB each) and
not live objects (allocated pymalloc blocks within 1-2 MB of the baseline, gc object count within 100) but
pymalloc arenas: 18-44 of the burst's 1 MiB arenas stayed mapped with 1,100-1,950 unused 16 kB pools among
them, each arena kept by one or two pools holding small objects that live on (the mux keep-alive's timer
handle and its context, timestamps, a sleeping coroutine and its future iterator, an int or two). CPython
frees an arena only when all its pools are empty and never gives unused pools' pages back, so the helper
stayed 17-48 MB above its baseline, more after a second burst.

Why they do not move out (tried, measured on a synthetic burst: 10,000 task sets beside 30 re-arming timers,
+17 MB after every round): most are re-created every tick, but (1) a new small block comes from the first
partly used pool of its size, and the burst's teardown leaves burst pools at the front of those lists, and
(2) floats, tuples, contexts, dicts and lists go through per-type free lists that hand the same blocks back,
so a timestamp born in a burst pool is reborn there. Re-ordering pymalloc's pools fullest first from Python
(filling every free block of the partly used pools with objects of that size, then freeing them pool by
pool) did put new blocks in old pools, but the free lists kept the burst's blocks circulating: still +17 MB.
Not creating those objects per tick would have to cover every float the event loop makes.

What helps: mimalloc (see helper.root.allocator), whose 64 kB pages are freed as soon as they are empty, so
what outlives a burst costs a page, not an arena; :func:`release_to_os` asks it (``mi_collect``) to give its
free pages back now rather than after its delay. With it the bench's scale part ends 4-7 MB above the baseline
after each round (pymalloc: 17-38 MB), but new connections are about 20% slower, so it is asked for with
``TETHER_HELPER_ALLOCATOR=mimalloc`` and not the default. Under pymalloc the trims still give glibc's pages
back and collect what only cycles keep.
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
    #: After a burst's first trim, one at every look while the count still falls and one more once it has
    #: stopped: flows that close late (teardown still on its way, TIME-WAIT) are freed only after the first,
    #: and mimalloc hands back pages freed since the last trim only when asked (or when that part of its heap
    #: is used again, which an idle helper may never do).
    follow_up: bool = False
    last: int = 0

    def observe(self, flows: int) -> bool:
        """Whether to trim now, given the current flow count (called every CHECK_INTERVAL)."""
        if self.follow_up:
            self.follow_up = flows < self.last
            self.peak = self.last = flows
            return True
        self.peak = max(self.peak, flows)
        if self.peak >= self.burst and flows <= self.peak * self.fall:
            self.peak = self.last = flows
            self.follow_up = True
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
