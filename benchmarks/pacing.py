"""How evenly each prober sends its heartbeats, and how many a reflector could be awake for.

A reflector that wakes ahead of each request (``udpbeat server``'s ``--awake-share``,
``udpbeat.cadence``) catches only requests that come when foreseen: a prober whose sends wander
by a millisecond gets no window within the share. Here a plain receiver (Python, answering each
heartbeat at once, as a reflector would) takes each request's kernel receive stamp
(``SO_TIMESTAMPNS``) from each prober in turn, at one heartbeat every ``--interval`` (10 ms)
for ``--samples`` (600), ``--rounds`` times (medians):

- ``udpbeat client`` as shipped: its event loop waits with ``select(2)`` (microsecond
  timeouts);
- the same client on asyncio's default loop (``epoll_wait``, whose timeout is whole
  milliseconds), as it ran before: the same command with ``udpbeat._net``'s limit for
  ``select`` set to 0 sockets;
- the bare Python blocking loop of ``rtt_accuracy.py`` (sleeps, then spins the last 0.5 ms).

Printed per prober: the gaps between arrivals (p10, p50, p90, p99) and, replaying the stamps
through :class:`udpbeat.cadence.Cadence` at the server's default share, the share of requests
a window was offered for and the share that came inside one: an upper bound on what a server
catches, whose reader must also end its sleep before the window opens
(``benchmarks/turnaround.py`` and the server's ``caught_awake`` counter say what it did).
irtt's client is not among them: it opens each session with a handshake that only its own
server answers. Usage::

    python benchmarks/pacing.py [--samples 600] [--interval 0.01] [--rounds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import rtt_accuracy  # the same directory: benchmarks/

from udpbeat.cadence import Cadence

SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("=qq")
#: ``udpbeat client`` on asyncio's default loop: ``select`` is used for no socket count.
EPOLL_CLIENT = (
    "import sys; from udpbeat import _net; _net.PRECISE_WAIT_MAX_SOCKETS = 0; "
    "from udpbeat.cli import main; sys.exit(main())"
)


@contextlib.contextmanager
def receiver() -> Iterator[tuple[int, list[float]]]:
    """A socket that answers every datagram and keeps each one's kernel receive stamp."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(0.2)
    stamps: list[float] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, ancillary, _, source = sock.recvmsg(512, 64)
            except TimeoutError:
                continue
            # Text heartbeats get the text reply's shape; anything else (irtt) its own bytes.
            reply = b"Seq: 1, Time Difference: 0.000001 seconds"
            sock.sendto(reply if data.startswith(b"Heartbeat") else data, source)
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = TIMESPEC.unpack(value[: TIMESPEC.size])
                    stamps.append(seconds + nanoseconds * 1e-9)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], stamps
    finally:
        stop.set()
        thread.join(5.0)
        sock.close()


def udpbeat_client(command: list[str]) -> Callable[[int, int, float], None]:
    def run(port: int, samples: int, interval: float) -> None:
        subprocess.run(
            [*command, "client", "127.0.0.1", "--port", str(port), "-c", str(samples),
             "-i", str(interval), "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False,
        )  # fmt: skip

    return run


def evaluate(stamps: list[float]) -> tuple[list[float], float, float]:
    """Gap percentiles (p10, p50, p90, p99) and the shares offered and caught by a window."""
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
    cadence = Cadence()
    offered = caught = 0
    for at in stamps:
        window = cadence.window()
        if window is not None:
            offered += 1
            caught += window[0] <= at <= window[1]
        cadence.arrived(at)
    figures = [rtt_accuracy.percentile(gaps, q) for q in (0.10, 0.50, 0.90, 0.99)]
    count = max(len(stamps), 1)
    return figures, offered / count, caught / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(
        f"# python benchmarks/pacing.py {' '.join(sys.argv[1:])}: {args.samples} heartbeats at "
        f"{args.interval * 1e3:g} ms x {args.rounds} rounds; {os.cpu_count()} CPUs, load "
        f"average {rtt_accuracy.load()}",
        flush=True,
    )
    probers: dict[str, Callable[[int, int, float], object]] = {
        "udpbeat client (select loop)": udpbeat_client([sys.executable, "-m", "udpbeat"]),
        "udpbeat client on asyncio's default loop (epoll, before)": udpbeat_client(
            [sys.executable, "-c", EPOLL_CLIENT]
        ),
        "bare Python blocking loop": rtt_accuracy.bare,
    }
    rows: dict[str, list[tuple[list[float], float, float]]] = {}
    for _ in range(args.rounds):
        for name, run in probers.items():
            with receiver() as (port, stamps):
                run(port, args.samples, args.interval)
            rows.setdefault(name, []).append(evaluate(stamps))
    print(f"# load average at the end: {rtt_accuracy.load()}\n")
    print("| prober | gap p10 | p50 | p90 | p99 | window offered | caught in one |")
    print("|---|---|---|---|---|---|---|")
    for name, results in rows.items():
        gaps = [statistics.median(r[0][i] for r in results) * 1e3 for i in range(4)]
        offered = statistics.median(r[1] for r in results)
        caught = statistics.median(r[2] for r in results)
        print(
            f"| {name} | {gaps[0]:.3f} ms | {gaps[1]:.3f} ms | {gaps[2]:.3f} ms "
            f"| {gaps[3]:.3f} ms | {offered:.0%} | {caught:.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
