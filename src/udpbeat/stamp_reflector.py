"""A STAMP Session-Reflector (RFC 8762 §4.3) behind the text reflector's defences.

:class:`StampReflector` is a :class:`~udpbeat.reflector.Reflector`: the same checks, in the same
order and with the same counters (size, source port, allowlist, per-source and global rate
limits, deliberate loss), so that ``received == replied + dropped_loss + rate_limited +
malformed + denied`` still holds; only the parser and the reply differ.

- **Symmetric size** (§4.2.1, RFC 8972 §4): the reply is exactly as long as the request: its
  base packet, then the request's TLVs (or padding) sent back, unrecognized TLVs flagged U.
  Amplification is 1.0.
- **Timestamps**: T2 (receive timestamp) is the ``wall_time`` the shell passes, the request's
  receive time (the kernel's stamp where the shell has one); T3 is read from the injected
  ``clock`` once per call, after every datagram of the batch was checked and parsed and right
  before the replies are built, so it is as late as a pure function can make it.
- **Stateless or stateful** (§4.3): stateless copies the sender's sequence number; stateful
  numbers the replies of each session (source address, port and SSID) from 0, so that the
  sender can tell forward loss from backward loss. Sessions are remembered up to
  ``ReflectorConfig.max_sources``, the oldest forgotten first.
- **Session-Sender TTL**: as the shell read it from the request (``IP_RECVTTL`` /
  ``IPV6_RECVHOPLIMIT``), per datagram; 255 where the shell could not.
- **Authenticated mode** (§4.2.2, §4.3.2): with a key, a request whose HMAC does not match is
  counted (``denied``, reason ``bad-hmac``) and never answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from udpbeat.errors import BadHmac, ConfigError, WireError
from udpbeat.reflector import Address, Reflected, Reflector, ReflectorConfig
from udpbeat.wire import stamp

#: The largest request a STAMP reflector accepts by default: a full Ethernet frame's UDP payload
#: over IPv4, room for any TLVs a sender adds.
STAMP_MAX_SIZE = 1472
MODES = ("stateless", "stateful")


@dataclass(frozen=True, slots=True)
class StampOptions:
    """How the STAMP reflector answers: ``mode`` (``stateless`` or ``stateful``), the shared
    ``key`` for authenticated mode (``None``: unauthenticated), and ``ptp`` to write T2 and T3
    in PTPv2's format (Z bit set) rather than NTP's.

    Raises:
        ConfigError: an unknown mode, or an empty key.
    """

    mode: str = "stateless"
    key: bytes | None = None
    ptp: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"STAMP mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.key is not None and not (isinstance(self.key, bytes) and self.key):
            raise ConfigError("a STAMP key must be non-empty bytes")


def stamp_config(**changes: object) -> ReflectorConfig:
    """A :class:`ReflectorConfig` with STAMP's default ``max_size``, and ``changes``."""
    options: dict[str, object] = {"max_size": STAMP_MAX_SIZE}
    options.update(changes)
    return ReflectorConfig(**options)  # type: ignore[arg-type]


