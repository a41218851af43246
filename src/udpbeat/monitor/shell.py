"""The monitor's I/O shell: one event loop, one UDP socket per address family, one coroutine.

All decisions are the fleet's (:mod:`udpbeat.monitor.fleet`); this module moves datagrams,
reads the clocks and waits. :meth:`Monitor.run` is a single coroutine::

    while not stopped:
        take every datagram and ICMP error off the sockets     # recvmmsg, in batches
        hand them to the fleet (routed by source address and port)
        run every session whose timer is due (each sends at once, with sendto)
        hand the state changes to whoever listens
        wait for a datagram or the next timer, but at most once a millisecond

**Arrival times come from the kernel.** Each socket has ``SO_TIMESTAMPNS``: a reply is
stamped when it reaches the socket, not when the loop gets round to it, so RTTs stay honest
while the loop is busy with ten thousand targets, and the loop can read in batches (at most
once per :data:`TICK`) instead of waking for every reply. The stamp is on the wall clock; only
its age (wall time now minus the stamp, microseconds) is used, taken off the monotonic ``now``,
so a step of the wall clock cannot distort an RTT by more than the age it was read at.

**Sends are stamped when they leave.** The fleet reads the clock just before each session
runs, and the datagrams it wants sent go at once (``sendto``), so a heartbeat's RTT does not
include the time other sessions took in the same batch.

**ICMP errors.** With one unconnected socket for all targets, ``IP_RECVERR`` queues each
error with the address the refused datagram was sent to and the host that sent the error; the
fleet refuses the quoted heartbeat of the target at that address, and only if the error came
from that target's host. A pending error also fails the next ``recv`` or ``send`` on the socket:
the shell then reads the queue, and sends again once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import ipaddress
import socket
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from udpbeat import _mmsg
from udpbeat._net import (
    SO_TIMESTAMPNS,
    enable_error_queue,
    enable_receive_timestamps,
    read_error_queue_to,
    receive_timestamp,
    run_abandonable,
    yield_after_send,
)
from udpbeat.errors import ConfigError
from udpbeat.monitor.config import MonitorConfig, TargetConfig
from udpbeat.monitor.fleet import (
    Address,
    Applied,
    Change,
    Fleet,
    Target,
    address_key,
)

#: Shortest time between two rounds of the loop (seconds). Each wake-up of a process costs
#: tens of microseconds of CPU whatever it then does (on the 2-core VM of docs/monitor.md, about
#: 80); at most 200 a second, a monitor of one target and one of ten thousand pay the same
#: little for them. Heartbeats due within a tick go out together, each stamped when it leaves.
TICK = 0.005
#: Most sessions run between two turns of the event loop. A round's due sessions run in slices
#: of this many; after a slice that sent, the CPU is yielded once (a reflector on this host that
#: the sends woke answers now, not after the whole round), and the loop gets a turn before the
#: next slice, so that its other tasks (``/metrics``, the API, the status page) are never held
#: up by more than one slice's sends, however many targets are due at once.
SLICE = 16
#: Datagrams read per ``recvmmsg`` call, and the bytes kept of each (a reply is < 96).
BATCH = 256
SLOT = 128
#: Room for one ``cmsghdr`` and a ``timespec``, per datagram.
CONTROL = 64
_STAMP = struct.Struct("=" + _mmsg._WORD + "iiqq")
_UINT = struct.Struct("=I")
#: Receive buffer asked for each socket: replies to ten thousand targets fit in it.
RECEIVE_BUFFER = 4 << 20
#: A kernel stamp older than this (seconds) is not trusted (a wall-clock step in between).
MAX_STAMP_AGE = 5.0
#: ICMP errors read off a socket's error queue at once, at most.
MAX_ERRORS = 4096
#: Recent send times and timer delays kept for ``/api/monitor``.
RECENT = 1 << 16
#: The loop is called stalled (``/healthz``) when a round has not begun for this long.
STALLED = 5.0


@dataclass
class ShellStats:
    """The shell's own counters (``/api/monitor``)."""

    rounds: int = 0
    #: Slices of due sessions run (:data:`SLICE`), and the most datagrams sent in one of them:
    #: the most the loop's other tasks waited for, in sends.
    slices: int = 0
    most_sends_per_slice: int = 0
    datagrams: int = 0
    send_errors: dict[str, int] = field(default_factory=dict)
    icmp_errors: int = 0
    reloads: int = 0
    reload_failures: int = 0
    #: Times the long-lived objects were moved out of the collector's sight (gc.freeze).
    freezes: int = 0


