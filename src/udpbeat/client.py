"""The prober's I/O shell: one coroutine around :class:`ProbeSession`.

All decisions are the session's; this module only moves datagrams, reads the clocks and waits
for the session's timer. The loop is a single coroutine (``while not session.finished``), so an
exception raised anywhere in the session, the detector or an ``on_event`` callback ends the run
and reaches whoever awaits :func:`probe`; nothing runs in a callback that could swallow it.

``now`` is the event loop's clock (monotonic), so RTTs do not move when the wall clock is
stepped; the wall clock is read only for the timestamp the wire format carries. The socket's
reader callback only takes datagrams off the socket, with their arrival time, and wakes the
coroutine.

ICMP errors: on Linux the socket has ``IP_RECVERR`` (``IPV6_RECVERR``), so each error comes
with the address of the host that sent it and the heartbeat it is about. An error from any
host but the target is counted (``icmp-elsewhere``) and ignored: a forged "port unreachable"
from elsewhere cannot mark a live server down. Elsewhere the plain refusal is all there is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from udpbeat._net import (
    DEFAULT_PORT,
    RECEIVE_CONTROL_SIZE,
    ClockBridge,
    display_address,
    enable_error_queue,
    enable_receive_timestamps,
    enable_send_timestamps,
    read_error_queue,
    receive_timestamp,
    resolve,
    same_host,
    source_address,
    yield_after_send,
)
from udpbeat.detector import Detector
from udpbeat.errors import ConfigError
from udpbeat.events import Event
from udpbeat.report import ProbeReport
from udpbeat.session import ProbeConfig, ProbeSession

EventSink = Callable[[Event], None]
T = TypeVar("T")

#: Errors a connected UDP socket reports when an ICMP error came back for a heartbeat.
REFUSALS = (ConnectionRefusedError, ConnectionResetError)
#: Bytes read per datagram: any reply longer than a valid one is malformed either way.
RECEIVE_SIZE = 65535
#: Datagrams read per readiness callback at most, so a flood cannot starve the loop.
READ_BATCH = 256
#: Sends whose kernel send stamp is awaited, at most (the oldest are forgotten past it).
MAX_UNSTAMPED = 1024


class Prober:
    """Runs one :class:`ProbeSession` against one target on the running loop."""

    def __init__(
        self,
        session: ProbeSession,
        *,
        on_event: EventSink | None = None,
        kernel_timestamps: bool = True,
    ) -> None:
        """``kernel_timestamps``: take arrival times from the kernel's receive stamps, and send
        times from its send stamps, where the system has them (Linux ``SO_TIMESTAMPNS``,
        ``SOF_TIMESTAMPING_TX_SOFTWARE``); ``False`` reads the clock when the datagram is read
        and before it is sent, as the portable path does."""
        self.session = session
        self._want_kernel_stamps = kernel_timestamps
        self._kernel_stamps = False
        # Send stamps: the kernel numbers the sends from 0; the n-th is heartbeat _sent[n],
        # while every send went (_numbered).
        self._send_stamps = False
        self._numbered = True
        self._sent: dict[int, int] = {}
        self._sends = 0
        self._left: list[tuple[int, float]] = []
        self._bridge = ClockBridge(monotonic=asyncio.get_running_loop().time)
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._target: tuple[Any, ...] | None = None
        self._error_queue = False
        # What the reader callback took off the socket, oldest first: (arrival, datagram, the
        # arrival is the kernel's stamp) or (arrival, refused heartbeat's seq or None, False)
        # for an ICMP error from the target.
        self._inbox: deque[tuple[float, bytes | int | None, bool]] = deque()
        self._wake = asyncio.Event()

    async def run(
        self, address: tuple[Any, ...], family: int, source: tuple[Any, ...] | None = None
    ) -> ProbeReport:
        """Probe ``address`` until the session finishes; returns its report. ``source``: the
        local address to send from (port 0: any), as ``ping -I`` does.

        Raises:
            ConfigError: the socket cannot be bound to ``source``.
            Whatever the session or ``on_event`` raised: the run ends with it.
        """
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            self._error_queue = enable_error_queue(sock)
            if self._want_kernel_stamps:
                self._kernel_stamps = enable_receive_timestamps(sock)
                # They come on the error queue, read with the ICMP errors: only with it.
                self._send_stamps = self._numbered = (
                    self._kernel_stamps and self._error_queue and enable_send_timestamps(sock)
                )
                # The socket is empty and the clocks' offset known from the start, so a step
                # of the wall clock before the first reply is caught like any other.
                self._bridge.measure()
                self._bridge.drained(self._loop.time())
            if source is not None:
                try:
                    sock.bind(source)
                except OSError as error:
                    reason = error.strerror or str(error)
                    raise ConfigError(
                        f"cannot send from source address {source[0]}: {reason}"
                    ) from None
            sock.connect(address)
        except (OSError, ConfigError):
            sock.close()
            raise
        self._sock, self._target = sock, address
        loop = self._loop
        loop.add_reader(sock.fileno(), self._readable)
        session = self.session
        try:
            while True:
                self._feed()
                session.handle_timer(loop.time(), time.time())
                self._flush()
                if session.finished:
                    break
                self._wake.clear()
                if self._inbox:
                    continue
                try:
                    async with asyncio.timeout_at(session.get_timer()):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
            self._sock = None
        return session.report(loop.time())

    def stop(self) -> None:
        """End the run now; the report covers what happened so far."""
        self.session.stop(self._loop.time())
        self._wake.set()

    # -- the socket's side: read, never decide ---------------------------------------------

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        inbox = self._inbox
        clock = self._loop.time
        kernel_stamps = self._kernel_stamps
        bridge = self._bridge
        if kernel_stamps:
            bridge.measure()
        if self._send_stamps:
            self._read_error_queue(clock())
        for _ in range(READ_BATCH):
            try:
                if kernel_stamps:
                    data, ancillary, _flags, _address = sock.recvmsg(
                        RECEIVE_SIZE, RECEIVE_CONTROL_SIZE
                    )
                else:
                    data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                bridge.drained(clock())
                break
            except REFUSALS:
                self._refused(clock())
                continue
            except OSError as error:
                self.session.count_socket_error(_error_kind(error))
                break
            now = clock()
            arrival = bridge.convert(receive_timestamp(ancillary), now) if kernel_stamps else None
            if arrival is None:
                inbox.append((now, data, False))
            else:
                inbox.append((arrival, data, True))
        self._wake.set()

    def _refused(self, now: float) -> None:
        """An ICMP error is pending: find out who sent it and about which heartbeat."""
        if not self._error_queue or self._sock is None:
            self._inbox.append((now, None, False))
            return
        self._read_error_queue(now)

    def _read_error_queue(self, now: float) -> None:
        """Take the ICMP errors and the send stamps off the error queue."""
        sock = self._sock
        assert sock is not None and self._target is not None
        for offender, payload, sent in read_error_queue(sock):
            if sent is not None:
                number, stamp = sent
                heartbeat = self._sent.pop(number, None)
                left = self._bridge.convert_send(stamp, now)
                if heartbeat is not None and left is not None:
                    self._left.append((heartbeat, left))
                continue
            if offender is not None and not same_host(offender, self._target):
                self.session.count_socket_error("icmp-elsewhere")
                continue
            self._inbox.append((now, self.session.sent_seq(payload), False))

    # -- the session's side -----------------------------------------------------------------

    def _feed(self) -> None:
        session = self.session
        inbox = self._inbox
        if self._left:
            # Before the replies: a reply read in the same turn was answered after it left.
            for seq, left in self._left:
                session.mark_left(seq, left)
            self._left.clear()
        while inbox and not session.finished:
            arrival, item, kernel_stamp = inbox.popleft()
            if isinstance(item, bytes):
                session.receive_datagram(item, arrival, kernel_stamp=kernel_stamp)
            else:
                session.receive_error(arrival, item)
        inbox.clear()

    def _flush(self) -> None:
        sock = self._sock
        session = self.session
        datagrams = session.datagrams_to_send()
        if sock is not None and datagrams:
            # The RTT starts at the send call, not at the timer that decided to send.
            seqs = session.mark_sent(self._loop.time())
            for seq, datagram in zip(seqs, datagrams, strict=False):
                if self._send(sock, datagram) and self._numbered:
                    sent = self._sent
                    sent[self._sends] = seq
                    self._sends += 1
                    if len(sent) > MAX_UNSTAMPED:  # stamps that never came: forget the oldest
                        del sent[next(iter(sent))]
            # Whatever the send woke (a reflector on this host) runs first: the events and
            # the loop's turn below would otherwise be counted in the RTT (_net).
            yield_after_send()
        on_event = self._on_event
        for event in session.events():
            if on_event is not None:
                on_event(event)

    def _send(self, sock: socket.socket, datagram: bytes) -> bool:
        """Send one datagram; ``True`` if it went."""
        # A pending ICMP error is reported by the next socket call, which may be this send:
        # the datagram did not go. The error is read as any other (and cleared by being
        # reported), then the send is tried once more, so a forged error cannot cost a
        # heartbeat.
        for attempt in (1, 2):
            try:
                sock.send(datagram)
                return True
            except BlockingIOError:
                self.session.count_socket_error("send-would-block")
            except REFUSALS:
                self._refused(self._loop.time())
                self._stop_numbering()
                if attempt == 2:
                    self.session.count_socket_error("send-refused")
                continue
            except OSError as error:
                self.session.count_socket_error(_error_kind(error))
            break
        self._stop_numbering()
        return False

    def _stop_numbering(self) -> None:
        # Whether the kernel numbered a send that failed is not known: the send stamps to
        # come could be put down to the wrong heartbeat, so they are not used any more (the
        # error queue is still read: they keep coming).
        self._numbered = False
        self._sent.clear()


def _error_kind(error: OSError) -> str:
    code = error.errno
    name = errno.errorcode.get(code, str(code)) if code is not None else type(error).__name__
    return name.lower()


async def probe(
    host: str,
    port: int = DEFAULT_PORT,
    config: ProbeConfig | None = None,
    *,
    on_event: EventSink | None = None,
    on_start: Callable[[Prober], None] | None = None,
    family: int = socket.AF_UNSPEC,
    source: str | None = None,
    kernel_timestamps: bool = True,
    **settings: Any,
) -> ProbeReport:
    """Send heartbeats to ``host:port`` and return the report (the async entry point).

    ``config`` or keyword ``settings`` (the fields of :class:`ProbeConfig`: ``count``,
    ``interval``, ``timeout``, ``watch``, ``detector``, ``detector_options``, ...) say what to
    do; ``probe(host, detector="phi")`` behaves as ``udpbeat client host --detector phi``.
    ``detector`` may also be a :class:`~udpbeat.detector.Detector` object of your own.
    ``on_event`` sees every event as it happens; ``on_start`` receives the :class:`Prober`,
    whose ``stop()`` ends the run early (the report then covers what happened so far).
    ``family`` (``socket.AF_INET`` or ``AF_INET6``) restricts the host's addresses, as
    ``ping -4``/``-6``; ``source`` is the local address to send from, as ``ping -I``.
    ``kernel_timestamps``: arrival times from the kernel's receive stamps where it gives them
    (Linux), else from the clock when the reply is read (``False``: always the latter).

    Raises:
        ConfigError: a setting is out of range, the host does not resolve (in ``family``), or
            the source address is not of the target's family or not one of this host's.
    """
    detector: Detector | None = None
    if isinstance(settings.get("detector"), Detector):
        detector = settings.pop("detector")
    if config is None:
        config = _make_config(settings)
    elif settings:
        raise ConfigError("give either a ProbeConfig or keyword settings, not both")
    address, family = await resolve(host, port, family)
    bind_to = None if source is None else source_address(source, family)
    loop = asyncio.get_running_loop()
    session = ProbeSession(
        config, loop.time(), target=display_address(address), host=host, detector=detector
    )
    prober = Prober(session, on_event=on_event, kernel_timestamps=kernel_timestamps)
    if on_start is not None:
        on_start(prober)
    return await prober.run(address, family, bind_to)


def _make_config(settings: dict[str, Any]) -> ProbeConfig:
    try:
        return ProbeConfig(**settings)
    except TypeError as error:  # an unknown keyword
        raise ConfigError(f"probe(): {error}") from None


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even where a loop already runs.

    Jupyter runs an event loop in the kernel's thread, so ``asyncio.run`` fails there; the
    coroutine then runs on a fresh loop in a worker thread while the caller waits.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="udpbeat") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def probe_sync(host: str, port: int = DEFAULT_PORT, **options: Any) -> ProbeReport:
    """:func:`probe` for synchronous code and notebooks; takes the same keyword options."""
    return run_sync(probe(host, port, **options))
