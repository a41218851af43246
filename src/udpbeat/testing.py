"""A driver for :class:`~udpbeat.session.ProbeSession` on a virtual clock, for tests.

It does what ``client.py`` does on a real clock (run the timer, send what is due, hand every
datagram to the session), with time that moves only when told to, in the spirit of aioquic's
``transfer()`` and trio's ``MockClock``::

    driver = SessionDriver(ProbeConfig(count=10, first_seq=1))
    driver.advance(0.5)            # timers due on the way are handled when they were due
    driver.reply(1)                # a reply for heartbeat 1 arrives now
    driver.answer_with(Reflector(), rtt=0.002, lost=lambda: random() < 0.3)
    # (or SessionDriver(config, reflector=Reflector(), ...) to answer from the first heartbeat)
    driver.run()                   # until the session has nothing left to do

Every datagram the session sends is decoded and kept in :attr:`SessionDriver.sent`; every event
in :attr:`SessionDriver.log`. Nothing here touches a socket or a real clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TypeVar

from udpbeat.detector import Detector
from udpbeat.events import Event
from udpbeat.reflector import Reflector
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.wire.text import Heartbeat, HeartbeatReply, decode_request, encode_reply

#: The virtual wall clock runs this far ahead of the virtual monotonic one.
EPOCH = 1_764_000_000.0
#: The source address a reflector sees for the driven session.
CLIENT_ADDRESS = ("192.0.2.1", 40000)
#: Steps after which a driver that is still busy calls the session stuck.
MAX_STEPS = 1_000_000

E = TypeVar("E")


class SessionDriver:
    """Drives one session on a virtual clock; see the module's docstring."""

    def __init__(
        self,
        config: ProbeConfig,
        *,
        detector: Detector | None = None,
        start: float = 100.0,
        target: str = "test",
        reflector: Reflector | None = None,
        rtt: float = 0.001,
        lost: Callable[[], bool] = lambda: False,
    ) -> None:
        """``reflector``: answer from the first heartbeat on, as :meth:`answer_with` does."""
        self.now = start
        self.session = ProbeSession(config, start, target=target, detector=detector)
        self.detector = self.session.detector
        #: Every heartbeat sent, by sequence number: when it left, and what it said.
        self.sent: dict[int, tuple[float, Heartbeat]] = {}
        #: Every event, oldest first.
        self.log: list[Event] = []
        self._arrivals: list[tuple[float, int, bytes | None]] = []
        self._order = 0
        self._responder: Callable[[bytes], None] | None = None
        if reflector is not None:
            self.answer_with(reflector, rtt=rtt, lost=lost)
        self.step()

    # -- time ---------------------------------------------------------------------------------

    def advance(self, to: float) -> None:
        """Let time pass until ``to``, handling every timer and arrival due on the way."""
        if to < self.now:
            raise ValueError(f"time only moves forward: {to} < {self.now}")
        for _ in range(MAX_STEPS):
            when = self._next_due()
            if when is None or when > to:
                break
            self._handle_due(when)
        else:
            raise AssertionError("the session's timer never settles")
        self.now = to
        self.step()

    def run(self, limit: float = 1e9) -> None:
        """Let time pass until nothing is due (or ``limit`` is reached)."""
        for _ in range(MAX_STEPS):
            when = self._next_due()
            if when is None or when > limit:
                return
            self._handle_due(when)
        raise AssertionError("the session never finishes")

    # -- what arrives -------------------------------------------------------------------------

    def reply(self, seq: int, *, time_difference: float = 0.0005) -> None:
        """A reply for ``seq`` arrives now."""
        self.datagram(encode_reply(HeartbeatReply(seq, time_difference)))

    def datagram(self, data: bytes) -> None:
        """``data`` arrives now."""
        self.session.receive_datagram(data, self.now)
        self.step()

    def refused(self, seq: int | None = None) -> None:
        """An ICMP error arrives now (for ``seq``, or unattributed)."""
        self.session.receive_error(self.now, seq)
        self.step()

    def arrive_at(self, at: float, data: bytes | None) -> None:
        """Schedule ``data`` (``None``: an ICMP error) to arrive at ``at``."""
        self._order += 1
        heapq.heappush(self._arrivals, (at, self._order, data))

    def answer_with(
        self,
        reflector: Reflector,
        *,
        rtt: float = 0.001,
        lost: Callable[[], bool] = lambda: False,
    ) -> None:
        """From now on, every datagram sent crosses a path to ``reflector`` and back.

        ``lost()`` is asked once per datagram: ``True`` drops it on the way out.
        """

        def respond(datagram: bytes) -> None:
            if lost():
                return
            at_server = self.now + rtt / 2
            reply = reflector.reflect(datagram, CLIENT_ADDRESS, at_server, EPOCH + at_server)
            if reply is not None:
                self.arrive_at(self.now + rtt, reply)

        self._responder = respond

    def silence(self) -> None:
        """From now on nothing answers (the server stopped)."""
        self._responder = None

    # -- what happened ------------------------------------------------------------------------

    def of_type(self, kind: type[E]) -> list[E]:
        return [event for event in self.log if isinstance(event, kind)]

    def step(self) -> None:
        """What the shell does after anything happens: run the timer, send, drain events."""
        session = self.session
        session.handle_timer(self.now, self.now + EPOCH)
        for datagram in session.datagrams_to_send():
            heartbeat = decode_request(datagram)
            if heartbeat.seq in self.sent:
                raise AssertionError(f"sequence number {heartbeat.seq} was sent twice")
            self.sent[heartbeat.seq] = (self.now, heartbeat)
            if self._responder is not None:
                self._responder(datagram)
        self.log.extend(session.events())

    def _next_due(self) -> float | None:
        when = self.session.get_timer()
        if self._arrivals and (when is None or self._arrivals[0][0] <= when):
            return self._arrivals[0][0]
        return when

    def _handle_due(self, when: float) -> None:
        self.now = max(self.now, when)
        if self._arrivals and self._arrivals[0][0] <= when:
            _, _, data = heapq.heappop(self._arrivals)
            if data is None:
                self.session.receive_error(self.now)
            else:
                self.session.receive_datagram(data, self.now)
        self.step()
