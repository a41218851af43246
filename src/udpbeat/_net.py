"""Socket helpers shared by the I/O shells (server, client, and the tools to come).

Nothing here decides anything about heartbeats: binding, resolving, and showing addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from udpbeat.errors import ConfigError

T = TypeVar("T")

#: The exercise's port, the default of every udpbeat command.
DEFAULT_PORT = 12000


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` (``""``: every IPv4 and IPv6 interface).

    Raises:
        ConfigError: the port is out of range, the host does not resolve, or binding failed.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    if host in ("", "*"):
        candidates = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as error:
            raise ConfigError(f"cannot resolve host {host!r}: {error.strerror}") from None
        candidates = [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos]
    last_error: OSError | None = None
    for family, address in candidates:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host in ("", "*"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((address, port))
        except OSError as error:
            sock.close()
            last_error = error
            continue
        sock.setblocking(False)
        return sock
    reason = last_error.strerror if last_error is not None else "no address"
    if isinstance(last_error, PermissionError) and 0 < port < 1024:
        reason = (
            f"{reason} (a port below 1024 needs root or CAP_NET_BIND_SERVICE; "
            "--port chooses another)"
        )
    raise ConfigError(f"cannot bind UDP {host or '*'}:{port}: {reason}")


def display_address(address: tuple[object, ...]) -> str:
    """``host:port`` (``[host]:port`` for IPv6), with IPv4-mapped IPv6 shown as plain IPv4."""
    host, port = str(address[0]), address[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: What ``-4`` and ``-6`` ask for, by the number people say.
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


def _family_name(family: int) -> str:
    names = {int(socket.AF_INET): "IPv4", int(socket.AF_INET6): "IPv6"}
    return names.get(int(family), "any family")


async def resolve(
    host: str, port: int, family: int = socket.AF_UNSPEC
) -> tuple[tuple[Any, ...], int]:
    """The first UDP address of ``host`` (of ``family``, if given).

    Raises:
        ConfigError: the port is out of range or the host does not resolve (in that family).
    """
    if not 0 < port <= 65535:
        raise ConfigError(f"port must be in 1..65535, got {port}")
    try:
        infos = await _getaddrinfo_abandonable(host, port, family)
    except socket.gaierror as error:
        wanted = "" if family == socket.AF_UNSPEC else f" as {_family_name(family)}"
        raise ConfigError(f"cannot resolve host {host!r}{wanted}: {error.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return sockaddr, family


#: ``select(2)``'s limit: it takes only descriptors numbered below this (Linux's FD_SETSIZE).
FD_SETSIZE = 1024
#: Sockets at most for which :func:`run_on_time` waits with ``select(2)``.
PRECISE_WAIT_MAX_SOCKETS = 64


def run_on_time(coroutine: Coroutine[Any, Any, T], *, sockets: int = 1) -> T:
    """``asyncio.run(coroutine)`` on a loop whose timers fire on time, for a prober's sends.

    asyncio's default loop on Linux waits in ``epoll_wait``, whose timeout is whole
    milliseconds (rounded up): each timer fires up to 1 ms late, so heartbeats meant to leave
    every 10 ms leave 9 to 11 ms apart. ``select(2)`` takes microseconds, so with it they leave
    as scheduled (to the kernel's own wake-up), and a reflector can foresee them
    (:mod:`udpbeat.cadence`). ``select`` is for few file descriptors, all numbered below
    :data:`FD_SETSIZE`: beyond :data:`PRECISE_WAIT_MAX_SOCKETS` sockets, or in a process that
    already holds nearly that many, the default loop is kept.
    """
    # The loop's own descriptors (its self-pipe, the selector) take a few numbers more.
    highest = _lowest_free_descriptor() + sockets + 24
    if sockets > PRECISE_WAIT_MAX_SOCKETS or highest >= FD_SETSIZE:
        return asyncio.run(coroutine)
    with asyncio.Runner(
        loop_factory=lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())
    ) as runner:
        return runner.run(coroutine)


def _lowest_free_descriptor() -> int:
    """The number the next file the process opens would get (the lowest free one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as scratch:
        return scratch.fileno()


async def _getaddrinfo_abandonable(host: str, port: int, family: int) -> list[Any]:
    """``getaddrinfo`` on a daemon thread of its own (:func:`run_abandonable`)."""
    infos: list[Any] = await run_abandonable(
        f"udpbeat-resolve {host}",
        socket.getaddrinfo,
        host,
        port,
        family=family,
        type=socket.SOCK_DGRAM,
    )
    return infos


async def run_abandonable(name: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` on a daemon thread of its own, not the loop's executor.

    For work that may block on the network for long (a name lookup stuck on a slow DNS
    server can take tens of seconds): ``asyncio.run`` waits for every executor thread before it
    returns, so a Ctrl-C during such work would wait as long. Cancelled, this returns at once;
    the thread ends with the work, or with Python.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if outcome.done():  # abandoned (cancelled) while the work ran
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result: T | None = None
        failure: BaseException | None = None
        try:
            result = function(*args, **kwargs)
        except Exception as error:
            failure = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one is waiting
            loop.call_soon_threadsafe(settle, result, failure)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await outcome


def source_address(source: str, family: int) -> tuple[Any, ...]:
    """The local address ``source`` (a numeric address or a name) in ``family``, port 0:
    what a probe socket binds to before it connects to a target of that family.

    Raises:
        ConfigError: ``source`` has no address of that family.
    """
    try:
        infos = socket.getaddrinfo(
            source, 0, family=family, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise ConfigError(
            f"source address {source!r} has no {_family_name(family)} address for an "
            f"{_family_name(family)} target ({error.strerror})"
        ) from None
    return tuple(infos[0][4])


def check_source(source: str, family: int) -> None:
    """That a probe socket of ``family`` can send from ``source``: it resolves, and binding a
    socket to it works (the socket is closed at once; nothing is sent).

    Raises:
        ConfigError: it does not resolve in that family, or is not an address of this host.
    """
    address = source_address(source, family)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(address)
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(f"cannot send from source address {address[0]}: {reason}") from None


def split_host_port(target: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` as (host, port or ``None``).

    A bare IPv6 address (``::1``, two colons or more) is a host without a port, as ``ping``
    takes it; give its port as ``[::1]:12000``.

    Raises:
        ConfigError: brackets that do not close, or a port that is not a number in 1..65535.
    """
    host, port = target, ""
    if target.startswith("["):
        close = target.find("]")
        rest = target[close + 1 :]
        if close < 0 or (rest and not rest.startswith(":")):
            raise ConfigError(f"{target!r} is not HOST, HOST:PORT or [IPV6]:PORT")
        host, port = target[1:close], rest[1:]
        if not rest:
            return host, None
    elif target.count(":") == 1:
        host, _, port = target.partition(":")
    else:
        return target, None
    if not host:
        raise ConfigError(f"{target!r} names no host")
    if not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
        raise ConfigError(f"{target!r}: the port must be a number in 1..65535, got {port!r}")
    return host, int(port)


def receivable_families(bound_host: str) -> frozenset[int]:
    """The address families of the sources a UDP socket bound to ``bound_host`` can hear from.

    An IPv4 socket hears IPv4 only; an IPv6 socket bound to one address hears IPv6 only; one
    bound to ``::`` hears both (IPv4 as mapped addresses; udpbeat binds it so).
    """
    try:
        address = ipaddress.ip_address(bound_host.partition("%")[0])
    except ValueError:
        return frozenset({4, 6})
    if address.version == 6 and address.is_unspecified:
        return frozenset({4, 6})
    return frozenset({address.version})


def check_allow_families(allow: Sequence[str], bound_host: str) -> None:
    """Refuse ``--allow`` networks that a socket bound to ``bound_host`` can never hear from.

    Raises:
        ConfigError: a network of another address family than the bound socket receives.
    """
    families = receivable_families(bound_host)
    for network in allow:
        try:
            version = ipaddress.ip_network(network, strict=False).version
        except ValueError:
            continue  # the reflector's own check names a malformed network
        if version not in families:
            heard = "IPv4" if families == {4} else "IPv6"
            raise ConfigError(
                f"--allow {network} is an IPv{version} network, but the server is bound to "
                f"{bound_host} and hears {heard} sources only: it could never match"
            )


# --- ICMP errors with their sender (Linux IP_RECVERR) ---------------------------------------

#: Linux's values; Python's socket module does not name them.
IP_RECVERR = 11
IPV6_RECVERR = 25
SOL_IP = 0
SOL_IPV6 = 41
#: ``struct sock_extended_err``: errno, origin, type, code, pad, info, data.
_EXTENDED_ERROR = struct.Struct("=IBBBBII")
#: ``ee_origin`` of an error that an ICMP message brought (v4, v6), and of a send stamp.
_ORIGIN_ICMP = (2, 3)
_ORIGIN_TIMESTAMPING = 4


def enable_error_queue(sock: socket.socket) -> bool:
    """Ask the kernel to queue ICMP errors with their details (Linux); ``True`` if it will."""
    if not sys.platform.startswith("linux"):
        return False
    level, option = (
        (SOL_IPV6, IPV6_RECVERR) if sock.family == socket.AF_INET6 else (SOL_IP, IP_RECVERR)
    )
    try:
        sock.setsockopt(level, option, 1)
    except OSError:
        return False
    if sock.family == socket.AF_INET6:
        # An IPv6 socket may talk to IPv4-mapped addresses: their errors come as IPv4 ones.
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    return True


def read_error_queue(
    sock: socket.socket, limit: int = 64
) -> Iterator[tuple[tuple[str, int] | None, bytes, tuple[int, float] | None]]:
    """Take what is queued on ``sock``'s error queue: ICMP errors, and send stamps.

    For an ICMP error: who sent it, the datagram of ours it quotes, ``None``. The sender is
    ``(host, port)`` of the ICMP message's source (port 0), or ``None`` for an error the local
    stack raised itself. For a send stamp (:func:`enable_send_timestamps`): ``None``, ``b""``,
    and ``(the send's number on this socket, from 0; when it left, Unix seconds)``.
    """
    for _ in range(limit):
        try:
            payload, ancillary, _flags, _address = sock.recvmsg(
                RECEIVE_ERROR_SIZE, 512, socket.MSG_ERRQUEUE
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        offender: tuple[str, int] | None = None
        sent_number: int | None = None
        stamp: float | None = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(data) >= 16:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)  # the software stamp
                stamp = float(seconds) + float(nanoseconds) * 1e-9
                continue
            if (level, kind) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
                continue
            if len(data) < _EXTENDED_ERROR.size:
                continue
            _errno, origin, _type, _code, _pad, _info, number = _EXTENDED_ERROR.unpack_from(data)
            if origin in _ORIGIN_ICMP:
                offender = _decode_sockaddr(data[_EXTENDED_ERROR.size :])
            elif origin == _ORIGIN_TIMESTAMPING:
                sent_number = number
        if sent_number is not None:
            if stamp is not None:
                yield None, b"", (sent_number, stamp)
            continue
        yield offender, payload, None


#: Bytes of our own datagram an error quotes that are worth reading.
RECEIVE_ERROR_SIZE = 512


def _decode_sockaddr(raw: bytes) -> tuple[str, int] | None:
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big")
    return None


def same_host(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two socket addresses name the same host (IPv4-mapped IPv6 equals its IPv4)."""
    return _canonical_host(str(a[0])) == _canonical_host(str(b[0]))


def _canonical_host(host: str) -> str:
    host = host.partition("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


# --- kernel receive timestamps (Linux SO_TIMESTAMPNS) ----------------------------------------

#: ``SO_TIMESTAMPNS`` / ``SCM_TIMESTAMPNS`` (Linux; Python's socket module does not name it).
SO_TIMESTAMPNS = 35
#: ``struct timespec``: seconds, nanoseconds.
_TIMESPEC = struct.Struct("=qq")
#: Room for the ancillary data of one datagram: a timestamp, and an ICMP error's details.
RECEIVE_CONTROL_SIZE = 256


def enable_receive_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram as it reaches ``sock``; ``True`` if it will."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


#: ``SO_TIMESTAMPING`` and its flags (Linux): stamp each datagram in software as it leaves
#: (``TX_SOFTWARE``), report software stamps (``SOFTWARE``), number the sends (``OPT_ID``, in
#: ``ee_data``) and queue the stamp without a copy of the datagram (``OPT_TSONLY``).
SO_TIMESTAMPING = 37
_SEND_STAMP_FLAGS = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 11)


def enable_send_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram as it leaves ``sock`` and queue the stamp on the
    error queue (:func:`read_error_queue`); ``True`` if it will. Sends are numbered from 0."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, _SEND_STAMP_FLAGS)
    except OSError:
        return False
    return True


def receive_timestamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive stamp (Unix seconds) among a datagram's ancillary data, if any."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds) + float(nanoseconds) * 1e-9
    return None


def _no_yield() -> None:
    return None


#: Give the CPU to any other task runnable on this one (``os.sched_yield``; a no-op where the
#: system has none).
yield_cpu: Callable[[], None] = getattr(os, "sched_yield", _no_yield)
#: Give the CPU to whatever a send just woke, before going on (``os.sched_yield``; a no-op
#: where the system has none). On one host (loopback, a reflector on the same machine) the
#: kernel wakes the receiver *during* the send, and with a sync wake-up it puts the receiver
#: on the sender's CPU, expecting the sender to sleep at once. A prober that goes on with its
#: own bookkeeping (events, output, its event loop's turn) keeps the reflector waiting that
#: long, and every microsecond of it is counted in the RTT: measured with ``perf sched``, the
#: reflector waited 70-80 us per heartbeat behind ``udpbeat client`` (docs/design.md, "Time at
#: the wire"). With nothing else runnable on the CPU the call returns at once (about 1 us).
yield_after_send = yield_cpu


class ClockBridge:
    """Brings the kernel's receive stamps (wall clock) onto the monotonic clock RTTs use.

    The kernel stamps datagrams on the realtime clock, which NTP may step at any moment; RTTs
    and deadlines are on the monotonic clock, which never steps. :meth:`measure` reads the
    offset between the two (the wall time between two monotonic readings: the offset is known
    to within the readings' gap) around each batch of datagrams. A stamp is converted with that
    offset, and trusted only if

    - the offset did not move between this batch and the previous one by more than a slewing
      clock can move it (``slew`` seconds a second, plus ``tolerance``): if it did, the wall
      clock was stepped, maybe between the kernel's stamp and this reading, so every stamp of
      this batch is refused; and
    - the converted stamp lies between the last time the socket was seen empty (the datagram
      cannot have arrived before) and now (it cannot arrive in the future).

    A refused stamp gives ``None``: the caller then uses its own reading of the clock, as the
    portable path always does. The clocks are injected, so all of this is tested without
    waiting for an NTP step.
    """

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        *,
        tolerance: float = 0.0005,
        slew: float = 0.0005,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._tolerance = tolerance
        self._slew = slew
        self.offset: float | None = None
        self._measured_at = 0.0
        self._trusted = False
        self._empty_since = -math.inf
        #: Stamps converted, and stamps refused (a step, or out of their window).
        self.used = 0
        self.refused = 0

    def measure(self) -> None:
        """Read the offset between the clocks, before a batch is converted.

        The wall clock is read between two monotonic readings, three times; the reading with
        the smallest gap wins (a thread preempted between two readings would widen it).
        """
        gap, offset, after = math.inf, 0.0, 0.0
        for _ in range(3):
            first = self._monotonic()
            wall = self._wall()
            last = self._monotonic()
            if last - first < gap:
                gap, offset, after = last - first, wall - (first + last) / 2, last
            if gap < 2e-6:
                break
        before = after - gap
        previous, previous_at = self.offset, self._measured_at
        allowed = self._tolerance + (after - before) + self._slew * (after - previous_at)
        self._trusted = previous is None or abs(offset - previous) <= allowed
        self.offset, self._measured_at = offset, after

    def convert(self, stamp: float | None, now: float) -> float | None:
        """``stamp`` (the kernel's, Unix seconds) on the monotonic clock, or ``None`` if it
        cannot be trusted; ``now`` is the monotonic time the batch was read."""
        if stamp is None or self.offset is None:
            return None
        if not self._trusted:
            self.refused += 1
            return None
        arrival = stamp - self.offset
        if not self._empty_since - self._tolerance <= arrival <= now + self._tolerance:
            self.refused += 1
            return None
        self.used += 1
        return min(arrival, now)

    def convert_send(self, stamp: float, now: float) -> float | None:
        """A send stamp (the kernel's, Unix seconds) on the monotonic clock, or ``None`` if it
        cannot be trusted: the offset moved (a step), or it would be after ``now``. That it is
        not before the send call is the session's check (:meth:`ProbeSession.mark_left`)."""
        if self.offset is None:
            return None
        if not self._trusted:
            self.refused += 1
            return None
        left = stamp - self.offset
        if left > now + self._tolerance:
            self.refused += 1
            return None
        return min(left, now)

    def drained(self, now: float) -> None:
        """The socket was found empty at ``now``: whatever is read later arrived after it."""
        self._empty_since = now


def read_error_queue_to(
    sock: socket.socket, limit: int = 64
) -> Iterator[tuple[tuple[Any, ...] | None, tuple[str, int] | None, bytes, float | None]]:
    """:func:`read_error_queue` for an unconnected socket: for each error, also the address
    the datagram it quotes was sent to (``msg_name`` of the error message, ``None`` if the
    kernel gave none), so that the error can be put down to the right peer, and when the error
    arrived (Unix time, when the socket has ``SO_TIMESTAMPNS``; else ``None``).

    Yields ``(destination, offender, quoted datagram, arrival)``.
    """
    for _ in range(limit):
        try:
            payload, ancillary, _flags, destination = sock.recvmsg(
                RECEIVE_ERROR_SIZE, 512, socket.MSG_ERRQUEUE
            )
        except OSError:  # BlockingIOError: the queue is empty
            return
        offender: tuple[str, int] | None = None
        arrival: float | None = None
        for level, kind, data in ancillary:
            if arrival is None:
                arrival = receive_timestamp([(level, kind, data)])
            if (level, kind) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
                continue
            if len(data) >= _EXTENDED_ERROR.size and _EXTENDED_ERROR.unpack_from(data)[1] in (
                _ORIGIN_ICMP
            ):
                offender = _decode_sockaddr(data[_EXTENDED_ERROR.size :])
        yield (destination or None), offender, payload, arrival


# --- the TTL / hop limit of received datagrams (STAMP's Session-Sender TTL) -------------------

#: Linux's values (Python's socket module names only some of them, on some versions).
IP_TTL = 2
IP_RECVTTL = 12
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
#: ``(level, type)`` of the control messages that carry a received datagram's TTL/hop limit.
TTL_MESSAGES = frozenset({(SOL_IP, IP_TTL), (SOL_IPV6, IPV6_HOPLIMIT)})
#: The TTL a STAMP reflector's replies leave with (the control message is sent back with it).
REPLY_TTL = 255


def enable_receive_ttl(sock: socket.socket) -> bool:
    """Ask the kernel for each datagram's TTL (IPv4) or hop limit (IPv6); ``True`` if it will.

    A dual-stack IPv6 socket gets both options, for its IPv4-mapped sources.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(SOL_IPV6, IPV6_RECVHOPLIMIT, 1)
            with contextlib.suppress(OSError):  # an IPv6-only socket may refuse it
                sock.setsockopt(SOL_IP, IP_RECVTTL, 1)
        else:
            sock.setsockopt(SOL_IP, IP_RECVTTL, 1)
    except OSError:
        return False
    return True


def take_ttl(
    ancillary: list[tuple[int, int, bytes]],
) -> tuple[int | None, list[tuple[int, int, bytes]]]:
    """The received TTL among ``ancillary`` (``None``: none), and the control messages for the
    reply: the same, with the TTL set to :data:`REPLY_TTL` (sent back, it sets the reply's)."""
    ttl = None
    reply = []
    for level, kind, data in ancillary:
        if (level, kind) in TTL_MESSAGES and len(data) >= 4:
            ttl = int.from_bytes(data[:4], sys.byteorder) & 0xFF
            data = REPLY_TTL.to_bytes(4, sys.byteorder) + data[4:]
        reply.append((level, kind, data))
    return ttl, reply
