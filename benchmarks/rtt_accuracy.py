"""How much udpbeat adds to the RTT it measures, side by side with irtt and a bare loop.

In one run, on loopback, one heartbeat every ``--interval`` (10 ms) for ``--samples`` (800):

- a bare Python client: blocking ``send``/``recv`` and ``time.perf_counter`` around them,
  against a udpbeat server;
- ``udpbeat client`` against the same server, arrival times from the kernel's receive stamps
  (``--receive-stamps kernel``) and from the clock when the reply is read (``user``);
- irtt 0.9 (Debian's ``irtt``), its client against its own server, if installed.

Each row is repeated ``--rounds`` times (interleaved) and the medians of the rounds' figures are
shown, with each figure's ratio to irtt's and to the bare loop's. Usage::

    python benchmarks/rtt_accuracy.py [--samples 800] [--interval 0.01] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BARE_CLIENT = r"""
import socket, sys, time
host, port, samples, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect((host, port))
sock.settimeout(1.0)
rtts = []
next_send = time.perf_counter()
for seq in range(1, samples + 1):
    while time.perf_counter() < next_send:
        time.sleep(max(0.0, next_send - time.perf_counter() - 0.0005))
    request = b"Heartbeat %d %.6f" % (seq, time.time())
    sent = time.perf_counter()
    sock.send(request)
    try:
        sock.recv(256)
    except socket.timeout:
        continue
    rtts.append(time.perf_counter() - sent)
    next_send += interval
print(" ".join("%.9f" % rtt for rtt in rtts))
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def udpbeat_server() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "udpbeat", "server", "--host", "127.0.0.1", "--port", "0",
         "--rate-limit", "0", "--quiet", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    port = int(json.loads(process.stdout.readline())["port"])
    return process, port


def bare(port: int, samples: int, interval: float) -> list[float]:
    command = [sys.executable, "-c", BARE_CLIENT, "127.0.0.1", str(port), str(samples)]
    output = subprocess.run(
        [*command, str(interval)], capture_output=True, text=True, timeout=600, check=True
    )
    return [float(value) for value in output.stdout.split()]


def udpbeat_client(port: int, samples: int, interval: float, stamps: str) -> list[float]:
    output = subprocess.run(
        [sys.executable, "-m", "udpbeat", "client", "127.0.0.1", "--port", str(port),
         "-c", str(samples), "-i", str(interval), "--json", "--receive-stamps", stamps],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    rtts = []
    for line in output.stdout.splitlines():
        event = json.loads(line)
        if event.get("type") == "reply" and not event.get("probe"):
            rtts.append(float(event["rtt"]))
    return rtts


def irtt(samples: int, interval: float) -> list[float]:
    port = free_port()
    server = subprocess.Popen(
        ["irtt", "server", "-b", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.3)  # irtt's server says nothing when it is ready; a bounded pause
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "irtt.json"
            duration = f"{samples * interval:.3f}s"
            subprocess.run(
                ["irtt", "client", "-i", f"{interval * 1e3:g}ms", "-d", duration, "-Q",
                 "-o", str(out), f"127.0.0.1:{port}"],
                check=True, timeout=600,
            )  # fmt: skip
            data = json.loads(out.read_text())
    finally:
        server.terminate()
        server.wait()
    return [
        trip["delay"]["rtt"] / 1e9
        for trip in data["round_trips"]
        if trip.get("lost") == "false" and "rtt" in trip.get("delay", {})
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(
        f"# python benchmarks/rtt_accuracy.py --samples {args.samples} --interval "
        f"{args.interval} --rounds {args.rounds}; {os.cpu_count()} CPUs, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    server, port = udpbeat_server()
    rows: dict[str, Callable[[], list[float]]] = {
        "bare Python blocking client -> udpbeat server": lambda: bare(
            port, args.samples, args.interval
        ),
        "udpbeat client, kernel stamps -> udpbeat server": lambda: udpbeat_client(
            port, args.samples, args.interval, "kernel"
        ),
        "udpbeat client, user stamps -> udpbeat server": lambda: udpbeat_client(
            port, args.samples, args.interval, "user"
        ),
    }
    if shutil.which("irtt"):
        rows["irtt client -> irtt server"] = lambda: irtt(args.samples, args.interval)
    else:
        print("# irtt not installed: its row is left out (Debian: apt-get install irtt)")
    figures: dict[str, list[tuple[float, float, int]]] = {name: [] for name in rows}
    try:
        for _ in range(args.rounds):
            for name, run in rows.items():
                rtts = run()
                figures[name].append((percentile(rtts, 0.5), percentile(rtts, 0.99), len(rtts)))
    finally:
        server.terminate()
        server.wait()
    p50 = {name: statistics.median(r[0] for r in runs) for name, runs in figures.items()}
    anchors = {"irtt": "irtt client -> irtt server", "bare": next(iter(rows))}
    print()
    print("| prober -> reflector | samples | RTT p50 | RTT p99 | p50 / irtt | p50 / bare |")
    print("|---|---|---|---|---|---|")
    for name, runs in figures.items():
        median_p50 = p50[name]
        median_p99 = statistics.median(r[1] for r in runs)
        samples = min(r[2] for r in runs)
        ratios = []
        for anchor in ("irtt", "bare"):
            base = p50.get(anchors[anchor])
            ratios.append("" if base is None else f"{median_p50 / base:.2f}x")
        print(
            f"| {name} | {samples} | {median_p50 * 1e6:.0f} us | {median_p99 * 1e6:.0f} us "
            f"| {ratios[0]} | {ratios[1]} |"
        )


if __name__ == "__main__":
    main()
