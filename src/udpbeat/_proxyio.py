"""The proxy's datagram I/O and its timer: what :mod:`udpbeat.proxy` does with file descriptors.

Two ways to move datagrams, the same interface:

- :class:`BatchIo` (Linux): ``recvmmsg`` takes up to ``BATCH`` datagrams into one buffer shared
  by every socket (the proxy runs on one thread), and ``sendmmsg`` sends a batch. A datagram
  relayed unimpaired is never copied into Python: :meth:`BatchIo.forward` points the outgoing
  messages at the slots it was received into. Datagrams of one size in a row, for one
  destination (a stream of heartbeats, of test packets), go as one segmented send (UDP GSO,
  ``UDP_SEGMENT``): one trip through the kernel's stack for up to 64 of them, which the
  receiving side's kernel cuts up again.
- :class:`PlainIo` (elsewhere, or ``io="portable"``): ``recvfrom``/``sendto`` per datagram.

Sources are opaque keys: the raw ``sockaddr`` bytes with :class:`BatchIo`, the address tuple
with :class:`PlainIo`; :meth:`display` turns either into ``(host, port, ...)``.

**Arrival times.** A datagram's delay counts from when the kernel received it, not from when
the relay got round to reading it (a sleeping thread wakes tens of microseconds late):
:class:`BatchIo` asks for each datagram's receive time (``SO_TIMESTAMPNS``, on the real-time
clock) and :meth:`BatchIo.arrivals` moves it to the monotonic clock. Without it (elsewhere),
the arrival time is when the batch was read.

And one timer, :class:`MonotonicTimer`: a ``timerfd`` armed at an absolute time on
``CLOCK_MONOTONIC``, the clock of ``loop.time()``, to the nanosecond. asyncio's own timers wait
in ``epoll_wait``, whose timeout is whole milliseconds: a datagram due in 3.2 ms would leave up
to 0.8 ms late. Where there is no ``timerfd`` the timer falls back to ``loop.call_at``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import errno
import itertools
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal

from udpbeat import _mmsg
from udpbeat._net import SO_TIMESTAMPNS, enable_receive_timestamps

#: Datagrams per ``recvmmsg``/``sendmmsg``.
BATCH = 64
#: Bytes per receive slot: the largest UDP payload fits, so nothing is ever truncated.
SLOT = 65536
#: Receive buffer asked of the kernel for every socket (it caps it at ``net.core.rmem_max``).
RECEIVE_BUFFER = 4 * 1024 * 1024
_WORD: Literal["Q", "I"] = "Q" if ctypes.sizeof(ctypes.c_size_t) == 8 else "I"
_SOCKADDR_SIZE: dict[int, int] = {socket.AF_INET: 16, socket.AF_INET6: 28}
_RETRY_ONCE = (errno.ECONNREFUSED,)
#: UDP generic segmentation offload (Linux 4.18+): ``setsockopt``/control message level and type.
_SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: A segmented send carries at most this many datagrams and this many bytes of payload.
GSO_SEGMENTS = 64
GSO_BYTES = 60_000
#: Datagrams of one size in a row worth a segmented send.
GSO_MIN_RUN = 2
#: Refusals to segment after which the relay stops trying (e.g. a route whose MTU is smaller).
GSO_GIVE_UP = 16
#: A control message holding one ``struct timespec``: ``CMSG_SPACE(16)``.
_CONTROL_SIZE = 32
#: ``struct cmsghdr`` (length, level, type) then ``struct timespec`` (seconds, nanoseconds).
_TIMESTAMP = struct.Struct("=Qiiqq")


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram ``sock`` receives; ``True`` if it will."""
    if _TIMESTAMP.size != _CONTROL_SIZE:
        return False
    return enable_receive_timestamps(sock)


def realtime_offset() -> float:
    """The real-time clock less the monotonic clock, now (seconds)."""
    return time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)


Key = Hashable


class SocketEvents:
    """What the sockets reported besides datagrams: ICMP errors and failed reads."""

    __slots__ = ("receive_errors", "refused")

    def __init__(self) -> None:
        #: "Port unreachable" reported on an upstream socket: the upstream refused a datagram.
        self.refused = 0
        #: Reads that failed for any other reason.
        self.receive_errors = 0


