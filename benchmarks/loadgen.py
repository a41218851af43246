"""The load generator: valid heartbeat requests to one UDP target on loopback, from its own process.

Four modes, each bounded by ``--duration`` and printing one JSON object on stdout:

``window``
    Keeps ``--window`` requests in flight. Replies are matched by sequence number: on a single
    socket over loopback a reply for heartbeat ``s`` means every unanswered request before ``s``
    was dropped, so a lossy server (the exercise's drops 4 of 11) does not starve the window.
    If nothing comes back for ``--stall-ms``, the requests in flight are written off and the
    window is sent again (counted as ``stalls``).
``rate``
    Open loop: sends at ``--rate`` requests/s whatever comes back, reads replies in between.
``pingpong``
    One request at a time; the round-trip times give p50/p99 at low load.
``paced``
    One request every ``1/--rate`` seconds, evenly spaced (a busy loop, not batches), with the
    round-trip time of each: a steady stream of lone requests, as many clients would send.

``cpu`` in the output is the generator's own CPU time over wall time: near 1.0 means the
generator, not the server, may be what limits the figure.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import select
import socket
import struct
import sys
import time

from udpbeat import _mmsg

RECEIVE_BUFFER = 4 * 1024 * 1024
#: Datagrams per sendmmsg/recvmmsg call.
BATCH = 64
#: Fixed-width sequence numbers give every request the same length, so one preformatted buffer
#: holds a whole batch (leading zeros are valid, and every server echoes the digits as sent).
SEQ_DIGITS = 12
REPLY_SLOT = 128


def connect(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.connect((host, port))
    sock.setblocking(False)
    return sock


def request(seq: int, stamp: bytes) -> bytes:
    return b"Heartbeat %0*d %s" % (SEQ_DIGITS, seq, stamp)


def make_stamp() -> bytes:
    """The send time, fixed width (microseconds), as the text format accepts it."""
    return b"%.6f" % time.time()


def reply_seq(data: bytes) -> int:
    """The sequence number in a heartbeat reply (``Seq: 12, ...``) or an echoed request."""
    return int(data.split(b" ", 2)[1].rstrip(b","))


#: STAMP (``--protocol stamp``): 44-octet Session-Sender packets, sequence number and NTP
#: timestamp; the reply's Session-Sender sequence number is at octets 24..27.
_STAMP_REQUEST = struct.Struct("!I8sHH28x")
_NTP_OFFSET = 2_208_988_800


def stamp_request(seq: int, stamp: bytes) -> bytes:
    return _STAMP_REQUEST.pack(seq & 0xFFFFFFFF, stamp, 1, 0)


def stamp_make_stamp() -> bytes:
    now = time.time() + _NTP_OFFSET
    return struct.pack("!II", int(now) & 0xFFFFFFFF, int((now % 1) * 2**32))


def stamp_reply_seq(data: bytes) -> int:
    return int.from_bytes(data[24:28], "big")


def use_stamp() -> None:
    """Make every mode speak STAMP instead of the text format."""
    global request, make_stamp, reply_seq
    request, make_stamp, reply_seq = stamp_request, stamp_make_stamp, stamp_reply_seq


class PlainIO:
    """One ``send``/``recv_into`` call per datagram: what a simple Python client does."""

    def __init__(self, sock: socket.socket) -> None:
        self._send = sock.send
        self._recv_into = sock.recv_into
        self._buffer = bytearray(2048)
        self.send_errors = 0

    def send(self, first_seq: int, count: int, stamp: bytes) -> None:
        send = self._send
        for seq in range(first_seq, first_seq + count):
            try:
                send(request(seq, stamp))
            except OSError:  # ECONNREFUSED from an earlier ICMP, or a full send buffer
                self.send_errors += 1

    def receive(self) -> tuple[int, int]:
        """Replies already queued (without waiting) and the last one's sequence number."""
        recv_into, buffer = self._recv_into, self._buffer
        count = size = 0
        while count < 4 * BATCH:
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                continue
            count += 1
        return count, (reply_seq(bytes(buffer[:size])) if count else 0)


