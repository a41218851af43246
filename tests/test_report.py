"""``udpbeat report``: plots and a page from a client capture, a monitor's events log or its
history, checked by reading the files back (PNG headers, SVG as XML, the page's text).

Inputs are made here: a real ``udpbeat client --json`` run against a real reflector on loopback
(short), a monitor's fleet driven on a virtual clock with its events written by the monitor's
own ``change_record``, a history written by the monitor's own ``HistoryWriter``, and sessions
on the virtual clock of :mod:`udpbeat.testing`.
"""

from __future__ import annotations

import contextlib
import heapq
import html
import json
import random
import re
import sqlite3
import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from helpers import ROOT, free_udp_port, run_main

import udpbeat
from udpbeat import ProbeConfig, Reflector, event_to_dict, plots
from udpbeat.cli.monitor import change_record
from udpbeat.monitor.config import parse_config
from udpbeat.monitor.fleet import Fleet, Target
from udpbeat.monitor.history import ChangeRow, HistoryWriter, MinuteRow, TargetRecord
from udpbeat.reflector import ReflectorConfig
from udpbeat.series import (
    InputError,
    InputKind,
    detect_kind,
    parse_events_log,
    series_from_records,
    summarize,
)
from udpbeat.testing import SessionDriver

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Every figure is WIDTH inches at DPI dots per inch.
WIDTH_PIXELS = round(plots.WIDTH * plots.DPI)
WALL_OFFSET = 1_764_000_000.0


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (it always comes first)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def svg_root(path: Path) -> ElementTree.Element:
    root = ElementTree.fromstring(path.read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    return run_main(capsys, "report", *args)


def check_figure(directory: Path, stem: str, min_height: int = 200) -> None:
    width, height = png_size(directory / f"{stem}.png")
    assert width == WIDTH_PIXELS and height >= min_height
    svg_root(directory / f"{stem}.svg")
    assert (directory / f"{stem}.png").stat().st_size > 5_000


def table_rows(page: str, heading: str) -> list[list[str]]:
    """The cells of each body row of the table after ``<h2>heading</h2>``, unescaped."""
    section = page.split(f"<h2>{heading}</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section.split("<tbody>", 1)[1], flags=re.S)
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td>(.*?)</td>", r)]
        for r in rows
    ]


# -- a real client capture -------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """``udpbeat client --json`` against a lossy reflector and a closed port, at once."""
    closed = free_udp_port()
    with udpbeat.start_background_server("127.0.0.1", 0, loss=0.3, seed=5) as server:
        port = server.address[1]
        args = [f"127.0.0.1:{port}", f"127.0.0.1:{closed}"]
        args += ["--count", "30", "--interval", "0.02", "--timeout", "0.2", "--json"]
        run = subprocess.run(
            [sys.executable, "-m", "udpbeat", "client", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert run.returncode == 1, run.stderr  # the closed port ends DOWN
    path = tmp_path_factory.mktemp("capture") / "capture.jsonl"
    path.write_text(run.stdout)
    return path, f"127.0.0.1:{port}", f"127.0.0.1:{closed}"


def test_report_from_a_real_client_capture(
    client_capture: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, alive, closed = client_capture
    out = tmp_path / "report"
    status, stdout, stderr = report(capsys, str(path), "--output", str(out))
    assert status == 0, stderr
    assert stdout[0].startswith(f"{path}: client --json capture, 2 targets, ")
    names = ["rtt", "rtt-distribution", "outages"]
    expected = [out / f"{n}.{ext}" for n in names for ext in ("png", "svg")] + [out / "report.html"]
    assert stdout[1:] == [f"wrote {p}" for p in expected]
    assert sorted(out.iterdir()) == sorted(expected)
    check_figure(out, "rtt", min_height=2 * 220)  # a panel per target
    check_figure(out, "rtt-distribution")
    check_figure(out, "outages")

    page = (out / "report.html").read_text()
    summaries = {
        obj["target"]: obj
        for obj in map(json.loads, path.read_text().splitlines())
        if obj["type"] == "summary"
    }
    rows = {row[0]: row for row in table_rows(page, "Targets")}
    assert set(rows) == {alive, closed}
    # The page's figures agree with the client's own summary.
    for name, summary in summaries.items():
        row = rows[name]
        assert row[1] == summary["state"]
        assert int(row[2]) == summary["received"]
        assert int(row[3]) == summary["lost"] + summary["refused"]
    assert rows[alive][1] in ("UP", "SUSPECT") and 0 < int(rows[alive][3]) < 40
    assert float(rows[alive][5]) == pytest.approx(summaries[alive]["rtt_ms"]["min"], abs=1e-3)
    assert rows[closed][1] == "DOWN" and rows[closed][2] == "0"
    outages = table_rows(page, "Outages")
    assert [row[0] for row in outages] == [closed]
    assert outages[0][2] == "still down"
    (counted,) = summaries[closed]["outages"]
    heartbeats, probes = counted["heartbeats_lost"], counted["probes_lost"]
    assert outages[0][4] == f"{heartbeats + probes} ({heartbeats} heartbeats, {probes} probes)"
    # The images are inlined and linked to their files.
    assert page.count('<img src="data:image/png;base64,') == 3
    for name in names:
        assert f'href="{name}.svg"' in page and f'href="{name}.png"' in page


def test_a_target_and_a_time_window_are_chosen(
    client_capture: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, alive, closed = client_capture
    out = tmp_path / "one"
    status, stdout, stderr = report(capsys, str(path), "-o", str(out), "--target", alive)
    assert status == 0, stderr
    assert ", 1 target, " in stdout[0]
    page = (out / "report.html").read_text()
    assert [row[0] for row in table_rows(page, "Targets")] == [alive]
    assert closed not in page and "No outage" in page

    status, _, stderr = report(capsys, str(path), "-o", str(out), "--target", "nowhere:1")
    assert status == 2 and len(stderr) == 1 and "no target named 'nowhere:1'" in stderr[0]

    # A window after the run holds nothing.
    status, _, stderr = report(capsys, str(path), "-o", str(out), "--since", "2100-01-01")
    assert status == 2 and stderr == [
        f"udpbeat: error: {path}: nothing happened between --since and --until"
    ]


# -- a monitor's events log ------------------------------------------------------------------


def fleet_events(seconds: float = 200.0) -> list[str]:
    """The ``--events`` lines of a monitor watching three targets on a virtual clock: ``alive``,
    ``lossy`` (30% of heartbeats lost) and ``flaky``, which stops answering from 160 s to 170 s
    and for good from 180 s: the adaptive detector wants 300 clean outcomes before it calls a
    stop on a clean path within a second or two (before, its cold start's caution), and 160 s
    at 0.5 s gives it 320."""
    config = parse_config(
        {
            "defaults": {"port": 12000, "interval": 0.5, "timeout": 0.5},
            "targets": [
                {"name": "alive", "host": "127.1.20.1"},
                {"name": "lossy", "host": "127.1.20.2"},
                {"name": "flaky", "host": "127.1.20.3"},
            ],
        },
        "test",
    )
    reflector = Reflector(ReflectorConfig(rate_limit=0, log_events=False))
    rng = random.Random(4)
    arrivals: list[tuple[float, int, bytes, bytes]] = []
    now = 0.0

    def clock() -> float:
        return now

    def answered(target: Target) -> bool:
        if target.name == "lossy":
            return rng.random() >= 0.3
        if target.name == "flaky":
            return not (160 <= now < 170 or now >= 180)
        return True

    def send(target: Target, datagram: bytes) -> None:
        if answered(target):
            at = now + 0.001
            reply = reflector.reflect(datagram, ("192.0.2.1", 40000), at, at + WALL_OFFSET)
            assert reply is not None
            heapq.heappush(arrivals, (at, len(arrivals), target.key, reply))

    fleet = Fleet(send)
    fleet.apply([(t, (t.host, t.port)) for t in config.targets], now)
    lines = []
    while True:
        due = min(t for t in (fleet.next_timer(), arrivals[0][0] if arrivals else None) if t)
        if due > seconds:
            break
        now = max(now, due)
        while arrivals and arrivals[0][0] <= now:
            at, _, key, data = heapq.heappop(arrivals)
            fleet.receive(key, data, at)
        fleet.run_due(clock, WALL_OFFSET)
        lines += [json.dumps(change_record(c, WALL_OFFSET)) for c in fleet.take_changes()]
    return lines


def test_a_restarted_monitor_continues_an_outage_in_its_events_log() -> None:
    def change(at: float, old: str, new: str) -> str:
        record = {"time": WALL_OFFSET + at, "target": "db", "old": old, "new": new}
        return json.dumps({**record, "reason": "r"})

    log = [change(0, "UNKNOWN", "UP"), change(10, "UP", "DOWN")]
    log += [change(20, "UNKNOWN", "DOWN"), change(30, "DOWN", "UP")]  # restarted at 20 s
    (db,) = parse_events_log("\n".join(log)).targets
    assert [(o.start, o.end) for o in db.outages] == [(WALL_OFFSET + 10, WALL_OFFSET + 30)]
    assert [s.state for s in db.states] == ["UP", "DOWN", "UP"]
    assert summarize(db).downtime == 20


def test_report_from_a_monitor_events_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.log"
    path.write_text("\n".join(fleet_events()) + "\n")
    out = tmp_path / "report"
    status, stdout, stderr = report(capsys, str(path), "--output", str(out))
    assert status == 0, stderr
    assert stdout[0].startswith(f"{path}: monitor --events log, 3 targets, ")
    # An events log holds no RTTs: only the timeline.
    assert sorted(p.name for p in out.iterdir()) == ["outages.png", "outages.svg", "report.html"]
    check_figure(out, "outages")
    page = (out / "report.html").read_text()
    rows = {row[0]: row for row in table_rows(page, "Targets")}
    assert rows["alive"][1] == "UP" and rows["flaky"][1] == "DOWN"
    assert rows["lossy"][1] in ("UP", "SUSPECT")
    outages = table_rows(page, "Outages")
    flaky = [row for row in outages if row[0] == "flaky"]
    # Open first: the stop at 180 s, still going; then the one from about 160 s to 170 s.
    assert len(flaky) == 2 and outages[0] == flaky[0]
    assert flaky[0][2] == "still down" and flaky[0][3].startswith("at least ")
    assert flaky[1][2] != "still down"
    assert 9 < float(flaky[1][3].removesuffix(" s")) < 11
    assert {row[0] for row in outages} == {"flaky"}


def test_events_log_series_follow_the_changes() -> None:
    capture = parse_events_log("\n".join(fleet_events()))
    assert capture.kind is InputKind.EVENTS
    by_name = {t.name: t for t in capture.targets}
    flaky = by_name["flaky"]
    # The spans tile the log's time without gaps.
    assert flaky.states[0].state == "UP"
    assert flaky.states[0].start == capture.start and flaky.states[-1].end == capture.end
    for before, after in zip(flaky.states, flaky.states[1:], strict=False):
        assert before.end == after.start and before.state != after.state
    downs = [s for s in flaky.states if s.state == "DOWN"]
    expected = [(downs[0].start, downs[0].end), (downs[1].start, None)]
    assert [(o.start, o.end) for o in flaky.outages] == expected
    assert not by_name["alive"].outages and not by_name["alive"].has_rtt


# -- a monitor's history --------------------------------------------------------------------


def write_history(path: Path, now: float) -> None:
    """An hour of three targets, through the monitor's own writer: ``alive``; ``lossy``, 10%
    lost; ``flaky``, DOWN from minute 20 to 30 and again from minute 50 on."""
    hour = int(now // 60 * 60) - 3600
    writer = HistoryWriter(path, clock=lambda: hour)
    records = []
    for i in range(60):
        start = hour + 60 * i
        flaky_down = 20 <= i < 30 or i >= 50
        for name, answered, lost, rtt in (
            ("alive", 60, 0, 0.0004),
            ("lossy", 54, 6, 0.002 + 0.0001 * (i % 7)),
            ("flaky", 0 if flaky_down else 60, 60 if flaky_down else 0, 0.0008),
        ):
            rtts = (rtt * 0.5, rtt, rtt * 2, rtt * 3) if answered else (None,) * 4
            state = "DOWN" if name == "flaky" and flaky_down else "UP"
            records.append(MinuteRow(name, start, answered + lost, 0, answered, lost, *rtts, state))
    writer.minutes(records)
    for name in ("alive", "lossy", "flaky"):
        writer.change(ChangeRow(name, hour + 0.5, "UNKNOWN", "UP", "reply"))
    for down, up in ((hour + 1200.0, hour + 1800.0), (hour + 3000.0, None)):
        writer.change(ChangeRow("flaky", down, "UP", "DOWN", "3 misses in a row"))
        writer.outage_started("flaky", down, "3 misses in a row")
        if up is not None:
            writer.change(ChangeRow("flaky", up, "DOWN", "UP", "reply"))
            writer.outage_ended("flaky", up, 600)
    writer.outage_update("flaky", 420)
    for name, state in (("alive", "UP"), ("lossy", "UP"), ("flaky", "DOWN")):
        writer.target(TargetRecord(name, "127.0.0.1", 12000, {}, hour + 3600, state, {}))
    writer.close()


def test_report_from_a_monitor_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "history.db"
    write_history(path, 1_764_003_600.0)
    before = path.read_bytes()
    out = tmp_path / "report"
    status, stdout, stderr = report(capsys, str(path), "--output", str(out))
    assert status == 0, stderr
    assert stdout[0].startswith(f"{path}: monitor --db history, 3 targets, ")
    assert path.read_bytes() == before  # read-only
    check_figure(out, "rtt", min_height=3 * 220)
    check_figure(out, "rtt-distribution")
    check_figure(out, "outages")
    page = (out / "report.html").read_text()
    rows = {row[0]: row for row in table_rows(page, "Targets")}
    assert rows["alive"][1:5] == ["UP", str(60 * 60), "0", "0.0%"]
    assert rows["lossy"][1:5] == ["UP", str(54 * 60), str(6 * 60), "10.0%"]
    assert rows["flaky"][1:5] == ["DOWN", str(40 * 60), str(20 * 60), "33.3%"]
    assert rows["alive"][5] == "0.200" and rows["alive"][8] == "1.200"  # min and max, in ms
    assert rows["alive"][6] == "0.400"  # the minutes' medians, weighted by their replies
    outages = table_rows(page, "Outages")
    assert [(row[0], row[2], row[4]) for row in outages] == [
        ("flaky", "still down", "420"),
        ("flaky", "2025-11-24 16:30:00.000 UTC", "600"),
    ]
    assert outages[1][3] == "10 min 00 s"

    # A window: the last quarter of an hour, only the outage still open.
    out = tmp_path / "late"
    status, _, stderr = report(
        capsys, str(path), "-o", str(out), "--since", "2025-11-24T16:45:00", "--target", "flaky"
    )
    assert status == 0, stderr
    page = (out / "report.html").read_text()
    assert [row[2] for row in table_rows(page, "Outages")] == ["still down"]
    (row,) = table_rows(page, "Targets")
    assert row[2:4] == [str(5 * 60), str(10 * 60)]  # minutes 45 to 59


def test_a_foreign_or_damaged_database_stops_with_one_line_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "foreign.db"
    with contextlib.closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE t (x)")
        db.commit()
    damaged = tmp_path / "damaged.db"
    write_history(damaged, 1_764_003_600.0)
    data = bytearray(damaged.read_bytes())
    data[100:] = bytes(len(data) - 100)  # the header kept, every page zeroed
    damaged.write_bytes(bytes(data))
    for path, message in ((foreign, "not a udpbeat history"), (damaged, "damaged")):
        before = path.read_bytes()
        status, stdout, stderr = report(capsys, str(path), "--output", str(tmp_path / "o"))
        assert status == 2 and stdout == []
        assert len(stderr) == 1 and str(path) in stderr[0] and message in stderr[0]
        assert path.read_bytes() == before


# -- the client's objects, from a session on a virtual clock ---------------------------------


def driven_session(loss: float = 0.2) -> SessionDriver:
    """A session that sees ``loss``, a 4 s stop, then a healthy server again."""
    rng = random.Random(3)
    config = ProbeConfig(count=200, interval=0.1, timeout=0.5, watch=True, first_seq=1)
    driver = SessionDriver(
        config,
        target="192.0.2.9:12000",
        reflector=Reflector(),
        rtt=0.002,
        lost=lambda: rng.random() < loss,
    )
    driver.advance(driver.now + 8)
    driver.silence()
    driver.advance(driver.now + 4)
    driver.answer_with(Reflector(), rtt=0.003)
    driver.run()
    return driver


def test_series_agree_with_the_sessions_own_report() -> None:
    driver = driven_session()
    summary = driver.session.report(driver.now).to_dict()
    records = [event_to_dict(e) for e in driver.log] + [summary]
    (series,) = series_from_records(records)
    row = summarize(series)
    assert series.name == "192.0.2.9:12000"
    assert row.answered == summary["received"]
    assert row.missed == summary["lost"] + summary["refused"]
    assert row.state == summary["state"] == "UP"
    rtt = summary["rtt_ms"]
    assert isinstance(rtt, dict)
    assert row.rtt_min is not None and row.rtt_min * 1e3 == pytest.approx(rtt["min"])
    assert row.rtt_max is not None and row.rtt_max * 1e3 == pytest.approx(rtt["max"])
    outages = summary["outages"]
    assert isinstance(outages, list) and len(outages) == 1
    (outage,) = series.outages
    assert outage.start == outages[0]["start"] and outage.end == outages[0]["end"]
    assert outage.heartbeats_lost == outages[0]["heartbeats_lost"] > 30
    assert outage.lost == outage.heartbeats_lost + outages[0]["probes_lost"]
    # Each RTT is placed when its heartbeat left, which the "sent" events give.
    sent = {e["seq"]: e["at"] for e in records if e["type"] == "sent"}
    replies = [e for e in records if e["type"] == "reply"]
    assert sorted(s.time for s in series.samples) == sorted(sent[e["seq"]] for e in replies)
    # The states tile the run; DOWN spans are the outage.
    assert [s.state for s in series.states].count("DOWN") == 1
    assert series.states[0].start == series.start and series.states[-1].end == series.end

    # Without the summary (a run cut short), outages come from the state changes.
    (cut,) = series_from_records(records[:-1])
    assert [(o.start, o.end) for o in cut.outages] == [(outage.start, outage.end)]
    assert cut.outages[0].lost is None and cut.outages[0].heartbeats_lost is None


def test_figures_draw_many_targets_without_cramming() -> None:
    driver = driven_session()
    records = [event_to_dict(e) for e in driver.log]
    (base,) = series_from_records(records)
    many = [
        type(base)(**{**{f: getattr(base, f) for f in base.__slots__}, "name": f"t{i}"})
        for i in range(plots.MAX_ROWS + 5)
    ]
    timeline = plots.outage_timeline(many)
    assert f"({plots.MAX_ROWS} of {len(many)} targets, the busiest)" in timeline.get_suptitle()
    panels = plots.rtt_over_time(many)
    assert len(panels.axes) == plots.MAX_PANELS
    assert f"({plots.MAX_PANELS} of {len(many)} targets, the busiest)" in panels.get_suptitle()


# -- what is not an input --------------------------------------------------------------------


def test_inputs_are_told_apart_by_content() -> None:
    assert detect_kind(b"SQLite format 3\x00" + bytes(100)) is InputKind.DATABASE
    assert detect_kind(b'\n{"type": "sent", "seq": 1}\n') is InputKind.CLIENT
    assert detect_kind(b'{"type": "summary"}') is InputKind.CLIENT
    line = b'{"time": 1, "target": "a", "old": "UP", "new": "DOWN", "reason": "r"}\n'
    assert detect_kind(line) is InputKind.EVENTS
    # A head cut inside a UTF-8 character is still the text it begins.
    assert detect_kind(line + "é".encode()[:1]) is InputKind.EVENTS
    for junk in (b"", b"  \n", b"\x00\x01binary", b"hello", b"[1, 2]", b'{"type": "x"}'):
        with pytest.raises(InputError):
            detect_kind(junk)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "it is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a udpbeat client --json capture"),
        (b'{"hello": "world"}\n', "not a udpbeat client --json capture"),
        (b'{"type": "sent", "seq": 1, "at": 5.0}\n{"type": "rep', "line 2 is not JSON"),
        (b'{"type": "sent", "seq": 1, "at": 5.0}\n[1]\n', "line 2 is not a JSON object"),
        (b'{"type": "reply", "seq": 1, "at": 5.0, "rtt": "fast"}\n', "'rtt' is not a number"),
        (b'{"type": "sent", "at": 5.0}\n{"type": "bogus"}\n', "not a udpbeat client event"),
        (
            b'{"time": 1, "target": "a", "old": "UP", "new": "DOWN", "reason": "r"}\n{"x": 1}\n',
            "line 2: not a monitor state change",
        ),
        (
            b'{"time": "noon", "target": "a", "old": "UP", "new": "DOWN", "reason": "r"}\n',
            "'time' is not a number",
        ),
        (b'{"type": "sent", "at": 5.0}\n\xff\xfe\n', "not UTF-8"),
    ],
)
def test_a_bad_input_stops_with_one_line(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    out = tmp_path / "out"
    status, stdout, stderr = report(capsys, str(path), "--output", str(out))
    assert status == 2 and stdout == []
    assert len(stderr) == 1 and stderr[0].startswith(f"udpbeat: error: {path}: ")
    assert message in stderr[0]
    assert not out.exists()  # nothing written


def test_bad_usage_stops_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.jsonl"
    status, _, stderr = report(capsys, str(missing), "--output", str(tmp_path / "o"))
    assert status == 2 and stderr == [f"udpbeat: error: {missing}: No such file or directory"]
    status, _, stderr = report(capsys, str(missing))
    assert status == 2 and len(stderr) == 1 and "--output" in stderr[0]
    path = tmp_path / "c.jsonl"
    path.write_text('{"type": "sent", "seq": 1, "at": 5.0}\n')
    status, _, stderr = report(capsys, str(path), "-o", str(tmp_path / "o"), "--since", "soon")
    assert status == 2 and len(stderr) == 1 and "--since" in stderr[0]
    status, _, stderr = report(
        capsys, str(path), "-o", str(tmp_path / "o"), "--since", "10", "--until", "5"
    )
    assert status == 2 and stderr == ["udpbeat: error: --until must be after --since"]
    # The output directory cannot be a file.
    status, _, stderr = report(capsys, str(path), "-o", str(path))
    assert status == 2 and len(stderr) == 1


def test_every_string_is_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = '<script>alert("x")</script>&'
    lines = [
        {"time": WALL_OFFSET, "target": name, "old": "UNKNOWN", "new": "UP", "reason": "r"},
        {"time": WALL_OFFSET + 5, "target": name, "old": "UP", "new": "DOWN", "reason": "<b>"},
    ]
    path = tmp_path / "events <log>.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    status, _, stderr = report(capsys, str(path), "--output", str(out))
    assert status == 0, stderr
    page = (out / "report.html").read_text()
    assert "<script>" not in page and "<log>" not in page
    assert html.escape(name) in page
    assert table_rows(page, "Outages")[0][0] == name
