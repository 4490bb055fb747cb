"""The fuzzers' shared harness: seeded cases, a case count that ``make fuzz`` scales, and a rate table.

Every case gets its own ``random.Random`` seeded from (FUZZ_SEED, fuzzer name, case number), so a failure
names the one case to replay (``FUZZ_SEED=<seed> FUZZ_CASE=<n>``) whatever ran before it. ``make test`` runs
the fixed count each fuzzer asks for; ``make fuzz`` sets FUZZ_SCALE to run many times more.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SEED = int(os.environ.get("FUZZ_SEED", "11"))
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
ONLY_CASE = os.environ.get("FUZZ_CASE", "")


@dataclass
class Rate:
    name: str
    cases: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.cases / self.seconds if self.seconds > 0 else float("inf")


# What each fuzzer ran in this process; the conftest prints it at the end of the session.
RATES: list[Rate] = []


class FuzzFailure(AssertionError):
    """A case broke an invariant; the message names the case so it can be replayed alone."""


def case_count(default: int) -> int:
    return max(1, round(default * SCALE))


def _cases(name: str, default: int) -> Iterator[tuple[int, random.Random]]:
    numbers = [int(ONLY_CASE)] if ONLY_CASE else range(case_count(default))
    for number in numbers:
        yield number, random.Random(f"{SEED}:{name}:{number}")


def _failure(name: str, number: int, exc: BaseException) -> FuzzFailure:
    return FuzzFailure(f"fuzzer {name}, case {number} (replay: FUZZ_SEED={SEED} FUZZ_CASE={number}): {exc!r}")


def run(name: str, one_case: Callable[[random.Random], object], cases: int) -> None:
    """Run ``one_case`` for each seeded case; the first exception (or failed check) ends the run."""
    done, start = 0, time.perf_counter()
    for number, rng in _cases(name, cases):
        try:
            one_case(rng)
        except Exception as exc:
            raise _failure(name, number, exc) from exc
        done += 1
    RATES.append(Rate(name, done, time.perf_counter() - start))


async def arun(name: str, one_case: Callable[[random.Random], Awaitable[object]], cases: int) -> None:
    """``run`` for cases that need the event loop: all cases share the caller's loop."""
    done, start = 0, time.perf_counter()
    for number, rng in _cases(name, cases):
        try:
            await one_case(rng)
        except Exception as exc:
            raise _failure(name, number, exc) from exc
        done += 1
    RATES.append(Rate(name, done, time.perf_counter() - start))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_logs(logger: str = "tether") -> Iterator[list[logging.LogRecord]]:
    """What ``logger`` and its children log meanwhile (at every level, whatever pytest's own settings)."""
    handler = _Collect()
    target = logging.getLogger(logger)
    old_level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)


def errors(records: list[logging.LogRecord]) -> list[str]:
    """Records that mean something failed unexpectedly (an exception logged), as text for an assertion."""
    return [f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" for r in records if r.levelno >= logging.ERROR]


def text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


# Characters that trip parsers: non-ASCII digits and letters, controls, separators, quoting.
# (Escapes, not the characters: some look like ASCII ones.)
NASTY = (
    "0123456789\u00b3\u0663\u0966\u00b2\u00bd\u2177\U0001d7e0"
    "abcXYZ.-_:/[]@ \t\n\r\x00\x7f\u200b\u00e9\u65e5\U0001f600\"'\\{}#%&*!?,;=+|<>"
)


def nasty(rng: random.Random, high: int = 12) -> str:
    return text(rng, NASTY, 0, high)
