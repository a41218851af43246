"""Ping-style statistics, fed one sample at a time. Pure: no clock is read here."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """min/avg/max/mdev and percentiles of a series, in the series' unit (``None`` if empty)."""

    count: int
    min: float | None
    avg: float | None
    max: float | None
    mdev: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "min": self.min,
            "avg": self.avg,
            "max": self.max,
            "mdev": self.mdev,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
        }


class Series:
    """Accumulates samples; mdev is ping's: sqrt(mean(x^2) - mean(x)^2).

    Samples are kept so that percentiles are exact; a run of a million heartbeats costs 8 MB.
    """

    __slots__ = ("_samples", "_sum", "_sumsq")

    def __init__(self) -> None:
        self._samples: list[float] = []
        self._sum = 0.0
        self._sumsq = 0.0

    def add(self, value: float) -> None:
        self._samples.append(value)
        self._sum += value
        self._sumsq += value * value

    def __len__(self) -> int:
        return len(self._samples)

    def summary(self) -> Summary:
        n = len(self._samples)
        if n == 0:
            return Summary(0, None, None, None, None, None, None, None)
        ordered = sorted(self._samples)
        mean = self._sum / n
        variance = max(self._sumsq / n - mean * mean, 0.0)
        return Summary(
            count=n,
            min=ordered[0],
            avg=mean,
            max=ordered[-1],
            mdev=math.sqrt(variance),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
        )


class RecentSeries(Series):
    """A :class:`Series` that keeps only the last ``limit`` samples, for runs without an end.

    Count, min, avg, max and mdev cover every sample; the percentiles cover the last ``limit``.
    """

    __slots__ = ("_count", "_max", "_min", "_recent")

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._recent: deque[float] = deque(maxlen=limit)
        self._count = 0
        self._min = math.inf
        self._max = -math.inf

    def add(self, value: float) -> None:
        self._recent.append(value)
        self._count += 1
        self._sum += value
        self._sumsq += value * value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def __len__(self) -> int:
        return self._count

    def summary(self) -> Summary:
        n = self._count
        if n == 0:
            return Summary(0, None, None, None, None, None, None, None)
        ordered = sorted(self._recent)
        mean = self._sum / n
        variance = max(self._sumsq / n - mean * mean, 0.0)
        return Summary(
            count=n,
            min=self._min,
            avg=mean,
            max=self._max,
            mdev=math.sqrt(variance),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
        )


def percentile(ordered: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) on a sorted, non-empty list."""
    if not ordered:
        raise ValueError("percentile of an empty series")
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Jitter:
    """RFC 3550 interarrival jitter (section 6.4.1), with the RTT standing for the transit time.

    J += (|D| - J) / 16 where D is the change of transit between consecutive replies, taken in
    the order they arrive. Using the RTT makes it independent of the two hosts' clock offset.
    """

    __slots__ = ("_last", "value")

    def __init__(self) -> None:
        self._last: float | None = None
        self.value = 0.0

    def add(self, transit: float) -> None:
        if self._last is not None:
            self.value += (abs(transit - self._last) - self.value) / 16.0
        self._last = transit
