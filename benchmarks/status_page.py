"""How long the status page takes to render at 10,000 targets.

A fleet of ``--targets`` targets (no sockets: the datagrams go to an in-process reflector on a
virtual clock) runs a few virtual seconds so every session exists; 1% never answer (DOWN or on
their way), 5% lose one heartbeat in three. Every target's last hour is then filled in the
recorder (60 minutes each, so the loss windows read full rings), and a day of minutes is made
for the target page. Each page is rendered ``--repeat`` times; the median is printed, beside
two anchors from the same run: ``/metrics`` and ``/api/targets`` of the same fleet (what a
Prometheus scrape and a JSON client cost the monitor already).

    python benchmarks/status_page.py                   # 10,000 targets; ~25 s
    python benchmarks/status_page.py --targets 200 --repeat 3
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from udpbeat.monitor.config import parse_config  # noqa: E402
from udpbeat.monitor.fleet import Fleet, Target  # noqa: E402
from udpbeat.monitor.history import HistoryWriter, MinuteRow  # noqa: E402
from udpbeat.monitor.http import target_json  # noqa: E402
from udpbeat.monitor.metrics import render  # noqa: E402
from udpbeat.monitor.recorder import STATES, Recorder  # noqa: E402
from udpbeat.monitor.shell import numeric_address  # noqa: E402
from udpbeat.monitor.status import Query, TargetHistory, render_index, render_target  # noqa: E402
from udpbeat.reflector import Reflector, ReflectorConfig  # noqa: E402

START = 1000.0
WALL_OFFSET = 1.7e9


class VirtualNet:
    """The fleet's network on a virtual clock: replies after 0.4 ms, some never, some lost."""

    def __init__(self, count: int) -> None:
        self.now = START
        self.rng = random.Random(3)
        self.reflector = Reflector(ReflectorConfig(rate_limit=0, log_events=False))
        targets = [
            {
                "name": f"host-{i:05d}.example.net",
                "host": f"127.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}",
                "labels": {"role": ("db", "web", "cache")[i % 3], "dc": f"dc{i % 7}"},
            }
            for i in range(count)
        ]
        config = parse_config({"defaults": {"port": 12000}, "targets": targets}, "bench")
        self.dead = {t.name for i, t in enumerate(config.targets) if i % 100 == 7}
        self.lossy = {t.name for i, t in enumerate(config.targets) if i % 20 == 3}
        self.arrivals: list[tuple[float, int, bytes, bytes]] = []
        self.order = 0
        self.fleet = Fleet(self.send)
        resolved = []
        for target in config.targets:
            address = numeric_address(target.host, target.port)
            assert address is not None
            resolved.append((target, address))
        self.fleet.apply(resolved, self.now)

    def send(self, target: Target, datagram: bytes) -> None:
        if target.name in self.dead or (target.name in self.lossy and self.rng.random() < 1 / 3):
            return
        at = self.now + 0.0004
        reply = self.reflector.reflect(datagram, ("192.0.2.1", 40000), at, at + WALL_OFFSET)
        if reply is not None:
            self.order += 1
            heapq.heappush(self.arrivals, (at, self.order, target.key, reply))

    def run(self, until: float) -> None:
        fleet = self.fleet
        while True:
            timer = fleet.next_timer()
            arrival = self.arrivals[0][0] if self.arrivals else None
            due = min(t for t in (timer, arrival, until + 1) if t is not None)
            if due > until:
                break
            self.now = max(self.now, due)
            while self.arrivals and self.arrivals[0][0] <= self.now:
                at, _, key, data = heapq.heappop(self.arrivals)
                fleet.receive(key, data, at)
            fleet.run_due(lambda: self.now, 0.0)
        self.now = until