class StampReflector(Reflector):
    """The STAMP reflector as a pure function of (datagrams, source, times, TTLs).

    ``clock`` gives Unix time for T3 (``time.time`` by default; the simulator passes its
    virtual clock, and ``None`` makes T3 equal T2).
    """

    def __init__(
        self,
        config: ReflectorConfig | None = None,
        options: StampOptions | None = None,
        *,
        clock: Callable[[], float] | None = time.time,
    ) -> None:
        super().__init__(config or stamp_config())
        self.options = options = options or StampOptions()
        self._key = options.key
        self._ptp = options.ptp
        self._stateful = options.mode == "stateful"
        self._clock = clock
        self._own_error_estimate = stamp.ErrorEstimate(ptp=options.ptp).to_int()
        self._sessions: dict[tuple[object, ...], int] = {}
        self._max_sessions = self.config.max_sources

    def reflect(
        self,
        data: bytes,
        source: Address,
        now: float,
        wall_time: float,
        ttls: Sequence[int] | None = None,
    ) -> bytes | None:
        """See :meth:`Reflector.reflect`; ``ttls`` holds the request's TTL, if the shell read it."""
        return self.reflect_batch((data,), source, now, (wall_time,), ttls)[0]

    def reflect_batch(
        self,
        datagrams: Sequence[bytes],
        source: Address,
        now: float,
        wall_times: Sequence[float],
        ttls: Sequence[int] | None = None,
    ) -> list[bytes | None]:
        """See :meth:`Reflector.reflect_batch`: ``wall_times[i]`` is the i-th request's receive
        time, its T2; ``ttls[i]`` is its TTL (or hop limit), ``None`` if the shell has none."""
        if len(wall_times) != len(datagrams):
            raise ValueError(
                f"reflect_batch: {len(datagrams)} datagrams but {len(wall_times)} receive times"
            )
        counters = self.counters
        counters.received += len(datagrams)
        max_size = self._max_size
        privileged = source[1] < self._lowest_port
        host = source[0]
        allowlist = self._allowlist
        denied = allowlist is not None and not allowlist.allows(host)
        allow_source = self._allow_source
        allow_global = self._allow_global
        loss = self._loss
        key = self._key
        base = stamp.BASE_SIZE if key is None else stamp.AUTHENTICATED_SIZE
        head = stamp.SENDER_HEAD.unpack_from
        replies: list[bytes | None] = [None] * len(datagrams)
        # (index, sender's seq, SSID, the request, its decoding in authenticated mode, its
        # receive time) of every datagram to answer.
        accepted: list[tuple[int, int, int, bytes, stamp.SenderPacket | None, float]] = []
        for index, data in enumerate(datagrams):
            wall_time = wall_times[index]
            size = len(data)
            if size > max_size:
                self._malformed(source, wall_time, "oversize", f"longer than {max_size} bytes")
                continue
            if privileged:
                self._refused(counters.denied, source, wall_time, "denied", "privileged-port")
                continue
            if denied:
                self._refused(counters.denied, source, wall_time, "denied", "allowlist")
                continue
            if allow_source is not None and not allow_source(host, now):
                self._refused(counters.rate_limited, source, wall_time, "rate-limited", "source")
                continue
            if allow_global is not None and not allow_global(now):
                self._refused(counters.rate_limited, source, wall_time, "rate-limited", "global")
                continue
            if size < base:
                what = "an authenticated" if key is not None else "a"
                self._malformed(
                    source,
                    wall_time,
                    "short-packet",
                    f"{size} octets; {what} Session-Sender packet takes {base}",
                )
                continue
            packet = None
            if key is None:
                seq, _, _, ssid = head(data)
            else:
                try:
                    packet = stamp.decode_sender(data, key)
                except BadHmac as error:
                    self._refused(counters.denied, source, wall_time, "denied", error.reason)
                    continue
                except WireError as error:  # pragma: no cover - the size was checked above
                    self._malformed(source, wall_time, error.reason, str(error))
                    continue
                seq, ssid = packet.seq, packet.ssid
            if loss and self._random() < loss:
                counters.dropped_loss += 1
                if self._log_events:
                    self._note(Reflected(wall_time, source, "dropped-loss", str(seq)))
                continue
            accepted.append((index, seq, ssid, data, packet, wall_time))
        if not accepted:
            return replies
        ptp = self._ptp
        from_unix = stamp.from_unix
        clock = self._clock
        # T3: read once, after the checks and parsing of the whole batch, just before the
        # replies are built and handed to the shell to send.
        sent_at = None if clock is None else from_unix(clock(), ptp)
        own_ee = self._own_error_estimate
        stateful = self._stateful
        build = stamp.REFLECTOR_FROM_REQUEST.pack
        for index, seq, ssid, data, packet, wall_time in accepted:
            received = from_unix(wall_time, ptp)
            transmitted = received if sent_at is None else sent_at
            reflector_seq = self._next_seq(source, ssid) if stateful else seq
            ttl = stamp.UNKNOWN_TTL if ttls is None else ttls[index]
            if packet is None:
                reply = build(reflector_seq, transmitted, own_ee, ssid, received, data[:14], ttl)
            else:
                reply = stamp.encode_reflector(
                    stamp.ReflectorPacket(
                        reflector_seq,
                        transmitted,
                        stamp.ErrorEstimate.from_int(own_ee),
                        ssid,
                        received,
                        seq,
                        packet.timestamp,
                        packet.error_estimate,
                        ttl,
                    ),
                    key,
                )
            if len(data) > base:
                reply += stamp.reflect_extra(data[base:])
            replies[index] = reply
            counters.replied += 1
            if self._log_events:
                self._note(Reflected(wall_time, source, "replied", f"stamp seq {seq}"))
        return replies

    def _next_seq(self, source: Address, ssid: int) -> int:
        """The next reply number of the session (source, port, SSID): 0, 1, 2, ..."""
        session = (source[0], source[1], ssid)
        sessions = self._sessions
        number = sessions.get(session)
        if number is None:
            if len(sessions) >= self._max_sessions:
                del sessions[next(iter(sessions))]
            number = 0
        sessions[session] = (number + 1) % stamp.SEQUENCE_MODULUS
        return number

    def stats(self) -> dict[str, object]:
        return {**super().stats(), "stamp_sessions": len(self._sessions)}