def _headers(
    count: int, vectors: ctypes.Array[_mmsg.IoVec], names: int | None, name_size: int
) -> ctypes.Array[_mmsg.MMsgHdr]:
    """``count`` message headers over ``vectors``; with ``names``, each with its name slot."""
    messages = (_mmsg.MMsgHdr * count)()
    first = ctypes.addressof(vectors)
    step = ctypes.sizeof(_mmsg.IoVec)
    for i in range(count):
        header = messages[i].msg_hdr
        header.msg_iov = ctypes.cast(first + i * step, ctypes.POINTER(_mmsg.IoVec))
        header.msg_iovlen = 1
        if names is not None:
            header.msg_name = names + i * name_size
            header.msg_namelen = name_size
    return messages


class BatchIo:
    """Batched I/O for one listening socket's family and any number of connected sockets."""

    batched = True

    def __init__(
        self,
        family: int,
        functions: tuple[_mmsg.MMsgFunction, _mmsg.MMsgFunction],
        events: SocketEvents,
        batch: int = BATCH,
    ) -> None:
        self._recvmmsg, self._sendmmsg = functions
        self.family = family
        self.events = events
        self.batch = batch
        self.name_size = size = _SOCKADDR_SIZE[family]
        self._in = bytearray(SLOT * batch)
        self._out = bytearray(SLOT * batch)
        self._in_names = bytearray(size * batch)
        self._out_names = bytearray(size * batch)
        in_base = _mmsg._address(self._in)
        self._in_base = in_base
        self._out_base = _mmsg._address(self._out)
        self._in_vectors = (_mmsg.IoVec * batch)(
            *[_mmsg.IoVec(in_base + i * SLOT, SLOT) for i in range(batch)]
        )
        self._out_vectors = (_mmsg.IoVec * batch)()
        # Sources are read from the listening socket only; a connected socket needs none.
        self._in_named = _headers(batch, self._in_vectors, _mmsg._address(self._in_names), size)
        self._in_unnamed = _headers(batch, self._in_vectors, None, 0)
        # Each received datagram's timestamp lands in its own control slot. For UDP the kernel
        # writes back the same control length every time (one timestamp), so it is set once.
        self._control = bytearray(_CONTROL_SIZE * batch)
        control = _mmsg._address(self._control)
        for messages in (self._in_named, self._in_unnamed):
            for i in range(batch):
                header = messages[i].msg_hdr
                header.msg_control = control + i * _CONTROL_SIZE
                header.msg_controllen = _CONTROL_SIZE
        self._out_named = _headers(batch, self._out_vectors, _mmsg._address(self._out_names), size)
        self._out_unnamed = _headers(batch, self._out_vectors, None, 0)
        self._in_named_pointer = ctypes.c_void_p(ctypes.addressof(self._in_named))
        self._in_unnamed_pointer = ctypes.c_void_p(ctypes.addressof(self._in_unnamed))
        self._in_view = memoryview(self._in)
        header_size = ctypes.sizeof(_mmsg.MMsgHdr)
        self._lengths_of = [
            _mmsg._column(count, _mmsg.MMsgHdr.msg_len.offset, header_size).unpack_from
            for count in range(batch + 1)
        ]
        words = memoryview(self._out_vectors).cast("B").cast(_WORD)
        self._out_bases, self._out_lengths = words[0::2], words[1::2]
        self._slot_bases = array.array(_WORD, range(in_base, in_base + batch * SLOT, SLOT))
        self._starts = range(0, batch * SLOT, SLOT)
        self._count = 0
        self._lengths: tuple[int, ...] = ()
        self._named = False
        #: Whether runs of equal datagrams go out as one segmented send (UDP GSO).
        self._gso = sys.platform.startswith("linux")
        self._gso_refusals = 0

    # -- receiving --------------------------------------------------------------------------

    def receive(self, sock: socket.socket, *, sources: bool) -> int:
        """Take up to ``batch`` queued datagrams off ``sock`` without waiting; how many.

        They stay in the shared buffer until the next ``receive``. ``sources``: keep their
        source addresses (:meth:`sources`).
        """
        messages = self._in_named if sources else self._in_unnamed
        pointer = self._in_named_pointer if sources else self._in_unnamed_pointer
        fd = sock.fileno()
        for _ in range(4):
            count = self._recvmmsg(fd, pointer, self.batch, _mmsg.MSG_DONTWAIT, None)
            if count >= 0:
                break
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                count = 0
                break
            if code in _RETRY_ONCE:
                self.events.refused += 1  # the error is reported once; read on
                continue
            if code != errno.EINTR:
                self.events.receive_errors += 1
                count = 0
                break
        else:
            count = 0
        self._count = count
        self._named = sources
        self._lengths = self._lengths_of[count](messages) if count else ()
        return count

    def sources(self) -> bytes | list[bytes]:
        """The received datagrams' sources: one key if they all came from one, else a list."""
        size, count = self.name_size, self._count
        names = bytes(self._in_names[: count * size])
        first = names[:size]
        if names == first * count:
            return first
        return [names[start : start + size] for start in range(0, count * size, size)]

    def sizes(self) -> tuple[int, ...]:
        return self._lengths

    def arrivals(self, now: float) -> list[float]:
        """When each received datagram arrived, on the monotonic clock: its kernel timestamp,
        or ``now`` (the read) for one without; never later than ``now``."""
        offset = realtime_offset()
        times = []
        for length, level, kind, seconds, nanoseconds in _TIMESTAMP.iter_unpack(
            memoryview(self._control)[: self._count * _CONTROL_SIZE]
        ):
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and length >= 32:
                times.append(min(seconds - offset + nanoseconds * 1e-9, now))
            else:
                times.append(now)
        return times

    def payloads(self, indices: Sequence[int]) -> list[bytes]:
        """Copies of the received datagrams at ``indices``."""
        view, lengths = self._in_view, self._lengths
        return [view[i * SLOT : i * SLOT + lengths[i]].tobytes() for i in indices]

    # -- sending ----------------------------------------------------------------------------

    def forward(
        self,
        sock: socket.socket,
        indices: Sequence[int],
        to: Key | None,
        address: tuple[Any, ...] | None = None,
    ) -> tuple[int, int]:
        """Send the received datagrams at ``indices`` as they are, without copying them, on
        ``sock`` (to ``to`` at ``address``, or to where ``sock`` is connected); ``(sent,
        failed)``."""
        lengths = self._lengths
        if len(indices) == 1:
            i = indices[0]
            return self._send_one(sock, self._in_view[i * SLOT : i * SLOT + lengths[i]], address)
        sent = failed = 0
        for gso, start, stop in self._runs([lengths[i] for i in indices]):
            chunk = indices[start:stop]
            if gso:
                view = self._in_view
                buffers = [view[i * SLOT : i * SLOT + lengths[i]] for i in chunk]
                result = self._send_segmented(sock, buffers, address)
                if result is not None:
                    sent, failed = sent + result[0], failed + result[1]
                    continue
            count = len(chunk)
            if isinstance(chunk, range) and chunk.start == 0 and chunk.step == 1:
                self._out_bases[:count] = self._slot_bases[:count]
                self._out_lengths[:count] = array.array(_WORD, lengths[:count])
            else:
                base = self._in_base
                self._out_bases[:count] = array.array(_WORD, [base + i * SLOT for i in chunk])
                self._out_lengths[:count] = array.array(_WORD, [lengths[i] for i in chunk])
            done, lost = self._send(sock, count, to)
            sent, failed = sent + done, failed + lost
        return sent, failed

    def send(
        self,
        sock: socket.socket,
        payloads: Sequence[bytes],
        to: Key | None,
        address: tuple[Any, ...] | None = None,
    ) -> tuple[int, int]:
        """Send ``payloads`` on ``sock`` (to ``to`` at ``address``, or where it is
        connected); ``(sent, failed)``."""
        if len(payloads) == 1:
            return self._send_one(sock, payloads[0], address)
        sent = failed = 0
        for gso, start, stop in self._runs(list(map(len, payloads))):
            chunk = payloads[start:stop]
            if gso:
                result = self._send_segmented(sock, chunk, address)
                if result is not None:
                    sent, failed = sent + result[0], failed + result[1]
                    continue
            count = len(chunk)
            lengths = array.array(_WORD, map(len, chunk))
            data = b"".join(chunk)
            self._out[: len(data)] = data
            bases = array.array(_WORD, itertools.accumulate(lengths, initial=self._out_base))
            self._out_bases[:count] = bases[:count]
            self._out_lengths[:count] = lengths
            done, lost = self._send(sock, count, to)
            sent, failed = sent + done, failed + lost
        return sent, failed

    def _send_one(
        self, sock: socket.socket, payload: Any, address: tuple[Any, ...] | None
    ) -> tuple[int, int]:
        """One datagram: the socket's own ``send``/``sendto`` costs less than a batch call."""
        for attempt in range(3):
            try:
                if address is None:
                    sock.send(payload, _mmsg.MSG_DONTWAIT)
                else:
                    sock.sendto(payload, _mmsg.MSG_DONTWAIT, address)
            except InterruptedError:
                continue
            except ConnectionRefusedError:
                # An earlier datagram's ICMP error, reported on this send: count it, send again.
                self.events.refused += 1
                if attempt:
                    return 0, 1
                continue
            except OSError:
                return 0, 1
            return 1, 0
        return 0, 1

    def _runs(self, sizes: list[int]) -> list[tuple[bool, int, int]]:
        """Cut a batch into pieces, in order: ``(True, start, stop)`` for a run of datagrams of
        one size that can go as one segmented send, ``(False, start, stop)`` for the rest
        (at most ``batch`` each)."""
        count = len(sizes)
        if not self._gso or count < GSO_MIN_RUN:
            return [(False, start, min(start + self.batch, count))
                    for start in range(0, count, self.batch)]  # fmt: skip
        pieces: list[tuple[bool, int, int]] = []
        loose = 0  # the first datagram not yet in a piece
        i = 0
        while i < count:
            size = sizes[i]
            limit = min(count, i + min(GSO_SEGMENTS, GSO_BYTES // max(size, 1)))
            j = i + 1
            while j < limit and sizes[j] == size:
                j += 1
            if j - i >= GSO_MIN_RUN and size > 0:
                pieces.extend(
                    (False, s, min(s + self.batch, i)) for s in range(loose, i, self.batch)
                )
                pieces.append((True, i, j))
                loose = j
            i = j
        pieces.extend(
            (False, s, min(s + self.batch, count)) for s in range(loose, count, self.batch)
        )
        return pieces

    def _send_segmented(
        self, sock: socket.socket, buffers: Sequence[Any], address: tuple[Any, ...] | None
    ) -> tuple[int, int] | None:
        """Send datagrams of one size as one buffer that the kernel cuts up (UDP GSO): one trip
        through the stack instead of one each. ``(sent, failed)``, or ``None`` if the kernel
        refused to segment (the caller sends them one by one; after ``GSO_GIVE_UP`` refusals,
        segmenting is given up)."""
        control = [(_SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(buffers[0])))]
        for attempt in range(3):
            try:
                if address is None:
                    sock.sendmsg(buffers, control, _mmsg.MSG_DONTWAIT)
                else:
                    sock.sendmsg(buffers, control, _mmsg.MSG_DONTWAIT, address)
            except InterruptedError:
                continue
            except ConnectionRefusedError:
                # An earlier datagram's ICMP error, reported on this send: count it, send again.
                self.events.refused += 1
                if attempt:
                    return 0, len(buffers)
                continue
            except (BlockingIOError, ConnectionError):
                return 0, len(buffers)
            except OSError:
                self._gso_refusals += 1
                if self._gso_refusals >= GSO_GIVE_UP:
                    self._gso = False
                return None
            return len(buffers), 0
        return 0, len(buffers)

    def _send(self, sock: socket.socket, count: int, to: Key | None) -> tuple[int, int]:
        if to is None:
            messages = self._out_unnamed
        else:
            assert isinstance(to, bytes)
            messages = self._out_named
            self._out_names[: count * self.name_size] = to * count
        fd = sock.fileno()
        sent = failed = first = 0
        retried = -1
        pointer = ctypes.c_void_p(ctypes.addressof(messages))
        header_size = ctypes.sizeof(_mmsg.MMsgHdr)
        while first < count:
            done = self._sendmmsg(fd, pointer, count - first, _mmsg.MSG_DONTWAIT)
            if done > 0:
                sent += done
                first += done
            else:
                code = ctypes.get_errno()
                if code == errno.EINTR:
                    continue
                if code in _RETRY_ONCE and retried != first:
                    # A connected socket reports an earlier datagram's ICMP error on the next
                    # send, which it does not send: count the error, send this one again.
                    self.events.refused += 1
                    retried = first
                    continue
                failed += 1
                first += 1
            pointer = ctypes.c_void_p(ctypes.addressof(messages) + first * header_size)
        return sent, failed

    def display(self, key: Key) -> tuple[Any, ...]:
        assert isinstance(key, bytes)
        return _mmsg.decode_address(self.family, key)


class PlainIo:
    """One ``recvfrom``/``sendto`` per datagram; the same interface as :class:`BatchIo`."""

    batched = False

    def __init__(self, family: int, events: SocketEvents, batch: int = BATCH) -> None:
        self.family = family
        self.events = events
        self.batch = batch
        self._received: list[tuple[bytes, Any]] = []

    def receive(self, sock: socket.socket, *, sources: bool) -> int:
        received: list[tuple[bytes, Any]] = []
        recvfrom = sock.recvfrom
        retried = False
        while len(received) < self.batch:
            try:
                received.append(recvfrom(SLOT))
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                self.events.refused += 1
                if retried:
                    break
                retried = True
            except OSError:
                self.events.receive_errors += 1
                break
        self._received = received
        return len(received)

    def sources(self) -> Key | list[Key]:
        keys = [address for _, address in self._received]
        first = keys[0]
        return first if keys.count(first) == len(keys) else keys

    def sizes(self) -> tuple[int, ...]:
        return tuple(len(data) for data, _ in self._received)

    def arrivals(self, now: float) -> list[float]:
        return [now] * len(self._received)

    def payloads(self, indices: Sequence[int]) -> list[bytes]:
        return [self._received[i][0] for i in indices]

    def forward(
        self,
        sock: socket.socket,
        indices: Sequence[int],
        to: Key | None,
        address: tuple[Any, ...] | None = None,
    ) -> tuple[int, int]:
        return self.send(sock, self.payloads(indices), to)

    def send(
        self,
        sock: socket.socket,
        payloads: Sequence[bytes],
        to: Key | None,
        address: tuple[Any, ...] | None = None,
    ) -> tuple[int, int]:
        sent = failed = 0
        for payload in payloads:
            for attempt in range(2):
                try:
                    if to is None:
                        sock.send(payload)
                    else:
                        assert isinstance(to, tuple)
                        sock.sendto(payload, to)
                except ConnectionRefusedError:
                    self.events.refused += 1
                    if attempt == 0:
                        continue
                    failed += 1
                except OSError:
                    failed += 1
                else:
                    sent += 1
                break
        return sent, failed

    def display(self, key: Key) -> tuple[Any, ...]:
        assert isinstance(key, tuple)
        return key


Io = BatchIo | PlainIo


def make_io(family: int, events: SocketEvents, mode: str) -> Io:
    """``mode`` ``"batched"`` or ``"portable"`` (see :func:`udpbeat.server.choose_io`)."""
    if mode == "batched":
        functions = _mmsg.load()
        if functions is not None:
            return BatchIo(family, functions, events)
    return PlainIo(family, events)


# --- the timer -------------------------------------------------------------------------------

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timerfd_functions() -> tuple[Callable[..., int], Callable[..., int]] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.restype = settime.restype = ctypes.c_int
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return create, settime


class MonotonicTimer:
    """Calls ``callback`` once the monotonic clock reaches the time it was armed for.

    ``precise`` says whether it is a ``timerfd`` (nanoseconds) or ``loop.call_at`` (asyncio's
    millisecond waits). Re-arming to the time it is already armed for costs nothing.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._armed: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fd = -1
        self._settime: Callable[..., int] | None = None
        functions = _timerfd_functions()
        if functions is not None and _loop_clock_is_monotonic(loop):
            create, settime = functions
            fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                self._fd, self._settime = fd, settime
                self._spec = _Itimerspec()
                loop.add_reader(fd, self._fired)
        self.precise = self._fd >= 0

    def arm(self, when: float | None) -> None:
        """Fire at ``when`` (loop time; in the past: at once); ``None`` disarms."""
        if when == self._armed:
            return
        self._armed = when
        if self._settime is not None:
            spec = self._spec
            if when is None:
                spec.it_value.tv_sec = spec.it_value.tv_nsec = 0  # disarms
            else:
                nanoseconds = max(int(when * 1e9), 1)  # 0 would disarm
                spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(nanoseconds, 1_000_000_000)
            self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None)
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if when is not None:
            self._handle = self._loop.call_at(when, self._fired)

    def _fired(self) -> None:
        if self._fd >= 0:
            try:
                os.read(self._fd, 8)
            except BlockingIOError:
                return  # re-armed since it fired
        self._handle = None
        self._armed = None
        self._callback()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._settime = None


def _loop_clock_is_monotonic(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.time()`` reads ``CLOCK_MONOTONIC`` (asyncio's loops do; check anyway)."""
    before = loop.time()
    value = time.clock_gettime(time.CLOCK_MONOTONIC)
    after = loop.time()
    return before - 0.001 <= value <= after + 0.001