def fill_hour(recorder: Recorder, rng: random.Random, wall: float) -> None:
    """60 closed minutes for every target, as if the monitor had run an hour."""
    first = int(wall // 60 * 60) - 3600
    for target in recorder.fleet:
        track = recorder.track(target)
        for minute in range(60):
            base = rng.uniform(0.0002, 0.002)
            lost = 0 if rng.random() < 0.9 else rng.randint(1, 20)
            track.push(
                (
                    float(first + 60 * minute),
                    60.0,
                    0.0,
                    60.0 - lost,
                    float(lost),
                    base * 0.9,
                    base,
                    base * 2,
                    base * 3,
                    float(STATES.index(target.state)),
                )
            )


def a_day(name: str, wall: float, rng: random.Random) -> list[MinuteRow]:
    first = int(wall // 60 * 60) - 86400
    rows = []
    for minute in range(1440):
        base = rng.uniform(0.0002, 0.002)
        lost = 0 if rng.random() < 0.9 else rng.randint(1, 20)
        rows.append(
            MinuteRow(
                name,
                float(first + 60 * minute),
                60,
                0,
                60 - lost,
                lost,
                base * 0.9,
                base,
                base * 2,
                base * 3,
                "UP",
            )
        )
    return rows


def timed(action: Callable[[], object], repeat: int) -> tuple[float, int]:
    """Median seconds of ``repeat`` runs, and the size of what the last one returned."""
    times = []
    result: object = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - began)
    size = len(result) if isinstance(result, str | bytes) else 0
    return statistics.median(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=8.0, help="virtual seconds to run")
    args = parser.parse_args()
    if not (1 <= args.targets <= 50_000 and 1 <= args.repeat <= 100 and 0 < args.seconds <= 60):
        parser.error("--targets 1..50000, --repeat 1..100, --seconds (0, 60]")
    began = time.perf_counter()
    net = VirtualNet(args.targets)
    net.run(START + args.seconds)
    fleet = net.fleet
    wall = net.now + WALL_OFFSET
    recorder = Recorder(fleet, clock=lambda: net.now, wall=lambda: wall)
    rng = random.Random(5)
    fill_hour(recorder, rng, wall)
    print(
        f"{args.targets:,} targets ({fleet.counts()}), set up in "
        f"{time.perf_counter() - began:.1f} s; median of {args.repeat} renders each"
    )
    target = fleet.targets[sorted(net.lossy)[0]]
    history = TargetHistory(day=a_day(target.name, wall, rng), kept=True)
    now = net.now
    cases: list[tuple[str, Callable[[], object]]] = [
        (
            "/  (first page, 100 rows)",
            lambda: render_index(fleet, recorder, Query(), now, WALL_OFFSET),
        ),
        (
            "/?q=role=db  (filter)",
            lambda: render_index(fleet, recorder, Query(text="role=db"), now, WALL_OFFSET),
        ),
        (
            "/?page=100  (last page)",
            lambda: render_index(fleet, recorder, Query(page=100), now, WALL_OFFSET),
        ),
        (
            "/target?name=...  (hour + day charts)",
            lambda: render_target(target, recorder, history, now, WALL_OFFSET),
        ),
        ("anchor: /metrics", lambda: render(fleet, now, openmetrics=False)),
        (
            "anchor: /api/targets",
            lambda: json.dumps([target_json(t, now, WALL_OFFSET) for t in fleet]),
        ),
    ]
    for label, action in cases:
        seconds, size = timed(action, args.repeat)
        print(f"  {label:<40} {seconds * 1e3:8.1f} ms  {size / 1e3:8.0f} kB")
    with tempfile.TemporaryDirectory(prefix="udpbeat-page-") as folder:
        writer = HistoryWriter(Path(folder) / "h.db", clock=lambda: wall)
        recorder.writer = writer
        pieces = []
        began = time.perf_counter()
        last = began
        for _ in recorder.close_steps(recorder.current + 60):
            now_piece = time.perf_counter()
            pieces.append(now_piece - last)
            last = now_piece
        total = time.perf_counter() - began
        writer.close(120)
    print(
        f"  closing a minute of every target (on the loop): {total * 1e3:.0f} ms in all, in "
        f"{len(pieces)} pieces of at most {max(pieces) * 1e3:.1f} ms (the loop runs between)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
