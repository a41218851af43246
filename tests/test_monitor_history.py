"""The monitor's history: minutes that add up to the fleet's counters (on a virtual clock), a
restart that resumes an open outage and goes on counting (the real command, twice), and bad
``--db``/``--retention`` values that stop with one line and exit 2, the file untouched."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import WAIT, Process, free_udp_port, run_main
from test_monitor_fleet import START, Net, fleet_config, resolved

from udpbeat.detector import State
from udpbeat.monitor.history import HistoryReader, HistoryWriter
from udpbeat.monitor.recorder import Recorder, minute_of
from udpbeat.reflector import ReflectorConfig
from udpbeat.server import BackgroundServer

WALL = 1_800_000_000.0  # a minute boundary, as Unix time, for the virtual clock's START


def test_minutes_add_up_to_the_counters_and_outages_are_recorded(tmp_path: Path) -> None:
    net = Net(fleet_config(20, interval=0.5, detector="consecutive", max_misses=3))
    offset = WALL - START
    writer = HistoryWriter(tmp_path / "h.db", period=0.05, clock=lambda: net.now + offset)
    recorder = Recorder(net.fleet, writer, clock=lambda: net.now, wall=lambda: net.now + offset)
    recorder.watch_all()
    assert recorder.current == minute_of(WALL)

    async def closes() -> None:
        for minute in range(1, 4):
            if minute == 2:
                net.alive -= {"t3", "t7"}  # they stop answering in the second minute
            for second in range(60):  # changes reach the recorder as often as the shell's
                net.run(START + 60 * (minute - 1) + second + 1.001)
                recorder.changes(net.fleet.take_changes(), offset)
            await recorder.close_minute()

    asyncio.run(closes())
    assert writer.flush()
    writer.close()
    assert recorder.closes == 3
    with HistoryReader(tmp_path / "h.db") as history:
        assert len(history.targets()) == 20
        for name in ("t0", "t3"):
            stats = net.target(name).stats
            rows = history.minutes(name)
            assert [row.start for row in rows] == [WALL, WALL + 60, WALL + 120]
            # Every heartbeat settled before the last close is in exactly one minute.
            assert sum(r.answered for r in rows) == stats.received
            assert sum(r.lost for r in rows) == stats.lost + stats.refused
            assert sum(r.sent for r in rows) == stats.sent
        alive, dead = history.minutes("t0"), history.minutes("t3")
        assert all(r.lost == 0 and r.state == "UP" and r.rtt_p50 is not None for r in alive)
        assert 355 <= sum(r.sent for r in alive) <= 362  # two a second for three minutes
        assert dead[0].lost == 0 and dead[2].answered == 0 and dead[2].rtt_max is None
        assert dead[2].state == "DOWN" and dead[2].loss == 1.0
        outages = {o.target: o for o in history.outages()}
        assert set(outages) == {"t3", "t7"}
        assert outages["t3"].end is None and 60 < outages["t3"].start - WALL < 120
        assert outages["t3"].lost >= 200  # the two minutes since, at two a second
        assert [c.new for c in history.changes("t3")] == ["UP", "SUSPECT", "DOWN"]
    assert recorder.loss(net.target("t0"), 60).ratio == 0.0
    assert recorder.loss(net.target("t3"), 1).ratio == 1.0
    hour = recorder.hour(net.target("t3"))
    assert [row.state for row in hour[:3]] == ["UP", "DOWN", "DOWN"]

    # A restart takes the last hour back from the file: the loss over an hour goes on.
    reopened = HistoryWriter(tmp_path / "h.db", clock=lambda: net.now + offset)
    again = Recorder(net.fleet, reopened, clock=lambda: net.now, wall=lambda: net.now + offset)
    assert again.resume(reopened.resumed) == 20
    reopened.close()
    for name in ("t0", "t3"):
        before, after = recorder.hour(net.target(name))[:3], again.hour(net.target(name))[:3]
        assert [(r.start, r.sent, r.answered, r.lost, r.state) for r in after] == [
            (r.start, r.sent, r.answered, r.lost, r.state) for r in before
        ]
        for old, new in zip(before, after, strict=True):  # RTTs are kept to the microsecond
            assert new.rtt_p50 == pytest.approx(old.rtt_p50, abs=1e-6)
    assert again.loss(net.target("t3"), 60) == recorder.loss(net.target("t3"), 60)


def test_outages_of_targets_no_longer_watched_end_where_they_were_last_seen(
    tmp_path: Path,
) -> None:
    config = fleet_config(4, interval=0.5, detector="consecutive", max_misses=3)
    net = Net(config)
    net.alive.discard("t1")
    offset = WALL - START
    path = tmp_path / "h.db"

    def recorder_for(net: Net, writer: HistoryWriter) -> Recorder:
        return Recorder(net.fleet, writer, clock=lambda: net.now, wall=lambda: net.now + offset)

    writer = HistoryWriter(path, clock=lambda: net.now + offset)
    recorder = recorder_for(net, writer)
    recorder.watch_all()

    async def minute(until: float) -> None:
        while net.now < until:
            net.run(min(until, net.now + 1))
            recorder.changes(net.fleet.take_changes(), offset)
        await recorder.close_minute()

    asyncio.run(minute(START + 60.5))
    # A reload removes t1 while it is DOWN: its outage ends at the next close.
    net.fleet.apply(resolved(t for t in config.targets if t.name != "t1"), net.now)
    asyncio.run(minute(START + 120.5))
    assert writer.flush()
    with HistoryReader(path) as history:
        (outage,) = history.outages()
        assert outage.target == "t1" and outage.end == pytest.approx(WALL + 120.5)
        assert outage.lost >= 100  # two a second for the minute it was watched

    # A target DOWN when the monitor stopped, and not in its file when it starts again.
    net.fleet.apply(resolved(config.targets), net.now)
    asyncio.run(minute(START + 180.5))
    last_seen = net.now + offset
    writer.close()
    with HistoryReader(path) as history:
        assert [o.end for o in history.outages()][-1] is None
    smaller = Net(fleet_config(4, interval=0.5))
    smaller.fleet.apply(resolved(t for t in config.targets if t.name != "t1"), smaller.now)
    reopened = HistoryWriter(path, clock=lambda: net.now + offset)
    assert recorder_for(smaller, reopened).resume(reopened.resumed) == 3
    reopened.close()
    with HistoryReader(path) as history:
        assert all(o.end is not None for o in history.outages())
        assert history.outages()[-1].end == pytest.approx(last_seen)


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def started_url(process: Process) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for line in list(process.stderr_lines):
            if "status page on " in line:
                return line.split("status page on ")[1].split("/,")[0]
        time.sleep(0.05)
    raise AssertionError(process.output())


def targets(url: str) -> dict[str, dict[str, object]]:
    listed = get_json(f"{url}/api/targets")["targets"]
    assert isinstance(listed, list)
    return {t["name"]: t for t in listed}


def test_a_restart_resumes_the_open_outage_and_the_counters(tmp_path: Path) -> None:
    server = BackgroundServer("127.0.0.1", 0, ReflectorConfig(rate_limit=0, log_events=False))
    server.start()
    closed = free_udp_port()
    config = tmp_path / "m.toml"
    config.write_text(
        f"""[defaults]
