"""Issue 11, finished: the adaptive detector reads a run's chance of going on at its depth, keeps
its probes to a share of the heartbeats, and judges a target that never answered by its own rule.

Everything here runs on fake or virtual clocks, in well under a second per test.
"""

from __future__ import annotations

import math
import random

import pytest

from udpbeat.detector import AdaptiveDetector, LossHistory, State, wilson_upper
from udpbeat.detector.adaptive import (
    CLEAN_HISTORY,
    COLD_BURST_LOSS,
    COLD_SPAN,
    DEEP_ENOUGH,
    DEPTH_LEVELS,
    DEPTH_MEMORY,
    GAP_BINS,
    depth_level,
    gap_bin,
    goes_on_more,
)
from udpbeat.errors import ConfigError
from udpbeat.session import ProbeConfig
from udpbeat.simulate import Blackouts, DetectorSpec, PathConfig, Timing, run_healthy
from udpbeat.testing import SessionDriver

SPACING = 0.1  # seconds between the requests of the synthetic histories below
GAP = gap_bin(SPACING)


def _feed(history: LossHistory, runs: list[int], rng: random.Random) -> None:
    """Runs of losses of the given lengths, each followed by one to three answered requests,
    all ``SPACING`` apart."""
    at = 0.0
    for length in runs:
        for _ in range(length):
            at += SPACING
            history.add(True, at)
        for _ in range(rng.randint(1, 3)):
            at += SPACING
            history.add(False, at)


def _geometric(rng: random.Random, going_on: float) -> int:
    length = 1
    while rng.random() < going_on:
        length += 1
    return length


# --- the history per depth -----------------------------------------------------------------


def test_depth_levels_double() -> None:
    assert [depth_level(depth) for depth in (1, 2, 3, 4, 7, 8, 15, 16, 1000)] == [
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        3,
        3,
    ]
    assert DEPTH_LEVELS == 4


def test_history_counts_pairs_by_the_depth_of_their_first_loss() -> None:
    history = LossHistory(100)
    # A run of five then an answer: pairs after 1, 2, 3, 4 losses go on, after 5 it ends.
    for lost, at in zip([True] * 5 + [False], range(6), strict=True):
        history.add(lost, float(at))
    pairs = [sum(row) for row in history.remembered_by_depth]
    losses = [sum(row) for row in history.remembered_losses_by_depth]
    assert pairs == [1, 2, 2, 0]  # after depth 1; 2 and 3; 4 and 5
    assert losses == [1, 2, 1, 0]  # the pair after depth 5 ended the run
    assert history.remembered_by_depth[2][gap_bin(1.0)] == 2


def test_pairs_per_depth_outlive_the_window_and_fade_by_halves() -> None:
    history = LossHistory(4)
    for index in range(4 * DEPTH_MEMORY - 1):
        history.add(index % 2 == 0, float(index))
    # The window holds four outcomes, the depth counts every pair since the start.
    assert history.after_loss <= 2
    remembered = sum(history.remembered_by_depth[0])
    assert remembered == (4 * DEPTH_MEMORY - 1) // 2
    history.add(False, 100.0)  # the 4 * DEPTH_MEMORY-th outcome: a pair more, then halved
    assert sum(history.remembered_by_depth[0]) == (remembered + 1) // 2


def test_goes_on_more_is_a_one_sided_test() -> None:
    assert goes_on_more(95, 100, 50, 100)  # clearly more
    assert not goes_on_more(55, 100, 50, 100)  # within the noise
    assert not goes_on_more(10, 100, 50, 100)  # less: never a reason for a higher bound
    assert not goes_on_more(3, 3, 0, 0) and not goes_on_more(0, 0, 3, 3)  # nothing to compare


# --- bounds per depth --------------------------------------------------------------------------


def test_a_path_with_one_kind_of_loss_keeps_one_bound_at_every_depth() -> None:
    rng = random.Random(6)
    detector = AdaptiveDetector()
    # Bursts of one kind (mean 3): no depth effect to find, and none is imagined.
    _feed(detector.history, [_geometric(rng, 2 / 3) for _ in range(3000)], rng)
    levels = detector.depth_loss_bounds()
    assert all(level == levels[0] for level in levels)


