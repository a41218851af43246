"""Failure detectors: from heartbeat outcomes to a verdict on the server.

Pure and clock-injected: every method takes ``now`` (monotonic seconds), so the same detector runs
under a real prober and under the simulator's virtual clock. All detectors share one state
machine, in the spirit of BFD (RFC 5880)::

    UNKNOWN --reply--> UP --miss--> SUSPECT --enough evidence--> DOWN --reply--> UP
                        ^              |
                        +----reply-----+

A detector is told what happened to each heartbeat (:meth:`Detector.on_sent`,
:meth:`~Detector.on_reply`, :meth:`~Detector.on_miss`, :meth:`~Detector.on_late`) and answers with
the :class:`Transition` it caused, if any. It may also steer the prober: how long to wait for a
reply (:meth:`~Detector.reply_timeout`), when to send an extra confirmation probe
(:meth:`~Detector.probe_at`), and when it wants to be woken to re-evaluate on time alone
(:meth:`~Detector.check_at` / :meth:`~Detector.check`).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from udpbeat.errors import ConfigError

MissReason = Literal["timeout", "refused"]
Evidence = Mapping[str, float | int | str]


class State(StrEnum):
    UNKNOWN = "UNKNOWN"
    UP = "UP"
    SUSPECT = "SUSPECT"
    DOWN = "DOWN"


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, when it happened, and the evidence that caused it."""

    at: float
    old: State
    new: State
    reason: str
    evidence: Evidence = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "old": str(self.old),
            "new": str(self.new),
            "reason": self.reason,
            "evidence": dict(self.evidence),
        }


class Detector(ABC):
    """The interface every detector implements; subclasses decide when to move between states."""

    #: The name used by ``udpbeat client --detector NAME``.
    name: str = ""

    def __init__(self, timeout: float) -> None:
        if not timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.state = State.UNKNOWN
        self._timeout = timeout

    def reply_timeout(self) -> float:
        """How long to wait for the reply to a heartbeat sent now."""
        return self._timeout

    def probe_at(self) -> float | None:
        """When the detector wants an extra confirmation probe sent (``None``: no probe wanted)."""
        return None

    def check_at(self) -> float | None:
        """When :meth:`check` should next run even if nothing else happens (``None``: never)."""
        return None

    def check(self, now: float) -> Transition | None:
        """Re-evaluate on the passage of time alone."""
        return None

    def on_sent(self, seq: int, now: float, *, probe: bool) -> None:  # noqa: B027
        """A heartbeat (or, with ``probe``, a confirmation probe) left at ``now``."""

    @abstractmethod
    def on_reply(self, seq: int, rtt: float, now: float) -> Transition | None:
        """A reply arrived within its timeout, ``rtt`` seconds after its heartbeat left."""

    @abstractmethod
    def on_miss(self, seq: int, now: float, reason: MissReason) -> Transition | None:
        """A heartbeat timed out, or the network reported it undeliverable (``refused``)."""

    def on_late(self, seq: int, rtt: float, now: float) -> Transition | None:
        """A reply arrived after its timeout: the server was alive then, but too slow."""
        return None

    def describe(self) -> dict[str, object]:
        """The detector's name and parameters, for reports."""
        return {"name": self.name, "timeout": self._timeout}

    def _move(self, new: State, now: float, reason: str, evidence: Evidence) -> Transition | None:
        if new is self.state:
            return None
        transition = Transition(now, self.state, new, reason, evidence)
        self.state = new
        return transition


