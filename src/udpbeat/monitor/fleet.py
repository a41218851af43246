"""Many targets, one loop: the monitor's pure core (no sockets, no clock of its own).

A :class:`Fleet` holds a :class:`~udpbeat.session.ProbeSession` per target and does for all of
them what :mod:`udpbeat.client` does for one: it runs each session's timer when it is due
(one heap of timers for the whole fleet), routes each datagram that arrives to the target it
came from (by source address and port; the session then matches it by sequence number), routes
ICMP errors to the target the refused datagram was sent to, and hands every datagram a session
wants sent to the shell's ``send``. The shell (:mod:`udpbeat.monitor.shell`) owns the sockets
and the clock and passes ``now`` in, so tests drive a fleet on a virtual clock.

**Phases.** Each target sends at a phase of its own within its interval, taken from a hash
of its name: ten thousand targets at 1 s send ten a millisecond, evenly, never all at once;
and a target keeps its phase across reloads. A target's session is made when its first
heartbeat is due, not when the target is configured, so starting ten thousand costs no pause
(and none of them starts late and falls out of its phase).

**Counters.** The monitor counts what each target's session reports through its events
(:class:`TargetStats`): heartbeats, probes, replies, late, duplicate, refused, state changes,
outages and their seconds, an RTT histogram. They belong to the target's name, not to its
session: when a reload changes how a target is probed, its session is replaced and the
counters go on, so they never reset while the process lives.

**The probe budget.** Every session shares one :class:`~udpbeat.budget.ProbeBudget`
besides its own, so the confirmation probes of the whole fleet stay under one rate.
"""

from __future__ import annotations

import hashlib
import heapq
import socket
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from udpbeat._net import same_host
from udpbeat.budget import ProbeBudget
from udpbeat.detector import AdaptiveDetector, LossHistory, State, Transition
from udpbeat.errors import ConfigError
from udpbeat.events import (
    DuplicateReply,
    HeartbeatLost,
    HeartbeatSent,
    LateReply,
    ReplyReceived,
    StateChanged,
)
from udpbeat.monitor.config import TargetConfig
from udpbeat.session import ProbeSession
from udpbeat.stats import percentile

#: Heartbeats each session remembers (RTT samples for its own report, sequence numbers to
#: tell late and duplicate replies apart): enough for a monitor, small enough for 10^4 targets.
SESSION_HISTORY = 32
#: Recent RTTs kept per target for the percentiles of ``/api/targets``.
RECENT_RTTS = 128
#: Outcomes per target for the loss estimate of detectors that keep none.
LOSS_WINDOW = 200
#: Outages per target remembered for ``/api/targets`` (all are counted).
OUTAGE_LOG = 10
#: Upper bounds (seconds) of the RTT histogram's buckets, by default.
DEFAULT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: State changes kept for the shell between two of its rounds (beyond: dropped, counted).
MAX_CHANGES = 100_000

Address = tuple[Any, ...]
Send = Callable[["Target", bytes], None]


def address_key(address: Address) -> bytes:
    """The routing key of a socket address: its port and packed IP (what the shell reads from
    a raw ``sockaddr``: see :func:`raw_address_key`).

    Raises:
        ValueError: not a numeric IPv4 or IPv6 address.
    """
    host = str(address[0]).partition("%")[0]
    port = int(address[1]).to_bytes(2, "big")
    try:
        return port + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        return port + socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        raise ValueError(f"not an IP address: {host!r}") from None


def raw_address_key(raw: bytes) -> bytes:
    """The routing key of a raw ``sockaddr_in`` (16 bytes) or ``sockaddr_in6`` (28 bytes), as
    ``recvmmsg`` fills them in: the same as :func:`address_key` of the decoded address."""
    if len(raw) >= 28:
        return raw[2:4] + raw[8:24]
    return raw[2:8]


def phase_of(name: str, interval: float) -> float:
    """Where in its interval a target sends: stable, from a hash of its name, in [0, interval)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * interval


def first_send(name: str, interval: float, now: float) -> float:
    """The first time at or after ``now`` that is the target's phase modulo its interval."""
    return now + (phase_of(name, interval) - now) % interval


