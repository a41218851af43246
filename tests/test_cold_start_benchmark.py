"""``benchmarks/cold_start.py`` with tiny parameters runs end to end on the virtual clock.

Nothing here asserts a speed: only that the never-answered line, a row per loss and warm-up
and a row per path model are printed with figures that hang together.
"""

from __future__ import annotations

import re

from helpers import run_benchmark


def test_a_tiny_run_prints_every_row() -> None:
    out = run_benchmark(
        "cold_start.py", "--warmups", "0", "100", "--stops", "3", "--starts", "3",
        "--seconds", "10", "--models", "independent", "bursts:8",
    )  # fmt: skip
    never = re.search(r"never answers is DOWN after ([\d.]+) s, (\d+) probes", out)
    assert never is not None and float(never[1]) > 0 and int(never[2]) > 0
    stops = re.findall(r"^\| (0|30)% \| (\d+) \| ([\d.]+) s \| ([\d.]+) s \|$", out, re.M)
    assert {(loss, warmup) for loss, warmup, _, _ in stops} == {
        ("0", "0"), ("0", "100"), ("30", "0"), ("30", "100"),
    }  # fmt: skip
    assert all(float(p50) <= float(worst) for _, _, p50, worst in stops)
    starts = re.findall(r"^\| ([\w:]+) \| 3 \| (\d+) \| (\d+) \|$", out, re.M)
    assert [model for model, _, _ in starts] == ["independent", "bursts:8"]
