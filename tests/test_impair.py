"""The impairment core on a virtual clock: no sockets, no sleeping.

Statistical tests use fixed seeds, so each is deterministic; the tolerances say how far a
*random* seed could stray, so that a seed is not picked to pass. Each is a number of standard
deviations ``Z`` of the estimate, derived where the test is:

- a proportion from ``n`` independent trials with probability ``p`` (loss, duplication,
  reordering) is binomial: standard deviation ``sqrt(p (1 - p) / n)``;
- a proportion from a stationary two-state Markov chain (bursty loss) has the binomial variance
  times ``(1 + lam) / (1 - lam)``, where ``lam = 1 - P(good->bad) - P(bad->good)`` is the
  chain's lag-1 autocorrelation (the sum of ``lam^|k|`` over all lags ``k``);
- a sample ``u``-quantile of ``n`` draws from a density ``f`` is asymptotically normal with
  variance ``u (1 - u) / (n f(x_u)^2)``. The delay is ``delay + jitter * q(U)`` with ``q`` the
  distribution's quantile function, so ``1 / f(x_u) = jitter * q'(u)`` and the standard
  deviation is ``jitter * q'(u) * sqrt(u (1 - u) / n)``; ``q'`` is taken numerically.

With ``Z = 5`` a random seed fails a given check with probability below 1e-6.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpbeat.errors import ConfigError
from udpbeat.impair import (
    DISTRIBUTIONS,
    DROP_CAUSES,
    PATHS,
    WIRE_OVERHEAD,
    Fate,
    ImpairedPath,
    Impairment,
    ScheduledOutage,
    quantile,
)

Z = 5.0


def run(
    config: Impairment,
    arrivals: list[float],
    *,
    seed: int | str = 1,
    size: int = 100,
    direction: str = "up",
) -> tuple[ImpairedPath[int], list[Fate], list[tuple[float, int]]]:
    """Send datagram ``i`` at ``arrivals[i]``, pop what is due at every arrival and at the
    end, and forward it all; returns the path, the fates and ``(sent at, i)`` in send order."""
    path: ImpairedPath[int] = ImpairedPath(config, seed=seed, direction=direction)
    fates: list[Fate] = []
    sent: list[tuple[float, int]] = []

    def drain(now: float) -> None:
        due = path.pop_due(now)
        sent.extend((now, i) for i, _ in due)
        path.forwarded(len(due))

    for i, now in enumerate(arrivals):
        while (timer := path.get_timer()) is not None and timer < now:
            drain(max(timer, 0.0))
        fates.append(path.send(b"x" * size, i, now))
        drain(now)
    while (timer := path.get_timer()) is not None:
        drain(timer)
    return path, fates, sent


def evenly(count: int, spacing: float = 0.001) -> list[float]:
    return [i * spacing for i in range(count)]


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": -0.1},
        {"loss": 1.5},
        {"loss": math.nan},
        {"loss": True},
        {"loss": "0.1"},
        {"duplicate": 2},
        {"reorder": -1},
        {"loss": 0.5, "loss_burst": 0.5},
        {"loss": 0.9, "loss_burst": 2},  # would need P(good->bad) > 1
        {"loss": 0.1, "loss_burst": math.inf},
        {"delay": -0.001},
        {"delay": math.inf},
        {"jitter": math.nan},
        {"reorder_gap": 1e9},
        {"distribution": "uniform"},
        {"keep_order": 1},
        {"rate": -1},
        {"rate": 100},  # below one byte of payload's worth a second
        {"rate": math.inf},
        {"queue": 0},
        {"queue": 1.5},
        {"outages": [ScheduledOutage(1, 1)]},
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Impairment(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("start,duration", [(-1, 1), (0, 0), (0, -1), (math.nan, 1), (0, 1e9)])
def test_bad_outages_raise_config_error(start: float, duration: float) -> None:
    with pytest.raises(ConfigError):
        ScheduledOutage(start, duration)


def test_max_in_flight_must_be_a_positive_whole_number() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            ImpairedPath(Impairment(), max_in_flight=bad)  # type: ignore[arg-type]


def test_describe_and_to_dict() -> None:
    config = Impairment(
        loss=0.1,
        loss_burst=4,
        delay=0.02,
        jitter=0.005,
        distribution="pareto-normal",
        duplicate=0.01,
        reorder=0.02,
        rate=1e6,
        queue=50,
        outages=(ScheduledOutage(10, 5),),
    )
    text = config.describe()
    parts = ["outage 10s:5s", "loss 0.1 in bursts of 4", "duplicate 0.01", "rate 1mbit",
             "queue 50", "delay 20ms jitter 5ms pareto-normal",
             "reorder 0.02 gap 10ms"]  # fmt: skip
    for part in parts:
        assert part in text
    assert Impairment().describe() == "clean"
    data = config.to_dict()
    assert data["loss_burst"] == 4 and data["outages"] == [{"start": 10, "duration": 5}]
    assert data["median_delay"] == pytest.approx(0.02 + 0.005 * quantile("pareto-normal", 0.5))


def test_instant_means_leaving_on_arrival() -> None:
    assert Impairment().instant and Impairment(loss=0.5, duplicate=0.1).instant
    for kwargs in ({"delay": 0.001}, {"jitter": 0.001}, {"rate": 1e6}, {"reorder": 0.1}):
        assert not Impairment(**kwargs).instant  # type: ignore[arg-type]


def test_named_paths_are_valid_and_impaired() -> None:
    assert set(PATHS) == {"lossy", "bursty", "jittery"}
    for up, down in PATHS.values():
        assert not up.clean and not down.clean
    assert PATHS["bursty"][0].bursty


# --- what every path guarantees --------------------------------------------------------------


def test_a_clean_path_sends_everything_at_once_in_order() -> None:
    arrivals = evenly(1000)
    path, fates, sent = run(Impairment(), arrivals)
    assert path.clean
    assert all(fate == Fate((now,), ()) for fate, now in zip(fates, arrivals, strict=True))
    assert sent == [(now, i) for i, now in enumerate(arrivals)]
    assert path.counters.forwarded == 1000 and path.counters.delayed == 0


impairments = st.builds(
    Impairment,
    loss=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    loss_burst=st.sampled_from([None, 1.0, 3.0, 10.0]),
    delay=st.sampled_from([0.0, 0.001, 0.05]),
    jitter=st.sampled_from([0.0, 0.0005, 0.02]),
    distribution=st.sampled_from(DISTRIBUTIONS),
    keep_order=st.booleans(),
    duplicate=st.sampled_from([0.0, 0.1, 1.0]),
    reorder=st.sampled_from([0.0, 0.2]),
    reorder_gap=st.sampled_from([0.0, 0.003]),
    rate=st.sampled_from([0.0, 1e5, 1e7]),
    queue=st.sampled_from([1, 5, 1000]),
    outages=st.sampled_from(
        [(), (ScheduledOutage(0.01, 0.02),), (ScheduledOutage(0, 0.005), ScheduledOutage(0.03, 1))]
    ),
)
arrival_gaps = st.lists(st.sampled_from([0.0, 1e-5, 3e-4, 0.002, 0.02]), min_size=1, max_size=150)


def _times(gaps: list[float]) -> list[float]:
    times, now = [], 0.0
    for gap in gaps:
        now += gap
        times.append(now)
    return times


@settings(max_examples=150, deadline=None)
@given(config=impairments, gaps=arrival_gaps, seed=st.integers(0, 2**32), stop_at=st.integers())
def test_every_datagram_is_accounted_for_at_every_step(
    config: Impairment, gaps: list[float], seed: int, stop_at: int
) -> None:
    """``received + duplicated == forwarded + dropped + in_flight`` after every call, with
    in_flight exactly what is held; departures never precede arrivals; stop() empties."""
    arrivals = _times(gaps)
    path: ImpairedPath[int] = ImpairedPath(config, seed=seed, max_in_flight=50)
    counters = path.counters
    stop_index = stop_at % (len(arrivals) + 1)
    for i, now in enumerate(arrivals[:stop_index]):
        fate = path.send(b"x" * 60, i, now)
        assert len(fate.departures) + len(fate.dropped) in (1, 2)
        assert all(leaves >= now for leaves in fate.departures)
        assert set(fate.dropped) <= set(DROP_CAUSES)
        assert counters.unaccounted == 0 and counters.in_flight == path.held
        due = path.pop_due(now)
        # The shell sends some and fails others: both settle the in-flight count.
        path.forwarded(len(due) // 2)
        path.drop("send-error", len(due) - len(due) // 2)
        assert counters.unaccounted == 0 and counters.in_flight == path.held
    assert path.stop() == counters.dropped["stopped"]
    assert counters.in_flight == 0 and path.held == 0 and counters.unaccounted == 0
    assert counters.received == stop_index


@settings(max_examples=100, deadline=None)
@given(config=impairments, gaps=arrival_gaps, seed=st.integers(0, 2**32))
def test_the_same_seed_gives_the_same_fates(
    config: Impairment, gaps: list[float], seed: int
) -> None:
    arrivals = _times(gaps)
    first = run(config, arrivals, seed=seed)
    second = run(config, arrivals, seed=seed)
    assert first[1] == second[1] and first[2] == second[2]
    assert first[0].counters == second[0].counters


@settings(max_examples=100, deadline=None)
@given(
    config=impairments.filter(lambda c: not c.reorder and not c.duplicate),
    gaps=arrival_gaps,
    seed=st.integers(0, 2**32),
)
def test_keep_order_never_reorders(config: Impairment, gaps: list[float], seed: int) -> None:
    config = Impairment(**{**_fields(config), "keep_order": True})
    _, fates, sent = run(config, _times(gaps), seed=seed)
    departures = [fate.departures[0] for fate in fates if fate.departures]
    assert departures == sorted(departures)
    assert [i for _, i in sent] == sorted(i for _, i in sent)


def _fields(config: Impairment) -> dict[str, object]:
    return {name: getattr(config, name) for name in Impairment.__dataclass_fields__}


def test_each_stage_draws_from_its_own_stream() -> None:
    """Turning on jitter, duplication or reordering does not change which datagrams are
    lost; the datagram's position decides, whatever happened before it."""
    arrivals = evenly(5000)
    alone = run(Impairment(loss=0.2), arrivals, seed=9)[1]
    lost_alone = [not fate.departures for fate in alone]
    crowded = Impairment(loss=0.2, delay=0.01, jitter=0.01, duplicate=0.3, reorder=0.1)
    together = run(crowded, arrivals, seed=9)[1]
    assert [not fate.departures for fate in together] == lost_alone
    # The directions' streams differ, and seeds do.
    assert [not f.departures for f in run(Impairment(loss=0.2), arrivals, seed=9,
                                          direction="down")[1]] != lost_alone  # fmt: skip
    assert [not f.departures for f in run(Impairment(loss=0.2), arrivals, seed=10)[1]] != lost_alone


