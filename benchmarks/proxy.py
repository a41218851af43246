"""What does ``udpbeat proxy`` cost? The direct path and the path through it, in one run.

The upstream is ``bare_echo.py`` (a blocking ``recvfrom``/``sendto`` echo, the fastest plain
Python one), on a free loopback port. Paths, each measured by ``loadgen.py`` in its own process:

* ``direct``  -- the load generator to the echo;
* ``proxy``   -- through ``udpbeat proxy`` with no impairment;
* ``delay``   -- through ``udpbeat proxy --up-delay 1ms``: a timer on every datagram.

For each path: the round trip at low load (one request at a time: p50, p99), datagrams relayed
a second with ``--window`` requests in flight (each reply is one datagram relayed each way), the
replies a second when ``--rate`` requests a second are offered, and the proxy's CPU during the
windowed run. Rounds interleave the paths so that noise from other work on the machine spreads
over all of them; the table shows medians over rounds, and the added round trip is the median
of each round's difference (proxy less direct).

The anchors below the table are the goals: the proxy adds at most 50 us to the round trip's
p50, and relays at least 50,000 datagrams a second each way: the open-loop figure, the rate it
keeps up with when more is offered. The windowed figure is a closed loop: with three processes
on the path instead of two, each round trip waits for four wake-ups instead of two, so on a
small machine it measures scheduling more than the relay's capacity; it is shown, not judged.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from reflector import cpu_seconds, loadgen, median, running

HERE = Path(__file__).resolve().parent
ADDED_P50_GOAL_US = 50.0
RELAYED_GOAL = 50_000.0
DELAY = 0.001


@dataclass
class Figures:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    open_loop: list[float] = field(default_factory=list)
    proxy_cpu: list[float] = field(default_factory=list)
    cpu_per_datagram: list[float] = field(default_factory=list)


PATHS = {
    "direct": ("direct to the echo", []),
    "proxy": ("through udpbeat proxy", []),
    "delay": ("through udpbeat proxy, up 1 ms", ["--up-delay", "1ms"]),
}


def proxy_argv(echo_port: int, flags: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "udpbeat", "proxy", "--listen", "{host}:{port}",
        "--upstream", f"127.0.0.1:{echo_port}", *flags,
    ]  # fmt: skip


def measure(port: int, pid: int | None, args: argparse.Namespace, figures: Figures) -> None:
    duration = str(args.duration)
    ping = loadgen(port, "--mode", "pingpong", "--count", str(args.pings), "--duration", "10")
    figures.p50.append(ping["p50_us"])
    figures.p99.append(ping["p99_us"])
    cpu_before, clock_before = (cpu_seconds(pid), time.monotonic()) if pid else (0.0, 0.0)
    window = loadgen(port, "--mode", "window", "--window", str(args.window), "--duration",
                     duration)  # fmt: skip
    figures.window.append(window["replies_per_s"])
    if pid:
        used = cpu_seconds(pid) - cpu_before
        figures.proxy_cpu.append(used / (time.monotonic() - clock_before))
        # Each reply is two datagrams through the proxy: one up, one down.
        figures.cpu_per_datagram.append(used * 1e6 / max(2 * window["replies"], 1))
    rate = loadgen(port, "--mode", "rate", "--rate", str(args.rate), "--duration", duration)
    figures.open_loop.append(rate["replies_per_s"])


def report(results: dict[str, Figures], args: argparse.Namespace) -> list[str]:
    lines = [
        f"{'path':<34}{'RTT p50':>9}{'RTT p99':>9}{'window':>11}{'open loop':>11}"
        f"{'proxy':>7}{'cpu per':>9}",
        f"{'':<34}{'us':>9}{'us':>9}{'per s':>11}{'per s':>11}{'cpu':>7}{'dgram us':>9}",
    ]
    for name, fig in results.items():
        cpu = f"{median(fig.proxy_cpu):>7.0%}" if fig.proxy_cpu else f"{'-':>7}"
        per = f"{median(fig.cpu_per_datagram):>9.2f}" if fig.cpu_per_datagram else f"{'-':>9}"
        lines.append(
            f"{PATHS[name][0]:<34}{median(fig.p50):>9.1f}{median(fig.p99):>9.1f}"
            f"{median(fig.window):>11,.0f}{median(fig.open_loop):>11,.0f}{cpu}{per}"
        )
    lines.append("")
    direct, proxy, delay = results["direct"], results["proxy"], results["delay"]
    added = statistics.median(p - d for p, d in zip(proxy.p50, direct.p50, strict=True))
    verdict = "met" if added <= ADDED_P50_GOAL_US else "NOT met"
    lines.append(
        f"added RTT p50, proxy - direct (median of {len(proxy.p50)} rounds) "
        f"{added:8.1f} us    goal <= {ADDED_P50_GOAL_US:g} us: {verdict}"
    )
    relayed = median(proxy.open_loop)
    verdict = "met" if relayed >= RELAYED_GOAL else "NOT met"
    lines.append(
        f"relayed each way, {args.rate:,.0f}/s offered {relayed:>21,.0f} /s    "
        f"goal >= {RELAYED_GOAL:,.0f}/s: {verdict} (direct {median(direct.open_loop):,.0f}/s)"
    )
    lines.append(
        f"relayed each way, window of {args.window:<3} {median(proxy.window):>22,.0f} /s    "
        f"(direct {median(direct.window):,.0f}/s; a closed loop, not judged)"
    )
    late = statistics.median(
        p - d - DELAY * 1e6 for p, d in zip(delay.p50, direct.p50, strict=True)
    )
    lines.append(
        f"with --up-delay 1ms: RTT p50 - direct - 1000 us {late:>15.1f} us    "
        "(the timer's share of what the proxy adds)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all paths")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--pings", type=int, default=2000, help="low-load round trips")
    parser.add_argument("--window", type=int, default=64, help="requests in flight")
    parser.add_argument("--rate", type=float, default=60_000, help="open-loop requests/s")
    args = parser.parse_args()
    print("$ python " + shlex.join([os.path.relpath(__file__), *sys.argv[1:]]))
    print(
        f"# {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, loopback 127.0.0.1; {args.rounds} rounds; "
        f"{args.pings} round trips, then {args.duration}s with a window of {args.window}, "
        f"then {args.duration}s at {args.rate:,.0f}/s; upstream bare_echo.py"
    )
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    results = {name: Figures() for name in PATHS}
    echo_argv = [sys.executable, str(HERE / "bare_echo.py"), "{host}", "{port}"]
    with running(echo_argv) as (_, echo_port):
        for round_number in range(args.rounds):
            for name, (_, flags) in PATHS.items():
                if name == "direct":
                    measure(echo_port, None, args, results[name])
                    continue
                with running(proxy_argv(echo_port, flags)) as (process, port):
                    measure(port, process.pid, args, results[name])
            print(f"# round {round_number + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print("\n".join(report(results, args)))
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
