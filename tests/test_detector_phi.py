"""The phi accrual detector on a fake clock: the phi function, its deadlines, every transition."""

from __future__ import annotations

import math
import random

import pytest

from udpbeat.detector import PhiDetector, State, Transition, deviations_for_phi, phi_of
from udpbeat.errors import ConfigError

RTT = 0.001


def test_phi_function_and_its_inverse() -> None:
    assert phi_of(0.0) == pytest.approx(math.log10(2))  # at the mean: P = 1/2
    values = [phi_of(y / 10) for y in range(-50, 200)]
    assert values == sorted(values) and all(math.isfinite(v) and v >= 0 for v in values)
    assert phi_of(100.0) > 1000  # no overflow far out
    for phi in (0.5, 1.0, 4.0, 8.0, 16.0, 100.0):
        assert phi_of(deviations_for_phi(phi)) == pytest.approx(phi, rel=1e-9)
    # Phi 8 is roughly five and a quarter standard deviations of silence past the mean.
    assert deviations_for_phi(8.0) == pytest.approx(5.22, abs=0.01)


class Clock:
    """Drives a phi detector as a session paced at one heartbeat a second would."""

    def __init__(self, detector: PhiDetector, interval: float = 1.0) -> None:
        self.detector = detector
        self.interval = interval
        self.now = 0.0
        self.seq = 0
        self.last_sent: float | None = None
        self.transitions: list[Transition] = []

    def heartbeat(self, *, answered: bool = True) -> Transition | None:
        self.seq += 1
        self.detector.on_sent(self.seq, self.now, probe=False)
        self.last_sent = self.now
        if not answered:
            return None
        return self._keep(self.detector.on_reply(self.seq, RTT, self.now + RTT))

    def advance_to_check(self) -> Transition | None:
        """Keep sending unanswered heartbeats until the detector changes its mind."""
        for _ in range(1000):
            at = self.detector.check_at()
            assert self.last_sent is not None
            next_send = self.last_sent + self.interval
            if at is not None and at <= next_send:
                self.now = max(self.now, at)
                return self._keep(self.detector.check(self.now))
            self.now = next_send
            transition = self._keep(self.detector.check(self.now))
            if transition is not None:
                return transition
            self.heartbeat(answered=False)
        raise AssertionError("the detector never changed its state")

    def _keep(self, transition: Transition | None) -> Transition | None:
        if transition is not None:
            self.transitions.append(transition)
        return transition

    def regular(self, count: int) -> None:
        for _ in range(count):
            self.heartbeat()
            self.now += self.interval


def test_before_anything_is_sent_there_is_nothing_to_check() -> None:
    detector = PhiDetector()
    assert detector.state is State.UNKNOWN
    assert detector.check_at() is None and detector.check(100.0) is None
    assert detector.phi(100.0) == 0.0
    assert detector.probe_at() is None and detector.reply_timeout() == 1.0


def test_never_answered_uses_the_first_heartbeat_estimate() -> None:
    clock = Clock(PhiDetector(first_heartbeat_estimate=1.0))
    clock.heartbeat(answered=False)
    std = 0.25  # Akka seeds the history with the estimate plus and minus a quarter of it
    suspect = clock.advance_to_check()
    assert suspect is not None and (suspect.old, suspect.new) == (State.UNKNOWN, State.SUSPECT)
    assert suspect.at == pytest.approx(1.0 + deviations_for_phi(4.0) * std)
    down = clock.advance_to_check()
    assert down is not None and (down.old, down.new) == (State.SUSPECT, State.DOWN)
    assert down.at == pytest.approx(1.0 + deviations_for_phi(8.0) * std)
    assert down.evidence["phi"] >= 8.0


