"""The soak's verdict on memory growth (tests/bench/procstat.growth): the end against the warm-up level."""

from __future__ import annotations

import pytest

from tests.bench.procstat import growth


def test_flat_after_warmup_passes_even_if_the_warmup_climbed() -> None:
    result = growth([100.0, 150.0, 152.0, 149.0, 151.0], warmup=2, percent=10, floor_mb=20)
    assert result.baseline_mb == 150.0
    assert not result.grew


def test_steady_climb_fails() -> None:
    samples = [150.0 + 8 * minute for minute in range(10)]
    result = growth(samples, warmup=1, percent=10, floor_mb=20)
    assert result.grew
    assert "GREW" in result.describe()


def test_allowance_is_a_percentage_with_a_floor() -> None:
    assert growth([100.0, 118.0, 118.0], warmup=1, percent=10, floor_mb=20).allowed_mb == 20.0
    assert growth([400.0, 430.0, 430.0], warmup=1, percent=10, floor_mb=20).allowed_mb == 40.0
    assert not growth([400.0, 430.0, 430.0], warmup=1, percent=10, floor_mb=20).grew


def test_one_spike_at_the_end_is_averaged_with_the_sample_before() -> None:
    assert not growth([150.0, 150.0, 150.0, 186.0], warmup=1, percent=10, floor_mb=20).grew


def test_short_runs_and_no_samples() -> None:
    assert growth([150.0], warmup=3, percent=10, floor_mb=20).final_mb == 150.0
    with pytest.raises(ValueError, match="no samples"):
        growth([], warmup=1, percent=10, floor_mb=20)
