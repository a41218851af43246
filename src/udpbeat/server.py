"""The reflector's I/O shell: a UDP socket on an asyncio loop around :class:`Reflector`.

The receive path is a dedicated reader thread on a blocking socket. On Linux it is batched:
``recvmmsg`` (waiting for the first datagram only) takes up to ``ServerConfig.batch``
datagrams, they are reflected under one acquisition of the lock with one reading of each
clock, and one ``sendmmsg`` answers them to the raw source addresses as received
(:mod:`udpbeat._mmsg`). A lone datagram is answered with plain ``recvfrom``/``sendto``, cheaper
than a ctypes call for one, and while lone requests come close together the reader busy-polls
briefly before blocking, which keeps the round trip at low load level with a bare echo loop;
while lone requests keep a period (a prober's heartbeats), it wakes shortly before each is due
and polls until it comes (:mod:`udpbeat.cadence`, ``ServerConfig.awake_share``).
Elsewhere, or with ``ServerConfig(io="portable")``, the reader is the plain loop:
``recvfrom``, reflect, non-blocking ``sendto``. Both paths give the same replies, counters and
log. On a wildcard bind (Linux) both send each reply from the address its request was sent to
(:func:`ask_destinations`). The batched path takes each request's receive time (the reply's time
difference) from the kernel's receive stamp where the system gives one (Linux
``SO_TIMESTAMPNS``), not from when the reader got to it; the portable path, elsewhere, or
``ServerConfig(receive_stamps="user")`` read ``time.time()`` as the datagram is taken (the
portable path keeps ``recvfrom``, which is cheaper than the ``recvmsg`` a stamp needs;
``receive_stamps="kernel"`` asks for the stamps there too). ``docs/performance.md`` has the
measurements, and its history those of the designs set aside: an ``add_reader`` drain (with
and without uvloop).

With ``stamp`` (``udpbeat server --protocol stamp``) the reflector is
:class:`~udpbeat.stamp_reflector.StampReflector` on the same paths; on Linux each datagram's TTL
(hop limit) comes with it as a control message (``IP_RECVTTL``/``IPV6_RECVHOPLIMIT``), is handed
to the reflector, and goes back with the reply set to 255, which makes the reply's TTL 255.

The event loop keeps everything else: signals, timers, and the log. Records are handed to
``on_records`` from the loop every ``FLUSH_INTERVAL`` seconds, in batches, never on the reader's
path. The reflector is touched under one lock, held only around ``reflect`` and the hand-over,
so counters read through :meth:`Server.stats` are a consistent snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from udpbeat import _mmsg, cadence
from udpbeat._net import (
    DEFAULT_PORT,
    FD_SETSIZE,
    SO_TIMESTAMPNS,
    bind_udp,
    enable_receive_timestamps,
    enable_receive_ttl,
    receive_timestamp,
    take_ttl,
    yield_cpu,
)
from udpbeat.errors import ConfigError, UdpbeatError
from udpbeat.reflector import Counters, Reflected, Reflector, ReflectorConfig
from udpbeat.stamp_reflector import StampOptions, StampReflector, stamp_config
from udpbeat.wire import text

#: Seconds between hand-overs of log records from the reader to ``on_records``.
FLUSH_INTERVAL = 0.05
#: Seconds ``stop`` waits for the reader thread to notice the socket was shut down.
READER_JOIN_TIMEOUT = 2.0
#: Replies are sent without blocking: when the send buffer is full they are counted and dropped.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_SEND_FLAGS = _DONTWAIT
#: Read one byte more than a valid request can be, so an oversize datagram is seen as such
#: (a server reads ``config.max_size + 1``; this is the size for the default config).
RECEIVE_SIZE = text.MAX_REQUEST_SIZE + 1

#: Datagrams taken per ``recvmmsg`` and answered per ``sendmmsg`` on the batched path, unless
#: ``ServerConfig.batch`` says otherwise; at most ``MAX_BATCH`` (Linux's ``UIO_MAXIOV``).
BATCH = 64
MAX_BATCH = 1024
#: Datagrams answered one by one after a batch of one, before a batch is tried again.
SINGLES = 16
#: Linux's ``IP_PKTINFO`` (Python's socket module names it only from 3.12 on).
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
#: Bytes of ancillary data read per datagram: room for an ``IPV6_PKTINFO`` and an
#: ``IP_PKTINFO`` message together (72 bytes on 64-bit Linux), as a dual-stack socket gets them
#: for IPv4 requests, and a receive stamp (32 bytes).
CONTROL_SIZE = 128
#: A receive stamp's control message (``struct timespec``): the ancillary data read per datagram
#: when only the stamp is wanted.
TIMESPEC = struct.Struct("=qq")
STAMP_CONTROL_SIZE = socket.CMSG_SPACE(TIMESPEC.size)
SOL_SOCKET = socket.SOL_SOCKET
#: Where a request's receive time comes from (``ServerConfig.receive_stamps``): ``"auto"`` is
#: the kernel's stamp on the batched path and the clock on the portable one.
RECEIVE_STAMPS = ("auto", "kernel", "user")
#: Sources remembered by raw ``sockaddr`` bytes on the batched path (forgotten all at once when
#: full, so that a flood of spoofed sources cannot grow memory).
SOURCE_CACHE = 4096
#: The receive paths ``ServerConfig.io`` may name.
IO_MODES = ("auto", "batched", "portable")
#: Microseconds the reader spins on an empty socket, while lone requests come closer together
#: than that, before it blocks, unless ``ServerConfig.busy_poll_us`` says otherwise (0: never).
BUSY_POLL_US = 50
MAX_BUSY_POLL_US = 1_000_000
#: The most of the period between lone requests the reader may spend awake for the next one.
MAX_AWAKE_SHARE = 0.5

RecordSink = Callable[[list[Reflected]], None]


def should_spin(idle: float, spin: float, singles_left: int) -> bool:
    """Whether the reader busy-polls for the next lone request.

    ``idle`` is how long the reader waited for this request after answering the previous one.
    It spins only while that wait is shorter than the spin: then the spin costs little more
    than the sleep it replaces, and a thread that is still running answers sooner than one woken
    on a cold CPU. A wait that ended in a block includes this thread's own wake-up, so a client
    that waits for each reply could stay just beyond the spin for good although a spin would
    catch its requests; one spin per cycle of ``SINGLES`` lone requests is a trial that lets
    the wait show what spinning gives.
    """
    return spin > 0 and (idle < spin or singles_left == SINGLES // 2)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the server's I/O shell runs; what it answers is :class:`ReflectorConfig`'s business.

    - ``io``: the receive path. ``"batched"`` is Linux's ``recvmmsg``/``sendmmsg``, ``"portable"``
      the plain ``recvfrom``/``sendto`` loop, ``"auto"`` (the default) batched where the C
      library has the calls. Both answer alike; ``docs/performance.md`` has their speeds.
    - ``busy_poll_us``: microseconds the batched reader spins on an empty socket before it
      blocks, while lone requests come closer together than that; 0 never spins.
    - ``awake_share``: while lone requests keep a period (a prober's heartbeats), the batched
      reader wakes shortly before each is due and polls until it comes, for at most this share
      of the period (so of one CPU); 0 always blocks (:mod:`udpbeat.cadence`).
    - ``batch``: datagrams taken per ``recvmmsg`` and answered per ``sendmmsg``, 1..1024.
    - ``receive_stamps``: ``"kernel"`` takes each request's receive time, and so the reply's
      time difference, from the kernel's receive stamp where the system has one (Linux
      ``SO_TIMESTAMPNS``); ``"user"`` reads ``time.time()`` when the reader takes it;
      ``"auto"`` (the default) is ``"kernel"`` on the batched path and ``"user"`` on the
      portable one, whose ``recvfrom`` is cheaper than the ``recvmsg`` a stamp needs.
      :attr:`Server.receive_stamps` says which the server got.

    Raises:
        ConfigError: a value out of range, named with what it accepts.
    """

    io: str = "auto"
    busy_poll_us: float = BUSY_POLL_US
    batch: int = BATCH
    receive_stamps: str = "auto"
    awake_share: float = cadence.SHARE

    def __post_init__(self) -> None:
        if self.io not in IO_MODES:
            raise ConfigError(f"io must be one of {', '.join(IO_MODES)}, got {self.io!r}")
        if self.receive_stamps not in RECEIVE_STAMPS:
            raise ConfigError(
                f"receive stamps must be one of {', '.join(RECEIVE_STAMPS)}, "
                f"got {self.receive_stamps!r}"
            )
        if not _real_within(self.busy_poll_us, MAX_BUSY_POLL_US):
            raise ConfigError(
                f"busy poll must be microseconds in 0..{MAX_BUSY_POLL_US} (0: never spin), "
                f"got {self.busy_poll_us!r}"
            )
        if not _real_within(self.awake_share, MAX_AWAKE_SHARE):
            raise ConfigError(
                f"the awake share must be a number in 0..{MAX_AWAKE_SHARE} (0: never wake "
                f"ahead of a request), got {self.awake_share!r}"
            )
        if (
            isinstance(self.batch, bool)
            or not isinstance(self.batch, int)
            or not 1 <= self.batch <= MAX_BATCH
        ):
            raise ConfigError(
                f"batch must be a whole number of datagrams in 1..{MAX_BATCH}, got {self.batch!r}"
            )


