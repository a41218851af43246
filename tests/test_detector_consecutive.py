"""The exercise's rule: DOWN after N consecutive misses, any reply means UP."""

from __future__ import annotations

import pytest

from udpbeat.detector import ConsecutiveDetector, Detector, State, Transition
from udpbeat.errors import ConfigError


def moved(transition: Transition | None, old: State, new: State) -> Transition:
    assert transition is not None, f"expected {old} -> {new}, got no transition"
    assert (transition.old, transition.new) == (old, new)
    return transition


def test_it_is_a_detector_that_starts_unknown() -> None:
    detector = ConsecutiveDetector()
    assert isinstance(detector, Detector)
    assert detector.state is State.UNKNOWN
    assert detector.describe() == {"name": "consecutive", "timeout": 1.0, "max_misses": 3}
    assert detector.reply_timeout() == 1.0
    assert detector.probe_at() is None
    assert detector.check_at() is None
    assert detector.check(5.0) is None


def test_every_transition_of_the_state_machine() -> None:
    detector = ConsecutiveDetector(max_misses=3, timeout=0.5)

    up = moved(detector.on_reply(1, 0.002, now=1.0), State.UNKNOWN, State.UP)
    assert (up.at, up.reason, dict(up.evidence)) == (1.0, "reply", {"seq": 1, "rtt": 0.002})
    assert detector.on_reply(2, 0.003, now=2.0) is None  # UP stays UP silently

    suspect = moved(detector.on_miss(3, now=3.0, reason="timeout"), State.UP, State.SUSPECT)
    assert suspect.reason == "timeout"
    assert dict(suspect.evidence) == {"seq": 3, "misses": 1, "cause": "timeout"}
    assert detector.on_miss(4, now=4.0, reason="timeout") is None  # 2 of 3: still SUSPECT

    moved(detector.on_reply(5, 0.002, now=5.0), State.SUSPECT, State.UP)
    assert detector.misses == 0

    # The count restarted: three more misses are needed.
    moved(detector.on_miss(6, now=6.0, reason="timeout"), State.UP, State.SUSPECT)
    assert detector.on_miss(7, now=7.0, reason="timeout") is None
    down = moved(detector.on_miss(8, now=8.0, reason="timeout"), State.SUSPECT, State.DOWN)
    assert down.at == 8.0
    assert down.reason == "3 consecutive misses"
    assert dict(down.evidence) == {"seq": 8, "misses": 3, "cause": "timeout"}

    assert detector.on_miss(9, now=9.0, reason="timeout") is None  # DOWN stays DOWN
    assert detector.state is State.DOWN

    moved(detector.on_reply(10, 0.004, now=10.0), State.DOWN, State.UP)


def test_down_straight_from_unknown_when_nothing_ever_answers() -> None:
    detector = ConsecutiveDetector(max_misses=2)
    moved(detector.on_miss(1, now=1.0, reason="timeout"), State.UNKNOWN, State.SUSPECT)
    moved(detector.on_miss(2, now=2.0, reason="timeout"), State.SUSPECT, State.DOWN)


def test_one_miss_is_enough_when_max_misses_is_one() -> None:
    detector = ConsecutiveDetector(max_misses=1)
    detector.on_reply(1, 0.001, now=1.0)
    moved(detector.on_miss(2, now=2.0, reason="timeout"), State.UP, State.DOWN)


def test_refused_counts_as_a_miss_and_is_named_in_the_evidence() -> None:
    detector = ConsecutiveDetector(max_misses=3)
    detector.on_reply(1, 0.001, now=1.0)
    suspect = moved(detector.on_miss(2, now=2.0, reason="refused"), State.UP, State.SUSPECT)
    assert suspect.reason == "refused"
    assert detector.on_miss(3, now=3.0, reason="timeout") is None
    down = moved(detector.on_miss(4, now=4.0, reason="refused"), State.SUSPECT, State.DOWN)
    assert down.evidence["cause"] == "refused"
    assert detector.misses == 3


def test_a_late_reply_does_not_reset_the_count() -> None:
    detector = ConsecutiveDetector(max_misses=2)
    detector.on_miss(1, now=1.0, reason="timeout")
    assert detector.on_late(1, 1.5, now=1.5) is None
    moved(detector.on_miss(2, now=2.0, reason="timeout"), State.SUSPECT, State.DOWN)


@pytest.mark.parametrize("max_misses", [0, -1, 1.5, True, "3", None])
def test_bad_max_misses_is_a_config_error(max_misses: object) -> None:
    with pytest.raises(ConfigError, match="max-misses"):
        ConsecutiveDetector(max_misses=max_misses)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan")])
def test_bad_timeout_is_a_config_error(timeout: float) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        ConsecutiveDetector(timeout=timeout)


def test_transition_to_dict_is_plain_data() -> None:
    detector = ConsecutiveDetector()
    transition = detector.on_reply(1, 0.002, now=3.5)
    assert transition is not None
    assert transition.to_dict() == {
        "at": 3.5,
        "old": "UNKNOWN",
        "new": "UP",
        "reason": "reply",
        "evidence": {"seq": 1, "rtt": 0.002},
    }