def test_an_outage_drops_exactly_its_window() -> None:
    config = Impairment(outages=(ScheduledOutage(0.1, 0.05), ScheduledOutage(0.3, 0.01)))
    arrivals = evenly(500)  # one every millisecond for 0.5 s
    path, fates, _ = run(config, arrivals)
    inside = 0
    for now, fate in zip(arrivals, fates, strict=True):
        if 0.1 <= now < 0.1 + 0.05 or 0.3 <= now < 0.3 + 0.01:  # start in, end out
            inside += 1
            assert fate == Fate((), ("outage",)), now
        else:
            assert fate == Fate((now,), ()), now
    assert path.counters.dropped["outage"] == inside == pytest.approx(60, abs=1)


def test_outages_count_from_the_paths_start() -> None:
    path: ImpairedPath[int] = ImpairedPath(
        Impairment(outages=(ScheduledOutage(1, 1),)), start=100.0
    )
    assert path.send(b"x", 0, 100.5).departures == (100.5,)
    assert path.send(b"x", 0, 101.0).dropped == ("outage",)
    assert path.send(b"x", 0, 102.0).departures == (102.0,)


def test_delay_is_added_to_the_arrival_time_without_drift() -> None:
    """Departures come from arrival times, not from when the previous one was sent: a late
    pop does not push the next departures back."""
    path: ImpairedPath[int] = ImpairedPath(Impairment(delay=0.02))
    for i in range(10):
        assert path.send(b"x", i, i * 0.001).departures == (i * 0.001 + 0.02,)
    assert path.get_timer() == pytest.approx(0.02)
    # The shell wakes up 5 ms late: all due so far come out at once, in order...
    due = path.pop_due(0.02 + 0.005)
    assert [i for i, _ in due] == [0, 1, 2, 3, 4, 5]
    path.forwarded(len(due))
    assert path.lateness_max == pytest.approx(0.005)
    # ...and the rest keep their own times.
    assert path.get_timer() == pytest.approx(0.026)


