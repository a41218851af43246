"""The server's logic as a pure function of (datagram, source, receive times).

:meth:`Reflector.reflect` decides what to answer; :mod:`udpbeat.server` is only the socket loop
around it. Every datagram received ends in exactly one counter, so that

    received == replied + dropped_loss + rate_limited + malformed + denied

(each of the last three summed over its reasons) holds at any moment the reflector is not inside
``reflect``.

The checks run cheapest and safest first, so that what an attacker can send costs as little as
possible: the size (one ``len``), the source port and the allowlist (no parsing of the payload),
the rate limits (a table lookup), and only then the parser, the one step whose cost the payload
decides. A datagram refused early is never parsed: a flood of garbage from one source is cut down
to its rate limit before any regular expression runs. See ``docs/reflector.md``.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from udpbeat.errors import ConfigError, WireError
from udpbeat.ratelimit import SourceLimiter, TokenBucket, check_burst, check_rate
from udpbeat.wire import text

Address = tuple[Any, ...]
"""A socket address as ``recvfrom`` returns it: ``(host, port)`` or ``(host, port, flow, id)``."""

_REPLY_FORMAT = text.REPLY_FORMAT

#: How many not-yet-logged records (replies, drops, malformed datagrams) the reflector keeps for
#: the I/O shell; past that they are only counted, so a flood cannot grow memory.
LOG_BACKLOG = 4096

#: Source ports below this are well-known services (DNS, NTP, chargen...): a request "from" one
#: is most likely spoofed to aim the reply at that service, so by default it gets none.
PRIVILEGED_PORTS = 1024
#: The largest UDP payload over IPv4; no ``max_size`` above it could ever be received.
MAX_DATAGRAM_SIZE = 65507
#: Decisions of the allowlist remembered per source address (cleared when full).
ALLOWLIST_CACHE = 4096


@dataclass(frozen=True, slots=True)
class ReflectorConfig:
    """What the reflector answers, and what it refuses.

    - ``loss``: the fraction of valid requests to drop on purpose, drawn from a ``seed``-ed RNG.
    - ``max_size``: longest datagram accepted, in bytes; longer ones are malformed (oversize).
    - ``rate_limit`` / ``burst``: per source address, requests a second and how many at once
      (a token bucket); ``rate_limit=0`` turns it off. ``max_sources`` bounds the sources
      remembered (least recently seen evicted first).
    - ``global_rate_limit``: requests a second over all sources, with a burst of one second's
      worth; 0 (the default) turns it off.
    - ``allow``: CIDR networks (``"10.0.0.0/8"``, ``"2001:db8::/32"``) whose sources are answered;
      empty (the default) answers everyone. IPv4-mapped IPv6 sources match IPv4 networks.
    - ``allow_privileged_ports``: also answer source ports below 1024 (off by default).

    The defaults suit a heartbeat reflector on the Internet; ``docs/reflector.md`` says why.
    """

    loss: float = 0.0
    seed: int | None = None
    log_events: bool = True
    max_size: int = text.MAX_REQUEST_SIZE
    rate_limit: float = 100.0
    burst: int = 200
    max_sources: int = 65536
    global_rate_limit: float = 0.0
    allow: tuple[str, ...] = ()
    allow_privileged_ports: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.loss) and 0.0 <= self.loss <= 1.0):
            raise ConfigError(f"loss must be a fraction in [0, 1] (0.3 for 30%), got {self.loss!r}")
        if (
            isinstance(self.max_size, bool)
            or not isinstance(self.max_size, int)
            or not 1 <= self.max_size <= MAX_DATAGRAM_SIZE
        ):
            raise ConfigError(
                f"max size must be a number of bytes in 1..{MAX_DATAGRAM_SIZE}, "
                f"got {self.max_size!r} (a text request needs at most {text.MAX_REQUEST_SIZE})"
            )
        if self.rate_limit != 0:
            check_rate(self.rate_limit, "rate limit (0: off)")
        check_burst(self.burst, "burst")
        if (
            isinstance(self.max_sources, bool)
            or not isinstance(self.max_sources, int)
            or self.max_sources < 1
        ):
            raise ConfigError(
                f"max sources must be a whole number, at least 1, got {self.max_sources!r}"
            )
        if self.global_rate_limit != 0:
            check_rate(self.global_rate_limit, "global rate limit (0: off)")
        if isinstance(self.allow, str):
            raise ConfigError("allow must be a list of CIDR networks, not one string")
        parse_networks(self.allow)


@dataclass(slots=True)
class Counters:
    """Where every datagram went; ``docs/reflector.md`` describes each counter.

    ``rate_limited`` is by scope (``source``, ``global``), ``malformed`` by reason (``oversize``
    and the codec's reasons), ``denied`` by reason (``privileged-port``, ``allowlist``).
    """

    received: int = 0
    replied: int = 0
    dropped_loss: int = 0
    rate_limited: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    denied: Counter[str] = field(default_factory=Counter)
    #: Datagrams whose handling raised (a defect in udpbeat): counted, never answered.
    internal_errors: int = 0

    def copy(self) -> Counters:
        """An independent snapshot."""
        return Counters(
            self.received,
            self.replied,
            self.dropped_loss,
            Counter(self.rate_limited),
            Counter(self.malformed),
            Counter(self.denied),
            self.internal_errors,
        )

    @property
    def rate_limited_total(self) -> int:
        return sum(self.rate_limited.values())

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    @property
    def denied_total(self) -> int:
        return sum(self.denied.values())

    @property
    def unaccounted(self) -> int:
        """``received`` minus every outcome: 0 whenever the reflector is not inside ``reflect``."""
        return self.received - (
            self.replied
            + self.dropped_loss
            + self.rate_limited_total
            + self.malformed_total
            + self.denied_total
            + self.internal_errors
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "replied": self.replied,
            "dropped_loss": self.dropped_loss,
            "rate_limited": self.rate_limited_total,
            "rate_limited_by_scope": dict(sorted(self.rate_limited.items())),
            "malformed": self.malformed_total,
            "malformed_by_reason": dict(sorted(self.malformed.items())),
            "denied": self.denied_total,
            "denied_by_reason": dict(sorted(self.denied.items())),
            "internal_errors": self.internal_errors,
        }


class Reflected(NamedTuple):
    """A record for the log: what was done with one datagram.

    A named tuple rather than a frozen dataclass: it is built on the hot path (every reply when
    logging, every malformed datagram), and builds in half the time.
    """

    at: float  # Unix time the datagram was received
    source: Address
    outcome: str  # "replied", "dropped-loss", "rate-limited", "malformed" or "denied"
    detail: str


class Reflector:
    def __init__(self, config: ReflectorConfig | None = None) -> None:
        self.config = config = config or ReflectorConfig()
        self.counters = Counters()
        self._random = random.Random(config.seed).random
        self._loss = config.loss
        self._max_size = config.max_size
        self._log_events = config.log_events
        self._lowest_port = 0 if config.allow_privileged_ports else PRIVILEGED_PORTS
        # Features turned off are None, so reflect() skips them with one test and no work.
        self._allowlist = Allowlist(config.allow) if config.allow else None
        self._source_limiter = (
            SourceLimiter(config.rate_limit, config.burst, config.max_sources)
            if config.rate_limit
            else None
        )
        self._global_bucket = (
            TokenBucket(config.global_rate_limit, max(1, math.ceil(config.global_rate_limit)))
            if config.global_rate_limit
            else None
        )
        # Bound once: reflect() then calls them without looking the method up per datagram.
        limiter, bucket = self._source_limiter, self._global_bucket
        self._allow_source = limiter.allow if limiter is not None else None
        self._allow_global = bucket.allow if bucket is not None else None
        self._log: deque[Reflected] = deque()
        self.log_suppressed = 0

    def reflect(self, data: bytes, source: Address, now: float, wall_time: float) -> bytes | None:
        """The reply to send back to ``source``, or ``None`` to stay silent.

        ``now`` is monotonic seconds (``time.monotonic()``), read when the shell got the
        datagram, for the rate limits, so a step of the wall clock can neither lock a source
        out nor let a flood through. ``wall_time`` is the request's receive time, Unix seconds:
        the kernel's receive stamp where the shell has one (Linux ``SO_TIMESTAMPNS``), else
        ``time.time()`` read as early as the shell could; it gives the reply's time difference
        (the wire format compares it with the sender's Unix timestamp), the log's records, and
        is what a format with a receive timestamp (STAMP's T2) should carry.
        Never raises for bad input: every datagram refused is counted by reason and ignored.
        """
        return self.reflect_batch((data,), source, now, (wall_time,))[0]

    def reflect_batch(
        self,
        datagrams: Sequence[bytes],
        source: Address,
        now: float,
        wall_times: Sequence[float],
    ) -> list[bytes | None]:
        """:meth:`reflect` for datagrams from one source received together, in order.

        ``wall_times`` has one receive time per datagram (Unix seconds, the ``wall_time`` of
        :meth:`reflect`: each request's own kernel stamp where there is one); ``now`` is one
        monotonic reading for the batch. The same decisions and counters as one
        :meth:`reflect` call per datagram; the per-datagram work is only what differs between
        datagrams, so a busy server spends less per reply.

        Raises:
            ValueError: ``wall_times`` does not have one time per datagram.
        """
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
        parse = text.parse_request
        loss = self._loss
        log_events = self._log_events
        replies: list[bytes | None] = []
        add = replies.append
        for data, wall_time in zip(datagrams, wall_times, strict=False):
            if len(data) > max_size:
                self._malformed(source, wall_time, "oversize", f"longer than {max_size} bytes")
                add(None)
                continue
            if privileged:
                self._refused(counters.denied, source, wall_time, "denied", "privileged-port")
                add(None)
                continue
            if denied:
                self._refused(counters.denied, source, wall_time, "denied", "allowlist")
                add(None)
                continue
            # Per source first: a source over its own limit must not spend the global budget.
            if allow_source is not None and not allow_source(host, now):
                self._refused(counters.rate_limited, source, wall_time, "rate-limited", "source")
                add(None)
                continue
            if allow_global is not None and not allow_global(now):
                self._refused(counters.rate_limited, source, wall_time, "rate-limited", "global")
                add(None)
                continue
            try:
                seq_digits, sent_time = parse(data)
            except WireError as error:
                self._malformed(source, wall_time, error.reason, str(error))
                add(None)
                continue
            if loss and self._random() < loss:
                counters.dropped_loss += 1
                if log_events:
                    self._note(Reflected(wall_time, source, "dropped-loss", seq_digits.decode()))
                add(None)
                continue
            reply = _REPLY_FORMAT % (
                seq_digits,
                wall_time - sent_time,
            )  # text.format_reply, inlined
            counters.replied += 1
            if log_events:
                self._note(Reflected(wall_time, source, "replied", reply.decode()))
            add(reply)
        return replies

    def stats(self) -> dict[str, object]:
        """The counters, and the size of the per-source table (for reports and ``--json``)."""
        limiter = self._source_limiter
        return {
            **self.counters.to_dict(),
            "sources_tracked": len(limiter) if limiter is not None else 0,
            "sources_evicted": limiter.sources_evicted if limiter is not None else 0,
            "sources_evicted_active": (
                limiter.sources_evicted_active if limiter is not None else 0
            ),
        }

    def drain_log(self) -> list[Reflected]:
        """Take the records not yet logged; the shell prints them off the hot path."""
        records = list(self._log)
        self._log.clear()
        return records

    def _malformed(self, source: Address, at: float, reason: str, detail: str) -> None:
        self.counters.malformed[reason] += 1
        self._note(Reflected(at, source, "malformed", f"{reason}: {detail}"))

    def _refused(
        self, counter: Counter[str], source: Address, at: float, outcome: str, reason: str
    ) -> None:
        counter[reason] += 1
        # Only when asked: these come in floods, and the counters already tell the story.
        if self._log_events:
            self._note(Reflected(at, source, outcome, reason))

    def _note(self, record: Reflected) -> None:
        if len(self._log) < LOG_BACKLOG:
            self._log.append(record)
        else:
            self.log_suppressed += 1


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings as networks; an IPv4-mapped IPv6 network becomes the IPv4 network it maps.

    Raises:
        ConfigError: a string is not a network, or has bits set past its prefix length.
    """
    networks: list[Network] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError:
            try:
                loose = ipaddress.ip_network(cidr, strict=False)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"allow: {cidr!r} is not an IP network; write it as CIDR, e.g. 192.0.2.0/24"
                ) from None
            raise ConfigError(
                f"allow: {cidr!r} has host bits set past its prefix; did you mean {loose}?"
            ) from None
        except TypeError:
            raise ConfigError(f"allow: {cidr!r} is not a CIDR string") from None
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
            mapped = int(network.network_address) & 0xFFFFFFFF
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
        networks.append(network)
    return tuple(networks)


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class Allowlist:
    """Which source addresses may be answered: those inside one of the ``cidrs``.

    A source address is parsed once and the decision remembered (up to ``ALLOWLIST_CACHE``
    addresses, then forgotten all at once), so a steady client costs one dict lookup.
    Addresses that do not parse (none should, from a UDP socket) are refused.

    Raises:
        ConfigError: a string in ``cidrs`` is not a network.
    """

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = parse_networks(cidrs)
        self._decided: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        decided = self._decided.get(host)
        if decided is None:
            decided = self._decide(host)
            if len(self._decided) >= ALLOWLIST_CACHE:
                self._decided.clear()
            self._decided[host] = decided
        return decided

    def _decide(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