class TargetStats:
    """A target's counters: never reset while the target is configured, whatever its session."""

    __slots__ = (
        "buckets",
        "down_since",
        "duplicates",
        "last_change",
        "late",
        "lost",
        "minute_rtts",
        "outage_log",
        "outage_seconds",
        "outages",
        "probes",
        "received",
        "recent",
        "recent_count",
        "refused",
        "rtt_sum",
        "sent",
        "state_changes",
        "window",
    )

    def __init__(self, buckets: int) -> None:
        self.sent = 0
        self.probes = 0
        self.received = 0
        self.lost = 0
        self.refused = 0
        self.late = 0
        self.duplicates = 0
        self.state_changes = 0
        self.outages = 0
        #: Seconds of the outages that ended (the current one is added at read time).
        self.outage_seconds = 0.0
        self.down_since: float | None = None
        self.last_change: Transition | None = None
        self.outage_log: deque[tuple[float, float | None]] = deque(maxlen=OUTAGE_LOG)
        #: The RTT histogram: replies per bucket (not cumulative; the last is +Inf).
        self.buckets = [0] * (buckets + 1)
        self.rtt_sum = 0.0
        self.recent = array("d", bytes(8 * RECENT_RTTS))
        self.recent_count = 0
        self.window: LossHistory | None = None
        #: Every RTT since the history last took them (``None``: no history kept; see
        #: :mod:`udpbeat.monitor.recorder`).
        self.minute_rtts: array[float] | None = None

    def rtts(self) -> list[float]:
        """The recent RTTs, sorted."""
        count = min(self.recent_count, RECENT_RTTS)
        return sorted(self.recent[:count])

    def outage_total(self, now: float) -> float:
        """Seconds spent DOWN so far, the current outage included."""
        down = self.down_since
        return self.outage_seconds + (now - down if down is not None and now > down else 0.0)


class Target:
    """A configured target: where it is, its session, and its counters."""

    __slots__ = (
        "address",
        "config",
        "exposition",
        "family",
        "key",
        "last_now",
        "session",
        "stats",
        "timer",
    )

    def __init__(
        self, config: TargetConfig, address: Address, stats: TargetStats, start_at: float
    ) -> None:
        self.config = config
        self.address = address
        self.family = socket.AF_INET6 if len(address) == 4 else socket.AF_INET
        self.key = address_key(address)
        #: The target's session, made when its first heartbeat is due (``start_at``).
        self.session: ProbeSession | None = None
        self.stats = stats
        self.timer: float | None = start_at
        #: The latest ``now`` the session was given: times never go back for it.
        self.last_now = start_at
        #: The target's labels as exposition text (:mod:`udpbeat.monitor.metrics` keeps it).
        self.exposition: object = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> State:
        return State.UNKNOWN if self.session is None else self.session.state

    def loss_ratio(self) -> float | None:
        """The detector's current estimate of the path's loss (``None``: nothing known yet).

        The adaptive detector's own history (its last outcomes, outages left out); for a
        detector that keeps none, the last :data:`LOSS_WINDOW` outcomes.
        """
        detector = None if self.session is None else self.session.detector
        history = detector.history if isinstance(detector, AdaptiveDetector) else self.stats.window
        if history is None or history.count == 0:
            return None
        return history.losses / history.count


@dataclass(frozen=True, slots=True)
class Change:
    """A target's state changed (what the shell logs, prints and hands to hooks)."""

    target: Target
    transition: Transition


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`Fleet.apply` did, by target name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()


