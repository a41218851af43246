"""``benchmarks/reflector.py`` with its ``stamp`` target runs end to end: a row per target and
the stamp/text ratio line. A short run on loopback; nothing here asserts a speed."""

from __future__ import annotations

import re

from helpers import run_benchmark


def test_reflector_benchmark_sets_the_stamp_row_beside_the_text_one() -> None:
    out = run_benchmark(
        "reflector.py", "--targets", "udpbeat,stamp", "--rounds", "1",
        "--duration", "0.3", "--pings", "100", "--rate", "2000",
    )  # fmt: skip
    rows = {
        match.group(1).strip(): float(match.group(2).replace(",", ""))
        for line in out.splitlines()
        if (match := re.match(r"(udpbeat server(?: --protocol stamp)?)\s+([\d,]+)\s", line))
    }
    assert set(rows) == {"udpbeat server", "udpbeat server --protocol stamp"}, out
    assert all(replies > 0 for replies in rows.values())
    assert re.search(r"replies/s stamp/text\s+[\d.]+x  goal >= 0.9: (met|NOT met)", out)
