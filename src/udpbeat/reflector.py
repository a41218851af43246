"""The server's logic as a pure function of (datagram, source, receive time).

:meth:`Reflector.reflect` decides what to answer; :mod:`udpbeat.server` is only the socket loop
around it. Every datagram received ends in exactly one counter, so that

    received == replied + dropped_loss + malformed (all reasons)

holds at any moment the reflector is not inside ``reflect``.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from udpbeat.errors import ConfigError, WireError
from udpbeat.wire import text

Address = tuple[Any, ...]
"""A socket address as ``recvfrom`` returns it: ``(host, port)`` or ``(host, port, flow, id)``."""

#: How many not-yet-logged records (replies, drops, malformed datagrams) the reflector keeps for
#: the I/O shell; past that they are only counted, so a flood cannot grow memory.
LOG_BACKLOG = 4096


@dataclass(frozen=True, slots=True)
class ReflectorConfig:
    """``loss``: the fraction of valid requests to drop on purpose, drawn from a ``seed``-ed RNG."""

    loss: float = 0.0
    seed: int | None = None
    log_events: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.loss) and 0.0 <= self.loss <= 1.0):
            raise ConfigError(f"loss must be a fraction in [0, 1] (0.3 for 30%), got {self.loss!r}")


@dataclass(slots=True)
class Counters:
    received: int = 0
    replied: int = 0
    dropped_loss: int = 0
    malformed: Counter[str] = field(default_factory=Counter)

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "replied": self.replied,
            "dropped_loss": self.dropped_loss,
            "malformed": self.malformed_total,
            "malformed_by_reason": dict(sorted(self.malformed.items())),
        }


@dataclass(frozen=True, slots=True)
class Reflected:
    """A record for the log: what was done with one datagram."""

    at: float
    source: Address
    outcome: str  # "replied", "dropped-loss" or "malformed"
    detail: str


class Reflector:
    def __init__(self, config: ReflectorConfig | None = None) -> None:
        self.config = config or ReflectorConfig()
        self.counters = Counters()
        self._random = random.Random(self.config.seed).random
        self._loss = self.config.loss
        self._log: deque[Reflected] = deque()
        self.log_suppressed = 0

    def reflect(self, data: bytes, source: Address, now: float) -> bytes | None:
        """The reply to send back to ``source``, or ``None`` to stay silent.

        ``now`` is the Unix time the datagram was received, taken as early as the shell could.
        Never raises for bad input: a malformed datagram is counted by reason and ignored.
        """
        counters = self.counters
        counters.received += 1
        if len(data) > text.MAX_REQUEST_SIZE:
            self._malformed(source, now, "oversize", f"{len(data)} bytes")
            return None
        try:
            seq_digits, sent_time = text.parse_request(data)
        except WireError as error:
            self._malformed(source, now, error.reason, str(error))
            return None
        if self._loss and self._random() < self._loss:
            counters.dropped_loss += 1
            if self.config.log_events:
                self._note(Reflected(now, source, "dropped-loss", seq_digits.decode()))
            return None
        reply = text.format_reply(seq_digits, now - sent_time)
        counters.replied += 1
        if self.config.log_events:
            self._note(Reflected(now, source, "replied", reply.decode()))
        return reply

    def drain_log(self) -> list[Reflected]:
        """Take the records not yet logged; the shell prints them off the hot path."""
        records = list(self._log)
        self._log.clear()
        return records

    def _malformed(self, source: Address, now: float, reason: str, detail: str) -> None:
        self.counters.malformed[reason] += 1
        self._note(Reflected(now, source, "malformed", f"{reason}: {detail}"))

    def _note(self, record: Reflected) -> None:
        if len(self._log) < LOG_BACKLOG:
            self._log.append(record)
        else:
            self.log_suppressed += 1