def test_regular_replies_then_silence_up_suspect_down_up() -> None:
    clock = Clock(PhiDetector())
    clock.regular(100)
    detector = clock.detector
    assert detector.state is State.UP
    assert detector.mean_interval() == pytest.approx(1.0, abs=0.01)
    assert detector.std_deviation() == detector.min_std_deviation  # steady: the floor
    last = clock.now - 1.0 + RTT
    clock.heartbeat(answered=False)
    assert detector.check_at() == pytest.approx(
        last + detector.mean_interval() + deviations_for_phi(4.0) * 0.1
    )
    clock.now = detector.check_at() - 1e-6  # type: ignore[operator]
    assert detector.check(clock.now) is None and detector.phi(clock.now) < 4.0

    suspect = clock.advance_to_check()
    assert suspect is not None and (suspect.old, suspect.new) == (State.UP, State.SUSPECT)
    assert suspect.evidence["phi"] == pytest.approx(4.0, abs=1e-3)
    assert suspect.evidence["silence"] == pytest.approx(clock.now - last)
    down = clock.advance_to_check()
    assert down is not None and (down.old, down.new) == (State.SUSPECT, State.DOWN)
    assert detector.check_at() is None and detector.check(clock.now + 100) is None

    clock.now += 30.0
    up = clock.heartbeat()
    assert up is not None and (up.old, up.new) == (State.DOWN, State.UP)
    assert detector.std_deviation() > 0.5  # the long gap is learnt: warier from now on


def test_reply_during_suspect_is_learnt_and_means_up() -> None:
    clock = Clock(PhiDetector())
    clock.regular(50)
    clock.advance_to_check()
    assert clock.detector.state is State.SUSPECT
    count = len(clock.detector._intervals)
    up = clock.heartbeat()
    assert up is not None and (up.old, up.new) == (State.SUSPECT, State.UP)
    assert len(clock.detector._intervals) == count + 1


def test_late_reply_during_suspect_means_up() -> None:
    clock = Clock(PhiDetector())
    clock.regular(50)
    clock.advance_to_check()
    late = clock.detector.on_late(49, 1.5, clock.now)
    assert late is not None and (late.old, late.new, late.reason) == (
        State.SUSPECT,
        State.UP,
        "late reply",
    )


def test_late_reply_while_down_counts_only_if_sent_after_the_verdict() -> None:
    clock = Clock(PhiDetector())
    clock.regular(50)
    clock.advance_to_check()
    clock.advance_to_check()
    detector = clock.detector
    assert detector.state is State.DOWN
    down_at = clock.now
    clock.now += 1.0
    assert detector.on_late(1, 2.0, clock.now) is None
    assert detector.on_late(2, math.nan, clock.now) is None
    up = detector.on_late(3, 0.5, clock.now)
    assert clock.now - 0.5 > down_at
    assert up is not None and up.new is State.UP


def test_misses_are_no_evidence_only_time_is() -> None:
    clock = Clock(PhiDetector())
    clock.regular(50)
    clock.heartbeat(answered=False)
    detector = clock.detector
    for seq in range(1000, 1010):
        assert detector.on_miss(seq, clock.now, "refused") is None
    assert detector.state is State.UP
    at = detector.check_at()
    assert at is not None
    transition = detector.on_miss(2000, at + 0.001, "timeout")
    assert transition is not None and transition.new is State.SUSPECT


def test_a_long_jump_in_time_goes_straight_from_up_to_down() -> None:
    clock = Clock(PhiDetector())
    clock.regular(10)
    clock.heartbeat(answered=False)
    transition = clock.detector.check(clock.now + 60.0)
    assert transition is not None and (transition.old, transition.new) == (State.UP, State.DOWN)


def test_acceptable_pause_delays_the_verdict_by_exactly_the_pause() -> None:
    plain, patient = Clock(PhiDetector()), Clock(PhiDetector(acceptable_pause=2.5))
    plain.regular(20)
    patient.regular(20)
    assert patient.detector._suspect_deadline == pytest.approx(
        plain.detector._suspect_deadline + 2.5
    )


