"""``benchmarks/reflector.py`` with its ``stamp`` target runs end to end: a row per target and
the stamp/text ratio line. A short run on loopback; nothing here asserts a speed."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import ROOT


def test_reflector_benchmark_sets_the_stamp_row_beside_the_text_one() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/reflector.py", "--targets", "udpbeat,stamp", "--rounds", "1",
         "--duration", "0.3", "--pings", "100", "--rate", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {
        match.group(1).strip(): float(match.group(2).replace(",", ""))
        for line in result.stdout.splitlines()
        if (match := re.match(r"(udpbeat server(?: --protocol stamp)?)\s+([\d,]+)\s", line))
    }
    assert set(rows) == {"udpbeat server", "udpbeat server --protocol stamp"}, result.stdout
    assert all(replies > 0 for replies in rows.values())
    assert re.search(r"replies/s stamp/text\s+[\d.]+x  goal >= 0.9: (met|NOT met)", result.stdout)