class MmsgIO:
    """Linux ``sendmmsg``/``recvmmsg`` through ctypes: one system call per batch of datagrams.

    A Python client making one call per datagram tops out near the speed of the servers it is
    meant to measure; batching takes the generator's own per-datagram cost out of the figure.
    """

    def __init__(self, sock: socket.socket) -> None:
        functions = _mmsg.load()
        if functions is None:
            raise RuntimeError("recvmmsg/sendmmsg not available; use --no-batch")
        self._recvmmsg, self._sendmmsg = functions
        self._fd = sock.fileno()
        self._length = len(request(0, make_stamp()))
        self._out = ctypes.create_string_buffer(self._length * BATCH)
        self._in = ctypes.create_string_buffer(REPLY_SLOT * BATCH)
        self._out_msgs = self._messages(self._out, self._length)
        self._in_msgs = self._messages(self._in, REPLY_SLOT)
        self._in_base = ctypes.addressof(self._in)
        self.send_errors = 0

    @staticmethod
    def _messages(buffer: ctypes.Array[ctypes.c_char], slot: int) -> ctypes.Array[_mmsg.MMsgHdr]:
        messages, vectors = _mmsg.message_array(BATCH, ctypes.addressof(buffer), slot)
        messages._vectors = vectors  # type: ignore[attr-defined]  # keep them alive
        return messages

    def send(self, first_seq: int, count: int, stamp: bytes) -> None:
        while count > 0:
            chunk = min(count, BATCH)
            data = b"".join([request(s, stamp) for s in range(first_seq, first_seq + chunk)])
            if len(data) != chunk * self._length:  # a longer stamp or seq: no fixed slots
                raise RuntimeError("request length changed; restart the generator")
            ctypes.memmove(self._out, data, len(data))
            done = self._sendmmsg(self._fd, self._out_msgs, chunk, 0)
            if done < chunk:
                self.send_errors += chunk - max(done, 0)
            first_seq += chunk
            count -= chunk

    def receive(self) -> tuple[int, int]:
        count = self._recvmmsg(self._fd, self._in_msgs, BATCH, socket.MSG_DONTWAIT, None)
        if count <= 0:
            return 0, 0
        last = count - 1
        size = self._in_msgs[last].msg_len
        data = ctypes.string_at(self._in_base + last * REPLY_SLOT, size)
        return count, reply_seq(data)


Io = PlainIO | MmsgIO


def make_io(sock: socket.socket, batch: bool) -> Io:
    if batch and sys.platform == "linux":
        return MmsgIO(sock)
    return PlainIO(sock)


def windowed(
    sock: socket.socket, io: Io, duration: float, window: int, stall_ms: float
) -> dict[str, object]:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    stamp = make_stamp()
    replies = stalls = 0
    next_seq = 1
    acked = 0
    start = time.perf_counter()
    deadline = start + duration
    cpu_start = time.process_time()
    io.send(next_seq, window, stamp)
    next_seq += window
    while True:
        count, last_seq = io.receive()
        if count == 0:
            if time.perf_counter() >= deadline:
                break
            if not poller.poll(stall_ms):
                stalls += 1
                acked = next_seq - 1
                io.send(next_seq, window, stamp)
                next_seq += window
            continue
        replies += count
        acked = max(acked, last_seq)
        due = window - (next_seq - 1 - acked)
        if due > 0:
            io.send(next_seq, due, stamp)
            next_seq += due
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    return {
        "mode": "window",
        "window": window,
        "sent": next_seq - 1,
        "replies": replies,
        "elapsed": elapsed,
        "replies_per_s": replies / elapsed,
        "stalls": stalls,
        "send_errors": io.send_errors,
        "cpu": (time.process_time() - cpu_start) / elapsed,
    }


