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

import math
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
        #: When the current DOWN verdict was given (``None`` while not DOWN).
        self.down_since: float | None = None

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
        self.down_since = now if new is State.DOWN else None
        return transition

    def late_reason(self, rtt: float) -> str:
        """The reason a reply after a counted miss gives: ``slow reply`` if it came within the
        timeout (after the detector's own deadline: the heartbeat is received), else
        ``late reply`` (the heartbeat stays lost)."""
        return "slow reply" if rtt < self._timeout else "late reply"

    def is_old_news(self, rtt: float, now: float) -> bool:
        """Whether a late reply says nothing about the server as it is now: the one rule for
        late replies, shared by every detector that listens to them.

        A reply whose heartbeat was forgotten (``rtt`` NaN) could be from any time: ignored in
        every state. While DOWN, a reply whose heartbeat left before the verdict is ignored too:
        the verdict already weighed that heartbeat's silence.
        """
        if not math.isfinite(rtt):
            return True
        down_since = self.down_since
        return down_since is not None and now - rtt < down_since


# --- shared helpers ----------------------------------------------------------------------------


def positive_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def non_negative_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def open_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def count_at_least(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def seconds(value: float) -> float:
    """A time for evidence: rounded to the nanosecond, so JSON shows ``0.000367215``, never
    ``0.0003672149999829344``."""
    return round(value, 9)


def reply_evidence(seq: int, rtt: float) -> dict[str, float | int | str]:
    # A late reply whose heartbeat was forgotten has no RTT; NaN has no place in JSON.
    return {"seq": seq, "rtt": seconds(rtt)} if math.isfinite(rtt) else {"seq": seq}