def test_silence_counts_only_while_heartbeats_go_out() -> None:
    clock = Clock(PhiDetector())
    clock.regular(50)  # the run's last heartbeat is answered; nothing more is sent
    detector = clock.detector
    assert detector.check_at() is None
    assert detector.check(clock.now + 3600.0) is None
    assert detector.state is State.UP
    # The last heartbeat of a run is lost: silence counts one send gap past it, no further.
    last_arrival = clock.now - 1.0 + RTT
    clock.heartbeat(answered=False)
    horizon = clock.now + 1.0
    down = detector.check(clock.now + 3600.0)
    assert down is not None and down.new is State.DOWN
    assert down.evidence["silence"] == pytest.approx(horizon - last_arrival)


def test_a_lossy_path_widens_the_distribution_and_the_wait() -> None:
    rng = random.Random(3)
    clean, lossy = Clock(PhiDetector()), Clock(PhiDetector())
    clean.regular(300)
    for _ in range(300):
        lossy.heartbeat(answered=rng.random() >= 0.3)
        lossy.now += 1.0
        lossy.detector.check(lossy.now)
    assert lossy.detector.mean_interval() == pytest.approx(1 / 0.7, rel=0.15)
    assert lossy.detector.std_deviation() > 0.4
    clean_wait = clean.detector._down_deadline - clean.detector._last_arrival  # type: ignore[operator]
    lossy_wait = lossy.detector._down_deadline - lossy.detector._last_arrival  # type: ignore[operator]
    assert lossy_wait > 2 * clean_wait


def test_rtt_jump_shifts_one_arrival_and_the_detector_settles() -> None:
    clock = Clock(PhiDetector())
    clock.regular(100)
    detector = clock.detector
    # The RTT jumps by 300 ms: one interval is 1.3 s, then steady again at 1 s.
    clock.now += 0.3
    clock.regular(50)
    assert detector.state is State.UP
    assert all(t.new is State.UP for t in clock.transitions)
    assert detector.mean_interval() == pytest.approx(1.0, abs=0.01)


def test_learnt_window_is_bounded_and_its_sums_stay_exact() -> None:
    clock = Clock(PhiDetector(max_sample_size=10))
    rng = random.Random(5)
    for _ in range(1000):
        clock.heartbeat()
        clock.now += 0.5 + rng.random()
    detector = clock.detector
    intervals = list(detector._intervals)
    assert len(intervals) == 10
    mean = sum(intervals) / 10
    assert detector.mean_interval() == pytest.approx(mean, rel=1e-9)
    std = math.sqrt(sum((x - mean) ** 2 for x in intervals) / 10)
    assert detector.std_deviation() == pytest.approx(max(std, 0.1), rel=1e-6)


def test_describe_names_the_parameters() -> None:
    described = PhiDetector(2.0, threshold=10, acceptable_pause=1).describe()
    assert described["name"] == "phi" and described["timeout"] == 2.0
    assert described["threshold"] == 10.0 and described["suspect_threshold"] == 5.0
    assert described["acceptable_pause"] == 1.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"threshold": 0}, "phi-threshold"),
        ({"threshold": math.nan}, "phi-threshold"),
        ({"threshold": "high"}, "phi-threshold"),
        ({"threshold": 400}, "phi-threshold"),
        ({"suspect_threshold": 8.0}, "suspect-threshold"),
        ({"suspect_threshold": 0}, "suspect-threshold"),
        ({"min_std_deviation": 0}, "min-std-deviation"),
        ({"acceptable_pause": -1}, "acceptable-pause"),
        ({"acceptable_pause": math.inf}, "acceptable-pause"),
        ({"max_sample_size": 1}, "max-sample-size"),
        ({"first_heartbeat_estimate": 0}, "first-heartbeat-estimate"),
    ],
)
def test_bad_parameters_raise_config_error(params: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PhiDetector(1.0, **params)  # type: ignore[arg-type]
