"""udpbeat monitor on real sockets, loopback only: 50 targets at 50 addresses of 127.0.0.0/8
answered by one reflector bound to 0.0.0.0, the HTTP endpoints, ICMP, and the command itself
(plain lines, --events, --on-change, SIGHUP, SIGTERM). Every wait has a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import WAIT, Process, free_udp_port
from prometheus_client.parser import text_string_to_metric_families

from udpbeat.budget import ProbeBudget
from udpbeat.detector import State
from udpbeat.monitor.config import MonitorConfig, parse_config
from udpbeat.monitor.fleet import Fleet
from udpbeat.monitor.http import make_app
from udpbeat.monitor.shell import Monitor
from udpbeat.reflector import ReflectorConfig
from udpbeat.server import BackgroundServer

TARGETS = 50


def reflector() -> BackgroundServer:
    """A reflector on every loopback address (it answers from the address asked)."""
    config = ReflectorConfig(rate_limit=0, log_events=False)
    return BackgroundServer("0.0.0.0", 0, config).start()


def loopback_fleet(port: int, count: int = TARGETS, **defaults: object) -> MonitorConfig:
    targets = [
        {
            "name": f"t{i:02d}",
            "host": f"127.1.7.{i + 1}",
            "labels": {"role": "db" if i % 2 else "web", "rack": str(i % 5)},
        }
        for i in range(count)
    ]
    return parse_config({"defaults": {"port": port, **defaults}, "targets": targets}, "test")


@contextlib.asynccontextmanager
async def running(
    config: MonitorConfig, budget: ProbeBudget | None = None
) -> AsyncIterator[tuple[Monitor, str]]:
    monitor = Monitor(Fleet(budget=budget))
    await monitor.apply(config)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    runner = web.AppRunner(make_app(monitor), access_log=None)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    task = asyncio.create_task(monitor.run())
    try:
        yield monitor, f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        monitor.stop()
        await asyncio.wait_for(task, WAIT)
        await runner.cleanup()
        monitor.close()


async def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_fifty_targets_from_one_socket_up_then_down() -> None:
    server = reflector()
    port = server.address[1]
    budget = ProbeBudget(200, 100)

    async def scenario() -> None:
        config = loopback_fleet(port, interval=0.2, timeout=0.5)
        async with running(config, budget) as (monitor, url), aiohttp.ClientSession() as http:
            fleet = monitor.fleet
            await until(lambda: all(t.state is State.UP for t in fleet))
            assert len(monitor.addresses()) == 1  # one socket for all fifty
            await asyncio.sleep(1.0)

            async with http.get(f"{url}/api/targets") as response:
                assert response.status == 200
                targets = (await response.json())["targets"]
            assert len(targets) == TARGETS
            first = next(t for t in targets if t["name"] == "t01")
            assert first["host"] == "127.1.7.2" and first["port"] == port
            assert first["labels"] == {"role": "db", "rack": "1"}
            assert first["state"] == "UP" and first["sent"] >= 5
            assert first["received"] >= first["sent"] - 1 and first["loss_percent"] == 0
            assert 0 < first["rtt_ms"]["p50"] < 50
            assert first["last_change"]["new"] == "UP" and first["outages"] == []
            # Every reply reached its own target: none from an unknown address.
            assert fleet.unknown_sources == 0
            assert sum(t["received"] for t in targets) <= sum(t.stats.received for t in fleet)

            async with http.get(f"{url}/metrics") as response:
                body = await response.text()
                assert response.headers["Content-Type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(body)}
            ups = families["udpbeat_up"].samples
            assert len(ups) == TARGETS and all(s.value == 1 for s in ups)
            assert ups[1].labels == {"target": "t01", "role": "db", "rack": "1"}
            assert "process_resident_memory_bytes" in families
            assert "udpbeat_monitor_targets" in families
            openmetrics = "application/openmetrics-text; version=1.0.0"
            async with http.get(f"{url}/metrics", headers={"Accept": openmetrics}) as response:
                assert response.headers["Content-Type"].startswith("application/openmetrics")
                assert (await response.text()).endswith("# EOF\n")
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200 and await response.text() == "ok\n"
            async with http.get(f"{url}/api/monitor") as response:
                about = await response.json()
            assert about["targets"] == TARGETS and about["states"]["UP"] == TARGETS
            spread = about["spread"]
            assert spread["sends"] >= 200  # 50 targets at 5 Hz
            # How evenly the phases spread is tested on the virtual clock (test_monitor_fleet):
            # wall-clock sends bunch up whenever a busy machine holds the loop up, so here only
            # the report's consistency is asserted.
            assert 1 <= spread["busiest_bin"] <= spread["sends"]

            # The reflector stops: every target goes DOWN, within the probe budget.
            server.stop()
            stopped = time.monotonic()
            probes_before = sum(t.stats.probes for t in fleet)
            granted_before = budget.granted
            await until(lambda: all(t.state is State.DOWN for t in fleet), timeout=15)
            elapsed = time.monotonic() - stopped
            probes = sum(t.stats.probes for t in fleet) - probes_before
            assert probes <= budget.granted - granted_before
            assert budget.granted - granted_before <= 200 * elapsed + 100 + 1
            refused = sum(t.stats.refused for t in fleet)
            assert refused > 0  # the closed port answered with ICMP, routed to each target
            async with http.get(f"{url}/api/targets?state=DOWN") as response:
                assert len((await response.json())["targets"]) == TARGETS
            async with http.get(f"{url}/metrics") as response:
                body = await response.text()
            families = {f.name: f for f in text_string_to_metric_families(body)}
            assert all(s.value == 0 for s in families["udpbeat_up"].samples)
            down = [
                s
                for s in families["udpbeat_state"].samples
                if s.labels["state"] == "DOWN" and s.value == 1
            ]
            assert len(down) == TARGETS

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_icmp_from_a_closed_port_marks_that_target_only() -> None:
    server = reflector()
    closed = free_udp_port("127.0.0.1")

    async def scenario() -> None:
        config = parse_config(
            {
                "defaults": {"interval": 0.2, "timeout": 1.0},
                "targets": [
                    {"name": "alive", "host": "127.1.8.1", "port": server.address[1]},
                    {"name": "closed", "host": "127.0.0.1", "port": closed},
                ],
            }
        )
        async with running(config) as (monitor, _):
            alive, dead = monitor.fleet.targets["alive"], monitor.fleet.targets["closed"]
            await until(lambda: dead.state is State.DOWN and alive.state is State.UP)
            assert dead.stats.refused >= 2 and alive.stats.refused == 0
            assert monitor.stats.icmp_errors >= 2
            assert dead.session.report().socket_errors.get("icmp-elsewhere", 0) == 0

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


# --- the command -----------------------------------------------------------------------------


def monitor_file(path: Path, port: int, closed: int, *, extra: str = "") -> None:
    path.write_text(
        f"""
