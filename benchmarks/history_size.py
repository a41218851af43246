"""The size of a ``udpbeat monitor --db`` history per target per day, and what writing costs.

A day of minutes for ``--targets`` targets is written through :class:`HistoryWriter`, as a
monitor writes it (a row per target per minute, with RTT figures that vary as real ones do and
some loss; the targets' counters updated every minute; a few state changes and outages), on a
virtual clock so a day takes seconds. The file is then closed (its WAL checkpointed) and
measured. Anchor, in the same run: the same minutes as JSON lines (what an ``--events``-style
log of them would take).

Then one minute of ``--burst`` targets (10,000 by default) is handed over at once and the
writer's commit timed: the work a monitor of that size puts on the writer's thread each minute.

    python benchmarks/history_size.py                      # 200 targets, a day; ~10 s
    python benchmarks/history_size.py --targets 20 --hours 1 --burst 1000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from udpbeat.monitor.history import (  # noqa: E402
    ChangeRow,
    HistoryReader,
    HistoryWriter,
    MinuteRow,
    TargetRecord,
)


def minute_record(name: str, start: int, rng: random.Random) -> MinuteRow:
    base = rng.uniform(0.0002, 0.02)
    lost = 0 if rng.random() < 0.9 else rng.randint(1, 6)
    answered = 60 - lost
    return MinuteRow(
        name,
        start,
        60 + lost,
        lost,
        answered,
        lost,
        base * rng.uniform(0.8, 0.95),
        base,
        base * rng.uniform(1.2, 3.0),
        base * rng.uniform(1.5, 6.0),
        "UP",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--burst", type=int, default=10_000)
    args = parser.parse_args()
    if not (1 <= args.targets <= 100_000 and 0 < args.hours <= 72 and 1 <= args.burst <= 100_000):
        parser.error("--targets 1..100000, --hours (0, 72], --burst 1..100000")
    rng = random.Random(7)
    minutes = round(args.hours * 60)
    names = [f"host-{i:05d}.example.net" for i in range(args.targets)]
    with tempfile.TemporaryDirectory(prefix="udpbeat-history-") as folder:
        path = Path(folder) / "history.db"
        start = int(time.time() // 60 * 60) - minutes * 60
        clock = [float(start)]
        writer = HistoryWriter(path, period=3600, clock=lambda: clock[0])
        json_bytes = 0
        began = time.perf_counter()
        for index in range(minutes):
            at = start + index * 60
            clock[0] = at + 60.0
            records = [minute_record(name, at, rng) for name in names]
            json_bytes += sum(
                len(json.dumps({"target": r.target, **{k: getattr(r, k) for k in r.__slots__}})) + 1
                for r in records
            )
            writer.minutes(records)
            writer.targets(
                [
                    TargetRecord(
                        name, "192.0.2.1", 12000, {"env": "prod"}, at + 60, "UP", {"sent": index}
                    )
                    for name in names
                ]
            )
            if index % 97 == 0:  # now and then a target goes DOWN for two minutes
                name = rng.choice(names)
                writer.change(ChangeRow(name, at + 5, "UP", "DOWN", "3 misses in a row"))
                writer.outage_started(name, at + 5, "3 misses in a row")
                writer.outage_ended(name, at + 125, 120)
                writer.change(ChangeRow(name, at + 125, "DOWN", "UP", "reply"))
            if index % 10 == 9:
                writer.flush(60)
        writer.close(60)
        elapsed = time.perf_counter() - began
        size = path.stat().st_size
        with HistoryReader(path) as reader:
            rows = len(reader.minutes(names[0]))
        per_target_day = size / args.targets / (minutes / 1440)
        json_per_target_day = json_bytes / args.targets / (minutes / 1440)

        burst_path = Path(folder) / "burst.db"
        burst = HistoryWriter(burst_path, period=3600)
        burst_names = [f"host-{i:05d}.example.net" for i in range(args.burst)]
        now = int(time.time() // 60 * 60)
        for warm in range(2):
            burst.minutes([minute_record(n, now - 120 + 60 * warm, rng) for n in burst_names])
            burst.flush(60)
        timings = []
        for repeat in range(3):
            records = [minute_record(n, now + 60 * repeat, rng) for n in burst_names]
            burst.minutes(records)
            burst.targets(
                [
                    TargetRecord(n, "192.0.2.1", 12000, {}, now, "UP", {"sent": 1})
                    for n in burst_names
                ]
            )
            t0 = time.perf_counter()
            burst.flush(120)
            timings.append(time.perf_counter() - t0)
        burst.close(60)
    print(f"history of {args.targets} targets over {minutes} minutes ({elapsed:.1f} s to write)")
    print(f"  rows per target: {rows} minutes")
    print(f"  file: {size / 1e6:.2f} MB, {per_target_day / 1e3:.1f} kB per target per day")
    print(
        f"  anchor, the same minutes as JSON lines: {json_per_target_day / 1e3:.1f} kB per "
        "target per day"
    )
    print(
        f"  10,000 targets for 30 days (the default retention): "
        f"{per_target_day * 10_000 * 30 / 1e9:.1f} GB"
    )
    print(
        f"one minute of {args.burst:,} targets, committed by the writer's thread: "
        f"{min(timings) * 1e3:.0f} ms (best of 3; median {sorted(timings)[1] * 1e3:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