class Receiver:
    """Batched receive on one socket (``recvmmsg``), with each datagram's kernel stamp."""

    def __init__(self, sock: socket.socket, recvmmsg: _mmsg.MMsgFunction) -> None:
        self._recvmmsg = recvmmsg
        self._fd = sock.fileno()
        self._name_size = 16 if sock.family == socket.AF_INET else 28
        self._data = bytearray(SLOT * BATCH)
        self._data_view = memoryview(self._data)
        self._names = bytearray(self._name_size * BATCH)
        self._control = bytearray(CONTROL * BATCH)
        self._messages, self._vectors = _mmsg.message_array(BATCH, _address(self._data), SLOT)
        names, control = _address(self._names), _address(self._control)
        for i in range(BATCH):
            header = self._messages[i].msg_hdr
            header.msg_name = names + i * self._name_size
            header.msg_namelen = self._name_size
            header.msg_control = control + i * CONTROL
            header.msg_controllen = CONTROL
        self._pointer = ctypes.c_void_p(ctypes.addressof(self._messages))
        self._size = ctypes.sizeof(_mmsg.MMsgHdr)
        self._len_offset = _mmsg.MMsgHdr.msg_len.offset
        self._controllen_offset = _mmsg.MsgHdr.msg_controllen.offset
        self._raw = memoryview(self._messages).cast("B")
        self._controllen = struct.Struct("=" + _mmsg._WORD)

    def receive(self) -> list[tuple[bytes, bytes, float | None]]:
        """``(datagram, routing key of its source, wall-clock stamp or None)`` for what is
        queued now (the key: :func:`~udpbeat.monitor.fleet.raw_address_key` of the raw
        ``sockaddr``); empty when nothing is.

        Raises:
            OSError: a pending socket error (e.g. ``ECONNREFUSED`` after an ICMP error).
        """
        while True:
            count = self._recvmmsg(self._fd, self._pointer, BATCH, _mmsg.MSG_DONTWAIT, None)
            if count > 0:
                break
            if count == 0:
                return []
            code = ctypes.get_errno()
            if code == errno.EINTR:
                continue
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            raise OSError(code, errno.errorcode.get(code, str(code)))
        raw, size = self._raw, self._size
        data = bytes(self._data_view[: count * SLOT])
        name_size = self._name_size
        # One copy of the names, sliced straight to routing keys (the port, then the address).
        names = bytes(memoryview(self._names)[: count * name_size])
        control = self._control
        length_of, controllen = _UINT.unpack_from, self._controllen
        len_offset, controllen_offset = self._len_offset, self._controllen_offset
        stamp_size, unpack_stamp = _STAMP.size, _STAMP.unpack_from
        out: list[tuple[bytes, bytes, float | None]] = []
        for i in range(count):
            base = i * size
            length = length_of(raw, base + len_offset)[0]
            controllen_at = base + controllen_offset
            stamp: float | None = None
            if controllen.unpack_from(raw, controllen_at)[0] >= stamp_size:
                _, level, kind, seconds, nanoseconds = unpack_stamp(control, i * CONTROL)
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    stamp = seconds + nanoseconds * 1e-9
            controllen.pack_into(raw, controllen_at, CONTROL)
            start, name = i * SLOT, i * name_size
            if name_size == 28:  # the port, then the 16 bytes of the IPv6 address
                key = names[name + 2 : name + 4] + names[name + 8 : name + 24]
            else:
                key = names[name + 2 : name + 8]  # the port, then the IPv4 address
            out.append((data[start : start + min(length, SLOT)], key, stamp))
        return out