class ConsecutiveDetector(Detector):
    """The exercise's rule: DOWN after ``max_misses`` consecutive misses; any reply means UP.

    Kept for compatibility and as the baseline: on a lossy path it raises false alarms (at 30%
    loss and 3 misses, a healthy server is declared down once every 53 heartbeats on average,
    a rate of (1-p)·p³ per heartbeat), and it needs ``max_misses`` full timeouts to notice a
    real stop.
    """

    name = "consecutive"

    def __init__(self, max_misses: int = 3, timeout: float = 1.0) -> None:
        super().__init__(timeout)
        if isinstance(max_misses, bool) or not isinstance(max_misses, int) or max_misses < 1:
            raise ConfigError(f"max-misses must be an integer >= 1, got {max_misses!r}")
        self.max_misses = max_misses
        self.misses = 0

    def on_reply(self, seq: int, rtt: float, now: float) -> Transition | None:
        self.misses = 0
        return self._move(State.UP, now, "reply", {"seq": seq, "rtt": rtt})

    def on_miss(self, seq: int, now: float, reason: MissReason) -> Transition | None:
        self.misses += 1
        evidence = {"seq": seq, "misses": self.misses, "cause": reason}
        if self.misses >= self.max_misses:
            return self._move(State.DOWN, now, f"{self.misses} consecutive misses", evidence)
        if self.state is State.DOWN:
            return None
        return self._move(State.SUSPECT, now, reason, evidence)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "max_misses": self.max_misses}


# --- shared helpers ----------------------------------------------------------------------------


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _open_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _reply_evidence(seq: int, rtt: float) -> dict[str, float | int | str]:
    # A late reply whose heartbeat was forgotten has no RTT; NaN has no place in JSON.
    return {"seq": seq, "rtt": rtt} if math.isfinite(rtt) else {"seq": seq}


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


