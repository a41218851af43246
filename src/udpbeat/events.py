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
    """A reply within ``--timeout``: received, whatever the detector thought meanwhile.

    ``overdue``: it came after the detector's own, shorter deadline (see
    :class:`HeartbeatOverdue`), so the detector had counted a miss and is told of it as of a
    late reply; the heartbeat is received all the same.
    """

    kind: ClassVar[str] = "reply"

    seq: int
    at: float
    rtt: float
    time_difference: float
    probe: bool
    overdue: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatOverdue(Event):
    """The detector's own deadline for this heartbeat passed (``waited`` seconds after it left,
    less than ``--timeout``): the detector is told of a miss and may suspect the server, but
    the heartbeat still waits for its reply until the timeout. Quiet: shown in JSON and in
    verbose output only."""

    kind: ClassVar[str] = "overdue"

    seq: int
    at: float
    waited: float
    probe: bool


@dataclass(frozen=True, slots=True)
class LateReply(Event):
    """A reply that came after ``--timeout`` (or after its heartbeat was refused): the heartbeat
    stays lost, and the reply never answers a newer one."""

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
    """No reply within ``--timeout`` (``timeout``), or the network refused it (``refused``)."""

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
