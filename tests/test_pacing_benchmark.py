"""``benchmarks/pacing.py`` runs end to end: a row per prober, from a receiver's kernel stamps.

A few seconds on loopback; nothing here asserts a speed, only that each prober's arrivals were
seen and the figures are of the right kinds.
"""

from __future__ import annotations

import re

from helpers import run_benchmark


def test_a_short_run_prints_a_row_per_prober() -> None:
    out = run_benchmark("pacing.py", "--samples", "40")
    ms = r"([\d.]+) ms"
    row = re.compile(rf"\| (.+?) \| {ms} \| {ms} \| {ms} \| {ms} \| (\d+)% \| (\d+)% \|$")
    rows = {m[1]: m.groups()[1:] for line in out.splitlines() if (m := row.match(line))}
    assert list(rows) == [
        "udpbeat client (select loop)",
        "udpbeat client on asyncio's default loop (epoll, before)",
        "bare Python blocking loop",
    ], out
    for *gaps, offered, caught in rows.values():
        p10, p50, p90, p99 = (float(gap) for gap in gaps)
        assert 0 < p10 <= p50 <= p90 <= p99
        assert 0 <= int(caught) <= int(offered) <= 100
    assert "load average" in out
