"""The exercise's rule: DOWN after a number of consecutive misses."""

from __future__ import annotations

from udpbeat.detector.base import Detector, MissReason, State, Transition, reply_evidence
from udpbeat.errors import ConfigError


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
        return self._move(State.UP, now, "reply", reply_evidence(seq, rtt))

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
