"""What the scale phase and the soak read about a process (RSS, open fds), and the soak's verdict on growth.

The readers use /proc (Linux, root for other users' processes); ``growth`` is pure, so it is unit-tested.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path


def status_mb(pid: int, field: str) -> float | None:
    """A memory field of /proc/PID/status (``VmRSS``, ``VmHWM``...) in MB (10^6 bytes); None if the process
    is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def rss_mb(pid: int) -> float | None:
    """Resident memory (VmRSS) in MB, or None if the process is gone."""
    return status_mb(pid, "VmRSS")


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def allocator(pid: int) -> str | None:
    """``mimalloc`` if the process has mimalloc mapped (the helper under ``helper.root.allocator``), else
    ``pymalloc`` (CPython's own); None if the process is gone."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return "mimalloc" if "libmimalloc" in maps else "pymalloc"


def raise_nofile(pid: int, wanted: int) -> int | None:
    """Raise another process's open-files limit to at least ``wanted`` (soft and, if needed, hard); return the
    soft limit in force, or None if the process is gone. The lab's pods inherit whatever the shell that built
    the lab had (often 1024), far below what 10,000 flows need at the manager and the echo server."""
    try:
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (wanted, new_hard))
        return resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
    except (ProcessLookupError, PermissionError, OSError):
        return None


@dataclass(frozen=True)
class Growth:
    """The soak's verdict on one process: its RSS after the warm-up, at the end, and whether that is growth."""

    baseline_mb: float
    final_mb: float
    allowed_mb: float

    @property
    def grew(self) -> bool:
        return self.final_mb - self.baseline_mb > self.allowed_mb

    def describe(self) -> str:
        change = self.final_mb - self.baseline_mb
        verdict = "GREW" if self.grew else "flat"
        return (
            f"{self.baseline_mb:.1f} MB after warm-up -> {self.final_mb:.1f} MB at the end "
            f"({change:+.1f} MB, at most +{self.allowed_mb:.1f} MB allowed): {verdict}"
        )


def growth(samples_mb: list[float], warmup: int, percent: float, floor_mb: float) -> Growth:
    """Growth from the warm-up level to the end of a run sampled once a minute.

    The baseline is the sample at the end of the warm-up (``samples_mb[warmup - 1]``, or the first if ``warmup``
    is 0), not the start: allocators keep pools and caches fill while the load ramps up. The end is the mean of
    the last two samples (one sample can land on a garbage collector's peak). Allowed: ``percent`` of the
    baseline, but at least ``floor_mb``, so that a small process's noise does not fail the run."""
    if not samples_mb:
        raise ValueError("no samples")
    index = min(max(warmup - 1, 0), len(samples_mb) - 1)
    baseline = samples_mb[index]
    tail = samples_mb[-2:] if len(samples_mb) - index >= 2 else samples_mb[-1:]
    final = sum(tail) / len(tail)
    return Growth(baseline, final, max(floor_mb, baseline * percent / 100.0))
