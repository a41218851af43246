"""Ping-style statistics: percentiles, mdev and RFC 3550 jitter."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpbeat.stats import Jitter, Series, percentile

rtts = st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=300)


def reference_percentile(samples: list[float], pct: int) -> float:
    """numpy's default ("linear"), which the standard library calls the inclusive method."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


def series_of(samples: list[float]) -> Series:
    series = Series()
    for sample in samples:
        series.add(sample)
    return series


def test_empty_series_has_no_figures() -> None:
    summary = Series().summary()
    assert summary.count == 0
    assert summary.to_dict() == {
        "count": 0,
        "min": None,
        "avg": None,
        "max": None,
        "mdev": None,
        "p50": None,
        "p90": None,
        "p99": None,
    }
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


def test_single_sample() -> None:
    summary = series_of([0.004]).summary()
    assert (summary.count, summary.min, summary.avg, summary.max) == (1, 0.004, 0.004, 0.004)
    assert summary.mdev == 0.0
    assert summary.p50 == summary.p90 == summary.p99 == 0.004


def test_hand_computed_summary() -> None:
    # Added out of order: percentiles must sort.
    summary = series_of([4.0, 1.0, 3.0, 2.0, 10.0]).summary()
    assert summary.count == 5
    assert (summary.min, summary.max) == (1.0, 10.0)
    assert summary.avg == 4.0
    # ping: sqrt(mean(x^2) - mean(x)^2) = sqrt(130/5 - 16) = sqrt(10)
    assert summary.mdev == pytest.approx(math.sqrt(10.0))
    # rank = (n - 1) * p / 100 over [1, 2, 3, 4, 10]
    assert summary.p50 == 3.0
    assert summary.p90 == pytest.approx(4.0 + 0.6 * 6.0)  # rank 3.6
    assert summary.p99 == pytest.approx(4.0 + 0.96 * 6.0)  # rank 3.96


def test_mdev_is_the_population_deviation_as_ping_prints_it() -> None:
    samples = [0.010, 0.012, 0.011, 0.030, 0.009]
    expected = math.sqrt(sum(x * x for x in samples) / 5 - (sum(samples) / 5) ** 2)
    mdev = series_of(samples).summary().mdev
    assert mdev == pytest.approx(expected, rel=1e-9)
    assert mdev == pytest.approx(statistics.pstdev(samples), rel=1e-9)
    assert mdev != pytest.approx(statistics.stdev(samples), rel=1e-3)  # not the sample deviation


@pytest.mark.parametrize("rtt", [0.1, 0.000_05, 3.0])
def test_mdev_of_equal_samples_is_about_zero_never_nan(rtt: float) -> None:
    # mean(x^2) - mean(x)^2 cancels: it can round below zero (must not raise or give NaN) or
    # leave a residue, which must stay far below what a ping-style display shows.
    summary = series_of([rtt] * 1000).summary()
    assert summary.mdev is not None
    assert 0.0 <= summary.mdev < 1e-6 * rtt


@given(rtts)
def test_summary_agrees_with_a_reference_computation(samples: list[float]) -> None:
    summary = series_of(samples).summary()
    assert summary.count == len(samples)
    assert summary.min == min(samples)
    assert summary.max == max(samples)
    assert summary.avg == pytest.approx(statistics.fmean(samples), rel=1e-9, abs=1e-12)
    assert summary.mdev == pytest.approx(statistics.pstdev(samples), rel=1e-6, abs=1e-6)
    for pct, value in ((50, summary.p50), (90, summary.p90), (99, summary.p99)):
        assert value == pytest.approx(reference_percentile(samples, pct), rel=1e-9, abs=1e-12)
        assert value is not None and min(samples) <= value <= max(samples)


@given(rtts, st.floats(min_value=0.0, max_value=100.0))
def test_percentile_agrees_with_the_inclusive_quantile(samples: list[float], pct: float) -> None:
    ordered = sorted(samples)
    value = percentile(ordered, pct)
    # Reference straight from the definition: rank = (n - 1) * pct / 100, linear in between.
    rank = (len(ordered) - 1) * pct / 100.0
    below, above = ordered[math.floor(rank)], ordered[math.ceil(rank)]
    assert below <= value <= above
    assert percentile(ordered, 0) == ordered[0]
    assert percentile(ordered, 100) == ordered[-1]


def test_jitter_follows_rfc_3550_on_a_hand_computed_sequence() -> None:
    jitter = Jitter()
    jitter.add(0.100)
    assert jitter.value == 0.0  # one transit time has no difference yet
    jitter.add(0.116)  # D = 0.016: J = 0 + (0.016 - 0) / 16 = 0.001
    assert jitter.value == pytest.approx(0.001)
    jitter.add(0.100)  # D = 0.016: J = 0.001 + (0.016 - 0.001) / 16 = 0.0019375
    assert jitter.value == pytest.approx(0.0019375)
    jitter.add(0.100)  # D = 0: J = 0.0019375 - 0.0019375 / 16 = 0.00181640625
    assert jitter.value == pytest.approx(0.00181640625)


def test_jitter_of_a_constant_transit_is_zero() -> None:
    jitter = Jitter()
    for _ in range(50):
        jitter.add(0.02)
    assert jitter.value == 0.0


def test_jitter_converges_to_the_mean_absolute_difference() -> None:
    jitter = Jitter()
    for i in range(2000):
        jitter.add(0.010 if i % 2 else 0.030)  # |D| is always 0.020
    assert jitter.value == pytest.approx(0.020, rel=1e-6)
