"""The cadence of lone requests: a window for the next one only while they keep a period."""

from __future__ import annotations

import pytest

from udpbeat.cadence import ARRIVALS, FIRST_LEAD, MAX_LEAD, MIN_LEAD, Cadence, WakeLead, Window
from udpbeat.errors import ConfigError


def fed(times: list[float], **options: float) -> Cadence:
    cadence = Cadence(**options)  # type: ignore[arg-type]
    for at in times:
        cadence.arrived(at)
    return cadence


def steady(period: float, count: int = ARRIVALS, start: float = 100.0) -> list[float]:
    return [start + period * n for n in range(count)]


def test_a_steady_period_gives_a_window_around_the_next_arrival() -> None:
    window = fed(steady(0.01)).window()
    assert window is not None
    expected = 100.0 + 0.01 * ARRIVALS
    assert window[:2] == pytest.approx((expected - MIN_LEAD, expected + MIN_LEAD))
    assert window.period == pytest.approx(0.01)


def test_no_window_before_enough_arrivals() -> None:
    assert fed([]).window() is None
    assert fed(steady(0.01, ARRIVALS - 1)).window() is None


def test_the_window_spans_the_jitter_and_is_refused_when_it_would_cost_too_much() -> None:
    # Every other request 0.5 ms late: the window spans that and MIN_LEAD either side.
    def jittery(period: float) -> list[float]:
        return [at + (0.0005 if n % 2 else 0.0) for n, at in enumerate(steady(period))]

    # On 10 ms heartbeats that is 0.6 ms: more than 5% of the period, within the default 10%.
    assert fed(jittery(0.01), share=0.05).window() is None
    assert fed(jittery(0.01)).window() is not None
    # On 1 s heartbeats it is well within any share.
    window = fed(jittery(1.0), share=0.05).window()
    assert window is not None
    assert window[1] - window[0] == pytest.approx(0.0005 + 2 * MIN_LEAD, rel=0.05)


def test_a_late_request_now_and_then_leaves_the_window_where_the_others_come() -> None:
    times = steady(0.01)
    times[10] += 0.004  # one request 4 ms late, one in 32: beyond the quantile the window spans
    window = fed(times).window()
    assert window is not None and window[1] - window[0] < 0.001


def test_a_lost_request_leaves_a_gap_not_a_wrong_period() -> None:
    times = steady(0.01, ARRIVALS + 1)
    del times[12]  # this heartbeat never came
    window = fed(times).window()
    assert window is not None
    expected = 100.0 + 0.01 * (ARRIVALS + 1)
    assert window[0] < expected < window[1]


def test_a_send_late_by_more_than_a_period_then_one_on_time_keeps_the_period() -> None:
    times = steady(0.01, ARRIVALS + 1)
    times[12] += 0.0105  # so late that it comes just after the next one was due
    del times[13]  # ... which the prober sent right after it, on time: 0.5 ms apart
    window = fed(times).window()
    assert window is not None
    assert window.opens < 100.0 + 0.01 * (ARRIVALS + 1) < window.closes


def test_interleaved_probers_and_random_arrivals_keep_no_period() -> None:
    # Two probers at 10 ms, 3 ms out of phase: two arrivals in each period.
    two = sorted(steady(0.01, ARRIVALS // 2) + steady(0.01, ARRIVALS // 2, start=100.003))
    assert fed(two).window() is None
    scattered = [100.0 + 0.01 * n + 0.007 * ((n * 7919) % 13) / 13 for n in range(ARRIVALS)]
    assert fed(scattered).window() is None


def test_forget_starts_again_and_an_arrival_not_after_the_last_is_ignored() -> None:
    cadence = fed(steady(0.01))
    cadence.forget()
    assert cadence.window() is None
    cadence = fed(steady(0.01))
    cadence.arrived(100.0)  # not after the newest: a clock that went back, ignored
    assert cadence.window() == fed(steady(0.01)).window()


def test_the_wake_lead_learns_the_timer_overshoot_within_its_bounds() -> None:
    window = Window(opens=10.0, closes=10.0004, period=0.01)
    lead = WakeLead()
    assert lead.lead(window, 0.5) == pytest.approx(2 * FIRST_LEAD)
    for _ in range(100):
        lead.sample(0.0001)  # this host's timers run 0.1 ms late
    assert lead.lead(window, 0.5) == pytest.approx(0.0002, rel=0.01)
    # One stall of the whole host is not a timer's lateness: a sample counts at most MAX_LEAD.
    lead.sample(2.0)
    assert lead.lead(window, 0.5) <= 2 * (0.0001 + MAX_LEAD / 8)
    # The polling stays within the share: here 5% of 10 ms, less the window's 0.4 ms.
    assert lead.lead(window, 0.05) == pytest.approx(0.0001)
    assert lead.lead(window, 0.01) == 0.0  # the window alone takes more than the share
    lead.sample(-1.0)  # a clock that says the sleep ended early: no lateness
    assert lead.lead(window, 0.5) >= 0.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"share": 0.0}, "share"),
        ({"share": 1.0}, "share"),
        ({"min_lead": -1.0}, "least reach"),
        ({"arrivals": 3}, "4 arrivals"),
    ],
)
def test_bad_settings_are_config_errors(options: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Cadence(**options)  # type: ignore[arg-type]
