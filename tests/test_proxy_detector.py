"""End to end through the proxy: ``udpbeat client`` on a bursty path, and the demo's paths.

Three real processes on loopback: ``udpbeat server``, ``udpbeat proxy`` with bursty loss both
ways (Gilbert-Elliott), and ``udpbeat client`` through the proxy. On a path that loses runs of
heartbeats and replies, the adaptive detector must not declare a live server DOWN, and it
must declare it DOWN soon after the server stops.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from typing import Any

from helpers import ROOT, Process, udpbeat_server

#: Heartbeats the client sends to the live server; the run is bounded by this and INTERVAL.
HEARTBEATS = 120
INTERVAL = 0.02
#: 10% of datagrams lost each way, in bursts of 4 on average: about 19% of round trips.
BURSTY = ["--loss", "0.1", "--loss-burst", "4", "--seed", "11"]


def test_client_through_a_bursty_path_no_false_down_then_down_after_the_stop() -> None:
    with udpbeat_server("--quiet", "--rate-limit", "0") as (server, server_port):
        proxy_args = ["-m", "udpbeat", "proxy", "--listen", "127.0.0.1:0", "--json"]
        with Process([*proxy_args, "--upstream", f"127.0.0.1:{server_port}", *BURSTY]) as proxy:
            listening = json.loads(proxy.wait_for(lambda line: '"listening"' in line))
            assert listening["up"]["loss_burst"] == 4
            client_args = ["-m", "udpbeat", "client", "127.0.0.1", "--port"]
            with Process([*client_args, str(listening["port"]), "--count", "0", "--interval",
                          str(INTERVAL), "--timeout", "0.2", "--json"]) as client:  # fmt: skip
                events: list[dict[str, Any]] = []
                regular = 0

                def before_stop(line: str) -> bool:
                    nonlocal regular
                    event = json.loads(line)
                    events.append(event)
                    if event["type"] == "sent" and not event["probe"]:
                        regular += 1
                    return regular >= HEARTBEATS or event["type"] in ("summary", "finished")

                client.wait_for(before_stop, timeout=30)
                server.send_signal(signal.SIGTERM)
                assert server.finish()[0] == 0
                down = client.wait_for(
                    lambda line: '"state"' in line and '"DOWN"' in line, timeout=15
                )
                status, out, _ = client.finish()
            proxy.send_signal(signal.SIGTERM)
            proxy_status, proxy_out, _ = proxy.finish()
    states = [event for event in events if event["type"] == "state"]
    assert [state["new"] for state in states if state["new"] == "DOWN"] == [], states
    lost = sum(1 for event in events if event["type"] == "lost")
    assert lost > 0, "the path lost nothing: not a test of a bursty path"
    assert json.loads(down)["new"] == "DOWN"
    assert status == 1  # declared down
    summary = json.loads(out[-1])
    assert summary["state"] == "DOWN"
    assert proxy_status == 0
    proxy_summary = json.loads(proxy_out[-1])
    assert proxy_summary["up"]["dropped_by_cause"]["loss"] > 0
    for direction in ("up", "down"):
        counters = proxy_summary[direction]
        assert counters["received"] + counters["duplicated"] == (
            counters["forwarded"] + counters["dropped"] + counters["in_flight"]
        )


def test_demo_through_a_bad_path() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "udpbeat", "demo", "--path", "bursty", "--count", "20",
         "--interval", "0.05", "--seed", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "through a bursty path, a proxy on 127.0.0.1:" in out
    assert "up: loss 0.1 in bursts of 4; down: loss 0.1 in bursts of 4" in out
    assert re.search(r"demo: stop detected \d+\.\d\ds after the server stopped", out)
    up = re.search(r"proxy up: (\d+) received, (\d+) forwarded, (\d+) dropped", out)
    assert up is not None
    received, forwarded, dropped = map(int, up.groups())
    assert received == forwarded + dropped and received > 0
