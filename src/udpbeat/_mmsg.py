"""Linux ``recvmmsg``/``sendmmsg`` through ctypes: one system call for a batch of datagrams.

Shared by the server's batched receive path and ``benchmarks/loadgen.py``. The structures are
``struct iovec``, ``struct msghdr`` and ``struct mmsghdr`` as glibc and musl lay them out.
ctypes releases the GIL for the duration of a foreign call, so a thread blocked in ``recvmmsg``
does not hold up the event loop.

:class:`BatchSocket` is the server's side: buffers, socket addresses and message headers are
allocated once, and what Python does per datagram is slicing bytes out of one copy of the
buffers; lengths move between Python and the header arrays with one C-level operation per
batch (``struct``, a strided ``memoryview``), never a ctypes attribute per message.

With ``control_size``, each message also has a control buffer for ancillary data: the server
asks for each datagram's destination address (``IP_PKTINFO``/``IPV6_PKTINFO``) and sends each
reply with the control messages its request came with, which makes the reply leave from the
address the request was sent to (see ``udpbeat.server``). With ``timestamps`` (the socket has
``SO_TIMESTAMPNS``), each message's control buffer starts with room for the kernel's receive
stamp, which the kernel always writes first; :meth:`BatchSocket.receive_times` reads the stamps
of a whole batch with one ``struct`` call, and the replies' control messages start past it (a
receive stamp is not something ``sendmsg`` accepts).
"""

from __future__ import annotations

import array
import ctypes
import errno
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, Literal

#: ``MSG_WAITFORONE``: block for the first datagram only, then take what is already queued.
MSG_WAITFORONE = 0x10000
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


MMsgFunction = Callable[..., int]


def load() -> tuple[MMsgFunction, MMsgFunction] | None:
    """``(recvmmsg, sendmmsg)`` from the C library, or ``None`` where there are none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.restype = sendmmsg.restype = ctypes.c_int
    recvmmsg.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    return recvmmsg, sendmmsg


def message_array(
    count: int, buffer_address: int, slot: int
) -> tuple[ctypes.Array[MMsgHdr], ctypes.Array[IoVec]]:
    """``count`` headers, each with one iovec on its own ``slot``-byte slice of the buffer."""
    vectors = (IoVec * count)(*[IoVec(buffer_address + i * slot, slot) for i in range(count)])
    messages = (MMsgHdr * count)()
    first_vector = ctypes.addressof(vectors)
    for i in range(count):
        header = messages[i].msg_hdr
        header.msg_iov = ctypes.cast(first_vector + i * ctypes.sizeof(IoVec), ctypes.POINTER(IoVec))
        header.msg_iovlen = 1
    return messages, vectors


#: Receive slots up to this size are copied out a batch at a time; larger ones (a server with a
#: large ``max_size``) datagram by datagram, so that short datagrams do not cost a full slot.
_COPY_WHOLE = 512
#: Bytes of receive buffer a batch may take; with large slots the batch is made smaller.
MAX_BUFFER = 1 << 20
_SOCKADDR_SIZE = {socket.AF_INET: 16, socket.AF_INET6: 28}
#: ``size_t`` as a memoryview/array format.
_WORD: Literal["Q", "I"] = "Q" if ctypes.sizeof(ctypes.c_size_t) == 8 else "I"


def _address(buffer: bytearray) -> int:
    """The address of a bytearray's storage (it must never be resized while this is used)."""
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


def _column(count: int, offset: int, stride: int) -> struct.Struct:
    """Reads a ``uint32`` at ``offset`` in each of ``count`` ``stride``-byte records."""
    return struct.Struct("=" + f"{offset}xI" + f"{stride - 4}xI" * (count - 1) if count else "=")


