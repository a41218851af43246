"""A budget of confirmation probes shared by many sessions: pure, with the time passed in.

Each :class:`~udpbeat.session.ProbeSession` has a budget of its own (``probes_per_interval``);
a monitor that runs thousands of sessions also needs one over all of them, so that a thousand
dead hosts, each spending its own budget, cannot add up to a flood. :class:`ProbeBudget` is
that: ``rate`` probes a second on average, up to ``burst`` at once.

A session that wants a probe *reserves* one (:meth:`ProbeBudget.reserve`) and is told when it
may send it. Reservations are handed out in order, one ``1 / rate`` apart once the burst is
spent, so sessions waiting for the budget each wake at a time of their own: none is woken only
to find the token taken by another (no thundering herd when ten thousand wait at once). A
reservation its session no longer needs (the target answered meanwhile) is simply not used:
the budget errs on the side of fewer probes.

It is the GCRA's virtual scheduling (see :mod:`udpbeat.ratelimit`), with one difference: a
request that does not conform now is not refused but given the time at which it will.
"""

from __future__ import annotations

import math

from udpbeat.errors import ConfigError


class ProbeBudget:
    """``rate`` confirmation probes a second over all the sessions sharing it, ``burst`` at once.

    Raises:
        ConfigError: ``rate`` not a positive number, or ``burst`` not a whole number >= 1.
    """

    __slots__ = ("_interval", "_tat", "_tolerance", "burst", "granted", "rate", "waited")

    def __init__(self, rate: float, burst: int) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            raise ConfigError(
                f"probe budget must be a number of probes per second > 0, got {rate!r}"
            )
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"probe burst must be a whole number >= 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1) * self._interval
        self._tat = -math.inf
        #: Probes reserved so far, and how many of them had to wait for the budget.
        self.granted = 0
        self.waited = 0

    def configure(self, rate: float, burst: int) -> None:
        """Change the rate and the burst (a reload changed the fleet); reservations made stay.

        Raises:
            ConfigError: as the constructor.
        """
        checked = ProbeBudget(rate, burst)
        self.rate, self.burst = checked.rate, checked.burst
        self._interval, self._tolerance = checked._interval, checked._tolerance

    def reserve(self, now: float) -> float:
        """Reserve one probe; returns when it may be sent (``now`` if the budget allows it now).

        ``now``: seconds on a monotonic clock.
        """
        tat = self._tat if self._tat > now else now
        at = tat - self._tolerance
        if at < now:
            at = now
        self._tat = tat + self._interval
        self.granted += 1
        if at > now:
            self.waited += 1
        return at

    def tokens(self, now: float) -> float:
        """Probes that could be sent at once at ``now``."""
        tat = self._tat if self._tat > now else now
        return max(0.0, self.burst - (tat - now) * self.rate)
