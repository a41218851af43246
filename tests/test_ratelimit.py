"""Token buckets and the bounded per-source table, on a clock the test moves by hand."""

from __future__ import annotations

import sys
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpbeat.errors import ConfigError
from udpbeat.ratelimit import MAX_BURST, MIN_RATE, SourceLimiter, TokenBucket

#: A monotonic time far from zero (the clock's epoch is unspecified): precision must hold there.
T0 = 1_764_064_900.0


def allowed(bucket: TokenBucket, times: list[float]) -> int:
    return sum(bucket.allow(t) for t in times)


# --- one bucket ------------------------------------------------------------------------------


def test_a_full_bucket_allows_exactly_its_burst_at_once() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.allow(T0) for _ in range(7)] == [True] * 5 + [False] * 2


def test_tokens_come_back_at_the_rate() -> None:
    bucket = TokenBucket(rate=8, burst=5)  # a token every 1/8 s, exact in binary
    assert allowed(bucket, [T0] * 5) == 5
    assert not bucket.allow(T0 + 0.12)  # 0.96 of a token: not enough
    assert bucket.allow(T0 + 0.125)
    assert not bucket.allow(T0 + 0.125)
    assert bucket.tokens(T0 + 0.4375) == pytest.approx(2.5)


def test_an_idle_bucket_refills_only_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    bucket.allow(T0)
    assert bucket.tokens(T0 + 3600) == 5
    assert allowed(bucket, [T0 + 3600] * 10) == 5


def test_a_steady_stream_at_twice_the_rate_gets_the_burst_plus_the_rate() -> None:
    bucket = TokenBucket(rate=100, burst=20)
    # 10 s at 200 requests/s: 20 (burst) + 100/s * 10 s come through, give or take one.
    times = [T0 + i / 200 for i in range(2000)]
    assert allowed(bucket, times) in range(1019, 1022)


def test_high_rates_keep_their_precision_far_from_the_clocks_epoch() -> None:
    # 1/rate is a few times the spacing of floats near 1.8e9 (2.4e-7 s): kept as given, the
    # bucket's interval would round to 4 such steps (0.95 us) and let 5% too much through.
    bucket = TokenBucket(rate=1_000_000, burst=10)
    times = [T0 + i * 0.5e-6 for i in range(1, 200_001)]  # 0.1 s at twice the rate
    assert allowed(bucket, times) in range(99_000, 101_000)


def test_the_clock_is_trusted_to_be_monotonic_nothing_refills_a_bucket_but_time() -> None:
    # The reflector passes time.monotonic(): an earlier `now` is never taken for a stepped
    # clock (as it was when the buckets ran on wall time) and gives no fresh bucket.
    for limit in (TokenBucket(rate=1, burst=2), SourceLimiter(rate=1, burst=2, max_sources=4)):
        allow = limit.allow if isinstance(limit, TokenBucket) else partial(limit.allow, "a")
        assert [allow(T0) for _ in range(3)] == [True, True, False]
        assert not allow(T0 - 3600)
        assert allow(T0 + 1)


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=100),
)
def test_one_bucket_and_a_bucket_in_the_table_decide_alike(
    rate: float, burst: int, gaps: list[float]
) -> None:
    # Both run the one GCRA of ratelimit.Gcra.
    bucket, limiter = TokenBucket(rate, burst), SourceLimiter(rate, burst, 1)
    now = T0
    for gap in gaps:
        now += gap
        assert bucket.allow(now) == limiter.allow("a", now)
        assert bucket.tokens(now) == limiter.tokens("a", now)


