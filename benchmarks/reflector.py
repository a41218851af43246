"""How fast does ``udpbeat server`` answer, next to plain-Python baselines? One run, one table.

Targets, each started fresh on a free loopback port and killed afterwards:

* ``udpbeat``  -- ``python -m udpbeat server --loss 0 --quiet``
* ``stamp``    -- the same with ``--protocol stamp`` (STAMP test packets, 44 octets); its
  replies/s are set beside the text reflector's (goal: at least 0.9x)
* ``bare``     -- ``bare_echo.py``, a blocking ``recvfrom``/``sendto`` echo loop (the ceiling)
* ``asyncio``  -- ``asyncio_echo.py``, an echo on asyncio's default ``DatagramProtocol``

For each target the load generator (``loadgen.py``, its own process) measures replies/s with a
window of requests in flight, replies/s under an open-loop fixed rate, and the round-trip time
at low load (one request at a time). Rounds interleave the targets so that noise from other work
on the machine spreads over all of them; the table shows the median of the rounds.

The server's CPU use is read from /proc during the windowed run. A server below 90% of a core
while the generator is at 95% or more means the generator, not the server, set the figure: the
table then says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
TICKS = os.sysconf("SC_CLK_TCK")

TARGETS: dict[str, list[str]] = {
    "udpbeat": [
        sys.executable, "-m", "udpbeat", "server", "--host", "{host}", "--port", "{port}",
        "--loss", "0", "--quiet", "--rate-limit", "1e7",
    ],
    "stamp": [
        sys.executable, "-m", "udpbeat", "server", "--host", "{host}", "--port", "{port}",
        "--loss", "0", "--quiet", "--rate-limit", "1e7", "--protocol", "stamp",
    ],
    "bare": [sys.executable, str(HERE / "bare_echo.py"), "{host}", "{port}"],
    "asyncio": [sys.executable, str(HERE / "asyncio_echo.py"), "{host}", "{port}"],
}  # fmt: skip
LABELS = {
    "udpbeat": "udpbeat server",
    "stamp": "udpbeat server --protocol stamp",
    "bare": "bare blocking echo",
    "asyncio": "asyncio DatagramProtocol echo",
}


@dataclass
class Figures:
    window: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    cpu_per_reply: list[float] = field(default_factory=list)
    generator_cpu: list[float] = field(default_factory=list)
    open_loop: list[float] = field(default_factory=list)
    open_loop_sent: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    generator_capped: int = 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


#: Targets that speak STAMP rather than the text format (the generator is told so).
STAMP_TARGETS = {"stamp"}
#: A STAMP Session-Sender packet: sequence number 0, a zero timestamp, 44 octets.
STAMP_PROBE = bytes(12) + b"\x00\x01" + bytes(30)


def wait_until_answering(port: int, timeout: float = 10.0, probe: bytes | None = None) -> None:
    """Heartbeats until one is answered (several: an ``--extra`` target may drop some)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.05)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                sock.sendto(probe or b"Heartbeat 0 %.6f" % time.time(), (HOST, port))
                sock.recvfrom(2048)
                return
    raise RuntimeError(f"no reply on port {port} within {timeout}s")


@contextlib.contextmanager
def running(
    argv: list[str], probe: bytes | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    command = [part.format(host=HOST, port=port) for part in argv]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
        )
        try:
            try:
                wait_until_answering(port, probe=probe)
            except RuntimeError:
                errors.seek(0)
                raise RuntimeError(
                    f"{shlex.join(command)} did not answer: {errors.read().decode()[-2000:]}"
                ) from None
            yield process, port
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def loadgen(port: int, *options: str) -> dict[str, float]:
    command = [sys.executable, str(HERE / "loadgen.py"), HOST, str(port), *options]
    output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, float] = json.loads(output.stdout)
    return result