def test_a_full_backlog_drops() -> None:
    path: ImpairedPath[int] = ImpairedPath(Impairment(delay=1.0), max_in_flight=3)
    for i in range(5):
        path.send(b"x", i, 0.0)
    assert path.held == 3 and path.counters.dropped["backlog"] == 2
    assert path.counters.unaccounted == 0


def test_the_rate_cap_spaces_datagrams_by_their_size_and_drops_past_the_queue() -> None:
    rate, size, queue = 1e6, 472, 10  # 500 bytes on the wire: 4 ms each
    config = Impairment(rate=rate, queue=queue)
    # 100 datagrams at once: 10 fit the queue (the first on the link), the rest are dropped.
    path, fates, _ = run(config, [0.0] * 100, size=size)
    service = (size + WIRE_OVERHEAD) * 8 / rate
    departures = [fate.departures[0] for fate in fates if fate.departures]
    assert departures == pytest.approx([service * (k + 1) for k in range(queue)])
    assert path.counters.dropped["queue"] == 90
    # A steady stream at twice the rate: half gets through, at the link's pace.
    arrivals = [k * service / 2 for k in range(4000)]
    path, fates, _ = run(config, arrivals, size=size)
    through = [fate.departures[0] for fate in fates if fate.departures]
    assert len(through) == pytest.approx(2000 + queue, abs=2)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(through)}
    assert gaps == {round(service, 9)}


