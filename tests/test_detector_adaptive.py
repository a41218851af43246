"""The adaptive detector on a fake clock: every transition, its estimates, and through a session."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from udpbeat.detector import (
    AdaptiveDetector,
    LossHistory,
    RttEstimator,
    State,
    Transition,
    wilson_upper,
)
from udpbeat.detector.adaptive import COLD_BURST_LOSS
from udpbeat.errors import ConfigError
from udpbeat.events import Event, HeartbeatSent, StateChanged
from udpbeat.reflector import Reflector, ReflectorConfig
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.testing import SessionDriver

RTT = 0.001
FALSE_ALARM = 1e-9


def misses_needed(loss: float, burst_loss: float | None = None) -> int:
    """The smallest k with loss * burst_loss**(k-1) < FALSE_ALARM."""
    burst_loss = loss if burst_loss is None else burst_loss
    k = 1
    while loss * burst_loss ** (k - 1) >= FALSE_ALARM:
        k += 1
    return k


def needed_now(detector: AdaptiveDetector) -> int:
    return misses_needed(detector.loss_bound(), detector.burst_loss_bound())


class Driver:
    """Feeds a detector heartbeats on a fake clock, as a session would, one outcome at a time."""

    def __init__(self, detector: AdaptiveDetector) -> None:
        self.detector = detector
        self.now = 0.0
        self.seq = 0
        self.transitions: list[Transition] = []

    def send(self, *, probe: bool = False) -> int:
        self.seq += 1
        self.detector.on_sent(self.seq, self.now, probe=probe)
        return self.seq

    def reply(self, rtt: float = RTT) -> Transition | None:
        seq = self.send()
        self.now += rtt
        return self._keep(self.detector.on_reply(seq, rtt, self.now))

    def miss(self, reason: str = "timeout") -> Transition | None:
        seq = self.send()
        self.now += self.detector.reply_timeout()
        assert reason in ("timeout", "refused")
        return self._keep(self.detector.on_miss(seq, self.now, reason))  # type: ignore[arg-type]

    def verdict(self) -> Transition | None:
        """Wait for the verdict the misses so far are enough for: misses count once their
        requests are the detector's patience old (a delayed reply could end the run till then)."""
        at = self.detector.check_at()
        if at is None:
            return None
        self.now = max(self.now, at)
        return self._keep(self.detector.check(self.now))

    def settle(self) -> None:
        """Let a timeout pass (with a reply), so that ended runs join the history."""
        self.now += 1.0
        self.reply()

    def healthy(self, count: int, rtt: float = RTT) -> None:
        for _ in range(count):
            self.reply(rtt)
            self.now += 1.0

    def _keep(self, transition: Transition | None) -> Transition | None:
        if transition is not None:
            self.transitions.append(transition)
        return transition


# --- the estimates ---------------------------------------------------------------------------


