"""The adaptive detector: DOWN only when a live server would almost never be this silent."""

from __future__ import annotations

import math

from udpbeat.detector.base import (
    Detector,
    MissReason,
    State,
    Transition,
    count_at_least,
    open_unit,
    positive_seconds,
    reply_evidence,
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


class LossHistory:
    """The outcomes (lost or answered) of the last ``size`` heartbeats: a ring, O(1) per outcome.

    Besides the losses it counts the consecutive pairs that start with a loss, and how many of
    those end with a loss too: the chance that a loss follows a loss, which is what tells
    bursty loss from independent loss.
    """

    __slots__ = ("_index", "_ring", "after_loss", "count", "losses", "losses_after_loss")

    def __init__(self, size: int) -> None:
        self._ring = bytearray(size)
        self._index = 0
        self.count = 0
        self.losses = 0
        self.after_loss = 0
        self.losses_after_loss = 0

    def add(self, lost: bool) -> None:
        ring = self._ring
        size = len(ring)
        index = self._index
        if self.count == size:
            oldest = ring[index]
            self.losses -= oldest
            if oldest and size > 1:  # the pair (oldest, next) leaves the window
                self.after_loss -= 1
                self.losses_after_loss -= ring[index + 1 if index + 1 < size else 0]
        else:
            self.count += 1
        if self.count > 1 and ring[index - 1]:  # index - 1 wraps to the end: the newest
            self.after_loss += 1
            self.losses_after_loss += lost
        ring[index] = lost
        self.losses += lost
        self._index = index + 1 if index + 1 < size else 0

    def add_many(self, lost: bool, times: int) -> None:
        for _ in range(min(times, len(self._ring))):
            self.add(lost)


def wilson_upper(losses: int, count: int, z: float = 3.0) -> float:
    """The upper end of the Wilson score interval for a rate seen as ``losses`` in ``count``.

    One-sided, ``z`` standard deviations (3: about 99.87 % confidence). With no outcomes it is
    1: nothing is known, so nothing is ruled out.
    """
    if count <= 0:
        return 1.0
    rate = losses / count
    z2 = z * z
    centre = rate + z2 / (2 * count)
    spread = z * math.sqrt(rate * (1 - rate) / count + z2 / (4 * count * count))
    return min(1.0, (centre + spread) / (1 + z2 / count))


class AdaptiveDetector(Detector):
    """Loss-aware: DOWN only when a live server on this path would almost never be this silent.

    It keeps the outcomes of the last ``history`` heartbeats and probes and, from them, two
    pessimistic figures (upper ends of Wilson score intervals, about 99.9 % one-sided, never
    above ``max_loss``): ``p``, the path's loss rate, and ``q``, the chance that a loss follows
    a loss (at least ``p``; higher when losses come in bursts). With no history both are
    ``max_loss``, so a fresh or short history makes it cautious, never reckless.

    On a miss it goes SUSPECT, freezes ``p`` and ``q``, and sends confirmation probes, one
    every SRTT + 4·RTTVAR bounded to ``[min_confirm_interval, confirm_interval]``, instead of
    waiting for the next regular heartbeat. A run of ``k`` misses in a row means DOWN once
    ``p·q**(k-1) < false_alarm``: a live server would produce that run less often than the
    false-alarm budget (with independent loss ``q = p``, and that is ``p**k``). Any reply, even
    a late one, ends the run: UP, and the run's misses join the history as path losses. A run
    that ends in DOWN is left out of the history, since those misses were the server's, not the
    path's. No probes are sent while DOWN, and none beyond those whose misses could still be
    needed. A miss of a heartbeat sent before one that was answered is path loss, not suspicion.

    A refusal (ICMP port unreachable) is strong evidence, but can be forged: from the second
    refusal in a run on, each counts as a miss on a path losing only ``refusal_probability``;
    a single refusal counts as an ordinary miss.

    Replies are awaited SRTT + 4·RTTVAR (RFC 6298), at least ``min_timeout`` and at most
    ``timeout``; before the first RTT sample, ``timeout``.
    """

    name = "adaptive"

    def __init__(
        self,
        timeout: float = 1.0,
        *,
        false_alarm: float = 1e-9,
        confirm_interval: float = 0.05,
        min_confirm_interval: float = 0.01,
        min_timeout: float = 0.05,
        max_loss: float = 0.6,
        history: int = 1000,
        refusal_probability: float = 1e-4,
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
        self.history_size = count_at_least("history", history, 1)
        self.refusal_probability = open_unit("refusal-probability", refusal_probability)
        self.rtt = RttEstimator()
        self.history = LossHistory(self.history_size)
        self._log_false_alarm = math.log(self.false_alarm)
        self._outstanding = 0
        self._alive_seq = -1  # the newest heartbeat known to have been answered
        self._last_sent: float | None = None
        # The current run of misses, and the loss rates frozen when it began.
        self._run_loss = self.max_loss
        self._run_burst_loss = self.max_loss
        self._log_burst_loss = math.log(self.max_loss)
        self._run_timeouts = 0
        self._run_refused = 0
        # The history the frozen rates came from: outcomes, and losses among them.
        self._run_history = (0, 0)
        self._wanted = 0  # further misses needed for DOWN

    # -- estimates ----------------------------------------------------------------------------

    def loss_bound(self) -> float:
        """The pessimistic loss rate of the path from the history (what a new run would use)."""
        history = self.history
        return min(wilson_upper(history.losses, history.count), self.max_loss)

    def burst_loss_bound(self) -> float:
        """The pessimistic chance that a loss follows a loss, never below :meth:`loss_bound`.

        On a path with independent loss it is the loss rate; with bursts it is higher. With no
        loss seen yet nothing is known of bursts: ``max_loss``.
        """
        history = self.history
        bound = wilson_upper(history.losses_after_loss, history.after_loss)
        return max(min(bound, self.max_loss), self.loss_bound())

    def run_probability(self) -> float:
        """How likely a live server is to produce the current run of misses.

        The first miss has the path's loss rate, each further one the chance that a loss
        follows a loss; from the second refusal on, refusals count at ``refusal_probability``.
        """
        timeouts, refused = self._run_timeouts, self._run_refused
        if refused < 2:
            return self._run_loss * self._run_burst_loss ** (timeouts + refused - 1)
        return self._run_burst_loss**timeouts * self.refusal_probability**refused

    def confirm_pace(self) -> float:
        rto = self.rtt.rto()
        if rto is None:
            return self.confirm_interval
        return min(max(rto, self.min_confirm_interval), self.confirm_interval)

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
        return self._last_sent + self.confirm_pace()

    def on_sent(self, seq: int, now: float, *, probe: bool) -> None:
        self._outstanding += 1
        self._last_sent = now

    def on_reply(self, seq: int, rtt: float, now: float) -> Transition | None:
        if self._outstanding:
            self._outstanding -= 1
        if seq > self._alive_seq:
            self._alive_seq = seq
        self.rtt.add(rtt)
        return self._alive(now, "reply", seq, rtt)

    def on_late(self, seq: int, rtt: float, now: float) -> Transition | None:
        self.rtt.add(rtt)
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
        state = self.state
        if state is State.DOWN:
            return None
        if seq < self._alive_seq:
            # Sent before a heartbeat that was answered: the path lost it, the server was alive.
            self.history.add(True)
            return None
        if state is not State.SUSPECT:
            self._run_loss = self.loss_bound()
            self._run_burst_loss = self.burst_loss_bound()
            self._log_burst_loss = math.log(self._run_burst_loss)
            self._run_history = (self.history.count, self.history.losses)
            self._run_timeouts = self._run_refused = 0
        if reason == "refused":
            self._run_refused += 1
        else:
            self._run_timeouts += 1
        probability = self.run_probability()
        if probability < self.false_alarm:
            self._wanted = 0
            misses = self._run_timeouts + self._run_refused
            reason_text = f"{misses} misses in a row"
            return self._move(State.DOWN, now, reason_text, self._run_evidence(seq, reason))
        # At most this many more: each multiplies the probability by the burst loss, or less.
        self._wanted = (
            math.floor((self._log_false_alarm - math.log(probability)) / self._log_burst_loss) + 1
        )
        if state is State.SUSPECT:
            return None
        return self._move(State.SUSPECT, now, reason, self._run_evidence(seq, reason))

    def _run_evidence(self, seq: int, reason: MissReason) -> dict[str, float | int | str]:
        """The run's figures. ``loss`` and ``burst_loss`` are the frozen upper bounds;
        ``history`` and ``history_losses`` the outcomes they came from; ``assumed``: the loss
        rate is ``max_loss``, assumed rather than measured (no history yet, or too little to
        bound the rate below it)."""
        count, losses = self._run_history
        return {
            "seq": seq,
            "cause": reason,
            "misses": self._run_timeouts + self._run_refused,
            "refused": self._run_refused,
            "loss": round(self._run_loss, 6),
            "burst_loss": round(self._run_burst_loss, 6),
            "probability": float(f"{self.run_probability():.6g}"),
            "history": count,
            "history_losses": losses,
            "assumed": self._run_loss >= self.max_loss,
        }

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "false_alarm": self.false_alarm,
            "confirm_interval": self.confirm_interval,
            "min_confirm_interval": self.min_confirm_interval,
            "min_timeout": self.min_timeout,
            "max_loss": self.max_loss,
            "history": self.history_size,
        }

    def _alive(self, now: float, reason: str, seq: int, rtt: float) -> Transition | None:
        state = self.state
        if state is State.UP:
            self.history.add(False)
            return None
        evidence = reply_evidence(seq, rtt)
        if state is State.SUSPECT:
            misses = self._run_timeouts + self._run_refused
            evidence["misses"] = misses
            self.history.add_many(True, misses)
        self.history.add(False)
        self._run_timeouts = self._run_refused = self._wanted = 0
        return self._move(State.UP, now, reason, evidence)