def test_duplicates_follow_their_original() -> None:
    path, fates, sent = run(Impairment(duplicate=1.0), evenly(100))
    assert all(len(fate.departures) == 2 for fate in fates)
    assert path.counters.duplicated == 100 and path.counters.forwarded == 200
    assert [i for _, i in sent] == [i for i in range(100) for _ in range(2)]


def test_reordering_holds_a_datagram_back_so_later_ones_overtake_it() -> None:
    config = Impairment(reorder=0.25, reorder_gap=0.0055)
    arrivals = evenly(2000)  # 1 ms apart: the next 5 overtake a reordered one
    path, fates, sent = run(config, arrivals)
    order = [i for _, i in sent]
    late = {
        i for i, (f, now) in enumerate(zip(fates, arrivals, strict=True)) if f.departures[0] > now
    }
    assert len(late) == path.counters.reordered
    for i in late:
        if i + 5 < 2000 and i + 5 not in late:
            assert order.index(i) > order.index(i + 5)
        if i + 6 < 2000:
            assert order.index(i) < order.index(i + 6)


# --- statistics ------------------------------------------------------------------------------


def binomial_tolerance(p: float, n: int) -> float:
    return Z * math.sqrt(p * (1 - p) / n)


def test_independent_loss_rate() -> None:
    n, p = 100_000, 0.1
    path, fates, _ = run(Impairment(loss=p), evenly(n, 1e-4), seed=11)
    rate = path.counters.dropped["loss"] / n
    assert rate == pytest.approx(p, abs=binomial_tolerance(p, n))  # ±0.0047
    # Independent: the chance of a loss right after a loss is the loss rate.
    lost = [not fate.departures for fate in fates]
    after_loss = [b for a, b in itertools.pairwise(lost) if a]
    assert sum(after_loss) / len(after_loss) == pytest.approx(
        p, abs=binomial_tolerance(p, len(after_loss))
    )


@pytest.mark.parametrize("p,burst", [(0.1, 4.0), (0.3, 2.0), (0.02, 10.0)])
def test_bursty_loss_rate_and_burst_length(p: float, burst: float) -> None:
    n = 100_000
    config = Impairment(loss=p, loss_burst=burst)
    path, fates, _ = run(config, evenly(n, 1e-4), seed=12)
    enter, leave = config.transition_probabilities()
    assert leave == 1 / burst and enter / (enter + leave) == pytest.approx(p)
    # The loss rate: binomial variance inflated by (1 + lam) / (1 - lam) for a Markov chain.
    lam = 1 - enter - leave
    tolerance = Z * math.sqrt(p * (1 - p) / n * (1 + lam) / (1 - lam))
    rate = path.counters.dropped["loss"] / n
    assert rate == pytest.approx(p, abs=tolerance)
    # Burst lengths are geometric with mean `burst` (leave with 1/burst per datagram):
    # standard deviation sqrt(1 - 1/burst) * burst per burst, over about n p / burst bursts.
    runs: list[int] = []
    length = 0
    for fate in fates:
        if not fate.departures:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    mean_tolerance = Z * math.sqrt(1 - 1 / burst) * burst / math.sqrt(len(runs))
    assert statistics.fmean(runs) == pytest.approx(burst, abs=mean_tolerance)
    assert len(runs) == pytest.approx(n * p / burst, rel=0.1)


