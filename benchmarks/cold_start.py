"""Cold start: how fast a detector with little history sees a stop, and what it pays for it.

Three measurements on the simulator's virtual clock, interval and timeout 1 s, RTT 1 ms:

- a target that never answers: seconds until DOWN, probes sent;
- a server that stops after ``--warmups`` healthy heartbeats (0: only the first heartbeat is
  answered, the stop falls within the first interval), at 0 % and 30 % independent loss:
  detection p50 and max over ``--stops`` stops;
- ``--starts`` fresh sessions to a server that never stops, ``--seconds`` each, at 30 % mean loss
  on every path model of ``detector_sim.py``: DOWN verdicts (all false), split into those before
  any reply (a never-answered target) and those after.

Usage::

    python benchmarks/cold_start.py [--detector adaptive] [--stops 20] [--starts 1000] [--seed 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

from udpbeat.detector import State
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.simulate import Bernoulli, DetectorSpec, PathConfig, Simulation, Timing, run_stop
from udpbeat.testing import SessionDriver

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_sim  # a sibling script: its path models, with their defaults

MODELS = ("independent", "bursts:2", "bursts:8", "bursts:16", "blackouts", "spikes", "mix:8")


def never_answered(spec: DetectorSpec) -> tuple[float, int]:
    config = ProbeConfig(count=None, interval=1.0, timeout=1.0, watch=True)
    driver = SessionDriver(config, start=0.0, detector=spec.build(1.0))
    driver.run(limit=120.0)
    report = driver.session.report()
    downs = [t.at for t in report.transitions if t.new is State.DOWN]
    return (downs[0] if downs else float("inf")), report.probes


def stops(spec: DetectorSpec, loss: float, warmup: int, count: int, seed: int) -> list[float]:
    latencies = []
    for index in range(count):
        result = run_stop(
            spec,
            PathConfig(loss=Bernoulli(loss)),
            Timing(interval=1.0, timeout=1.0),
            random.Random(seed * 1_000_003 + index),
            warmup=warmup,
            max_wait=200.0,
        )
        latencies.append(result.detection if result.detection is not None else float("inf"))
    return sorted(latencies)


def cold_false_downs(
    spec: DetectorSpec, model_name: str, starts: int, seconds: float, seed: int
) -> tuple[int, int]:
    """False DOWN verdicts in ``starts`` fresh sessions: before any reply, and after one."""
    args = detector_sim.parse_args(["--loss-rates", "0.3"])
    model, spikes, _ = detector_sim.path_model(model_name, 0.3, args)
    path = PathConfig(loss=model, rtt=args.rtt, jitter=args.jitter, spikes=spikes)
    before_reply = after_reply = 0
    for index in range(starts):
        config = ProbeConfig(count=None, interval=1.0, timeout=1.0, watch=True)
        session = ProbeSession(config, 0.0, detector=spec.build(1.0))
        simulation = Simulation(session, path, random.Random(seed * 1_000_003 + index))
        simulation.run(seconds)
        transitions = session.report().transitions
        first_up = next((t.at for t in transitions if t.new is State.UP), float("inf"))
        for transition in transitions:
            if transition.new is State.DOWN:
                if transition.at < first_up:
                    before_reply += 1
                else:
                    after_reply += 1
    return before_reply, after_reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", default="adaptive")
    parser.add_argument("--warmups", type=int, nargs="+", default=[0, 5, 20, 100, 1000])
    parser.add_argument("--stops", type=int, default=20)
    parser.add_argument("--starts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    spec = DetectorSpec.parse(args.detector)

    down_at, probes = never_answered(spec)
    print(
        f"{spec.label}: a target that never answers is DOWN after {down_at:.2f} s, {probes} probes"
    )
    print()
    print("| loss | healthy heartbeats before the stop | detection p50 | detection max |")
    print("|---|---:|---:|---:|")
    for loss in (0.0, 0.3):
        for warmup in args.warmups:
            latencies = stops(spec, loss, warmup, args.stops, args.seed)
            median = statistics.median(latencies)
            print(f"| {loss:.0%} | {warmup} | {median:.2f} s | {latencies[-1]:.2f} s |")
    if args.starts:
        print()
        print(
            f"| path (30 % mean loss) | cold starts of {args.seconds:g} s "
            "| false DOWN before any reply | false DOWN after a reply |"
        )
        print("|---|---:|---:|---:|")
        for name in args.models:
            before, after = cold_false_downs(spec, name, args.starts, args.seconds, args.seed)
            print(f"| {name} | {args.starts} | {before} | {after} |")


if __name__ == "__main__":
    main()
