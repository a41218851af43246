"""`udpbeat demo`: the main job, end to end, as a person runs it."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_detects_the_stop_after_the_heartbeats_asked_for() -> None:
    count = 25
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "udpbeat",
            "demo",
            "--count",
            str(count),
            "--interval",
            "0.05",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert result.stderr == ""
    assert "drops 30% of heartbeats on purpose" in out
    assert ">>> server stopped" in out
    assert re.search(r"State \w+ -> DOWN", out)
    assert re.search(r"demo: stop detected \d+\.\d\ds after the server stopped", out)
    # The live output shows simulated loss at work before the stop.
    before_stop = out.split(">>> server stopped")[0]
    assert "request timed out" in before_stop and "Reply from 127.0.0.1:" in before_stop
    # Probes are counted apart; the server stops after `count` regular heartbeats.
    sent = int(re.search(r"^(\d+) heartbeats sent, ", out, re.M).group(1))  # type: ignore[union-attr]
    assert sent >= count
    server = re.search(r"server: (\d+) received, (\d+) replied, (\d+) dropped", out)
    assert server is not None
    received, replied, dropped = map(int, server.groups())
    assert received == replied + dropped and dropped > 0
