"""``benchmarks/session_codec.py`` runs and prints each fast path beside its anchor."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT


def test_the_benchmark_prints_each_figure_beside_its_anchor() -> None:
    # Run as a user runs it: a process of its own (tests never import from benchmarks/).
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "session_codec.py"), "--calls", "200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row[0] for row in rows[1:]] == [
        "| encode a request",
        "| decode a reply",
        "| one heartbeat through a session",
    ]
    for row in rows[1:]:
        anchor_us, fast_us = float(row[2]), float(row[4].rstrip(" |"))
        assert anchor_us > 0 and fast_us > 0
