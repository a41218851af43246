"""The prober's logic as a pure object driven by ``now`` (the sans-I/O core of the client).

:class:`ProbeSession` numbers heartbeats, matches every reply to its request by sequence number,
expires timeouts, asks its :class:`~udpbeat.detector.Detector` for a verdict and keeps the
statistics. It never touches a socket or reads a clock; an I/O shell drives it::

    session = ProbeSession(config, detector, now=monotonic())
    while not session.finished:
        wait until session.get_timer(), or for a datagram / socket error
        session.receive_datagram(data, now)      # or session.receive_error(now)
        session.handle_timer(now, wall_time)     # sends what is due, expires timeouts
        send every datagram of session.datagrams_to_send()
        handle every event of session.events()

``now`` is monotonic seconds (RTTs and deadlines); ``wall_time`` is Unix time, used only for the
timestamp the exercise's format carries. The detector simulator drives this same object on a
virtual clock.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from udpbeat.detector import Detector, MissReason, State, Transition
from udpbeat.errors import ConfigError, WireError
from udpbeat.stats import Jitter, Series, Summary
from udpbeat.wire import text

#: How many answered or expired sequence numbers are remembered, to tell late and duplicate
#: replies apart from unknown ones. Older replies are counted as late.
REMEMBERED_SEQUENCES = 65536


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """What to send and how long to wait.

    ``count`` regular heartbeats (``None``: until stopped), one every ``interval`` seconds
    (``0``: the next as soon as the previous one is answered or timed out, as the exercise
    paces them); ``timeout`` is the longest wait for a reply. With ``watch``, a DOWN verdict does
    not end the run.
    """

    count: int | None = 100
    interval: float = 1.0
    timeout: float = 1.0
    watch: bool = False
    first_seq: int = 1

    def __post_init__(self) -> None:
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1
        ):
            raise ConfigError(
                f"count must be an integer >= 1 (or None for no limit), got {self.count!r}"
            )
        if not (math.isfinite(self.interval) and self.interval >= 0):
            raise ConfigError(f"interval must be >= 0 seconds, got {self.interval!r}")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if not 0 <= self.first_seq <= text.MAX_SEQUENCE:
            raise ConfigError(
                f"first sequence number must be in [0, 2**63-1], got {self.first_seq!r}"
            )


# --- events: what happened, for the shell to print -------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatSent:
    seq: int
    at: float
    wall_time: float
    probe: bool


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    seq: int
    at: float
    rtt: float
    time_difference: float
    probe: bool


@dataclass(frozen=True, slots=True)
class LateReply:
    """A reply that came after its heartbeat had timed out; it never answers a newer one."""

    seq: int
    at: float
    rtt: float
    time_difference: float


@dataclass(frozen=True, slots=True)
class DuplicateReply:
    seq: int
    at: float


@dataclass(frozen=True, slots=True)
class UnknownReply:
    """A well-formed reply whose sequence number this session never sent."""

    seq: int
    at: float


@dataclass(frozen=True, slots=True)
class MalformedReply:
    reason: str
    at: float
    size: int
    detail: str


@dataclass(frozen=True, slots=True)
class HeartbeatLost:
    seq: int
    at: float
    reason: MissReason
    probe: bool


@dataclass(frozen=True, slots=True)
class StateChanged:
    transition: Transition


@dataclass(frozen=True, slots=True)
class SessionFinished:
    at: float
    state: State


Event = (
    HeartbeatSent
    | ReplyReceived
    | LateReply
    | DuplicateReply
    | UnknownReply
    | MalformedReply
    | HeartbeatLost
    | StateChanged
    | SessionFinished
)


# --- the report ------------------------------------------------------------------------------


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
        }


def _milliseconds(summary: Summary) -> dict[str, float | int | None]:
    return {
        key: (value if key == "count" or value is None else value * 1e3)
        for key, value in summary.to_dict().items()
    }


# --- the session -----------------------------------------------------------------------------


class _Fate(Enum):
    ANSWERED = "answered"
    EXPIRED = "expired"


@dataclass(slots=True)
class _Pending:
    sent_at: float
    deadline: float
    probe: bool


@dataclass(slots=True)
class _Tally:
    sent: int = 0
    probes: int = 0
    received: int = 0
    lost: int = 0
    refused: int = 0
    late: int = 0
    duplicates: int = 0
    unknown: int = 0
    malformed: Counter[str] = field(default_factory=Counter)


class ProbeSession:
    """Sequence numbers, reply matching, timeouts, probes and the detector, driven by ``now``."""

    def __init__(
        self, config: ProbeConfig, detector: Detector, now: float, *, target: str = ""
    ) -> None:
        self.config = config
        self.detector = detector
        self.target = target
        self.finished = False
        self._started = now
        self._ended: float | None = None
        self._next_seq = config.first_seq
        self._regular_sent = 0
        self._next_send: float | None = now
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._resolved: OrderedDict[int, _Fate] = OrderedDict()
        self._sent_at_of_expired: dict[int, float] = {}
        self._outgoing: list[bytes] = []
        self._events: deque[Event] = deque()
        self._tally = _Tally()
        self._rtt = Series()
        self._time_difference = Series()
        self._jitter = Jitter()
        self._transitions: list[Transition] = []
        self._outages: list[Outage] = []
        self._outage_start: float | None = None
        self._outage_lost = 0

    # -- driving ------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next monotonic time at which :meth:`handle_timer` has work, or ``None``."""
        if self.finished:
            return None
        # The earliest of four optional times, without building lists: this runs after every
        # datagram and timer, millions of times in the simulator.
        detector = self.detector
        when = detector.probe_at()
        check = detector.check_at()
        if check is not None and (when is None or check < when):
            when = check
        next_send = self._next_send
        if (
            next_send is not None
            and (when is None or next_send < when)
            and not self._all_regular_sent()
        ):
            when = next_send
        if self._deadlines:
            deadline = self._deadlines[0][0]
            if when is None or deadline < when:
                when = deadline
        return when

    def handle_timer(self, now: float, wall_time: float) -> None:
        """Expire timeouts, then send the heartbeat or probe that is due."""
        if self.finished:
            return
        self._expire(now)
        self._record(self.detector.check(now), now)
        if not self.finished and self._send_due(now) and not self._all_regular_sent():
            self._send(now, wall_time, probe=False)
            self._regular_sent += 1
            interval = self.config.interval
            if interval > 0:
                assert self._next_send is not None
                self._next_send = max(self._next_send + interval, now)
            else:
                self._next_send = None
        probe_at = self.detector.probe_at()
        if not self.finished and probe_at is not None and probe_at <= now:
            self._send(now, wall_time, probe=True)
        self._maybe_finish(now)

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Match a reply to its heartbeat by sequence number; count anything else."""
        if self.finished:
            return
        # The shell may read a datagram before it runs a timer that was due first: expire now,
        # so that a reply arriving after its deadline is late, never received.
        self._expire(now)
        if self.finished:
            return
        try:
            reply = text.decode_reply(data)
        except WireError as error:
            self._tally.malformed[error.reason] += 1
            self._events.append(MalformedReply(error.reason, now, len(data), str(error)))
            self._maybe_finish(now)
            return
        seq = reply.seq
        pending = self._pending.pop(seq, None)
        if pending is not None:
            rtt = now - pending.sent_at
            self._tally.received += 1
            self._rtt.add(rtt)
            self._jitter.add(rtt)
            self._time_difference.add(reply.time_difference)
            self._remember(seq, _Fate.ANSWERED)
            self._events.append(ReplyReceived(seq, now, rtt, reply.time_difference, pending.probe))
            self._record(self.detector.on_reply(seq, rtt, now), now)
            self._resolved_one(now, pending)
            self._maybe_finish(now)
            return
        fate = self._resolved.get(seq)
        if fate is _Fate.ANSWERED:
            self._tally.duplicates += 1
            self._events.append(DuplicateReply(seq, now))
        elif fate is _Fate.EXPIRED or self._forgotten(seq):
            # Marked answered so that a second copy of a late reply counts as a duplicate.
            self._remember(seq, _Fate.ANSWERED)
            self._tally.late += 1
            sent_at = self._sent_at_of_expired.pop(seq, None)
            rtt = math.nan if sent_at is None else now - sent_at
            self._events.append(LateReply(seq, now, rtt, reply.time_difference))
            self._record(self.detector.on_late(seq, rtt, now), now)
        else:
            self._tally.unknown += 1
            self._events.append(UnknownReply(seq, now))
        self._maybe_finish(now)

    def receive_error(self, now: float) -> None:
        """The network refused a heartbeat (an ICMP error, e.g. port unreachable).

        The socket does not say which datagram caused it, so it is charged to the newest
        heartbeat still waiting for its reply.
        """
        if self.finished:
            return
        self._expire(now)  # an overdue heartbeat timed out before this error came
        if self.finished:
            return
        self._tally.refused += 1
        if self._pending:
            seq = max(self._pending)
            pending = self._pending.pop(seq)
            self._miss(seq, pending, now, "refused")
        self._maybe_finish(now)

    def stop(self, now: float) -> None:
        """End the run now (the user interrupted it); in-flight heartbeats are left unresolved."""
        if not self.finished:
            self._finish(now)

    # -- output -------------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def events(self) -> Iterator[Event]:
        """Drain the events that happened since the last call, oldest first."""
        while self._events:
            yield self._events.popleft()

    @property
    def state(self) -> State:
        return self.detector.state

    def report(self, now: float | None = None) -> ProbeReport:
        end = self._ended
        if end is None:
            end = self._started if now is None else now
        tally = self._tally
        outages = list(self._outages)
        if self._outage_start is not None:
            outages.append(Outage(self._outage_start, None, self._outage_lost))
        return ProbeReport(
            target=self.target,
            sent=tally.sent,
            probes=tally.probes,
            received=tally.received,
            lost=tally.lost,
            refused=tally.refused,
            late=tally.late,
            duplicates=tally.duplicates,
            unknown=tally.unknown,
            malformed=dict(tally.malformed),
            in_flight=len(self._pending),
            rtt=self._rtt.summary(),
            jitter=self._jitter.value if len(self._rtt) >= 2 else None,
            time_difference=self._time_difference.summary(),
            state=self.detector.state,
            detector=self.detector.describe(),
            transitions=tuple(self._transitions),
            outages=tuple(outages),
            duration=end - self._started,
        )

    # -- internals ----------------------------------------------------------------------------

    def _all_regular_sent(self) -> bool:
        count = self.config.count
        return count is not None and self._regular_sent >= count

    def _send_due(self, now: float) -> bool:
        return self._next_send is not None and self._next_send <= now

    def _send(self, now: float, wall_time: float, *, probe: bool) -> None:
        seq = self._next_seq
        self._next_seq += 1
        deadline = now + min(self.detector.reply_timeout(), self.config.timeout)
        self._pending[seq] = _Pending(now, deadline, probe)
        heapq.heappush(self._deadlines, (deadline, seq))
        self._outgoing.append(text.encode_request(text.Heartbeat(seq, wall_time)))
        self._tally.sent += 1
        if probe:
            self._tally.probes += 1
        self.detector.on_sent(seq, now, probe=probe)
        self._events.append(HeartbeatSent(seq, now, wall_time, probe))

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, seq = heapq.heappop(deadlines)
            pending = self._pending.get(seq)
            if pending is None or pending.deadline != deadline:
                continue  # answered or refused already
            del self._pending[seq]
            self._miss(seq, pending, deadline, "timeout")

    def _miss(self, seq: int, pending: _Pending, now: float, reason: MissReason) -> None:
        if reason == "timeout":
            self._tally.lost += 1
        self._remember(seq, _Fate.EXPIRED)
        self._sent_at_of_expired[seq] = pending.sent_at
        if self._outage_start is not None:
            self._outage_lost += 1
        self._events.append(HeartbeatLost(seq, now, reason, pending.probe))
        self._record(self.detector.on_miss(seq, now, reason), now)
        self._resolved_one(now, pending)

    def _resolved_one(self, now: float, pending: _Pending) -> None:
        if not pending.probe and self.config.interval == 0 and not self._all_regular_sent():
            self._next_send = now

    def _remember(self, seq: int, fate: _Fate) -> None:
        resolved = self._resolved
        resolved[seq] = fate
        while len(resolved) > REMEMBERED_SEQUENCES:
            old, _ = resolved.popitem(last=False)
            self._sent_at_of_expired.pop(old, None)

    def _forgotten(self, seq: int) -> bool:
        """Sent so long ago that its fate was forgotten."""
        return seq < self._next_seq and seq >= self.config.first_seq and seq not in self._pending

    def _record(self, transition: Transition | None, now: float) -> None:
        if transition is None:
            return
        self._transitions.append(transition)
        self._events.append(StateChanged(transition))
        if transition.new is State.DOWN:
            self._outage_start = transition.at
            self._outage_lost = 0
        elif transition.old is State.DOWN and self._outage_start is not None:
            self._outages.append(Outage(self._outage_start, transition.at, self._outage_lost))
            self._outage_start = None
        if transition.new is State.DOWN and not self.config.watch:
            self._finish(now)

    def _maybe_finish(self, now: float) -> None:
        if not self.finished and self._all_regular_sent() and not self._pending:
            self._finish(now)

    def _finish(self, now: float) -> None:
        self.finished = True
        self._ended = now
        self._events.append(SessionFinished(now, self.detector.state))


_EVENT_TYPES: dict[type, str] = {
    HeartbeatSent: "sent",
    ReplyReceived: "reply",
    LateReply: "late",
    DuplicateReply: "duplicate",
    UnknownReply: "unknown",
    MalformedReply: "malformed",
    HeartbeatLost: "lost",
    StateChanged: "state",
    SessionFinished: "finished",
}


def event_to_dict(event: Event) -> dict[str, object]:
    """An event as a JSON-ready dict: ``type`` plus its fields (times in seconds)."""
    if isinstance(event, StateChanged):
        return {"type": "state", **event.transition.to_dict()}
    fields: dict[str, object] = {"type": _EVENT_TYPES[type(event)]}
    for name in event.__slots__:
        value = getattr(event, name)
        if isinstance(value, float) and math.isnan(value):
            value = None
        fields[name] = str(value) if isinstance(value, State) else value
    return fields
