"""What ``udpbeat report`` plots, as plain typed data, and the pure readers that make it.

Every input comes down to the same :class:`TargetSeries` per target: the replies with their RTT,
the misses, the detector's states as spans of time, and the outages. Readers:

- :func:`parse_client_capture`: the JSON Lines of ``udpbeat client --json`` (or ``-o FILE``):
  events per line, then a summary per target. One target's events carry no ``target`` key (its
  summary names it); with several targets every object does.
- :func:`parse_events_log`: a monitor's ``--events`` file, one state change per line. It holds
  no RTTs: its series have states and outages only.
- :func:`series_from_history`: what a monitor's ``--db`` history holds about a target (read
  with :class:`~udpbeat.monitor.history.HistoryReader`): minutes in aggregate, changes,
  outages.
- :func:`series_from_records`: the same dicts as the client's, from :func:`udpbeat.event_to_dict`
  in a program or a notebook.

:func:`detect_kind` tells the inputs apart by their content (never by the file's name). All times
here are Unix seconds. Nothing here reads a file or a clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from udpbeat.errors import UdpbeatError
from udpbeat.monitor.history import ChangeRow, MinuteRow, OutageRow, TargetRow

#: How an SQLite database file begins (the monitor's ``--db``).
SQLITE_MAGIC = b"SQLite format 3\x00"
#: The event types of ``udpbeat client --json``, with its ``summary`` and ``stats`` objects.
CLIENT_TYPES = frozenset(
    {
        "sent",
        "reply",
        "overdue",
        "lost",
        "late",
        "duplicate",
        "unknown",
        "malformed",
        "state",
        "finished",
        "summary",
        "stats",
    }
)
#: The keys every line of a monitor's ``--events`` file has.
EVENTS_LOG_KEYS = frozenset({"time", "target", "old", "new", "reason"})
#: The detectors' states, in the order the plots list them.
STATES = ("UNKNOWN", "UP", "SUSPECT", "DOWN")


class InputError(UdpbeatError):
    """An input that is not what ``udpbeat report`` reads, or is damaged; one line says why."""


class InputKind(StrEnum):
    CLIENT = "client --json capture"
    EVENTS = "monitor --events log"
    DATABASE = "monitor --db history"


@dataclass(frozen=True, slots=True)
class RttSample:
    """A reply within the timeout: when its heartbeat left, and its round trip in seconds."""

    time: float
    rtt: float
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Miss:
    """A heartbeat with no reply in time (``refused``: by ICMP); ``time`` is when it left."""

    time: float
    refused: bool = False
    probe: bool = False
    #: Misses this mark stands for (a history aggregates a minute's misses into one mark).
    count: int = 1


@dataclass(frozen=True, slots=True)
class RttBucket:
    """A period's RTTs in aggregate (a history's minute): the replies and the misses in it,
    and the RTT's min, median, p99 and max in seconds (``None`` when nothing was answered)."""

    start: float
    end: float
    answered: int
    lost: int
    minimum: float | None = None
    median: float | None = None
    p99: float | None = None
    maximum: float | None = None


@dataclass(frozen=True, slots=True)
class StateSpan:
    """The detector held ``state`` from ``start`` to ``end``."""

    start: float
    end: float
    state: str


@dataclass(frozen=True, slots=True)
class OutageSpan:
    """A DOWN period; ``end`` is ``None`` if it was still going when the input ends.

    ``lost``: heartbeats and probes lost in it, as the input counts them (a client's summary:
    the misses that led to the verdict and those while DOWN, each kind apart in
    ``heartbeats_lost`` and ``probes_lost``; a history: those from the verdict on). ``None``
    when the input does not say (an events log, a capture without its summary).
    """

    start: float
    end: float | None
    lost: int | None = None
    heartbeats_lost: int | None = None
    probes_lost: int | None = None

    def duration(self, until: float) -> float:
        """Its length, counting an open one as lasting ``until``."""
        return (until if self.end is None else self.end) - self.start


