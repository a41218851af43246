"""How much later than the clock read before ``send`` does the kernel stamp a datagram leaving,
and what does reading that stamp cost? (Linux ``SOF_TIMESTAMPING_TX_SOFTWARE``.)

A blocking loop on loopback against a udpbeat server, one heartbeat every ``--interval``: the
monotonic clock is read, the heartbeat sent, the reply read with its kernel receive stamp, then
the send stamp taken off the error queue (timed). Both stamps are brought onto the monotonic
clock with the offset measured right before the send. Printed: how many sends got a stamp, the
stamp's lateness against the reading (p10/p50/p90), the cost of reading it, and the RTT's p50
from each start. Usage::

    python benchmarks/send_stamps.py [--samples 500] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import time

from rtt_accuracy import udpbeat_server  # the same directory: benchmarks/

SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
#: TX_SOFTWARE | SOFTWARE | OPT_ID | OPT_TSONLY, as udpbeat's client asks for them.
SEND_STAMP_FLAGS = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 11)
TIMESPEC = struct.Struct("=qq")


def clock_offset() -> float:
    """Wall time minus monotonic time, from the closest of three paired readings."""
    best_gap, offset = float("inf"), 0.0
    for _ in range(3):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        if after - before < best_gap:
            best_gap, offset = after - before, wall - (before + after) / 2
    return offset


def stamp_of(ancillary: list[tuple[int, int, bytes]], kind: int) -> float | None:
    for level, found, data in ancillary:
        if level == socket.SOL_SOCKET and found == kind and len(data) >= TIMESPEC.size:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            return float(seconds) + float(nanoseconds) * 1e-9
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("send stamps are Linux's")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# python benchmarks/send_stamps.py {' '.join(sys.argv[1:])}; load average {load}")
    server, port = udpbeat_server()
    lateness, costs, rtt_from_reading, rtt_from_stamp = [], [], [], []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, SEND_STAMP_FLAGS)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.settimeout(1.0)
            sock.connect(("127.0.0.1", port))
            for seq in range(args.samples):
                time.sleep(args.interval)
                request = b"Heartbeat %d %.6f" % (seq, time.time())
                offset = clock_offset()
                reading = time.monotonic()
                sock.send(request)
                try:
                    _, ancillary, _, _ = sock.recvmsg(256, 256)
                except TimeoutError:
                    continue
                received = stamp_of(ancillary, SO_TIMESTAMPNS)
                began = time.perf_counter()
                try:
                    _, queued, _, _ = sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
                except BlockingIOError:
                    queued = []
                costs.append(time.perf_counter() - began)
                left = stamp_of(queued, SO_TIMESTAMPING)
                if left is None or received is None:
                    continue
                lateness.append(left - offset - reading)
                rtt_from_reading.append(received - offset - reading)
                rtt_from_stamp.append(received - left)
    finally:
        server.terminate()
        server.wait()
    if len(lateness) < 10:
        sys.exit(f"only {len(lateness)} send stamps of {args.samples} sends: none here?")
    deciles = statistics.quantiles(lateness, n=10)
    print(f"send stamps: {len(lateness)} of {args.samples} sends")
    print(
        f"stamp after the reading before send(): p10 {deciles[0] * 1e6:.1f} us, "
        f"p50 {statistics.median(lateness) * 1e6:.1f} us, p90 {deciles[-1] * 1e6:.1f} us"
    )
    print(f"reading it off the error queue: p50 {statistics.median(costs) * 1e6:.1f} us of CPU")
    print(
        f"RTT p50 from the reading: {statistics.median(rtt_from_reading) * 1e6:.0f} us; "
        f"from the send stamp: {statistics.median(rtt_from_stamp) * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
