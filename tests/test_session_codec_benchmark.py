"""``benchmarks/session_codec.py`` runs and prints each fast path beside its anchor."""

from __future__ import annotations

from helpers import run_benchmark


def test_the_benchmark_prints_each_figure_beside_its_anchor() -> None:
    out = run_benchmark("session_codec.py", "--calls", "200", timeout=60)
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ")]
    assert [row[0] for row in rows[1:]] == [
        "| encode a request",
        "| decode a reply",
        "| one heartbeat through a session",
    ]
    for row in rows[1:]:
        anchor_us, fast_us = float(row[2]), float(row[4].rstrip(" |"))
        assert anchor_us > 0 and fast_us > 0
