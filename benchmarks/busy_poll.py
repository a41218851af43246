"""What does the server's busy-poll cost, and what does it buy? Lone requests at steady rates.

For each rate, ``udpbeat server`` is started twice on a free loopback port, with its default
busy-poll and with ``--busy-poll-us 0`` (never spin), and the load generator sends one
request every ``1/rate`` seconds from its own process (``loadgen.py --mode paced``). The table
gives the server's CPU (share of one core, from /proc) and the round-trip p50/p99 at each rate.
Rounds interleave the variants; the table shows the median of the rounds.

The generator busy-waits to space its requests evenly, so it takes a core of its own: on a
2-core machine the server has the other one.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import defaultdict

from reflector import TARGETS, cpu_seconds, loadgen, median, running

VARIANTS: dict[str, list[str]] = {
    "busy-poll (default)": TARGETS["udpbeat"],
    "no busy-poll": [*TARGETS["udpbeat"], "--busy-poll-us", "0"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"$ python benchmarks/busy_poll.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"# {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, loopback; {args.rounds} rounds x {args.duration}s"
    )
    figures: dict[tuple[float, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for round_number in range(args.rounds):
        for rate in args.rates:
            for name, argv in VARIANTS.items():
                with running(argv) as (process, port):
                    cpu_before, clock_before = cpu_seconds(process.pid), time.monotonic()
                    result = loadgen(port, "--mode", "paced", "--rate", str(rate),
                                     "--duration", str(args.duration))  # fmt: skip
                    elapsed = time.monotonic() - clock_before
                    cell = figures[rate, name]
                    cell["cpu"].append((cpu_seconds(process.pid) - cpu_before) / elapsed)
                    cell["sent"].append(result["sent_per_s"])
                    if result["p50_us"] is not None:
                        cell["p50"].append(result["p50_us"])
                        cell["p99"].append(result["p99_us"])
        print(f"# round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'rate':>8}  {'server':<22}{'sent/s':>9}{'srv cpu':>9}{'RTT p50':>9}{'RTT p99':>9}")
    print(f"{'':>8}  {'':<22}{'':>9}{'':>9}{'us':>9}{'us':>9}")
    for rate in args.rates:
        for name in VARIANTS:
            cell = figures[rate, name]
            print(
                f"{rate:>8,.0f}  {name:<22}{median(cell['sent']):>9,.0f}"
                f"{median(cell['cpu']):>9.1%}{median(cell['p50']):>9.1f}"
                f"{median(cell['p99']):>9.1f}"
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