@dataclass(frozen=True, slots=True)
class TargetSeries:
    """Everything plotted about one target, oldest first, between ``start`` and ``end``."""

    name: str
    start: float
    end: float
    samples: tuple[RttSample, ...] = ()
    misses: tuple[Miss, ...] = ()
    buckets: tuple[RttBucket, ...] = ()
    states: tuple[StateSpan, ...] = ()
    outages: tuple[OutageSpan, ...] = ()
    #: The detector's state when the input ends.
    final_state: str = "UNKNOWN"

    @property
    def has_rtt(self) -> bool:
        return bool(self.samples or any(b.median is not None for b in self.buckets))


@dataclass(frozen=True, slots=True)
class TargetSummary:
    """The figures of a target's row in the report."""

    name: str
    state: str
    answered: int
    missed: int
    rtt_min: float | None
    rtt_p50: float | None
    rtt_p99: float | None
    rtt_max: float | None
    outages: int
    downtime: float

    @property
    def loss(self) -> float | None:
        resolved = self.answered + self.missed
        return None if resolved == 0 else self.missed / resolved


@dataclass(frozen=True, slots=True)
class Capture:
    """An input read: what kind it was, and a series per target in the order first seen."""

    kind: InputKind
    targets: tuple[TargetSeries, ...] = field(default_factory=tuple)

    @property
    def start(self) -> float | None:
        return min((t.start for t in self.targets), default=None)

    @property
    def end(self) -> float | None:
        return max((t.end for t in self.targets), default=None)


# -- telling inputs apart --------------------------------------------------------------------


def detect_kind(head: bytes) -> InputKind:
    """Which input ``head`` (the file's first bytes, a few kB) begins.

    Raises:
        InputError: empty, or none of the three.
    """
    if head.startswith(SQLITE_MAGIC):
        return InputKind.DATABASE
    if not head.strip():
        raise InputError("it is empty")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the head is not damage.
        if error.start < len(head) - 4:
            raise InputError(_NOT_AN_INPUT) from None
        text = head[: error.start].decode("utf-8")
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        obj = json.loads(first)
    except ValueError:
        raise InputError(_NOT_AN_INPUT) from None
    if isinstance(obj, dict) and obj.get("type") in CLIENT_TYPES:
        return InputKind.CLIENT
    if isinstance(obj, dict) and obj.keys() >= EVENTS_LOG_KEYS:
        return InputKind.EVENTS
    raise InputError(_NOT_AN_INPUT)


_NOT_AN_INPUT = (
    "not a udpbeat client --json capture, a monitor --events log or a monitor --db history"
)


def _records(text: str) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise InputError(f"line {number} is not JSON") from None
        if not isinstance(obj, dict):
            raise InputError(f"line {number} is not a JSON object")
        records.append(obj)
    return records


def _number(record: Mapping[str, object], key: str, line: int) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"line {line}: {key!r} is not a number")
    return float(value)


def _optional_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _text(record: Mapping[str, object], key: str, line: int) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise InputError(f"line {line}: {key!r} is not a string")
    return value


# -- the client's JSON Lines -----------------------------------------------------------------