interval = 0.1
detector = "consecutive"
max_misses = 3
[[targets]]
name = "alive"
host = "127.0.0.1"
port = {server.address[1]}
[[targets]]
name = "gone"
host = "127.0.0.1"
port = {closed}
"""
    )
    db = tmp_path / "history.db"
    args = ["-m", "udpbeat", "monitor", "--config", str(config), "--db", str(db)]
    args += ["--listen", "127.0.0.1:0", "--view", "plain"]
    revived: BackgroundServer | None = None
    try:
        with Process(args) as first:
            first.wait_for(lambda line: " gone (" in line and "-> DOWN" in line)
            url = started_url(first)
            deadline = time.monotonic() + WAIT
            while targets(url)["alive"]["sent"] < 5:  # type: ignore[operator]
                assert time.monotonic() < deadline, first.output()
                time.sleep(0.05)
            first.send_signal(signal.SIGTERM)
            status, _, _ = first.finish()
        assert status == 0, first.output()
        with HistoryReader(db) as history:
            (outage,) = history.outages()
            assert outage.target == "gone" and outage.end is None
            saved = {t.name: t for t in history.targets()}
            (alive_up,) = history.changes("alive")
        sent_before = saved["alive"].counters["sent"]
        assert sent_before >= 5 and saved["gone"].state == "DOWN"

        with Process(args) as second:
            url = started_url(second)
            assert any("2 targets resumed" in line for line in second.stderr_lines)
            now = targets(url)
            # Counters go on from where they were; the outage is the same one, still open.
            assert now["alive"]["sent"] >= sent_before
            assert now["gone"]["outages_total"] == 1 and now["gone"]["state"] != "UP"
            (open_outage,) = now["gone"]["outages"]
            assert open_outage["end"] is None
            assert abs(open_outage["start"] - outage.start) < 0.01
            second.wait_for(lambda line: " gone (" in line and "-> DOWN" in line)
            assert targets(url)["gone"]["outages_total"] == 1
            # "alive" came back UP as it was: for a person it has been UP since the first run.
            last = targets(url)["alive"]["last_change"]
            assert isinstance(last, dict) and last["new"] == "UP"
            assert abs(last["time"] - alive_up.time) < 0.01
            page = urllib.request.urlopen(f"{url}/target?name=gone", timeout=WAIT).read().decode()
            assert "still DOWN" in page
            # The host comes back: the outage that began before the restart ends.
            revived = BackgroundServer(
                "127.0.0.1", closed, ReflectorConfig(rate_limit=0, log_events=False)
            ).start()
            second.wait_for(lambda line: " gone (" in line and "DOWN -> UP" in line)
            second.send_signal(signal.SIGTERM)
            status, _, _ = second.finish()
        assert status == 0, second.output()
        with HistoryReader(db) as history:
            (outage,) = history.outages()
            assert outage.end is not None and outage.start < outage.end
            assert outage.lost >= 3
            gone = next(t for t in history.targets() if t.name == "gone")
            assert gone.state == State.UP and gone.counters["outages"] == 1
            assert history.targets()[0].counters["sent"] > sent_before
    finally:
        server.stop()
        if revived is not None:
            revived.stop()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--db", "{foreign}"], "not a udpbeat history"),
        (["--db", "{folder}"], "is a directory"),
        (["--db", "{history}", "--retention", "0"], "--retention"),
        (["--db", "{history}", "--retention", "soon"], "--retention"),
        (["--retention", "7"], "--retention needs --db"),
    ],
)
def test_bad_history_flags_stop_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a database\n" * 20)
    before = digest(foreign)
    names = {"foreign": foreign, "folder": tmp_path, "history": tmp_path / "new.db"}
    given = [flag.format(**names) for flag in flags]
    status, out, err = run_main(capsys, "monitor", "127.0.0.1:9", "--listen", "off", *given)
    assert status == 2 and out == []
    assert len(err) == 1 and expected in err[0], err
    assert digest(foreign) == before
    assert not (tmp_path / "new.db").exists()
