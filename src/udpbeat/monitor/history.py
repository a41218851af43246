"""The monitor's history: an SQLite file that survives restarts (``udpbeat monitor --db FILE``).

What it holds, per target:

- one row a minute (:class:`MinuteRow`): heartbeats sent (confirmation probes among them),
  answered, lost, the RTT's min, median, 99th percentile and max over the minute's replies, and
  the worst state the target was in during the minute;
- every state change (:class:`ChangeRow`);
- every outage (:class:`OutageRow`): its start, its end (``None`` while it lasts) and the
  heartbeats lost during it;
- the target itself (:class:`TargetRow`): host, port, labels, when it was first and last seen,
  and its counters, so that a restarted monitor goes on counting where it stopped.

Times are Unix time in seconds; a minute row is keyed by the Unix time its minute began (a
multiple of 60). RTTs are stored as whole microseconds and read back as seconds.

**Reading** (the stable API, for ``udpbeat report`` and anyone else)::

    from udpbeat.monitor.history import HistoryReader

    with HistoryReader("history.db") as history:
        for target in history.targets():
            minutes = history.minutes(target.name, since=time.time() - 3600)
            outages = history.outages(target.name)

A reader opens the file read-only and never changes it, so it may read while a monitor writes
(SQLite's WAL mode: readers do not block the writer nor the writer them).

**Writing** is :class:`HistoryWriter`'s alone: a thread of its own that commits what it was
handed about once a second, in one transaction whatever the number of targets, and deletes
what is older than the retention. Nothing the event loop does waits for the disk.

**A file that is not ours is refused, never touched.** A udpbeat history carries its own
``application_id`` and a schema version (``user_version``) in the SQLite header; a file
that is not SQLite, is SQLite of some other application, is of a newer schema, or is damaged
raises :class:`HistoryError` (a :class:`~udpbeat.errors.ConfigError`: one line, exit 2 on the
command line) before anything is written to it. Only a missing or empty file is made anew.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from udpbeat.errors import ConfigError

#: ``PRAGMA application_id`` of a udpbeat history: "UDPB" in ASCII.
APPLICATION_ID = 0x55445042
#: ``PRAGMA user_version``: the schema this module reads and writes.
SCHEMA_VERSION = 1
#: Default retention, days (``--retention``).
DEFAULT_RETENTION_DAYS = 30.0
#: Seconds between two commits of the writer (at most one transaction each, plus retention).
COMMIT_PERIOD = 1.0
#: Seconds between two retention passes (and one at start).
RETENTION_PERIOD = 3600.0
#: Rows deleted per statement by retention, so no one transaction grows huge.
RETENTION_CHUNK = 50_000
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE targets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL DEFAULT '',
    port INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'UNKNOWN',
    counters TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE minutes (
    target INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    probes INTEGER NOT NULL,
    answered INTEGER NOT NULL,
    lost INTEGER NOT NULL,
    rtt_min_us INTEGER,
    rtt_p50_us INTEGER,
    rtt_p99_us INTEGER,
    rtt_max_us INTEGER,
    state TEXT NOT NULL,
    PRIMARY KEY (target, minute)
) WITHOUT ROWID;
CREATE INDEX minutes_by_time ON minutes (minute);
CREATE TABLE changes (
    target INTEGER NOT NULL,
    time REAL NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX changes_by_target ON changes (target, time);
CREATE INDEX changes_by_time ON changes (time);
CREATE TABLE outages (
    id INTEGER PRIMARY KEY,
    target INTEGER NOT NULL,
    start REAL NOT NULL,
    "end" REAL,
    lost INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outages_by_target ON outages (target, start);
CREATE INDEX outages_by_end ON outages ("end");
"""


class HistoryError(ConfigError):
    """The file cannot be used as a udpbeat history (one line that names it and says why)."""