def test_a_run_that_has_lasted_is_judged_as_the_long_kind_of_loss() -> None:
    rng = random.Random(8)
    detector = AdaptiveDetector()
    # Many short spells (one or two losses) and a few long bursts (mean 16): on average a loss
    # is followed by a loss less than half the time, but a run 8 deep goes on 15 times in 16.
    runs = [
        _geometric(rng, 15 / 16) if rng.random() < 0.1 else rng.randint(1, 2) for _ in range(3001)
    ]
    _feed(detector.history, runs, rng)
    levels = detector.depth_loss_bounds()
    shallow, deep = levels[0][GAP], levels[DEPTH_LEVELS - 1][GAP]
    assert shallow < 0.75
    assert deep > 15 / 16  # an upper bound on the long kind's chance of going on
    assert all(a <= b for a, b in zip(levels[0], levels[-1], strict=True))
    # So a run of 70 misses at this spacing, which about one long burst in 60 makes on this
    # path, is far from a verdict, where the average bound alone would call it.
    log = math.log(detector.loss_bound())
    log_shallow_only = log + 69 * math.log(shallow)
    log_by_depth = log + sum(math.log(levels[depth_level(depth)][GAP]) for depth in range(1, 70))
    assert log_shallow_only < math.log(1e-9) < log_by_depth


# --- the probe share ---------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0, -0.5, math.nan, math.inf, True, "half"])
def test_bad_probe_share_raises_config_error(share: object) -> None:
    with pytest.raises(ConfigError, match="probe-share"):
        AdaptiveDetector(probe_share=share)  # type: ignore[arg-type]


def test_probes_stay_within_their_share_on_a_path_that_goes_dark() -> None:
    path = PathConfig(loss=Blackouts(0.3, 0.05, 0.5))
    heartbeats = 5_000
    kept = run_healthy(DetectorSpec.parse("adaptive"), path, Timing(), heartbeats, random.Random(4))
    free = run_healthy(
        DetectorSpec.parse("adaptive:probe_share=100"),
        path,
        Timing(),
        heartbeats,
        random.Random(4),
    )
    # What was earned (0.5 a heartbeat: 30 % independent loss would cost 0.43) and saved at the
    # start (0.5 x history), and one run's overdraft at most.
    assert kept.probes <= 0.5 * heartbeats + 0.5 * 1000 + 50
    assert free.probes > kept.probes * 1.2  # without the share, spells of loss cost more
    assert kept.false_down == free.false_down == 0


def test_describe_names_the_probe_share() -> None:
    assert AdaptiveDetector(probe_share=0.25).describe()["probe_share"] == 0.25


# --- a target that never answered ------------------------------------------------------------


def test_a_target_that_never_answers_is_down_within_five_seconds() -> None:
    # Never answered: 60 % loss and the cold prior (q = COLD_BURST_LOSS) at every spacing, the
    # probes at the fastest pace (no reply can be overtaken), the session's budget the limit.
    config = ProbeConfig(count=None, interval=1.0, timeout=1.0, watch=True)
    driver = SessionDriver(config, start=0.0, detector=AdaptiveDetector(1.0))
    driver.run(limit=30.0)
    report = driver.session.report()
    downs = [t for t in report.transitions if t.new is State.DOWN]
    needed = 1 + math.ceil(math.log(1e-9 / 0.6) / math.log(COLD_BURST_LOSS))
    assert downs and downs[0].at <= 5.0
    assert downs[0].evidence["misses"] == needed and downs[0].evidence["assumed"] is True
    assert report.probes <= needed


def test_until_losses_are_seen_to_follow_losses_the_cold_prior_holds_at_every_spacing() -> None:
    detector = AdaptiveDetector(1.0)
    assert detector.burst_loss_bounds() == [COLD_BURST_LOSS] * GAP_BINS  # never answered
    detector.on_sent(1, 0.0, probe=False)
    detector.on_reply(1, 0.001, 0.001)
    # Seen alive, with a short clean history: a first burst must not look like a stop.
    assert detector.burst_loss_bounds() == [COLD_BURST_LOSS] * GAP_BINS
    detector.history.add_many(False, CLEAN_HISTORY - 1)
    assert detector.burst_loss_bounds() == [COLD_BURST_LOSS] * GAP_BINS
    detector.history.add(False)
    # Long without a loss-after-loss (on a bursty path at 30 % loss, a clean spell this long
    # comes once in tens of thousands of starts): the path hardly loses.
    assert detector.burst_loss_bounds() == [detector.max_loss] * GAP_BINS


