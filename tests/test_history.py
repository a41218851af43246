"""The history file: what the writer commits the reader reads back, in about one transaction a
second whatever the number of targets; retention; a file that is not ours is refused untouched."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from udpbeat.errors import ConfigError
from udpbeat.monitor.history import (
    APPLICATION_ID,
    ChangeRow,
    HistoryError,
    HistoryReader,
    HistoryWriter,
    MinuteRow,
    TargetRecord,
)


def minute(name: str, start: int, answered: int = 58, lost: int = 2) -> MinuteRow:
    return MinuteRow(
        name, start, answered + lost, 1, answered, lost, 0.0001, 0.0002, 0.0009, 0.0012, "UP"
    )


def test_what_is_written_reads_back_typed(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    now = time.time()
    start = int(now // 60 * 60) - 120
    writer = HistoryWriter(path)
    assert writer.journal_mode == "wal"
    writer.minutes([minute("db-1", start), minute("db-1", start + 60, 60, 0)])
    writer.minutes([minute("web-<1>", start)])
    writer.change(ChangeRow("db-1", now - 30, "UP", "DOWN", "3 misses in a row"))
    writer.outage_started("db-1", now - 30, "3 misses in a row")
    writer.outage_update("db-1", 12)
    writer.target(
        TargetRecord("db-1", "127.0.0.1", 12000, {"role": "db"}, now, "DOWN", {"sent": 120})
    )
    assert writer.flush()
    with HistoryReader(path) as history:
        assert [t.name for t in history.targets()] == ["db-1", "web-<1>"]
        db = history.targets()[0]
        assert (db.host, db.port, dict(db.labels), db.state) == (
            "127.0.0.1",
            12000,
            {"role": "db"},
            "DOWN",
        )
        assert db.counters["sent"] == 120
        rows = history.minutes("db-1")
        assert [row.start for row in rows] == [start, start + 60]
        first = rows[0]
        assert (first.sent, first.probes, first.answered, first.lost) == (60, 1, 58, 2)
        assert first.loss == pytest.approx(2 / 60)
        assert first.rtt_min == pytest.approx(0.0001) and first.rtt_max == pytest.approx(0.0012)
        assert first.rtt_p50 == pytest.approx(0.0002) and first.rtt_p99 == pytest.approx(0.0009)
        assert history.minutes("db-1", since=start + 1) == rows[1:]
        assert history.minutes("db-1", until=start + 60) == rows[:1]
        (outage,) = history.outages()
        assert (outage.target, outage.end, outage.lost, outage.duration) == ("db-1", None, 12, None)
        assert history.outages("web-<1>") == []
        (change,) = history.changes("db-1")
        assert (change.old, change.new, change.reason) == ("UP", "DOWN", "3 misses in a row")

        writer.outage_ended("db-1", now - 10, 15)
        # Two writes of one minute (a restart within it) add up.
        writer.minutes([minute("db-1", start, 10, 0)])
        writer.close()
        (outage,) = history.outages("db-1")
        assert outage.end == pytest.approx(now - 10) and outage.lost == 15
        assert history.outages(since=now) == []
        assert history.minutes("db-1")[0].answered == 68


def test_one_commit_a_second_whatever_the_number_of_targets(tmp_path: Path) -> None:
    """For about a second, a minute for every target every 10 ms (far more than a monitor hands
    over): the commits stay at about one per period, for ten targets as for ten thousand."""
    commits = {}
    for count in (10, 10_000):
        writer = HistoryWriter(tmp_path / f"{count}.db", period=0.2)
        names = [f"t{i}" for i in range(count)]
        start = int(time.time() // 60 * 60)
        began = time.monotonic()
        batches = 0
        while time.monotonic() - began < 1.0:
            writer.minutes([minute(name, start - 60 * batches) for name in names[:1000]])
            batches += 1
            time.sleep(0.01)
        assert writer.flush(30)
        elapsed = time.monotonic() - began
        writer.close()
        commits[count] = writer.transactions
        assert batches > 15
        assert writer.transactions <= elapsed / 0.2 + 3, (count, writer.transactions, elapsed)
        with HistoryReader(tmp_path / f"{count}.db") as history:
            assert len(history.minutes("t1")) == min(batches, 1_000_000)
    assert abs(commits[10] - commits[10_000]) <= 3, commits


def test_retention_deletes_old_rows_and_keeps_open_outages(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    now = time.time()
    day = 86400
    writer = HistoryWriter(path, retention=2 * day, clock=lambda: now)
    old, recent = int((now - 3 * day) // 60 * 60), int((now - day) // 60 * 60)
    writer.minutes([minute("a", old), minute("a", recent)])
    writer.change(ChangeRow("a", old + 1, "UNKNOWN", "UP", "reply"))
    writer.change(ChangeRow("a", recent + 1, "UP", "DOWN", "silence"))
    writer.outage_started("a", old + 2, "ancient, ended")
    writer.outage_ended("a", old + 5, 3)
    writer.outage_started("b", old + 2, "ancient, still open")
    assert writer.flush()
    writer.expire()  # the writer's thread may have run it already, after its commit
    assert writer.rows_deleted == 3 and writer.retention_runs >= 1
    writer.close()
    with HistoryReader(path) as history:
        assert [row.start for row in history.minutes("a")] == [recent]
        assert [c.new for c in history.changes()] == ["DOWN"]
        assert [(o.target, o.end) for o in history.outages()] == [("b", None)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["text", "garbage", "sqlite", "newer", "damaged"])
def test_a_foreign_or_damaged_file_is_refused_untouched(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "history.db"
    if kind == "text":
        path.write_text("my notes\n" * 50)
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "sqlite":
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE accounts (id INTEGER)")
        other.close()
    else:
        writer = HistoryWriter(path)
        writer.minutes([minute("a", int(time.time() // 60 * 60))])
        writer.close()
        data = bytearray(path.read_bytes())
        if kind == "newer":
            data[60:64] = (99).to_bytes(4, "big")
        else:  # keep the header, wreck the pages after it
            data[100:] = b"\xff" * (len(data) - 100)
        path.write_bytes(bytes(data))
    before = digest(path)
    expected = {
        "text": "not an SQLite database",
        "garbage": "not an SQLite database",
        "sqlite": "another application",
        "newer": "schema 99, newer",
        "damaged": "damaged",
    }[kind]
    for opener in (HistoryWriter, HistoryReader):
        with pytest.raises(HistoryError, match=expected) as caught:
            opener(path)  # type: ignore[operator]
        message = str(caught.value)
        assert "\n" not in message and str(path) in message
        assert isinstance(caught.value, ConfigError)
    assert digest(path) == before
    # Opening a WAL file to find it damaged leaves SQLite's own -wal and -shm beside it.
    left = {p.name for p in tmp_path.iterdir()} - {"history.db-wal", "history.db-shm"}
    assert left == {"history.db"}


def test_a_missing_file_is_made_for_the_writer_but_not_for_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with pytest.raises(HistoryError, match="no such history"):
        HistoryReader(path)
    assert not path.exists()
    HistoryWriter(path).close()
    header = path.read_bytes()[:100]
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID
    with HistoryReader(path) as history:
        assert history.targets() == []


def test_a_second_writer_of_one_history_is_refused_and_the_first_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    first = HistoryWriter(path)
    try:
        with pytest.raises(HistoryError, match="another udpbeat monitor is writing") as caught:
            HistoryWriter(path)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value)
        # The refused writer did not disturb the first one's file or its locks.
        start = int(time.time() // 60 * 60)
        first.minutes([minute("a", start)])
    finally:
        first.close()
    with HistoryReader(path) as history:
        assert [row.start for row in history.minutes("a")] == [start]
    # Once the first writer is closed the file is free again.
    HistoryWriter(path).close()
