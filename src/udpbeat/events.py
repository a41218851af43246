"""What happened in a probe session: the events a shell prints, logs or hands to the API.

Every event derives from :class:`Event` (as aioquic's ``QuicEvent`` and h11's events do), is a
frozen dataclass, and carries ``at``: when it happened, in the session's monotonic seconds.
:func:`event_to_dict` is the JSON shape of ``--json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from udpbeat.detector import MissReason, State, Transition


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; ``kind`` is its ``type`` in JSON."""

    kind: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class HeartbeatSent(Event):
    kind: ClassVar[str] = "sent"

    seq: int
    at: float
    wall_time: float
    probe: bool


@dataclass(frozen=True, slots=True)
class ReplyReceived(Event):
    kind: ClassVar[str] = "reply"

    seq: int
    at: float
    rtt: float
    time_difference: float
    probe: bool


@dataclass(frozen=True, slots=True)
class LateReply(Event):
    """A reply that came after its heartbeat had timed out; it never answers a newer one."""

    kind: ClassVar[str] = "late"

    seq: int
    at: float
    rtt: float
    time_difference: float


@dataclass(frozen=True, slots=True)
class DuplicateReply(Event):
    kind: ClassVar[str] = "duplicate"

    seq: int
    at: float


@dataclass(frozen=True, slots=True)
class UnknownReply(Event):
    """A well-formed reply whose sequence number this session never sent."""

    kind: ClassVar[str] = "unknown"

    seq: int
    at: float


@dataclass(frozen=True, slots=True)
class MalformedReply(Event):
    kind: ClassVar[str] = "malformed"

    reason: str
    at: float
    size: int
    detail: str


@dataclass(frozen=True, slots=True)
class HeartbeatLost(Event):
    kind: ClassVar[str] = "lost"

    seq: int
    at: float
    reason: MissReason
    probe: bool


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    kind: ClassVar[str] = "state"

    transition: Transition

    @property
    def at(self) -> float:
        return self.transition.at


@dataclass(frozen=True, slots=True)
class SessionFinished(Event):
    kind: ClassVar[str] = "finished"

    at: float
    state: State


def event_to_dict(event: Event) -> dict[str, object]:
    """An event as a JSON-ready dict: ``type`` plus its fields (times in seconds)."""
    if isinstance(event, StateChanged):
        return {"type": "state", **event.transition.to_dict()}
    fields: dict[str, object] = {"type": event.kind}
    name: str
    for name in event.__slots__:
        value = getattr(event, name)
        if isinstance(value, float) and math.isnan(value):
            value = None
        fields[name] = str(value) if isinstance(value, State) else value
    return fields
