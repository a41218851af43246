"""The prober's logic as a pure object driven by ``now`` (the sans-I/O core of the client).

:class:`ProbeSession` numbers heartbeats, matches every reply to its request by sequence number,
expires timeouts, asks its :class:`~udpbeat.detector.Detector` for a verdict and keeps the
statistics. It never touches a socket or reads a clock; an I/O shell drives it::

    session = ProbeSession(config, now=monotonic())
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
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from udpbeat.budget import ProbeBudget
from udpbeat.detector import Detector, MissReason, State, Transition, make_detector
from udpbeat.errors import ConfigError, WireError
from udpbeat.events import (
    DuplicateReply,
    Event,
    HeartbeatLost,
    HeartbeatOverdue,
    HeartbeatSent,
    LateReply,
    MalformedReply,
    ReplyReceived,
    SessionFinished,
    StateChanged,
    UnknownReply,
)
from udpbeat.oneway import OneWay
from udpbeat.report import Counts, Outage, ProbeReport
from udpbeat.stats import Jitter, RecentSeries, Series
from udpbeat.wire import Codec, make_codec, text
from udpbeat.wire.base import Timestamps

#: How many answered or expired sequence numbers are remembered, to tell late and duplicate
#: replies apart from unknown ones. Older replies are counted as late.
REMEMBERED_SEQUENCES = 65536


#: The highest first sequence number drawn at random: leaves 2**62 numbers for the run itself.
RANDOM_FIRST_SEQ_LIMIT = 2**62
#: Confirmation probes a target may send per interval by default (see ``docs/detectors.md``).
#: Enough for one whole confirmation run of the default adaptive detector on a path it knows
#: (about 40 probes at 30 % loss), so the budget bounds a runaway detector, not a normal stop's
#: detection; a cold start's run (about 190 probes, bursts not yet measured) spreads over a few
#: intervals of it. docs/detectors.md gives what smaller budgets cost.
PROBES_PER_INTERVAL = 50


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """What to send, how long to wait, and how to judge the server.

    ``count`` regular heartbeats (``None``: until stopped), one every ``interval`` seconds
    (``0``: the next as soon as the previous one is answered or timed out, as the exercise
    paces them); ``timeout`` is the longest wait for a reply. With ``watch``, a DOWN verdict does
    not end the run.

    ``detector`` names the failure detector (see :data:`udpbeat.DETECTORS`) and
    ``detector_options`` its parameters; the session builds it with this ``timeout``, so the
    timeout lives in one place. ``first_seq`` is the first sequence number; ``None`` (the
    default) draws it at random, so that an off-path attacker who learns the client's port
    still cannot guess which replies would be accepted. ``probes_per_interval`` bounds the
    confirmation probes: a bucket that holds that many and refills that many per interval
    (``0``: no probes at all).

    Raises:
        ConfigError: any value of the wrong type or out of range.
    """

    count: int | None = 100
    interval: float = 1.0
    timeout: float = 1.0
    watch: bool = False
    first_seq: int | None = None
    detector: str = "adaptive"
    detector_options: Mapping[str, Any] = field(default_factory=dict)
    probes_per_interval: int = PROBES_PER_INTERVAL
    #: The wire format: ``"text"`` (the exercise's) or ``"stamp"`` (RFC 8762), and the codec's
    #: options (STAMP: ``ssid``, ``key``, ``ptp``, ``size``; see :class:`udpbeat.wire.StampCodec`).
    protocol: str = "text"
    protocol_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.count is not None and not _is_int(self.count, minimum=1):
            raise ConfigError(
                f"count must be an integer >= 1 (or None for no limit), got {self.count!r}"
            )
        if not (_is_number(self.interval) and math.isfinite(self.interval) and self.interval >= 0):
            raise ConfigError(f"interval must be a number of seconds >= 0, got {self.interval!r}")
        if not (_is_number(self.timeout) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"timeout must be a number of seconds > 0, got {self.timeout!r}")
        if not isinstance(self.watch, bool):
            raise ConfigError(f"watch must be True or False, got {self.watch!r}")
        if self.first_seq is not None and not (
            _is_int(self.first_seq, minimum=0) and self.first_seq <= text.MAX_SEQUENCE
        ):
            raise ConfigError(
                f"first sequence number must be an integer in [0, 2**63-1] (or None: random), "
                f"got {self.first_seq!r}"
            )
        if not _is_int(self.probes_per_interval, minimum=0):
            raise ConfigError(
                f"probes per interval must be an integer >= 0, got {self.probes_per_interval!r}"
            )
        if not isinstance(self.detector, str):
            raise ConfigError(f"detector must be a name, got {self.detector!r}")
        if not isinstance(self.detector_options, Mapping):
            raise ConfigError(
                f"detector options must be a mapping of names to values, "
                f"got {self.detector_options!r}"
            )
        self.build_detector()  # every bad detector setting fails here, not mid-run
        if not isinstance(self.protocol_options, Mapping):
            raise ConfigError(
                f"protocol options must be a mapping of names to values, "
                f"got {self.protocol_options!r}"
            )
        self.build_codec()

    def build_codec(self) -> Codec:
        """The wire format's codec as configured.

        Raises:
            ConfigError: unknown protocol, or an option it does not take or out of range.
        """
        return make_codec(self.protocol, self.protocol_options)

    def build_detector(self) -> Detector:
        """A fresh detector as configured.

        Raises:
            ConfigError: unknown detector, unknown parameter, or a value out of range.
        """
        options = dict(self.detector_options)
        if self.detector == "phi" and self.interval > 0:
            options.setdefault("first_heartbeat_estimate", self.interval)
        return make_detector(self.detector, self.timeout, **options)


def _is_int(value: object, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- the session -----------------------------------------------------------------------------


class _Fate(Enum):
    ANSWERED = "answered"
    EXPIRED = "expired"


@dataclass(slots=True)
class _Pending:
    sent_at: float
    #: ``sent_at + config.timeout``: the heartbeat is lost when this passes unanswered (in
    #: the deadline heap from ``overdue_at`` on).
    deadline: float
    #: The detector's own deadline (``reply_timeout()``), at most ``deadline``: when it passes,
    #: the detector is told of a miss, but the heartbeat goes on waiting for its reply.
    overdue_at: float
    probe: bool
    #: Regular heartbeats and probes are numbered apart, from 1, for people.
    number: int
    #: The detector was told of a miss at ``overdue_at`` (and must not be told again).
    overdue: bool = False
    #: ``sent_at`` is the kernel's stamp of the datagram leaving (:meth:`mark_left`).
    left_stamp: bool = False


#: A heartbeat answered or expired: its fate, whether it was a probe, and its number (``None``:
#: a late reply to a heartbeat whose fate was forgotten). A plain tuple: one is built for every
#: heartbeat, and a tuple builds several times faster than a named tuple or an object.
_Resolved = tuple[_Fate, bool, int | None]


@dataclass(slots=True)
class _Kind:
    """Outcomes of one kind of datagram: regular heartbeats, or confirmation probes."""

    sent: int = 0
    received: int = 0
    lost: int = 0
    refused: int = 0


@dataclass(slots=True)
class _Tally:
    late: int = 0
    duplicates: int = 0
    unknown: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    regular: _Kind = field(default_factory=_Kind)
    probes: _Kind = field(default_factory=_Kind)

    def of(self, probe: bool) -> _Kind:
        return self.probes if probe else self.regular


@dataclass(slots=True)
class _OutageTally:
    """An outage as it is counted. Its misses are those of heartbeats numbered above
    ``after_seq`` (the newest answered when DOWN was declared) and below ``until_seq`` (the one
    whose reply ended it; ``None`` while it lasts)."""

    start: float
    start_time: float | None
    after_seq: int
    end: float | None = None
    end_time: float | None = None
    until_seq: int | None = None
    heartbeats_lost: int = 0
    probes_lost: int = 0
    refused: int = 0

    def count(self, probe: bool, refused: bool) -> None:
        if probe:
            self.probes_lost += 1
        else:
            self.heartbeats_lost += 1
        self.refused += refused

    def outage(self) -> Outage:
        return Outage(
            self.start,
            self.end,
            self.heartbeats_lost,
            self.probes_lost,
            self.refused,
            self.start_time,
            self.end_time,
        )


class ProbeSession:
    """Sequence numbers, reply matching, timeouts, probes and the detector, driven by ``now``."""

    def __init__(
        self,
        config: ProbeConfig,
        now: float,
        *,
        target: str = "",
        host: str = "",
        detector: Detector | None = None,
        shared_budget: ProbeBudget | None = None,
        history: int | None = None,
        record_events: bool = True,
    ) -> None:
        """``target``: the address probed, as shown (``127.0.0.1:12000``); ``host``: the name
        asked for, if any (``localhost``). ``detector``: a detector object to use instead of
        the one ``config`` names (for a detector of your own; the session then leaves its
        parameters to you).

        ``shared_budget``: a probe budget shared with other sessions, consulted besides this one's
        own (``udpbeat monitor`` gives one to all its targets). ``history``: remember only the
        last ``history`` heartbeats (RTT percentiles over them, late and duplicate replies told
        apart among them), so a session that runs for months keeps a bounded size; ``None``:
        every RTT sample and :data:`REMEMBERED_SEQUENCES` sequence numbers.

        ``record_events=False``: :meth:`events` yields nothing, and no event object is built
        (the simulator reads only the report, and building them was a tenth of its time);
        the report, the verdicts and everything sent are the same."""
        if history is not None and not _is_int(history, minimum=1):
            raise ConfigError(f"history must be an integer >= 1 (or None), got {history!r}")
        self.config = config
        self.detector = detector if detector is not None else config.build_detector()
        self.target = target
        self.host = host
        self.codec = codec = config.build_codec()
        # The text format's replies are parsed into a plain tuple, without a DecodedReply: the
        # prober's hot path (``None``: the codec's own decode_reply).
        self._parse_text_reply = text.parse_reply if isinstance(codec, text.TextCodec) else None
        self._sequence_modulus = codec.sequence_modulus
        self._record_events = record_events
        # Read on every datagram: kept here rather than looked up through the config each time.
        self._count = config.count
        self._timeout = config.timeout
        self._interval = config.interval
        #: STAMP's one-way figures (``None`` for a format without the four timestamps).
        self.one_way = OneWay(history) if codec.name == "stamp" else None
        first_seq = config.first_seq
        if first_seq is None:
            # A codec that wraps sequence numbers starts below its modulus, so the run's numbers
            # and the wire's agree for as long as possible.
            modulus = codec.sequence_modulus
            limit = RANDOM_FIRST_SEQ_LIMIT if modulus is None else min(modulus - 1, 2**62)
            first_seq = 1 + secrets.randbelow(limit)
        #: The run's first sequence number on the wire.
        self.first_seq = first_seq
        self.finished = False
        #: DOWN without watch: nothing more is sent; the run ends once nothing is pending.
        self._draining = False
        self._started = now
        self._ended: float | None = None
        #: Unix time minus ``now``, from the last :meth:`handle_timer` (``None``: none yet).
        self._wall_offset: float | None = None
        self._next_seq = first_seq
        self._next_send: float | None = now
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._resolved: OrderedDict[int, _Resolved] = OrderedDict()
        self._sent_at_of_expired: dict[int, float] = {}
        self._outgoing: list[bytes] = []
        self._unmarked: list[int] = []  # heartbeats handed over, their send time not yet final
        self._receive_stamps: Counter[str] = Counter()
        self._send_stamps: Counter[str] = Counter()
        self._events: deque[Event] = deque()
        self._tally = _Tally()
        self._rtt = Series() if history is None else RecentSeries(history)
        self._time_difference = Series() if history is None else RecentSeries(history)
        self._remembered = REMEMBERED_SEQUENCES if history is None else history
        self._shared_budget = shared_budget
        #: When the probe reserved from the shared budget may go (``None``: none reserved).
        self._probe_slot: float | None = None
        self._jitter = Jitter()
        self._transitions: list[Transition] = []
        self._transition_times: list[float | None] = []
        # Outages and the misses that may still join one: those of heartbeats sent after the
        # newest one answered (``_alive_seq``), as (seq, probe, refused).
        self._outages: list[_OutageTally] = []
        self._alive_seq = first_seq - 1
        self._run_misses: list[tuple[int, bool, bool]] = []
        self._socket_errors: Counter[str] = Counter()
        # The confirmation-probe budget: a bucket of ``probes_per_interval`` tokens, refilled
        # at that many per interval (per timeout when heartbeats are paced by their replies).
        budget = config.probes_per_interval
        self._probe_tokens = self._probe_budget = float(budget)
        self._probe_tokens_at = now
        self._probe_refill = budget / (config.interval or config.timeout)

    # -- driving ------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next monotonic time at which :meth:`handle_timer` has work, or ``None``."""
        if self.finished:
            return None
        # The earliest of four optional times, without building lists: this runs after every
        # datagram and timer, millions of times in the simulator.
        detector = self.detector
        draining = self._draining
        when = None if draining else self._probe_due(detector.probe_at())
        check = detector.check_at()
        if check is not None and (when is None or check < when):
            when = check
        next_send = self._next_send
        count = self._count
        if (
            next_send is not None
            and (when is None or next_send < when)
            and (count is None or self._tally.regular.sent < count)
            and not draining
        ):
            when = next_send
        deadlines, pending = self._deadlines, self._pending
        while deadlines and deadlines[0][1] not in pending:
            heapq.heappop(deadlines)  # answered or refused: no reason to wake for it
        if deadlines:
            deadline = deadlines[0][0]
            if when is None or deadline < when:
                when = deadline
        return when

    def handle_timer(self, now: float, wall_time: float) -> None:
        """Expire timeouts, then send the heartbeat or probe that is due.

        ``wall_time`` is the Unix time at ``now``: it stamps the heartbeats, and gives every
        event its Unix ``time``.
        """
        if self.finished:
            return
        self._wall_offset = wall_time - now
        deadlines = self._deadlines
        if deadlines and deadlines[0][0] <= now:
            self._expire(now)
        transition = self.detector.check(now)
        if transition is not None:
            self._record(transition, now)
        if self._draining:
            self._maybe_finish(now)
            return
        next_send = self._next_send
        if (
            next_send is not None
            and next_send <= now
            and not self.finished
            and not self._all_regular_sent()
        ):
            self._send(now, wall_time, probe=False)
            interval = self._interval
            if interval > 0:
                # max(next_send + interval, now), without the call
                next_send += interval
                self._next_send = now if now > next_send else next_send
            else:
                self._next_send = None
        probe_at = self._probe_due(self.detector.probe_at())
        if probe_at is None:
            self._probe_slot = None  # no probe wanted any more: a reservation is given up
        elif not self.finished and probe_at <= now:
            if self._shared_budget is not None and self._probe_slot is None:
                self._probe_slot = self._shared_budget.reserve(now)
            if self._probe_slot is None or self._probe_slot <= now:
                self._probe_slot = None
                self._take_probe_token(now)
                self._send(now, wall_time, probe=True)
        if self._all_regular_sent():
            self._maybe_finish(now)

    def receive_datagram(self, data: bytes, now: float, *, kernel_stamp: bool = False) -> None:
        """Match a reply to its heartbeat by sequence number; count anything else.

        ``now`` is when the datagram arrived: the kernel's receive stamp where the shell has
        one (``kernel_stamp``), else the shell's own reading of the clock.
        """
        if self.finished:
            return
        self._receive_stamps["kernel" if kernel_stamp else "user"] += 1
        # The shell may read a datagram before it runs a timer that was due first: expire now,
        # so that a reply arriving after its timeout is late, never received.
        deadlines = self._deadlines
        if deadlines and deadlines[0][0] <= now:
            self._expire(now)
            if self.finished:
                return
        offset = self._wall_offset
        time = None if offset is None else now + offset
        parse_text_reply = self._parse_text_reply
        timestamps: Timestamps | None = None
        try:
            if parse_text_reply is not None:
                seq, time_difference = parse_text_reply(data)
            else:
                reply = self.codec.decode_reply(data)
                seq, time_difference, timestamps = (
                    reply.seq,
                    reply.time_difference,
                    reply.timestamps,
                )
        except WireError as error:
            self._tally.malformed[error.reason] += 1
            if self._record_events:
                self._events.append(MalformedReply(error.reason, now, len(data), str(error), time))
            self._maybe_finish(now)
            return
        if self._sequence_modulus is not None:
            seq = self._unwrap(seq)
        pending = self._pending.pop(seq, None)
        if pending is not None:
            # Within the timeout: received, even if the detector's own deadline passed first.
            rtt = now - pending.sent_at
            probe = pending.probe
            self._send_stamps["kernel" if pending.left_stamp else "user"] += 1
            if timestamps is not None and self.one_way is not None and time is not None:
                # T1 and T4 on the wall clock through the same offset: T4 - T1 is the RTT.
                self.one_way.add(seq, time - rtt, time, timestamps)
            (self._tally.probes if probe else self._tally.regular).received += 1
            self._rtt.add(rtt)
            self._jitter.add(rtt)
            self._time_difference.add(time_difference)
            self._remember(seq, _Fate.ANSWERED, probe, pending.number)
            if seq > self._alive_seq:
                self._alive(seq)
            if self._record_events:
                self._events.append(
                    ReplyReceived(
                        seq,
                        now,
                        rtt,
                        time_difference,
                        probe,
                        overdue=pending.overdue,
                        number=pending.number,
                        time=time,
                        timestamp="kernel" if kernel_stamp else "user",
                    )
                )
            if pending.overdue:  # the detector counted a miss: to it, this reply is late
                transition = self.detector.on_late(seq, rtt, now)
            else:
                transition = self.detector.on_reply(seq, rtt, now)
            if transition is not None:
                self._record(transition, now, seq, probe, pending.number)
            if not probe and self._interval == 0:
                self._resolved_one(now, pending)
            if self._draining or self._all_regular_sent():
                self._maybe_finish(now)
            return
        resolved = self._resolved.get(seq)
        fate, probe, number = (None, False, None) if resolved is None else resolved
        if fate is _Fate.ANSWERED:
            self._tally.duplicates += 1
            if self._record_events:
                self._events.append(DuplicateReply(seq, now, probe, number, time=time))
        elif resolved is not None or self._forgotten(seq):
            self._tally.late += 1
            sent_at = self._sent_at_of_expired.pop(seq, None)
            rtt = math.nan if sent_at is None else now - sent_at
            # Marked answered so that a second copy of a late reply counts as a duplicate.
            self._remember(seq, _Fate.ANSWERED, probe, number)
            if not math.isnan(rtt):
                self._alive(seq)
            if self._record_events:
                self._events.append(
                    LateReply(seq, now, rtt, time_difference, probe, number, time=time)
                )
            self._record(self.detector.on_late(seq, rtt, now), now, seq, probe, number)
        else:
            self._tally.unknown += 1
            if self._record_events:
                self._events.append(UnknownReply(seq, now, time))
        self._maybe_finish(now)

    def receive_error(self, now: float, seq: int | None = None) -> None:
        """The network refused heartbeat ``seq`` (an ICMP error, e.g. port unreachable).

        Where the shell cannot tell which datagram caused it (``seq`` ``None``), it is charged
        to the newest heartbeat still waiting for its reply (one the detector has not yet
        counted as a miss, if any). An error naming a heartbeat that is not waiting (answered,
        expired, or never sent) is counted and changes nothing.
        """
        if self.finished:
            return
        self._expire(now)  # a heartbeat past its timeout was lost before this error came
        if self.finished:
            return
        if seq is None and self._pending:
            fresh = [s for s, p in self._pending.items() if not p.overdue]
            seq = max(fresh or self._pending)
        pending = None if seq is None else self._pending.pop(seq, None)
        if pending is None:
            self._socket_errors["refused-stale"] += 1
        else:
            assert seq is not None
            self._miss(seq, pending, now, "refused")
        self._maybe_finish(now)

    def sent_seq(self, datagram: bytes) -> int | None:
        """The sequence number a datagram of this session carried (as an ICMP error quotes
        it), or ``None`` if it is not one of its requests."""
        try:
            return self._unwrap(self.codec.request_seq(datagram))
        except WireError:
            return None

    def count_socket_error(self, kind: str) -> None:
        """The shell met a socket error that is not a refusal (counted by ``kind``, reported)."""
        self._socket_errors[kind] += 1

    def stop(self, now: float) -> None:
        """End the run now (the user interrupted it); in-flight heartbeats are left unresolved."""
        if not self.finished:
            self._finish(now)

    # -- output -------------------------------------------------------------------------------

    def mark_sent(self, now: float) -> list[int]:
        """The datagrams last handed over by :meth:`datagrams_to_send` left at ``now``; returns
        their sequence numbers, in the same order.

        A shell that reads the clock right before its send call makes the RTT start there,
        not at the (earlier) :meth:`handle_timer` that decided to send.
        """
        pending = self._pending
        marked, self._unmarked = self._unmarked, []
        for seq in marked:
            entry = pending.get(seq)
            if entry is not None and now > entry.sent_at:
                entry.sent_at = now
        return marked

    def mark_left(self, seq: int, at: float) -> bool:
        """The kernel says heartbeat ``seq`` left at ``at`` (its send stamp, Linux
        ``SOF_TIMESTAMPING_TX_SOFTWARE``, on this session's clock): its RTT starts there.

        Taken only while the heartbeat waits for its reply, and only if ``at`` is after the
        reading :meth:`mark_sent` took before the send call (a stamp cannot be earlier);
        returns whether it was taken.
        """
        entry = self._pending.get(seq)
        if entry is None or at < entry.sent_at:
            return False
        entry.sent_at = at
        entry.left_stamp = True
        return True

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

    @property
    def records_events(self) -> bool:
        """Whether :meth:`events` yields anything (``record_events`` when it was built)."""
        return self._record_events

    def report(self, now: float | None = None) -> ProbeReport:
        end = self._ended
        if end is None:
            end = self._started if now is None else now
        tally = self._tally
        in_flight_probes = sum(1 for pending in self._pending.values() if pending.probe)
        in_flight_regular = len(self._pending) - in_flight_probes
        regular = _counts(tally.regular, in_flight_regular)
        probes = _counts(tally.probes, in_flight_probes)
        outages = tuple(outage.outage() for outage in self._outages)
        return ProbeReport(
            target=self.target,
            sent=regular.sent + probes.sent,
            probes=probes.sent,
            received=regular.received + probes.received,
            lost=regular.lost + probes.lost,
            refused=regular.refused + probes.refused,
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
            outages=outages,
            duration=end - self._started,
            socket_errors=dict(self._socket_errors),
            receive_timestamps=dict(self._receive_stamps),
            send_timestamps=dict(self._send_stamps),
            first_seq=self.first_seq,
            host=self.host,
            heartbeats=regular,
            confirmation=probes,
            lost_in_outages=sum(o.heartbeats_lost + o.probes_lost for o in outages),
            transition_times=tuple(self._transition_times),
            wall_offset=self._wall_offset,
            protocol=self.codec.name,
            one_way=None if self.one_way is None else self.one_way.report(),
        )

    # -- internals ----------------------------------------------------------------------------

    def _unwrap(self, wire_seq: int) -> int:
        """The run's sequence number that a wire number modulo the codec's modulus stands for:
        the newest one sent that it can be (a reply answers what was sent)."""
        modulus = self.codec.sequence_modulus
        if modulus is None:
            return wire_seq
        newest = self._next_seq - 1
        return newest - (newest - wire_seq) % modulus

    def _unix(self, now: float) -> float | None:
        offset = self._wall_offset
        return None if offset is None else now + offset

    def _probe_due(self, wanted: float | None) -> float | None:
        """When the next confirmation probe goes: when the detector wants it (``wanted``, its
        ``probe_at()``), or later if the budget is spent (``None``: no probe wanted, or no
        budget at all)."""
        if wanted is None:
            return None
        if self._probe_tokens >= 1.0:
            return self._not_before_slot(wanted)
        if not self._probe_refill:
            return None
        refilled = self._probe_tokens_at + (1.0 - self._probe_tokens) / self._probe_refill
        return self._not_before_slot(max(wanted, refilled))

    def _not_before_slot(self, due: float | None) -> float | None:
        """A probe reserved from the shared budget goes at its slot, not before."""
        slot = self._probe_slot
        return slot if due is not None and slot is not None and slot > due else due

    def _take_probe_token(self, now: float) -> None:
        budget = self._probe_budget
        elapsed = max(0.0, now - self._probe_tokens_at)
        tokens = min(budget, self._probe_tokens + elapsed * self._probe_refill)
        # Rounding may leave a hair under one token at the instant it was due.
        self._probe_tokens = max(0.0, tokens - 1.0)
        self._probe_tokens_at = now

    def _all_regular_sent(self) -> bool:
        count = self._count
        return count is not None and self._tally.regular.sent >= count

    def _send_due(self, now: float) -> bool:
        return self._next_send is not None and self._next_send <= now

    def _send(self, now: float, wall_time: float, *, probe: bool) -> None:
        seq = self._next_seq
        self._next_seq = seq + 1
        kind = self._tally.probes if probe else self._tally.regular
        kind.sent += 1
        number = kind.sent
        timeout = self._timeout
        deadline = now + timeout
        detector = self.detector
        reply_timeout = detector.reply_timeout()
        # min(reply_timeout, timeout), without the call: this runs for every datagram sent.
        overdue_at = now + (timeout if timeout < reply_timeout else reply_timeout)
        self._pending[seq] = _Pending(now, deadline, overdue_at, probe, number)
        # One entry at a time: the timeout's is pushed when the detector's earlier deadline
        # passes (:meth:`_expire`), so most heartbeats, answered before either, cost one.
        heapq.heappush(self._deadlines, (overdue_at if overdue_at < deadline else deadline, seq))
        self._outgoing.append(self.codec.encode_request(seq, wall_time))
        self._unmarked.append(seq)
        detector.on_sent(seq, now, probe=probe)
        if self._record_events:
            self._events.append(HeartbeatSent(seq, now, wall_time, probe, number, wall_time))

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            when, seq = heapq.heappop(deadlines)
            pending = self._pending.get(seq)
            if pending is None:
                continue  # answered or refused already
            if when == pending.deadline:
                del self._pending[seq]
                self._miss(seq, pending, when, "timeout")
            elif not pending.overdue:
                heapq.heappush(deadlines, (pending.deadline, seq))
                self._overdue(seq, pending, when)

    def _overdue(self, seq: int, pending: _Pending, now: float) -> None:
        """The detector's deadline passed: it hears of a miss; the heartbeat keeps waiting."""
        pending.overdue = True
        if self._record_events:
            self._events.append(
                HeartbeatOverdue(
                    seq, now, now - pending.sent_at, pending.probe, pending.number, self._unix(now)
                )
            )
        transition = self.detector.on_miss(seq, now, "timeout")
        if transition is not None:
            self._record(transition, now, seq, pending.probe, pending.number)

    def _miss(self, seq: int, pending: _Pending, now: float, reason: MissReason) -> None:
        probe = pending.probe
        kind = self._tally.probes if probe else self._tally.regular
        refused = reason == "refused"
        if refused:
            kind.refused += 1
        else:
            kind.lost += 1
        self._remember(seq, _Fate.EXPIRED, probe, pending.number)
        self._sent_at_of_expired[seq] = pending.sent_at
        outage = self._outage_of(seq)
        if outage is not None:
            outage.count(probe, refused)
        elif seq > self._alive_seq:
            self._run_misses.append((seq, probe, refused))
        if self._record_events:
            self._events.append(
                HeartbeatLost(seq, now, reason, probe, pending.number, self._unix(now))
            )
        if not pending.overdue:  # an overdue heartbeat's miss was counted already
            transition = self.detector.on_miss(seq, now, reason)
            if transition is not None:
                self._record(transition, now, seq, probe, pending.number)
        if not probe and self._interval == 0:
            self._resolved_one(now, pending)

    def _alive(self, seq: int) -> None:
        """A reply to ``seq`` came: the misses of heartbeats sent before it were the path's."""
        if seq > self._alive_seq:
            self._alive_seq = seq
            if self._run_misses:
                self._run_misses = [miss for miss in self._run_misses if miss[0] > seq]

    def _outage_of(self, seq: int) -> _OutageTally | None:
        """The outage the miss of ``seq`` belongs to, if any."""
        for outage in reversed(self._outages):
            if outage.until_seq is not None and seq >= outage.until_seq:
                return None
            if seq > outage.after_seq:
                return outage
        return None

    def _resolved_one(self, now: float, pending: _Pending) -> None:
        if not pending.probe and self.config.interval == 0 and not self._all_regular_sent():
            self._next_send = now

    def _remember(self, seq: int, fate: _Fate, probe: bool, number: int | None) -> None:
        resolved = self._resolved
        resolved[seq] = (fate, probe, number)
        while len(resolved) > self._remembered:
            old, _ = resolved.popitem(last=False)
            self._sent_at_of_expired.pop(old, None)

    def _forgotten(self, seq: int) -> bool:
        """Sent so long ago that its fate was forgotten."""
        return seq < self._next_seq and seq >= self.first_seq and seq not in self._pending

    def _record(
        self,
        transition: Transition | None,
        now: float,
        seq: int | None = None,
        probe: bool | None = None,
        number: int | None = None,
    ) -> None:
        if transition is None:
            return
        time = self._unix(transition.at)
        self._transitions.append(transition)
        self._transition_times.append(time)
        if self._record_events:
            self._events.append(StateChanged(transition, seq, number, probe, time))
        if transition.new is State.DOWN:
            # The misses since the newest reply led to this verdict: they belong to the outage.
            outage = _OutageTally(transition.at, time, self._alive_seq)
            for _, missed_probe, refused in self._run_misses:
                outage.count(missed_probe, refused)
            self._run_misses = []
            self._outages.append(outage)
        elif transition.old is State.DOWN and self._outages:
            outage = self._outages[-1]
            outage.end, outage.end_time = transition.at, time
            outage.until_seq = self._next_seq if seq is None else seq
        if transition.new is State.DOWN and not self.config.watch:
            # The verdict ends the run: nothing more is sent, and the heartbeats still within
            # their timeout are waited for, so that each one's fate is known.
            self._draining = True
            self._maybe_finish(now)

    def _maybe_finish(self, now: float) -> None:
        if not self.finished and (self._draining or self._all_regular_sent()) and not self._pending:
            self._finish(now)

    def _finish(self, now: float) -> None:
        self.finished = True
        self._ended = now
        received = self._tally.regular.received + self._tally.probes.received
        if self._record_events:
            self._events.append(
                SessionFinished(now, self.detector.state, received, self._unix(now))
            )


def _counts(kind: _Kind, in_flight: int) -> Counts:
    return Counts(kind.sent, kind.received, kind.lost, kind.refused, in_flight)
