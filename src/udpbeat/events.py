"""What happened in a probe session: the events a shell prints, logs or hands to the API.

Every event derives from :class:`Event` (as aioquic's ``QuicEvent`` and h11's events do), is a
frozen dataclass, and carries two times: ``at``, when it happened in the session's monotonic
seconds (what RTTs and deadlines are measured on), and ``time``, the same instant as Unix time
(from the wall clock the shell last gave the session; ``None`` before it gave any).

Events about one heartbeat carry its wire sequence number ``seq`` and, for people, its
``number``: regular heartbeats are numbered 1, 2, ... as sent, and confirmation probes
(``probe``) 1, 2, ... apart, so ``--count 20`` shows heartbeats 1 to 20 however many probes went
between them. ``number`` is ``None`` only for a reply to a heartbeat sent so long ago that the
session forgot it.

:func:`event_to_dict` is the JSON shape of ``--json``: there ``at`` is Unix time, as in the
server's records, and ``monotonic`` the session's clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from udpbeat.detector import MissReason, State, Transition

#: JSON times are rounded to the nanosecond.
NANOSECOND_DIGITS = 9


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; ``kind`` is its ``type`` in JSON."""

    kind: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class HeartbeatSent(Event):
    """A heartbeat (or, with ``probe``, a confirmation probe) left; ``wall_time`` is the Unix
    time it carries on the wire."""

    kind: ClassVar[str] = "sent"

    seq: int
    at: float
    wall_time: float
    probe: bool
    number: int | None = None
    time: float | None = None


@dataclass(frozen=True, slots=True)
class ReplyReceived(Event):
    """A reply within ``--timeout``: received, whatever the detector thought meanwhile.

    ``overdue``: it came after the detector's own, shorter deadline (see
    :class:`HeartbeatOverdue`), so the detector had counted a miss and is told of it as of a
    late reply; the heartbeat is received all the same. ``timestamp``: where its arrival time
    came from, ``"kernel"`` (the socket's receive stamp) or ``"user"`` (the shell's clock).
    """

    kind: ClassVar[str] = "reply"

    seq: int
    at: float
    rtt: float
    time_difference: float
    probe: bool
    overdue: bool = False
    number: int | None = None
    time: float | None = None
    timestamp: str = "user"


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
    number: int | None = None
    time: float | None = None


@dataclass(frozen=True, slots=True)
class LateReply(Event):
    """A reply that came after ``--timeout`` (or after its heartbeat was refused): the heartbeat
    stays lost, and the reply never answers a newer one. ``rtt`` is NaN (``null`` in JSON) if
    the heartbeat was forgotten."""

    kind: ClassVar[str] = "late"

    seq: int
    at: float
    rtt: float
    time_difference: float
    probe: bool = False
    number: int | None = None
    time: float | None = None


@dataclass(frozen=True, slots=True)
class DuplicateReply(Event):
    kind: ClassVar[str] = "duplicate"

    seq: int
    at: float
    probe: bool = False
    number: int | None = None
    time: float | None = None


@dataclass(frozen=True, slots=True)
class UnknownReply(Event):
    """A well-formed reply whose sequence number this session never sent."""

    kind: ClassVar[str] = "unknown"

    seq: int
    at: float
    time: float | None = None


@dataclass(frozen=True, slots=True)
class MalformedReply(Event):
    kind: ClassVar[str] = "malformed"

    reason: str
    at: float
    size: int
    detail: str
    time: float | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatLost(Event):
    """No reply within ``--timeout`` (``timeout``), or the network refused it (``refused``)."""

    kind: ClassVar[str] = "lost"

    seq: int
    at: float
    reason: MissReason
    probe: bool
    number: int | None = None
    time: float | None = None


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    """The detector changed its verdict. ``seq``, ``number`` and ``probe`` name the heartbeat
    whose outcome caused it (``None`` when time alone did, as with ``phi``)."""

    kind: ClassVar[str] = "state"

    transition: Transition
    seq: int | None = None
    number: int | None = None
    probe: bool | None = None
    time: float | None = None

    @property
    def at(self) -> float:
        return self.transition.at


@dataclass(frozen=True, slots=True)
class SessionFinished(Event):
    """The run ended in ``state``; ``received``: replies received in the whole run (0: nothing
    ever answered)."""

    kind: ClassVar[str] = "finished"

    at: float
    state: State
    received: int = 0
    time: float | None = None


def seconds(value: float | None) -> float | None:
    """A time for JSON: rounded to the nanosecond; ``None`` for a missing or NaN one."""
    if value is None or math.isnan(value):
        return None
    return round(value, NANOSECOND_DIGITS)


def event_to_dict(event: Event) -> dict[str, object]:
    """An event as a JSON-ready dict: ``type``, its fields (times in seconds, rounded to the
    nanosecond), ``at`` as Unix time and ``monotonic`` as the session's clock."""
    fields: dict[str, object] = {"type": event.kind}
    if isinstance(event, StateChanged):
        transition = event.transition.to_dict()
        del transition["at"]
        fields.update(transition)
    name: str
    for name in event.__slots__:
        if name in ("at", "time", "transition"):
            continue
        value = getattr(event, name)
        if isinstance(value, float):
            value = seconds(value)
        fields[name] = str(value) if isinstance(value, State) else value
    fields["at"] = seconds(getattr(event, "time", None))
    fields["monotonic"] = seconds(getattr(event, "at", None))
    return fields
