"""The figures of a finished (or interrupted) run, and the one place their JSON shape lives."""

from __future__ import annotations

from dataclasses import dataclass, field

from udpbeat.detector import State, Transition
from udpbeat.stats import Summary


@dataclass(frozen=True, slots=True)
class Outage:
    """A period the detector held the server DOWN; ``end`` is ``None`` if it was still down."""

    start: float
    end: float | None
    heartbeats_lost: int

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "duration_s": self.duration,
            "heartbeats_lost": self.heartbeats_lost,
        }


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """The figures of a run. Times are in seconds; :meth:`to_dict` gives the stable JSON keys."""

    target: str
    sent: int
    probes: int
    received: int
    lost: int
    refused: int
    late: int
    duplicates: int
    unknown: int
    malformed: dict[str, int]
    in_flight: int
    rtt: Summary
    jitter: float | None
    time_difference: Summary
    state: State
    detector: dict[str, object]
    transitions: tuple[Transition, ...]
    outages: tuple[Outage, ...]
    duration: float
    #: Socket errors other than refusals, by kind (``refused-stale``: an ICMP error for a
    #: heartbeat no longer waiting; ``icmp-elsewhere``: one sent by another host, ignored).
    socket_errors: dict[str, int] = field(default_factory=dict)
    #: The run's first sequence number (random unless configured).
    first_seq: int = 1

    @property
    def loss(self) -> float | None:
        """Fraction of resolved heartbeats with no reply in time (late replies count as lost)."""
        resolved = self.sent - self.in_flight
        return None if resolved <= 0 else 1.0 - self.received / resolved

    def to_dict(self) -> dict[str, object]:
        loss = self.loss
        return {
            "type": "summary",
            "target": self.target,
            "sent": self.sent,
            "probes": self.probes,
            "received": self.received,
            "lost": self.lost,
            "refused": self.refused,
            "late": self.late,
            "duplicates": self.duplicates,
            "unknown": self.unknown,
            "malformed": dict(self.malformed),
            "in_flight": self.in_flight,
            "loss_percent": None if loss is None else round(100.0 * loss, 3),
            "rtt_ms": _milliseconds(self.rtt),
            "jitter_ms": None if self.jitter is None else self.jitter * 1e3,
            "time_difference_ms": _milliseconds(self.time_difference),
            "state": str(self.state),
            "detector": dict(self.detector),
            "transitions": [t.to_dict() for t in self.transitions],
            "outages": [o.to_dict() for o in self.outages],
            "duration_s": self.duration,
            "socket_errors": dict(sorted(self.socket_errors.items())),
            "first_seq": self.first_seq,
        }


def _milliseconds(summary: Summary) -> dict[str, float | int | None]:
    return {
        key: (value if key == "count" or value is None else value * 1e3)
        for key, value in summary.to_dict().items()
    }
