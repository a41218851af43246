"""Token buckets for the reflector: pure, with the time passed in by the caller.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; each request allowed
takes one. The state is kept in the equivalent "virtual scheduling" form (the GCRA of ATM
networks): one float, the theoretical arrival time ``tat`` of the next request, so a source costs a
single float in the table and a check is a few float operations with no allocation::

    tokens(now) == burst - max(0, tat - now) * rate
    allowed     <=> tat - now <= (burst - 1) / rate,   then tat = max(tat, now) + 1 / rate

:class:`Gcra` is that rule, written once; :class:`TokenBucket` keeps one ``tat`` with it, and
:class:`SourceLimiter` one per source. ``now`` is a monotonic clock (the reflector is given the
shell's ``time.monotonic()``), so it never steps back. Times are kept relative to the first
``now`` seen, so that adding ``1 / rate`` stays exact whatever the clock's epoch (1 / 1e7 s next to
a Unix time near 1.8e9 would be rounded to a few float steps).

:class:`SourceLimiter` keeps its table to at most ``max_sources`` entries, evicting the least
recently seen source, so a flood of spoofed sources cannot grow memory. An evicted source whose
bucket had refilled loses nothing (a new bucket starts full); only evicting a source that is still
being limited loosens the limit, and that is counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from udpbeat.errors import ConfigError

#: Slack on the last token, so that sums of ``1 / rate`` rounded in binary still let exactly
#: ``burst`` requests through at once (199 * 0.01 added one by one exceeds 1.99).
_ROUNDING = 1e-6
#: Lowest rate accepted, in requests per second: one request in about 11.6 days. Below it
#: ``burst / rate`` would leave the range of seconds a float keeps exactly (and, for the
#: tiniest rates, overflow to infinity, which would turn the limit off).
MIN_RATE = 1e-6
#: Highest rate accepted, in requests per second: far above what one Python process can reflect.
MAX_RATE = 1e7
#: Largest burst accepted: far more than any socket can queue, and a whole number a float holds.
MAX_BURST = 10**9


def check_rate(rate: float, what: str) -> None:
    """Raises: ConfigError unless ``MIN_RATE <= rate <= MAX_RATE``."""
    # Compared without converting to float, so a huge int is refused rather than overflowing;
    # NaN fails the comparison, and infinity is above MAX_RATE.
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not MIN_RATE <= rate <= MAX_RATE
    ):
        raise ConfigError(
            f"{what} must be a number of requests per second in "
            f"[{MIN_RATE:g}, {MAX_RATE:g}], got {rate!r}"
        )


def check_burst(burst: int, what: str) -> None:
    """Raises: ConfigError unless ``burst`` is a whole number of requests in 1..``MAX_BURST``."""
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_BURST:
        raise ConfigError(
            f"{what} must be a whole number of requests in 1..{MAX_BURST}, got {burst!r}"
        )


class Gcra:
    """The rule shared by every bucket: ``rate`` requests a second, up to ``burst`` at once.

    It holds the parameters and the clock's origin, never a bucket's state: :meth:`admit`
    takes a bucket's ``tat`` and gives the next one, so one bucket (:class:`TokenBucket`) and a
    table of them (:class:`SourceLimiter`) run the same code.

    Raises:
        ConfigError: ``rate`` or ``burst`` out of range.
    """

    __slots__ = ("_interval", "_origin", "_tolerance", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        check_rate(rate, "rate")
        check_burst(burst, "burst")
        self.rate = float(rate)
        self.burst = burst
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1 + _ROUNDING) * self._interval
        self._origin: float | None = None

    def admit(self, tat: float | None, now: float) -> float | None:
        """The bucket's next ``tat`` if a request at ``now`` is allowed, ``None`` if refused.

        A bucket never seen (``tat`` ``None``) starts full. ``tat`` values are on the rule's
        own time line, seconds since the first ``now`` it saw.
        """
        origin = self._origin
        if origin is None:
            origin = self._origin = now
        now -= origin
        if tat is None or tat < now:
            return now + self._interval
        if tat - now > self._tolerance:
            return None
        return tat + self._interval

    def since(self, now: float) -> float:
        """``now`` on the rule's own time line."""
        return now - (now if self._origin is None else self._origin)

    def tokens_left(self, tat: float | None, now: float) -> float:
        """Tokens a bucket at ``tat`` holds at ``now``."""
        if tat is None:
            return float(self.burst)
        return max(0.0, self.burst - max(0.0, tat - self.since(now)) * self.rate)


class TokenBucket(Gcra):
    """One bucket: ``rate`` requests a second on average, up to ``burst`` at once.

    Raises:
        ConfigError: ``rate`` or ``burst`` out of range.
    """

    __slots__ = ("_tat",)

    def __init__(self, rate: float, burst: int) -> None:
        super().__init__(rate, burst)
        self._tat: float | None = None

    def allow(self, now: float) -> bool:
        """Take a token if there is one. ``now``: seconds on a monotonic clock."""
        tat = self.admit(self._tat, now)
        if tat is None:
            return False
        self._tat = tat
        return True

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (for tests and reports; :meth:`allow` does not call it)."""
        return self.tokens_left(self._tat, now)


class SourceLimiter(Gcra):
    """A token bucket per source, in a least-recently-seen table of bounded size.

    ``sources_evicted`` counts every eviction; ``sources_evicted_active`` those of a source whose
    bucket had not refilled yet, the only ones that loosen the limit. If the latter grows, the
    table is too small for the traffic (or spoofed sources are churning it): raise
    ``max_sources`` or rely on a global limit.

    Raises:
        ConfigError: ``rate``, ``burst`` or ``max_sources`` out of range.
    """

    __slots__ = ("_table", "max_sources", "sources_evicted", "sources_evicted_active")

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        super().__init__(rate, burst)
        if isinstance(max_sources, bool) or not isinstance(max_sources, int) or max_sources < 1:
            raise ConfigError(
                f"max sources must be a whole number, at least 1, got {max_sources!r}"
            )
        self.max_sources = max_sources
        self.sources_evicted = 0
        self.sources_evicted_active = 0
        self._table: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, source: Hashable) -> bool:
        return source in self._table

    def allow(self, source: Hashable, now: float) -> bool:
        """Take a token from ``source``'s bucket if it has one; a new source starts full."""
        table = self._table
        tat = table.get(source)
        if tat is None:
            if len(table) >= self.max_sources:
                self._evict(now)
        else:
            table.move_to_end(source)
        tat = self.admit(tat, now)
        if tat is None:
            return False
        table[source] = tat
        return True

    def tokens(self, source: Hashable, now: float) -> float:
        """Tokens ``source`` has at ``now``; ``burst`` for a source not in the table."""
        return self.tokens_left(self._table.get(source), now)

    def _evict(self, now: float) -> None:
        _, tat = self._table.popitem(last=False)
        self.sources_evicted += 1
        if tat > self.since(now):
            self.sources_evicted_active += 1