class Fleet:
    """Every target's session, their timers, and the routing of what arrives; see the module."""

    def __init__(
        self,
        send: Send | None = None,
        *,
        budget: ProbeBudget | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        history: int = SESSION_HISTORY,
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ConfigError(
                f"RTT buckets must be increasing numbers of seconds > 0, got {buckets!r}"
            )
        self.bounds = bounds
        self.budget = budget
        self.history = history
        self.targets: dict[str, Target] = {}
        #: Where the datagrams the sessions want sent go (the shell sets it).
        self.send: Send = send if send is not None else _discard
        self._by_key: dict[bytes, Target] = {}
        self._timers = TimerWheel()
        #: State changes since the shell last took them (:meth:`take_changes`).
        self.changes: deque[Change] = deque()
        #: Counters of the fleet itself.
        self.unknown_sources = 0
        self.icmp_unrouted = 0
        self.changes_dropped = 0
        self.timer_runs = 0
        #: Sessions made so far, and targets still waiting for their first heartbeat (and so
        #: for their session): the shell freezes what is long-lived once every target has one.
        self.sessions_made = 0
        self.unstarted = 0

    # -- configuration ----------------------------------------------------------------------

    def apply(self, targets: Sequence[tuple[TargetConfig, Address]], now: float) -> Applied:
        """Make the fleet probe exactly ``targets`` (each with its resolved address).

        A target whose name is new starts; one whose name is gone stops; one probed as before
        keeps its session (state, history, counters) and takes its new labels; one whose
        address or probing changed gets a new session (UNKNOWN again, an outage in progress
        closed) and keeps its counters.

        Raises:
            ConfigError: two targets with the same address and port (replies could not be
                told apart); the fleet is left unchanged.
        """
        owners: dict[bytes, str] = {}
        for config, address in targets:
            key = address_key(address)
            other = owners.setdefault(key, config.name)
            if other != config.name:
                raise ConfigError(
                    f"target {config.name!r}: host: {config.host}:{config.port} is also target "
                    f"{other!r}; replies could not be told apart (give each address one target)"
                )
        wanted = {config.name for config, _ in targets}
        removed = [name for name in self.targets if name not in wanted]
        for name in removed:
            self._drop(self.targets.pop(name))
        added: list[str] = []
        restarted: list[str] = []
        kept: list[str] = []
        for config, address in targets:
            old = self.targets.get(config.name)
            if old is not None and old.config.probed_as(config) and old.address == address:
                old.config = config
                kept.append(config.name)
                continue
            if old is not None:
                self._drop(old)
                stats = old.stats
                if stats.down_since is not None:
                    stats.outage_seconds += max(0.0, now - stats.down_since)
                    stats.outage_log.append((stats.down_since, now))
                    stats.down_since = None
                restarted.append(config.name)
            else:
                stats = TargetStats(len(self.bounds))
                added.append(config.name)
            target = self._start(config, address, stats, now)
            self.targets[config.name] = target
        for config, _ in targets:
            target = self.targets[config.name]
            self._by_key[target.key] = target
        return Applied(tuple(added), tuple(removed), tuple(restarted), tuple(kept))

    def _start(
        self, config: TargetConfig, address: Address, stats: TargetStats, now: float
    ) -> Target:
        """A target whose session will be made at its first heartbeat, at its phase."""
        start = first_send(config.name, config.interval, now)
        target = Target(config, address, stats, start)
        self._timers.add(target, start)
        self.unstarted += 1
        return target

    def _session(self, target: Target, start: float) -> ProbeSession:
        """The target's session, started at ``start`` (its phase), even if the loop comes to it
        late: its heartbeats then keep to their phase, one interval apart."""
        config = target.config
        session = ProbeSession(
            config.probe, start, target=config.name, shared_budget=self.budget, history=self.history
        )
        stats = target.stats
        if not isinstance(session.detector, AdaptiveDetector) and stats.window is None:
            stats.window = LossHistory(LOSS_WINDOW)
        target.session = session
        self.sessions_made += 1
        self.unstarted -= 1
        return session

    def _drop(self, target: Target) -> None:
        if self._by_key.get(target.key) is target:
            del self._by_key[target.key]
        target.timer = None  # its heap entries are skipped from now on
        if target.session is not None:
            target.session.stop(target.last_now)
        else:
            self.unstarted -= 1

    # -- what arrives -------------------------------------------------------------------------

    def route(self, key: bytes) -> Target | None:
        """The target at the address of routing key ``key`` (see :func:`address_key`)."""
        return self._by_key.get(key)

    def receive(self, key: bytes, data: bytes, arrival: float) -> None:
        """A datagram from the address of ``key`` arrived at ``arrival``."""
        target = self._by_key.get(key)
        if target is None or target.session is None:
            self.unknown_sources += 1
            return
        now = arrival if arrival > target.last_now else target.last_now
        target.last_now = now
        target.session.receive_datagram(data, now)
        self._after(target, target.session, now)

    def receive_error(
        self,
        destination: Address,
        offender: Address | None,
        quoted: bytes,
        now: float,
    ) -> None:
        """An ICMP error about a datagram sent to ``destination``, sent by ``offender``
        (``None``: raised by the local stack), quoting ``quoted``.

        It goes to the target at ``destination``, and refuses the heartbeat it quotes, only if
        it came from that target's host; from anywhere else it is counted (``icmp-elsewhere``)
        and changes nothing, so a forged error cannot mark a live target down.
        """
        try:
            key = address_key(destination)
        except ValueError:
            key = b""
        target = self._by_key.get(key)
        session = None if target is None else target.session
        if target is None or session is None:
            self.icmp_unrouted += 1
            return
        if (
            offender is not None
            and offender[0] != target.address[0]  # the usual case decided without parsing
            and not same_host(offender, destination)
        ):
            session.count_socket_error("icmp-elsewhere")
            return
        seq = session.sent_seq(quoted)
        now = now if now > target.last_now else target.last_now
        target.last_now = now
        session.receive_error(now, seq)
        self._after(target, session, now)

    # -- time ---------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """When :meth:`run_due` next has work (``None``: no target at all)."""
        return self._timers.earliest()

    def run_due(
        self,
        clock: Callable[[], float],
        wall_offset: float,
        *,
        limit: int = 0,
        horizon: float | None = None,
    ) -> int:
        """Run every session whose timer is due at ``clock()``; returns how many ran.

        Each session is given a fresh ``clock()`` just before it runs, so a heartbeat is stamped
        with the time it leaves, not the time the batch began. ``wall_offset``: Unix time minus
        ``clock()``, for the timestamp heartbeats carry. ``limit``: most sessions to run, held
        to exactly (those due beyond it stay armed, to run at the next call); 0: no limit beyond
        twice the fleet, so a session that is always due cannot hold the loop. ``horizon``:
        run the sessions due by then (default: ``clock()`` now), so that a round run in slices
        ends even when sessions fall due faster than they run.
        """
        if horizon is None:
            horizon = clock()
        bound = limit or 2 * len(self.targets) + 16
        ran = 0
        timers = self._timers
        while ran < bound:
            due = timers.due(horizon, bound - ran)
            if not due:
                break
            for target, when in due:
                target.timer = None
                now = clock()
                if now < target.last_now:
                    now = target.last_now
                target.last_now = now
                session = target.session
                if session is None:  # its first heartbeat: the session starts at its phase
                    session = self._session(target, when)
                session.handle_timer(now, now + wall_offset)
                self._after(target, session, now)
            ran += len(due)
        self.timer_runs += ran
        return ran

    def take_changes(self) -> list[Change]:
        """The state changes since the last call, oldest first."""
        changes = list(self.changes)
        self.changes.clear()
        return changes

    # -- internals ----------------------------------------------------------------------------

    def _after(self, target: Target, session: ProbeSession, now: float) -> None:
        """What follows any call into a session: send, count its events, re-arm its timer."""
        for datagram in session.datagrams_to_send():
            self.send(target, datagram)
        stats = target.stats
        for event in session.events():
            if isinstance(event, HeartbeatSent):
                stats.sent += 1
                if event.probe:
                    stats.probes += 1
            elif isinstance(event, ReplyReceived):
                stats.received += 1
                self._rtt(stats, event.rtt)
            elif isinstance(event, HeartbeatLost):
                if event.reason == "refused":
                    stats.refused += 1
                else:
                    stats.lost += 1
                if stats.window is not None:
                    stats.window.add(True)
            elif isinstance(event, LateReply):
                stats.late += 1
            elif isinstance(event, DuplicateReply):
                stats.duplicates += 1
            elif isinstance(event, StateChanged):
                self._changed(target, event.transition)
        when = session.get_timer()
        if when != target.timer:
            target.timer = when
            if when is not None:
                self._timers.add(target, when)

    def _rtt(self, stats: TargetStats, rtt: float) -> None:
        stats.buckets[bisect_left(self.bounds, rtt)] += 1
        stats.rtt_sum += rtt
        stats.recent[stats.recent_count % RECENT_RTTS] = rtt
        stats.recent_count += 1
        if stats.minute_rtts is not None:
            stats.minute_rtts.append(rtt)
        if stats.window is not None:
            stats.window.add(False)

    def _changed(self, target: Target, transition: Transition) -> None:
        stats = target.stats
        stats.state_changes += 1
        stats.last_change = transition
        if transition.new is State.DOWN:
            if stats.down_since is None:  # else an outage resumed from the history goes on
                stats.outages += 1
                stats.down_since = transition.at
        elif stats.down_since is not None and (
            transition.old is State.DOWN or transition.new is State.UP
        ):
            stats.outage_seconds += max(0.0, transition.at - stats.down_since)
            stats.outage_log.append((stats.down_since, transition.at))
            stats.down_since = None
        if len(self.changes) >= MAX_CHANGES:
            self.changes_dropped += 1
            return
        self.changes.append(Change(target, transition))

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets.values())

    def __len__(self) -> int:
        return len(self.targets)

    def counts(self) -> dict[str, int]:
        """Targets by state."""
        counts = {str(state): 0 for state in State}
        for target in self.targets.values():
            counts[str(target.state)] += 1
        return counts


