"""The adaptive detector: DOWN only when a live server would almost never be this silent."""

from __future__ import annotations

import bisect
import functools
import heapq
import math

from udpbeat.detector.base import (
    Detector,
    MissReason,
    State,
    Transition,
    count_at_least,
    non_negative_seconds,
    open_unit,
    positive_seconds,
    reply_evidence,
    seconds,
)
from udpbeat.errors import ConfigError


class RttEstimator:
    """Smoothed round-trip time and its variation, as TCP keeps them (RFC 6298, section 2).

    Every reply's sequence number is unique, so even a late reply gives an unambiguous sample
    (Karn's problem does not arise): late samples are fed too, which is how the timeout grows
    after a jump in RTT.
    """

    __slots__ = ("rttvar", "samples", "srtt")

    def __init__(self) -> None:
        self.srtt = 0.0
        self.rttvar = 0.0
        self.samples = 0

    def add(self, rtt: float) -> None:
        if not 0 <= rtt < math.inf:
            return
        if self.samples == 0:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1

    def rto(self) -> float | None:
        """SRTT + 4·RTTVAR, or ``None`` before the first sample."""
        return self.srtt + 4 * self.rttvar if self.samples else None


#: Upper edges (seconds) of the bins the time between two consecutive requests falls in: loss
#: that follows a loss is counted per bin, since on a path that goes dark for a while the next
#: request 10 ms later is lost far more often than one 300 ms later. The first bin holds only
#: the fastest probes: pairs 50 ms apart say nothing of pairs 4 ms apart, which a blackout of
#: a few hundred milliseconds swallows by the dozen.
GAP_EDGES = (0.02, 0.075, 0.15, 0.3, 0.6)
GAP_BINS = len(GAP_EDGES) + 1
#: The confirmation paces the detector chooses from, one per bin (``None``: its fastest pace,
#: from the RTT). The last bin (0.6 s and over) is left to the regular heartbeats.
PACES: tuple[float | None, ...] = (None, 0.05, 0.1, 0.2, 0.4)
_NO_PAIR = 255
#: Outcomes of a target seen alive without a loss (or a whole history, if shorter) after which
#: the path is taken to hardly lose, and every spacing is assumed no worse than ``max_loss``: on
#: a path losing 30 % in bursts of 16 requests, a clean spell this long comes once in about
#: 4,400 starts.
CLEAN_HISTORY = 300
#: The chance that a loss follows a loss assumed while no loss and what followed it have been
#: seen, on a path not clean for long (:data:`CLEAN_HISTORY`) or never answered: bursts of ten
#: requests on average. About 190 misses make DOWN then, so a first burst of loss is not taken
#: for a stop (with bursts of 16 requests on average, a run of 190 comes once in 200,000
#: bursts).
COLD_BURST_LOSS = 0.9
#: Seconds a run judged by the cold prior must span (its first miss's request to the verdict)
#: before DOWN: the prior is about bursts counted in requests, and a blackout (a Wi-Fi roam, a
#: handover) swallows any number of probes sent close together. With the default budget and a
#: 1 s interval the ~190 misses take longer than this anyway; with a short interval the budget
#: lets them out within a second.
COLD_SPAN = 3.0
#: Probes of a run sent at the pace estimates favour (trying spacings out) before the pace
#: follows the bounds.
EXPLORING_PROBES = 2
#: Depth levels of a run: the losses in a row before a pair's second request (1, 2-3, 4-7, 8
#: and more). On a path with several kinds of loss (short blackouts and long bursts, say) a run
#: that has lasted is likelier the long kind, so the chance that it goes on is read from the
#: pairs at least as deep in their runs as the current one.
DEPTH_LEVELS = 4
#: The pairs per depth level are remembered over this many histories (halved each time that
#: many outcomes have joined since the last halving): runs deep enough to tell one kind of loss
#: from another are few in one history.
DEPTH_MEMORY = 10
#: Standard errors by which deep runs must go on more often than shallower ones for the depth
#: effect to count (:func:`goes_on_more`). Lower than the bounds' 3: an effect imagined costs a
#: slower verdict, one missed a false one, and deep runs are few.
DEPTH_Z = 2.5
#: Pairs of the deepest level (at a spacing and the closer ones) from which its own bound holds
#: whether or not the depth test shows an effect: enough for a narrow interval.
DEEP_ENOUGH = 30


def depth_level(depth: int) -> int:
    """The level of :data:`DEPTH_LEVELS` of a run ``depth`` losses long (``depth`` >= 1)."""
    return min(depth.bit_length(), DEPTH_LEVELS) - 1


def gap_bin(gap: float) -> int:
    """The bin of :data:`GAP_EDGES` a time between two requests falls in."""
    return bisect.bisect_right(GAP_EDGES, gap)