class _Builder:
    """One target's series as its events come, oldest first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.samples: list[RttSample] = []
        self.misses: list[Miss] = []
        self.changes: list[tuple[float, str]] = []
        self.sent_at: dict[int, float] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.outages: list[OutageSpan] | None = None
        #: The final state as the summary says (else the last change's).
        self.final: str | None = None

    def saw(self, time: float) -> None:
        self.first = time if self.first is None else min(self.first, time)
        self.last = time if self.last is None else max(self.last, time)

    def build(self) -> TargetSeries:
        start = self.first if self.first is not None else 0.0
        end = self.last if self.last is not None else start
        states = _spans(self.changes, start, end)
        outages = self.outages
        if outages is None:
            outages = [
                OutageSpan(s.start, None if s is states[-1] else s.end)
                for s in states
                if s.state == "DOWN"
            ]
        final = self.final or (self.changes[-1][1] if self.changes else "UNKNOWN")
        return TargetSeries(
            name=self.name,
            start=start,
            end=end,
            samples=tuple(sorted(self.samples, key=lambda s: s.time)),
            misses=tuple(sorted(self.misses, key=lambda m: m.time)),
            states=tuple(states),
            outages=tuple(outages),
            final_state=final,
        )


def _spans(changes: Sequence[tuple[float, str]], start: float, end: float) -> list[StateSpan]:
    """The states between ``start`` and ``end`` from the changes (UNKNOWN before the first)."""
    spans: list[StateSpan] = []
    state, since = "UNKNOWN", start
    for at, new in sorted(changes, key=lambda change: change[0]):
        if new == state:
            # A monitor that restarted logs UNKNOWN -> DOWN for a target it left DOWN: the
            # same outage goes on.
            continue
        if at > since:
            spans.append(StateSpan(since, at, state))
        state, since = new, max(since, at)
    # The last state, even if it began as the input ends: an outage still open is one.
    spans.append(StateSpan(since, max(end, since), state))
    return spans


def series_from_records(
    records: Iterable[Mapping[str, object]], *, default_target: str = "target"
) -> tuple[TargetSeries, ...]:
    """The series of a client's JSON objects (``--json`` lines, or
    :func:`udpbeat.event_to_dict` of its events), a series per target in the order first seen.

    Events without ``target`` belong to the one target the summary names (``default_target``
    if there is no summary). Replies and misses are placed at the time their heartbeat left.

    Raises:
        InputError: an object lacks what its type needs.
    """
    builders: dict[str | None, _Builder] = {}
    summaries: dict[str | None, Mapping[str, object]] = {}
    for line, record in enumerate(records, start=1):
        kind = record.get("type")
        if kind not in CLIENT_TYPES:
            raise InputError(f"line {line}: not a udpbeat client event (type {kind!r})")
        owner = record.get("target")
        key = owner if isinstance(owner, str) else None
        if kind == "summary":
            summaries[key] = record
            continue
        if kind == "stats":
            continue
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = _Builder(key or default_target)
        at = _optional_number(record.get("at"))
        if at is None:
            continue  # the wall clock was unknown: nowhere to put it
        builder.saw(at)
        _add_event(builder, record, at, line)
    if None in builders and None not in summaries and len(summaries) == 1:
        # One target's events carry no "target"; its summary does.
        (only,) = summaries.values()
        summaries = {None: only}
    for key, summary in summaries.items():
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = _Builder(key or default_target)
        name = summary.get("target")
        if isinstance(name, str) and name:
            builder.name = name
        builder.outages = _summary_outages(summary)
        state = summary.get("state")
        builder.final = state if isinstance(state, str) and state in STATES else None
    return tuple(builder.build() for builder in builders.values())


def _add_event(builder: _Builder, record: Mapping[str, object], at: float, line: int) -> None:
    kind = record["type"]
    seq = record.get("seq")
    probe = record.get("probe") is True
    if kind == "sent" and isinstance(seq, int):
        builder.sent_at[seq] = at
    elif kind == "reply":
        rtt = _number(record, "rtt", line)
        sent = builder.sent_at.get(seq, at - rtt) if isinstance(seq, int) else at - rtt
        builder.samples.append(RttSample(sent, rtt, probe))
    elif kind == "lost":
        sent = builder.sent_at.get(seq, at) if isinstance(seq, int) else at
        builder.misses.append(Miss(sent, record.get("reason") == "refused", probe))
    elif kind == "state":
        builder.changes.append((at, _text(record, "new", line)))


def _summary_outages(summary: Mapping[str, object]) -> list[OutageSpan] | None:
    outages = summary.get("outages")
    if not isinstance(outages, list):
        return None
    spans: list[OutageSpan] = []
    for outage in outages:
        if not isinstance(outage, dict):
            continue
        start = _optional_number(outage.get("start"))
        if start is None:
            continue
        heartbeats, probes = outage.get("heartbeats_lost"), outage.get("probes_lost")
        heartbeats_lost = heartbeats if isinstance(heartbeats, int) else None
        probes_lost = probes if isinstance(probes, int) else None
        spans.append(
            OutageSpan(
                start,
                _optional_number(outage.get("end")),
                lost=None
                if heartbeats_lost is None or probes_lost is None
                else heartbeats_lost + probes_lost,
                heartbeats_lost=heartbeats_lost,
                probes_lost=probes_lost,
            )
        )
    return spans


def parse_client_capture(text: str) -> Capture:
    """The series of ``udpbeat client --json`` output.

    Raises:
        InputError: a line is not JSON, or not a client object.
    """
    targets = series_from_records(_records(text))
    if not targets:
        raise InputError("it holds no events")
    return Capture(InputKind.CLIENT, targets)


# -- the monitor's events log ----------------------------------------------------------------


def parse_events_log(text: str) -> Capture:
    """The series of a monitor's ``--events`` file: states and outages per target, no RTTs.

    A monitor that restarted logs its targets from UNKNOWN again; an outage still open then is
    closed by the first change out of DOWN, as the log shows no more.

    Raises:
        InputError: a line is not JSON, or lacks a change's keys.
    """
    changes: dict[str, list[tuple[float, str]]] = {}
    first: float | None = None
    last: float | None = None
    for line, record in enumerate(_records(text), start=1):
        if not record.keys() >= EVENTS_LOG_KEYS:
            raise InputError(f"line {line}: not a monitor state change")
        at = _number(record, "time", line)
        changes.setdefault(_text(record, "target", line), []).append(
            (at, _text(record, "new", line))
        )
        first = at if first is None else min(first, at)
        last = at if last is None else max(last, at)
    if first is None or last is None:
        raise InputError("it holds no state changes")
    targets = []
    for name, seen in changes.items():
        states = _spans(seen, first, last)
        outages = [s for s in states if s.state == "DOWN"]
        targets.append(
            TargetSeries(
                name=name,
                start=first,
                end=last,
                states=tuple(states),
                outages=tuple(
                    OutageSpan(s.start, None if s is states[-1] else s.end) for s in outages
                ),
                final_state=sorted(seen, key=lambda change: change[0])[-1][1],
            )
        )
    return Capture(InputKind.EVENTS, tuple(targets))


# -- the monitor's history -------------------------------------------------------------------


def series_from_history(
    target: TargetRow,
    minutes: Sequence[MinuteRow],
    changes: Sequence[ChangeRow],
    outages: Sequence[OutageRow],
) -> TargetSeries:
    """A target's series from what a monitor's ``--db`` history holds about it (read with
    :class:`~udpbeat.monitor.history.HistoryReader`): its minutes as RTT buckets, its
    changes as state spans, its outages (their ``lost`` counts heartbeats and probes)."""
    # From when the monitor first saw it (its first minute may begin before that).
    start = min([target.first_seen, *(c.time for c in changes)])
    end = max([target.last_seen, *(c.time for c in changes), *(o.start for o in outages)])
    buckets = tuple(
        RttBucket(
            m.start,
            m.start + 60.0,
            m.answered,
            m.lost,
            m.rtt_min,
            m.rtt_p50,
            m.rtt_p99,
            m.rtt_max,
        )
        for m in minutes
    )
    return TargetSeries(
        name=target.name,
        start=start,
        end=max(end, start),
        buckets=buckets,
        states=tuple(_spans([(c.time, c.new) for c in changes], start, max(end, start))),
        outages=tuple(OutageSpan(o.start, o.end, lost=o.lost) for o in outages),
        final_state=target.state,
    )


# -- choosing what to show -------------------------------------------------------------------


def select(
    capture: Capture,
    *,
    names: Sequence[str] = (),
    since: float | None = None,
    until: float | None = None,
) -> Capture:
    """Only the targets named (all if none) and what happened between ``since`` and ``until``.

    Raises:
        InputError: a name matches no target, or nothing is left.
    """
    targets = list(capture.targets)
    if names:
        known = {t.name for t in targets}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise InputError(f"no target named {unknown[0]!r} in it")
        targets = [t for t in targets if t.name in set(names)]
    if since is not None or until is not None:
        targets = [_clip(t, since, until) for t in targets]
        targets = [t for t in targets if t.end > t.start or t.samples or t.misses]
        if not targets:
            raise InputError("nothing happened between --since and --until")
    return replace(capture, targets=tuple(targets))


def _clip(series: TargetSeries, since: float | None, until: float | None) -> TargetSeries:
    low = series.start if since is None else max(series.start, since)
    high = series.end if until is None else min(series.end, until)
    if high < low:
        high = low

    def inside(time: float) -> bool:
        return low <= time <= high

    return replace(
        series,
        start=low,
        end=high,
        samples=tuple(s for s in series.samples if inside(s.time)),
        misses=tuple(m for m in series.misses if inside(m.time)),
        buckets=tuple(b for b in series.buckets if b.end > low and b.start < high),
        states=tuple(
            StateSpan(max(s.start, low), min(s.end, high), s.state)
            for s in series.states
            if s.end > low and s.start < high
        ),
        outages=tuple(
            o for o in series.outages if o.start <= high and (o.end is None or o.end >= low)
        ),
    )


# -- the figures of a row --------------------------------------------------------------------


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks of a sorted, non-empty sequence."""
    position = fraction * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def summarize(series: TargetSeries) -> TargetSummary:
    """A target's row: its final state, replies and misses, RTT figures, outages and downtime.

    From aggregates (a history), RTT p50 and p99 are the medians of the periods' own, weighted
    by the replies in each: the raw RTTs are not kept.
    """
    rtts = sorted(s.rtt for s in series.samples)
    answered = len(rtts)
    missed = sum(m.count for m in series.misses)
    rtt_min = rtts[0] if rtts else None
    rtt_max = rtts[-1] if rtts else None
    p50 = percentile(rtts, 0.5) if rtts else None
    p99 = percentile(rtts, 0.99) if rtts else None
    if series.buckets:
        answered += sum(b.answered for b in series.buckets)
        missed += sum(b.lost for b in series.buckets)
        minima = [b.minimum for b in series.buckets if b.minimum is not None]
        maxima = [b.maximum for b in series.buckets if b.maximum is not None]
        rtt_min = min([*minima, *([rtt_min] if rtt_min is not None else [])], default=None)
        rtt_max = max([*maxima, *([rtt_max] if rtt_max is not None else [])], default=None)
        if not rtts:
            p50 = _weighted_median([(b.median, b.answered) for b in series.buckets])
            p99 = _weighted_median([(b.p99, b.answered) for b in series.buckets])
    downtime = sum(o.duration(series.end) for o in series.outages)
    return TargetSummary(
        name=series.name,
        state=series.final_state,
        answered=answered,
        missed=missed,
        rtt_min=rtt_min,
        rtt_p50=p50,
        rtt_p99=p99,
        rtt_max=rtt_max,
        outages=len(series.outages),
        downtime=max(0.0, downtime),
    )


def _weighted_median(pairs: Sequence[tuple[float | None, int]]) -> float | None:
    weighted = sorted((value, weight) for value, weight in pairs if value is not None and weight)
    total = sum(weight for _, weight in weighted)
    if not total:
        return None
    running = 0
    for value, weight in weighted:
        running += weight
        if 2 * running >= total:
            return value
    return weighted[-1][0]
