"""The detector simulator: false alarms, detection latency and probe overhead, per loss rate.

Runs udpbeat's own ProbeSession, detectors, codec and reflector on a virtual clock
(:mod:`udpbeat.simulate`): no sockets, no sleeping, seeded. For every loss rate and detector it
measures, on a server that never stops, how many DOWN verdicts are raised (all false) per
million heartbeats and how many confirmation probes are sent per regular heartbeat; and, over
``--stops`` trials where the server stops at a random instant after a healthy warm-up, how long
the DOWN verdict takes (p50, p99). Runs are in watch mode, so a false DOWN does not end one.

    python benchmarks/detector_sim.py                     # the full table, 10^6 heartbeats a cell
    python benchmarks/detector_sim.py --quick             # a quick look
    python benchmarks/detector_sim.py --loss-rates 0.3 --detectors adaptive --heartbeats 10000000

Work is cut into chunks of at most ``CHUNK`` heartbeats, each seeded from ``--seed`` and its own
coordinates, so the figures do not depend on ``--workers``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from udpbeat.errors import ConfigError
from udpbeat.simulate import (
    Bernoulli,
    Blackouts,
    Combined,
    DelaySpikes,
    DetectorSpec,
    GilbertElliott,
    HealthyResult,
    LossModel,
    PathConfig,
    StopResult,
    Timing,
    run_healthy,
    run_stop,
)
from udpbeat.stats import percentile

#: Healthy heartbeats per job: small enough to spread over workers and keep a session's RTT
#: series small, large enough that a session's start is negligible.
CHUNK = 250_000
#: Stop trials per job.
STOP_BATCH = 50
DEFAULT_LOSS_RATES = "0 0.1 0.3 4/11 0.5"
DEFAULT_DETECTORS = ("consecutive:3", "adaptive", "phi")
MODELS = ("independent", "bursts", "blackouts", "spikes", "mix")
DEFAULT_BURST = 8.0


@dataclass(frozen=True, slots=True)
class Job:
    kind: str  # "healthy" or "stop"
    cell: int
    index: int
    size: int
    spec: DetectorSpec
    path: PathConfig
    timing: Timing
    seed: str
    warmup: int
    downtime: float


@dataclass(slots=True)
class Cell:
    loss: float
    loss_label: str
    spec: DetectorSpec
    #: Independent loss, where the consecutive rule's theory holds.
    independent: bool = True
    healthy: HealthyResult = field(default_factory=lambda: HealthyResult(0, 0, 0, 0, 0))
    stops: list[StopResult] = field(default_factory=list)


def run_job(job: Job) -> tuple[Job, HealthyResult | list[StopResult]]:
    rng = random.Random(job.seed)
    if job.kind == "healthy":
        return job, run_healthy(job.spec, job.path, job.timing, job.size, rng)
    trials = [
        run_stop(job.spec, job.path, job.timing, rng, warmup=job.warmup, downtime=job.downtime)
        for _ in range(job.size)
    ]
    return job, trials


def plan(cells: Sequence[Cell], paths: Sequence[PathConfig], args: argparse.Namespace) -> list[Job]:
    timing = Timing(interval=args.interval, timeout=args.timeout)
    jobs: list[Job] = []
    for number, (cell, path) in enumerate(zip(cells, paths, strict=True)):
        for kind, total, step in (
            ("healthy", args.heartbeats, CHUNK),
            ("stop", args.stops, STOP_BATCH),
        ):
            for index, start in enumerate(range(0, total, step)):
                seed = f"{args.seed}/{kind}/{cell.spec.label}/{cell.loss_label}/{index}"
                jobs.append(
                    Job(
                        kind=kind,
                        cell=number,
                        index=index,
                        size=min(step, total - start),
                        spec=cell.spec,
                        path=path,
                        timing=timing,
                        seed=seed,
                        warmup=args.warmup,
                        downtime=args.downtime,
                    )
                )
    # The big jobs first, so no worker is left with a long one at the end.
    jobs.sort(
        key=lambda job: job.size * (1 if job.kind == "healthy" else args.warmup), reverse=True
    )
    return jobs


def execute(jobs: list[Job], cells: list[Cell], workers: int) -> None:
    results: Iterable[tuple[Job, HealthyResult | list[StopResult]]]
    if workers == 1:
        results = map(run_job, jobs)
        collect(results, cells)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        collect(pool.imap_unordered(run_job, jobs), cells)
        pool.close()
        pool.join()  # the workers exit and are reaped, so their CPU time is counted


def collect(
    results: Iterable[tuple[Job, HealthyResult | list[StopResult]]], cells: list[Cell]
) -> None:
    for job, result in results:
        cell = cells[job.cell]
        if isinstance(result, HealthyResult):
            cell.healthy = cell.healthy + result
        else:
            cell.stops.extend(result)


# --- the table -------------------------------------------------------------------------------


def _seconds(values: list[float], pct: float) -> str:
    return f"{percentile(values, pct):.3f} s" if values else "-"


def _consecutive_theory(cell: Cell) -> str:
    """False DOWN per 10^6 heartbeats of the consecutive rule under independent loss.

    A false DOWN starts every maximal run of at least N misses: a reply, then N misses, which has
    probability (1 - p) p^N per heartbeat.
    """
    if cell.spec.name != "consecutive" or math.isnan(cell.loss):
        return ""
    misses = int(dict(cell.spec.params).get("max_misses", 3))
    p = cell.loss
    return f"{1e6 * (1 - p) * p**misses:,.0f}"


def table(cells: Sequence[Cell]) -> str:
    header = (
        "| loss | detector | healthy heartbeats | false DOWN | of them before any reply "
        "| per 10^6 heartbeats | theory per 10^6 | detection p50 | detection p99 | not detected "
        "| probes per heartbeat |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for cell in cells:
        healthy = cell.healthy
        trials = [s for s in cell.stops if not s.down_at_stop]
        latencies = sorted(s.detection for s in trials if s.detection is not None)
        missed = len(trials) - len(latencies)
        rate = 1e6 * healthy.false_down / healthy.heartbeats if healthy.heartbeats else math.nan
        theory = _consecutive_theory(cell) if cell.independent else ""
        lines.append(
            f"| {cell.loss_label} | {cell.spec.label} | {healthy.heartbeats:,} "
            f"| {healthy.false_down:,} | {healthy.down_before_reply:,} | {rate:,.1f} | {theory} "
            f"| {_seconds(latencies, 50)} | {_seconds(latencies, 99)} "
            f"| {missed} of {len(trials)} | {healthy.probe_overhead:.3f} |"
        )
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------


def _fraction(text: str) -> tuple[float, str]:
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"loss rate {text!r} is not a fraction such as 0.3 or 4/11") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"loss rate {text!r} is outside [0, 1]")
    return value, f"{value:.1%}"


def _split(values: Sequence[str]) -> list[str]:
    return [part for value in values for part in value.replace(",", " ").split()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--heartbeats", type=int, default=1_000_000, help="healthy heartbeats per cell"
    )
    parser.add_argument("--stops", type=int, default=1000, help="stop trials per cell")
    parser.add_argument(
        "--loss-rates",
        nargs="+",
        default=DEFAULT_LOSS_RATES.split(),
        help="round-trip loss rates (fractions, 4/11 allowed)",
    )
    parser.add_argument(
        "--detectors",
        nargs="+",
        default=None,
        help="NAME or NAME:key=value,... (consecutive:N for N misses); "
        f"default: {' '.join(DEFAULT_DETECTORS)}",
    )
    parser.add_argument(
        "--model",
        nargs="+",
        choices=MODELS,
        default=None,
        help="path models, one set of rows each: independent loss; bursts (Gilbert-Elliott, "
        "stepped per request, mean burst --burst); blackouts (in time: --blackout-min to "
        "--blackout-max seconds dark at random times); spikes (independent loss plus "
        "bufferbloat-like delay spikes, --spike-*); mix (bursts and blackouts sharing the loss, "
        "plus the spikes). Default: independent, or bursts when --burst is given",
    )
    parser.add_argument(
        "--burst",
        type=float,
        nargs="+",
        default=None,
        help="mean burst length(s) in requests of the bursts (and mix) model; several give a "
        "set of rows each (default 8)",
    )
    parser.add_argument(
        "--blackout-min", type=float, default=0.05, help="shortest blackout, seconds"
    )
    parser.add_argument("--blackout-max", type=float, default=0.5, help="longest blackout, seconds")
    parser.add_argument(
        "--spike-every", type=float, default=30.0, help="mean seconds between delay spikes"
    )
    parser.add_argument(
        "--spike-duration",
        type=float,
        nargs=2,
        default=(1.0, 5.0),
        metavar=("MIN", "MAX"),
        help="how long a delay spike lasts, seconds",
    )
    parser.add_argument(
        "--spike-rtt",
        type=float,
        nargs=2,
        default=(0.1, 0.4),
        metavar=("MIN", "MAX"),
        help="round-trip time during a spike, seconds",
    )
    parser.add_argument(
        "--spike-loss", type=float, default=0.0, help="extra loss during a delay spike"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats")
    parser.add_argument("--timeout", type=float, default=1.0, help="the prober's --timeout")
    parser.add_argument("--rtt", type=float, default=0.001, help="base round-trip time, seconds")
    parser.add_argument(
        "--jitter", type=float, default=0.0002, help="mean extra RTT (exponential), seconds"
    )
    parser.add_argument("--duplicate", type=float, default=0.0, help="fraction of replies doubled")
    parser.add_argument(
        "--icmp", action="store_true", help="a stopped server's host answers port-unreachable"
    )
    parser.add_argument("--warmup", type=int, default=100, help="healthy heartbeats before a stop")
    parser.add_argument(
        "--downtime", type=float, default=10.0, help="seconds from the DOWN verdict to a restart"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument(
        "--quick", action="store_true", help="20,000 heartbeats and 100 stops per cell"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.heartbeats, args.stops = 20_000, 100
    if args.heartbeats < 1 or args.stops < 0 or args.workers < 1 or args.warmup < 1:
        parser.error("--heartbeats, --workers and --warmup must be >= 1, --stops >= 0")
    if not (args.interval > 0 and args.timeout > 0):
        parser.error("--interval and --timeout must be > 0")
    return args


def models_of(args: argparse.Namespace) -> list[str]:
    """The path models asked for; the bursts model once per ``--burst`` length."""
    names = args.model or (["bursts"] if args.burst else ["independent"])
    bursts = args.burst or [DEFAULT_BURST]
    expanded: list[str] = []
    for name in names:
        if name in ("bursts", "mix"):
            expanded.extend(f"{name}:{length:g}" for length in bursts)
        else:
            expanded.append(name)
    return expanded


def path_model(
    name: str, loss: float, args: argparse.Namespace
) -> tuple[LossModel, DelaySpikes | None, str]:
    """The loss model, the delay spikes (if any) and the row label of one model at one rate."""
    kind, _, burst_text = name.partition(":")
    burst = float(burst_text) if burst_text else DEFAULT_BURST
    spikes = DelaySpikes(
        every=args.spike_every,
        min_duration=args.spike_duration[0],
        max_duration=args.spike_duration[1],
        min_rtt=args.spike_rtt[0],
        max_rtt=args.spike_rtt[1],
        loss=args.spike_loss,
    )
    blackout_label = f"blackouts {args.blackout_min * 1e3:g}-{args.blackout_max * 1e3:g} ms"
    if kind == "independent" or (loss == 0 and kind != "spikes"):
        return Bernoulli(loss), None, ""
    if kind == "bursts":
        return GilbertElliott(loss, burst), None, f" (bursts of {burst:g})"
    if kind == "blackouts":
        return Blackouts(loss, args.blackout_min, args.blackout_max), None, f" ({blackout_label})"
    if kind == "spikes":
        return Bernoulli(loss), spikes, " + delay spikes"
    # mix: bursts and blackouts share the loss (each loses 1 - sqrt(1 - loss)), plus the spikes
    each = 1.0 - math.sqrt(1.0 - loss)
    mixed = Combined(
        (GilbertElliott(each, burst), Blackouts(each, args.blackout_min, args.blackout_max))
    )
    return mixed, spikes, f" (mix: bursts of {burst:g}, {blackout_label}, delay spikes)"


def build_cells(args: argparse.Namespace) -> tuple[list[Cell], list[PathConfig]]:
    # Not split at commas: those separate a detector's parameters.
    names = [n for text in args.detectors or DEFAULT_DETECTORS for n in text.split()]
    specs = [DetectorSpec.parse(name) for name in names]
    cells: list[Cell] = []
    paths: list[PathConfig] = []
    for model_name in models_of(args):
        for text in _split(args.loss_rates):
            loss, label = _fraction(text)
            model, spikes, suffix = path_model(model_name, loss, args)
            path = PathConfig(
                loss=model,
                rtt=args.rtt,
                jitter=args.jitter,
                duplicate=args.duplicate,
                icmp_when_stopped=args.icmp,
                spikes=spikes,
            )
            for spec in specs:
                cells.append(Cell(loss, label + suffix, spec, independent=not suffix))
                paths.append(path)
    return cells, paths


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cells, paths = build_cells(args)
    except ConfigError as error:
        print(f"detector_sim: error: {error}", file=sys.stderr)
        return 2
    jobs = plan(cells, paths, args)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    execute(jobs, cells, args.workers)
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    healthy = sum(cell.healthy.heartbeats for cell in cells)
    in_stops = sum(args.warmup * len(cell.stops) for cell in cells)
    command = " ".join(["python benchmarks/detector_sim.py", *(argv or sys.argv[1:])])
    print(f"$ {command}")
    print(
        f"interval {args.interval:g} s, timeout {args.timeout:g} s, RTT {args.rtt * 1e3:g} ms "
        f"+ exponential jitter (mean {args.jitter * 1e3:g} ms), "
        f"{', '.join(models_of(args))} loss, seed {args.seed}; "
        f"{args.stops} stops per cell after {args.warmup} healthy heartbeats"
        + (", ICMP port-unreachable from a stopped server" if args.icmp else "")
    )
    print()
    print(table(cells))
    print()
    print(
        f"{healthy:,} healthy heartbeats (+ about {in_stops:,} in stop trials) simulated in "
        f"{elapsed:.1f} s with {args.workers} worker(s), {cpu:.1f} s of CPU: "
        f"{(healthy + in_stops) / elapsed:,.0f} heartbeats/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
