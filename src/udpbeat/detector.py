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

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

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
    loss and 3 misses, about one healthy heartbeat in 37 ends a run), and it needs
    ``max_misses`` full timeouts to notice a real stop.
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