@pytest.mark.parametrize(("rate", "burst"), [(MIN_RATE, 5), (MIN_RATE, MAX_BURST), (1e7, 1)])
def test_extreme_settings_still_limit(rate: float, burst: int) -> None:
    # burst / rate stays a finite number of seconds: the limit is never turned off by overflow.
    bucket = TokenBucket(rate, burst)
    limiter = SourceLimiter(rate, burst, 1)
    checked = min(burst, 1000)
    passed = sum(bucket.allow(T0) for _ in range(checked))
    assert passed == checked
    assert sum(limiter.allow("a", T0) for _ in range(checked)) == checked
    if burst == checked:
        assert not bucket.allow(T0)
        assert not limiter.allow("a", T0)


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=300),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst)
    now, passed = T0, 0
    for gap in gaps:
        now += gap
        passed += bucket.allow(now)
        assert passed <= burst + rate * (now - T0) + 1e-6
        assert 0 <= bucket.tokens(now) <= burst + 1e-9


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        (0, 1),
        (-1, 1),
        (float("nan"), 1),
        (float("inf"), 1),
        (1e8, 1),
        pytest.param(10**400, 1, id="huge-int-rate"),
        (True, 1),
        ("5", 1),
        # Rates whose 1 / rate or burst / rate overflowed to infinity, turning the limit off.
        (1e-308, 5),
        (5e-324, 1),
        (MIN_RATE / 2, 1),
        (1, 0),
        (1, 1.5),
        (1, True),
        (1, MAX_BURST + 1),
        pytest.param(1, 10**400, id="huge-int-burst"),
    ],
)
def test_bad_settings_are_config_errors(rate: float, burst: int) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(rate, burst)
    with pytest.raises(ConfigError):
        SourceLimiter(rate, burst, 10)


@pytest.mark.parametrize("max_sources", [0, -1, 2.5, True])
def test_bad_table_sizes_are_config_errors(max_sources: int) -> None:
    with pytest.raises(ConfigError, match="max sources"):
        SourceLimiter(1, 1, max_sources)


# --- one bucket per source -------------------------------------------------------------------


def test_each_source_has_its_own_bucket() -> None:
    limiter = SourceLimiter(rate=1, burst=3, max_sources=10)
    assert [limiter.allow("a", T0) for _ in range(4)] == [True, True, True, False]
    assert [limiter.allow("b", T0) for _ in range(4)] == [True, True, True, False]
    assert limiter.tokens("a", T0 + 1) == pytest.approx(1)
    assert limiter.tokens("never-seen", T0) == 3


def test_the_table_never_holds_more_than_max_sources() -> None:
    limiter = SourceLimiter(rate=1, burst=1, max_sources=100)
    for i in range(10_000):
        assert limiter.allow(f"10.0.{i // 256}.{i % 256}", T0)
        assert len(limiter) <= 100
    assert len(limiter) == 100
    assert limiter.sources_evicted == 9_900


def test_the_least_recently_seen_source_is_evicted_first() -> None:
    limiter = SourceLimiter(rate=1, burst=1, max_sources=3)
    for source in ("a", "b", "c"):
        limiter.allow(source, T0)
    limiter.allow("a", T0 + 0.5)  # "a" seen again (refused, but seen): now "b" is the oldest
    limiter.allow("d", T0 + 0.5)
    assert "b" not in limiter
    assert all(source in limiter for source in ("a", "c", "d"))


def test_evictions_that_loosen_the_limit_are_counted_apart() -> None:
    limiter = SourceLimiter(rate=1, burst=1, max_sources=2)
    limiter.allow("a", T0)
    limiter.allow("b", T0)
    limiter.allow("c", T0 + 0.5)  # "a" is evicted while its bucket is still empty
    assert (limiter.sources_evicted, limiter.sources_evicted_active) == (1, 1)
    limiter.allow("d", T0 + 10)  # "b" had refilled long ago: evicting it loses nothing
    assert (limiter.sources_evicted, limiter.sources_evicted_active) == (2, 1)


def test_a_spoofed_flood_cannot_grow_memory() -> None:
    limiter = SourceLimiter(rate=100, burst=200, max_sources=1000)
    limiter.allow("warm-up", T0)
    before = sys.getsizeof(limiter._table)
    for i in range(50_000):
        limiter.allow(i, T0 + i * 1e-5)
    assert len(limiter) == 1000
    # The table's own storage stays that of about max_sources entries, whatever the flood.
    assert sys.getsizeof(limiter._table) <= max(before, 1000 * 200)
