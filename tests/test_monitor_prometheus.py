"""A real Prometheus scraping a real monitor (loopback, temporary directory, 1 s scrapes), and
the shipped examples/prometheus/ checked by promtool. Skips when Prometheus is not installed
(``.ci/run`` installs Debian's package)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, Process
from test_monitor import reflector, wait_stderr

EXAMPLES = ROOT / "examples" / "prometheus"
COUNTERS = (
    "heartbeats_sent",
    "probes_sent",
    "replies",
    "late",
    "duplicates",
    "refused",
    "state_changes",
    "outages",
    "outage_seconds",
)
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus)"
)


@needs_promtool
@pytest.mark.parametrize(
    "check",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "rules.yml"),
        ("test", "rules", "rules_test.yml"),
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_the_shipped_prometheus_files_pass_promtool(check: tuple[str, str, str]) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *check], cwd=EXAMPLES, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PromQL:
    """Queries against Prometheus's HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expression: str) -> dict[str, float]:
        """Each result's value by its ``target`` label."""
        return {r["metric"].get("target", ""): float(r["value"][1]) for r in self.query(expression)}

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 25.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (OSError, KeyError, AssertionError) as error:
                last = error
            time.sleep(0.25)
        raise AssertionError(f"Prometheus never saw {what} within {timeout}s (last: {last})")


def monitor_config(path: Path, port_a: int, port_b: int, *, extra: str = "") -> None:
    lines = ["[defaults]\ninterval = 0.25\ntimeout = 0.5\n"]
    for i in range(1, 4):
        lines.append(
            f'[[targets]]\nname = "a-{i}"\nhost = "127.1.12.{i}"\nport = {port_a}\n'
            f'labels = {{ role = "db", dc = "dc{i}" }}\n'
        )
    lines.append(
        f'[[targets]]\nname = "b-1"\nhost = "127.0.0.1"\nport = {port_b}\n'
        'labels = { role = "web", dc = "dc9" }\n'
    )
    path.write_text("\n".join(lines) + extra)


@needs_prometheus
def test_prometheus_scrapes_every_target_sees_down_and_no_reset_across_sighup(
    tmp_path: Path,
) -> None:
    assert PROMETHEUS is not None
    a, b = reflector(), reflector()
    config = tmp_path / "monitor.toml"
    port_a, port_b = a.address[1], b.address[1]
    monitor_config(config, port_a, port_b)
    monitor_args = ["-m", "udpbeat", "monitor", "--config", str(config)]
    monitor_args += ["--listen", "127.0.0.1:0", "--view", "plain"]
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        with Process(monitor_args) as monitor:
            started = wait_stderr(monitor, "metrics on http://")
            target = started.split("metrics on http://")[1].split("/metrics")[0]
            web_port = free_tcp_port()
            (tmp_path / "prometheus.yml").write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: udpbeat\n    scrape_timeout: 1s\n"
                f"    static_configs:\n      - targets: ['{target}']\n"
            )
            prometheus = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{web_port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / "prometheus.log").open("wb"),
            )
            api = PromQL(f"http://127.0.0.1:{web_port}")

            # Every target's udpbeat_up, with the labels from the file.
            api.wait(
                "four targets UP",
                lambda: api.values("udpbeat_up") == {"a-1": 1, "a-2": 1, "a-3": 1, "b-1": 1},
            )
            series = {r["metric"]["target"]: r["metric"] for r in api.query("udpbeat_up")}
            assert series["a-2"]["role"] == "db" and series["a-2"]["dc"] == "dc2"
            assert series["b-1"]["role"] == "web" and series["b-1"]["job"] == "udpbeat"
            assert api.query('up{job="udpbeat"}')[0]["value"][1] == "1"

            # A reflector stops: its target goes DOWN, the others stay UP.
            b.stop()
            api.wait(
                "b-1 DOWN",
                lambda: (
                    api.values('udpbeat_state{state="DOWN"} == 1') == {"b-1": 1}
                    and api.values("udpbeat_up") == {"a-1": 1, "a-2": 1, "a-3": 1, "b-1": 0}
                ),
            )

            # SIGHUP with one target more: it appears, and no counter of the others resets.
            sent = api.values('udpbeat_heartbeats_sent_total{target=~"a-.*"}')
            monitor_config(
                config,
                port_a,
                port_b,
                extra=f'\n[[targets]]\nname = "a-4"\nhost = "127.1.12.4"\nport = {port_a}\n',
            )
            monitor.send_signal(signal.SIGHUP)
            wait_stderr(monitor, "1 added, 0 removed, 0 restarted, 4 unchanged")
            api.wait("a-4 UP", lambda: api.values('udpbeat_up{target="a-4"}') == {"a-4": 1})
            time.sleep(2.5)  # a few scrapes after the reload
            later = api.values('udpbeat_heartbeats_sent_total{target=~"a-[123]"}')
            assert all(later[name] > sent[name] for name in ("a-1", "a-2", "a-3"))
            for counter in COUNTERS:
                resets = api.values(f'resets(udpbeat_{counter}_total{{target!="a-4"}}[1m])')
                assert resets == {"a-1": 0, "a-2": 0, "a-3": 0, "b-1": 0}, (counter, resets)
            monitor.send_signal(signal.SIGTERM)
            status, _, _ = monitor.finish()
            assert status == 0
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(10)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()
        a.stop()
        b.stop()