[defaults]
port = {port}
interval = 0.2
timeout = 0.5

[[targets]]
name = "alive"
host = "127.1.9.1"
labels = {{ role = "db" }}

[[targets]]
name = "closed"
host = "127.1.9.2"
port = {closed}
labels = {{ role = "cache" }}
{extra}
"""
    )


def wait_stderr(process: Process, text: str, timeout: float = WAIT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(process.stderr_lines):
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no stderr line with {text!r}\n{process.output()}")


def wait_for_record(
    events: Path, wanted: Callable[[dict[str, Any]], bool], timeout: float = WAIT
) -> dict[str, Any]:
    """The first record of the ``--events`` file that ``wanted`` accepts, once it is written."""
    deadline = time.monotonic() + timeout
    while True:
        text = events.read_text() if events.exists() else ""
        # Only whole lines: the last one may be half written.
        for line in text[: text.rfind("\n") + 1].splitlines():
            record = json.loads(line)
            if wanted(record):
                return dict(record)
        if time.monotonic() > deadline:
            raise AssertionError(f"no such record in {events} within {timeout} s")
        time.sleep(0.05)


def get_json(url: str) -> dict[str, object]:
    async def fetch() -> dict[str, object]:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            result: dict[str, object] = await response.json()
            return result

    return asyncio.run(fetch())


def test_the_command_lines_events_hooks_reload_and_stop(tmp_path: Path) -> None:
    server = reflector()
    port = server.address[1]
    closed = free_udp_port("127.0.0.1")
    config, events, hooked = tmp_path / "m.toml", tmp_path / "events.jsonl", tmp_path / "hooks"
    monitor_file(config, port, closed)
    hook = f'echo "$UDPBEAT_TARGET $UDPBEAT_NEW_STATE $UDPBEAT_PORT $UDPBEAT_LABELS" >> {hooked}'
    args = ["-m", "udpbeat", "monitor", "--config", str(config), "--listen", "127.0.0.1:0"]
    args += ["--view", "plain", "--events", str(events), "--on-change", hook]
    try:
        with Process(args) as process:
            started = wait_stderr(process, "metrics on http://")
            url = started.split("metrics on ")[1].split("/metrics")[0]
            # In either order: the closed port's refusals can make DOWN before the first reply.
            expected = {
                "alive UP": lambda line: " alive (127.1.9.1:" in line and "-> UP" in line,
                "closed DOWN": lambda line: " closed (127.1.9.2:" in line and "-> DOWN" in line,
            }
            seen: set[str] = set()

            def both_seen(line: str) -> bool:
                seen.update(name for name, matches in expected.items() if matches(line))
                return len(seen) == len(expected)

            process.wait_for(both_seen)

            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and not (
                hooked.exists() and "closed DOWN" in hooked.read_text()
            ):
                time.sleep(0.05)
            assert f'closed DOWN {closed} {{"role": "cache"}}' in hooked.read_text()
            # The events file is written by a thread of its own: its line may follow the hook's.
            down = wait_for_record(events, lambda r: r["target"] == "closed" and r["new"] == "DOWN")
            assert down["port"] == closed and down["labels"] == {"role": "cache"}
            assert abs(down["time"] - time.time()) < 30

            before = get_json(f"{url}/api/targets")["targets"]
            assert isinstance(before, list)
            sent_before = next(t["sent"] for t in before if t["name"] == "alive")

            # SIGHUP with a new target: it starts, the others go on.
            monitor_file(
                config, port, closed, extra='[[targets]]\nname = "new"\nhost = "127.1.9.3"\n'
            )
            process.send_signal(signal.SIGHUP)
            wait_stderr(process, "1 added, 0 removed, 0 restarted, 2 unchanged")
            process.wait_for(lambda line: " new (127.1.9.3:" in line and "-> UP" in line)
            after = get_json(f"{url}/api/targets")["targets"]
            assert isinstance(after, list)
            alive = next(t for t in after if t["name"] == "alive")
            assert alive["state"] == "UP" and alive["sent"] > sent_before

            # SIGHUP with a bad file: one line, and the old targets stay.
            config.write_text(config.read_text() + "\n[[targets]]\nname = 'bad'\n")
            process.send_signal(signal.SIGHUP)
            refused = wait_stderr(process, "new configuration refused")
            assert str(config) in refused and "'bad'" in refused and "host" in refused
            assert len(get_json(f"{url}/api/targets")["targets"]) == 3  # type: ignore[arg-type]

            process.send_signal(signal.SIGTERM)
            status, out, err = process.finish()
        assert status == 0, process.output()
        assert any("stopped" in line for line in err)
        assert all(" -> " in line for line in out)  # stdout: one line per state change
    finally:
        server.stop()


def test_sharded_monitors_split_the_targets(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(
        "".join(f'[[targets]]\nname = "t{i}"\nhost = "127.1.10.{i + 1}"\n' for i in range(30))
    )
    seen: list[str] = []
    for index in range(3):
        args = ["-m", "udpbeat", "monitor", "--config", str(config), "--listen", "127.0.0.1:0"]
        args += ["--view", "plain", "--shard", f"{index}/3"]
        with Process(args) as process:
            started = wait_stderr(process, "metrics on http://")
            url = started.split("metrics on ")[1].split("/metrics")[0]
            targets = get_json(f"{url}/api/targets")["targets"]
            assert isinstance(targets, list)
            seen.extend(str(t["name"]) for t in targets)
            process.send_signal(signal.SIGTERM)
            assert process.finish()[0] == 0
    assert sorted(seen) == sorted(f"t{i}" for i in range(30))


@pytest.mark.skipif(not hasattr(os, "setsid"), reason="POSIX only")
def test_hooks_never_block_probing(tmp_path: Path) -> None:
    """A hook that sleeps does not hold up the probing loop (hooks are asyncio processes)."""
    server = reflector()

    async def scenario() -> None:
        from udpbeat.hooks import HookRunner

        config = loopback_fleet(server.address[1], count=5, interval=0.1)
        hooks = HookRunner("sleep 5", "", on_failure=lambda message: None, max_running=1)
        monitor = Monitor(Fleet())

        def on_changes(changes: list[object]) -> None:
            for change in changes:
                hooks.notify(change.transition, target=change.target.name)  # type: ignore[attr-defined]

        monitor._on_changes = on_changes
        await monitor.apply(config)
        task = asyncio.create_task(monitor.run())
        try:
            await until(lambda: all(t.state is State.UP for t in monitor.fleet))
            sent = sum(t.stats.sent for t in monitor.fleet)
            await asyncio.sleep(1.0)
            assert sum(t.stats.sent for t in monitor.fleet) >= sent + 40
            assert hooks.running == 1
        finally:
            monitor.stop()
            await task
            monitor.close()
            await hooks.close(timeout=0.1)

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_the_live_view_draws_snapshots_and_lines_off_the_loop() -> None:
    import io

    from test_monitor_fleet import START, Net

    from udpbeat.cli.monitor import LiveView, take_snapshot

    net = Net(loopback_fleet(12000, count=30))
    net.alive.discard("t03")
    net.run(START + 10)
    snapshot = take_snapshot(net.fleet, 1.7e9 - START, "http://127.0.0.1:9812")
    assert snapshot.counts == {"UNKNOWN": 0, "UP": 29, "SUSPECT": 0, "DOWN": 1}
    assert [row[0] for row in snapshot.problems] == ["t03"]
    stream = io.StringIO()
    view = LiveView(stream)  # type: ignore[arg-type]
    view.post(snapshot, ["12:00:00.000 t03 (127.1.7.4:12000) SUSPECT -> DOWN: gone"])
    view.close()
    text = stream.getvalue()
    assert "t03" in text and "SUSPECT -> DOWN: gone" in text
    assert "UP" in text and "29" in text
