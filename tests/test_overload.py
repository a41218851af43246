"""A real ``udpbeat server`` flooded at twice its measured capacity stays up and accounts for it.

The driver is ``benchmarks/overload.py`` (10 seconds when run by hand, 3 here), run as a process
of its own as a user runs it (tests never import from ``benchmarks/``). Nothing here asserts a
speed: the flood rate is whatever twice the capacity measured on this machine is, and the
assertions are about survival, responsiveness, memory and exact accounting.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT

#: Growth of the server's resident memory allowed over the flood: its log backlog and per-source
#: table are bounded, so a flood must not grow it by more than noise.
RSS_GROWTH_LIMIT_KIB = 64 * 1024


@pytest.mark.timeout(120)
def test_flood_at_twice_capacity_is_survived_and_every_datagram_accounted_for() -> None:
    command = [sys.executable, "benchmarks/overload.py", "--duration", "3", "--factor", "2"]
    command += ["--capacity-duration", "1", "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    figures = json.loads(result.stdout.splitlines()[-1])
    summary = figures["summary"]
    assert figures["alive"] and figures["status"] == 0, report
    assert not figures["traceback"], report
    # The server's own identity, exactly.
    assert figures["outcomes"] == summary["received"], report
    # Everything sent was received or dropped by the kernel before the server could read it.
    assert summary["received"] <= figures["sent"], report
    if figures["kernel_drops"] is not None:  # Linux: /proc/net/snmp (machine-wide: >=)
        assert figures["sent"] - summary["received"] <= figures["kernel_drops"], report
    # Each kind of outcome was exercised: replies, simulated loss, and the malformed trickle.
    assert summary["replied"] > 0 and summary["dropped_loss"] > 0, report
    assert summary["malformed_by_reason"] == {"bad-sequence": summary["malformed"]}, report
    # Responsive during the flood: the separate probe got answers.
    assert figures["probe_answered"] > 0, report
    assert figures["rss_growth_kib"] < RSS_GROWTH_LIMIT_KIB, report
