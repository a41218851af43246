"""The cadence of lone requests: a window for the next one only while they keep a period."""

from __future__ import annotations

import pytest

from udpbeat.cadence import GAPS, MIN_LEAD, Cadence
from udpbeat.errors import ConfigError


def fed(times: list[float], **options: float) -> Cadence:
    cadence = Cadence(**options)  # type: ignore[arg-type]
    for at in times:
        cadence.arrived(at)
    return cadence


def test_a_steady_period_gives_a_window_around_the_next_arrival() -> None:
    cadence = fed([100.0 + 0.01 * n for n in range(GAPS + 1)])
    window = cadence.window()
    assert window is not None
    opens, closes = window
    expected = 100.0 + 0.01 * (GAPS + 1)
    assert opens == pytest.approx(expected - MIN_LEAD) and closes == pytest.approx(
        expected + MIN_LEAD
    )


def test_no_window_before_enough_gaps_agree() -> None:
    assert fed([]).window() is None
    assert fed([0.01 * n for n in range(GAPS)]).window() is None  # GAPS - 1 gaps


def test_the_window_widens_with_the_jitter_and_closes_when_it_would_cost_too_much() -> None:
    # 10 ms heartbeats, each up to 0.5 ms late: reach 3 x 0.5 ms, the window 3 ms, 30% of the
    # period: more than the 5% share allows, so no window.
    jittery = [0.01 * n + (0.0005 if n % 2 else 0.0) for n in range(GAPS + 1)]
    assert fed(jittery).window() is None
    # The same jitter on 1 s heartbeats is well within the share.
    window = fed([1.0 * n + (0.0005 if n % 2 else 0.0) for n in range(GAPS + 1)]).window()
    assert window is not None and window[1] - window[0] == pytest.approx(0.003, rel=0.01)


def test_one_late_arrival_does_not_close_the_windows() -> None:
    times = [0.01 * n for n in range(GAPS + 1)]
    times[4] += 0.004  # one request 4 ms late: one gap 4 ms long, the next 4 ms short
    assert fed(times).window() is not None


def test_interleaved_probers_keep_no_period() -> None:
    # Two probers at 10 ms, 3 ms out of phase: gaps of 3 and 7 ms alternate.
    times = sorted([0.01 * n for n in range(6)] + [0.003 + 0.01 * n for n in range(6)])
    assert fed(times).window() is None


def test_forget_starts_again_and_time_going_backwards_is_ignored() -> None:
    cadence = fed([0.01 * n for n in range(GAPS + 1)])
    cadence.forget()
    assert cadence.window() is None
    cadence = fed([0.01 * n for n in range(GAPS + 1)] + [0.0])  # a step back: no gap from it
    assert cadence.window() is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"share": 0.0}, "share"),
        ({"share": 1.0}, "share"),
        ({"min_lead": -1.0}, "least reach"),
        ({"gaps": 2}, "3 gaps"),
    ],
)
def test_bad_settings_are_config_errors(options: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Cadence(**options)  # type: ignore[arg-type]