def _real_within(value: object, highest: float) -> bool:
    """Whether ``value`` is a real number (not a bool) in ``0..highest``: NaN is not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= highest


@dataclass(frozen=True, slots=True)
class SocketCounters:
    """What happened at the socket, outside the reflector's decisions."""

    send_errors: int
    send_dropped: int
    receive_errors: int
    #: Windows the reader woke for ahead of a lone request it expected (:mod:`udpbeat.cadence`),
    #: and how many of those the request came in.
    awake_windows: int = 0
    caught_awake: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "send_errors": self.send_errors,
            "send_dropped": self.send_dropped,
            "receive_errors": self.receive_errors,
            "awake_windows": self.awake_windows,
            "caught_awake": self.caught_awake,
        }


def ask_destinations(sock: socket.socket) -> bool:
    """Have the kernel tell each datagram's destination address, if ``sock`` needs it.

    A socket bound to a wildcard address (``0.0.0.0``, ``::``) receives on every address of the
    host, and a reply sent with a plain ``sendto`` leaves from the address the kernel's routing
    picks: for a request to 127.1.2.3, or to a second address of an interface, not the address
    the client sent to, and a client with a connected socket drops it. As DNS and NTP servers
    do, the server then asks for ``IP_PKTINFO``/``IPV6_PKTINFO`` with every datagram and sends
    the reply with the same control message, which makes it leave from that address (the
    kernel's ``ipi_spec_dst``, the request's destination for unicast; ``ipi6_addr`` for IPv6),
    through the interface it came in by.

    A dual-stack IPv6 socket gets IPv4 requests too: both options are set on it. A socket bound
    to one address already answers from it and is left alone, so are sockets on systems other
    than Linux, whose options differ (they keep the routing's choice). Returns whether the
    destinations will come.
    """
    if not sys.platform.startswith("linux"):
        return False
    if sock.getsockname()[0] not in ("0.0.0.0", "::"):
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            with contextlib.suppress(OSError):  # IPv6-only sockets may refuse it; none needed
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    except (OSError, AttributeError):
        return False
    return True


