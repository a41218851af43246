"""When the next lone request should come: heartbeats keep a period, so a reader can be awake.

A prober sends its heartbeats on a schedule (one every ``--interval``). A reflector that blocks
between them pays, on every request, the time the kernel takes to wake a sleeping thread, and
its interpreter then runs from cold caches: on a shared VM that is most of its turnaround
(``benchmarks/turnaround.py``). :class:`Cadence` watches the arrival times of lone requests;
while they keep a steady period it names the window the next one should fall in, so the reader
can wake a little before it and poll through it, and only then block.

The arrivals are numbered by the period they fall in (a lost or skipped request leaves a
number out) and a line is fitted through them: its slope is the period, and the spread of the
arrivals around it (from a low to a high quantile: a prober's send is late now and then, never
early) is the window's width, placed where the line says the next one falls.

Pure: driven by the times it is given. What the window costs is bounded by ``share``: a window
is offered only if it is at most that share of the period (so at most that share of one CPU is
spent polling), and arrivals that wander more than that allows (several probers out of step,
requests at random) give none, and the reader just blocks as before.
"""

from __future__ import annotations

import collections
import itertools
import math
import statistics
from typing import NamedTuple

from udpbeat.errors import ConfigError

#: Arrivals the period and the window are read from.
ARRIVALS = 32
#: Seconds a window reaches beyond the spread of recent arrivals at the least.
MIN_LEAD = 0.00005
#: The share of the period a window may take (so of one CPU, at most, spent polling).
SHARE = 0.1
#: The quantiles of the arrivals around the fitted line that the window spans: the earliest
#: few percent and the latest tenth (a send delayed by its own host) are left to a blocking read.
LOW_QUANTILE = 0.1
HIGH_QUANTILE = 0.75
#: Gaps of less than half a period (a send late by more than a period, then one on time) that
#: one prober's arrivals may hold; more are two probers, or no period at all.
SHORT_GAPS = 4
#: Seconds a reader's timed sleep is assumed to overshoot before it has measured its own.
FIRST_LEAD = 0.0003
#: The most :class:`WakeLead` ends a sleep early by: a stall of the whole host (a paused VM,
#: a stopped process) is not a timer's lateness.
MAX_LEAD = 0.002


class Window(NamedTuple):
    """When the next lone request should come: between ``opens`` and ``closes``, one
    ``period`` after the last."""

    opens: float
    closes: float
    period: float


class Cadence:
    """The period of lone arrivals, and the window the next one is expected in.

    ``share``: the longest window, as a share of the period (0 < share < 1); ``min_lead``:
    seconds the window reaches beyond the recent arrivals' spread on either side; ``arrivals``:
    how many recent arrivals are read.

    Raises:
        ConfigError: ``share`` not in (0, 1), ``min_lead`` negative, ``arrivals`` below 4.
    """

    __slots__ = ("_times", "min_lead", "share")

    def __init__(
        self, share: float = SHARE, *, min_lead: float = MIN_LEAD, arrivals: int = ARRIVALS
    ) -> None:
        if not 0 < share < 1:
            raise ConfigError(f"the polling share must be in (0, 1), got {share!r}")
        if not 0 <= min_lead < math.inf:
            raise ConfigError(f"the window's least reach must be >= 0 s, got {min_lead!r}")
        if arrivals < 4:
            raise ConfigError(f"a period needs at least 4 arrivals, got {arrivals!r}")
        self.share = share
        self.min_lead = min_lead
        self._times: collections.deque[float] = collections.deque(maxlen=arrivals)

    def arrived(self, at: float) -> None:
        """A lone request arrived at ``at`` (seconds, on a clock that does not step back)."""
        times = self._times
        if times and at <= times[-1]:
            return
        times.append(at)

    def forget(self) -> None:
        """Arrivals stop being lone (a burst, a batch): the period starts again from scratch."""
        self._times.clear()

    def window(self) -> Window | None:
        """The window around the next expected arrival, or ``None`` if the arrivals keep no
        period a window within ``share`` can catch."""
        times = self._times
        if len(times) < (times.maxlen or 0):
            return None
        # Cheap first: gaps too short for any window to fit the share (a flood of lone
        # requests, which the busy-poll serves) end here, before any arithmetic per arrival.
        if (times[-1] - times[-2]) * self.share <= 2.0 * self.min_lead:
            return None
        gaps = [b - a for a, b in itertools.pairwise(times)]
        rough = statistics.median(gaps)
        # Each arrival numbered from the one before (a gap of two periods: one was lost), so
        # that a rough period's error does not add up along the arrivals.
        numbers = [0]
        short = 0
        for gap in gaps:
            periods = round(gap / rough)
            if periods < 1:  # a late send, then one on time: both in one period
                short += 1
                if short > SHORT_GAPS:
                    return None  # two arrivals per period: not one prober's heartbeats
            numbers.append(numbers[-1] + periods)
        period, start = statistics.linear_regression(numbers, times)
        if period <= 0:
            return None
        spread = sorted(at - (start + period * n) for n, at in zip(numbers, times, strict=True))
        low = spread[int(LOW_QUANTILE * (len(spread) - 1))]
        high = spread[math.ceil(HIGH_QUANTILE * (len(spread) - 1))]
        expected = start + period * (numbers[-1] + 1)
        opens, closes = expected + low - self.min_lead, expected + high + self.min_lead
        if closes - opens > self.share * period:
            return None
        return Window(opens, closes, period)


class WakeLead:
    """How much earlier than a window a reader must end its timed sleep to be polling when the
    window opens: the timer's overshoot on this host, learned from the sleeps themselves.

    ``sample(overshoot)`` after each timed sleep (how long after the asked end it woke);
    ``lead(window, share)``: seconds to end the next sleep early by, such that the polling
    (from then to the window's close) stays within ``share`` of the period. An average over
    the last eight or so sleeps, starting from :data:`FIRST_LEAD`, each sample at most
    :data:`MAX_LEAD`.
    """

    __slots__ = ("_overshoot",)

    def __init__(self) -> None:
        self._overshoot = FIRST_LEAD

    def sample(self, overshoot: float) -> None:
        overshoot = min(max(overshoot, 0.0), MAX_LEAD)
        self._overshoot += (overshoot - self._overshoot) / 8

    def lead(self, window: Window, share: float) -> float:
        room = share * window.period - (window.closes - window.opens)
        return max(0.0, min(2.0 * self._overshoot, room))
