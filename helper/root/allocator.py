"""The helper's memory allocator on Linux: CPython's own, or mimalloc on request (``TETHER_HELPER_ALLOCATOR``).

Why (measured with ``make bench``'s scale part, see vif.memtrim): with CPython's own small-object allocator
(pymalloc) the helper stayed 17-48 MB above its baseline after 10,000 flows closed, more after a second round.
pymalloc maps 1 MiB arenas and frees one only when every 16 kB pool in it is empty; a handful of small objects
that outlive a burst (timer handles, their contexts, timestamps) keep 18-44 arenas mapped. Those objects
cannot be moved out from Python: the float, tuple, context and dict free lists hand the same blocks back to
the code that re-creates them every tick, and re-ordering pymalloc's pools fullest first (tried, see memtrim)
did not free a single arena. mimalloc keeps each size in 64 kB pages, frees a page as soon as it is empty and
hands free pages back to the OS (at once when memtrim asks with ``mi_collect``), so what outlives a burst costs
a few pages instead of an arena each. With ``PYTHONMALLOC=malloc`` CPython sends every allocation to
``malloc``, which ``LD_PRELOAD`` points at mimalloc. The others weighed: glibc's malloc in its place cost
10-35% of the bench's throughput; jemalloc kept a synthetic burst's memory (it purges on a decay of its
own); tcmalloc gave back as much as mimalloc there but keeps per-thread caches. On the netstack's own benchmark
(tests/bench/netstack_bench.py, best of 5) mimalloc is as fast as pymalloc (10.2 against 10.9 us per 1,500-byte
packet, 22.6 against 21.0 us per request/response), and under it the bench's scale part ends within 4-7 MB of
the helper's baseline after each round. But the bench's table, eleven pairs of runs (pymalloc, mimalloc) on the
same lab, shows new connections slower under mimalloc (connect-to-first-byte p50 worse in 9 of 11 pairs, the
median 2.24 against 2.67 ms, +19%) and uncached DNS in 7 of 11 (median +20%), with the helper's CPU seconds for
those phases up by about as much; the bulk and request/response rows are within the noise. Longer purge delays
(``MIMALLOC_RESET_DELAY`` and ``MIMALLOC_SEGMENT_DECOMMIT_DELAY`` at 10 s) did not change that, and why it is
slower is not known yet (a local test makes no more system calls; the microbenchmarks do not show it). So
mimalloc is not the default: ``TETHER_HELPER_ALLOCATOR=mimalloc`` asks for it (memory back after bursts, slower
connects), ``pymalloc`` (the default) keeps CPython's.

:func:`adopt` is called first thing by ``tether helper start``: if mimalloc is asked for, installed and not
yet loaded, it re-executes the same command with those two variables set; in the re-executed helper it takes
them out of the environment again so that the commands the helper runs (``ip``, ``nft``, credential plugins)
do not inherit them. Without the library, on macOS and Windows, or by default, the helper runs on as it is.
:func:`plan_exec` is the pure decision.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tether.helper.root")

#: ``pymalloc`` (the default) keeps CPython's own allocator; ``mimalloc`` uses mimalloc where installed.
ENV = "TETHER_HELPER_ALLOCATOR"
CHOICES = ("pymalloc", "mimalloc")
#: Where Debian's libmimalloc2.0 (and other distributions' packages) put the library.
LIBRARY_NAMES = ("libmimalloc.so.2", "libmimalloc.so")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
#: Set (to the library's path) on the re-executed helper so that it knows what to take out of its environment.
MARKER = "TETHER_HELPER_PRELOADED"


@dataclass(frozen=True)
class ExecPlan:
    """Re-execute ``argv`` with ``env``."""

    argv: list[str]
    env: dict[str, str]


def find_library(dirs: Sequence[str] = LIBRARY_DIRS, names: Sequence[str] = LIBRARY_NAMES) -> str | None:
    for directory in dirs:
        for name in names:
            path = Path(directory) / name
            if path.is_file():
                return str(path)
    return None


def plan_exec(
    environ: Mapping[str, str], orig_argv: Sequence[str], executable: str, library: str | None, loaded: bool
) -> ExecPlan | None:
    """Whether to re-execute the helper under mimalloc (None: run on as it is).

    ``library``: mimalloc's path (None: not installed); ``loaded``: mimalloc is already in this process."""
    choice = environ.get(ENV, "pymalloc")
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "pymalloc" or library is None or loaded or MARKER in environ or not executable:
        return None  # MARKER: this is the re-executed helper already (mimalloc did not load: run on as it is)
    env = dict(environ)
    preload = environ.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{library} {preload}".strip()
    env["PYTHONMALLOC"] = "malloc"
    env[MARKER] = library
    return ExecPlan([executable, *orig_argv[1:]], env)


def restore_environment(environ: dict[str, str]) -> None:
    """Take what :func:`plan_exec` added out of ``environ`` (in the re-executed helper)."""
    library = environ.pop(MARKER, None)
    if library is None:
        return
    environ.pop("PYTHONMALLOC", None)
    rest = [entry for entry in environ.get("LD_PRELOAD", "").split() if entry != library]
    if rest:
        environ["LD_PRELOAD"] = " ".join(rest)
    else:
        environ.pop("LD_PRELOAD", None)


def mimalloc_loaded() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mi_version")
    except OSError:
        return False


def adopt() -> None:
    """Re-execute under mimalloc when :func:`plan_exec` says so (does not return then); otherwise clean up the
    environment and go on."""
    if not sys.platform.startswith("linux"):
        return
    loaded = mimalloc_loaded()
    plan = plan_exec(os.environ, sys.orig_argv, sys.executable, find_library(), loaded)
    if plan is None:
        restore_environment(os.environ)  # type: ignore[arg-type]
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(plan.argv[0], plan.argv, plan.env)
    except OSError as exc:
        log.warning("could not re-execute the helper under mimalloc (%s): going on with pymalloc", exc)
