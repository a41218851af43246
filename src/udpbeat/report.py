"""The figures of a finished (or interrupted) run, and the one place their JSON shape lives.

Times in the objects are the session's monotonic seconds, as in the events; in JSON
(:meth:`ProbeReport.to_dict`) every instant is Unix time, as in the server's records and the
client's JSON events, and every time is rounded to the nanosecond.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from udpbeat.detector import State, Transition
from udpbeat.stats import Summary


def _round(value: float | None, digits: int = 9) -> float | None:
    return None if value is None else round(value, digits)


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(100.0 * fraction, 3)


@dataclass(frozen=True, slots=True)
class Counts:
    """What became of one kind of datagram (the regular heartbeats, or the confirmation
    probes): every one sent is received, lost (no reply within the timeout), refused (ICMP)
    or still in flight."""

    sent: int = 0
    received: int = 0
    lost: int = 0
    refused: int = 0
    in_flight: int = 0

    @property
    def loss(self) -> float | None:
        """Fraction of those resolved that got no reply in time (``None``: none resolved)."""
        resolved = self.sent - self.in_flight
        return None if resolved <= 0 else 1.0 - self.received / resolved

    def to_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "refused": self.refused,
            "in_flight": self.in_flight,
            "loss_percent": _percent(self.loss),
        }


@dataclass(frozen=True, slots=True)
class Outage:
    """A period the detector held the server DOWN; ``end`` is ``None`` if it was still down.

    Its misses are those of every heartbeat and probe sent after the last one answered before
    the verdict, and before the one whose reply ended it: the misses that led to the DOWN
    verdict belong to the outage, as do those while DOWN. ``heartbeats_lost`` counts the
    regular heartbeats among them, ``probes_lost`` the confirmation probes, and ``refused``
    how many of both were refused (ICMP) rather than unanswered. ``start_time`` and
    ``end_time`` are the same instants as Unix time, when the session knew the wall clock.
    """

    start: float
    end: float | None
    heartbeats_lost: int
    probes_lost: int = 0
    refused: int = 0
    start_time: float | None = None
    end_time: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def to_dict(self) -> dict[str, object]:
        return {
            "start": _round(self.start_time),
            "end": _round(self.end_time),
            "duration_s": _round(self.duration),
            "heartbeats_lost": self.heartbeats_lost,
            "probes_lost": self.probes_lost,
            "refused": self.refused,
            "start_monotonic": _round(self.start),
            "end_monotonic": _round(self.end),
        }


@dataclass(frozen=True, slots=True)
class OneWayReport:
    """What STAMP's four timestamps add to a run (``docs/stamp.md`` says what they mean).

    ``forward`` (T2 - T1) and ``backward`` (T4 - T3) one-way delays, each off by the clocks'
    offset in opposite directions; ``reflector_time`` (T3 - T2, the reflector's own clock);
    ``round_trip_delay`` ((T4 - T1) - (T3 - T2), RFC 8762's round-trip delay: the RTT less the
    reflector's time, exact whatever the clocks' offset);
    ``clock_offset``: the reflector's clock minus the prober's, NTP's estimate
    ``((T2 - T1) + (T3 - T4)) / 2`` over the lowest-delay exchanges (``None``: no exchange).
    ``forward_lost`` / ``backward_lost``: with a stateful reflector, requests that never reached
    it and replies that never came back, between the first and the last reply (``None`` with a
    stateless reflector, or numbers that do not add up, e.g. a reflector restarted mid-run).
    ``offset_samples``: the exchanges the offset was taken from.
    """

    forward: Summary
    backward: Summary
    reflector_time: Summary
    round_trip_delay: Summary
    clock_offset: float | None
    offset_samples: int
    stateful: bool
    forward_lost: int | None
    backward_lost: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "forward_delay_ms": _milliseconds(self.forward),
            "backward_delay_ms": _milliseconds(self.backward),
            "reflector_time_ms": _milliseconds(self.reflector_time),
            "round_trip_delay_ms": _milliseconds(self.round_trip_delay),
            "clock_offset_ms": (
                None if self.clock_offset is None else round(self.clock_offset * 1e3, 6)
            ),
            "clock_offset_samples": self.offset_samples,
            "reflector_stateful": self.stateful,
            "forward_lost": self.forward_lost,
            "backward_lost": self.backward_lost,
        }


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """The figures of a run. Times are in seconds; :meth:`to_dict` gives the stable JSON keys.

    ``sent``, ``received``, ``lost``, ``refused`` and ``in_flight`` count every datagram, regular
    heartbeats and confirmation probes alike; ``heartbeats`` and ``confirmation`` count each
    kind apart. ``lost_in_outages``: the misses that belong to an outage (see :class:`Outage`),
    left out of :attr:`loss_while_up`.
    """

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
    #: The host name as asked (``target`` is the address probed), or ``""``.
    host: str = ""
    #: The regular heartbeats alone, and the confirmation probes alone.
    heartbeats: Counts = field(default_factory=Counts)
    confirmation: Counts = field(default_factory=Counts)
    lost_in_outages: int = 0
    #: The Unix time of each transition, as it was recorded (``None``: wall clock unknown).
    transition_times: tuple[float | None, ...] = ()
    #: Unix time minus the session's monotonic time, as last seen (``None``: never seen).
    wall_offset: float | None = None
    #: Datagrams received by where their arrival time came from: ``kernel`` (the socket's
    #: receive stamp) or ``user`` (the shell's own clock, where the kernel gave none).
    receive_timestamps: dict[str, int] = field(default_factory=dict)
    #: The wire format spoken: ``text`` or ``stamp``.
    protocol: str = "text"
    #: STAMP's one-way figures (``None`` for the text format).
    one_way: OneWayReport | None = None
    #: Replies received in time by where their RTT's start came from: ``kernel`` (the
    #: kernel's stamp of the heartbeat leaving) or ``user`` (the clock read before the send).
    send_timestamps: dict[str, int] = field(default_factory=dict)

    @property
    def loss(self) -> float | None:
        """Fraction of resolved datagrams (heartbeats and probes) with no reply in time."""
        resolved = self.sent - self.in_flight
        return None if resolved <= 0 else 1.0 - self.received / resolved

    @property
    def loss_while_up(self) -> float | None:
        """The path's loss outside outages: every resolved heartbeat and probe, less the misses
        that belong to an outage (``None``: nothing resolved outside them)."""
        resolved = self.sent - self.in_flight - self.lost_in_outages
        missed = self.lost + self.refused - self.lost_in_outages
        return None if resolved <= 0 else missed / resolved

    def to_dict(self) -> dict[str, object]:
        times = self.transition_times or (None,) * len(self.transitions)
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
            "loss_percent": _percent(self.loss),
            "rtt_ms": _milliseconds(self.rtt),
            "jitter_ms": None if self.jitter is None else round(self.jitter * 1e3, 6),
            "time_difference_ms": _milliseconds(self.time_difference),
            "state": str(self.state),
            "detector": dict(self.detector),
            "transitions": [
                {**t.to_dict(), "at": _round(at), "monotonic": _round(t.at)}
                for t, at in zip(self.transitions, times, strict=True)
            ],
            "outages": [o.to_dict() for o in self.outages],
            "duration_s": _round(self.duration),
            "socket_errors": dict(sorted(self.socket_errors.items())),
            "first_seq": self.first_seq,
            "host": self.host,
            "heartbeats": self.heartbeats.to_dict(),
            "confirmation_probes": self.confirmation.to_dict(),
            "loss_while_up_percent": _percent(self.loss_while_up),
            "lost_in_outages": self.lost_in_outages,
            "receive_timestamps": dict(sorted(self.receive_timestamps.items())),
            "send_timestamps": dict(sorted(self.send_timestamps.items())),
            # STAMP's keys, only in a STAMP run: a text run's summary keeps its shape.
            **(
                {}
                if self.one_way is None
                else {"protocol": self.protocol, **self.one_way.to_dict()}
            ),
        }


def _milliseconds(summary: Summary) -> dict[str, float | int | None]:
    """A summary of seconds in milliseconds, rounded to the nanosecond."""
    return {
        key: (value if key == "count" or value is None else round(value * 1e3, 6))
        for key, value in summary.to_dict().items()
    }