def test_pairs_at_longer_spacings_leave_the_closer_ones_unknown() -> None:
    detector = AdaptiveDetector(1.0)
    detector.on_sent(1, 0.0, probe=False)
    detector.on_reply(1, 0.001, 0.001)
    for index in range(200):  # heartbeats a second apart, every tenth one lost
        detector.history.add(index % 10 == 0, float(index))
    bounds = detector.burst_loss_bounds()
    assert bounds[0] == detector.max_burst_loss  # nothing known this close
    # A loss was never followed by a loss a second later: 20 pairs bound it.
    assert bounds[gap_bin(1.0)] == pytest.approx(wilson_upper(0, 20))


def test_the_long_memory_keeps_a_spacing_the_last_history_hardly_probed() -> None:
    # Two histories of blackouts probed 4 ms apart (runs of 40), then one of independent loss
    # with only a few fast pairs, all ended: the last history alone would bound the fast
    # spacing near its few pairs; the long memory still holds the blackouts.
    detector = AdaptiveDetector(1.0, history=500)
    detector.on_sent(1, 0.0, probe=False)
    detector.on_reply(1, 0.001, 0.001)
    history, rng, now = detector.history, random.Random(3), 0.0
    for _ in range(25):  # 25 blackouts x 40 fast misses = two histories
        history.add(False, now)
        for _ in range(39):
            now += 0.004
            history.add(True, now)
        now += 1.0
    for index in range(500):
        now += 1.0
        lost = rng.random() < 0.3 or index % 100 == 50
        history.add(lost, now)
        if index % 100 == 50:  # a few fast probes after a loss, all answered
            now += 0.004
            history.add(False, now)
    recent_fast_pairs = history.after_loss_by_gap[0]
    recent_fast_losses = history.losses_after_loss_by_gap[0]
    assert (recent_fast_pairs, recent_fast_losses) == (5, 0)
    recent_only = wilson_upper(recent_fast_losses, recent_fast_pairs)
    assert detector.burst_loss_bounds()[0] > max(recent_only, 0.9)


def test_a_young_memory_does_not_rule_a_depth_effect_out() -> None:
    # 30 % independent loss at heartbeats a second apart: runs 8 deep are next to never seen.
    # A memory of fewer outcomes than one history (a session's first minutes) cannot tell that
    # from a path whose long runs are yet to come, so the deep level is the cold prior; a
    # memory of three histories keeps the level above, as the depth test finds no effect.
    young, grown = AdaptiveDetector(1.0), AdaptiveDetector(1.0)
    rng = random.Random(5)
    for detector, outcomes in ((young, 500), (grown, 3000)):
        detector.rtt.add(0.001)
        for index in range(outcomes):
            detector.history.add(rng.random() < 0.3, float(index))
    deepest, heartbeat_gap = DEPTH_LEVELS - 1, gap_bin(1.0)
    assert young.depth_loss_bounds()[deepest][heartbeat_gap] == COLD_BURST_LOSS
    grown_levels = grown.depth_loss_bounds()
    assert grown_levels[deepest][heartbeat_gap] == grown_levels[0][heartbeat_gap] < 0.5


