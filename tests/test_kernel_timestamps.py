"""Arrival times from the kernel's receive stamps, and a wall-clock step that distorts nothing."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from udpbeat import BackgroundServer, ReflectorConfig, probe
from udpbeat._net import ClockBridge
from udpbeat.events import Event, ReplyReceived

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux's"
)


class Clocks:
    """A monotonic and a wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_764_000_000.0

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def _bridge(clocks: Clocks) -> ClockBridge:
    return ClockBridge(lambda: clocks.mono, lambda: clocks.wall)


def test_a_stamp_is_brought_onto_the_monotonic_clock() -> None:
    clocks = Clocks()
    bridge = _bridge(clocks)
    bridge.drained(clocks.mono)
    arrival_wall, arrival_mono = clocks.wall + 0.010, clocks.mono + 0.010
    clocks.tick(0.015)  # read 5 ms after it arrived
    bridge.measure()
    # Unix seconds as a float resolve about 0.24 us today: within a microsecond.
    assert bridge.convert(arrival_wall, clocks.mono) == pytest.approx(arrival_mono, abs=1e-6)
    assert (bridge.used, bridge.refused) == (1, 0)


def test_no_stamp_or_no_measure_gives_none() -> None:
    clocks = Clocks()
    bridge = _bridge(clocks)
    assert bridge.convert(clocks.wall, clocks.mono) is None  # never measured
    bridge.measure()
    assert bridge.convert(None, clocks.mono) is None


@pytest.mark.parametrize("step", [-3600.0, -0.2, -0.002, 0.002, 0.2, 3600.0])
def test_stamps_read_after_a_wall_clock_step_are_refused(step: float) -> None:
    clocks = Clocks()
    bridge = _bridge(clocks)
    bridge.measure()
    bridge.drained(clocks.mono)
    clocks.tick(0.5)
    stamp = clocks.wall  # stamped before the step
    clocks.wall += step  # NTP steps the wall clock
    clocks.tick(0.001)
    bridge.measure()
    assert bridge.convert(stamp, clocks.mono) is None
    assert bridge.refused == 1


def test_a_slewing_clock_is_not_a_step() -> None:
    clocks = Clocks()
    bridge = _bridge(clocks)
    bridge.measure()
    for _ in range(10):
        bridge.drained(clocks.mono)
        clocks.tick(1.0)
        clocks.wall += 0.0004  # 400 ppm: as fast as NTP slews
        stamp = clocks.wall - 0.001
        bridge.measure()
        assert bridge.convert(stamp, clocks.mono) is not None
    assert bridge.refused == 0


def test_a_stamp_from_before_the_socket_was_empty_or_from_the_future_is_refused() -> None:
    clocks = Clocks()
    bridge = _bridge(clocks)
    bridge.measure()
    clocks.tick(1.0)
    bridge.drained(clocks.mono)
    clocks.tick(0.1)
    bridge.measure()
    assert bridge.convert(clocks.wall - 0.5, clocks.mono) is None  # before the drain
    assert bridge.convert(clocks.wall + 0.5, clocks.mono) is None  # in the future
    assert bridge.convert(clocks.wall - 0.05, clocks.mono) is not None


def test_a_send_stamp_is_brought_onto_the_monotonic_clock() -> None:
    clocks = Clocks()
    bridge = _bridge(clocks)
    bridge.measure()
    left_wall, left_mono = clocks.wall + 0.00004, clocks.mono + 0.00004
    clocks.tick(0.0002)
    bridge.measure()
    assert bridge.convert_send(left_wall, clocks.mono) == pytest.approx(left_mono, abs=1e-6)
    assert bridge.convert_send(clocks.wall + 0.5, clocks.mono) is None  # in the future
    assert bridge.refused == 1


@pytest.mark.parametrize("step", [-0.2, 0.2])
def test_send_stamps_read_after_a_wall_clock_step_are_refused(step: float) -> None:
    clocks = Clocks()
    bridge = _bridge(clocks)
    bridge.measure()
    clocks.tick(0.01)
    stamp = clocks.wall
    clocks.wall += step
    clocks.tick(0.001)
    bridge.measure()
    assert bridge.convert_send(stamp, clocks.mono) is None


@pytest.fixture
def reflector():  # type: ignore[no-untyped-def]
    with BackgroundServer("127.0.0.1", 0, ReflectorConfig(rate_limit=0, log_events=False)) as s:
        yield s


@linux_only
@pytest.mark.parametrize(("kernel", "kind"), [(True, "kernel"), (False, "user")])
def test_the_report_and_events_say_which_stamp_was_used(
    reflector: BackgroundServer, kernel: bool, kind: str
) -> None:
    host, port = reflector.address
    events: list[Event] = []

    async def run():  # type: ignore[no-untyped-def]
        return await probe(
            host,
            port,
            count=10,
            interval=0.01,
            first_seq=1,
            on_event=events.append,
            kernel_timestamps=kernel,
        )

    report = asyncio.run(run())
    assert report.received == 10
    assert report.receive_timestamps == {kind: 10}
    assert report.to_dict()["receive_timestamps"] == {kind: 10}
    # Each RTT started at the kernel's stamp of the heartbeat leaving, or at the clock read
    # before the send call.
    assert report.send_timestamps == {kind: 10}
    assert report.to_dict()["send_timestamps"] == {kind: 10}
    replies = [e for e in events if isinstance(e, ReplyReceived)]
    assert {e.timestamp for e in replies} == {kind}


@linux_only
@pytest.mark.parametrize("step", [-5.0, -0.3, 0.3, 5.0])
def test_a_wall_clock_step_during_a_run_distorts_no_rtt(
    reflector: BackgroundServer, step: float
) -> None:
    host, port = reflector.address
    probers = []

    async def run():  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        step_at = loop.time() + 0.1

        def wall() -> float:  # the wall clock udpbeat reads: stepped 0.1 s into the run
            return time.time() + (step if loop.time() >= step_at else 0.0)

        def started(prober):  # type: ignore[no-untyped-def]
            prober._bridge._wall = wall
            probers.append(prober)

        return await probe(host, port, count=30, interval=0.01, on_start=started)

    report = asyncio.run(run())
    assert report.received == 30
    assert report.rtt.max is not None and report.rtt.max < 0.05, report.rtt
    assert report.rtt.min is not None and report.rtt.min > 0, report.rtt
    bridge = probers[0]._bridge
    assert bridge.refused >= 1, "the stamps read after the step were refused"
    assert report.receive_timestamps.get("kernel", 0) >= 1, "before the step they were used"


@linux_only
def test_a_socket_without_kernel_stamps_falls_back_to_the_clock(
    reflector: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a system without SO_TIMESTAMPNS and SO_TIMESTAMPING: the options are refused.
    monkeypatch.setattr("udpbeat.client.enable_receive_timestamps", lambda sock: False)
    host, port = reflector.address

    async def run():  # type: ignore[no-untyped-def]
        return await probe(host, port, count=5, interval=0.01, first_seq=1)

    report = asyncio.run(run())
    assert report.received == 5
    assert report.receive_timestamps == {"user": 5}
    assert report.send_timestamps == {"user": 5}