# --- adaptive ----------------------------------------------------------------------------------


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
        self.false_alarm = _open_unit("false-alarm", false_alarm)
        self.confirm_interval = _positive("confirm-interval", confirm_interval)
        self.min_confirm_interval = _positive("min-confirm-interval", min_confirm_interval)
        if self.min_confirm_interval > self.confirm_interval:
            raise ConfigError(
                f"confirm-interval must be at least min-confirm-interval "
                f"({min_confirm_interval} s, the fastest safe pace), got {confirm_interval}"
            )
        self.min_timeout = _positive("min-timeout", min_timeout)
        self.max_loss = _open_unit("max-loss", max_loss)
        self.history_size = _count("history", history, 1)
        self.refusal_probability = _open_unit("refusal-probability", refusal_probability)
        self.rtt = RttEstimator()
        self.history = LossHistory(self.history_size)
        self._log_false_alarm = math.log(self.false_alarm)
        self._outstanding = 0
        self._alive_seq = -1  # the newest heartbeat known to have been answered
        self._last_sent: float | None = None
        self._down_at: float | None = None
        # The current run of misses, and the loss rates frozen when it began.
        self._run_loss = self.max_loss
        self._run_burst_loss = self.max_loss
        self._log_burst_loss = math.log(self.max_loss)
        self._run_timeouts = 0
        self._run_refused = 0
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
        if self.state is State.DOWN and not (
            self._down_at is not None and now - rtt >= self._down_at
        ):
            return None  # old news: it left before the verdict (or its age is unknown)
        if seq > self._alive_seq:
            self._alive_seq = seq
        if self.state is State.UP:
            return None
        return self._alive(now, "late reply", seq, rtt)

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
            self._run_timeouts = self._run_refused = 0
        if reason == "refused":
            self._run_refused += 1
        else:
            self._run_timeouts += 1
        probability = self.run_probability()
        if probability < self.false_alarm:
            self._wanted = 0
            self._down_at = now
            misses = self._run_timeouts + self._run_refused
            reason_text = f"{misses} misses in a row, p={probability:.2g}"
            return self._move(State.DOWN, now, reason_text, self._run_evidence(seq, reason))
        # At most this many more: each multiplies the probability by the burst loss, or less.
        self._wanted = (
            math.floor((self._log_false_alarm - math.log(probability)) / self._log_burst_loss) + 1
        )
        if state is State.SUSPECT:
            return None
        return self._move(State.SUSPECT, now, reason, self._run_evidence(seq, reason))

    def _run_evidence(self, seq: int, reason: MissReason) -> dict[str, float | int | str]:
        return {
            "seq": seq,
            "cause": reason,
            "misses": self._run_timeouts + self._run_refused,
            "refused": self._run_refused,
            "loss": round(self._run_loss, 6),
            "burst_loss": round(self._run_burst_loss, 6),
            "probability": self.run_probability(),
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
        evidence = _reply_evidence(seq, rtt)
        if state is State.SUSPECT:
            misses = self._run_timeouts + self._run_refused
            evidence["misses"] = misses
            self.history.add_many(True, misses)
        self.history.add(False)
        self._run_timeouts = self._run_refused = self._wanted = 0
        self._down_at = None
        return self._move(State.UP, now, reason, evidence)


# --- phi accrual -------------------------------------------------------------------------------

# Akka's logistic approximation of the normal tail: P(X > mean + y·std) ≈ 1 / (1 + e^a),
# a = y·(1.5976 + 0.070566·y²); phi = -log10 of that probability.
_LOGISTIC_LINEAR = 1.5976
_LOGISTIC_CUBIC = 0.070566


def phi_of(y: float) -> float:
    """Suspicion for a silence ``y`` standard deviations past the mean: ``log10(1 + e^a)``."""
    a = y * (_LOGISTIC_LINEAR + _LOGISTIC_CUBIC * y * y)
    if a > 30.0:
        return (a + math.log1p(math.exp(-a))) / _LN10
    return math.log1p(math.exp(a)) / _LN10


def deviations_for_phi(phi: float) -> float:
    """The inverse of :func:`phi_of`: how many standard deviations reach ``phi``."""
    a = math.log(math.expm1(phi * _LN10))
    # The real root of y³ + p·y + q = 0 (p > 0: exactly one), by Cardano's formula.
    p = _LOGISTIC_LINEAR / _LOGISTIC_CUBIC
    q = -a / _LOGISTIC_CUBIC
    root = math.sqrt(q * q / 4 + p * p * p / 27)
    return math.cbrt(-q / 2 + root) + math.cbrt(-q / 2 - root)


_LN10 = math.log(10.0)


class PhiDetector(Detector):
    """The phi accrual detector (Hayashibara et al. 2004), with Akka's parameters.

    It learns the distribution of the time between replies (the last ``max_sample_size``
    intervals; mean and standard deviation, the latter at least ``min_std_deviation``) and
    rates the current silence ``t`` as ``phi = -log10 P(interval > t)`` under a normal model
    whose mean is lengthened by ``acceptable_pause``. It decides on time alone (misses are not
    evidence to it): SUSPECT once phi reaches ``suspect_threshold`` (default half of
    ``threshold``), DOWN once it reaches ``threshold``; any reply means UP. Before the first
    reply the history holds ``first_heartbeat_estimate`` ± a quarter of it, as in Akka, and the
    silence is counted from the first heartbeat sent. Every interval is learnt, as in Akka, even
    one that spans a DOWN verdict: on a lossy path most DOWN verdicts are wrong, and only by
    learning those long gaps does the detector widen its distribution and stop raising them.

    Unlike Akka's, these heartbeats are answers to requests, so silence counts only while
    requests go out: up to one send gap past the last heartbeat sent. When a run's last
    heartbeats are out, waiting for their replies is no reason to suspect the server.
    """

    name = "phi"

    def __init__(
        self,
        timeout: float = 1.0,
        *,
        threshold: float = 8.0,
        min_std_deviation: float = 0.1,
        acceptable_pause: float = 0.0,
        max_sample_size: int = 1000,
        first_heartbeat_estimate: float = 1.0,
        suspect_threshold: float | None = None,
    ) -> None:
        super().__init__(timeout)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            threshold = math.nan
        if not 0 < threshold <= 300:
            raise ConfigError(f"phi-threshold must be a number in (0, 300], got {threshold!r}")
        self.threshold = float(threshold)
        if suspect_threshold is None:
            suspect_threshold = self.threshold / 2
        elif isinstance(suspect_threshold, bool) or not isinstance(suspect_threshold, int | float):
            suspect_threshold = math.nan
        if not 0 < suspect_threshold < self.threshold:
            raise ConfigError(
                f"suspect-threshold must be > 0 and below phi-threshold ({threshold}), "
                f"got {suspect_threshold!r}"
            )
        self.suspect_threshold = float(suspect_threshold)
        self.min_std_deviation = _positive("min-std-deviation", min_std_deviation)
        self.acceptable_pause = _non_negative("acceptable-pause", acceptable_pause)
        self.max_sample_size = _count("max-sample-size", max_sample_size, 2)
        self.first_heartbeat_estimate = _positive(
            "first-heartbeat-estimate", first_heartbeat_estimate
        )
        self._suspect_y = deviations_for_phi(self.suspect_threshold)
        self._down_y = deviations_for_phi(self.threshold)
        self._intervals: deque[float] = deque(maxlen=self.max_sample_size)
        self._sum = 0.0
        self._sum_squares = 0.0
        self._since_exact = 0
        estimate, spread = self.first_heartbeat_estimate, self.first_heartbeat_estimate / 4
        self._learn(estimate - spread)
        self._learn(estimate + spread)
        self._last_arrival: float | None = None  # or the first send, before any reply
        self._last_sent: float | None = None
        self._send_gap = self.first_heartbeat_estimate
        self._replied = False
        self._down_at: float | None = None
        self._suspect_deadline = math.inf
        self._down_deadline = math.inf

    # -- estimates ----------------------------------------------------------------------------

    def mean_interval(self) -> float:
        return self._sum / len(self._intervals)

    def std_deviation(self) -> float:
        count = len(self._intervals)
        mean = self._sum / count
        variance = max(self._sum_squares / count - mean * mean, 0.0)
        return max(math.sqrt(variance), self.min_std_deviation)

    def phi(self, now: float) -> float:
        """The suspicion level at ``now`` (0 before the first heartbeat is sent)."""
        if self._last_arrival is None:
            return 0.0
        mean = self.mean_interval() + self.acceptable_pause
        return phi_of((now - self._last_arrival - mean) / self.std_deviation())

    # -- the interface ------------------------------------------------------------------------

    def check_at(self) -> float | None:
        state = self.state
        if state is State.DOWN or self._last_arrival is None:
            return None
        deadline = self._down_deadline if state is State.SUSPECT else self._suspect_deadline
        # Beyond the horizon only a new heartbeat can raise suspicion, and the prober wakes
        # for that anyway.
        return deadline if deadline <= self._horizon() else None

    def check(self, now: float) -> Transition | None:
        state = self.state
        if state is State.DOWN or self._last_arrival is None:
            return None
        heard_of = min(now, self._horizon())
        if heard_of >= self._down_deadline:
            self._down_at = now
            evidence = self._evidence(heard_of)
            return self._move(State.DOWN, now, f"phi >= {self.threshold:g}", evidence)
        if heard_of >= self._suspect_deadline and state is not State.SUSPECT:
            evidence = self._evidence(heard_of)
            return self._move(State.SUSPECT, now, f"phi >= {self.suspect_threshold:g}", evidence)
        return None

    def on_sent(self, seq: int, now: float, *, probe: bool) -> None:
        if self._last_arrival is None:
            self._last_arrival = now
            self._set_deadlines()
        if probe:
            return
        last = self._last_sent
        if last is not None and now > last:
            self._send_gap = now - last
        self._last_sent = now

    def on_reply(self, seq: int, rtt: float, now: float) -> Transition | None:
        return self._arrival(seq, rtt, now, "reply")

    def on_late(self, seq: int, rtt: float, now: float) -> Transition | None:
        if self.state is State.DOWN and not (
            self._down_at is not None and now - rtt >= self._down_at
        ):
            return None  # it left before the verdict (or its age is unknown): old news
        return self._arrival(seq, rtt, now, "late reply")

    def on_miss(self, seq: int, now: float, reason: MissReason) -> Transition | None:
        return self.check(now)

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "threshold": self.threshold,
            "suspect_threshold": self.suspect_threshold,
            "min_std_deviation": self.min_std_deviation,
            "acceptable_pause": self.acceptable_pause,
            "max_sample_size": self.max_sample_size,
            "first_heartbeat_estimate": self.first_heartbeat_estimate,
        }

    # -- internals ----------------------------------------------------------------------------

    def _arrival(self, seq: int, rtt: float, now: float, reason: str) -> Transition | None:
        last = self._last_arrival
        if self._replied and last is not None and now >= last:
            self._learn(now - last)
        if last is None or now >= last:
            self._last_arrival = now
        self._replied = True
        self._down_at = None
        self._set_deadlines()
        return self._move(State.UP, now, reason, _reply_evidence(seq, rtt))

    def _learn(self, interval: float) -> None:
        intervals = self._intervals
        if len(intervals) == intervals.maxlen:
            oldest = intervals[0]
            self._sum -= oldest
            self._sum_squares -= oldest * oldest
        intervals.append(interval)
        self._sum += interval
        self._sum_squares += interval * interval
        self._since_exact += 1
        if self._since_exact >= self.max_sample_size:
            # Running sums drift with rounding; recompute them once per window.
            self._since_exact = 0
            self._sum = math.fsum(intervals)
            self._sum_squares = math.fsum(x * x for x in intervals)

    def _set_deadlines(self) -> None:
        assert self._last_arrival is not None
        base = self._last_arrival + self.mean_interval() + self.acceptable_pause
        std = self.std_deviation()
        self._suspect_deadline = base + self._suspect_y * std
        self._down_deadline = base + self._down_y * std

    def _horizon(self) -> float:
        """How far silence counts: one send gap past the last heartbeat sent."""
        last = self._last_sent
        return math.inf if last is None else last + self._send_gap

    def _evidence(self, now: float) -> dict[str, float | int | str]:
        assert self._last_arrival is not None
        return {
            "phi": round(self.phi(now), 3),
            "silence": now - self._last_arrival,
            "mean_interval": self.mean_interval(),
            "std_deviation": self.std_deviation(),
        }


