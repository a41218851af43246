"""Token buckets for the reflector: pure, with the time passed in by the caller.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; each request allowed
takes one. The state is kept in the equivalent "virtual scheduling" form (the GCRA of ATM
networks): one float, the theoretical arrival time ``tat`` of the next request, so a source costs a
single float in the table and a check is a few float operations with no allocation::

    tokens(now) == burst - max(0, tat - now) * rate
    allowed     <=> tat - now <= (burst - 1) / rate,   then tat = max(tat, now) + 1 / rate

Times are kept relative to the first ``now`` seen, so that adding ``1 / rate`` to a Unix time near
1.8e9 does not lose precision at high rates. A clock that steps backwards (the reflector is given
wall-clock time) is detected, because ``tat - now`` can then exceed what any run of allowed
requests leaves, and the bucket is reset to full rather than locking its source out until the
clock catches up.

:class:`SourceLimiter` keeps one bucket per source in a table of at most ``max_sources`` entries,
evicting the least recently seen source, so a flood of spoofed sources cannot grow memory. An
evicted source whose bucket had refilled loses nothing (a new bucket starts full); only evicting a
source that is still being limited loosens the limit, and that is counted.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

from udpbeat.errors import ConfigError

#: Slack on the last token, so that sums of ``1 / rate`` rounded in binary still let exactly
#: ``burst`` requests through at once (199 * 0.01 added one by one exceeds 1.99).
_ROUNDING = 1e-6
#: Highest rate accepted, in requests per second: far above what one Python process can reflect.
MAX_RATE = 1e7


def check_rate(rate: float, what: str) -> None:
    """Raises: ConfigError unless ``0 < rate <= MAX_RATE``."""
    if not (math.isfinite(rate) and 0.0 < rate <= MAX_RATE):
        raise ConfigError(
            f"{what} must be a number of requests per second in (0, {MAX_RATE:.0e}], got {rate!r}"
        )


def check_burst(burst: int, what: str) -> None:
    """Raises: ConfigError unless ``burst`` is a whole number of requests, at least 1."""
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError(f"{what} must be a whole number of requests, at least 1, got {burst!r}")


class TokenBucket:
    """One bucket: ``rate`` requests a second on average, up to ``burst`` at once.

    Raises:
        ConfigError: ``rate`` or ``burst`` out of range.
    """

    __slots__ = ("_backstep", "_interval", "_origin", "_tat", "_tolerance", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        check_rate(rate, "rate")
        check_burst(burst, "burst")
        self.rate = float(rate)
        self.burst = burst
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1 + _ROUNDING) * self._interval
        self._backstep = self._tolerance + 2 * self._interval
        self._origin: float | None = None
        self._tat = 0.0

    def allow(self, now: float) -> bool:
        """Take a token if there is one. ``now`` in seconds, from any clock that mostly advances."""
        origin = self._origin
        if origin is None:
            origin = self._origin = now
        now -= origin
        tat = self._tat
        if tat < now:
            tat = now
        elif tat - now > self._tolerance:
            if tat - now <= self._backstep:
                return False
            tat = now  # the clock stepped back: start over with a full bucket
        self._tat = tat + self._interval
        return True

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (for tests and reports; :meth:`allow` does not call it)."""
        if self._origin is None:
            return float(self.burst)
        ahead = self._tat - (now - self._origin)
        if ahead > self._backstep:
            return float(self.burst)
        return max(0.0, self.burst - max(0.0, ahead) * self.rate)


class SourceLimiter:
    """A :class:`TokenBucket` per source, in a least-recently-seen table of bounded size.

    ``sources_evicted`` counts every eviction; ``sources_evicted_active`` those of a source whose
    bucket had not refilled yet, the only ones that loosen the limit. If the latter grows, the
    table is too small for the traffic (or spoofed sources are churning it): raise
    ``max_sources`` or rely on a global limit.

    Raises:
        ConfigError: ``rate``, ``burst`` or ``max_sources`` out of range.
    """

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        check_rate(rate, "rate")
        check_burst(burst, "burst")
        if isinstance(max_sources, bool) or not isinstance(max_sources, int) or max_sources < 1:
            raise ConfigError(
                f"max sources must be a whole number, at least 1, got {max_sources!r}"
            )
        self.rate = float(rate)
        self.burst = burst
        self.max_sources = max_sources
        self.sources_evicted = 0
        self.sources_evicted_active = 0
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1 + _ROUNDING) * self._interval
        self._backstep = self._tolerance + 2 * self._interval
        self._origin: float | None = None
        self._table: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, source: Hashable) -> bool:
        return source in self._table

    def allow(self, source: Hashable, now: float) -> bool:
        """Take a token from ``source``'s bucket if it has one; a new source starts full."""
        origin = self._origin
        if origin is None:
            origin = self._origin = now
        now -= origin
        table = self._table
        tat = table.get(source)
        if tat is None:
            if len(table) >= self.max_sources:
                self._evict(now)
            tat = now
        else:
            table.move_to_end(source)
            if tat < now:
                tat = now
            elif tat - now > self._tolerance:
                if tat - now <= self._backstep:
                    return False
                tat = now  # the clock stepped back: start over with a full bucket
        table[source] = tat + self._interval
        return True

    def tokens(self, source: Hashable, now: float) -> float:
        """Tokens ``source`` has at ``now``; ``burst`` for a source not in the table."""
        tat = self._table.get(source)
        if tat is None or self._origin is None:
            return float(self.burst)
        ahead = tat - (now - self._origin)
        if ahead > self._backstep:
            return float(self.burst)
        return max(0.0, self.burst - max(0.0, ahead) * self.rate)

    def _evict(self, now: float) -> None:
        _, tat = self._table.popitem(last=False)
        self.sources_evicted += 1
        if tat > now:
            self.sources_evicted_active += 1