def _quantile_slope(distribution: str, u: float) -> float:
    h = 1e-5
    return (quantile(distribution, u + h) - quantile(distribution, u - h)) / (2 * h)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_delay_quantiles_follow_the_distribution(distribution: str) -> None:
    n, delay, jitter = 20_000, 0.05, 0.01
    config = Impairment(delay=delay, jitter=jitter, distribution=distribution)
    _, fates, _ = run(config, evenly(n, 1e-4), seed=13)
    arrivals = evenly(n, 1e-4)
    delays = sorted(f.departures[0] - a for f, a in zip(fates, arrivals, strict=True))
    for u in (0.1, 0.25, 0.5, 0.75, 0.9):
        sample = delays[int(u * n)]
        expected = delay + jitter * quantile(distribution, u)
        sd = jitter * _quantile_slope(distribution, u) * math.sqrt(u * (1 - u) / n)
        assert sample == pytest.approx(expected, abs=Z * sd), (u, sample, expected)
    median_sd = jitter * _quantile_slope(distribution, 0.5) * 0.5 / math.sqrt(n)
    assert delays[n // 2] == pytest.approx(config.median_delay, abs=Z * median_sd)


def test_the_standard_shapes() -> None:
    # Mean and spread of the standard draws, by the midpoint rule over 50,000 quantiles
    # (exact to a few parts in a thousand).
    m = 50_000
    for distribution, mean, sd in [("normal", 0.0, 1.0), ("exponential", 1.0, 1.0)]:
        values = [quantile(distribution, (k + 0.5) / m) for k in range(m)]
        assert statistics.fmean(values) == pytest.approx(mean, abs=0.01)
        assert statistics.pstdev(values) == pytest.approx(sd, abs=0.01)
    values = [quantile("pareto-normal", (k + 0.5) / m) for k in range(m)]
    assert statistics.fmean(values) == pytest.approx(0.0, abs=0.01)
    assert 0.8 < statistics.pstdev(values) < 1.0  # the two parts move together
    assert quantile("pareto-normal", 0.5) == pytest.approx(
        0.75 * (2 ** (1 / 3) - 1.5) / math.sqrt(0.75)
    )
    assert quantile("pareto-normal", 0.999) > 4  # the long right tail
    assert quantile("normal", 0.0) > -10 and quantile("normal", 1.0) < 10  # never infinite


def test_a_delay_never_goes_negative() -> None:
    config = Impairment(delay=0.001, jitter=0.01)
    arrivals = evenly(2000)
    _, fates, _ = run(config, arrivals, seed=2)
    assert all(f.departures[0] >= a for f, a in zip(fates, arrivals, strict=True))
    assert config.median_delay == 0.001


def test_jitter_reorders_unless_asked_not_to() -> None:
    arrivals = evenly(2000, 0.0005)
    config = Impairment(delay=0.01, jitter=0.003)
    order = [i for _, i in run(config, arrivals, seed=3)[2]]
    assert order != sorted(order)
    kept = Impairment(delay=0.01, jitter=0.003, keep_order=True)
    order = [i for _, i in run(kept, arrivals, seed=3)[2]]
    assert order == sorted(order)


@pytest.mark.parametrize("name,p", [("duplicate", 0.05), ("reorder", 0.2)])
def test_duplicate_and_reorder_rates(name: str, p: float) -> None:
    n = 50_000
    path, _, _ = run(Impairment(**{name: p}), evenly(n, 1e-4), seed=14)  # type: ignore[arg-type]
    counted = path.counters.duplicated if name == "duplicate" else path.counters.reordered
    assert counted / n == pytest.approx(p, abs=binomial_tolerance(p, n))


def test_counters_add_up_over_a_long_mixed_run() -> None:
    config = Impairment(loss=0.1, loss_burst=3, delay=0.01, jitter=0.004, duplicate=0.05,
                        reorder=0.05, rate=2e6, queue=20,
                        outages=(ScheduledOutage(1, 0.5),))  # fmt: skip
    path, _, sent = run(config, evenly(50_000, 1e-4), seed=15)
    c = path.counters
    assert c.unaccounted == 0 and c.in_flight == 0
    assert c.forwarded == len(sent)
    assert c.received + c.duplicated == c.forwarded + c.dropped_total
    assert Counter({k: v for k, v in c.dropped.items() if v}).keys() <= {"loss", "queue", "outage"}