class LossHistory:
    """The outcomes (lost or answered) of the last ``size`` heartbeats: a ring, O(1) per outcome.

    Besides the losses it counts the consecutive pairs that start with a loss, and how many of
    those end with a loss too: the chance that a loss follows a loss, which is what tells
    bursty loss from independent loss. Each pair is also counted in the bin (:data:`GAP_EDGES`)
    of the time between its two requests' departures, so the chance can be read per spacing:
    bursts counted in requests show at every spacing, blackouts in time only at short ones.
    """

    __slots__ = (
        "_depth_added",
        "_index",
        "_newest_at",
        "_pair_gap",
        "_ring",
        "_trailing",
        "after_loss",
        "after_loss_by_gap",
        "count",
        "losses",
        "losses_after_loss",
        "losses_after_loss_by_gap",
        "remembered",
        "remembered_by_depth",
        "remembered_losses",
        "remembered_losses_by_depth",
    )

    def __init__(self, size: int) -> None:
        self._ring = bytearray(size)
        # Only the newest outcome's send time is ever needed (for the next pair's gap): one
        # float, not one per outcome (10,000 targets' rings of floats cost some 80 MB).
        self._newest_at = 0.0
        # The gap bin of the pair (previous, this) if the previous was lost, else _NO_PAIR.
        self._pair_gap = bytearray([_NO_PAIR]) * size
        self._index = 0
        self.count = 0
        self.losses = 0
        self.after_loss = 0
        self.losses_after_loss = 0
        self.after_loss_by_gap = [0] * GAP_BINS
        self.losses_after_loss_by_gap = [0] * GAP_BINS
        # The same per depth level (:func:`depth_level`) of the pair's first loss in its run,
        # ``[level][gap]``, over a longer memory (:data:`DEPTH_MEMORY`), decaying by halves.
        self._trailing = 0  # losses in a row at the newest end
        self._depth_added = 0  # outcomes since the last halving
        self.remembered_by_depth = [[0] * GAP_BINS for _ in range(DEPTH_LEVELS)]
        self.remembered_losses_by_depth = [[0] * GAP_BINS for _ in range(DEPTH_LEVELS)]
        # The same, every depth together (kept, not summed per run: a run's start reads them).
        self.remembered = [0] * GAP_BINS
        self.remembered_losses = [0] * GAP_BINS

    def add(self, lost: bool, at: float | None = None) -> None:
        """One outcome, of a request sent at ``at`` (``None``: with the previous one)."""
        ring, pair_gap = self._ring, self._pair_gap
        size = len(ring)
        index = self._index
        if self.count == size:
            self.losses -= ring[index]
            following = index + 1 if index + 1 < size else 0
            code = pair_gap[following]
            if code != _NO_PAIR and size > 1:  # the pair (oldest, next) leaves the window
                gap = code
                self.after_loss -= 1
                self.after_loss_by_gap[gap] -= 1
                if ring[following]:
                    self.losses_after_loss -= 1
                    self.losses_after_loss_by_gap[gap] -= 1
                pair_gap[following] = _NO_PAIR
        else:
            self.count += 1
        previous_at = self._newest_at
        if at is None:
            at = previous_at if self.count > 1 else 0.0
        if self.count > 1 and ring[index - 1]:
            gap = gap_bin(abs(at - previous_at))
            level = depth_level(self._trailing)
            pair_gap[index] = gap
            self.after_loss += 1
            self.after_loss_by_gap[gap] += 1
            self.remembered_by_depth[level][gap] += 1
            self.remembered_losses_by_depth[level][gap] += lost
            self.remembered[gap] += 1
            self.remembered_losses[gap] += lost
            if lost:
                self.losses_after_loss += 1
                self.losses_after_loss_by_gap[gap] += 1
        else:
            pair_gap[index] = _NO_PAIR
        self._trailing = self._trailing + 1 if lost else 0
        self._depth_added += 1
        if self._depth_added >= size * DEPTH_MEMORY:
            self._depth_added = 0
            for row in (*self.remembered_by_depth, *self.remembered_losses_by_depth):
                for gap in range(GAP_BINS):
                    row[gap] //= 2
            for total, rows in (
                (self.remembered, self.remembered_by_depth),
                (self.remembered_losses, self.remembered_losses_by_depth),
            ):
                total[:] = [sum(column) for column in zip(*rows, strict=True)]
        ring[index] = lost
        self._newest_at = at
        self.losses += lost
        self._index = index + 1 if index + 1 < size else 0

    def add_many(self, lost: bool, times: int) -> None:
        for _ in range(min(times, len(self._ring))):
            self.add(lost)


@functools.lru_cache(maxsize=1 << 16)
def wilson_upper(losses: int, count: int, z: float = 3.0) -> float:
    """The upper end of the Wilson score interval for a rate seen as ``losses`` in ``count``.

    One-sided, ``z`` standard deviations (3: about 99.87 % confidence). With no outcomes it is
    1: nothing is known, so nothing is ruled out. Cached: a detector asks for the same few
    counts again and again (its history moves by one outcome at a time).
    """
    if count <= 0:
        return 1.0
    rate = losses / count
    z2 = z * z
    centre = rate + z2 / (2 * count)
    spread = z * math.sqrt(rate * (1 - rate) / count + z2 / (4 * count * count))
    return min(1.0, (centre + spread) / (1 + z2 / count))