# --- choosing one by name ----------------------------------------------------------------------

#: Every detector by the name ``udpbeat client --detector`` knows it by.
DETECTORS: dict[str, type[Detector]] = {
    AdaptiveDetector.name: AdaptiveDetector,
    ConsecutiveDetector.name: ConsecutiveDetector,
    PhiDetector.name: PhiDetector,
}


def detector_parameters(name: str) -> tuple[str, ...]:
    """The keyword parameters (besides ``timeout``) the detector ``name`` accepts."""
    signature = inspect.signature(_detector_class(name))
    return tuple(p for p in signature.parameters if p != "timeout")


def make_detector(name: str, timeout: float, **params: Any) -> Detector:
    """A detector by name, e.g. ``make_detector("phi", 1.0, threshold=10)``.

    Raises:
        ConfigError: unknown name, unknown parameter, or a value out of range.
    """
    accepted = detector_parameters(name)
    for key in params:
        if key not in accepted:
            raise ConfigError(
                f"detector {name!r} has no parameter {key!r}; it takes: {', '.join(accepted)}"
            )
    return _detector_class(name)(timeout=timeout, **params)


def _detector_class(name: str) -> type[Detector]:
    cls = DETECTORS.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown detector {name!r}; choose one of: {', '.join(sorted(DETECTORS))}"
        )
    return cls