def test_a_cold_run_is_no_stop_before_it_spans_a_few_seconds() -> None:
    # Seen alive at a 0.2 s interval, then silent: misses 4 ms apart (a 0.2 s interval's budget
    # lets them out) gather the cold prior's evidence within a second, but a blackout (a Wi-Fi
    # roam) swallows any number of probes sent close together: DOWN only once the run spans
    # COLD_SPAN, and a reply before then ends it.
    def silent_after_replies() -> tuple[AdaptiveDetector, float, int]:
        detector, now = AdaptiveDetector(0.2), 0.0
        for seq in range(1, 6):
            detector.on_sent(seq, now, probe=False)
            detector.on_reply(seq, 0.001, now + 0.001)
            now += 0.2
        seq, first = 5, now
        while detector.check_at() is None:
            seq += 1
            detector.on_sent(seq, now, probe=seq > 6)
            assert detector.on_miss(seq, now + 0.2, "timeout") is None or seq == 6
            now += 0.004
        assert now - first < 1.0 and detector.state is State.SUSPECT
        return detector, first, seq

    stopped, first, _ = silent_after_replies()
    assert stopped.check_at() == pytest.approx(first + COLD_SPAN)
    assert stopped.check(first + COLD_SPAN - 0.01) is None
    down = stopped.check(first + COLD_SPAN)
    assert down is not None and down.new is State.DOWN

    dark, first, seq = silent_after_replies()  # a 2 s blackout: the next heartbeat is answered
    dark.on_sent(seq + 1, first + 2.0, probe=False)
    up = dark.on_reply(seq + 1, 0.001, first + 2.001)
    assert up is not None and up.new is State.UP
    assert dark.check(first + COLD_SPAN) is None and dark.state is State.UP


def test_a_pair_in_the_last_history_counts_after_the_memory_is_halved_away() -> None:
    detector = AdaptiveDetector(1.0)
    detector.rtt.add(0.001)
    history = detector.history
    history.add(False, 0.0)
    history.add(True, 1.0)
    # The next outcome ends a pair (a loss, then an answer 0.2 s later) and halves the long
    # memory, which held just that pair: the last history still has it.
    history._depth_added = DEPTH_MEMORY * detector.history_size - 1
    history.add(False, 1.2)
    assert not any(history.remembered) and history.after_loss_by_gap[gap_bin(0.2)] == 1
    assert not detector.under_cold_prior()
    bounds = detector.burst_loss_bounds()
    assert bounds[0] == detector.max_burst_loss  # closer than any pair seen: unknown
    assert bounds[gap_bin(0.2)] == pytest.approx(max(wilson_upper(0, 1), detector.loss_bound()))


def test_a_short_history_is_clean_once_it_is_full() -> None:
    # history=100 can never hold CLEAN_HISTORY outcomes: a whole clean history is enough.
    detector = AdaptiveDetector(1.0, history=100)
    detector.rtt.add(0.001)
    detector.history.add_many(False, 99)
    assert detector.under_cold_prior()
    detector.history.add(False)
    assert not detector.under_cold_prior()
    assert detector.burst_loss_bounds() == [detector.max_loss] * GAP_BINS


def test_the_deepest_runs_hold_their_own_bound_once_seen_often_enough() -> None:
    # Seed 61's false DOWN on the mix with bursts of 8: at 0.1 s, runs 8 deep went on 61 times
    # in 80, runs 4 to 7 deep 96 in 142: 1.4 standard errors, no effect "shown", so misses
    # were weighed at the shallower bound while the burst went on at 0.875.
    def grown(deep_pairs: int, deep_losses: int) -> AdaptiveDetector:
        detector = AdaptiveDetector(1.0)
        detector.rtt.add(0.001)
        rng = random.Random(2)
        for index in range(1000):  # a grown memory: the young rule is not what acts here
            detector.history.add(rng.random() < 0.3, float(index))
        history, gap = detector.history, gap_bin(0.1)
        counts = [(136, 94), (217, 149), (142, 96), (deep_pairs, deep_losses)]
        for level, (pairs, losses) in enumerate(counts):  # the long memory at 0.1 s, per depth
            history.remembered_by_depth[level][gap] += pairs
            history.remembered_losses_by_depth[level][gap] += losses
            history.remembered[gap] += pairs
            history.remembered_losses[gap] += losses
        return detector

    gap = gap_bin(0.1)
    many = grown(80, 61).depth_loss_bounds()
    assert not goes_on_more(61, 80, 96, 142)
    assert many[DEPTH_LEVELS - 1][gap] == pytest.approx(wilson_upper(61, 80))
    assert many[DEPTH_LEVELS - 1][gap] > many[DEPTH_LEVELS - 2][gap] + 0.05
    few = grown(DEEP_ENOUGH - 1, DEEP_ENOUGH - 5).depth_loss_bounds()  # too few: a wide interval
    assert few[DEPTH_LEVELS - 1][gap] == few[DEPTH_LEVELS - 2][gap]