def lowest_pooled_bound(pairs: list[int], losses: list[int], gap: int) -> float:
    """The lowest :func:`wilson_upper` bound of the pairs at spacing bin ``gap`` pooled with
    those of ever closer bins (closer together, loss is at least as correlated, so each pool's
    bound holds at ``gap``); ``math.inf`` if no bin at or below ``gap`` has a pair."""
    best = math.inf
    pooled_pairs = pooled_losses = 0
    for closer in range(gap, -1, -1):
        if pairs[closer]:  # a bin with no pairs leaves the pool as it was
            pooled_pairs += pairs[closer]
            pooled_losses += losses[closer]
            best = min(best, wilson_upper(pooled_losses, pooled_pairs))
    return best


def goes_on_more(
    deep_losses: int, deep_pairs: int, losses: int, pairs: int, z: float = DEPTH_Z
) -> bool:
    """Whether runs go on significantly more often deep in them (``deep_losses`` of
    ``deep_pairs``) than at the level above (``losses`` of ``pairs``): a one-sided two-proportion
    test, ``z`` standard errors (:data:`DEPTH_Z`, 2.5: a depth effect imagined by chance, about
    once in 160 tests, makes a verdict slower, never a false one)."""
    if not deep_pairs or not pairs:
        return False
    deep_rate, rate = deep_losses / deep_pairs, losses / pairs
    if deep_rate <= rate:
        return False
    pooled = (deep_losses + losses) / (deep_pairs + pairs)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / deep_pairs + 1 / pairs))
    return deep_rate - rate > z * spread if spread > 0 else deep_rate > rate


