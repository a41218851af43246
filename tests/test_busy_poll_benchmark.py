"""``benchmarks/busy_poll.py`` runs end to end: both server variants answer the paced stream.

A short run on loopback; nothing here asserts a speed, only that the table is complete, the
paced generator kept to its rate and replies came back to be timed.
"""

from __future__ import annotations

import re

from helpers import run_benchmark


def test_busy_poll_benchmark_prints_a_row_per_rate_and_variant() -> None:
    out = run_benchmark(
        "busy_poll.py", "--rates", "500", "2000", "--duration", "0.3", "--rounds", "1", timeout=60
    )
    row = re.compile(r"\s*([\d,]+)  (busy-poll \(default\)|no busy-poll)\s+([\d,]+)\s+([\d.]+)%"
                     r"\s+([\d.]+)\s+([\d.]+)")  # fmt: skip
    rows = [match.groups() for line in out.splitlines() if (match := row.fullmatch(line))]
    assert [(rate, variant) for rate, variant, *_ in rows] == [
        ("500", "busy-poll (default)"),
        ("500", "no busy-poll"),
        ("2,000", "busy-poll (default)"),
        ("2,000", "no busy-poll"),
    ], out
    for rate, _, sent, _, p50, p99 in rows:
        # Paced sends are spread evenly: the generator cannot send more than the rate, and a
        # reply was timed (RTT figures are numbers, p50 no higher than p99).
        assert 0 < float(sent.replace(",", "")) <= float(rate.replace(",", "")) * 1.01
        assert 0 < float(p50) <= float(p99)
