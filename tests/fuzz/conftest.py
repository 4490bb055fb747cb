"""Prints how many cases each fuzzer ran and how fast (never asserted: rates depend on the machine)."""

import pytest
from fuzz_harness import RATES, SEED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RATES:
        return
    terminalreporter.section(f"fuzzers (FUZZ_SEED={SEED})")
    width = max(len(rate.name) for rate in RATES)
    for rate in RATES:
        terminalreporter.write_line(
            f"{rate.name:<{width}}  {rate.cases:>8} cases  {rate.seconds:8.2f} s  {rate.per_second:>10.0f} cases/s"
        )
