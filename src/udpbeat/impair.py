"""What a bad network does to each datagram, decided on a clock it is given. Pure.

:class:`ImpairedPath` is one direction of a path (``udpbeat proxy`` has two: *up*, client to
upstream, and *down*, upstream to client). It is driven by ``now`` in the aioquic style and never
reads a clock, so the same object runs under the proxy's sockets and under a test's virtual
clock:

| call | when the shell makes it |
| --- | --- |
| ``send(payload, to, now)`` | a datagram arrived: returns its :class:`Fate`, holds its copies |
| ``get_timer()`` | after every call: when the next copy is due (``None``: none held) |
| ``pop_due(now)`` | that time came: the copies due by ``now``, in departure order |
| ``forwarded(n)``, ``drop(cause, n)`` | what became of the copies ``pop_due`` returned |
| ``stop()`` | the run ends: what is still held is dropped as ``stopped`` |

A datagram meets the stages of :class:`Impairment` in this order:

1. **outage**: arriving inside a scheduled outage, it is dropped (``outage``);
2. **loss**: independent (each datagram lost with probability ``loss``) or bursty (``loss_burst``:
   the Gilbert-Elliott model, a two-state Markov chain stepped once per datagram that loses
   every datagram in its *bad* state and none in its *good* one; it spends ``loss_burst``
   datagrams in the bad state on average and a fraction ``loss`` of the time overall) (``loss``);
3. **duplication**: with probability ``duplicate`` a second copy follows the first; each copy
   goes through the stages below on its own;
4. **bandwidth cap**: at ``rate`` bits a second (the payload plus ``WIRE_OVERHEAD`` bytes of
   headers), one datagram on the link at a time; one that finds ``queue`` datagrams waiting or
   on the link is dropped (``queue``);
5. **delay and jitter**: ``delay`` plus ``jitter`` times a draw of ``distribution`` (normal,
   pareto-normal or exponential; :data:`DISTRIBUTIONS`), never less than nothing; jitter may
   reorder datagrams, unless ``keep_order``, which holds a datagram until the one before it has
   left (as a FIFO would);
6. **reordering**: with probability ``reorder`` a copy is held ``reorder_gap`` seconds longer,
   so that the datagrams arriving within that gap after it overtake it;
7. the rest are held until their departure time (``backlog``: past ``max_in_flight`` held
   datagrams, a new one is dropped).

**Seeded.** Each stage draws from its own random stream, derived from the seed and the
direction's name, and a stage in use draws the same number of times for every datagram,
whatever happens to it. So the *k*-th datagram's loss, duplication, jitter and reordering depend
only on the seed and *k*: the same seed gives the same fate to the same sequence of datagrams,
and turning on jitter does not change which datagrams are lost. Outages, the queue and
``keep_order`` depend on the arrival times as well, as they should.

**Counted.** Every datagram lands in :class:`PathCounters`, which always satisfy::

    received + duplicated == forwarded + dropped (all causes) + in_flight

``forwarded`` and the shell's own drop causes (:data:`SHELL_DROPS`) are counted by the shell
through :meth:`ImpairedPath.forwarded` and :meth:`ImpairedPath.drop`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Generic, NamedTuple, TypeVar

from udpbeat.errors import ConfigError

#: Delay distributions by name: see :func:`quantile`.
DISTRIBUTIONS = ("normal", "pareto-normal", "exponential")
#: Why the path itself drops a datagram.
PATH_DROPS = ("outage", "loss", "queue", "backlog")
#: Why the shell around it drops one: the sending socket failed; the client's upstream socket was
#: closed (idle expiry or eviction) before the datagram's departure; no socket could be opened
#: for a new client; the proxy stopped with the datagram still held.
SHELL_DROPS = ("send-error", "evicted", "no-socket", "stopped")
DROP_CAUSES = PATH_DROPS + SHELL_DROPS
#: Bytes of IPv4 and UDP headers that the bandwidth cap counts on top of each payload.
WIRE_OVERHEAD = 28
#: Longest delay, jitter, reorder gap or outage accepted, in seconds (a day).
MAX_SECONDS = 86_400.0
#: Datagrams held (delayed) at once per direction, by default; past it new ones are dropped.
MAX_IN_FLIGHT = 100_000

_NORMAL = NormalDist()
#: Shape of the Pareto part of pareto-normal; with 3 it has a finite variance (3/4).
_PARETO_SHAPE = 3.0
_PARETO_MEAN = _PARETO_SHAPE / (_PARETO_SHAPE - 1.0)
_PARETO_SD = math.sqrt(_PARETO_SHAPE / ((_PARETO_SHAPE - 1.0) ** 2 * (_PARETO_SHAPE - 2.0)))
#: Uniform draws are kept this far from 0 and 1, where the quantile functions are infinite.
_EDGE = 2.0**-53


def quantile(distribution: str, u: float) -> float:
    """The ``u``-quantile (0 < u < 1) of a delay distribution, in units of ``jitter``.

    - ``normal``: the standard normal: jitter is the standard deviation around ``delay``, and
      ``delay`` is the median;
    - ``exponential``: exponential with mean 1: ``delay`` is the least delay (a fixed path) and
      ``jitter`` the mean of what queues add to it; median ``delay + jitter * ln 2``;
    - ``pareto-normal``: a quarter of the standard normal plus three quarters of a standard
      Pareto (shape 3, mean 0, standard deviation 1), both at the same quantile, as netem's
      ``paretonormal`` table is built: a bell with a long right tail. Mean 0; median about -0.208.

    Every delay is drawn by this function from one uniform draw, so the median delay of a
    configuration is exactly ``delay + jitter * quantile(distribution, 0.5)`` (see
    :attr:`Impairment.median_delay`).
    """
    u = min(max(u, _EDGE), 1.0 - _EDGE)
    if distribution == "normal":
        return _NORMAL.inv_cdf(u)
    if distribution == "exponential":
        return -math.log1p(-u)
    if distribution == "pareto-normal":
        pareto = (float((1.0 - u) ** (-1.0 / _PARETO_SHAPE)) - _PARETO_MEAN) / _PARETO_SD
        return 0.25 * _NORMAL.inv_cdf(u) + 0.75 * pareto
    raise ConfigError(
        f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}"
    )


@dataclass(frozen=True, slots=True)
class ScheduledOutage:
    """The path is down from ``start`` for ``duration`` seconds (both from the path's start)."""

    start: float
    duration: float

    def __post_init__(self) -> None:
        _check_seconds("outage start", self.start)
        _check_seconds("outage length", self.duration)
        if self.duration <= 0:
            raise ConfigError(f"outage length must be more than 0 seconds, got {self.duration!r}")

    @property
    def end(self) -> float:
        return self.start + self.duration

    def __str__(self) -> str:
        return f"{_seconds_text(self.start)}:{_seconds_text(self.duration)}"


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction of a path does to datagrams. Times in seconds, rates in bits/s.

    The default impairs nothing. Every bad value raises :class:`~udpbeat.errors.ConfigError`.
    """

    loss: float = 0.0
    #: Mean length of a loss burst, in datagrams (Gilbert-Elliott); ``None``: independent loss.
    loss_burst: float | None = None
    delay: float = 0.0
    jitter: float = 0.0
    distribution: str = "normal"
    keep_order: bool = False
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_gap: float = 0.01
    #: Bandwidth cap in bits a second (0: none).
    rate: float = 0.0
    #: Datagrams waiting for (or on) the capped link at most; more are dropped.
    queue: int = 1000
    outages: tuple[ScheduledOutage, ...] = ()

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            _check_fraction(name, getattr(self, name))
        if self.loss_burst is not None:
            burst = self.loss_burst
            if not (_is_number(burst) and math.isfinite(burst) and burst >= 1.0):
                raise ConfigError(f"loss burst must be at least 1 datagram, got {burst!r}")
            if 0.0 < self.loss < 1.0 and self.loss / (1.0 - self.loss) > burst:
                # Entering the bad state would need a probability above 1.
                raise ConfigError(
                    f"loss {self.loss:.1%} in bursts of {burst:g} datagrams is impossible: "
                    f"the mean burst must be at least loss/(1-loss) = "
                    f"{self.loss / (1.0 - self.loss):.3g}"
                )
        for name in ("delay", "jitter", "reorder_gap"):
            _check_seconds(name, getattr(self, name))
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(
                f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {self.distribution!r}"
            )
        if not isinstance(self.keep_order, bool):
            raise ConfigError(f"keep_order must be True or False, got {self.keep_order!r}")
        if not (_is_number(self.rate) and math.isfinite(self.rate) and self.rate >= 0):
            raise ConfigError(f"rate must be bits a second, 0 for none, got {self.rate!r}")
        if 0 < self.rate < 8 * (1 + WIRE_OVERHEAD):
            raise ConfigError(f"rate must be at least {8 * (1 + WIRE_OVERHEAD)} bit/s or 0")
        if isinstance(self.queue, bool) or not isinstance(self.queue, int) or self.queue < 1:
            raise ConfigError(f"queue must be a whole number of datagrams, at least 1, "
                              f"got {self.queue!r}")  # fmt: skip
        if not isinstance(self.outages, tuple) or not all(
            isinstance(outage, ScheduledOutage) for outage in self.outages
        ):
            raise ConfigError("outages must be a tuple of ScheduledOutage")

    @property
    def bursty(self) -> bool:
        """Loss comes in bursts (Gilbert-Elliott) rather than independently."""
        return self.loss_burst is not None and 0.0 < self.loss < 1.0

    @property
    def clean(self) -> bool:
        """Nothing is impaired: every datagram leaves as it arrives."""
        return (
            self.loss == 0.0
            and self.delay == 0.0
            and self.jitter == 0.0
            and self.duplicate == 0.0
            and self.reorder == 0.0
            and self.rate == 0.0
            and not self.outages
        )

    @property
    def instant(self) -> bool:
        """Every datagram not dropped leaves the moment it arrives (no delay, jitter, rate cap
        or reordering); loss, duplication and outages may still apply."""
        return self.delay == 0.0 and self.jitter == 0.0 and self.rate == 0.0 and not self.reorder

    @property
    def median_delay(self) -> float:
        """The median delay added (seconds), not counting the bandwidth cap's queue,
        ``keep_order`` or reordering: ``delay + jitter * quantile(distribution, 0.5)``."""
        if self.jitter == 0.0:
            return self.delay
        return max(0.0, self.delay + self.jitter * quantile(self.distribution, 0.5))

    def transition_probabilities(self) -> tuple[float, float]:
        """Bursty loss: ``(P(good -> bad), P(bad -> good))`` per datagram.

        Leaving the bad state has probability ``1/loss_burst`` (a sojourn is geometric with
        mean ``loss_burst``); entering it ``leave * loss / (1 - loss)``, so that the chain
        spends a fraction ``loss`` of the datagrams in the bad state.
        """
        if not self.bursty:
            raise ConfigError("transition probabilities apply to bursty loss only")
        assert self.loss_burst is not None
        leave = 1.0 / self.loss_burst
        return leave * self.loss / (1.0 - self.loss), leave

    def describe(self) -> str:
        """One line for people: what this direction does, or ``clean``."""
        parts: list[str] = []
        for outage in self.outages:
            parts.append(f"outage {outage}")
        if self.loss:
            burst = f" in bursts of {self.loss_burst:g}" if self.bursty else ""
            parts.append(f"loss {self.loss:.4g}{burst}")
        if self.duplicate:
            parts.append(f"duplicate {self.duplicate:.4g}")
        if self.rate:
            parts.append(f"rate {_rate_text(self.rate)} queue {self.queue}")
        if self.delay or self.jitter:
            text = f"delay {_seconds_text(self.delay)}"
            if self.jitter:
                text += (
                    f" jitter {_seconds_text(self.jitter)} {self.distribution}"
                    f" (median {_seconds_text(self.median_delay)})"
                )
                if self.keep_order:
                    text += " in order"
            parts.append(text)
        if self.reorder:
            parts.append(f"reorder {self.reorder:.4g} gap {_seconds_text(self.reorder_gap)}")
        return ", ".join(parts) or "clean"

    def to_dict(self) -> dict[str, object]:
        return {
            "loss": self.loss,
            "loss_burst": self.loss_burst if self.bursty else None,
            "delay": self.delay,
            "jitter": self.jitter,
            "distribution": self.distribution,
            "median_delay": self.median_delay,
            "keep_order": self.keep_order,
            "duplicate": self.duplicate,
            "reorder": self.reorder,
            "reorder_gap": self.reorder_gap,
            "rate": self.rate,
            "queue": self.queue,
            "outages": [{"start": o.start, "duration": o.duration} for o in self.outages],
        }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_fraction(name: str, value: object) -> None:
    if not (_is_number(value) and 0.0 <= value <= 1.0):  # type: ignore[operator]
        raise ConfigError(f"{name} must be a fraction in [0, 1] (0.1 for 10%), got {value!r}")


def _check_seconds(name: str, value: object) -> None:
    if not (_is_number(value) and 0.0 <= value <= MAX_SECONDS):  # type: ignore[operator]
        raise ConfigError(f"{name} must be seconds in [0, {MAX_SECONDS:g}], got {value!r}")


def _seconds_text(seconds: float) -> str:
    if seconds == 0 or seconds >= 1:
        return f"{seconds:g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.4g}ms"
    return f"{seconds * 1e6:.4g}us"


def _rate_text(rate: float) -> str:
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if rate >= scale:
            return f"{rate / scale:g}{unit}"
    return f"{rate:g}bit"


# --- counters --------------------------------------------------------------------------------


@dataclass(slots=True)
class PathCounters:
    """Where every datagram of one direction went.

    ``received``: datagrams that arrived; ``duplicated``: extra copies made; ``forwarded``:
    copies sent on; ``dropped``: copies dropped, by cause (:data:`DROP_CAUSES`); ``in_flight``:
    copies held, not yet sent. Always ``received + duplicated == forwarded + dropped_total +
    in_flight``. Not part of that sum: ``delayed``, copies held before they left (any delay,
    the cap's queue included), and ``reordered``, copies held back by the reordering stage.
    """

    received: int = 0
    duplicated: int = 0
    forwarded: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_CAUSES, 0))
    in_flight: int = 0
    delayed: int = 0
    reordered: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def unaccounted(self) -> int:
        """``received + duplicated`` less every outcome: always 0."""
        return (
            self.received + self.duplicated - self.forwarded - self.dropped_total - self.in_flight
        )

    def copy(self) -> PathCounters:
        return PathCounters(
            self.received,
            self.duplicated,
            self.forwarded,
            dict(self.dropped),
            self.in_flight,
            self.delayed,
            self.reordered,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "duplicated": self.duplicated,
            "forwarded": self.forwarded,
            "dropped": self.dropped_total,
            "dropped_by_cause": dict(self.dropped),
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "reordered": self.reordered,
        }


# --- the path --------------------------------------------------------------------------------


class Fate(NamedTuple):
    """What became of one arriving datagram: when each copy leaves, and why the others went.

    A datagram that passes untouched has one departure equal to its arrival; a lost one has
    none and one cause; a duplicated one two outcomes.
    """

    departures: tuple[float, ...]
    dropped: tuple[str, ...]


T = TypeVar("T")
_Draw = Callable[[], float]


def _stream(seed: int | str, direction: str, stage: str) -> _Draw:
    # A string seed is hashed (SHA-512) by random.Random: the same streams on every platform
    # and Python, independent of one another.
    return random.Random(f"udpbeat-impair/{seed}/{direction}/{stage}").random


class ImpairedPath(Generic[T]):
    """One direction of a bad path, on the clock it is given.

    ``start`` is the time (on the caller's clock) that outages are counted from. ``T`` is
    whatever the shell needs to send a datagram on (its destination); the path only holds it.
    """

    def __init__(
        self,
        config: Impairment | None = None,
        *,
        seed: int | str = 0,
        direction: str = "up",
        start: float = 0.0,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.config = config = config or Impairment()
        self.direction = direction
        self.start = start
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise ConfigError(f"max in flight must be a whole number, got {max_in_flight!r}")
        if max_in_flight < 1:
            raise ConfigError(f"max in flight must be at least 1, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self.counters = PathCounters()
        self.clean = config.clean
        # (start, end) of each outage on the caller's clock, in order.
        self._outages = sorted((start + o.start, start + o.end) for o in config.outages)
        self._loss_draw = _stream(seed, direction, "loss")
        self._duplicate_draw = _stream(seed, direction, "duplicate")
        self._delay_draw = _stream(seed, direction, "delay")
        self._reorder_draw = _stream(seed, direction, "reorder")
        self._bad = False
        self._enter = self._leave = 0.0
        if config.bursty:
            self._enter, self._leave = config.transition_probabilities()
            # The chain starts in its long-run distribution: bad with probability ``loss``.
            self._bad = self._loss_draw() < config.loss
        self._link: deque[float] = deque()  # when each datagram on the capped link leaves it
        self._link_free = -math.inf
        self._last_departure = -math.inf  # for keep_order
        self._held: list[tuple[float, int, T, bytes]] = []
        self._ready: list[tuple[T, bytes]] = []
        self._order = 0
        #: Seconds by which ``pop_due`` was called after datagrams were due: sum, max, count.
        self.lateness_total = 0.0
        self.lateness_max = 0.0
        self.lateness_count = 0

    # -- deciding and holding ----------------------------------------------------------------

    def send(self, payload: bytes, to: T, now: float) -> Fate:
        """A datagram for ``to`` arrived at ``now``: decide its fate, count it, and hold each
        copy until it is due (:meth:`pop_due`; a copy due at once is due at ``now``).

        Arrival times must not go backwards.
        """
        fate = self._decide(now, len(payload))
        counters = self.counters
        for leaves in fate.departures:
            if leaves <= now:
                counters.in_flight += 1  # settled by forwarded() or drop()
                self._ready.append((to, payload))
            elif len(self._held) >= self.max_in_flight:
                counters.dropped["backlog"] += 1
            else:
                counters.delayed += 1
                counters.in_flight += 1
                self._order += 1
                heapq.heappush(self._held, (leaves, self._order, to, payload))
        return fate

    def _decide(self, now: float, size: int) -> Fate:
        config = self.config
        counters = self.counters
        counters.received += 1
        # Every stage in use draws for every datagram, so the k-th datagram's draws are the
        # k-th of each stream whatever happened to the ones before it.
        lost = self._lost() if config.loss else False
        copies = 2 if config.duplicate and self._duplicate_draw() < config.duplicate else 1
        jitter = (self._delay_draw(), self._delay_draw()) if config.jitter else (0.5, 0.5)
        reorder = (self._reorder_draw(), self._reorder_draw()) if config.reorder else (1.0, 1.0)
        if self._outages and self._in_outage(now):
            counters.dropped["outage"] += 1
            return Fate((), ("outage",))
        if lost:
            counters.dropped["loss"] += 1
            return Fate((), ("loss",))
        if copies == 2:
            counters.duplicated += 1
        departures: list[float] = []
        dropped: list[str] = []
        for copy in range(copies):
            leaves = now
            if config.rate:
                link = self._link
                while link and link[0] <= now:
                    link.popleft()
                if len(link) >= config.queue:
                    dropped.append("queue")
                    counters.dropped["queue"] += 1
                    continue
                leaves = max(now, self._link_free) + (size + WIRE_OVERHEAD) * 8.0 / config.rate
                self._link_free = leaves
                link.append(leaves)
            if config.delay or config.jitter:
                added = config.delay
                if config.jitter:
                    added += config.jitter * quantile(config.distribution, jitter[copy])
                leaves += max(added, 0.0)
            if config.keep_order:
                leaves = max(leaves, self._last_departure)
                self._last_departure = leaves
            if reorder[copy] < config.reorder:
                leaves += config.reorder_gap
                counters.reordered += 1
            departures.append(leaves)
        return Fate(tuple(departures), tuple(dropped))

    def _lost(self) -> bool:
        config = self.config
        if not config.bursty:
            return self._loss_draw() < config.loss
        # Step the chain, then the state decides: the bad state loses everything.
        if self._bad:
            if self._loss_draw() < self._leave:
                self._bad = False
        elif self._loss_draw() < self._enter:
            self._bad = True
        return self._bad

    def _in_outage(self, now: float) -> bool:
        outages = self._outages
        while outages and outages[0][1] <= now:
            outages.pop(0)  # over for good: arrival times do not go backwards
        return bool(outages) and outages[0][0] <= now

    def get_timer(self) -> float | None:
        """When the next held datagram is due (``now`` of the last :meth:`send` for one due
        at once), or ``None`` when nothing is held."""
        if self._ready:
            return -math.inf
        return self._held[0][0] if self._held else None

    def pop_due(self, now: float) -> list[tuple[T, bytes]]:
        """The copies due by ``now``: the delayed ones in order of departure (ties: of
        arrival), then those due at once, in order of arrival. Each is in flight until the
        shell says what became of it (:meth:`forwarded`, :meth:`drop`)."""
        held = self._held
        due: list[tuple[T, bytes]] = []
        while held and held[0][0] <= now:
            leaves, _, to, payload = heapq.heappop(held)
            late = now - leaves
            self.lateness_total += late
            self.lateness_count += 1
            if late > self.lateness_max:
                self.lateness_max = late
            due.append((to, payload))
        if self._ready:
            due.extend(self._ready)
            self._ready.clear()
        return due

    @property
    def held(self) -> int:
        """Copies held for a later departure (or due now and not yet popped)."""
        return len(self._held) + len(self._ready)

    def stop(self) -> int:
        """Drop everything held (as ``stopped``); returns how many."""
        gone = self.held
        self._held = []
        self._ready.clear()
        self.drop("stopped", gone)
        return gone

    # -- the shell's outcomes ---------------------------------------------------------------

    def forwarded(self, count: int = 1) -> None:
        """``count`` datagrams returned by :meth:`pop_due` went out."""
        self.counters.forwarded += count
        self.counters.in_flight -= count

    def drop(self, cause: str, count: int = 1) -> None:
        """``count`` datagrams returned by :meth:`pop_due` were dropped for ``cause``."""
        if cause not in self.counters.dropped:
            raise ValueError(f"unknown drop cause {cause!r}")
        self.counters.dropped[cause] += count
        self.counters.in_flight -= count

    def passed(
        self, received: int, forwarded: int, dropped: Iterable[tuple[str, int]] = ()
    ) -> None:
        """A clean path's fast lane: ``received`` datagrams arrived and were handled without
        :meth:`send` (nothing to decide): ``forwarded`` went out, the rest were ``dropped``."""
        counters = self.counters
        counters.received += received
        counters.forwarded += forwarded
        for cause, count in dropped:
            counters.dropped[cause] += count

    @property
    def mean_lateness(self) -> float | None:
        """Mean seconds between a delayed datagram's due time and the ``pop_due`` that
        returned it; ``None`` before the first."""
        return self.lateness_total / self.lateness_count if self.lateness_count else None


# --- named paths -----------------------------------------------------------------------------

#: Paths by name, both directions: ``(up, down)``. ``udpbeat demo --path NAME`` uses them.
PATHS: dict[str, tuple[Impairment, Impairment]] = {
    # About 28% of round trips lost, each datagram on its own.
    "lossy": (Impairment(loss=0.15), Impairment(loss=0.15)),
    # About 19% of round trips lost, in bursts of 4 datagrams on average each way.
    "bursty": (Impairment(loss=0.1, loss_burst=4.0), Impairment(loss=0.1, loss_burst=4.0)),
    # 20 ms each way with a long-tailed jitter that reorders, and a little loss.
    "jittery": (
        Impairment(delay=0.02, jitter=0.01, distribution="pareto-normal", loss=0.02),
        Impairment(delay=0.02, jitter=0.01, distribution="pareto-normal", loss=0.02),
    ),
}
