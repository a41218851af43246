"""One-way delays, the reflector's time, the clocks' offset and directional loss from STAMP's
four timestamps. Pure: fed one exchange at a time by the session.

For an exchange, T1 and T4 are the prober's send and receive times, T2 and T3 the reflector's
receive and send times, each on its own host's clock:

- forward delay ``T2 - T1`` and backward delay ``T4 - T3``: true one-way delays plus and minus
  the offset between the clocks;
- reflector time ``T3 - T2``: on the reflector's clock alone, so exact whatever the offset;
- round-trip delay ``(T4 - T1) - (T3 - T2)`` (RFC 8762 §4's, and what irtt reports as its RTT:
  the round trip without the reflector's turnaround) and offset
  ``((T2 - T1) + (T3 - T4)) / 2``, as NTP computes them (RFC 5905 §8). The offset of one
  exchange is off by half the difference of the two one-way delays; the exchanges with the
  lowest delay have the least queueing, so the least of that difference: the estimate is the
  median offset of the lowest-delay tenth of the last
  ``OFFSET_WINDOW`` exchanges. A path whose two directions differ for good (asymmetric routes)
  biases it by half that difference, which no two-way method can see (``docs/stamp.md``).
"""

from __future__ import annotations

import statistics
from collections import deque

from udpbeat.report import OneWayReport
from udpbeat.stats import RecentSeries, Series
from udpbeat.wire.base import Timestamps

#: Exchanges the clock offset is estimated from (the most recent), and the share of them, by
#: lowest delay, whose offsets are taken.
OFFSET_WINDOW = 1024
OFFSET_SHARE = 0.1
_MODULUS = 2**32


class OneWay:
    """The figures of STAMP exchanges; ``history`` bounds what is kept, as for the RTTs."""

    def __init__(self, history: int | None = None) -> None:
        self._forward = Series() if history is None else RecentSeries(history)
        self._backward = Series() if history is None else RecentSeries(history)
        self._reflector = Series() if history is None else RecentSeries(history)
        self._round_trip = Series() if history is None else RecentSeries(history)
        self._exchanges: deque[tuple[float, float]] = deque(maxlen=OFFSET_WINDOW)
        self._stateful = False
        # (session seq, reflector seq) of the first and the last reply, by session seq.
        self._first: tuple[int, int] | None = None
        self._last: tuple[int, int] | None = None
        self._replies = 0

    def add(self, seq: int, sent: float, received: float, stamps: Timestamps) -> None:
        """One reply to heartbeat ``seq``, sent at ``sent`` and received at ``received`` (T1
        and T4, the prober's Unix time)."""
        forward = stamps.received - sent
        backward = received - stamps.reflected
        reflector = stamps.reflected - stamps.received
        self._forward.add(forward)
        self._backward.add(backward)
        self._reflector.add(reflector)
        delay = forward + backward  # (T4 - T1) - (T3 - T2): the RTT less the reflector's time
        self._round_trip.add(delay)
        self._exchanges.append((delay, (forward - backward) / 2))
        if stamps.reflector_seq != seq % _MODULUS:
            self._stateful = True
        pair = (seq, stamps.reflector_seq)
        if self._first is None or seq < self._first[0]:
            self._first = pair
        if self._last is None or seq > self._last[0]:
            self._last = pair
        self._replies += 1

    def clock_offset(self) -> float | None:
        if not self._exchanges:
            return None
        lowest = sorted(self._exchanges)[: max(1, int(len(self._exchanges) * OFFSET_SHARE))]
        return statistics.median(offset for _, offset in lowest)

    def lost(self) -> tuple[int | None, int | None]:
        """``(forward, backward)`` losses between the first and the last reply."""
        if not self._stateful or self._first is None or self._last is None:
            return None, None
        sent = self._last[0] - self._first[0] + 1
        reflected = (self._last[1] - self._first[1]) % _MODULUS + 1
        forward, backward = sent - reflected, reflected - self._replies
        if forward < 0 or backward < 0:
            return None, None
        return forward, backward

    def report(self) -> OneWayReport:
        forward_lost, backward_lost = self.lost()
        return OneWayReport(
            self._forward.summary(),
            self._backward.summary(),
            self._reflector.summary(),
            self._round_trip.summary(),
            self.clock_offset(),
            max(1, int(len(self._exchanges) * OFFSET_SHARE)) if self._exchanges else 0,
            self._stateful,
            forward_lost,
            backward_lost,
        )