def open_loop(sock: socket.socket, io: Io, duration: float, rate: float) -> dict[str, object]:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    stamp = make_stamp()
    sent = replies = 0
    start = time.perf_counter()
    deadline = start + duration
    cpu_start = time.process_time()
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        due = min(int((now - start) * rate) - sent, 4 * BATCH)
        if due > 0:
            io.send(sent + 1, due, stamp)
            sent += due
        count, _ = io.receive()
        replies += count
        if due <= 0 and count == 0:
            poller.poll(1)
    # Replies still on their way when sending stops are counted for a short grace period.
    grace = time.perf_counter() + 0.05
    while time.perf_counter() < grace:
        count, _ = io.receive()
        replies += count
        if count == 0:
            poller.poll(5)
    return {
        "mode": "rate",
        "rate": rate,
        "sent": sent,
        "sent_per_s": sent / duration,
        "replies": replies,
        "replies_per_s": replies / duration,
        "send_errors": io.send_errors,
        "cpu": (time.process_time() - cpu_start) / (time.perf_counter() - start),
    }


def quantile_us(sorted_ns: list[int], q: float) -> float | None:
    """The ``q`` quantile of sorted nanosecond round trips, in microseconds."""
    if not sorted_ns:
        return None
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e3


def pingpong(sock: socket.socket, duration: float, count: int, timeout: float) -> dict[str, object]:
    sock.settimeout(timeout)
    send, recv = sock.send, sock.recv
    clock = time.perf_counter_ns
    rtts: list[int] = []
    lost = 0
    deadline = time.perf_counter() + duration
    seq = 0
    while len(rtts) < count and time.perf_counter() < deadline:
        seq += 1
        message = request(seq, make_stamp())
        sent_at = clock()
        send(message)
        try:
            while reply_seq(recv(2048)) != seq:
                pass
        except (TimeoutError, ConnectionRefusedError):
            lost += 1
            continue
        rtts.append(clock() - sent_at)
    rtts.sort()
    return {
        "mode": "pingpong",
        "replies": len(rtts),
        "lost": lost,
        "p50_us": quantile_us(rtts, 0.50),
        "p99_us": quantile_us(rtts, 0.99),
    }


def paced(sock: socket.socket, duration: float, rate: float) -> dict[str, object]:
    send, recv = sock.send, sock.recv
    clock = time.perf_counter_ns
    period = 1e9 / rate
    stamp = make_stamp()
    sent_at: dict[int, int] = {}
    rtts: list[int] = []
    cpu_start = time.process_time()
    start = clock()
    deadline = start + int(duration * 1e9)
    seq = 0
    while True:
        now = clock()
        if now >= deadline:
            break
        if now - start >= seq * period:
            seq += 1
            sent_at[seq] = now
            send(request(seq, stamp))
        try:
            while True:
                data = recv(2048)
                sent = sent_at.pop(reply_seq(data), None)
                if sent is not None:
                    rtts.append(clock() - sent)
        except BlockingIOError:
            pass
    elapsed = (clock() - start) / 1e9
    rtts.sort()
    return {
        "mode": "paced",
        "rate": rate,
        "sent": seq,
        "sent_per_s": seq / elapsed,
        "replies": len(rtts),
        "p50_us": quantile_us(rtts, 0.50),
        "p99_us": quantile_us(rtts, 0.99),
        "cpu": (time.process_time() - cpu_start) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=["window", "rate", "pingpong", "paced"], default="window")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("--window", type=int, default=64, help="requests in flight (window)")
    parser.add_argument("--stall-ms", type=float, default=20.0, help="window refill after (ms)")
    parser.add_argument("--rate", type=float, default=100_000.0, help="requests/s (rate, paced)")
    parser.add_argument("--count", type=int, default=5000, help="round trips (pingpong)")
    parser.add_argument("--timeout", type=float, default=0.05, help="reply wait, s (pingpong)")
    parser.add_argument(
        "--no-batch", action="store_true", help="one system call per datagram (no sendmmsg)"
    )
    parser.add_argument("--protocol", choices=["text", "stamp"], default="text")
    args = parser.parse_args()
    if args.protocol == "stamp":
        use_stamp()
    sock = connect(args.host, args.port)
    io = make_io(sock, not args.no_batch)
    if args.mode == "window":
        result = windowed(sock, io, args.duration, args.window, args.stall_ms)
    elif args.mode == "rate":
        result = open_loop(sock, io, args.duration, args.rate)
    elif args.mode == "paced":
        result = paced(sock, args.duration, args.rate)
    else:
        result = pingpong(sock, args.duration, args.count, args.timeout)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
