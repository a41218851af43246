"""Any sequence of inputs, to any detector, keeps the shared state machine valid (hypothesis).

Also the interface every detector shares: choosing one by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from udpbeat.cli import main
from udpbeat.cli.client import choose_detector
from udpbeat.detector import (
    DETECTORS,
    AdaptiveDetector,
    ConsecutiveDetector,
    Detector,
    PhiDetector,
    State,
    Transition,
    make_detector,
)
from udpbeat.errors import ConfigError
from udpbeat.session import ProbeConfig

TIMEOUT = 1.0

#: Every move the machine may make. Nothing leaves DOWN but a sign of life, nothing returns to
#: UNKNOWN, and a suspicion never follows a verdict.
ALLOWED = {
    (State.UNKNOWN, State.UP),
    (State.UNKNOWN, State.SUSPECT),
    (State.UNKNOWN, State.DOWN),
    (State.UP, State.SUSPECT),
    (State.UP, State.DOWN),
    (State.SUSPECT, State.UP),
    (State.SUSPECT, State.DOWN),
    (State.DOWN, State.UP),
}

FACTORIES: dict[str, Callable[[], Detector]] = {
    "consecutive": lambda: ConsecutiveDetector(3, TIMEOUT),
    "consecutive-1": lambda: ConsecutiveDetector(1, TIMEOUT),
    "adaptive": lambda: AdaptiveDetector(TIMEOUT),
    "adaptive-loose": lambda: AdaptiveDetector(TIMEOUT, false_alarm=1e-2, history=8),
    "phi": lambda: PhiDetector(TIMEOUT),
    "phi-paused": lambda: PhiDetector(TIMEOUT, threshold=3, acceptable_pause=0.5),
}

delays = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)
rtts = st.one_of(st.floats(min_value=0.0, max_value=5.0), st.just(math.nan))


class DetectorMachine(RuleBasedStateMachine):
    """Random inputs, including ones a session would never give (unknown or repeated seqs)."""

    factory: Callable[[], Detector]

    def __init__(self) -> None:
        super().__init__()
        self.detector = type(self).factory()
        self.now = 0.0
        self.next_seq = 1
        self.in_flight: list[int] = []
        self.history: list[Transition] = []

    @initialize()
    def starts_unknown(self) -> None:
        assert self.detector.state is State.UNKNOWN

    # -- inputs -------------------------------------------------------------------------------

    @rule(delay=delays)
    def time_passes(self, delay: float) -> None:
        self.now += delay

    @rule(probe=st.booleans())
    def send(self, probe: bool) -> None:
        self.detector.on_sent(self.next_seq, self.now, probe=probe)
        self.in_flight.append(self.next_seq)
        self.next_seq += 1

    @precondition(lambda self: self.detector.probe_at() is not None)
    @rule()
    def send_the_probe_asked_for(self) -> None:
        at = self.detector.probe_at()
        assert at is not None
        self.now = max(self.now, at)
        self.send(True)

    @rule(pick=st.integers(min_value=0), rtt=st.floats(min_value=0.0, max_value=TIMEOUT))
    def reply(self, pick: int, rtt: float) -> None:
        seq = self._take(pick)
        self._apply(self.detector.on_reply(seq, rtt, self.now), "reply")

    @rule(pick=st.integers(min_value=0), reason=st.sampled_from(["timeout", "refused"]))
    def miss(self, pick: int, reason: str) -> None:
        seq = self._take(pick)
        transition = self.detector.on_miss(seq, self.now, reason)  # type: ignore[arg-type]
        self._apply(transition, "miss")

    @rule(seq=st.integers(min_value=0, max_value=200), rtt=rtts)
    def late(self, seq: int, rtt: float) -> None:
        # The one rule for late replies: one of unknown age is old news in every state, and
        # while DOWN so is one whose heartbeat left before the verdict.
        down = self.detector.state is State.DOWN
        old_news = math.isnan(rtt) or (down and self.now - rtt < self.history[-1].at)
        transition = self.detector.on_late(seq, rtt, self.now)
        if old_news:
            assert transition is None
        self._apply(transition, "late")

    @rule()
    def check(self) -> None:
        self._apply(self.detector.check(self.now), "check")

    @precondition(lambda self: self.detector.check_at() is not None)
    @rule()
    def wake_when_asked(self) -> None:
        at = self.detector.check_at()
        assert at is not None
        self.now = max(self.now, at)
        self._apply(self.detector.check(self.now), "check")

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def state_is_a_state(self) -> None:
        assert isinstance(self.detector.state, State)

    @invariant()
    def reply_timeout_is_bounded(self) -> None:
        assert 0 < self.detector.reply_timeout() <= TIMEOUT

    @invariant()
    def probes_only_while_suspect(self) -> None:
        at = self.detector.probe_at()
        if at is not None:
            assert self.detector.state is State.SUSPECT
            assert math.isfinite(at)

    @invariant()
    def nothing_to_check_when_down(self) -> None:
        at = self.detector.check_at()
        if self.detector.state is State.DOWN:
            assert at is None
        assert at is None or not math.isnan(at)

    @invariant()
    def the_report_is_json(self) -> None:
        described = self.detector.describe()
        assert described["name"] in DETECTORS
        json.dumps(described, allow_nan=False)

    # -- helpers ------------------------------------------------------------------------------

    def _take(self, pick: int) -> int:
        """A heartbeat in flight if there is one, else a sequence number never sent."""
        if self.in_flight:
            return self.in_flight.pop(pick % len(self.in_flight))
        return self.next_seq + pick % 5

    def _apply(self, transition: Transition | None, cause: str) -> None:
        state = self.detector.state
        if transition is None:
            if self.history:
                assert state is self.history[-1].new  # no silent change of state
            else:
                assert state is State.UNKNOWN
            return
        previous = self.history[-1].new if self.history else State.UNKNOWN
        assert transition.old is previous
        assert transition.new is state
        assert (transition.old, transition.new) in ALLOWED
        assert transition.at == self.now
        assert transition.reason
        json.dumps(transition.to_dict(), allow_nan=False)  # evidence is plain, finite data
        if transition.new is State.UP:
            assert cause in ("reply", "late")  # only a sign of life means UP
        else:
            assert cause in ("miss", "check")
        if transition.new is State.DOWN:
            self._check_verdict(transition)
        self.history.append(transition)

    def _check_verdict(self, transition: Transition) -> None:
        detector, evidence = self.detector, transition.evidence
        if isinstance(detector, AdaptiveDetector):
            assert float(evidence["probability"]) < detector.false_alarm
            assert int(evidence["misses"]) >= 1
            assert detector.probe_at() is None
        elif isinstance(detector, ConsecutiveDetector):
            assert int(evidence["misses"]) >= detector.max_misses
        elif isinstance(detector, PhiDetector):
            assert float(evidence["phi"]) >= detector.threshold - 1e-3


def _machine_test(name: str) -> type:
    machine = type(f"{name.title().replace('-', '')}Machine", (DetectorMachine,), {})
    machine.factory = staticmethod(FACTORIES[name])  # type: ignore[attr-defined]
    machine.TestCase.settings = settings(
        max_examples=20,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return machine.TestCase


TestConsecutiveMachine = _machine_test("consecutive")
TestConsecutiveOneMissMachine = _machine_test("consecutive-1")
TestAdaptiveMachine = _machine_test("adaptive")
TestAdaptiveLooseMachine = _machine_test("adaptive-loose")
TestPhiMachine = _machine_test("phi")
TestPhiPausedMachine = _machine_test("phi-paused")


# --- choosing a detector by name -------------------------------------------------------------


def test_every_detector_is_known_by_its_name() -> None:
    assert set(DETECTORS) == {"adaptive", "consecutive", "phi"}
    for name, cls in DETECTORS.items():
        detector = make_detector(name, 0.5)
        assert type(detector) is cls and detector.name == name
        assert detector.describe()["timeout"] == 0.5


def test_make_detector_passes_parameters() -> None:
    detector = make_detector("adaptive", 2.0, false_alarm=1e-6, confirm_interval=0.1)
    assert isinstance(detector, AdaptiveDetector)
    assert (detector.false_alarm, detector.confirm_interval) == (1e-6, 0.1)
    consecutive = make_detector("consecutive", 1.0, max_misses=5)
    assert isinstance(consecutive, ConsecutiveDetector) and consecutive.max_misses == 5
    phi = make_detector("phi", 1.0, threshold=12, acceptable_pause=1)
    assert isinstance(phi, PhiDetector) and phi.threshold == 12.0


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("gossip", {}, "unknown detector 'gossip'; choose one of: adaptive, consecutive, phi"),
        ("phi", {"max_misses": 3}, "detector 'phi' has no parameter 'max_misses'"),
        ("consecutive", {"threshold": 8}, "it takes: max_misses"),
        ("adaptive", {"false_alarm": 2}, "false-alarm must be"),
    ],
)
def test_make_detector_rejects_bad_names_and_parameters(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_detector(name, 1.0, **params)


def test_make_detector_rejects_a_bad_timeout() -> None:
    for name in DETECTORS:
        with pytest.raises(ConfigError, match="timeout"):
            make_detector(name, 0.0)


# --- choosing a detector from the command line -----------------------------------------------


def chosen(name: str | None, timeout: float, interval: float, **options: float) -> Detector:
    """The detector a client run with these flags builds (its ProbeConfig builds it)."""
    detector, detector_options = choose_detector(name, **options)
    config = ProbeConfig(
        timeout=timeout, interval=interval, detector=detector, detector_options=detector_options
    )
    return config.build_detector()


def test_client_flags_choose_the_detector() -> None:
    assert choose_detector(None) == ("adaptive", {})
    assert choose_detector(None, max_misses=5, threshold=None) == ("consecutive", {"max_misses": 5})
    assert isinstance(chosen(None, 1.0, 1.0), AdaptiveDetector)
    only_misses = chosen(None, 1.0, 1.0, max_misses=5)
    assert isinstance(only_misses, ConsecutiveDetector) and only_misses.max_misses == 5
    adaptive = chosen("adaptive", 2.0, 1.0, false_alarm=1e-6, confirm_interval=0.2)
    assert isinstance(adaptive, AdaptiveDetector)
    assert (adaptive.false_alarm, adaptive.confirm_interval) == (1e-6, 0.2)
    phi = chosen("phi", 1.0, 0.25, threshold=10.0, acceptable_pause=0.5)
    assert isinstance(phi, PhiDetector)
    assert (phi.threshold, phi.acceptable_pause) == (10.0, 0.5)
    assert phi.first_heartbeat_estimate == 0.25  # the interval is the best first guess


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detector", "adaptive", "--max-misses", "3"], "--max-misses applies to"),
        (["--phi-threshold", "9"], "not to adaptive (the default detector)"),
        (["--detector", "phi", "--false-alarm", "1e-3"], "--false-alarm applies to"),
        (["--detector", "consecutive", "--acceptable-pause", "1"], "--acceptable-pause"),
        (["--detector", "gossip"], "--detector"),
        (["--false-alarm", "1"], "--false-alarm"),
        (["--confirm-interval", "0.001"], "Invalid value for '--confirm-interval': 0.001"),
        (["--detector", "phi", "--phi-threshold", "500"], "phi-threshold must be"),
        (["--detector", "phi", "--min-std-deviation", "0"], "--min-std-deviation"),
    ],
)
def test_bad_detector_flags_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 9 on loopback is never contacted: the flags are rejected first.
    with pytest.raises(SystemExit) as exited:
        main(["client", "127.0.0.1", "--port", "9", "-c", "1", *args])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("udpbeat: error: ")
    assert message in lines[0]