def _header_column(messages: ctypes.Array[MMsgHdr], field: Any) -> memoryview:
    """A writable view of one ``size_t`` field of ``msg_hdr`` in every one of ``messages``."""
    stride = ctypes.sizeof(MMsgHdr)
    word = ctypes.sizeof(ctypes.c_size_t)
    assert field.offset % word == 0 and stride % word == 0
    words = memoryview(messages).cast("B").cast(_WORD)
    return words[field.offset // word :: stride // word]


def decode_address(family: int, raw: bytes) -> tuple[Any, ...]:
    """A ``sockaddr_in``/``sockaddr_in6`` as ``recvfrom`` would return it."""
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    flowinfo = int.from_bytes(raw[4:8], "big")
    scope_id = int.from_bytes(raw[24:28], sys.byteorder)
    host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    if scope_id:
        # Let the system name the scope ("fe80::1%eth0"), exactly as recvfrom does.
        flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        host = socket.getnameinfo((host, port, flowinfo, scope_id), flags)[0]
    return host, port, flowinfo, scope_id


class BatchSocket:
    """Batched I/O on one bound UDP socket (AF_INET or AF_INET6), buffers allocated once.

    :meth:`receive` blocks until at least one datagram is queued and returns up to ``batch`` of
    them with their sources' raw ``sockaddr`` bytes; :meth:`send` answers a batch with one
    ``sendmmsg`` to those same raw addresses (no address is encoded again).

    The buffers are bytearrays that the headers point into, so Python fills and reads them with
    slice operations rather than ctypes calls; the per-datagram work is done by C-level loops
    (``struct`` for the lengths received, ``bytes.join`` for the replies, which go in fixed
    slots so that only their lengths change from batch to batch).
    """

    def __init__(
        self,
        sock: socket.socket,
        functions: tuple[MMsgFunction, MMsgFunction],
        receive_size: int,
        batch: int,
        reply_size: int,
        control_size: int = 0,
        *,
        timestamps: bool = False,
    ) -> None:
        """``control_size``: bytes of ancillary data per message that go back out with its
        reply (the destination address); ``timestamps``: the socket has ``SO_TIMESTAMPNS``,
        and each message gets room for its receive stamp in front of that."""
        self._recvmmsg, self._sendmmsg = functions
        self.family = sock.family
        self._fd = sock.fileno()
        self.batch = batch = max(1, min(batch, MAX_BUFFER // receive_size))
        self.name_size = name_size = _SOCKADDR_SIZE[sock.family]
        self._slot = receive_size
        self._reply_size = reply_size
        self._in = bytearray(receive_size * batch)
        self._names = bytearray(name_size * batch)
        self._out = bytearray(reply_size * batch)
        names_base = _address(self._names)
        self._in_messages, self._in_vectors = message_array(batch, _address(self._in), receive_size)
        self._out_messages, self._out_vectors = message_array(
            batch, _address(self._out), reply_size
        )
        # The n-th reply goes to the n-th name slot, where recvmmsg put the n-th source. The
        # kernel writes each source's length back into msg_namelen: for UDP it is always the
        # family's sockaddr size, the capacity set here, so it is never reset.
        for i in range(batch):
            for messages in (self._in_messages, self._out_messages):
                header = messages[i].msg_hdr
                header.msg_name = names_base + i * name_size
                header.msg_namelen = name_size
        # Control buffers, one slot per message, shared by the n-th request and the n-th reply
        # like the names: the reply goes out with the control messages its request came with,
        # except the receive stamp at the slot's start (the kernel puts it before any other).
        self._stamp_size = stamp_size = STAMP_SPACE if timestamps else 0
        self._reply_control = control_size
        self._control_size = slot_size = stamp_size + control_size
        self._control = bytearray(slot_size * batch)
        # The kernel writes the length it used into each received header's msg_controllen: it is
        # set back to the capacity before every recvmmsg, and copied to the replies' headers.
        self._in_control_lengths = _header_column(self._in_messages, MsgHdr.msg_controllen)
        self._out_control_lengths = _header_column(self._out_messages, MsgHdr.msg_controllen)
        self._control_capacity = array.array(_WORD, [slot_size] * batch)
        if slot_size:
            control_base = _address(self._control)
            for i in range(batch):
                self._in_messages[i].msg_hdr.msg_control = control_base + i * slot_size
                if control_size:
                    self._out_messages[i].msg_hdr.msg_control = (
                        control_base + i * slot_size + stamp_size
                    )
            self._in_control_lengths[:] = self._control_capacity
        # One struct per batch size, made when first needed: the stamp of every message at once.
        self._stamp_columns: dict[int, struct.Struct] = {}
        self._count = 0
        self._in_view = memoryview(self._in)
        self._in_pointer = ctypes.c_void_p(ctypes.addressof(self._in_messages))
        self._out_pointer = ctypes.c_void_p(ctypes.addressof(self._out_messages))
        header_size = ctypes.sizeof(MMsgHdr)
        self._received_lengths = [
            _column(count, MMsgHdr.msg_len.offset, header_size).unpack_from
            for count in range(batch + 1)
        ]
        words = memoryview(self._out_vectors).cast("B").cast(_WORD)
        self._reply_bases, self._reply_lengths = words[0::2], words[1::2]
        self._out_base = _address(self._out)
        # Replies go either in fixed slots of reply_size bytes, or, when all of a batch have the
        # same length, back to back; _packed is that length while the iovecs point that way.
        self._slot_bases = array.array(_WORD, self._reply_bases.tolist())
        self._packed = 0
        self._data_starts = list(range(0, receive_size * batch, receive_size))
        self._name_starts = list(range(0, name_size * batch, name_size))

    def receive(self) -> tuple[list[bytes], list[bytes] | bytes]:
        """Datagrams and their sources' raw addresses, blocking until at least one is queued.

        The addresses are one list entry per datagram, or, when every datagram of the batch
        came from the same source, that one address (so the caller looks it up once).

        Raises:
            OSError: from ``recvmmsg`` (``EINTR`` is retried, as Python's own calls do).
        """
        if self._control_size:
            self._in_control_lengths[: self._count] = self._control_capacity[: self._count]
        while True:
            count = self._recvmmsg(self._fd, self._in_pointer, self.batch, MSG_WAITFORONE, None)
            if count > 0:
                self._count = count
                break
            if count == 0:  # not for a blocking call; read again rather than hand back nothing
                continue
            code = ctypes.get_errno()
            if code != errno.EINTR:
                raise OSError(code, f"recvmmsg: {errno.errorcode.get(code, code)}")
        lengths = self._received_lengths[count](self._in_messages)
        if self._slot <= _COPY_WHOLE:
            # Small slots: one copy of the batch, then a bytes slice per datagram.
            data = bytes(self._in_view[: count * self._slot])
            datagrams = [
                data[start : start + length]
                for start, length in zip(self._data_starts, lengths, strict=False)
            ]
        else:
            view = self._in_view
            datagrams = [
                view[start : start + length].tobytes()
                for start, length in zip(self._data_starts, lengths, strict=False)
            ]
        size = self.name_size
        names = bytes(self._names[: count * size])
        first = names[:size]
        if names == first * count:
            return datagrams, first
        return datagrams, [names[start : start + size] for start in self._name_starts[:count]]

    def ancillary(self, index: int) -> list[tuple[int, int, bytes]]:
        """The control messages of the ``index``-th datagram of the last :meth:`receive`, as
        ``socket.recvmsg`` returns them (the receive stamp among them, with ``timestamps``)."""
        if not self._control_size:
            return []
        start = index * self._control_size
        length = self._in_control_lengths[index]
        return parse_control(bytes(self._control[start : start + length]))

    def take_ttls(self, count: int, reply_ttl: int = 255) -> list[int | None]:
        """The TTL (hop limit) of each of the first ``count`` datagrams of the last
        :meth:`receive`, from their ``IP_TTL``/``IPV6_HOPLIMIT`` control messages (``None``
        where there is none), each rewritten in place to ``reply_ttl``: the replies go out with
        their requests' control messages, and that one sets their TTL.

        The kernel writes the same control messages in the same order for every datagram of a
        family, so the TTL sits at the same place in every slot: where the first datagram's
        was found, checked for all by the length used and the message's level and type (one
        strided slice each), it is read and rewritten for the whole batch with one slice. A
        batch where that does not hold (IPv4 and IPv6 sources mixed) is read slot by slot.
        """
        control, size = self._control, self._control_size
        stop = count * size
        low = 0 if sys.byteorder == "little" else 3  # the TTL's byte in its native int
        place = self._ttl_place(0)
        if place is not None:
            value, used = place
            header = value - _cmsg_align(_CMSG_HEADER.size)
            level = header + _WORD_SIZE + low  # cmsg_level's low byte
            kind = level + 4  # cmsg_type's
            if (
                self._in_control_lengths[:count].tolist().count(used) == count
                and control[level:stop:size].count(control[level]) == count
                and control[kind:stop:size].count(control[kind]) == count
            ):
                ttls: list[int | None] = list(control[value + low : stop : size])
                control[value + low : stop : size] = bytes((reply_ttl,)) * count
                return ttls
        result: list[int | None] = []
        for index in range(count):
            found = self._ttl_place(index)
            if found is None:
                result.append(None)
                continue
            at = found[0] + low
            result.append(control[at])
            control[at] = reply_ttl
        return result

    def _ttl_place(self, index: int) -> tuple[int, int] | None:
        """Where the ``index``-th datagram's TTL value starts in the control buffer, and the
        control length it came with (``None``: it has no TTL message)."""
        control, size = self._control, self._control_size
        used = min(self._in_control_lengths[index], size)
        offset = index * size
        end = offset + used
        header = _CMSG_HEADER
        aligned = _cmsg_align(header.size)
        while offset + header.size <= end:
            length, level, kind = header.unpack_from(control, offset)
            if length < header.size or offset + length > end:
                return None
            if (level, kind) in _TTL_MESSAGES and length >= aligned + 4:
                return offset + aligned, used
            offset += _cmsg_align(length)
        return None

    def receive_times(self, fallback: float) -> list[float]:
        """The kernel's receive stamp (Unix seconds) of each datagram of the last
        :meth:`receive`, in order; ``fallback`` for any that has none (a socket without
        ``timestamps``, or a stamp the kernel did not put first)."""
        count = self._count
        if not self._stamp_size:
            return [fallback] * count
        columns = self._stamp_columns.get(count)
        if columns is None:
            pad = f"{self._control_size - STAMP_SPACE}x"
            columns = self._stamp_columns[count] = struct.Struct(
                "=" + (_STAMP_MESSAGE + pad) * count
            )
        flat = columns.unpack_from(self._control)
        lengths = self._in_control_lengths[:count]
        if (
            flat[1::5].count(socket.SOL_SOCKET) == count
            and flat[2::5].count(SCM_TIMESTAMPNS) == count
            and min(lengths) >= STAMP_SPACE
        ):
            return [seconds + nanoseconds * 1e-9 for seconds, nanoseconds in zip(
                flat[3::5], flat[4::5], strict=True
            )]  # fmt: skip
        times = []
        for index in range(count):
            level, kind, seconds, nanoseconds = flat[index * 5 + 1 : index * 5 + 5]
            stamped = lengths[index] >= STAMP_SPACE and (level, kind) == (
                socket.SOL_SOCKET,
                SCM_TIMESTAMPNS,
            )
            times.append(seconds + nanoseconds * 1e-9 if stamped else fallback)
        return times

    def send(self, replies: list[bytes], kept: list[int] | None = None) -> tuple[int, int]:
        """Send ``replies[i]`` without blocking to the i-th source of the last :meth:`receive`,
        or to the ``kept[i]``-th when given; returns ``(would-block, other errors)``.

        Each reply goes with the control messages its request came with (when the socket was
        made with a ``control_size``). A message that fails is skipped and the rest still go,
        as one ``sendto`` each would.
        """
        count = len(replies)
        control_size = self._control_size
        reply_control = self._reply_control
        stamp_size = self._stamp_size
        if kept is not None:
            # Move the kept sources (and their control messages) to the first slots, in order.
            size = self.name_size
            names = bytes(self._names[: self._count * size])
            self._names[: count * size] = b"".join([names[i * size : (i + 1) * size] for i in kept])
            if reply_control:
                controls = bytes(self._control[: self._count * control_size])
                self._control[: count * control_size] = b"".join(
                    [controls[i * control_size : (i + 1) * control_size] for i in kept]
                )
                received = self._in_control_lengths
                self._out_control_lengths[:count] = array.array(
                    _WORD, [max(0, received[i] - stamp_size) for i in kept]
                )
        elif reply_control:
            if stamp_size:
                self._out_control_lengths[:count] = array.array(
                    _WORD, [max(0, n - stamp_size) for n in self._in_control_lengths[:count]]
                )
            else:
                self._out_control_lengths[:count] = self._in_control_lengths[:count]
        lengths = array.array(_WORD, map(len, replies))
        length = lengths[0]
        if lengths.count(length) == count:
            # All the same length (the usual case): back to back, no padding to build.
            if length != self._packed:
                base = self._out_base
                self._reply_bases[:] = array.array(
                    _WORD, range(base, base + self.batch * length, length)
                )
                self._packed = length
            self._out[: count * length] = b"".join(replies)
        else:
            size = self._reply_size
            if self._packed:
                self._reply_bases[:] = self._slot_bases
                self._packed = 0
            self._out[: count * size] = b"".join([reply.ljust(size) for reply in replies])
        self._reply_lengths[:count] = lengths
        dropped = failed = 0
        first = 0
        pointer = self._out_pointer
        while True:
            sent = self._sendmmsg(self._fd, pointer, count - first, MSG_DONTWAIT)
            if sent > 0:
                first += sent
            else:
                code = ctypes.get_errno()
                if code == errno.EINTR:
                    continue
                if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                    dropped += 1
                else:
                    failed += 1
                first += 1
            if first >= count:
                return dropped, failed
            pointer = ctypes.c_void_p(
                ctypes.addressof(self._out_messages) + first * ctypes.sizeof(MMsgHdr)
            )


#: ``struct cmsghdr``: ``cmsg_len`` (``size_t``), ``cmsg_level``, ``cmsg_type``.
_CMSG_HEADER = struct.Struct("=" + _WORD + "ii")
#: ``SCM_TIMESTAMPNS`` (Linux's ``SO_TIMESTAMPNS``), and one such control message: its header
#: and a ``struct timespec`` (seconds, nanoseconds), as laid out on 64-bit Linux.
SCM_TIMESTAMPNS = 35
_STAMP_MESSAGE = _WORD + "iiqq"
STAMP_SPACE = struct.calcsize("=" + _STAMP_MESSAGE)
_CMSG_ALIGN = ctypes.sizeof(ctypes.c_size_t)
_WORD_SIZE = ctypes.sizeof(ctypes.c_size_t)
#: ``(level, type)`` of ``IP_TTL`` and ``IPV6_HOPLIMIT`` (Linux).
_TTL_MESSAGES = frozenset({(0, 2), (41, 52)})


def _cmsg_align(length: int) -> int:
    return (length + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)


def parse_control(raw: bytes) -> list[tuple[int, int, bytes]]:
    """The control messages in a ``msg_control`` buffer as ``(level, type, data)``, the form
    ``socket.recvmsg`` gives; a truncated message at the end is left out."""
    messages = []
    offset = 0
    header = _cmsg_align(_CMSG_HEADER.size)
    while offset + _CMSG_HEADER.size <= len(raw):
        length, level, kind = _CMSG_HEADER.unpack_from(raw, offset)
        if length < _CMSG_HEADER.size or offset + length > len(raw):
            break
        messages.append((level, kind, raw[offset + header : offset + length]))
        offset += _cmsg_align(length)
    return messages