# --- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetRow:
    """A target the history knows: where it was, its labels, when it was first and last seen
    (Unix time), its state when last seen, and its counters then (``sent``, ``probes``,
    ``received``, ``lost``, ``refused``, ``late``, ``duplicates``, ``state_changes``,
    ``outages``, ``outage_seconds``: as ``/api/targets`` names them)."""

    name: str
    host: str
    port: int
    labels: Mapping[str, str]
    first_seen: float
    last_seen: float
    state: str
    counters: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """One target's minute beginning at ``start`` (Unix time, a multiple of 60).

    ``sent`` counts every heartbeat sent in the minute, the ``probes`` among them; ``answered``
    the replies received in time during the minute, ``lost`` the heartbeats given up during
    it (timed out or refused). RTTs are seconds over the minute's replies (``None`` without
    any). ``state`` is the worst state the target was in during the minute, ``DOWN``, then
    ``SUSPECT``, ``UP``, ``UNKNOWN`` (a minute with an outage of seconds says ``DOWN``).
    The writer is handed the same rows (:meth:`HistoryWriter.minutes`).
    """

    target: str
    start: float
    sent: int
    probes: int
    answered: int
    lost: int
    rtt_min: float | None
    rtt_p50: float | None
    rtt_p99: float | None
    rtt_max: float | None
    state: str

    @property
    def loss(self) -> float | None:
        """Lost over answered plus lost (``None`` when nothing was settled in the minute)."""
        settled = self.answered + self.lost
        return self.lost / settled if settled else None


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """A state change of ``target`` at ``time`` (Unix time), with the detector's reason."""

    target: str
    time: float
    old: str
    new: str
    reason: str


@dataclass(frozen=True, slots=True)
class OutageRow:
    """A period ``target`` was DOWN: ``end`` is ``None`` while it lasts; ``lost`` counts the
    heartbeats and probes lost from the DOWN verdict on."""

    target: str
    start: float
    end: float | None
    lost: int
    reason: str

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


# --- opening ---------------------------------------------------------------------------------


def check_file(path: str | Path) -> bool:
    """Whether ``path`` is a udpbeat history (``True``) or is missing or empty (``False``,
    to be made anew).

    Reads the first 100 bytes only: nothing is written.

    Raises:
        HistoryError: it exists but is not a udpbeat history of a schema this version reads.
    """
    where = str(path)
    try:
        with open(path, "rb") as stream:
            header = stream.read(100)
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        raise HistoryError(f"{where}: is a directory, not a history file") from None
    except OSError as error:
        raise HistoryError(f"{where}: cannot read: {error.strerror or error}") from None
    if not header:
        return False
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise HistoryError(
            f"{where}: not a udpbeat history (not an SQLite database); refusing to touch it"
        )
    application = int.from_bytes(header[68:72], "big")
    version = int.from_bytes(header[60:64], "big")
    if application != APPLICATION_ID:
        raise HistoryError(
            f"{where}: not a udpbeat history (an SQLite database of another application, "
            f"application_id {application:#x}); refusing to touch it"
        )
    if version > SCHEMA_VERSION:
        raise HistoryError(
            f"{where}: a udpbeat history of schema {version}, newer than this udpbeat reads "
            f"({SCHEMA_VERSION}); upgrade udpbeat"
        )
    if version < 1:
        raise HistoryError(f"{where}: a udpbeat history without a schema version; damaged?")
    return True


def _damaged(where: str, error: sqlite3.Error) -> HistoryError:
    return HistoryError(f"{where}: damaged or unreadable history: {error}")


def _verify(connection: sqlite3.Connection, where: str) -> None:
    """Every table the schema names is there (a damaged file fails here, not later)."""
    try:
        names = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        fmt = connection.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    except sqlite3.Error as error:
        raise _damaged(where, error) from None
    missing = {"meta", "targets", "minutes", "changes", "outages"} - names
    if missing or fmt is None or fmt[0] != "udpbeat-history":
        raise HistoryError(
            f"{where}: damaged history: missing {', '.join(sorted(missing)) or 'its format mark'}"
        )


def _us(seconds: float | None) -> int | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(seconds * 1e6)


def _minute_row(
    target: str,
    minute: float,
    sent: int,
    probes: int,
    answered: int,
    lost: int,
    low: int | None,
    p50: int | None,
    p99: int | None,
    high: int | None,
    state: str,
) -> MinuteRow:
    """A ``minutes`` row as read (RTTs in whole microseconds) as the reader hands it out."""
    return MinuteRow(
        target,
        float(minute),
        sent,
        probes,
        answered,
        lost,
        _seconds(low),
        _seconds(p50),
        _seconds(p99),
        _seconds(high),
        state,
    )