def measure(name: str, argv: list[str], args: argparse.Namespace, figures: Figures) -> None:
    batch = ["--no-batch"] if args.no_batch else []
    stamp = name in STAMP_TARGETS
    if stamp:
        batch += ["--protocol", "stamp"]
    with running(argv, STAMP_PROBE if stamp else None) as (process, port):
        duration = str(args.duration)
        cpu_before, clock_before = cpu_seconds(process.pid), time.monotonic()
        window = loadgen(port, "--mode", "window", "--window", str(args.window), "--duration",
                         duration, *batch)  # fmt: skip
        server_cpu = (cpu_seconds(process.pid) - cpu_before) / (time.monotonic() - clock_before)
        figures.window.append(window["replies_per_s"])
        figures.server_cpu.append(server_cpu)
        figures.cpu_per_reply.append(
            (cpu_seconds(process.pid) - cpu_before) * 1e6 / max(window["replies"], 1)
        )
        figures.generator_cpu.append(window["cpu"])
        if window["cpu"] >= 0.95 and server_cpu < 0.90:
            figures.generator_capped += 1
        rate = loadgen(port, "--mode", "rate", "--rate", str(args.rate), "--duration", duration,
                       *batch)  # fmt: skip
        figures.open_loop.append(rate["replies_per_s"])
        figures.open_loop_sent.append(rate["sent_per_s"])
        ping = loadgen(port, "--mode", "pingpong", "--count", str(args.pings), "--duration",
                       duration, *(["--protocol", "stamp"] if stamp else []))  # fmt: skip
        if ping["p50_us"] is not None:
            figures.p50.append(ping["p50_us"])
            figures.p99.append(ping["p99_us"])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, Figures], args: argparse.Namespace) -> list[str]:
    lines = [
        f"{'target':<31}{'window':>10}{'srv cpu':>9}{'cpu/rep':>9}{'gen cpu':>9}"
        f"{'open-loop':>11}{'RTT p50':>9}{'RTT p99':>9}",
        f"{'':<31}{'replies/s':>10}{'':>9}{'us':>9}{'':>9}{'replies/s':>11}{'us':>9}{'us':>9}",
    ]
    for name, fig in results.items():
        lines.append(
            f"{LABELS.get(name, name):<31}{median(fig.window):>10,.0f}"
            f"{median(fig.server_cpu):>9.0%}{median(fig.cpu_per_reply):>9.2f}"
            f"{median(fig.generator_cpu):>9.0%}"
            f"{median(fig.open_loop):>11,.0f}{median(fig.p50):>9.1f}{median(fig.p99):>9.1f}"
        )
    lines.append("")
    if "udpbeat" in results and "stamp" in results:
        ratio = median(results["stamp"].window) / median(results["udpbeat"].window)
        verdict = "met" if ratio >= 0.9 else "NOT met"
        lines.append(f"replies/s stamp/text        {ratio:6.2f}x  goal >= 0.9: {verdict}")
    udpbeat = results.get("udpbeat")
    goals = {"bare": 0.9, "asyncio": 5.0}
    if udpbeat is not None:
        for other, goal in goals.items():
            if other in results:
                ratio = median(udpbeat.window) / median(results[other].window)
                verdict = "met" if ratio >= goal else "NOT met"
                lines.append(
                    f"replies/s udpbeat/{other:<9} {ratio:6.2f}x  goal >= {goal:g}: {verdict}"
                )
        if "bare" in results:
            ratio = median(udpbeat.p50) / median(results["bare"].p50)
            verdict = "met" if ratio <= 1.1 else "NOT met"
            lines.append(f"RTT p50 udpbeat/bare ping-pong {ratio:6.2f}x  goal <= 1.1: {verdict}")
    for name, fig in results.items():
        if fig.generator_capped:
            lines.append(
                f"WARNING: {name}: the generator was saturated (>= 95% CPU) while the server was "
                f"below 90% in {fig.generator_capped} of {len(fig.window)} rounds: its window "
                "figure is a lower bound set by the generator"
            )
        sent = median(fig.open_loop_sent)
        if sent < 0.97 * args.rate:
            lines.append(
                f"WARNING: {name}: the open-loop generator sent only {sent:,.0f}/s of the "
                f"{args.rate:,.0f}/s asked (generator saturated)"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all targets")
    parser.add_argument("--window", type=int, default=64, help="requests in flight")
    parser.add_argument("--rate", type=float, default=60_000, help="open-loop requests/s")
    parser.add_argument("--pings", type=int, default=3000, help="low-load round trips")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another target; {host} and {port} in COMMAND are filled in",
    )
    parser.add_argument("--no-batch", action="store_true", help="generator without sendmmsg")
    args = parser.parse_args()
    targets = {name: TARGETS[name] for name in args.targets.split(",") if name}
    for extra in args.extra:
        name, _, command = extra.partition("=")
        targets[name] = shlex.split(command)

    print(
        "$ python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__), *sys.argv[1:]])
    )
    print(
        f"# {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, loopback {HOST}; {args.rounds} rounds x "
        f"{args.duration}s per measurement; window {args.window}, open loop {args.rate:,.0f}/s; "
        f"generator {'plain send' if args.no_batch else 'sendmmsg/recvmmsg batches'}"
    )
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    results = {name: Figures() for name in targets}
    interrupted = False
    try:
        for round_number in range(args.rounds):
            for name, argv in targets.items():
                measure(name, argv, args, results[name])
            print(f"# round {round_number + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("# interrupted: partial results (nan: not measured)", file=sys.stderr)
        interrupted = True
    print("\n".join(report(results, args)))
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
