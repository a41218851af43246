"""100,000 random and mutated datagrams against a real ``udpbeat server`` on loopback.

The driver is ``benchmarks/fuzz.py`` (10**6 when run by hand), run as a process of its own (tests
never import from ``benchmarks/``): a valid heartbeat probe after every 128 datagrams must be
answered before more are sent, so the server answers during the run, and the server's final
counters must match exactly what decoding every datagram says: replies to the valid ones only,
every other one counted as malformed under its reason. The driver exits non-zero on any
mismatch, a dead server or a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT

from udpbeat.errors import WIRE_ERROR_REASONS

COUNT = 100_000


@pytest.mark.timeout(120)
def test_server_survives_100k_fuzz_datagrams_and_counts_every_one() -> None:
    command = [sys.executable, "benchmarks/fuzz.py", "--count", str(COUNT), "--seed", "20261125"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "reconciled exactly: yes" in result.stdout, output
    assert "server alive at the end: True; exit status on SIGTERM: 0" in result.stdout, output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("server summary:")]
    summary = json.loads(line.removeprefix("server summary:"))
    assert summary["received"] > COUNT
    # Each mutation family reached the parser: far more malformed than valid, every reason seen.
    assert set(summary["malformed_by_reason"]) == {"oversize", *WIRE_ERROR_REASONS}
    assert summary["malformed"] > 2 * summary["replied"] > 0
