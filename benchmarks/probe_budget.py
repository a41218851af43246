"""What the confirmation-probe budget costs in detection time (``--probes-per-interval``).

Two scenarios on the simulator's virtual clock, with the default adaptive detector, interval and
timeout 1 s, RTT 1 ms: a target that never answers (time to DOWN, probes sent), and a server
that stops after 100 healthy heartbeats at a given loss (detection p50/p99 over many stops,
seeded). Usage::

    python benchmarks/probe_budget.py [--budgets 10 20 50 1000000] [--stops 300] [--seed 7]
"""

from __future__ import annotations

import argparse
import random

from udpbeat.detector import State
from udpbeat.session import ProbeConfig
from udpbeat.simulate import Bernoulli, DetectorSpec, PathConfig, Timing, run_stop
from udpbeat.testing import SessionDriver


def never_answered(budget: int) -> tuple[float, int]:
    """Seconds until DOWN, and probes sent, for a target that never answers."""
    config = ProbeConfig(count=None, interval=1.0, timeout=1.0, probes_per_interval=budget)
    driver = SessionDriver(config, start=0.0)
    driver.run(limit=600.0)
    report = driver.session.report()
    (down,) = [t for t in report.transitions if t.new is State.DOWN]
    return down.at, report.probes


def stops(budget: int, loss: float, count: int, seed: int) -> tuple[float, float]:
    """Detection p50 and p99, in seconds, over ``count`` stops."""
    rng = random.Random(seed)
    spec = DetectorSpec.parse("adaptive")
    path = PathConfig(loss=Bernoulli(loss))
    timing = Timing(probes_per_interval=budget)
    latencies = sorted(
        result.detection
        for result in (run_stop(spec, path, timing, rng) for _ in range(count))
        if result.detection is not None
    )
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 1_000_000])
    parser.add_argument("--losses", type=float, nargs="+", default=[0.0, 0.3])
    parser.add_argument("--stops", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    header = "| probes per interval | never answered: DOWN after | probes sent |"
    rule = "|---|---|---|"
    for loss in args.losses:
        header += f" stop at {loss:.0%} loss: p50 / p99 |"
        rule += "---|"
    print(header)
    print(rule)
    for budget in args.budgets:
        down_at, probes = never_answered(budget)
        label = "no limit" if budget >= 1_000_000 else str(budget)
        row = f"| {label} | {down_at:.2f} s | {probes} |"
        for loss in args.losses:
            p50, p99 = stops(budget, loss, args.stops, args.seed)
            row += f" {p50:.2f} s / {p99:.2f} s |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
