"""How long each reflector holds a request, seen from the wire: udpbeat's server beside irtt's.

A prober's RTT is the path both ways plus the reflector's turnaround: from the request leaving
the prober to the reply leaving the reflector, on loopback, is the reflector's wake-up and its
own work. This measures that turnaround the same way for every reflector, outside all of them:
a packet socket on ``lo`` (``AF_PACKET``, so root or ``CAP_NET_RAW``) with ``SO_TIMESTAMPNS``
sees each datagram as it is handed to the device, stamped by the kernel, with a classic BPF
filter that keeps only the reflector's port. Each reply is paired with the oldest unanswered
request from its client address and port; the turnaround is the reply's stamp minus the
request's.

Reflectors and their probers, in turn, each at one request every ``--interval`` (10 ms) for
``--samples`` (800), ``--rounds`` times interleaved (medians of the rounds' figures):

- ``udpbeat server`` (the default flags), probed by a bare Python blocking loop (the one
  ``rtt_accuracy.py`` uses): the server's kernel-stamped lone-request path, its reader waking
  ahead of each steady request (``udpbeat.cadence``);
- the same server with ``--awake-share 0`` (the reader blocks for each request), and with
  ``--busy-poll-us 0`` too (nor the trial spin of one request in eight at this pacing);
- irtt 0.9's server (Debian's ``irtt``) probed by its own client, if installed.

For each udpbeat row, the server's CPU time (user and system, start-up included) over the
seconds it ran: what waking ahead costs.

    python benchmarks/turnaround.py [--samples 800] [--interval 0.01] [--rounds 2]
    python benchmarks/turnaround.py --quick        # a few seconds, a smoke test
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

import rtt_accuracy  # the same directory: benchmarks/

SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
ETH_P_ALL = 3
PACKET_OUTGOING = 4
#: Ethernet header on ``lo`` (14 bytes), then IPv4 with its header length.
ETHERNET = 14


def port_filter(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: IPv4 UDP whose source or destination port is ``port``, whole packets."""
    return [
        (0x28, 0, 0, 12),  # ldh [12]: EtherType
        (0x15, 0, 8, 0x0800),  # IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]: IP protocol
        (0x15, 0, 6, 17),  # UDP, else drop
        (0xB1, 0, 0, ETHERNET),  # ldxb 4*([14]&0xf): IP header length
        (0x48, 0, 0, ETHERNET),  # ldh [x+14]: source port
        (0x15, 2, 0, port),
        (0x48, 0, 0, ETHERNET + 2),  # ldh [x+16]: destination port
        (0x15, 0, 1, port),
        (0x06, 0, 0, 0xFFFF),  # keep
        (0x06, 0, 0, 0),  # drop
    ]


class Capture:
    """Kernel-stamped outgoing datagrams to and from ``port`` on ``lo``, on a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        program = b"".join(struct.pack("HBBI", *op) for op in port_filter(port))
        self._program = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(self._program))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.turnarounds: list[float] = []
        self.unpaired = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        waiting: dict[tuple[bytes, int], collections.deque[float]] = {}
        while not self._stop.is_set():
            try:
                frame, ancillary, _, where = self.sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            if where[2] != PACKET_OUTGOING:  # loopback shows each datagram twice
                continue
            stamp = None
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", data[:16])
                    stamp = seconds + nanoseconds * 1e-9
            if stamp is None:
                continue
            ip = frame[ETHERNET:]
            header = (ip[0] & 0x0F) * 4
            source, destination = ip[12:16], ip[16:20]
            source_port, destination_port = struct.unpack("!HH", ip[header : header + 4])
            if destination_port == self.port:
                waiting.setdefault((source, source_port), collections.deque()).append(stamp)
            elif source_port == self.port:
                queue = waiting.get((destination, destination_port))
                if queue:
                    self.turnarounds.append(stamp - queue.popleft())
                else:
                    self.unpaired += 1

    def close(self) -> list[float]:
        time.sleep(0.05)  # the last reply's frame is already queued: let the thread read it
        self._stop.set()
        self._thread.join(5.0)
        self.sock.close()
        return self.turnarounds


#: CPU seconds each udpbeat server used, per row, and the seconds it was measured over.
CPU: dict[str, list[tuple[float, float]]] = {}


def udpbeat(flags: list[str], samples: int, interval: float) -> list[float]:
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-m", "udpbeat", "server", "--host", "127.0.0.1", "--port", "0",
         "--rate-limit", "0", "--quiet", "--json", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = int(rtt_accuracy.json.loads(server.stdout.readline())["port"])
        capture = Capture(port)
        try:
            rtt_accuracy.bare(port, samples, interval)
        finally:
            turnarounds = capture.close()
    finally:
        server.terminate()
        # Its CPU time (user and system) from the kernel's accounting as it is reaped.
        _, _, usage = os.wait4(server.pid, 0)
        server.returncode = 0
    CPU.setdefault(" ".join(flags), []).append(
        (usage.ru_utime + usage.ru_stime, time.monotonic() - started)
    )
    return turnarounds


def irtt(samples: int, interval: float) -> list[float]:
    with rtt_accuracy.irtt_server() as port:
        capture = Capture(port)
        try:
            rtt_accuracy.irtt_client(port, samples, interval)
        finally:
            turnarounds = capture.close()
    return turnarounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a few seconds (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.rounds = 30, 1
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except (PermissionError, AttributeError, OSError) as error:
        print(f"# cannot open a packet socket on lo ({error}): needs Linux and root or CAP_NET_RAW")
        return 0
    print(
        f"# python benchmarks/turnaround.py {' '.join(sys.argv[1:])}: {args.samples} requests at "
        f"{args.interval * 1e3:g} ms x {args.rounds} rounds; {os.cpu_count()} CPUs, load average "
        f"{rtt_accuracy.load()}",
        flush=True,
    )
    runners = {
        "udpbeat server": lambda: udpbeat([], args.samples, args.interval),
        "udpbeat server --awake-share 0": lambda: udpbeat(
            ["--awake-share", "0"], args.samples, args.interval
        ),
        "udpbeat server --busy-poll-us 0 --awake-share 0": lambda: udpbeat(
            ["--busy-poll-us", "0", "--awake-share", "0"], args.samples, args.interval
        ),
    }
    if shutil.which("irtt"):
        runners["irtt server (Debian's irtt 0.9)"] = lambda: irtt(args.samples, args.interval)
    else:
        print("# irtt not installed: its row is left out (Debian: apt-get install irtt)")
    figures: dict[str, list[tuple[float, float, float, int]]] = {}
    for _ in range(args.rounds):
        for name, run in runners.items():
            values = sorted(run())
            if not values:
                continue
            figures.setdefault(name, []).append(
                (
                    rtt_accuracy.percentile(values, 0.10),
                    rtt_accuracy.percentile(values, 0.50),
                    rtt_accuracy.percentile(values, 0.99),
                    len(values),
                )
            )
    print(f"# load average at the end: {rtt_accuracy.load()}\n")
    print("| reflector | requests | turnaround p10 | p50 | p99 | server CPU |")
    print("|---|---|---|---|---|---|")
    for name, rows in figures.items():
        p10, p50, p99 = (statistics.median(row[i] for row in rows) * 1e6 for i in range(3))
        count = int(statistics.median(row[3] for row in rows))
        used = CPU.get(name.removeprefix("udpbeat server").strip())
        cpu = f"{sum(c for c, _ in used) / sum(s for _, s in used):.1%}" if used else "-"
        print(f"| {name} | {count} | {p10:.0f} us | {p50:.0f} us | {p99:.0f} us | {cpu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
