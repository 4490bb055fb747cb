"""Where the helper's memory is after a burst of flows: a report written when ``TETHER_MEMORY_REPORT`` names a
directory (off otherwise).

After each burst's follow-up trim (see memtrim) the engine writes ``<dir>/<pid>-<n>.txt``: the resident
memory by kind of mapping (the C heap, anonymous mappings, files), CPython's own allocator statistics
(``sys._debugmallocstats``: arenas, unused pools, free lists) and glibc's per-arena ``malloc_info``. This is
how the residual after a burst was traced to pymalloc arenas kept by a few live pools (see memtrim's
docstring). Under mimalloc (helper.root.allocator, the default where it is installed) CPython sends every
allocation to ``malloc``: the report has no size classes or arenas then (only the free lists), and glibc's
``malloc_info`` describes only what glibc still serves (little).
:func:`summarize_smaps` (pure) groups ``/proc/PID/smaps`` text.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import tempfile
from pathlib import Path

ENV = "TETHER_MEMORY_REPORT"


def summarize_smaps(text: str) -> dict[str, float]:
    """Resident MB per kind of mapping: ``heap`` (brk), ``anon`` (pymalloc arenas, glibc's mmapped arenas,
    thread stacks), ``file`` (code and data of libraries) and ``other`` ([stack], [vdso], ...)."""
    totals = {"heap": 0.0, "anon": 0.0, "file": 0.0, "other": 0.0}
    kind = "other"
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if "-" in fields[0] and not fields[0].endswith(":"):
            name = fields[5] if len(fields) > 5 else ""
            kind = "heap" if name == "[heap]" else "anon" if not name else "other" if name.startswith("[") else "file"
        elif fields[0] == "Rss:":
            totals[kind] += int(fields[1]) / 1000  # kB to MB (10^6)
    return {k: round(v, 1) for k, v in totals.items()}


def resident_mb() -> float | None:
    """This process's resident memory in MB (10^6 bytes, rounded to 0.1), or None where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)


def report_dir() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def write_report(directory: Path, label: str) -> Path:
    """Write one report (see the module docstring); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / f"{os.getpid()}-{len(list(directory.glob(f'{os.getpid()}-*.txt'))) + 1:02d}"
    smaps = Path("/proc/self/smaps").read_text()
    with open(f"{base}.txt", "w") as out:
        out.write(f"{label}\nresident MB by kind: {summarize_smaps(smaps)}\n")
        out.write(debug_mallocstats() or "no pymalloc statistics (another allocator, see helper.root.allocator)\n")
    _malloc_info(f"{base}.malloc_info.xml")
    return Path(f"{base}.txt")


def debug_mallocstats() -> str:
    """What ``sys._debugmallocstats`` writes to the C stderr, as text: pymalloc's size classes and arenas (these
    are missing under ``PYTHONMALLOC=malloc``) and the free lists' lengths; empty where it does not exist."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return ""
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(out.fileno(), 2)
            stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        return out.read()


def _malloc_info(path: str) -> None:
    name = ctypes.util.find_library("c")
    if not name:
        return
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "malloc_info"):
        return  # not glibc
    libc.fopen.restype = ctypes.c_void_p
    stream = libc.fopen(path.encode(), b"w")
    if stream:
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
