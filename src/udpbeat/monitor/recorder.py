"""Every target's minutes: the last hour in memory (for the status page), all of them in the
history file when there is one (``udpbeat monitor --db``).

A :class:`Recorder` closes a minute for every target when the wall clock passes the minute:
the heartbeats sent, answered and lost since the last close (differences of the fleet's
counters, so probing pays nothing for it but one ``append`` per RTT), the RTT's min, median,
99th percentile and max, and the worst state the target was in during the minute (DOWN, then
SUSPECT, UP, UNKNOWN), so an outage of seconds still marks its minute. It keeps each target's
last :data:`HOUR` minutes in one flat array (about 5 KB a target) and hands the rows to a
:class:`~udpbeat.monitor.history.HistoryWriter`, which writes them from its own thread. The
work of a close is done a few hundred targets at a time, letting the loop run in between.

State changes and outages go to the writer as they happen (:meth:`Recorder.changes`). On a
restart, :meth:`Recorder.resume` gives each target back what the history kept: its counters
(so the figures shown go on), its last change, and its outage if one was still open (it stays
open: the outage ends when the target is next seen UP, and goes on if it is DOWN again).
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from udpbeat.detector import State, Transition
from udpbeat.monitor.fleet import Change, Fleet, Target, TargetStats
from udpbeat.monitor.history import (
    ChangeRow,
    HistoryWriter,
    MinuteRow,
    Resumed,
    TargetRecord,
)
from udpbeat.stats import percentile

#: Minutes kept in memory per target.
HOUR = 60
#: Fields of a minute in the ring: start, sent, probes, answered, lost, rtt min/p50/p99/max,
#: state (an index into :data:`STATES`).
_FIELDS = 10
STATES = tuple(State)
_STATE_INDEX = {state: float(index) for index, state in enumerate(STATES)}
#: Which state a minute is said to be in when it saw several: the worst.
#: Keyed by str (a State is one), so the history's state strings find their rank too.
SEVERITY: dict[str, int] = {State.UNKNOWN: 0, State.UP: 1, State.SUSPECT: 2, State.DOWN: 3}
#: Targets closed between two yields to the loop.
CHUNK = 200
#: The counters a target's history row keeps (names as in ``/api/targets``).
COUNTERS = (
    "sent",
    "probes",
    "received",
    "lost",
    "refused",
    "late",
    "duplicates",
    "state_changes",
    "outages",
    "outage_seconds",
)


def minute_of(unix_time: float) -> int:
    """The start (Unix time, a multiple of 60) of the minute ``unix_time`` is in."""
    return int(unix_time // 60) * 60


def counters_of(stats: TargetStats, now: float) -> dict[str, float]:
    values: dict[str, float] = {name: getattr(stats, name) for name in COUNTERS}
    values["outage_seconds"] = stats.outage_total(now)
    values["ended_outage_seconds"] = stats.outage_seconds
    return values


RttFigures = tuple[float | None, float | None, float | None, float | None]


def rtt_figures(rtts: Sequence[float]) -> RttFigures:
    """min, p50, p99 and max of ``rtts`` (``None`` for each when empty)."""
    if not rtts:
        return (None, None, None, None)
    ordered = sorted(rtts)
    return (ordered[0], percentile(ordered, 50), percentile(ordered, 99), ordered[-1])


class Track:
    """What the recorder keeps for one target (by name: it outlives sessions and reloads)."""

    __slots__ = (
        "base",
        "count",
        "outage_lost",
        "outage_lost_base",
        "outage_open",
        "resumed",
        "ring",
        "worst",
    )

    def __init__(self, stats: TargetStats) -> None:
        #: The counters (sent, probes, answered, lost) when the current minute began.
        self.base = (stats.sent, stats.probes, stats.received, stats.lost + stats.refused)
        self.ring = array("d", bytes(8 * _FIELDS * HOUR))
        #: Minutes written into the ring so far (the newest at ``(count - 1) % HOUR``).
        self.count = 0
        self.outage_open = False
        #: Lost + refused when the open outage began (less what it had lost before a restart).
        self.outage_lost_base = 0
        #: The open outage's heartbeats lost at the last close.
        self.outage_lost = 0
        #: The worst state the target was in during the current minute (see :data:`SEVERITY`).
        self.worst: State | None = None
        #: The last change before a restart, until the new session settles (see ``changes``).
        self.resumed: Transition | None = None

    def push(self, values: Sequence[float]) -> None:
        at = (self.count % HOUR) * _FIELDS
        self.ring[at : at + _FIELDS] = array("d", values)
        self.count += 1

    def minutes(self, target: str, since: float = -math.inf) -> list[MinuteRow]:
        """The minutes in the ring that began at or after ``since``, oldest first."""
        rows = []
        for index in range(max(0, self.count - HOUR), self.count):
            at = (index % HOUR) * _FIELDS
            start, sent, probes, answered, lost, low, p50, p99, high, state = self.ring[
                at : at + _FIELDS
            ]
            if start < since:
                continue
            rows.append(
                MinuteRow(
                    target,
                    start,
                    int(sent),
                    int(probes),
                    int(answered),
                    int(lost),
                    *_figures(low, p50, p99, high),
                    str(STATES[int(state)]),
                )
            )
        return rows

    def settled(self, minutes: int) -> tuple[int, int]:
        """Answered and lost over the last ``minutes`` closed minutes."""
        answered = lost = 0
        for index in range(max(0, self.count - min(minutes, HOUR)), self.count):
            at = (index % HOUR) * _FIELDS
            answered += int(self.ring[at + 3])
            lost += int(self.ring[at + 4])
        return answered, lost


@dataclass(frozen=True, slots=True)
class Loss:
    """Loss over a window: heartbeats answered and lost (``ratio`` ``None``: none settled)."""

    answered: int
    lost: int

    @property
    def ratio(self) -> float | None:
        settled = self.answered + self.lost
        return self.lost / settled if settled else None


class Recorder:
    """Closes every target's minutes; see the module. ``clock`` is the fleet's ``now``
    (monotonic), ``wall`` Unix time."""

    def __init__(
        self,
        fleet: Fleet,
        writer: HistoryWriter | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.writer = writer
        self.clock = clock
        self.wall = wall
        self.tracks: dict[str, Track] = {}
        self.current = minute_of(wall())
        self.running = False
        self.closes = 0

    @property
    def history_path(self) -> str | None:
        return None if self.writer is None else self.writer.path

    def track(self, target: Target) -> Track:
        found = self.tracks.get(target.name)
        if found is None:
            found = self.tracks[target.name] = Track(target.stats)
        if target.stats.minute_rtts is None:
            target.stats.minute_rtts = array("d")
        return found

    def watch_all(self) -> None:
        """Start keeping minutes of every target of the fleet (new ones are taken at the next
        close)."""
        for target in self.fleet:
            self.track(target)

    # -- restarts -----------------------------------------------------------------------------

    def resume(self, resumed: Mapping[str, Resumed]) -> int:
        """Give the fleet's targets back their counters, last change, open outage and last
        hour from the history; returns how many targets were resumed. Call before the fleet
        first runs."""
        offset = self.wall() - self.clock()
        if self.writer is not None:
            self.writer.end_unwatched_outages([target.name for target in self.fleet])
        count = 0
        for target in self.fleet:
            saved = resumed.get(target.name)
            if saved is None:
                continue
            count += 1
            stats = target.stats
            for name in COUNTERS:
                value = saved.counters.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    setattr(stats, name, float(value) if name == "outage_seconds" else int(value))
            change = saved.last_change
            resumed_change = None
            if change is not None:
                resumed_change = stats.last_change = Transition(
                    change.time - offset, _state(change.old), _state(change.new), change.reason
                )
            ended = saved.counters.get("ended_outage_seconds")
            if isinstance(ended, int | float):
                stats.outage_seconds = float(ended)  # the open outage counts from its start
            track = self.tracks[target.name] = Track(stats)
            track.resumed = resumed_change
            for row in saved.recent:
                if self.current - HOUR * 60 <= row.start < self.current:  # closed minutes only
                    track.push(
                        (
                            row.start,
                            float(row.sent),
                            float(row.probes),
                            float(row.answered),
                            float(row.lost),
                            *(
                                math.nan if v is None else v
                                for v in (row.rtt_min, row.rtt_p50, row.rtt_p99, row.rtt_max)
                            ),
                            _STATE_INDEX.get(_state(row.state), 0.0),
                        )
                    )
            outage = saved.open_outage
            if outage is not None:
                stats.down_since = outage.start - offset
                track.outage_open = True
                track.outage_lost_base = stats.lost + stats.refused - outage.lost
            if stats.minute_rtts is None:
                stats.minute_rtts = array("d")
        return count

    # -- what happens -------------------------------------------------------------------------

    def changes(self, changes: Sequence[Change], wall_offset: float) -> None:
        """State changes as they happen (the shell's ``on_changes``): to the history, with the
        outages they open and close."""
        writer = self.writer
        for change in changes:
            target, transition = change.target, change.transition
            track = self.track(target)
            at = transition.at + wall_offset
            if writer is not None:
                writer.change(
                    ChangeRow(
                        target.name,
                        at,
                        str(transition.old),
                        str(transition.new),
                        transition.reason,
                    )
                )
            for state in (transition.old, transition.new):
                if track.worst is None or SEVERITY[state] > SEVERITY[track.worst]:
                    track.worst = state
            stats = target.stats
            resumed = track.resumed
            if resumed is not None:
                # A restarted session starts UNKNOWN: when it settles in the state the target
                # was in before the restart, the target did not change for a person, and "since
                # the last change" goes on from the change before the restart.
                if transition.new is resumed.new:
                    stats.last_change = resumed
                if transition.new not in (State.UNKNOWN, State.SUSPECT):
                    track.resumed = None
            if transition.new is State.DOWN and not track.outage_open:
                track.outage_open = True
                track.outage_lost_base = stats.lost + stats.refused
                if writer is not None:
                    writer.outage_started(target.name, at, transition.reason)
            elif track.outage_open and (transition.old is State.DOWN or transition.new is State.UP):
                self._end_outage(target, track, at)

    def _end_outage(self, target: Target, track: Track, at: float) -> None:
        track.outage_open = False
        if self.writer is not None:
            stats = target.stats
            lost = stats.lost + stats.refused - track.outage_lost_base
            self.writer.outage_ended(target.name, at, lost)

    async def run(self) -> None:
        """Close every minute as the wall clock passes it, until cancelled; then close the
        minute under way (its part so far) and commit."""
        self.running = True
        try:
            while True:
                # At most a second at a time: a wall clock stepped back does not stop the closes.
                wall = self.wall()
                await asyncio.sleep(min(1.0, max(0.0, self.current + 60 - wall) + 0.01))
                if minute_of(self.wall()) > self.current:
                    await self.close_minute()
        finally:
            self.running = False
            self.close_minute_now()

    async def close_minute(self) -> None:
        """Close the current minute for every target, a :data:`CHUNK` at a time."""
        for _ in self.close_steps(minute_of(self.wall())):
            await asyncio.sleep(0)

    def close_minute_now(self) -> None:
        """The minute under way, as far as it went (at stop: a restart within the same minute
        adds to its row)."""
        for _ in self.close_steps(self.current, partial=True):
            pass

    def close_steps(self, next_minute: int, *, partial: bool = False) -> Iterator[int]:
        """Close ``self.current`` for every target; yields after each :data:`CHUNK` of them
        (the rows it handed to the writer), so the caller can let the loop run."""
        start = self.current
        now = self.clock()
        seen = self.wall()
        writer = self.writer
        targets = list(self.fleet)
        for first in range(0, len(targets), CHUNK):
            records: list[MinuteRow] = []
            target_records: list[TargetRecord] = []
            for target in targets[first : first + CHUNK]:
                track = self.track(target)
                stats = target.stats
                sent, probes, answered, lost = (
                    stats.sent,
                    stats.probes,
                    stats.received,
                    stats.lost + stats.refused,
                )
                b_sent, b_probes, b_answered, b_lost = track.base
                rtts = stats.minute_rtts
                stats.minute_rtts = array("d")
                figures = rtt_figures(rtts or ())
                now_state = target.state
                worst = track.worst
                state = (
                    now_state if worst is None or SEVERITY[now_state] >= SEVERITY[worst] else worst
                )
                track.worst = None
                values: tuple[int, int, int, int] = (
                    sent - b_sent,
                    probes - b_probes,
                    answered - b_answered,
                    lost - b_lost,
                )
                track.base = (sent, probes, answered, lost)
                if not partial:
                    track.push(
                        (
                            float(start),
                            *map(float, values),
                            *(math.nan if f is None else f for f in figures),
                            _STATE_INDEX[state],
                        )
                    )
                if track.outage_open and stats.down_since is None:
                    self._end_outage(target, track, seen)  # a reload closed it
                if writer is None:
                    continue
                if values[0] or values[2] or values[3]:
                    records.append(MinuteRow(target.name, start, *values, *figures, str(state)))
                if track.outage_open:
                    track.outage_lost = lost - track.outage_lost_base
                    writer.outage_update(target.name, track.outage_lost)
                config = target.config
                target_records.append(
                    TargetRecord(
                        target.name,
                        config.host,
                        config.port,
                        dict(config.labels),
                        seen,
                        str(now_state),
                        counters_of(stats, now),
                    )
                )
            if writer is not None:
                writer.minutes(records)
                writer.targets(target_records)
            yield len(records)
        names = {target.name for target in targets}
        for name in [name for name in self.tracks if name not in names]:
            gone = self.tracks.pop(name)
            if gone.outage_open and writer is not None:
                # No longer watched (a reload removed it): its outage ends where we stopped
                # looking, rather than stay open for ever.
                writer.outage_ended(name, seen, gone.outage_lost)
        self.current = next_minute
        self.closes += 1

    # -- what the status page reads -----------------------------------------------------------

    def loss(self, target: Target, minutes: int) -> Loss:
        """Answered and lost over the last ``minutes`` closed minutes and the minute under way."""
        track = self.tracks.get(target.name)
        stats = target.stats
        if track is None:
            return Loss(stats.received, stats.lost + stats.refused)
        answered, lost = track.settled(minutes)
        _, _, b_answered, b_lost = track.base
        return Loss(
            answered + stats.received - b_answered,
            lost + stats.lost + stats.refused - b_lost,
        )

    def hour(self, target: Target, since: float = -math.inf) -> list[MinuteRow]:
        """The target's closed minutes in memory since ``since`` and the minute under way."""
        track = self.tracks.get(target.name)
        if track is None:
            return []
        rows = track.minutes(target.name, since)
        stats = target.stats
        b_sent, b_probes, b_answered, b_lost = track.base
        rows.append(
            MinuteRow(
                target.name,
                float(self.current),
                stats.sent - b_sent,
                stats.probes - b_probes,
                stats.received - b_answered,
                stats.lost + stats.refused - b_lost,
                *rtt_figures(stats.minute_rtts or ()),
                str(target.state),
            )
        )
        return rows


def _figures(low: float, p50: float, p99: float, high: float) -> RttFigures:
    """The ring's NaN (no RTT that minute) as ``None``."""
    return (
        None if math.isnan(low) else low,
        None if math.isnan(p50) else p50,
        None if math.isnan(p99) else p99,
        None if math.isnan(high) else high,
    )


def _state(text: str) -> State:
    try:
        return State(text)
    except ValueError:
        return State.UNKNOWN
