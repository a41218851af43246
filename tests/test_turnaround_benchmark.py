"""``benchmarks/turnaround.py --quick`` runs end to end: a row per reflector, from the wire.

A few seconds on loopback. It needs a packet socket (Linux, root or ``CAP_NET_RAW``): skipped,
saying so, where there is none. Nothing here asserts a speed, only that every request was seen
going and its reply coming back, and that the figures are ordered.
"""

from __future__ import annotations

import re
import shutil
import socket

import pytest
from helpers import run_benchmark


def _packet_sockets() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).close()
    except (AttributeError, OSError):
        return False
    return True


@pytest.mark.skipif(not _packet_sockets(), reason="needs Linux packet sockets (root/CAP_NET_RAW)")
def test_the_quick_run_prints_a_row_per_reflector() -> None:
    out = run_benchmark("turnaround.py", "--quick")
    row = re.compile(r"\| (.+?) \| (\d+) \| (\d+) us \| (\d+) us \| (\d+) us \| ([\d.]+%|-) \|$")
    rows = {m[1]: m.groups()[1:] for line in out.splitlines() if (m := row.match(line))}
    expected = [
        "udpbeat server",
        "udpbeat server --awake-share 0",
        "udpbeat server --busy-poll-us 0 --awake-share 0",
    ]
    if shutil.which("irtt"):
        expected.append("irtt server (Debian's irtt 0.9)")
    assert list(rows) == expected, out
    for name, (requests, p10, p50, p99, cpu) in rows.items():
        # The quick run sends 30 requests at 10 ms; every one answered was paired.
        assert 25 <= int(requests) <= 31
        assert 0 < int(p10) <= int(p50) <= int(p99)
        # Each udpbeat server's CPU share comes from the kernel's accounting as it is reaped.
        assert (cpu == "-") == name.startswith("irtt")
        if cpu != "-":
            assert 0.0 < float(cpu.rstrip("%")) <= 200.0