def _address(buffer: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


class Monitor:
    """The fleet's sockets and loop. ``on_changes`` receives every batch of state changes.

    Use: ``monitor = Monitor(fleet)``, ``await monitor.apply(config)``, then ``await
    monitor.run()`` until :meth:`stop`.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        on_changes: Callable[[list[Change]], None] | None = None,
        batched: bool = True,
    ) -> None:
        self.fleet = fleet
        self.stats = ShellStats()
        self._on_changes = on_changes
        self._loop = asyncio.get_running_loop()
        self._functions = _mmsg.load() if batched else None
        self._sockets: dict[int, socket.socket] = {}
        self._receivers: dict[int, Receiver] = {}
        self._watched: set[int] = set()
        #: The coroutine's wait: a future resolved by the timer or by a readable socket.
        self._waiter: asyncio.Future[None] | None = None
        self._wake_handle: asyncio.TimerHandle | None = None
        self._earliest = 0.0
        self._readable_pending = False
        self._stopping = False
        self._errors: list[tuple[Address | None, Address | None, bytes, float]] = []
        #: Recent send times (monotonic) and timer delays, rings of :data:`RECENT`.
        self.send_times = array("d", bytes(8 * RECENT))
        self.sends = 0
        self.last_round = self._loop.time()
        self.started = self._loop.time()
        #: ``fleet.sessions_made`` when the long-lived objects were last frozen.
        self._frozen_at = 0
        fleet.send = self._send

    # -- configuration ------------------------------------------------------------------------

    async def apply(self, config: MonitorConfig | Sequence[TargetConfig]) -> Applied:
        """Resolve every target's host, then make the fleet probe exactly these targets.

        Raises:
            ConfigError: a host that does not resolve, or two targets at one address; the
                fleet is left as it was.
        """
        targets = config.targets if isinstance(config, MonitorConfig) else tuple(config)
        source = config.source if isinstance(config, MonitorConfig) else None
        resolved = await resolve_all(targets, source)
        for _, address in resolved:
            self._socket(socket.AF_INET6 if len(address) == 4 else socket.AF_INET)
        try:
            applied = self.fleet.apply(resolved, self._loop.time())
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}" if source else str(error)) from None
        self._wake_now()
        return applied

    def _socket(self, family: int) -> socket.socket:
        sock = self._sockets.get(family)
        if sock is not None:
            return sock
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(("::", 0))
            else:
                sock.bind(("0.0.0.0", 0))
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            enable_receive_timestamps(sock)
            enable_error_queue(sock)
        except OSError as error:
            sock.close()
            raise ConfigError(f"cannot open a UDP socket: {error.strerror or error}") from None
        self._sockets[family] = sock
        if self._functions is not None:
            self._receivers[family] = Receiver(sock, self._functions[0])
        self._watch(sock)
        return sock

    def addresses(self) -> list[tuple[Any, ...]]:
        """The local address of each socket."""
        return [sock.getsockname() for sock in self._sockets.values()]

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Probe until :meth:`stop`. Exceptions from the fleet end the run and reach the caller."""
        loop = self._loop
        fleet = self.fleet
        clock = loop.time
        try:
            while not self._stopping:
                round_start = clock()
                self.last_round = round_start
                self.stats.rounds += 1
                self._drain()
                horizon = clock()
                while not await self._run_slice(horizon):
                    pass
                if self._stopping:
                    break
                self._freeze_long_lived()
                await self._wait(round_start, fleet.next_timer())
        finally:
            for sock in self._sockets.values():
                self._unwatch(sock)

    async def _run_slice(self, horizon: float) -> bool:
        """Run up to :data:`SLICE` of the sessions due by ``horizon``; ``True`` when none is
        left. Otherwise the loop has had a turn (the rest of the round runs after its other
        ready tasks); those that fall due meanwhile wait for the next round, so a round ends
        even when the loop is behind. (Reading the sockets before every slice and running each
        to the clock was tried: all DOWN 3.9-6.0 s after a stop at 10,000 targets against
        2.7-3.2 s in one sitting, on a loaded VM; docs/monitor.md.)"""
        fleet = self.fleet
        clock = self._loop.time
        sends = self.sends
        ran = fleet.run_due(clock, time.time() - clock(), limit=SLICE, horizon=horizon)
        sent = self.sends - sends
        if sent:
            # What the sends woke (a reflector on this host) runs before the next slice: it
            # would wait behind it, and that wait is in the RTT (_net). (Skipping this while the
            # loop was behind was tried: RTT p50 1.2-1.4 ms against 0.27, DOWN no sooner.)
            yield_after_send()
        stats = self.stats
        stats.slices += 1
        stats.most_sends_per_slice = max(stats.most_sends_per_slice, sent)
        self._route_errors()
        changes = fleet.take_changes()
        if changes and self._on_changes is not None:
            self._on_changes(changes)
        if ran < SLICE or self._stopping:
            return True
        await asyncio.sleep(0)
        return False

    def _freeze_long_lived(self) -> None:
        """Once every target has its session, move every object alive now out of the cyclic
        collector's sight (``gc.freeze``), again after a reload that made new ones.

        Ten thousand sessions are half a million objects that live as long as the process; a
        full collection walks them all (about 0.3 s of CPU here, every few seconds, the loop
        stalled meanwhile) to free the few short-lived cycles. Frozen, they are still freed by
        reference counting when a reload drops them; only a cycle among them would be kept."""
        fleet = self.fleet
        if fleet.unstarted or fleet.sessions_made == self._frozen_at:
            return
        self._frozen_at = fleet.sessions_made
        gc.freeze()
        self.stats.freezes += 1

    def stop(self) -> None:
        self._stopping = True
        self._wake_now()

    def close(self) -> None:
        """Close the sockets (after :meth:`run` returned)."""
        for sock in self._sockets.values():
            self._unwatch(sock)
            sock.close()
        self._sockets.clear()
        self._receivers.clear()

    def healthy(self) -> bool:
        """The loop began a round within :data:`STALLED` seconds."""
        return self._loop.time() - self.last_round < STALLED

    async def _wait(self, round_start: float, timer: float | None) -> None:
        """Until the next timer, or a datagram, but never before ``round_start + TICK``."""
        loop = self._loop
        earliest = self._earliest = round_start + TICK
        if self._readable_pending or self._stopping:
            wake_at: float | None = earliest
        else:
            wake_at = None if timer is None else max(timer, earliest)
        waiter = self._waiter = loop.create_future()
        self._wake_handle = None if wake_at is None else loop.call_at(wake_at, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._wake_handle is not None:
                self._wake_handle.cancel()
                self._wake_handle = None

    def _wake_now(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)

    def _watch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd not in self._watched:
            self._watched.add(fd)
            self._loop.add_reader(fd, self._readable, fd)

    def _unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._watched:
            self._watched.discard(fd)
            self._loop.remove_reader(fd)

    def _readable(self, fd: int) -> None:
        # Level-triggered: left registered while the coroutine waits out its tick, it would
        # fire on every turn of the loop. It is registered again after the next drain.
        self._watched.discard(fd)
        self._loop.remove_reader(fd)
        self._readable_pending = True
        waiter = self._waiter
        if waiter is None:
            return
        if self._loop.time() >= self._earliest:
            _resolve(waiter)
        elif self._wake_handle is None or self._wake_handle.when() > self._earliest:
            if self._wake_handle is not None:
                self._wake_handle.cancel()
            self._wake_handle = self._loop.call_at(self._earliest, _resolve, waiter)

    # -- receiving ----------------------------------------------------------------------------

    def _drain(self) -> None:
        self._readable_pending = False
        for family, sock in self._sockets.items():
            receiver = self._receivers.get(family)
            if receiver is not None:
                self._drain_batched(sock, receiver)
            else:
                self._drain_plain(sock)
            self._read_errors(sock)
            self._watch(sock)
        self._route_errors()

    def _drain_batched(self, sock: socket.socket, receiver: Receiver) -> None:
        fleet = self.fleet
        clock = self._loop.time
        for _ in range(64):  # at most 64 batches a round, so a flood cannot hold the loop
            try:
                batch = receiver.receive()
            except OSError as error:
                self._socket_error(sock, error)
                continue
            if not batch:
                return
            now, wall = clock(), time.time()
            self.stats.datagrams += len(batch)
            receive = fleet.receive
            for data, key, stamp in batch:
                arrival = now
                if stamp is not None:
                    age = wall - stamp
                    if 0.0 <= age < MAX_STAMP_AGE:
                        arrival = now - age
                receive(key, data, arrival)

    def _drain_plain(self, sock: socket.socket) -> None:
        fleet = self.fleet
        clock = self._loop.time
        for _ in range(BATCH * 16):
            try:
                data, ancillary, _flags, address = sock.recvmsg(SLOT, CONTROL)
            except BlockingIOError:
                return
            except OSError as error:
                self._socket_error(sock, error)
                continue
            now, arrival = clock(), clock()
            stamp = receive_timestamp(ancillary)
            if stamp is not None:
                age = time.time() - stamp
                if 0.0 <= age < MAX_STAMP_AGE:
                    arrival = now - age
            self.stats.datagrams += 1
            try:
                key = address_key(address)
            except ValueError:
                continue
            fleet.receive(key, data, arrival)

    def _read_errors(self, sock: socket.socket) -> bool:
        """Take every queued ICMP error off ``sock`` (up to :data:`MAX_ERRORS`); ``True`` if
        there was any. Each ICMP message queues one; the socket reports only that one is
        pending, so the queue is read to its end, and every round, not only when told."""
        now, wall = self._loop.time(), time.time()
        found = 0
        for destination, offender, quoted, stamp in read_error_queue_to(sock, MAX_ERRORS):
            found += 1
            # Stamped by the kernel when it came, like a reply: a loop late to read it cannot
            # let the heartbeat it refuses time out first.
            age = -1.0 if stamp is None else wall - stamp
            arrival = now - age if 0.0 <= age < MAX_STAMP_AGE else now
            self._errors.append((destination, offender, quoted, arrival))
        self.stats.icmp_errors += found
        return found > 0

    def _socket_error(self, sock: socket.socket, error: OSError) -> None:
        """A pending error reported by a receive or a send: read what the error queue says."""
        if not self._read_errors(sock):
            kind = errno.errorcode.get(error.errno or 0, type(error).__name__).lower()
            self.stats.send_errors[kind] = self.stats.send_errors.get(kind, 0) + 1

    def _route_errors(self) -> None:
        errors, self._errors = self._errors, []
        for destination, offender, quoted, now in errors:
            if destination is None:
                self.fleet.icmp_unrouted += 1
                continue
            self.fleet.receive_error(destination, offender, quoted, now)

    # -- sending ------------------------------------------------------------------------------

    def _send(self, target: Target, datagram: bytes) -> None:
        sock = self._sockets.get(target.family)
        session = target.session
        if sock is None or session is None:  # pragma: no cover - apply() opens it first
            return
        for attempt in (1, 2):
            try:
                sock.sendto(datagram, target.address)
            except BlockingIOError:
                session.count_socket_error("send-would-block")
                return
            except OSError as error:
                if error.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    # An ICMP error for an earlier datagram (any target's) was pending; failing
                    # this send reported and cleared it, and the error itself waits in the queue,
                    # read with the others in the next round. Send again.
                    if attempt == 1:
                        continue
                    self._socket_error(sock, error)
                kind = errno.errorcode.get(error.errno or 0, "oserror").lower()
                session.count_socket_error(kind)
                return
            self.send_times[self.sends % RECENT] = self._loop.time()
            self.sends += 1
            return

    # -- figures ------------------------------------------------------------------------------

    def spread(self, window: float = 1.0, bin_width: float = 0.01) -> dict[str, float | int]:
        """How evenly the sends of the last ``window`` seconds spread over it, in
        ``bin_width`` bins: the busiest bin against the mean (1.0: perfectly even)."""
        now = self._loop.time()
        count = min(self.sends, RECENT)
        times = [t for t in self.send_times[:count] if now - window <= t < now]
        bins = max(1, round(window / bin_width))
        counts = [0] * bins
        for t in times:
            counts[min(bins - 1, int((t - (now - window)) / bin_width))] += 1
        mean = len(times) / bins
        variance = sum((c - mean) ** 2 for c in counts) / bins
        return {
            "window_s": window,
            "bin_ms": bin_width * 1e3,
            "sends": len(times),
            "busiest_bin": max(counts) if counts else 0,
            "mean_per_bin": mean,
            "peak_to_mean": (max(counts) / mean) if mean else 0.0,
            "cv": (variance**0.5 / mean) if mean else 0.0,
        }


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# --- resolving -------------------------------------------------------------------------------

#: Host names resolved at once at most.
RESOLVE_CONCURRENCY = 32


async def resolve_all(
    targets: Sequence[TargetConfig], source: str | None = None
) -> list[tuple[TargetConfig, Address]]:
    """Every target with the socket address of its host (numeric hosts without a lookup).

    Raises:
        ConfigError: naming the file, the target and ``host`` for a host that does not resolve.
    """
    slots = asyncio.Semaphore(RESOLVE_CONCURRENCY)
    where = f"{source}: " if source else ""

    async def one(target: TargetConfig) -> Address:
        numeric = numeric_address(target.host, target.port)
        if numeric is not None:
            return numeric
        async with slots:
            try:
                # On a thread of its own: a Ctrl-C does not wait for a lookup stuck on a DNS
                # server that does not answer, as it would for the loop's executor.
                infos = await run_abandonable(
                    f"udpbeat-resolve {target.host}",
                    socket.getaddrinfo,
                    target.host,
                    target.port,
                    type=socket.SOCK_DGRAM,
                )
            except (socket.gaierror, UnicodeError) as error:
                reason = getattr(error, "strerror", None) or str(error)
                raise ConfigError(
                    f"{where}target {target.name!r}: host: cannot resolve {target.host!r}: {reason}"
                ) from None
        family, _, _, _, sockaddr = infos[0]
        found: tuple[Any, ...] = tuple(sockaddr)
        if family == socket.AF_INET6:
            return (str(found[0]), int(found[1]), 0, int(found[3]))
        return (str(found[0]), int(found[1]))

    addresses = await asyncio.gather(*(one(target) for target in targets))
    return list(zip(targets, addresses, strict=True))


def numeric_address(host: str, port: int) -> Address | None:
    """The socket address of a numeric IPv4 or IPv6 host (``None`` for a name)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 4:
        return (str(ip), port)
    if ip.ipv4_mapped is not None:
        return (str(ip.ipv4_mapped), port)
    return (str(ip), port, 0, 0)
