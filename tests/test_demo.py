"""`udpbeat demo`: the main job, end to end, as a person runs it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from helpers import Process


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


def test_ctrl_c_in_the_demo_prints_the_statistics_so_far_and_exits_130() -> None:
    args = ["-m", "udpbeat", "demo", "--count", "1000", "--interval", "0.02", "--seed", "3"]
    with Process(args) as demo:
        demo.wait_for(lambda line: line.startswith("client | Reply from"))
        demo.send_signal(signal.SIGINT)
        status, stdout, stderr = demo.finish()
    assert status == 130, demo.output()
    assert stderr == []
    assert any(line.endswith("udpbeat statistics ---") for line in stdout)
    assert any(re.match(r"server: \d+ received, \d+ replied", line) for line in stdout)
    assert stdout[-1] == (
        "demo: interrupted before the server was stopped; the statistics so far are above"
    )
