"""``benchmarks/rtt_accuracy.py --quick`` runs end to end: every row of both tables is filled.

A few seconds on loopback; nothing here asserts a speed, only that each prober's RTTs were
measured (samples counted, p50 no higher than p99) and the ratios printed.
"""

from __future__ import annotations

import re
import shutil

from helpers import run_benchmark

US = r"(\d+) us"


def test_the_quick_run_prints_every_row() -> None:
    out = run_benchmark("rtt_accuracy.py", "--quick")
    probers = re.compile(
        rf"\| (.+?) \| (\d+) \| {US} \| {US} \| ([\d.]*)x? \| ([\d.]+)x \| ([\d.]*)x? \|$"
    )
    lines = out.splitlines()
    rows = {m[1]: m.groups()[1:] for line in lines if (m := probers.match(line))}
    expected = [
        "bare Python blocking client -> udpbeat server",
        "udpbeat client, kernel stamps -> udpbeat server",
        "udpbeat client, kernel stamps -> udpbeat server --awake-share 0",
        "udpbeat client, user stamps -> udpbeat server",
        "udpbeat client --protocol stamp -> udpbeat server --protocol stamp",
        "udpbeat STAMP, the same round trips less the reflector's time (T3 - T2)",
        "udpbeat STAMP, reflector taking T2 in user space as irtt's server does, less T3 - T2",
    ]
    if shutil.which("irtt"):
        expected += [
            "irtt client -> irtt server",
            "irtt, the same round trips with its server's processing time added back",
        ]
    assert list(rows) == expected, out
    for samples, p50, p99, _to_irtt, _to_bare, _to_irtt_whole in rows.values():
        assert int(samples) >= 20 and 0 < int(p50) <= int(p99)
    assert rows[expected[0]][4] == "1.00"  # the bare loop is its own anchor
    # The reflector's time taken out of the same round trips leaves less than the whole RTT.
    stamp_whole, stamp_net = rows[expected[4]], rows[expected[5]]
    assert stamp_whole[0] == stamp_net[0]  # the same replies
    assert int(stamp_net[1]) < int(stamp_whole[1])
    if shutil.which("irtt"):
        assert rows[expected[7]][3] == "1.00" and rows[expected[8]][5] == "1.00"
    monitor = re.compile(rf"\| ([\d,]+) targets \| ([\d,]+) \| {US} \| {US} \| ([\d.]+)x \|")
    sizes = [m.groups() for line in lines if (m := monitor.match(line))]
    assert [(size, measured) for size, measured, *_ in sizes] == [("1", "1"), ("20", "20")]
    for _size, _measured, p50, p99, _ratio in sizes:
        assert 0 < int(p50) <= int(p99)
    assert "load average" in out