class AdaptiveDetector(Detector):
    """Loss-aware: DOWN only when a live server on this path would almost never be this silent.

    It keeps the outcomes of the last ``history`` heartbeats and probes, with when each left,
    and from them pessimistic figures (upper ends of Wilson score intervals, about 99.9 %
    one-sided): ``p``, the path's loss rate (at most ``max_loss``), and ``q``, the chance that a
    loss follows a loss, per spacing between the two requests (at least ``p``, at most
    ``max_burst_loss``; higher when losses come in bursts, and for short spacings when the path
    goes dark for spells of time). A spacing with little data of its own borrows the bound of
    shorter spacings (loss is never less correlated closer together); the pairs are read from
    the last history and from a longer memory, whichever bound is higher. With no history ``p``
    is ``max_loss``. Until a loss has been seen and what followed it, ``q`` is a prior
    (:data:`COLD_BURST_LOSS`, bursts of ten requests on average), and a run judged by it is no
    stop before it spans :data:`COLD_SPAN` seconds; a target seen alive that has shown no loss
    for :data:`CLEAN_HISTORY` outcomes hardly loses, and ``q`` is ``max_loss``.

    On a miss it goes SUSPECT, freezes the figures, picks the pace of its confirmation probes
    (the one that reaches a verdict soonest: its fastest, SRTT + 4·RTTVAR within
    ``[min_confirm_interval, confirm_interval]`` (``min_confirm_interval`` before any reply),
    when loss is independent or bursty in
    requests; slower when losses cluster in time) and sends them. A run of misses has
    probability ``p · q(gap_2) · ... · q(gap_k)`` on a live server, each ``q`` at the spacing
    the miss had from the one before; below ``false_alarm`` the run is enough. Each miss is
    counted only once its request is ``patience`` old (at least ``min_patience``, and 1.5 times
    the highest RTT seen lately; at most ``timeout``): a reply delayed by a spike in RTT up to
    then ends the run instead, so a delay is never read as a death. Any reply, even a late one,
    ends the run: UP, and the run's misses join the history as path losses. A run that ends in
    DOWN is left out of the history, since those misses were the server's, not the path's. No
    probes are sent while DOWN, and none beyond those whose misses could still be needed. A miss
    of a heartbeat sent before one that was answered is path loss, not suspicion.

    A refusal (ICMP port unreachable) is strong evidence, but can be forged: from the second
    refusal in a run on, each counts as a miss on a path losing only ``refusal_probability``
    (and without waiting for ``patience``: a refusal is an answer, not a delay); a single
    refusal counts as an ordinary miss.

    Replies are awaited SRTT + 4·RTTVAR (RFC 6298), at least ``min_timeout`` and at most
    ``timeout``; before the first RTT sample, ``timeout``. ``probes_per_second``: how fast
    probes can go on for long (the session's budget), used only to choose the pace.

    ``probe_share``: the confirmation probes it may spend per regular heartbeat on average, or
    what independent loss at the measured rate makes unavoidable (``p / (1 - p)``: a probe
    after each miss) if that is more. Unspent share is saved, up to ``probe_share · history``
    probes: a path that seldom makes it doubt leaves it enough for a fast verdict. Once the
    savings are spent (a path whose losses cluster, so that probes sent close together mostly
    meet the same spell of loss, or whose RTT spikes, so that they go out while the reply is
    still on its way), the first probes of each run (:data:`EXPLORING_PROBES`) go at the
    slowest pace it has, by when a live server's spell of loss or delay is mostly over; the
    rest follow the bounds as ever. The price is slower detection on such paths, which
    docs/detectors.md states, measured.
    """

    name = "adaptive"

    def __init__(
        self,
        timeout: float = 1.0,
        *,
        false_alarm: float = 1e-9,
        confirm_interval: float = 0.05,
        min_confirm_interval: float = 0.004,
        min_timeout: float = 0.05,
        max_loss: float = 0.6,
        max_burst_loss: float = 0.99,
        history: int = 1000,
        refusal_probability: float = 1e-4,
        min_patience: float = 0.35,
        probes_per_second: float = 50.0,
        probe_share: float = 0.5,
    ) -> None:
        super().__init__(timeout)
        self.false_alarm = open_unit("false-alarm", false_alarm)
        self.confirm_interval = positive_seconds("confirm-interval", confirm_interval)
        self.min_confirm_interval = positive_seconds("min-confirm-interval", min_confirm_interval)
        if self.min_confirm_interval > self.confirm_interval:
            raise ConfigError(
                f"confirm-interval must be at least min-confirm-interval "
                f"({min_confirm_interval} s, the fastest safe pace), got {confirm_interval}"
            )
        self.min_timeout = positive_seconds("min-timeout", min_timeout)
        self.max_loss = open_unit("max-loss", max_loss)
        self.max_burst_loss = open_unit("max-burst-loss", max_burst_loss)
        if self.max_burst_loss < self.max_loss:
            raise ConfigError(
                f"max-burst-loss must be at least max-loss ({max_loss}), got {max_burst_loss}"
            )
        self.history_size = count_at_least("history", history, 1)
        self.refusal_probability = open_unit("refusal-probability", refusal_probability)
        self.min_patience = non_negative_seconds("min-patience", min_patience)
        self.probes_per_second = positive_seconds("probes-per-second", probes_per_second)
        self._sustained = 1.0 / self.probes_per_second
        if (
            isinstance(probe_share, bool)
            or not isinstance(probe_share, int | float)
            or not 0 < probe_share < math.inf
        ):
            raise ConfigError(f"probe-share must be a number > 0, got {probe_share!r}")
        self.probe_share = float(probe_share)
        # The probes saved: starts full, so a fresh detector can confirm a stop fast.
        self._probe_savings_cap = self.probe_share * self.history_size
        self._probe_savings = self._probe_savings_cap
        # The loss rate of the regular heartbeats alone (probes go out in spells of loss, so
        # the history's rate overstates what independent loss would cost): a running mean,
        # then an average over about ``history`` heartbeats.
        self._heartbeat_loss = 0.0
        self._heartbeats_settled = 0
        self._probes_in_flight: set[int] = set()
        self.rtt = RttEstimator()
        self.history = LossHistory(self.history_size)
        self._log_false_alarm = math.log(self.false_alarm)
        self._outstanding = 0
        self._alive_seq = -1  # the newest heartbeat known to have been answered
        self._last_sent: float | None = None
        self._sent_at: dict[int, float] = {}  # requests awaiting their outcome: when each left
        self._rtt_peak = 0.0  # the highest RTT lately, decaying by 1/history a sample
        self._peak_decay = 1.0 - 1.0 / self.history_size
        # The current run of misses, and the figures frozen when it began.
        self._run_loss = self.max_loss
        self._run_burst_loss = self.max_loss
        self._run_bounds = [self.max_loss] * GAP_BINS
        self._run_depth_bounds = [[self.max_loss] * GAP_BINS for _ in range(DEPTH_LEVELS)]
        self._run_pace = self.confirm_interval
        self._log_pace_loss = math.log(self.max_loss)
        self._run_patience = self.min_patience
        self._run_cold = False  # judged by the cold prior (see COLD_SPAN)
        self._run_timeouts = 0
        self._run_refused = 0
        self._run_log = 0.0  # log of the run's probability on a live server
        self._run_last_sent: float | None = None  # when the run's newest miss left
        self._run_sent: list[float] = []  # when each of the run's misses left
        self._run_seqs: list[int] = []
        # Ended runs waiting for late replies before they join the history: (when they can
        # join, [(seq, sent at)], when the reply that ended the run left), and the seqs of
        # their misses that were answered late.
        # Outcomes join the history in the order their requests left, once a reply to them
        # can no longer come (``timeout`` after they left): a heap of (sent at, seq, whether a
        # probe), and each one's fate (lost or not; ``None``: left out, a miss of a run that
        # ended DOWN).
        self._unsettled: list[tuple[float, int, bool]] = []
        self._fates: dict[int, bool | None] = {}
        self._verdict_at: float | None = None  # the run is enough once this comes
        self._verdict_seq = -1  # the miss that made it enough
        # The history the frozen rates came from: outcomes, and losses among them.
        self._run_history = (0, 0)
        self._wanted = 0  # further misses needed for DOWN

    # -- estimates ----------------------------------------------------------------------------

    def loss_bound(self) -> float:
        """The pessimistic loss rate of the path from the history (what a new run would use)."""
        history = self.history
        return min(wilson_upper(history.losses, history.count), self.max_loss)

    def burst_loss_bounds(self) -> list[float]:
        """The pessimistic chance that a loss follows a loss, per bin of :data:`GAP_EDGES`.

        Each is the lowest upper bound from the pairs of its own bin pooled with those of any
        run of shorter spacings (closer together, loss is at least as correlated, so their
        bound holds here too), from the last history and from the long memory (every depth
        together), whichever is higher; never below :meth:`loss_bound`, never above
        ``max_burst_loss``. With no pair at or below a spacing it is ``max_burst_loss``
        (nothing is known this close, where losses may cluster in time); with no pair at all,
        :data:`COLD_BURST_LOSS`, until :data:`CLEAN_HISTORY` outcomes of a target seen alive
        without one say the path hardly loses: then ``max_loss``.
        """
        history = self.history
        floor, cap = self.loss_bound(), self.max_burst_loss
        pairs, losses = history.after_loss_by_gap, history.losses_after_loss_by_gap
        # The long memory's pairs, every depth together: a spacing the last history probed
        # only a few times (a handful of short bursts that ended) must not hide the dozens of
        # blackouts that spacing met before.
        remembered, remembered_losses = history.remembered, history.remembered_losses
        cold = self.under_cold_prior()
        bounds: list[float] = []
        for gap in range(GAP_BINS):
            known = [
                bound
                for bound in (
                    lowest_pooled_bound(pairs, losses, gap),
                    lowest_pooled_bound(remembered, remembered_losses, gap),
                )
                if bound < math.inf
            ]
            if known:
                best = max(known)
            elif cold:
                # Nothing known of what follows a loss (a fresh target, or one that has never
                # answered): the prior. A first burst must not look like a stop, and bursts
                # of a handful of requests are common.
                best = COLD_BURST_LOSS
            elif any(pairs) or any(remembered):
                best = cap  # pairs at longer spacings only: this close, losses may cluster
            else:
                best = self.max_loss  # long without a loss: the path hardly loses
            bounds.append(min(max(best, floor), cap))
        return bounds

    def depth_loss_bounds(self, level_0: list[float] | None = None) -> list[list[float]]:
        """The pessimistic chance that a run goes on, per depth level (:func:`depth_level`) of
        the run and per spacing: ``[level][gap]``.

        Level 0 is :meth:`burst_loss_bounds`, from every pair. At level ``L`` and a spacing,
        the level before holds unless the pairs at least as deep as ``L`` (pooled over the
        deeper levels too: a run that has lasted this long may last longer) go on significantly
        more often (:func:`goes_on_more`) than those of level ``L - 1``, at that spacing or a
        closer one, or in the pairs of that spacing and every closer one pooled (deep runs are
        few, and probed at whichever spacing the bounds favoured, so one spacing alone may
        hold too few to show an effect the pool shows plainly): then the bound from those deep
        pairs, pooled with closer spacings' where
        few were seen at this one (as :meth:`burst_loss_bounds`), if higher. A path with
        several kinds of loss (short blackouts, long bursts) shows this, as its runs that have
        lasted are mostly the long kind; on a path with one kind, the deep pairs (few, so with
        a wide interval) would only slow detection down without making it any safer. Until
        the history has held one whole history of outcomes (and once some loss and what
        followed it were seen), though, too few deep runs were
        seen to rule an effect out: the deep pairs' own bound holds at every level from 1
        whether shown or not, at most :data:`COLD_BURST_LOSS`, and that prior where none were
        seen (a session's first minutes are slower to call a stop, never readier). The deepest
        level holds its own bound, shown or not, wherever :data:`DEEP_ENOUGH` of its pairs were
        seen at that spacing and the closer ones.
        """
        history = self.history
        by_depth, losses_by_depth = history.remembered_by_depth, history.remembered_losses_by_depth
        cap = self.max_burst_loss
        # Fewer outcomes than one history seen in all (a session's first minutes), and some
        # pair that starts with a loss remembered (a path with none is under the cold prior or
        # hardly loses, at every depth alike).
        young = history.count < self.history_size and any(history.remembered)
        # The pairs at least as deep as each level, per spacing: sums from the deepest up.
        tail_pairs = [list(by_depth[-1])]
        tail_losses = [list(losses_by_depth[-1])]
        for level in range(DEPTH_LEVELS - 2, 0, -1):
            pairs, losses = by_depth[level], losses_by_depth[level]
            deeper_pairs, deeper_losses = tail_pairs[-1], tail_losses[-1]
            tail_pairs.append([a + b for a, b in zip(pairs, deeper_pairs, strict=True)])
            tail_losses.append([a + b for a, b in zip(losses, deeper_losses, strict=True)])
        tail_pairs.reverse()  # [level - 1]: the pairs at least as deep as ``level``
        tail_losses.reverse()
        levels = [self.burst_loss_bounds() if level_0 is None else level_0]
        for level in range(1, DEPTH_LEVELS):
            bounds = list(levels[-1])
            above, losses_above = by_depth[level - 1], losses_by_depth[level - 1]
            pairs, losses = tail_pairs[level - 1], tail_losses[level - 1]
            shown = False  # a depth effect at this spacing or a closer one
            # The same pairs pooled over this spacing and the closer ones: deep runs are
            # probed mostly at the spacings the bounds favour, so one bin alone may hold too
            # few to show an effect that the pool shows plainly.
            pooled_deep = pooled_deep_losses = pooled_above = pooled_above_losses = 0
            for gap in range(GAP_BINS):
                pooled_deep += pairs[gap]
                pooled_deep_losses += losses[gap]
                pooled_above += above[gap]
                pooled_above_losses += losses_above[gap]
                shown = (
                    shown
                    or goes_on_more(losses[gap], pairs[gap], losses_above[gap], above[gap])
                    or goes_on_more(
                        pooled_deep_losses, pooled_deep, pooled_above_losses, pooled_above
                    )
                )
                # The deepest runs, where seen often enough for their own bound to be narrow,
                # hold it whether the test shows an effect or not: a run that long is the
                # long kind of loss, and a mix's shallower runs can hide how long that goes on.
                settled = level == DEPTH_LEVELS - 1 and pooled_deep >= DEEP_ENOUGH
                if not (shown or young or settled):
                    continue
                # As burst_loss_bounds: where few runs this deep were seen at this spacing,
                # the closer ones' bound holds.
                deep = lowest_pooled_bound(pairs, losses, gap)
                if shown or settled:
                    if deep < math.inf:
                        bounds[gap] = max(bounds[gap], min(deep, cap))
                else:
                    # A young memory has seen too few deep runs to rule a depth effect out:
                    # their own bound holds, or the cold prior if none was seen (or lower).
                    bounds[gap] = max(bounds[gap], min(deep, COLD_BURST_LOSS))
            levels.append(bounds)
        return levels

    def under_cold_prior(self) -> bool:
        """Whether nothing is known yet of what follows a loss: no pair that starts with a
        loss (in the last history or the long memory), on a target not yet seen alive for
        :data:`CLEAN_HISTORY` outcomes (or a whole history, if shorter)."""
        history = self.history
        if any(history.after_loss_by_gap) or any(history.remembered):
            return False
        clean = history.count >= min(CLEAN_HISTORY, self.history_size)
        return not clean or self.never_answered()

    def never_answered(self) -> bool:
        """Whether no reply at all (in time or late) has come yet."""
        return self.rtt.samples == 0

    def burst_loss_bound(self) -> float:
        """The pessimistic chance that a loss follows a loss at the fastest spacing.

        On a path with independent loss it is the loss rate; with bursts it is higher. With no
        loss seen yet nothing is known of bursts: :data:`COLD_BURST_LOSS` (``max_loss`` on a
        target seen alive and clean for :data:`CLEAN_HISTORY` outcomes).
        """
        return self.burst_loss_bounds()[0]

    def patience(self) -> float:
        """How old a request must be before its miss counts towards DOWN."""
        return min(max(self.min_patience, 1.5 * self._rtt_peak), self._timeout)

    def run_probability(self) -> float:
        """How likely a live server is to produce the current run of misses.

        The first miss has the path's loss rate, each further one the chance that a loss
        follows a loss at its spacing; from the second refusal on, refusals count at
        ``refusal_probability``.
        """
        if self._run_refused < 2:
            return math.exp(self._run_log)
        return (
            self._run_burst_loss**self._run_timeouts * self.refusal_probability**self._run_refused
        )

    def confirm_pace(self) -> float:
        """The fastest pace of confirmation probes, from the RTT (before any reply, the
        fastest allowed: no reply can be overtaken)."""
        rto = self.rtt.rto()
        if rto is None:
            # Never answered: no reply can be overtaken, and the cold start's run is long.
            return self.min_confirm_interval
        return min(max(rto, self.min_confirm_interval), self.confirm_interval)

    def _paces(self) -> list[tuple[float, int]]:
        """The candidate paces, each with the gap bin it gives."""
        fastest = self.confirm_pace()
        paces = [fastest if pace is None else pace for pace in PACES]
        return [(pace, gap_bin(pace)) for pace in paces if pace >= fastest]

    def _probe_earning(self) -> float:
        """The probes a regular heartbeat adds to the savings (see ``probe_share``)."""
        loss = min(self._heartbeat_loss, self.max_loss)
        return max(self.probe_share, loss / (1.0 - loss))

    def _explore_pace(self, loss: float) -> tuple[float, int]:
        """The pace that plain estimates say reaches a verdict soonest: for a run's first probes.

        A loss-after-loss rate per bin, drawn towards the overall rate while a bin has few
        pairs, so a spacing little tried gets tried; the verdict never rests on these estimates
        (it uses the bounds), and after :data:`EXPLORING_PROBES` probes the pace follows the
        bounds (:meth:`_bound_pace`), so a poor guess costs a few probes' time, no more.
        """
        history = self.history
        overall = (history.losses + 1) / (history.count + 2)
        pairs, losses = history.after_loss_by_gap, history.losses_after_loss_by_gap
        log_needed = self._log_false_alarm - math.log(loss)
        best, best_time = self._paces()[0], math.inf
        for pace, gap in self._paces():
            estimate = (losses[gap] + 2 * overall) / (pairs[gap] + 2)
            estimate = min(max(estimate, 1e-6), self.max_burst_loss)
            time = (max(log_needed / math.log(estimate), 0.0) + 1) * max(pace, self._sustained)
            if time < best_time:
                best, best_time = (pace, gap), time
        return best

    def _bound_pace(self, remaining: float) -> tuple[float, float]:
        """The pace (and the log of its per-miss bound) that gathers the ``remaining`` log
        evidence soonest by the frozen bounds."""
        best, best_time = (self.confirm_interval, 0.0), math.inf
        for pace, gap in self._paces():
            log_factor = math.log(self._bounds_after(self._run_timeouts + self._run_refused)[gap])
            time = (math.floor(remaining / log_factor) + 1) * max(pace, self._sustained)
            if time < best_time:
                best, best_time = (pace, log_factor), time
        return best

    def _bounds_after(self, depth: int) -> list[float]:
        """The frozen bounds, per spacing, for a miss that follows ``depth`` misses of the run."""
        return self._run_depth_bounds[depth_level(max(depth, 1))]

    # -- the interface ------------------------------------------------------------------------

    def reply_timeout(self) -> float:
        rto = self.rtt.rto()
        if rto is None:
            return self._timeout
        return min(max(rto, self.min_timeout), self._timeout)

    def probe_at(self) -> float | None:
        if self.state is not State.SUSPECT or self._outstanding >= self._wanted:
            return None
        if self._last_sent is None:
            return None
        return self._last_sent + self._run_pace

    def check_at(self) -> float | None:
        return self._verdict_at if self.state is State.SUSPECT else None

    def check(self, now: float) -> Transition | None:
        verdict_at = self._verdict_at
        if self.state is not State.SUSPECT or verdict_at is None or now < verdict_at:
            return None
        return self._down(now, self._run_evidence(self._verdict_seq, "timeout"))

    def on_sent(self, seq: int, now: float, *, probe: bool) -> None:
        if probe:
            self._probe_savings -= 1.0
            self._probes_in_flight.add(seq)
        else:
            self._probe_savings = min(
                self._probe_savings + self._probe_earning(), self._probe_savings_cap
            )
        self._outstanding += 1
        self._last_sent = now
        self._sent_at[seq] = now

    def on_reply(self, seq: int, rtt: float, now: float) -> Transition | None:
        self._settle(now)
        probe = seq in self._probes_in_flight
        self._probes_in_flight.discard(seq)
        if math.isfinite(rtt):
            self._outcome(seq, now - rtt, lost=False, probe=probe)
        if self._outstanding:
            self._outstanding -= 1
        self._sent_at.pop(seq, None)
        if seq > self._alive_seq:
            self._alive_seq = seq
        self._add_rtt(rtt)
        return self._alive(now, "reply", seq, rtt)

    def on_late(self, seq: int, rtt: float, now: float) -> Transition | None:
        self._settle(now)
        if self._fates.get(seq) is True:  # a miss that was a delay: answered after all
            self._fates[seq] = False
        self._add_rtt(rtt)
        if self.is_old_news(rtt, now):
            return None
        if seq > self._alive_seq:
            self._alive_seq = seq
        if self.state is State.UP:
            return None
        return self._alive(now, self.late_reason(rtt), seq, rtt)

    def on_miss(self, seq: int, now: float, reason: MissReason) -> Transition | None:
        if self._outstanding:
            self._outstanding -= 1
        sent_at = self._sent_at.pop(seq, now)
        probe = seq in self._probes_in_flight
        self._probes_in_flight.discard(seq)
        self._settle(now)
        state = self.state
        if state is State.DOWN:
            return None
        self._outcome(seq, sent_at, lost=True, probe=probe)
        if seq < self._alive_seq:
            # Sent before a heartbeat that was answered: the path lost it, the server was alive.
            return None
        if state is not State.SUSPECT:
            self._start_run()
        if reason == "refused":
            self._run_refused += 1
        else:
            self._run_timeouts += 1
        last = self._run_last_sent
        # The first miss weighs the loss rate, each further one q at its spacing.
        if last is None:
            factor = self._run_loss
        else:
            depth = self._run_timeouts + self._run_refused - 1
            factor = self._bounds_after(depth)[gap_bin(abs(sent_at - last))]
        self._run_last_sent = sent_at
        self._run_sent.append(sent_at)
        self._run_seqs.append(seq)
        self._run_log += math.log(factor)
        if self._run_refused >= 2:
            if self.run_probability() < self.false_alarm:  # an answer, not a delay: at once
                return self._down(now, self._run_evidence(seq, reason))
        elif self._verdict_at is None and self._run_log < self._log_false_alarm:
            # Enough misses: DOWN once the last of them is old enough that no delayed reply
            # to it can still be on its way.
            self._verdict_at = sent_at + self._run_patience
            if self._run_cold:  # a spell of silence this short on a fresh target is no stop
                self._verdict_at = max(self._verdict_at, self._run_sent[0] + COLD_SPAN)
            self._verdict_seq = seq
            if self._verdict_at <= now:
                return self._down(now, self._run_evidence(seq, reason))
        if self._verdict_at is not None:
            self._wanted = 0
        else:
            remaining = self._log_false_alarm - self._run_log
            if self._run_timeouts + self._run_refused > EXPLORING_PROBES:
                self._run_pace, self._log_pace_loss = self._bound_pace(remaining)
            # At most this many more: each multiplies the probability by the pace's bound.
            self._wanted = math.floor(remaining / self._log_pace_loss) + 1
        if state is State.SUSPECT:
            return None
        return self._move(State.SUSPECT, now, reason, self._run_evidence(seq, reason))

    def _start_run(self) -> None:
        self._run_loss = self.loss_bound()
        self._run_bounds = self.burst_loss_bounds()
        self._run_burst_loss = self._run_bounds[0]
        self._run_depth_bounds = self.depth_loss_bounds(self._run_bounds)
        self._run_cold = self.under_cold_prior()
        if self._probe_savings >= 1.0:
            self._run_pace, pace_bin = self._explore_pace(self._run_loss)
        else:  # the savings are spent: the first probes wait out most spells of loss or delay
            self._run_pace, pace_bin = self._paces()[-1]
        self._log_pace_loss = math.log(self._run_bounds[pace_bin])
        self._run_patience = self.patience()
        self._run_history = (self.history.count, self.history.losses)
        self._run_timeouts = self._run_refused = 0
        self._run_log = 0.0
        self._run_last_sent = None
        self._run_sent = []
        self._run_seqs = []
        self._verdict_at = None

    def _outcome(self, seq: int, sent_at: float, *, lost: bool, probe: bool) -> None:
        if seq not in self._fates:
            heapq.heappush(self._unsettled, (sent_at, seq, probe))
        self._fates[seq] = lost

    def _settle(self, now: float) -> None:
        """Outcomes whose replies can no longer come join the history, in the order their
        requests left (replies and misses are heard out of that order: a miss at the
        detector's deadline, a reply at once)."""
        unsettled = self._unsettled
        if not unsettled or unsettled[0][0] + self._timeout > now:
            return
        fates, history, horizon = self._fates, self.history, now - self._timeout
        while unsettled and unsettled[0][0] <= horizon:
            sent_at, seq, probe = heapq.heappop(unsettled)
            lost = fates.pop(seq, None)
            if lost is not None:
                history.add(lost, sent_at)
                if not probe:
                    settled = self._heartbeats_settled = self._heartbeats_settled + 1
                    weight = 1.0 / min(settled, self.history_size)
                    self._heartbeat_loss += (lost - self._heartbeat_loss) * weight

    def _down(self, now: float, evidence: dict[str, float | int | str]) -> Transition | None:
        # The run's misses were the server's, not the path's: they never join the history.
        fates = self._fates
        for seq in self._run_seqs:
            if seq in fates:
                fates[seq] = None
        self._wanted = 0
        self._verdict_at = None
        misses = self._run_timeouts + self._run_refused
        return self._move(State.DOWN, now, f"{misses} misses in a row", evidence)

    def _add_rtt(self, rtt: float) -> None:
        self.rtt.add(rtt)
        if 0 <= rtt < math.inf:
            peak = self._rtt_peak * self._peak_decay
            self._rtt_peak = rtt if rtt > peak else peak

    def _run_evidence(self, seq: int, reason: MissReason) -> dict[str, float | int | str]:
        """The run's figures. ``loss`` and ``burst_loss`` are the frozen upper bounds (the
        latter at the fastest spacing); ``pace`` the spacing of the run's probes; ``patience``
        how old a miss had to be to count; ``history`` and ``history_losses`` the outcomes the
        bounds came from; ``assumed``: the loss rate is ``max_loss``, assumed rather than
        measured (no history yet, or too little to bound the rate below it)."""
        count, losses = self._run_history
        evidence: dict[str, float | int | str] = {
            "cause": reason,
            "misses": self._run_timeouts + self._run_refused,
            "refused": self._run_refused,
            "loss": round(self._run_loss, 6),
            "burst_loss": round(self._run_burst_loss, 6),
            "probability": float(f"{self.run_probability():.6g}"),
            "pace": seconds(self._run_pace),
            "patience": seconds(self._run_patience),
            "history": count,
            "history_losses": losses,
            "assumed": self._run_loss >= self.max_loss,
        }
        return {"seq": seq, **evidence}

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "false_alarm": self.false_alarm,
            "confirm_interval": self.confirm_interval,
            "min_confirm_interval": self.min_confirm_interval,
            "min_timeout": self.min_timeout,
            "max_loss": self.max_loss,
            "max_burst_loss": self.max_burst_loss,
            "min_patience": self.min_patience,
            "history": self.history_size,
            "probe_share": self.probe_share,
        }

    def _alive(self, now: float, reason: str, seq: int, rtt: float) -> Transition | None:
        state = self.state
        if state is State.UP:
            return None
        evidence = reply_evidence(seq, rtt)
        if state is State.SUSPECT:
            evidence["misses"] = self._run_timeouts + self._run_refused
        # The run's misses stay in the history as path losses (unless answered late).
        self._run_timeouts = self._run_refused = self._wanted = 0
        self._run_sent = []
        self._run_seqs = []
        self._verdict_at = None
        return self._move(State.UP, now, reason, evidence)