def test_wilson_upper_bound_is_above_the_observed_rate_and_tightens_with_more_outcomes() -> None:
    assert wilson_upper(0, 0) == 1.0
    assert wilson_upper(10, 10) == 1.0
    for count in (10, 100, 1000, 10_000):
        assert wilson_upper(count * 3 // 10, count) > 0.3
    bounds = [wilson_upper(n * 3 // 10, n) for n in (10, 100, 1000, 10_000)]
    assert bounds == sorted(bounds, reverse=True)
    assert 0.3 < wilson_upper(3000, 10_000) < 0.32
    assert 0.0 < wilson_upper(0, 1000) < 0.01


def test_loss_history_forgets_the_oldest_outcomes() -> None:
    history = LossHistory(4)
    history.add_many(True, 4)
    assert (history.losses, history.count) == (4, 4)
    history.add(False)
    history.add(False)
    assert (history.losses, history.count) == (2, 4)
    history.add_many(False, 10)
    assert (history.losses, history.count) == (0, 4)


def test_loss_history_counts_what_follows_a_loss() -> None:
    history = LossHistory(6)
    for lost in (True, True, False, True, False, False):
        history.add(lost)
    assert (history.after_loss, history.losses_after_loss) == (3, 1)
    history.add(True)  # evicts the first loss and its pair (loss, loss)
    assert (history.after_loss, history.losses_after_loss) == (2, 0)
    history.add(True)  # evicts (loss, answered); adds (loss, loss)
    assert (history.after_loss, history.losses_after_loss) == (2, 1)
    rng = random.Random(1)
    outcomes = [rng.random() < 0.4 for _ in range(500)]
    ring = LossHistory(50)
    for lost in outcomes:
        ring.add(lost)
    window = outcomes[-50:]
    pairs = list(itertools.pairwise(window))
    assert ring.after_loss == sum(1 for a, _ in pairs if a)
    assert ring.losses_after_loss == sum(1 for a, b in pairs if a and b)
    assert ring.losses == sum(window)


def test_rtt_estimator_follows_rfc_6298() -> None:
    rtt = RttEstimator()
    assert rtt.rto() is None
    rtt.add(0.1)
    assert rtt.srtt == pytest.approx(0.1) and rtt.rttvar == pytest.approx(0.05)
    rtt.add(0.3)
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.2)
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.3)
    rtt.add(math.nan)
    assert rtt.samples == 2


def test_no_history_assumes_high_loss() -> None:
    detector = AdaptiveDetector()
    assert detector.loss_bound() == detector.max_loss
    assert detector.reply_timeout() == 1.0  # no RTT sample yet: the full timeout
    # Never answered: no reply can be overtaken, so probes may go at the fastest pace.
    assert detector.confirm_pace() == detector.min_confirm_interval
    assert detector.burst_loss_bound() == COLD_BURST_LOSS


def test_burst_loss_bound_tells_bursty_from_independent_loss() -> None:
    rng = random.Random(4)
    independent, bursty = AdaptiveDetector(), AdaptiveDetector()
    for _ in range(1000):
        independent.history.add(rng.random() < 0.3)
    bad = False
    for _ in range(1000):  # Gilbert-Elliott: bursts of mean length 3, 30 % loss overall
        bad = rng.random() < (2 / 3 if bad else 1 / 7)
        bursty.history.add(bad)
    assert independent.burst_loss_bound() == pytest.approx(independent.loss_bound(), abs=0.1)
    assert bursty.burst_loss_bound() > bursty.loss_bound() + 0.15
    assert needed_now(bursty) > needed_now(independent) + 10
    clean = AdaptiveDetector()
    clean.rtt.add(RTT)  # seen alive
    clean.history.add_many(False, 1000)
    assert clean.burst_loss_bound() == clean.max_loss  # long clean: the path hardly loses


def test_a_short_clean_history_is_not_trusted_like_a_long_one() -> None:
    short, long = Driver(AdaptiveDetector()), Driver(AdaptiveDetector())
    short.healthy(3)
    long.healthy(1000)
    assert short.detector.loss_bound() == short.detector.max_loss
    assert long.detector.loss_bound() < 0.01


# --- transitions -----------------------------------------------------------------------------


def test_unknown_to_up_on_the_first_reply() -> None:
    driver = Driver(AdaptiveDetector())
    assert driver.detector.state is State.UNKNOWN
    transition = driver.reply()
    assert transition is not None
    assert (transition.old, transition.new, transition.reason) == (State.UNKNOWN, State.UP, "reply")


def test_never_answered_goes_down_only_after_the_no_history_number_of_misses() -> None:
    driver = Driver(AdaptiveDetector())
    needed = misses_needed(0.6, COLD_BURST_LOSS)
    assert needed == 193
    first = driver.miss()
    assert first is not None and (first.old, first.new) == (State.UNKNOWN, State.SUSPECT)
    assert first.evidence["loss"] == 0.6
    for _ in range(needed - 2):
        assert driver.miss() is None
        assert driver.detector.state is State.SUSPECT
    down = driver.miss()
    assert down is not None and (down.old, down.new) == (State.SUSPECT, State.DOWN)
    assert down.evidence["misses"] == needed
    assert down.evidence["probability"] < FALSE_ALARM
    assert down.reason == f"{needed} misses in a row"
    # Nothing was measured: the evidence says so, so the 60 % reads as assumed.
    assert (first.evidence["history"], down.evidence["history"]) == (0, 0)


def test_all_lost_history_is_capped_so_a_verdict_stays_reachable() -> None:
    driver = Driver(AdaptiveDetector())
    driver.detector.history.add_many(True, 500)
    detector = driver.detector
    assert detector.loss_bound() == detector.max_loss
    # Every loss followed by a loss: the chance of the next is capped below 1, so enough
    # misses still make a verdict (many more than with no history: the history says bursts).
    assert detector.burst_loss_bound() == detector.max_burst_loss == 0.99
    needed = misses_needed(0.6, 0.99)
    assert needed > 2000
    for _ in range(needed):
        driver.miss()
    driver.verdict()
    assert driver.detector.state is State.DOWN


def test_healthy_path_up_suspect_down_up_with_evidence_and_fast_probes() -> None:
    driver = Driver(AdaptiveDetector())
    driver.healthy(1000)
    driver.settle()  # the last outcomes join the history a timeout after they left
    detector = driver.detector
    assert detector.state is State.UP
    assert detector.reply_timeout() == detector.min_timeout  # 1 ms RTT: the floor
    assert detector.probe_at() is None
    loss, burst_loss = detector.loss_bound(), detector.burst_loss_bound()
    needed = needed_now(detector)

    suspect = driver.miss()
    assert suspect is not None and (suspect.old, suspect.new) == (State.UP, State.SUSPECT)
    assert suspect.evidence["misses"] == 1
    assert (suspect.evidence["history"], suspect.evidence["history_losses"]) == (1000, 0)
    assert suspect.evidence["loss"] == pytest.approx(loss, abs=1e-6)
    assert suspect.evidence["burst_loss"] == pytest.approx(burst_loss, abs=1e-6)
    assert suspect.evidence["probability"] == pytest.approx(loss)
    probe_at = detector.probe_at()
    assert probe_at is not None and probe_at <= driver.now  # a probe is due at once
    assert detector.confirm_pace() == detector.min_confirm_interval

    for _ in range(needed - 1):
        driver.now = max(driver.now, detector.probe_at() or driver.now)
        assert driver.miss() is None
    # Enough misses, but the newest must be the detector's patience old before it counts: a
    # reply delayed by a jump in RTT could still come. No more probes meanwhile.
    last_sent = driver.now - detector.reply_timeout()
    assert detector.check_at() == pytest.approx(last_sent + detector.patience())
    assert detector.probe_at() is None
    assert detector.check(driver.now) is None
    down = driver.verdict()
    assert down is not None and (down.old, down.new) == (State.SUSPECT, State.DOWN)
    assert down.evidence["misses"] == needed
    assert down.evidence["probability"] < FALSE_ALARM <= loss * burst_loss ** (needed - 2)
    assert detector.probe_at() is None  # the verdict is reached: no more probes
    assert driver.miss() is None and detector.state is State.DOWN

    up = driver.reply()
    assert up is not None and (up.old, up.new, up.reason) == (State.DOWN, State.UP, "reply")


def test_reply_during_suspect_ends_the_run_and_counts_its_misses_as_path_loss() -> None:
    driver = Driver(AdaptiveDetector())
    driver.healthy(200)
    before = driver.detector.history.losses
    driver.miss()
    driver.miss()
    up = driver.reply()
    assert up is not None and (up.old, up.new) == (State.SUSPECT, State.UP)
    assert up.evidence["misses"] == 2
    # The run joins the history once no late reply to its misses can come any more.
    assert driver.detector.history.losses == before
    driver.settle()
    assert driver.detector.history.losses == before + 2


def test_a_run_that_ends_down_is_not_counted_as_path_loss() -> None:
    # Outcomes join the history a timeout after they left: with a 5 s timeout every miss of
    # this run (50 ms apart) is still waiting when the verdict leaves them all out. (Of a run
    # spread over more than a timeout, the misses older than a timeout at the verdict have
    # joined as path losses: docs/detectors.md says so.)
    driver = Driver(AdaptiveDetector(5.0))
    driver.healthy(1010)  # a whole clean history: 60 % assumed, about 40 misses make DOWN
    bound = driver.detector.loss_bound()
    while driver.detector.state is not State.DOWN:
        driver.miss()
        driver.verdict()
    driver.reply()
    driver.now += 5.0
    driver.reply()
    assert driver.detector.history.losses == 0
    assert driver.detector.loss_bound() <= bound


def test_burst_of_loss_on_a_healthy_path_recovers_and_makes_the_detector_warier() -> None:
    driver = Driver(AdaptiveDetector())
    driver.healthy(200)
    detector = driver.detector
    needed_before = needed_now(detector)
    burst = needed_before - 1
    for _ in range(burst):
        driver.miss()
    assert detector.state is State.SUSPECT  # a burst shorter than the evidence needed
    assert detector.check_at() is None
    driver.reply()
    assert detector.state is State.UP
    driver.settle()
    assert needed_now(detector) > needed_before
    # The same burst again is still not enough.
    for _ in range(burst):
        driver.miss()
    assert detector.state is State.SUSPECT


def test_late_reply_during_suspect_is_evidence_of_life() -> None:
    driver = Driver(AdaptiveDetector())
    driver.healthy(100)
    detector = driver.detector
    seq = driver.send()
    driver.now += detector.reply_timeout()
    detector.on_miss(seq, driver.now, "timeout")
    assert detector.state is State.SUSPECT
    driver.now += 0.2
    late = detector.on_late(seq, 0.25, driver.now)
    # Within the 1 s timeout: a slow reply (the session counts it received), not a late one.
    assert late is not None and (late.old, late.new, late.reason) == (
        State.SUSPECT,
        State.UP,
        "slow reply",
    )
    assert late.evidence["misses"] == 1
    assert detector.reply_timeout() > 0.25  # the late sample raised the timeout
    seq = driver.send()
    driver.now += detector.reply_timeout()
    detector.on_miss(seq, driver.now, "timeout")
    driver.now += 1.0
    after_timeout = detector.on_late(seq, 1.3, driver.now)
    assert after_timeout is not None and after_timeout.reason == "late reply"


def test_late_reply_while_down_counts_only_if_sent_after_the_verdict() -> None:
    driver = Driver(AdaptiveDetector())
    driver.healthy(100)
    detector = driver.detector
    while detector.state is not State.DOWN:
        driver.miss()
        driver.verdict()
    down_at = driver.now
    driver.now += 0.5
    assert detector.on_late(1, 0.6, driver.now) is None  # sent before the verdict: old news
    assert detector.on_late(2, math.nan, driver.now) is None  # age unknown
    assert detector.state is State.DOWN
    up = detector.on_late(3, 0.4, driver.now)  # sent at down_at + 0.1: alive after the verdict
    assert driver.now - 0.4 > down_at
    assert up is not None and (up.old, up.new) == (State.DOWN, State.UP)


def test_late_reply_before_any_answer_means_up_only_if_its_age_is_known() -> None:
    detector = AdaptiveDetector()
    detector.on_sent(1, 0.0, probe=False)
    detector.on_sent(2, 0.5, probe=False)
    detector.on_miss(1, 1.0, "timeout")
    detector.on_miss(2, 1.5, "timeout")
    assert detector.state is State.SUSPECT
    # A reply whose heartbeat was forgotten could be from any time: old news in every state.
    assert detector.on_late(1, math.nan, 1.6) is None
    assert detector.state is State.SUSPECT
    up = detector.on_late(2, 1.1, 1.6)
    assert up is not None and (up.old, up.new) == (State.SUSPECT, State.UP)
    assert up.evidence["rtt"] == 1.1


def test_rtt_jump_raises_the_timeout_within_the_bound() -> None:
    driver = Driver(AdaptiveDetector(timeout=1.0))
    driver.healthy(100, rtt=0.001)
    detector = driver.detector
    assert detector.reply_timeout() == detector.min_timeout
    driver.healthy(20, rtt=0.2)
    assert 0.2 <= detector.reply_timeout() <= 1.0
    assert detector.confirm_pace() == detector.confirm_interval  # slow path: the pace bound
    driver.healthy(5, rtt=3.0)
    assert detector.reply_timeout() == 1.0
    driver.healthy(200, rtt=0.001)
    assert detector.reply_timeout() == detector.min_timeout


def test_a_lost_heartbeat_older_than_an_answered_one_does_not_raise_suspicion() -> None:
    driver = Driver(AdaptiveDetector())
    driver.healthy(50)
    detector = driver.detector
    old = driver.send(probe=True)
    driver.reply()
    driver.now += 0.05
    losses = detector.history.losses
    assert detector.on_miss(old, driver.now, "timeout") is None
    assert detector.state is State.UP
    driver.settle()
    assert detector.history.losses == losses + 1


def test_one_refusal_counts_as_an_ordinary_miss_several_are_strong_evidence() -> None:
    driver = Driver(AdaptiveDetector())
    driver.healthy(1000)
    driver.settle()
    detector = driver.detector
    loss = detector.loss_bound()
    first = driver.miss("refused")
    assert first is not None and first.new is State.SUSPECT
    assert first.evidence["probability"] == pytest.approx(loss)
    assert first.evidence["refused"] == 1
    assert driver.miss("refused") is None  # 1e-8: not yet below 1e-9
    third = driver.miss("refused")
    assert third is not None and third.new is State.DOWN
    assert third.evidence["misses"] == 3 < needed_now(detector)


def test_a_single_refusal_is_never_a_verdict_even_with_a_loose_false_alarm_budget() -> None:
    detector = AdaptiveDetector(false_alarm=0.5, max_loss=0.6)
    detector.on_sent(1, 0.0, probe=False)
    transition = detector.on_miss(1, 0.1, "refused")
    assert transition is not None and transition.new is State.SUSPECT


def test_probes_stop_once_enough_are_in_flight() -> None:
    detector = AdaptiveDetector()
    detector.on_sent(1, 0.0, probe=False)
    # Never answered: 60 % loss and the cold prior at every spacing, so at the fastest pace
    # each further miss weighs COLD_BURST_LOSS.
    detector.on_miss(1, 1.0, "timeout")
    pace = detector.min_confirm_interval
    assert detector.probe_at() == pytest.approx(0.0 + pace)
    wanted = misses_needed(0.6, COLD_BURST_LOSS) - 1
    for seq in range(2, wanted + 1):
        detector.on_sent(seq, 1.0 + seq * pace, probe=True)
    assert detector.probe_at() is not None
    detector.on_sent(wanted + 1, 1.0 + (wanted + 1) * pace, probe=True)
    assert detector.probe_at() is None  # enough in flight: their misses would settle it


def test_describe_names_the_parameters() -> None:
    described = AdaptiveDetector(0.5, false_alarm=1e-6).describe()
    assert described["name"] == "adaptive"
    assert described["timeout"] == 0.5 and described["false_alarm"] == 1e-6


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"false_alarm": 0.0}, "false-alarm"),
        ({"false_alarm": 1.0}, "false-alarm"),
        ({"false_alarm": math.nan}, "false-alarm"),
        ({"false_alarm": "tiny"}, "false-alarm"),
        ({"confirm_interval": 0.0}, "confirm-interval"),
        ({"confirm_interval": math.inf}, "confirm-interval"),
        ({"min_confirm_interval": -1.0}, "min-confirm-interval"),
        ({"min_confirm_interval": 0.1, "confirm_interval": 0.05}, "at least min-confirm-interval"),
        ({"max_loss": 1.0}, "max-loss"),
        ({"history": 0}, "history"),
        ({"history": True}, "history"),
        ({"min_timeout": 0}, "min-timeout"),
    ],
)
def test_bad_parameters_raise_config_error(params: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AdaptiveDetector(1.0, **params)  # type: ignore[arg-type]


# --- through a ProbeSession on a fake clock ---------------------------------------------------


def drive(
    config: ProbeConfig,
    rng: random.Random,
    *,
    loss: float,
    until: float,
    stop_at: float = math.inf,
) -> tuple[ProbeSession, list[Event]]:
    """Run a session with ``config`` against a simulated reflector until ``until``.

    Each request is lost with probability ``loss``; the reflector answers after ``RTT`` until
    it stops at ``stop_at``. Returns the session and every event.
    """
    driver = SessionDriver(
        config,
        detector=AdaptiveDetector(1.0),
        start=0.0,
        reflector=Reflector(ReflectorConfig(rate_limit=0, log_events=False)),
        rtt=RTT,
        lost=lambda: rng.random() < loss,
    )
    if stop_at < until:
        driver.advance(stop_at - RTT / 2)  # requests reaching it from then on go unanswered
        driver.silence()
    driver.run(limit=until)
    return driver.session, driver.log


def test_session_confirms_a_stop_with_fast_probes_and_stops_probing_once_down() -> None:
    config = ProbeConfig(count=None, interval=1.0, timeout=1.0, watch=True)
    # A whole history in (before it, the cold start's caution: docs/detectors.md).
    stop_at = 1000.5
    _, events = drive(config, random.Random(7), loss=0.0, until=1020.0, stop_at=stop_at)
    changes = [e.transition for e in events if isinstance(e, StateChanged)]
    assert [t.new for t in changes] == [State.UP, State.SUSPECT, State.DOWN]
    suspect_at, down_at = changes[1].at, changes[2].at
    assert stop_at < suspect_at < down_at <= stop_at + 1.5
    probes = [e for e in events if isinstance(e, HeartbeatSent) and e.probe]
    assert probes and all(suspect_at <= p.at < down_at for p in probes)
    assert len(probes) >= 2
    regular_after_down = [
        e for e in events if isinstance(e, HeartbeatSent) and e.at > down_at and not e.probe
    ]
    assert len(regular_after_down) >= 15  # watching goes on at the regular pace only


def test_session_stays_up_through_random_30_percent_loss() -> None:
    heartbeats = 20_000
    config = ProbeConfig(count=heartbeats, interval=1.0, timeout=1.0, watch=True)
    session, _ = drive(config, random.Random(2026), loss=0.3, until=math.inf)
    report = session.report()
    assert session.finished
    assert report.sent - report.probes == heartbeats
    news = [t.new for t in report.transitions]
    assert State.DOWN not in news
    assert news.count(State.SUSPECT) > 0.25 * heartbeats  # it did suspect, and recovered
    assert report.probes / heartbeats <= 0.5
