"""``benchmarks/history_size.py`` and ``benchmarks/status_page.py`` run end to end with tiny
parameters: every figure is printed. Nothing here asserts a speed or a size."""

from __future__ import annotations

import re

from helpers import run_benchmark


def test_history_size_prints_the_size_per_target_per_day_and_the_commit_time() -> None:
    out = run_benchmark("history_size.py", "--targets", "5", "--hours", "1", "--burst", "50")
    assert "rows per target: 60 minutes" in out
    assert re.search(r"file: [\d.]+ MB, [\d.]+ kB per target per day", out)
    assert re.search(r"as JSON lines: [\d.]+ kB per target per day", out)
    assert re.search(r"one minute of 50 targets, committed by the writer's thread: \d+ ms", out)


def test_status_page_prints_every_page_beside_its_anchors() -> None:
    out = run_benchmark("status_page.py", "--targets", "60", "--repeat", "1", "--seconds", "3")
    assert out.startswith("60 targets (")
    for label in ("/  (first page", "/?q=role=db", "/?page=100", "/target?name=", "/metrics"):
        line = next(line for line in out.splitlines() if label in line)
        assert re.search(r"[\d.]+ ms\s+\d+ kB$", line), line
    assert re.search(r"closing a minute of every target \(on the loop\): \d+ ms in all", out)