class TimerWheel:
    """Targets by the time their timer is due, in slots of a millisecond.

    Ten thousand targets re-arm their timers twenty thousand times a second; a heap of that
    many entries costs a few microseconds a push and a pop, a slot an append. A target is in
    the slot of its ``timer``; when its timer moves, the old entry is left behind and skipped
    (it no longer matches), as in a heap with lazy deletion. Times are positive seconds.
    """

    __slots__ = ("_keys", "_slots")

    def __init__(self) -> None:
        self._slots: dict[int, list[Target]] = {}
        self._keys: list[int] = []  # a heap of the slots in use

    def add(self, target: Target, when: float) -> None:
        key = int(when * SLOTS_PER_SECOND)
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = [target]
            heapq.heappush(self._keys, key)
        else:
            slot.append(target)

    def earliest(self) -> float | None:
        """The earliest timer of any target (``None``: none armed)."""
        keys, slots = self._keys, self._slots
        while keys:
            key = keys[0]
            live = [t for t in slots[key] if _armed_in(t, key)]
            if live:
                slots[key] = live
                return min(t.timer for t in live)  # type: ignore[type-var]
            heapq.heappop(keys)
            del slots[key]
        return None

    def due(self, horizon: float, limit: int = 0) -> list[tuple[Target, float]]:
        """Every target whose timer is at or before ``horizon``, with its timer, oldest slot
        first, but at most ``limit`` of them (0: all); they are taken out (a target is armed
        again by whoever runs it). Those beyond the limit stay, untouched: a call costs what it
        returns, however many are due."""
        keys, slots = self._keys, self._slots
        last = int(horizon * SLOTS_PER_SECOND)
        out: list[tuple[Target, float]] = []
        seen: set[int] = set()  # a target re-armed within one slot is in it twice
        while keys and keys[0] <= last:
            key = heapq.heappop(keys)
            later: list[Target] = []
            slot = slots.pop(key)
            for index, target in enumerate(slot):
                if limit and len(out) >= limit:
                    later.extend(slot[index:])  # not looked at: they stay in their slot
                    break
                when = target.timer
                if when is None or int(when * SLOTS_PER_SECOND) != key or id(target) in seen:
                    continue  # moved on, or met already
                seen.add(id(target))
                if when <= horizon:
                    out.append((target, when))
                else:
                    later.append(target)
            if later:
                slots[key] = later
                heapq.heappush(keys, key)
                break
        return out


#: Timer slots a second (one a millisecond).
SLOTS_PER_SECOND = 1000


def _armed_in(target: Target, key: int) -> bool:
    when = target.timer
    return when is not None and int(when * SLOTS_PER_SECOND) == key


def _discard(target: Target, datagram: bytes) -> None:
    pass


def rtt_summary(stats: TargetStats) -> dict[str, float | int | None]:
    """The recent RTTs of a target in milliseconds: min, avg, max, p50, p90, p99, samples."""
    ordered = stats.rtts()
    if not ordered:
        return {
            "min": None,
            "avg": None,
            "max": None,
            "p50": None,
            "p90": None,
            "p99": None,
            "samples": 0,
        }
    return {
        "min": ordered[0] * 1e3,
        "avg": sum(ordered) / len(ordered) * 1e3,
        "max": ordered[-1] * 1e3,
        "p50": percentile(ordered, 50) * 1e3,
        "p90": percentile(ordered, 90) * 1e3,
        "p99": percentile(ordered, 99) * 1e3,
        "samples": len(ordered),
    }
