"""The Python API: sync and async entry points, from plain scripts and from a running loop."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from helpers import free_udp_port

from udpbeat import (
    BackgroundServer,
    ConfigError,
    ConsecutiveDetector,
    ProbeReport,
    ReflectorConfig,
    Server,
    State,
    probe,
    probe_sync,
    run_sync,
    start_background_server,
)
from udpbeat.reflector import Reflected

QUICK = {"count": 3, "interval": 0.0, "timeout": 0.5}


def test_probe_sync_without_a_running_loop() -> None:
    with BackgroundServer() as server:
        host, port = server.address
        report = probe_sync(host, port, **QUICK)
        assert server.counters.replied == 3
    assert isinstance(report, ProbeReport)
    assert (report.sent, report.received, report.state) == (3, 3, State.UP)
    assert report.target == f"127.0.0.1:{port}"


def test_probe_sync_inside_a_running_loop_as_in_jupyter() -> None:
    # Jupyter runs the cell's code on a thread whose event loop is already running, where
    # asyncio.run() refuses to start; probe_sync must still work there.
    async def cell(port: int) -> tuple[ProbeReport, str]:
        naive = asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            asyncio.run(naive)  # what a notebook cell calling asyncio.run() would hit
        naive.close()
        report = probe_sync("127.0.0.1", port, **QUICK)
        return report, threading.current_thread().name

    with BackgroundServer() as server:
        report, thread = asyncio.run(cell(server.address[1]))
    assert thread == threading.current_thread().name
    assert report.received == 3 and report.state is State.UP


def test_run_sync_returns_the_result_with_or_without_a_loop() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def inside() -> int:
        return run_sync(answer())

    assert run_sync(answer()) == 42
    assert asyncio.run(inside()) == 42


def test_background_server_start_stop() -> None:
    server = BackgroundServer("127.0.0.1", 0)
    assert server.start() is server
    port = server.address[1]
    assert port != 0
    report = probe_sync("127.0.0.1", port, **QUICK)
    counters = server.stop()
    assert counters.received == counters.replied == 3
    assert report.received == 3
    assert server.stop() == counters  # stopping twice is harmless
    # The port is closed now: a heartbeat to it is refused.
    after = probe_sync("127.0.0.1", port, count=3, interval=0.0, timeout=1.0)
    assert after.refused == 3 and after.state is State.DOWN


def test_background_server_hands_over_records() -> None:
    records: list[Reflected] = []
    with start_background_server(loss=1.0, seed=1, on_records=records.extend) as server:
        report = probe_sync(
            "127.0.0.1",
            server.address[1],
            count=3,
            interval=0.0,
            timeout=0.1,
            detector=ConsecutiveDetector(3, 0.1),  # no confirmation probes: exactly 3 datagrams
        )
        counters = server.stop()
    assert counters.dropped_loss == 3 and counters.replied == 0
    assert report.received == 0 and report.state is State.DOWN
    assert [r.outcome for r in records] == ["dropped-loss"] * 3


def test_background_server_that_cannot_bind_raises_and_cleans_up() -> None:
    with BackgroundServer() as taken:
        server = BackgroundServer("127.0.0.1", taken.address[1])
        with pytest.raises(ConfigError, match="cannot bind"):
            server.start()
    with pytest.raises(ConfigError, match="cannot resolve"):
        BackgroundServer("no-such-host.invalid", 0).start()


def test_server_as_an_async_context_manager() -> None:
    async def main() -> tuple[ProbeReport, Server]:
        async with Server("127.0.0.1", 0, ReflectorConfig()) as server:
            report = await probe("127.0.0.1", server.address[1], **QUICK)  # type: ignore[arg-type]
        return report, server

    report, server = asyncio.run(main())
    assert report.received == 3
    assert server.counters.replied == 3
    with pytest.raises(RuntimeError):
        server.address  # noqa: B018 - closed: no address any more


def test_report_to_dict_is_json_and_agrees_with_the_report() -> None:
    with BackgroundServer() as server:
        report = probe_sync("127.0.0.1", server.address[1], count=5, interval=0.0, timeout=0.5)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["type"] == "summary"
    assert data["target"] == report.target
    for key in (
        "sent",
        "received",
        "lost",
        "refused",
        "late",
        "duplicates",
        "unknown",
        "in_flight",
    ):
        assert data[key] == getattr(report, key)
    assert data["state"] == "UP"
    assert data["loss_percent"] == 0.0
    assert data["rtt_ms"]["count"] == 5
    assert report.rtt.min is not None
    # Milliseconds rounded to the nanosecond: within half a nanosecond (5e-7 ms).
    assert data["rtt_ms"]["min"] == pytest.approx(report.rtt.min * 1e3, abs=5e-7)
    assert data["detector"]["name"] == "adaptive"  # the API's default, as the CLI's
    assert data["detector"]["false_alarm"] == 1e-9
    assert data["transitions"][0]["new"] == "UP"
    assert data["outages"] == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"count": 0}, "count"),
        ({"timeout": 0}, "timeout"),
        ({"interval": -1}, "interval"),
    ],
)
def test_bad_settings_raise_config_error(options: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        probe_sync("127.0.0.1", free_udp_port(), **options)


def test_unresolvable_host_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot resolve host"):
        probe_sync("no-such-host.invalid", 12000, count=1)
