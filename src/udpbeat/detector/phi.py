"""The phi accrual failure detector (Hayashibara et al. 2004), with Akka's parameters."""

from __future__ import annotations

import math
from collections import deque

from udpbeat.detector.base import (
    Detector,
    MissReason,
    State,
    Transition,
    count_at_least,
    non_negative_seconds,
    positive_seconds,
    reply_evidence,
    seconds,
)
from udpbeat.errors import ConfigError

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
        self.min_std_deviation = positive_seconds("min-std-deviation", min_std_deviation)
        self.acceptable_pause = non_negative_seconds("acceptable-pause", acceptable_pause)
        self.max_sample_size = count_at_least("max-sample-size", max_sample_size, 2)
        self.first_heartbeat_estimate = positive_seconds(
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
        if self.is_old_news(rtt, now):
            return None
        return self._arrival(seq, rtt, now, self.late_reason(rtt))

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
        self._set_deadlines()
        return self._move(State.UP, now, reason, reply_evidence(seq, rtt))

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
            "silence": seconds(now - self._last_arrival),
            "mean_interval": seconds(self.mean_interval()),
            "std_deviation": seconds(self.std_deviation()),
        }