def _seconds(microseconds: int | None) -> float | None:
    return None if microseconds is None else microseconds / 1e6


# --- reading ---------------------------------------------------------------------------------


class HistoryReader:
    """Read-only access to a history file (see the module). Never modifies the file.

    Raises (when made):
        HistoryError: the file is missing, not a udpbeat history, of a newer schema, or damaged.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if not check_file(path):
            raise HistoryError(f"{self.path}: no such history (missing or empty file)")
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as error:
            raise _damaged(self.path, error) from None
        try:
            _verify(self._db, self.path)
        except HistoryError:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HistoryReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _query(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise _damaged(self.path, error) from None

    def targets(self) -> list[TargetRow]:
        """Every target the history knows, by name."""
        rows = self._query(
            "SELECT name, host, port, labels, first_seen, last_seen, state, counters "
            "FROM targets ORDER BY name"
        )
        return [
            TargetRow(
                name,
                host,
                port,
                _json_object(labels),
                first_seen,
                last_seen,
                state,
                _json_object(counters),
            )
            for name, host, port, labels, first_seen, last_seen, state, counters in rows
        ]

    def minutes(
        self, target: str, since: float | None = None, until: float | None = None
    ) -> list[MinuteRow]:
        """``target``'s minutes that began at or after ``since`` and before ``until`` (Unix
        time; ``None``: no bound), oldest first."""
        rows = self._query(
            "SELECT minute, sent, probes, answered, lost, rtt_min_us, rtt_p50_us, rtt_p99_us, "
            "rtt_max_us, minutes.state FROM minutes JOIN targets ON targets.id = minutes.target "
            "WHERE targets.name = ? AND minute >= ? AND minute < ? ORDER BY minute",
            (target, _low(since), _high(until)),
        )
        return [_minute_row(target, *row) for row in rows]

    def outages(self, target: str | None = None, since: float | None = None) -> list[OutageRow]:
        """Outages (of ``target``, or of every target) still open or ended at or after
        ``since`` (Unix time; ``None``: all), oldest first."""
        sql = (
            'SELECT name, start, "end", lost, reason FROM outages '
            "JOIN targets ON targets.id = outages.target "
            'WHERE ("end" IS NULL OR "end" >= ?)'
        )
        parameters: list[object] = [_low(since)]
        if target is not None:
            sql += " AND targets.name = ?"
            parameters.append(target)
        rows = self._query(sql + " ORDER BY start, outages.id", parameters)
        return [OutageRow(*row) for row in rows]

    def changes(
        self, target: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[ChangeRow]:
        """State changes (of ``target``, or of every target) at or after ``since`` and before
        ``until`` (Unix time; ``None``: no bound), oldest first."""
        sql = (
            "SELECT name, time, old, new, reason FROM changes "
            "JOIN targets ON targets.id = changes.target WHERE time >= ? AND time < ?"
        )
        parameters: list[object] = [_low(since), _high(until)]
        if target is not None:
            sql += " AND targets.name = ?"
            parameters.append(target)
        rows = self._query(sql + " ORDER BY time, changes.rowid", parameters)
        return [ChangeRow(*row) for row in rows]


def _low(value: float | None) -> float:
    return -math.inf if value is None else value


def _high(value: float | None) -> float:
    return math.inf if value is None else value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """A target as last seen: where it is, its labels, state and counters."""

    name: str
    host: str
    port: int
    labels: Mapping[str, str]
    seen: float
    state: str
    counters: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Resumed:
    """What a restarted monitor takes back for one target: its counters, its last change,
    its outage still open (start and heartbeats lost so far), if any, and its minutes of the
    last hour (oldest first; the status page's loss over an hour goes on across the restart)."""

    name: str
    counters: Mapping[str, float]
    last_change: ChangeRow | None
    open_outage: OutageRow | None
    recent: Sequence[MinuteRow] = ()


def _create(connection: sqlite3.Connection) -> None:
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    connection.executescript(_SCHEMA)
    connection.execute(
        "INSERT INTO meta (key, value) VALUES ('format', 'udpbeat-history'), ('created', ?)",
        (repr(time.time()),),
    )
    connection.commit()


def _claim_writer(path: str) -> int | None:
    """Take the file's writer lock (``flock``), or refuse: two monitors adding the same minutes
    to one history would double every count.

    The lock is a BSD ``flock`` on a descriptor of the database file itself, which Linux keeps
    apart from the POSIX record locks SQLite takes, so it adds no file beside the history. The
    descriptor stays open until the connection is closed: closing any descriptor of a file
    drops the process's POSIX locks on it, SQLite's included. Where ``flock`` does not exist
    (not POSIX) there is no guard, and ``None`` is returned.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise HistoryError(f"{path}: cannot open: {error.strerror or error}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise HistoryError(
            f"{path}: another udpbeat monitor is writing this history (one writer per file)"
        ) from None
    except OSError:  # a file system without flock (some network mounts): no guard there
        pass
    return descriptor


def _release_writer(descriptor: int | None) -> None:
    """Give the writer lock back (closing the descriptor does it)."""
    if descriptor is not None:
        os.close(descriptor)


class HistoryWriter:
    """Writes a history file from a thread of its own; see the module.

    The event loop calls :meth:`minutes`, :meth:`change`, :meth:`outage_started`,
    :meth:`outage_update`, :meth:`outage_ended` and :meth:`target`: each only appends to a list
    under a lock. The thread takes the list about once every ``period`` seconds and commits it
    in one transaction, so the transactions a second stay at about one whatever the number of
    targets; every ``retention_period`` it deletes rows older than ``retention`` seconds
    (minutes, changes, and outages that ended).

    Raises (when made):
        HistoryError: the file is not a udpbeat history, or cannot be created or opened.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retention: float = DEFAULT_RETENTION_DAYS * 86400,
        period: float = COMMIT_PERIOD,
        retention_period: float = RETENTION_PERIOD,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if not retention > 0:
            raise HistoryError(f"retention must be > 0 seconds, got {retention!r}")
        self.path = str(path)
        self.retention = retention
        self.period = period
        self.retention_period = retention_period
        self._clock = clock
        self._on_error = on_error
        existed = check_file(path)
        self._claim = _claim_writer(self.path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as error:
            _release_writer(self._claim)
            raise HistoryError(f"{self.path}: cannot open: {error}") from None
        try:
            if existed:
                _verify(self._db, self.path)
            else:
                self._db.execute("BEGIN")
                _create(self._db)
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = NORMAL")
        except HistoryError:
            self._db.close()
            _release_writer(self._claim)
            raise
        except sqlite3.Error as error:
            self._db.close()
            _release_writer(self._claim)
            raise HistoryError(f"{self.path}: cannot open: {error}") from None
        self.journal_mode = str(mode)
        self._ids: dict[str, int] = {}
        self._busy = False
        try:
            #: What a restarted monitor takes back (:meth:`resumed`), read before any write.
            self.resumed = self._read_resume()
        except sqlite3.Error as error:
            self._db.close()
            _release_writer(self._claim)
            raise _damaged(self.path, error) from None
        self._lock = threading.Condition()
        self._pending: list[tuple[str, Any]] = []
        self._closing = False
        #: Figures: commits made, rows written by kind, batches lost to an error.
        self.transactions = 0
        self.rows_written = 0
        self.retention_runs = 0
        self.rows_deleted = 0
        self.failed_batches = 0
        self.last_error: str | None = None
        self._next_retention = 0.0
        self._thread = threading.Thread(target=self._run, name="udpbeat-history", daemon=True)
        self._thread.start()

    # -- what the loop hands over (cheap: an append under a lock) -----------------------------

    def _put(self, kind: str, item: object) -> None:
        with self._lock:
            self._pending.append((kind, item))

    def minutes(self, records: Sequence[MinuteRow]) -> None:
        """A minute of several targets (added to an existing row of the same minute, as after
        a restart within it)."""
        self._put("minutes", list(records))

    def change(self, row: ChangeRow) -> None:
        self._put("change", row)

    def outage_started(self, target: str, start: float, reason: str) -> None:
        self._put("outage_started", (target, start, reason))

    def outage_update(self, target: str, lost: int) -> None:
        """The heartbeats lost so far by ``target``'s open outage."""
        self._put("outage_update", (target, lost))

    def outage_ended(self, target: str, end: float, lost: int) -> None:
        self._put("outage_ended", (target, end, lost))

    def end_unwatched_outages(self, watched: Sequence[str]) -> None:
        """End the open outages of every target not in ``watched`` (no longer configured) at
        the time it was last seen: nobody knows how long they lasted after that."""
        self._put("unwatched", list(watched))

    def target(self, record: TargetRecord) -> None:
        self._put("target", record)

    def targets(self, records: Sequence[TargetRecord]) -> None:
        self._put("targets", list(records))

    # -- what a restart takes back (read when opened, before the thread writes anything) -----

    def _read_resume(self) -> dict[str, Resumed]:
        """Every known target's counters, last change and open outage, by name."""
        db = self._db
        counters = {
            name: _json_object(text)
            for name, text in db.execute("SELECT name, counters FROM targets")
        }
        # SQLite takes the bare columns from the row of max(time).
        last = {
            name: ChangeRow(name, at, old, new, reason)
            for name, at, old, new, reason in db.execute(
                "SELECT name, max(time), old, new, reason FROM changes JOIN targets "
                "ON targets.id = changes.target GROUP BY changes.target"
            )
        }
        open_outages = {
            name: OutageRow(name, start, None, lost, reason)
            for name, start, lost, reason in db.execute(
                "SELECT name, start, lost, reason FROM outages JOIN targets "
                'ON targets.id = outages.target WHERE "end" IS NULL ORDER BY start'
            )
        }
        recent: dict[str, list[MinuteRow]] = {}
        for name, *row in db.execute(
            "SELECT name, minute, sent, probes, answered, lost, rtt_min_us, rtt_p50_us, "
            "rtt_p99_us, rtt_max_us, minutes.state FROM minutes JOIN targets "
            "ON targets.id = minutes.target WHERE minute >= ? ORDER BY minute",
            (self._clock() - 3660,),
        ):
            recent.setdefault(name, []).append(_minute_row(name, *row))
        return {
            name: Resumed(
                name,
                counters.get(name, {}),
                last.get(name),
                open_outages.get(name),
                tuple(recent.get(name, ())),
            )
            for name in counters
        }

    # -- the thread ---------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything handed over so far is committed; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._lock.notify_all()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is left, checkpoint the WAL into the file, stop the thread."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._db.close()
            _release_writer(self._claim)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._closing:
                    self._lock.wait(self.period)
                batch, self._pending = self._pending, []
                closing = self._closing
                self._busy = bool(batch)
            try:
                if batch:
                    self._commit(batch)
                if self._clock() >= self._next_retention:
                    self._next_retention = self._clock() + self.retention_period
                    self.expire()
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()
            if closing:
                with self._lock:
                    if not self._pending:
                        return

    def _fail(self, error: sqlite3.Error) -> None:
        self.failed_batches += 1
        message = f"history {self.path}: write failed, a second of history lost: {error}"
        first = self.last_error is None
        self.last_error = message
        if first and self._on_error is not None:
            self._on_error(message)

    def _commit(self, batch: list[tuple[str, Any]]) -> None:
        db = self._db
        try:
            db.execute("BEGIN")
            written = 0
            for kind, item in batch:
                written += self._apply(kind, item)
            db.execute("COMMIT")
        except sqlite3.Error as error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._ids.clear()  # ids made in the rolled-back transaction are gone
            self._fail(error)
            return
        self.transactions += 1
        self.rows_written += written

    def _id(self, name: str) -> int:
        found = self._ids.get(name)
        if found is not None:
            return found
        row = self._db.execute("SELECT id FROM targets WHERE name = ?", (name,)).fetchone()
        if row is None:
            now = self._clock()
            cursor = self._db.execute(
                "INSERT INTO targets (name, first_seen, last_seen) VALUES (?, ?, ?)",
                (name, now, now),
            )
            found = int(cursor.lastrowid or 0)
        else:
            found = int(row[0])
        self._ids[name] = found
        return found

    def _apply(self, kind: str, item: Any) -> int:
        db = self._db
        if kind == "minutes":
            db.executemany(
                "INSERT INTO minutes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (target, minute) DO UPDATE SET sent = sent + excluded.sent, "
                "probes = probes + excluded.probes, answered = answered + excluded.answered, "
                "lost = lost + excluded.lost, "
                "rtt_min_us = min(coalesce(rtt_min_us, excluded.rtt_min_us), "
                "coalesce(excluded.rtt_min_us, rtt_min_us)), "
                "rtt_max_us = max(coalesce(rtt_max_us, excluded.rtt_max_us), "
                "coalesce(excluded.rtt_max_us, rtt_max_us)), "
                "rtt_p50_us = coalesce(excluded.rtt_p50_us, rtt_p50_us), "
                "rtt_p99_us = max(coalesce(rtt_p99_us, excluded.rtt_p99_us), "
                "coalesce(excluded.rtt_p99_us, rtt_p99_us)), state = excluded.state",
                [
                    (
                        self._id(r.target),
                        r.start,
                        r.sent,
                        r.probes,
                        r.answered,
                        r.lost,
                        _us(r.rtt_min),
                        _us(r.rtt_p50),
                        _us(r.rtt_p99),
                        _us(r.rtt_max),
                        r.state,
                    )
                    for r in item
                ],
            )
            return len(item)
        if kind == "change":
            row: ChangeRow = item
            db.execute(
                "INSERT INTO changes VALUES (?, ?, ?, ?, ?)",
                (self._id(row.target), row.time, row.old, row.new, row.reason),
            )
            return 1
        if kind == "outage_started":
            name, start, reason = item
            target = self._id(name)
            # One outage open per target: a start while one is open continues it.
            if db.execute(
                'SELECT 1 FROM outages WHERE target = ? AND "end" IS NULL', (target,)
            ).fetchone():
                return 0
            db.execute(
                "INSERT INTO outages (target, start, lost, reason) VALUES (?, ?, 0, ?)",
                (target, start, reason),
            )
            return 1
        if kind == "outage_update":
            name, lost = item
            db.execute(
                'UPDATE outages SET lost = ? WHERE target = ? AND "end" IS NULL',
                (lost, self._id(name)),
            )
            return 1
        if kind == "unwatched":
            db.execute("CREATE TEMP TABLE IF NOT EXISTS watched (name TEXT PRIMARY KEY)")
            db.execute("DELETE FROM watched")
            db.executemany("INSERT OR IGNORE INTO watched VALUES (?)", [(n,) for n in item])
            cursor = db.execute(
                'UPDATE outages SET "end" = max(start, (SELECT last_seen FROM targets '
                'WHERE targets.id = outages.target)) WHERE "end" IS NULL AND target IN '
                "(SELECT id FROM targets WHERE name NOT IN (SELECT name FROM watched))"
            )
            return cursor.rowcount
        if kind == "outage_ended":
            name, end, lost = item
            db.execute(
                'UPDATE outages SET "end" = ?, lost = ? WHERE target = ? AND "end" IS NULL',
                (end, lost, self._id(name)),
            )
            return 1
        records: list[TargetRecord] = item if kind == "targets" else [item]
        db.executemany(
            "UPDATE targets SET host = ?, port = ?, labels = ?, last_seen = ?, state = ?, "
            "counters = ? WHERE id = ?",
            [
                (
                    r.host,
                    r.port,
                    json.dumps(dict(r.labels), sort_keys=True),
                    r.seen,
                    r.state,
                    json.dumps(dict(r.counters)),
                    self._id(r.name),
                )
                for r in records
            ],
        )
        return len(records)

    def expire(self) -> int:
        """Delete what is older than the retention: minutes, changes, and outages that ended
        (on the writer's thread; a few statements of at most :data:`RETENTION_CHUNK` rows, so no
        transaction grows huge). Returns the rows deleted."""
        cutoff = self._clock() - self.retention
        statements = (
            "DELETE FROM minutes WHERE (target, minute) IN "
            "(SELECT target, minute FROM minutes WHERE minute < ? LIMIT ?)",
            "DELETE FROM changes WHERE rowid IN (SELECT rowid FROM changes WHERE time < ? LIMIT ?)",
            'DELETE FROM outages WHERE id IN (SELECT id FROM outages WHERE "end" < ? LIMIT ?)',
        )
        deleted = 0
        try:
            for statement in statements:
                while True:
                    count = self._db.execute(statement, (cutoff, RETENTION_CHUNK)).rowcount
                    deleted += count
                    if count < RETENTION_CHUNK:
                        break
        except sqlite3.Error as error:
            self._fail(error)
        self.retention_runs += 1
        self.rows_deleted += deleted
        return deleted