def _wake(sock: socket.socket) -> None:
    """Make a reader blocked in ``recvfrom`` on ``sock`` return.

    On Linux ``shutdown`` does it (and raises ENOTCONN, the socket being unconnected, which is
    expected); elsewhere an empty datagram to the socket's own address does. The reader checks
    that the server is stopping before it reflects anything, so the poke is never counted.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        host, port = sock.getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = "::1" if sock.family == socket.AF_INET6 else "127.0.0.1"
        with socket.socket(sock.family, socket.SOCK_DGRAM) as poker:
            poker.sendto(b"", (host, port))


def choose_io(mode: str) -> tuple[str, tuple[_mmsg.MMsgFunction, _mmsg.MMsgFunction] | None]:
    """The receive path to use for ``ServerConfig.io`` ``mode``: ``"batched"`` (Linux
    ``recvmmsg``) or ``"portable"``; ``"auto"`` is batched where the C library has
    ``recvmmsg``/``sendmmsg``, portable elsewhere.

    Raises:
        ConfigError: an unknown mode, or ``"batched"`` where it is not available.
    """
    if mode not in IO_MODES:
        raise ConfigError(f"io must be one of {', '.join(IO_MODES)}, got {mode!r}")
    if mode == "portable":
        return "portable", None
    functions = _mmsg.load()
    if functions is None:
        if mode == "batched":
            raise ConfigError(
                "batched I/O needs recvmmsg/sendmmsg (Linux); choose io 'auto' or 'portable'"
            )
        return "portable", None
    return "batched", functions


def wants_kernel_stamps(receive_stamps: str, io: str) -> bool:
    """Whether a server whose ``ServerConfig.receive_stamps`` is ``receive_stamps`` asks the
    kernel for receive stamps on the receive path ``io`` (``"batched"`` or ``"portable"``).

    ``"auto"`` asks on the batched path only: the portable path's ``recvfrom`` cannot carry a
    stamp, and the ``recvmsg`` that can costs it a fifth to a third of its replies per second
    (``docs/performance.md``), so there it keeps the clock, as on systems without stamps.
    """
    return receive_stamps == "kernel" or (receive_stamps == "auto" and io == "batched")


class ServerFailure(UdpbeatError):
    """The server stopped by itself: its reader met an error it could not survive."""


class Server:
    """A heartbeat reflector on the running asyncio loop.

    Use ``async with Server(...) as server`` or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        host: str = "",
        port: int = DEFAULT_PORT,
        config: ReflectorConfig | None = None,
        *,
        on_records: RecordSink | None = None,
        server_config: ServerConfig | None = None,
        stamp: StampOptions | None = None,
    ) -> None:
        """``stamp``: answer STAMP (RFC 8762) as a Session-Reflector rather than the text
        format; ``config`` then defaults to :func:`~udpbeat.stamp_reflector.stamp_config`."""
        self.host = host
        self.port = port
        self.server_config = server_config = server_config or ServerConfig()
        #: ``"batched"`` or ``"portable"``: the receive path, chosen by :func:`choose_io`.
        self.io, self._mmsg_functions = choose_io(server_config.io)
        #: Seconds the batched reader may spin on an empty socket before blocking (0: never).
        self.busy_poll = server_config.busy_poll_us / 1e6
        #: The STAMP reflector, when the server speaks STAMP (it is also :attr:`reflector`).
        self.stamp_reflector: StampReflector | None = None
        self.reflector: Reflector
        if stamp is not None:
            self.stamp_reflector = StampReflector(config or stamp_config(), stamp, clock=time.time)
            self.reflector = self.stamp_reflector
        else:
            self.reflector = Reflector(config)
        #: One byte past the largest datagram accepted: longer ones arrive cut to this size (the
        #: kernel truncates), are still longer than ``max_size``, and are counted as oversize.
        self.receive_size = self.reflector.config.max_size + 1
        #: The longest reply: STAMP's is as long as its request.
        self.reply_size = self.receive_size if stamp is not None else text.MAX_REPLY_SIZE
        #: Whether each request's TTL comes with it (STAMP on Linux); set by :meth:`start`.
        self.receives_ttl = False
        self._on_records = on_records
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_errors = 0
        self._send_dropped = 0
        self._receive_errors = 0
        self._awake_windows = 0
        self._caught_awake = 0
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._reader_done: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        #: What stopped the server by itself, if anything did.
        self.failure: ServerFailure | None = None
        #: The first internal error met while answering (it was counted and survived).
        self.first_internal_error: str | None = None
        #: Whether replies are sent from each request's destination address (a wildcard bind
        #: on Linux: :func:`ask_destinations`); set by :meth:`start`.
        self.replies_from_destination = False
        #: ``"kernel"`` when receive times come from the kernel's stamps (Linux
        #: ``SO_TIMESTAMPNS``), else ``"user"``; set by :meth:`start`.
        self.receive_stamps = "user"
        self._internal_errors_logged = 0
        self._not_logged_said = 0

    @property
    def counters(self) -> Counters:
        """A snapshot of the reflector's counters, taken under the lock: they always add up."""
        with self._lock:
            return self.reflector.counters.copy()

    @property
    def socket_counters(self) -> SocketCounters:
        # The reader counts a catch after its window: read the catches first, so a snapshot
        # never shows more catches than windows.
        caught = self._caught_awake
        return SocketCounters(
            self._send_errors,
            self._send_dropped,
            self._receive_errors,
            self._awake_windows,
            caught,
        )

    def stats(self) -> dict[str, object]:
        """The reflector's and the socket's counters, as one consistent snapshot."""
        with self._lock:
            return {**self.reflector.stats(), **self.socket_counters.to_dict()}

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; with port 0 asked, the port the system chose."""
        if self._sock is None:
            raise RuntimeError("the server is not started")
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> None:
        if self._sock is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        sock = bind_udp(self.host, self.port)
        sock.setblocking(True)
        try:
            self.replies_from_destination = ask_destinations(sock)
            self.receives_ttl = self.stamp_reflector is not None and enable_receive_ttl(sock)
        except OSError:
            sock.close()
            raise
        wanted = wants_kernel_stamps(self.server_config.receive_stamps, self.io)
        self.receive_stamps = "kernel" if wanted and enable_receive_timestamps(sock) else "user"
        self._sock, self._stopping, self.failure = sock, False, None
        target = self._receive if self._mmsg_functions is None else self._receive_batched
        reader_done: asyncio.Future[None] = loop.create_future()
        self._reader_done = reader_done
        self._reader = threading.Thread(
            target=self._run_reader,
            args=(target, sock, reader_done),
            name="udpbeat-reader",
            daemon=True,
        )
        self._reader.start()
        self._supervisor = loop.create_task(self._supervise(reader_done))

    async def wait_stopped(self) -> None:
        """Return when the server stops; raise :class:`ServerFailure` if it stopped by itself
        (its reader met an error it could not survive). Never returns while it serves."""
        if self._supervisor is not None:
            await asyncio.shield(self._supervisor)

    async def stop(self) -> Counters:
        """Stop receiving, hand over the last log records, and return the counters.

        Waits (without blocking the event loop) up to ``READER_JOIN_TIMEOUT`` seconds for the
        reader thread to notice.
        """
        sock, reader_done, supervisor = self._sock, self._reader_done, self._supervisor
        if sock is not None:
            self._stopping = True
            _wake(sock)
            if reader_done is not None:
                # What ended the reader is the supervisor's to report, not stop's.
                with contextlib.suppress(TimeoutError, Exception):
                    async with asyncio.timeout(READER_JOIN_TIMEOUT):
                        await asyncio.shield(reader_done)
            if supervisor is not None and not supervisor.done():
                supervisor.cancel()
            if supervisor is not None:
                with contextlib.suppress(asyncio.CancelledError, ServerFailure):
                    await supervisor
            sock.close()
            self._sock, self._reader = None, None
            self._flush()
        return self.counters

    def _run_reader(
        self,
        target: Callable[[socket.socket], None],
        sock: socket.socket,
        done: asyncio.Future[None],
    ) -> None:
        """The reader thread's body: whatever ends it is reported to the event loop."""
        error: BaseException | None = None
        try:
            target(sock)
        except BaseException as caught:  # reported to the supervisor, never lost with the thread
            error = caught
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(_settle, done, error)

    async def _supervise(self, reader_done: asyncio.Future[None]) -> None:
        """The reader and the log's flusher under one supervisor: if one fails, both stop, and
        the failure reaches :meth:`wait_stopped`."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_reader(reader_done))
                group.create_task(self._flush_forever())
        except* ServerFailure as failures:
            failure = failures.exceptions[0]
            assert isinstance(failure, ServerFailure)
            self.failure = failure
            raise failure from None
        except* Exception as failures:
            error = failures.exceptions[0]
            self.failure = ServerFailure(f"the log's flusher failed: {_describe(error)}")
            raise self.failure from error

    async def _watch_reader(self, reader_done: asyncio.Future[None]) -> None:
        try:
            await reader_done
        except Exception as error:
            raise ServerFailure(f"the reader stopped: {_describe(error)}") from error
        if not self._stopping:
            raise ServerFailure("the reader stopped unexpectedly")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self._flush()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _receive(self, sock: socket.socket) -> None:
        """The reader thread: every datagram is reflected and answered before the next is read.

        With :attr:`replies_from_destination`, ``recvmsg`` takes each datagram's destination
        with it and ``sendmsg`` hands it back with the reply; otherwise ``recvfrom``/``sendto``.
        """
        recvfrom, recvmsg = sock.recvfrom, sock.recvmsg
        answer = functools.partial(self._answer, sock.sendto, sock.sendmsg)
        receive_size = self.receive_size
        # A STAMP server that reads TTLs takes every datagram's control messages.
        destinations = self.replies_from_destination or self.receives_ttl
        stamped = self.receive_stamps == "kernel"
        # Room for the stamp alone when no destination is wanted: recvmsg allocates it per call.
        control_size = CONTROL_SIZE if destinations else STAMP_CONTROL_SIZE
        unpack_stamp = TIMESPEC.unpack
        monotonic, wall_clock = time.monotonic, time.time
        ancillary = None
        while True:
            try:
                if destinations or stamped:
                    data, ancillary, _, source = recvmsg(receive_size, control_size)
                else:
                    data, source = recvfrom(receive_size)
            except OSError:
                if self._stopping or sock.fileno() < 0:
                    return
                self._receive_errors += 1
                continue
            if self._stopping:
                return
            now, wall_time = monotonic(), wall_clock()
            if destinations:
                if stamped:
                    wall_time, ancillary = _take_stamp(ancillary, wall_time, destinations)
            elif ancillary:
                # The stamp is the only control message asked for: no search, no function call.
                level, kind, raw = ancillary[0]
                if kind == SO_TIMESTAMPNS and level == SOL_SOCKET and len(raw) == TIMESPEC.size:
                    seconds, nanoseconds = unpack_stamp(raw)
                    wall_time = seconds + nanoseconds * 1e-9
                ancillary = None
            answer(data, source, now, wall_time, ancillary)

    def _answer(
        self,
        sendto: Callable[..., int],
        sendmsg: Callable[..., int],
        data: bytes,
        source: Any,
        now: float,
        wall_time: float,
        ancillary: list[tuple[int, int, bytes]] | None,
    ) -> None:
        """Reflect one datagram and send its reply, if any, without blocking; with the control
        messages ``ancillary`` it came with, if given (the reply then leaves from the address
        the request was sent to)."""
        with self._lock:
            try:
                if self.stamp_reflector is not None:
                    ttl = None
                    if ancillary is not None and self.receives_ttl:
                        ttl, ancillary = take_ttl(ancillary)
                    ttls = None if ttl is None else (ttl,)
                    reply = self.stamp_reflector.reflect(data, source, now, wall_time, ttls)
                else:
                    reply = self.reflector.reflect(data, source, now, wall_time)
            except Exception as error:  # a defect: counted and survived, never a deaf server
                self._internal_error(error)
                return
        if reply is not None:
            try:
                if ancillary is None:
                    sendto(reply, _SEND_FLAGS, source)
                else:
                    sendmsg((reply,), ancillary, _SEND_FLAGS, source)
            except (BlockingIOError, InterruptedError):
                self._send_dropped += 1
            except OSError:
                self._send_errors += 1

    def _internal_error(self, error: Exception) -> None:
        """Charge the datagrams ``reflect`` left without an outcome to ``internal_errors``.

        Called with the lock held. The counters then add up again, the error is shown once
        per flush, and the reader goes on answering.
        """
        counters = self.reflector.counters
        counters.internal_errors += max(1, counters.unaccounted)
        if self.first_internal_error is None:
            self.first_internal_error = _describe(error)

    def _receive_batched(self, sock: socket.socket) -> None:
        """The reader thread on Linux: batches in with ``recvmmsg``, out with ``sendmmsg``.

        ``recvmmsg`` with ``MSG_WAITFORONE`` blocks only for the first datagram and then takes
        what is already queued. Every datagram of a batch was in the socket's queue when the
        call returned, so that instant is their receive time, read once; the lock is taken once
        per batch. Sources are decoded from their raw ``sockaddr`` bytes once and remembered,
        and the replies go back to those same bytes.

        A ctypes call costs more than Python's own ``recvfrom``/``sendto``, so a batch of one
        (no queue: light load) is slower than the plain calls. After such a batch the reader
        answers the next ``SINGLES`` datagrams one by one, as the portable path does, then
        tries a batch again: a request arriving alone pays the plain calls' round trip, and a
        queue that builds up is back in batches after at most ``SINGLES`` datagrams.

        With :attr:`replies_from_destination`, every message header has a control buffer: the
        kernel puts each request's destination there, and the reply's header points to the
        same bytes, so each reply leaves from the address its request was sent to at the cost
        of two lengths copied per batch; lone datagrams use ``recvmsg``/``sendmsg``.
        """
        assert self._mmsg_functions is not None
        # A STAMP server that reads TTLs takes every datagram's control messages.
        destinations = self.replies_from_destination or self.receives_ttl
        stamped = self.receive_stamps == "kernel"
        io = _mmsg.BatchSocket(
            sock,
            self._mmsg_functions,
            self.receive_size,
            self.server_config.batch,
            self.reply_size,
            CONTROL_SIZE if destinations else 0,
            timestamps=stamped,
        )
        stamp_reflector = self.stamp_reflector
        take_ttls = io.take_ttls if self.receives_ttl else None
        receive_times = io.receive_times
        with_control = destinations or stamped
        single_control = CONTROL_SIZE if destinations else STAMP_CONTROL_SIZE
        receive, send = io.receive, io.send
        recvfrom, recvmsg = sock.recvfrom, sock.recvmsg
        answer = functools.partial(self._answer, sock.sendto, sock.sendmsg)
        reflect = self.reflector.reflect
        reflect_batch = self.reflector.reflect_batch
        lock = self._lock
        receive_size = self.receive_size
        wall_clock = time.time
        family = sock.family
        sources: dict[bytes, tuple[object, ...]] = {}
        known = sources.get
        decode = _mmsg.decode_address

        def learn(raw: bytes) -> tuple[object, ...]:
            if len(sources) >= SOURCE_CACHE:
                sources.clear()
            source = sources[raw] = decode(family, raw)
            return source

        spin = self.busy_poll
        monotonic = time.monotonic

        def receive_one(size: int, flags: int = 0) -> tuple[bytes, Any, Any]:
            if with_control:
                data, ancillary, _, source = recvmsg(size, single_control, flags)
                return data, source, ancillary
            data, source = recvfrom(size, flags)
            return data, source, None

        def receive_spinning(size: int) -> tuple[bytes, Any, Any]:
            deadline = monotonic() + spin
            while True:
                try:
                    if with_control:
                        data, ancillary, _, source = recvmsg(size, single_control, _DONTWAIT)
                        return data, source, ancillary
                    data, source = recvfrom(size, _DONTWAIT)
                    return data, source, None
                except BlockingIOError:
                    if monotonic() >= deadline:
                        return receive_one(size)

        share = self.server_config.awake_share
        descriptor = sock.fileno()
        # select() takes microseconds (poll() whole milliseconds) but only descriptors below
        # FD_SETSIZE: a server opened among a thousand files always blocks.
        rhythm = cadence.Cadence(share) if share and descriptor < FD_SETSIZE else None
        readable = select.poll()
        readable.register(descriptor, select.POLLIN)
        poll, wait_readable = readable.poll, select.select
        lead = cadence.WakeLead()

        def wake_for(window: cadence.Window) -> bool:
            """Sleep until shortly before ``window`` opens (or a datagram comes), then poll
            until one comes or the window closes.

            True if the datagram came while polling: caught awake. One that ends the sleep
            woke the reader as a blocking receive would have, and is not counted.
            """
            now = monotonic()
            if now >= window.closes:
                return False
            self._awake_windows += 1
            wake_at = window.opens - lead.lead(window, share)
            if wake_at > now:
                ready = wait_readable((descriptor,), (), (), wake_at - now)[0]
                # How far past the asked end the sleep ran (if a datagram ended it after that
                # end, the timer was late by at least as much): the next sleep ends earlier.
                lead.sample(monotonic() - wake_at)
                if ready:
                    return False
            while monotonic() < window.closes:
                if poll(0):
                    return True
                # A prober on this host, woken on this CPU by its own timer, would otherwise
                # wait for the poll's time slice to end: its request came late by that much.
                yield_cpu()
            return False

        singles = 0
        spinning = False
        answered_at = 0.0
        ancillary = None
        awake = False
        while True:
            if rhythm is not None and not spinning:
                window = rhythm.window()
                awake = window is not None and wake_for(window)
            try:
                if singles:
                    singles -= 1
                    if spinning:
                        data, source, ancillary = receive_spinning(receive_size)
                    elif with_control:
                        data, ancillary, _, source = recvmsg(receive_size, single_control)
                    else:
                        data, source = recvfrom(receive_size)
                    datagrams = None
                else:
                    datagrams, names = receive()
            except OSError:
                if self._stopping or sock.fileno() < 0:
                    return
                self._receive_errors += 1
                continue
            if self._stopping:
                return
            now, wall_time = monotonic(), wall_clock()
            if awake:
                self._caught_awake += 1
                awake = False
            if datagrams is not None and len(datagrams) == 1:
                singles = SINGLES
                name = names if isinstance(names, bytes) else names[0]
                data, source = datagrams[0], known(name) or learn(name)
                ancillary = io.ancillary(0) if with_control else None
                datagrams = None
            if datagrams is None:
                read_at = wall_time
                if stamped:
                    wall_time, ancillary = _take_stamp(ancillary, wall_time, destinations)
                spinning = should_spin(now - answered_at, spin, singles)
                answer(data, source, now, wall_time, ancillary)
                answered_at = monotonic()
                if rhythm is not None:
                    # The kernel's stamp, moved to the monotonic clock: when the request
                    # arrived, not when this thread woke to it (which varies by more than the
                    # windows are wide). A stamp that makes no sense (a clock step between it
                    # and the reading) leaves the reading.
                    waited = read_at - wall_time
                    rhythm.arrived(now - waited if 0.0 <= waited < 1.0 else now)
                continue
            if rhythm is not None:
                rhythm.forget()
            # Each datagram's own kernel stamp (or this one reading of the clock for all).
            wall_times = receive_times(wall_time)
            try:
                if stamp_reflector is not None:
                    replies = self._reflect_stamp(
                        stamp_reflector,
                        datagrams,
                        names,
                        known,
                        learn,
                        now,
                        wall_times,
                        None if take_ttls is None else take_ttls(len(datagrams)),
                    )
                elif isinstance(names, bytes):  # one source sent the whole batch
                    source = known(names) or learn(names)
                    with lock:
                        replies = reflect_batch(datagrams, source, now, wall_times)
                else:
                    with lock:
                        replies = [
                            reflect(data, known(name) or learn(name), now, received)
                            for data, name, received in zip(
                                datagrams, names, wall_times, strict=True
                            )
                        ]
            except Exception as error:  # a defect: counted and survived, never a deaf server
                with lock:
                    self._internal_error(error)
                continue
            if None in replies:
                kept = [index for index, reply in enumerate(replies) if reply]
                if not kept:
                    continue
                dropped, failed = send([reply for reply in replies if reply], kept)
            else:
                dropped, failed = send(replies)  # type: ignore[arg-type]
            if dropped:
                self._send_dropped += dropped
            if failed:
                self._send_errors += failed

    def _reflect_stamp(
        self,
        reflector: StampReflector,
        datagrams: list[bytes],
        names: list[bytes] | bytes,
        known: Callable[[bytes], tuple[object, ...] | None],
        learn: Callable[[bytes], tuple[object, ...]],
        now: float,
        wall_times: list[float],
        ttls: list[int | None] | None,
    ) -> list[bytes | None]:
        """The batched path's replies from the STAMP reflector, with each request's TTL (0
        where the kernel gave none for a datagram, as the reflector cannot know it)."""
        known_ttls: list[int] | None = None
        if ttls is not None and any(ttl is not None for ttl in ttls):
            known_ttls = [ttl or 0 for ttl in ttls]
        with self._lock:
            if isinstance(names, bytes):
                source = known(names) or learn(names)
                return reflector.reflect_batch(datagrams, source, now, wall_times, known_ttls)
            return [
                reflector.reflect(
                    data,
                    known(name) or learn(name),
                    now,
                    wall_times[index],
                    None if known_ttls is None else (known_ttls[index],),
                )
                for index, (data, name) in enumerate(zip(datagrams, names, strict=True))
            ]

    def _flush(self) -> None:
        with self._lock:
            records = self.reflector.drain_log()
            internal = self.reflector.counters.internal_errors
            first_error = self.first_internal_error
            not_logged = self.reflector.log_suppressed
        if not_logged > self._not_logged_said:
            count = str(not_logged - self._not_logged_said)
            records.append(Reflected(time.time(), ("-", 0), "not-logged", count))
            self._not_logged_said = not_logged
        if internal > self._internal_errors_logged:
            detail = f"{internal - self._internal_errors_logged} datagrams; first: {first_error}"
            records.append(Reflected(time.time(), ("-", 0), "internal-error", detail))
            self._internal_errors_logged = internal
        if records and self._on_records is not None:
            self._on_records(records)


def _take_stamp(
    ancillary: list[tuple[int, int, bytes]] | None, fallback: float, destinations: bool
) -> tuple[float, list[tuple[int, int, bytes]] | None]:
    """A lone datagram's receive time, its kernel stamp if it came with one (else
    ``fallback``), and the control messages its reply goes out with: the destination address
    with ``destinations`` (never the stamp, which ``sendmsg`` refuses), else none."""
    if not ancillary:
        return fallback, ancillary if destinations else None
    stamp = receive_timestamp(ancillary)
    if not destinations:
        return (fallback if stamp is None else stamp), None
    rest = [item for item in ancillary if item[:2] != (socket.SOL_SOCKET, SO_TIMESTAMPNS)]
    return (fallback if stamp is None else stamp), rest


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class BackgroundServer:
    """A :class:`Server` on its own thread and event loop, for scripts and Jupyter notebooks.

    ``start()`` returns once the socket is bound (or raises what binding raised); ``stop()`` closes
    it and returns the final counters. Also a context manager.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: ReflectorConfig | None = None,
        *,
        on_records: RecordSink | None = None,
        server_config: ServerConfig | None = None,
        stamp: StampOptions | None = None,
    ) -> None:
        self.server = Server(
            host, port, config, on_records=on_records, server_config=server_config, stamp=stamp
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="udpbeat-server", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    @property
    def counters(self) -> Counters:
        return self.server.counters

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        if self._thread.is_alive():
            return self  # started already, e.g. by start_background_server() before a `with`
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout)
        except BaseException:
            self.stop(timeout)
            raise
        return self

    def stop(self, timeout: float = 10.0) -> Counters:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
        return self.counters

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_background_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    loss: float = 0.0,
    seed: int | None = None,
    on_records: RecordSink | None = None,
) -> BackgroundServer:
    """Start a reflector in the background (works inside Jupyter) and return its handle."""
    config = ReflectorConfig(loss=loss, seed=seed, log_events=on_records is not None)
    return BackgroundServer(host, port, config, on_records=on_records).start()
