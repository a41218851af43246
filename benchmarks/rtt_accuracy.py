"""How much udpbeat adds to the RTT it measures, side by side with irtt and a bare loop.

In one run, on loopback, one heartbeat every ``--interval`` (10 ms) for ``--samples`` (800):

- a bare Python client: blocking ``send``/``recv`` and ``time.perf_counter`` around them,
  against a udpbeat server;
- ``udpbeat client`` against the same server, arrival times from the kernel's receive stamps
  (``--receive-stamps kernel``) and from the clock when the reply is read (``user``); and with
  kernel stamps against a second server started with ``--awake-share 0``, whose reader always
  blocks for a request rather than wake ahead of steady ones (``udpbeat.cadence``);
- ``udpbeat client --protocol stamp`` against ``udpbeat server --protocol stamp``: its whole
  RTT (``rtt_ms``), and from the same replies RFC 8762's round-trip delay
  ``(T4 - T1) - (T3 - T2)`` (``round_trip_delay_ms``), the RTT less the reflector's time, as
  irtt reports its RTT. Both come from the client's JSON summary (its percentiles; the other
  rows' from the samples): replies carry no reflector time one by one;
- irtt 0.9 (Debian's ``irtt``), its client against its own server, if installed. irtt's RTT
  is the client's receive time minus its send time *minus the server's processing time* (its
  server stamps both ends and says so in each reply); the row below it adds that time back, from
  the same run, for an RTT measured as udpbeat and the bare loop measure theirs. irtt stamps in
  user space (``time.Now()`` after its read returns, before its write), so its processing time
  leaves its server's wake-up in the RTT; udpbeat's reflector stamps T2 in the kernel, so its
  round-trip delay leaves the wake-up out. The like-for-like row is the round-trip delay with a
  second STAMP reflector started with ``--receive-stamps user`` (T2 read when its reader has the
  request, as irtt's server reads its clock).

Each of these rows is repeated ``--rounds`` times (interleaved) and the medians of the rounds'
figures are shown, with each figure's ratio to irtt's (reported, net of its server's time), to
the bare loop's and to irtt's whole round trip. The udpbeat
client writes its JSON lines to a file as it goes (stdout on a file, as irtt's ``-o``), so that
no reader process of this script's wakes during the measurement.

Then ``udpbeat monitor`` (kernel receive stamps) at ``--monitor-targets`` sizes (1, 1,000 and
10,000): one udpbeat reflector bound to 0.0.0.0 answers targets 127.1.x.y (one loopback address
per target, as ``monitor_scale.py``), interval ``--monitor-interval`` (1 s), and once every
target is UP and ``--settle`` seconds passed, the figures come after ``--measure`` seconds from
``/api/targets``: RTT p50 is the median over targets of each target's p50 (its last 128
replies), p99 the median of their p99s; the ratio is to the monitor's own p50 at its smallest
size. Usage::

    python benchmarks/rtt_accuracy.py [--samples 800] [--interval 0.01] [--rounds 2]
        [--monitor-targets 1,1000,10000] [--measure 20]
    python benchmarks/rtt_accuracy.py --quick      # a few seconds: tiny sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import monitor_scale  # the same directory: benchmarks/

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


def udpbeat_server(
    protocol: str = "text", receive_stamps: str = "kernel", *flags: str
) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "udpbeat", "server", "--host", "127.0.0.1", "--port", "0",
         "--protocol", protocol, "--receive-stamps", receive_stamps, "--rate-limit", "0",
         "--quiet", "--json", *flags],
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
    with tempfile.TemporaryFile("w+") as out:
        subprocess.run(
            [sys.executable, "-m", "udpbeat", "client", "127.0.0.1", "--port", str(port),
             "-c", str(samples), "-i", str(interval), "--json", "--receive-stamps", stamps],
            stdout=out, stderr=subprocess.DEVNULL, timeout=600, check=False,
        )  # fmt: skip
        out.seek(0)
        lines = out.read().splitlines()
    rtts = []
    for line in lines:
        event = json.loads(line)
        if event.get("type") == "reply" and not event.get("probe"):
            rtts.append(float(event["rtt"]))
    return rtts


Figures = tuple[float, float, int]  # RTT p50, p99 (seconds), samples
Runner = Callable[[], list[tuple[str, Figures]]]  # one measurement: its rows' names and figures


def of_samples(rtts: list[float]) -> Figures:
    return percentile(rtts, 0.5), percentile(rtts, 0.99), len(rtts)


def udpbeat_stamp_client(port: int, samples: int, interval: float) -> tuple[Figures, Figures]:
    """The STAMP client's whole RTT and its round-trip delay (the RTT less the reflector's
    time), from its JSON summary."""
    with tempfile.TemporaryFile("w+") as out:
        subprocess.run(
            [sys.executable, "-m", "udpbeat", "client", "127.0.0.1", "--port", str(port),
             "--protocol", "stamp", "-c", str(samples), "-i", str(interval), "--json", "-q",
             "--receive-stamps", "kernel"],
            stdout=out, stderr=subprocess.DEVNULL, timeout=600, check=False,
        )  # fmt: skip
        out.seek(0)
        summary = json.loads(out.read().splitlines()[-1])

    def figures(key: str) -> Figures:
        ms = summary[key]
        return ms["p50"] / 1e3, ms["p99"] / 1e3, int(ms["count"])

    return figures("rtt_ms"), figures("round_trip_delay_ms")


@contextlib.contextmanager
def irtt_server() -> Iterator[int]:
    """An irtt server on a free loopback port, for the block's length; yields the port."""
    port = free_port()
    server = subprocess.Popen(
        ["irtt", "server", "-b", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.3)  # irtt's server says nothing when it is ready; a bounded pause
        yield port
    finally:
        server.terminate()
        server.wait()


def irtt_client(port: int, samples: int, interval: float) -> Any:
    """irtt's client for ``samples`` round trips at ``interval``: its JSON output, parsed."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "irtt.json"
        duration = f"{samples * interval:.3f}s"
        subprocess.run(
            ["irtt", "client", "-i", f"{interval * 1e3:g}ms", "-d", duration, "-Q",
             "-o", str(out), f"127.0.0.1:{port}"],
            check=True, timeout=600,
        )  # fmt: skip
        return json.loads(out.read_text())


def irtt(samples: int, interval: float) -> tuple[list[float], list[float]]:
    """irtt's RTTs (server processing subtracted, as irtt reports them) and the same round trips
    with the server's processing time added back."""
    with irtt_server() as port:
        data = irtt_client(port, samples, interval)
    reported, whole = [], []
    for trip in data["round_trips"]:
        if trip.get("lost") != "false" or "rtt" not in trip.get("delay", {}):
            continue
        reported.append(trip["delay"]["rtt"] / 1e9)
        client = trip["timestamps"]["client"]
        whole.append((client["receive"]["monotonic"] - client["send"]["monotonic"]) / 1e9)
    return reported, whole


def monitor_rtts(count: int, port: int, work: Path, args: argparse.Namespace) -> list[float]:
    """``udpbeat monitor`` against ``count`` loopback targets: its RTT p50 and p99 (medians over
    targets of each target's own), and the number of targets with RTTs."""
    config = work / f"monitor-{count}.toml"
    monitor_scale.write_config(config, count, port, "adaptive")
    text = config.read_text().replace("interval = 1.0", f"interval = {args.monitor_interval}")
    config.write_text(text)
    stderr_path = work / f"monitor-{count}.err"
    with (
        stderr_path.open("w") as stderr,
        monitor_scale.started(
            [sys.executable, "-m", "udpbeat", "monitor", "--config", str(config),
             "--listen", "127.0.0.1:0", "--view", "plain"],
            stdout=subprocess.DEVNULL, stderr=stderr,
        ) as monitor,
    ):  # fmt: skip
        url = monitor_scale.monitor_url(monitor, stderr_path)
        monitor_scale.wait_until(
            f"all {count} targets UP",
            lambda: monitor_scale.get_json(f"{url}/api/monitor")["states"]["UP"] == count,
        )
        time.sleep(args.settle + args.measure)
        targets = monitor_scale.get_json(f"{url}/api/targets")["targets"]
    rtts = [t["rtt_ms"] for t in targets if t["rtt_ms"]["p50"] is not None]
    if not rtts:
        return [math.nan, math.nan, 0.0]
    return [
        statistics.median(r["p50"] for r in rtts) / 1e3,
        statistics.median(r["p99"] for r in rtts) / 1e3,
        float(len(rtts)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--monitor-targets", default="1,1000,10000", help="sizes, comma-separated ('' for none)"
    )
    parser.add_argument("--monitor-interval", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after all are UP")
    parser.add_argument("--measure", type=float, default=20.0, help="seconds, then the figures")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, a few seconds (a smoke test)"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.rounds, args.monitor_targets = 30, 1, "1,20"
        args.settle, args.measure = 0.2, 0.5
    sizes = [int(size) for size in args.monitor_targets.split(",") if size.strip()]
    command = " ".join(["python benchmarks/rtt_accuracy.py", *sys.argv[1:]])
    print(
        f"# {command}: {args.samples} samples at {args.interval * 1e3:g} ms x {args.rounds} "
        f"rounds; monitor at {args.monitor_targets or 'no'} targets, interval "
        f"{args.monitor_interval:g} s, {args.measure:g} s measured; {os.cpu_count()} CPUs, "
        f"load average {load()}",
        flush=True,
    )
    server, port = udpbeat_server()
    # The same server always blocking for a request (it wakes ahead of steady ones by default).
    blocking_server, blocking_port = udpbeat_server("text", "kernel", "--awake-share", "0")
    stamp_server, stamp_port = udpbeat_server("stamp")
    user_stamp_server, user_stamp_port = udpbeat_server("stamp", "user")

    def single(name: str, rtts: Callable[[], list[float]]) -> Runner:
        return lambda: [(name, of_samples(rtts()))]

    # Each runner is one measurement giving one row or two (from the same round trips).
    runners: list[Runner] = [
        single(BARE, lambda: bare(port, args.samples, args.interval)),
        single(
            "udpbeat client, kernel stamps -> udpbeat server",
            lambda: udpbeat_client(port, args.samples, args.interval, "kernel"),
        ),
        single(
            BLOCKING,
            lambda: udpbeat_client(blocking_port, args.samples, args.interval, "kernel"),
        ),
        single(
            "udpbeat client, user stamps -> udpbeat server",
            lambda: udpbeat_client(port, args.samples, args.interval, "user"),
        ),
    ]

    def run_stamp() -> list[tuple[str, Figures]]:
        whole, net = udpbeat_stamp_client(stamp_port, args.samples, args.interval)
        return [(STAMP_WHOLE, whole), (STAMP_NET, net)]

    def run_stamp_user_t2() -> list[tuple[str, Figures]]:
        _, net = udpbeat_stamp_client(user_stamp_port, args.samples, args.interval)
        return [(STAMP_NET_USER, net)]

    runners += [run_stamp, run_stamp_user_t2]
    if shutil.which("irtt"):

        def run_irtt() -> list[tuple[str, Figures]]:
            reported, whole = irtt(args.samples, args.interval)
            return [(IRTT, of_samples(reported)), (IRTT_WHOLE, of_samples(whole))]

        runners.append(run_irtt)
    else:
        print("# irtt not installed: its rows are left out (Debian: apt-get install irtt)")
    figures: dict[str, list[Figures]] = {}
    try:
        for _ in range(args.rounds):
            for run in runners:
                for name, row in run():
                    figures.setdefault(name, []).append(row)
    finally:
        for process in (server, blocking_server, stamp_server, user_stamp_server):
            process.terminate()
            process.wait()
    monitor_rows: dict[int, list[float]] = {}
    if sizes:
        print(f"# the client rows are done (load average {load()}); the monitor's", flush=True)
        reflector_port = monitor_scale.free_port()
        reflector = monitor_scale.start_reflector(reflector_port)
        try:
            with tempfile.TemporaryDirectory() as folder:
                for size in sizes:
                    monitor_rows[size] = monitor_rtts(size, reflector_port, Path(folder), args)
        finally:
            monitor_scale.stop(reflector)
    print_table(figures, monitor_rows, args)
    print(f"# load average at the end: {load()}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(
    figures: dict[str, list[Figures]],
    monitor_rows: dict[int, list[float]],
    args: argparse.Namespace,
) -> None:
    p50 = {name: statistics.median(r[0] for r in runs) for name, runs in figures.items()}
    print()
    print(
        "| prober -> reflector | samples | RTT p50 | RTT p99 | p50 / irtt | p50 / bare "
        "| p50 / irtt whole |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, runs in figures.items():
        median_p50 = p50[name]
        median_p99 = statistics.median(r[1] for r in runs)
        samples = min(r[2] for r in runs)
        ratios = []
        for anchor in (IRTT, BARE, IRTT_WHOLE):
            base = p50.get(anchor)
            ratios.append("" if base is None else f"{median_p50 / base:.2f}x")
        print(
            f"| {name} | {samples} | {median_p50 * 1e6:.0f} us | {median_p99 * 1e6:.0f} us "
            f"| {' | '.join(ratios)} |"
        )
    if not monitor_rows:
        return
    smallest = min(monitor_rows)
    base = monitor_rows[smallest][0]
    print()
    print(
        f"| udpbeat monitor, kernel stamps, interval {args.monitor_interval:g} s | targets with "
        f"RTTs | RTT p50 | RTT p99 | p50 / at {smallest} |"
    )
    print("|---|---|---|---|---|")
    for size, (median_p50, median_p99, measured) in monitor_rows.items():
        print(
            f"| {size:,} targets | {measured:,.0f} | {median_p50 * 1e6:.0f} us "
            f"| {median_p99 * 1e6:.0f} us | {median_p50 / base:.2f}x |"
        )


BARE = "bare Python blocking client -> udpbeat server"
BLOCKING = "udpbeat client, kernel stamps -> udpbeat server --awake-share 0"
IRTT = "irtt client -> irtt server"
IRTT_WHOLE = "irtt, the same round trips with its server's processing time added back"
STAMP_WHOLE = "udpbeat client --protocol stamp -> udpbeat server --protocol stamp"
STAMP_NET = "udpbeat STAMP, the same round trips less the reflector's time (T3 - T2)"
STAMP_NET_USER = (
    "udpbeat STAMP, reflector taking T2 in user space as irtt's server does, less T3 - T2"
)

if __name__ == "__main__":
    main()
