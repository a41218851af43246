"""``udpbeat report INPUT --output DIR``: plots and an HTML page from what udpbeat recorded.

INPUT is a ``udpbeat client --json`` capture (or its ``-o FILE``), a monitor's ``--events`` log
or a monitor's ``--db`` history, told apart by their content. Into DIR go ``rtt.png``/``.svg``
(RTT over time, states and misses), ``rtt-distribution.png``/``.svg`` (histogram and CDF), both
only when the input holds RTTs, ``outages.png``/``.svg`` (a row per target) and ``report.html``
(self-contained: the tables and the PNGs inlined). A line per file written goes to stdout; an
input that is none of the three, or damaged, stops with one line and exit 2.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from udpbeat.errors import ConfigError
from udpbeat.monitor.history import HistoryReader
from udpbeat.reportpage import Picture, clock, render
from udpbeat.series import (
    Capture,
    InputError,
    InputKind,
    detect_kind,
    parse_client_capture,
    parse_events_log,
    select,
    series_from_history,
)

#: Bytes read to tell the inputs apart.
HEAD_BYTES = 65536


def parse_instant(text: str, flag: str) -> float:
    """A moment: Unix seconds (``1764000000``) or ISO 8601 (``2026-12-02T08:00``; UTC unless it
    says otherwise).

    Raises:
        click.BadParameter: neither.
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise click.BadParameter(f"{text!r} is not a finite time.", param_hint=flag)
        return number
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither Unix seconds nor an ISO 8601 time "
            "(2026-12-02T08:00:00, UTC unless it says otherwise).",
            param_hint=flag,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_capture(path: Path, since: float | None = None, until: float | None = None) -> Capture:
    """Read INPUT, whichever of the three it is.

    Raises:
        ConfigError: it cannot be read, or is none of the inputs, or is damaged (one line,
            naming the file).
    """
    try:
        with path.open("rb") as stream:
            head = stream.read(HEAD_BYTES)
        kind = detect_kind(head)
        if kind is InputKind.DATABASE:
            return read_history(path, since, until)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("it is not UTF-8 text") from None
        if kind is InputKind.CLIENT:
            return parse_client_capture(text)
        return parse_events_log(text)
    except InputError as error:
        raise ConfigError(f"{path}: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from None


def read_history(path: Path, since: float | None = None, until: float | None = None) -> Capture:
    """A monitor's ``--db`` history, through its reader (read-only: the file is never
    changed, and a monitor may be writing it meanwhile). Minutes are read from the one that
    holds ``since``; changes and outages whole, so that the state at ``since`` is known.

    Raises:
        HistoryError: not a udpbeat history, or damaged (one line naming the file).
    """
    with HistoryReader(path) as history:
        low = None if since is None else since - 60.0
        targets = tuple(
            series_from_history(
                target,
                history.minutes(target.name, since=low, until=until),
                history.changes(target.name),
                history.outages(target.name),
            )
            for target in history.targets()
        )
    if not targets:
        raise InputError("the history holds no target yet")
    return Capture(InputKind.DATABASE, targets)


def figures(capture: Capture) -> list[tuple[str, str, str, Any]]:
    """(file stem, title, caption, figure) of every figure the input has data for."""
    # matplotlib takes a fifth of a second to import: only this command pays for it.
    from udpbeat import plots

    made: list[tuple[str, str, str, Any]] = []
    targets = capture.targets
    if any(t.has_rtt for t in targets):
        made.append(
            (
                "rtt",
                "RTT over time",
                "Round-trip time of each reply against when its heartbeat left (hollow: "
                "confirmation probes; from a history: each minute's min-max band and median); "
                "crosses along the top are misses, triangles refusals; the background is the "
                "detector's state.",
                plots.rtt_over_time(targets),
            )
        )
        made.append(
            (
                "rtt-distribution",
                "RTT distribution",
                "Histogram of the RTTs and their cumulative distribution; dots mark the median "
                "and the 99th percentile.",
                plots.rtt_distribution(targets),
            )
        )
    made.append(
        (
            "outages",
            "Outage timeline",
            "A row per target: its state over time; red is DOWN, an outage.",
            plots.outage_timeline(targets),
        )
    )
    return made


def write_report(capture: Capture, source: str, directory: Path) -> list[Path]:
    """Write the figures and the page into ``directory`` (made if missing); the paths written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--output {directory}: {error.strerror or error}") from None
    written: list[Path] = []
    pictures: list[Picture] = []
    from udpbeat import plots

    try:
        for stem, title, caption, figure in figures(capture):
            png, svg = plots.save(figure, directory, stem)
            written += [png, svg]
            pictures.append(Picture(title, caption, png.read_bytes(), png.name, svg.name))
        page = directory / "report.html"
        page.write_text(
            render(capture, source=source, pictures=pictures, generated=time.time()),
            encoding="utf-8",
        )
    except OSError as error:
        raise ConfigError(f"--output {directory}: {error.strerror or error}") from None
    written.append(page)
    return written


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the plots (PNG and SVG) and report.html; made if missing.",
)
@click.option(
    "--target",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this target (repeatable): a client's host:port, a monitor's target name.",
)
@click.option(
    "--since",
    metavar="TIME",
    help="Leave out what happened before TIME: Unix seconds or ISO 8601 (UTC unless it says).",
)
@click.option("--until", metavar="TIME", help="Leave out what happened after TIME (as --since).")
def report(
    input_path: Path,
    directory: Path,
    names: tuple[str, ...],
    since: str | None,
    until: str | None,
) -> int:
    """Plots and an HTML report from a client --json capture, a monitor --events log or a
    monitor --db history (told apart by their content)."""
    start = None if since is None else parse_instant(since, "--since")
    end = None if until is None else parse_instant(until, "--until")
    if start is not None and end is not None and end <= start:
        raise click.UsageError("--until must be after --since")
    capture = read_capture(input_path, start, end)
    try:
        capture = select(capture, names=names, since=start, until=end)
    except InputError as error:
        raise ConfigError(f"{input_path}: {error}") from None
    count = len(capture.targets)
    click.echo(
        f"{input_path}: {capture.kind}, {count} target{'s' if count != 1 else ''}, "
        f"{clock(capture.start)} to {clock(capture.end)}"
    )
    for path in write_report(capture, str(input_path), directory):
        click.echo(f"wrote {path}")
    return 0
