"""``udpbeat monitor``: many targets from one process, for Prometheus and for people.

Targets come from ``HOST[:PORT]`` arguments and/or ``--config FILE`` (TOML, see
:mod:`udpbeat.monitor.config`); ``--shard I/N`` keeps this monitor's share. Output:

- on a terminal, a live view (rich): targets by state, the ones not UP, the lossiest, and
  every state change as a line above it;
- otherwise, one plain line per state change on stdout;
- ``--events FILE``: every state change appended as a JSON line;
- ``--on-change CMD``: a hook per state change, as ``udpbeat client --on-change`` runs it;
- HTTP on ``--listen``: the status page (``/``), ``/metrics``, ``/api/targets``,
  ``/api/monitor``, ``/healthz``;
- ``--db FILE``: the history (minutes, state changes, outages) in SQLite, kept for
  ``--retention`` days; a restart resumes from it.

Signals: SIGHUP re-reads the file (a bad one is refused with one line, and the old targets go
on) and reopens the events file; SIGINT and SIGTERM stop. Output never blocks the probing loop:
lines go through :class:`~udpbeat.cli.output.LineWriter`, the live view draws on a thread of
its own from snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from udpbeat.budget import ProbeBudget
from udpbeat.cli.output import LineWriter, stdout_was_closed
from udpbeat.detector import DETECTORS, State
from udpbeat.errors import ConfigError
from udpbeat.hooks import HookRunner
from udpbeat.monitor import shard
from udpbeat.monitor.config import (
    Defaults,
    MonitorConfig,
    command_line_target,
    load_config,
    parse_config,
    split_host_port,
)
from udpbeat.monitor.fleet import DEFAULT_BUCKETS, Change, Fleet, Target
from udpbeat.monitor.history import DEFAULT_RETENTION_DAYS, HistoryWriter
from udpbeat.monitor.http import DEFAULT_HTTP_PORT
from udpbeat.monitor.recorder import Recorder

#: The live view is redrawn this often (seconds).
VIEW_PERIOD = 0.5
#: Rows of the live view's tables.
VIEW_ROWS = 15
#: State changes waiting for the live view's thread at most (the rest are counted).
VIEW_BACKLOG = 1000
#: The global probe budget when none is given: at least this many probes a second.
MIN_PROBE_BUDGET = 50


@dataclass(frozen=True)
class Settings:
    """Everything ``udpbeat monitor`` was asked, to build (and rebuild) its targets."""

    hosts: tuple[str, ...] = ()
    config_file: str | None = None
    port: int | None = None
    interval: float | None = None
    timeout: float | None = None
    detector: str | None = None
    shard: tuple[int, int] = (0, 1)
    listen: tuple[str, int] | None = ("127.0.0.1", DEFAULT_HTTP_PORT)
    probe_budget: float | None = None
    probe_burst: int | None = None
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    on_change: str | None = None
    events: str | None = None
    view: str = "auto"
    db: str | None = None
    retention_days: float = DEFAULT_RETENTION_DAYS


def build_config(settings: Settings) -> MonitorConfig:
    """The targets the settings name (file and arguments), this shard's share of them.

    Raises:
        ConfigError: a bad file or argument (one line naming the file, target and key).
    """
    if settings.config_file is not None:
        loaded = load_config(settings.config_file)
        defaults, source = loaded.defaults, settings.config_file
    else:
        loaded, defaults, source = None, Defaults(), "command line"
    arguments = Defaults(
        port=defaults.port,
        interval=defaults.interval if settings.interval is None else settings.interval,
        timeout=defaults.timeout if settings.timeout is None else settings.timeout,
        detector=defaults.detector if settings.detector is None else settings.detector,
        detector_options=defaults.detector_options
        if settings.detector in (None, defaults.detector)
        else {},
        probes_per_interval=defaults.probes_per_interval,
        labels=defaults.labels,
    )
    extra = [command_line_target(host, arguments, port=settings.port) for host in settings.hosts]
    if loaded is not None:
        config = parse_config({}, source, extra=extra)
        names = {target.name for target in extra}
        for target in loaded.targets:
            if target.name in names:
                raise ConfigError(
                    f"{source}: target {target.name!r}: name: also given on the command line"
                )
        targets = (*config.targets, *loaded.targets)
    else:
        targets = tuple(parse_config({}, source, extra=extra).targets)
    index, count = settings.shard
    return MonitorConfig(tuple(shard.select(targets, index, count)), defaults, source)


def default_budget(config: MonitorConfig) -> tuple[float, int]:
    """As many probes a second as the fleet sends heartbeats (at least
    :data:`MIN_PROBE_BUDGET`), with a burst of one second's worth."""
    rate = max(float(MIN_PROBE_BUDGET), sum(1.0 / target.interval for target in config.targets))
    return rate, max(MIN_PROBE_BUDGET, math.ceil(rate))


# --- lines -----------------------------------------------------------------------------------


def clock_text(unix_time: float) -> str:
    """Local time, ISO 8601 with milliseconds and the UTC offset."""
    local = time.localtime(unix_time)
    milliseconds = int(unix_time * 1000) % 1000
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", local)
        + f".{milliseconds:03d}"
        + time.strftime("%z", local)
    )


def change_line(change: Change, wall_offset: float) -> str:
    """One plain line for a state change."""
    config = change.target.config
    t = change.transition
    where = (
        f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
    )
    return (
        f"{clock_text(t.at + wall_offset)} {config.name} ({where}) {t.old} -> {t.new}: {t.reason}"
    )


def change_record(change: Change, wall_offset: float) -> dict[str, object]:
    """A state change as a JSON line of ``--events``."""
    config = change.target.config
    t = change.transition
    evidence = {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in t.evidence.items()
    }
    return {
        "time": t.at + wall_offset,
        "target": config.name,
        "host": config.host,
        "port": config.port,
        "labels": dict(config.labels),
        "old": str(t.old),
        "new": str(t.new),
        "reason": t.reason,
        "evidence": evidence,
    }


def hook_extra(target: Target) -> dict[str, str]:
    """The variables a monitor's hook gets besides the client's (``UDPBEAT_TARGET`` is the
    target's name)."""
    config = target.config
    return {
        "UDPBEAT_HOST": config.host,
        "UDPBEAT_PORT": str(config.port),
        "UDPBEAT_LABELS": json.dumps(dict(config.labels), sort_keys=True),
    }


# --- the live view ---------------------------------------------------------------------------


@dataclass
class Snapshot:
    """What the live view shows, taken on the loop (the view's thread never reads the fleet)."""

    at: float
    targets: int
    counts: dict[str, int]
    sent: int
    probes: int
    budget_waits: int
    listen: str | None
    problems: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    lossy: list[tuple[str, str, str, str]] = field(default_factory=list)


_SEVERITY = {State.DOWN: 0, State.SUSPECT: 1, State.UNKNOWN: 2}


def take_snapshot(fleet: Fleet, wall_offset: float, listen: str | None) -> Snapshot:
    counts = {str(state): 0 for state in State}
    problems: list[tuple[int, str, Target]] = []
    lossy: list[tuple[float, str, Target]] = []
    sent = probes = 0
    for target in fleet:
        state = target.state
        counts[str(state)] += 1
        stats = target.stats
        sent += stats.sent
        probes += stats.probes
        if state is not State.UP:
            problems.append((_SEVERITY[state], target.name, target))
        else:
            loss = target.loss_ratio()
            if loss:
                lossy.append((-loss, target.name, target))
    problems.sort(key=lambda item: item[:2])
    lossy.sort(key=lambda item: item[:2])
    snapshot = Snapshot(
        at=time.time(),
        targets=len(fleet),
        counts=counts,
        sent=sent,
        probes=probes,
        budget_waits=fleet.budget.waited if fleet.budget else 0,
        listen=listen,
    )
    for _, _, target in problems[:VIEW_ROWS]:
        change = target.stats.last_change
        since = "" if change is None else clock_text(change.at + wall_offset)[11:23]
        loss = target.loss_ratio()
        snapshot.problems.append(
            (
                target.name,
                _address(target),
                str(target.state),
                since,
                "" if loss is None else f"{loss:.1%}",
                "" if change is None else change.reason,
            )
        )
    for negative_loss, _, target in lossy[:5]:
        rtts = target.stats.rtts()
        p50 = "" if not rtts else f"{rtts[len(rtts) // 2] * 1e3:.3f} ms"
        snapshot.lossy.append((target.name, _address(target), f"{-negative_loss:.1%}", p50))
    return snapshot


def _address(target: Target) -> str:
    config = target.config
    return (
        f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
    )


class LiveView:
    """A rich ``Live`` display drawn by a thread of its own from the snapshots it is given."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console

        self._console = Console(file=stream)
        self._lock = threading.Condition()
        self._lines: deque[str] = deque()
        self._snapshot: Snapshot | None = None
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="udpbeat-live", daemon=True)
        self._thread.start()

    def post(self, snapshot: Snapshot | None = None, lines: Sequence[str] = ()) -> None:
        with self._lock:
            for line in lines:
                if len(self._lines) >= VIEW_BACKLOG:
                    self.dropped += 1
                else:
                    self._lines.append(line)
            if snapshot is not None:
                self._snapshot = snapshot
            self._lock.notify()

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        from rich.live import Live

        with Live(console=self._console, auto_refresh=False, transient=False) as live:
            while True:
                with self._lock:
                    self._lock.wait_for(lambda: self._closed or self._lines or self._snapshot)
                    lines = list(self._lines)
                    self._lines.clear()
                    snapshot, self._snapshot = self._snapshot, None
                    closed = self._closed
                try:
                    for line in lines:
                        live.console.print(line, markup=False, highlight=False, soft_wrap=True)
                    if snapshot is not None:
                        live.update(render_snapshot(snapshot), refresh=True)
                except OSError:  # the terminal went away
                    return
                if closed:
                    return


def render_snapshot(snapshot: Snapshot) -> Any:
    """The live view's renderable for ``snapshot`` (rich objects)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counts = snapshot.counts
    header = Text.assemble(
        ("udpbeat monitor ", "bold"),
        f"{snapshot.targets} targets  ",
        ("UP ", "green"),
        f"{counts['UP']}  ",
        ("SUSPECT ", "yellow"),
        f"{counts['SUSPECT']}  ",
        ("DOWN ", "red"),
        f"{counts['DOWN']}  ",
        ("UNKNOWN ", "dim"),
        f"{counts['UNKNOWN']}",
        f"   sent {snapshot.sent:,} (probes {snapshot.probes:,}, waited for budget "
        f"{snapshot.budget_waits:,})",
        f"   {snapshot.listen or ''}   {clock_text(snapshot.at)[11:19]}",
    )
    parts: list[Any] = [header]
    if snapshot.problems:
        shown = len(snapshot.problems)
        total = snapshot.targets - counts["UP"]
        table = Table(title=f"not UP ({shown} of {total})", title_justify="left", expand=False)
        for column in ("target", "address", "state", "since", "loss", "reason"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        style = {"DOWN": "red", "SUSPECT": "yellow", "UNKNOWN": "dim"}
        for row in snapshot.problems:
            table.add_row(*row, style=style.get(row[2]))
        parts.append(table)
    if snapshot.lossy:
        table = Table(title="highest loss while UP", title_justify="left", expand=False)
        for column in ("target", "address", "loss", "rtt p50"):
            table.add_column(column, no_wrap=True)
        for lossy_row in snapshot.lossy:
            table.add_row(*lossy_row)
        parts.append(table)
    return Group(*parts)


# --- running ---------------------------------------------------------------------------------


class MonitorOutput:
    """Where the monitor's lines go: stdout (plain lines or the live view), stderr, the events
    file. Nothing here blocks the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, live: bool, stdout_closed: bool):
        self.err = LineWriter(sys.stderr, name="udpbeat-stderr")
        self.live: LiveView | None = None
        self.out: LineWriter | None = None
        self._events: LineWriter | None = None
        self._events_file: TextIO | None = None
        if live and not stdout_closed:
            self.live = LiveView(sys.stdout)
        else:

            def lost(error: OSError) -> None:
                loop.call_soon_threadsafe(
                    self.err.write, "udpbeat: stdout is gone; still monitoring (see --events)"
                )

            self.out = LineWriter(None if stdout_closed else sys.stdout, on_lost=lost)

    def open_events(self, path: str) -> None:
        """Open (or reopen, after a log rotation) the events file for appending.

        Raises:
            ConfigError: it cannot be opened (the old one, if any, stays in use).
        """
        try:
            stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close_events
        except OSError as error:
            raise ConfigError(f"--events {path}: {error.strerror or error}") from None
        self.close_events()
        self._events_file = stream
        self._events = LineWriter(stream, name="udpbeat-events")

    def close_events(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._events_file is not None:
            with contextlib.suppress(OSError):
                self._events_file.close()
            self._events_file = None

    def changes(self, changes: list[Change], wall_offset: float) -> None:
        lines = [change_line(change, wall_offset) for change in changes]
        if self.live is not None:
            self.live.post(lines=lines)
        elif self.out is not None:
            for line in lines:
                self.out.write(line)
        if self._events is not None:
            for change in changes:
                self._events.write(json.dumps(change_record(change, wall_offset)))

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
        if self.out is not None:
            self.out.close()
        self.close_events()
        self.err.close()


async def run_monitor(settings: Settings, *, stdout_closed: bool = False) -> int:
    """Monitor until SIGINT or SIGTERM; 0, or raises ConfigError before anything starts."""
    from aiohttp import web

    from udpbeat.monitor.http import make_app
    from udpbeat.monitor.shell import Monitor

    loop = asyncio.get_running_loop()
    config = await loop.run_in_executor(None, build_config, settings)
    if settings.probe_budget == 0:
        budget = None
    else:
        rate, burst = default_budget(config)
        if settings.probe_budget is not None:
            rate = settings.probe_budget
            burst = max(1, math.ceil(rate))
        budget = ProbeBudget(rate, settings.probe_burst or burst)
    fleet = Fleet(budget=budget, buckets=settings.buckets)
    writer: HistoryWriter | None = None
    if settings.db is not None:
        writer = await loop.run_in_executor(None, open_history, settings, loop)
    recorder = Recorder(fleet, writer, clock=loop.time)
    live = settings.view == "live" or (settings.view == "auto" and _is_terminal(sys.stdout))
    output = MonitorOutput(loop, live=live, stdout_closed=stdout_closed)
    hooks: HookRunner | None = None
    runner: web.AppRunner | None = None
    monitor: Monitor | None = None
    # "stopped" is said only of a monitor that said it had started: a bad target or a port in
    # use is the one error line, nothing more.
    started = False
    try:
        if settings.events is not None:
            output.open_events(settings.events)
        if settings.on_change:
            hooks = HookRunner(
                settings.on_change,
                "",
                on_failure=lambda message: output.err.write(f"udpbeat: {message}"),
                stdout=_stderr_fd(),
            )

        def on_changes(changes: list[Change]) -> None:
            offset = time.time() - loop.time()
            output.changes(changes, offset)
            recorder.changes(changes, offset)
            if hooks is not None:
                for change in changes:
                    hooks.notify(
                        change.transition,
                        target=change.target.name,
                        extra=hook_extra(change.target),
                    )

        monitor = Monitor(fleet, on_changes=on_changes)
        await monitor.apply(config)
        resumed = 0 if writer is None else recorder.resume(writer.resumed)
        recorder.watch_all()
        url = None
        if settings.listen is not None:
            listener = _listen_socket(*settings.listen)
            app = make_app(monitor, recorder=recorder)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, listener).start()
            host, port = listener.getsockname()[:2]
            url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        sources = ", ".join(_show(address) for address in monitor.addresses())
        budget_text = (
            "no global probe budget"
            if budget is None
            else f"probe budget {budget.rate:g}/s, burst {budget.burst}"
        )
        output.err.write(
            f"udpbeat monitor: {len(fleet)} target{'' if len(fleet) == 1 else 's'} from "
            f"{sources or 'no socket yet'}; "
            f"{budget_text}; "
            + (f"status page on {url}/, metrics on {url}/metrics" if url else "no HTTP")
            + (
                ""
                if writer is None
                else f"; history in {writer.path} ({resumed} targets resumed, "
                f"kept {settings.retention_days:g} days)"
            )
            + "; SIGHUP reloads, Ctrl-C stops"
        )
        started = True
        await _supervise(monitor, settings, output, loop, url, recorder)
    finally:
        if monitor is not None:
            monitor.stop()
        if runner is not None:
            await runner.cleanup()
        if hooks is not None:
            await hooks.close()
        if writer is not None:
            await loop.run_in_executor(None, writer.close)
        if monitor is not None:
            monitor.close()
        if started:
            output.err.write(f"udpbeat monitor: stopped; {_states(fleet)}")
        output.close()
    return 0


async def _supervise(
    monitor: Any,
    settings: Settings,
    output: MonitorOutput,
    loop: asyncio.AbstractEventLoop,
    url: str | None,
    recorder: Recorder | None = None,
) -> None:
    """Run the monitor, its reloads and its live view until SIGINT or SIGTERM."""
    stopping = asyncio.Event()
    reload_wanted = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload_wanted.set)

    async def reloads() -> None:
        while True:
            await reload_wanted.wait()
            reload_wanted.clear()
            await reload(monitor, settings, output, loop)

    async def view() -> None:
        assert output.live is not None
        while True:
            offset = time.time() - loop.time()
            output.live.post(take_snapshot(monitor.fleet, offset, url))
            await asyncio.sleep(VIEW_PERIOD)

    async def stop_when_asked() -> None:
        await stopping.wait()
        monitor.stop()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(monitor.run())
            group.create_task(stop_when_asked())
            helpers = [group.create_task(reloads())]
            if recorder is not None:
                helpers.append(group.create_task(recorder.run()))
            if output.live is not None:
                helpers.append(group.create_task(view()))
            # The run ends on stop(); then the helpers go too.
            await stopping.wait()
            for task in helpers:
                task.cancel()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def reload(
    monitor: Any, settings: Settings, output: MonitorOutput, loop: asyncio.AbstractEventLoop
) -> bool:
    """SIGHUP: re-read the file, apply it, reopen the events file. ``True`` if applied."""
    monitor.stats.reloads += 1
    try:
        config = await loop.run_in_executor(None, build_config, settings)
        applied = await monitor.apply(config)
    except ConfigError as error:
        monitor.stats.reload_failures += 1
        output.err.write(f"udpbeat: SIGHUP: new configuration refused, the old one stays: {error}")
        return False
    budget = monitor.fleet.budget
    if budget is not None and settings.probe_budget is None:
        rate, burst = default_budget(config)
        budget.configure(rate, settings.probe_burst or burst)
    if settings.events is not None:
        try:
            output.open_events(settings.events)
        except ConfigError as error:
            output.err.write(f"udpbeat: SIGHUP: {error}; still writing to the old file")
    output.err.write(
        f"udpbeat: SIGHUP: {len(monitor.fleet)} targets: {len(applied.added)} added, "
        f"{len(applied.removed)} removed, {len(applied.restarted)} restarted, "
        f"{len(applied.kept)} unchanged"
    )
    return True


def open_history(settings: Settings, loop: asyncio.AbstractEventLoop) -> HistoryWriter:
    """The ``--db`` file, opened (or made) for writing; its write errors go to stderr once.

    Raises:
        HistoryError: not a udpbeat history, or it cannot be opened (one line).
    """
    assert settings.db is not None

    def failed(message: str) -> None:
        loop.call_soon_threadsafe(
            lambda: sys.stderr.write(f"udpbeat: {message}\n") and sys.stderr.flush()
        )

    return HistoryWriter(settings.db, retention=settings.retention_days * 86400, on_error=failed)


def _states(fleet: Fleet) -> str:
    return ", ".join(f"{count} {state}" for state, count in fleet.counts().items() if count)


def _show(address: tuple[Any, ...]) -> str:
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_socket(host: str, port: int) -> socket.socket:
    """The HTTP listening socket, bound now so that its port is known (``--listen H:0``).

    Raises:
        ConfigError: it cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError(f"--listen: cannot resolve {host!r}: {error.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise ConfigError(f"--listen {host}:{port}: {error.strerror or error}") from None
    sock.setblocking(False)
    return sock


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def parse_listen(text: str) -> tuple[str, int] | None:
    """``--listen HOST:PORT`` (``off``: no HTTP).

    Raises:
        click.BadParameter: not HOST:PORT.
    """
    if text.lower() in ("off", "none", ""):
        return None
    try:
        host, port = split_host_port(text, "--listen")
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="'--listen'") from None
    if port is None or not 0 <= port <= 65535:
        raise click.BadParameter(
            f"expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_HTTP_PORT}), got {text!r}",
            param_hint="'--listen'",
        )
    return host, port


def parse_buckets(text: str) -> tuple[float, ...]:
    """``--rtt-buckets 0.001,0.01,0.1``: increasing upper bounds in seconds.

    Raises:
        click.BadParameter: not increasing positive numbers.
    """
    try:
        bounds = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected seconds separated by commas, got {text!r}", param_hint="'--rtt-buckets'"
        ) from None
    if (
        not bounds
        or any(not 0 < b < math.inf for b in bounds)
        or list(bounds) != sorted(set(bounds))
    ):
        raise click.BadParameter(
            f"expected increasing numbers of seconds > 0, got {text!r}",
            param_hint="'--rtt-buckets'",
        )
    return bounds


@click.command()
@click.argument("hosts", metavar="[HOST[:PORT]]...", nargs=-1)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="TOML file of targets ([defaults], [[targets]]); SIGHUP re-reads it.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of HOST arguments that give none [default: the file's, else 12000].",
)
@click.option(
    "--interval",
    "-i",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Seconds between heartbeats for HOST arguments [default: the file's, else 1].",
)
@click.option(
    "--timeout",
    "-W",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Longest wait for a reply for HOST arguments [default: the file's, else 1].",
)
@click.option(
    "--detector",
    type=click.Choice(sorted(DETECTORS)),
    default=None,
    help="Detector for HOST arguments [default: the file's, else adaptive].",
)
@click.option(
    "--listen",
    default=f"127.0.0.1:{DEFAULT_HTTP_PORT}",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the status page (/), /metrics, /api/targets, /api/monitor and /healthz are "
    "served ('off': nowhere).",
)
@click.option(
    "--shard",
    "shard_text",
    default=None,
    metavar="I/N",
    help="Probe only shard I (from 0) of N: rendezvous hashing of the target names.",
)
@click.option(
    "--probe-budget",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Confirmation probes per second over all targets [default: as many as the targets' "
    f"heartbeats, at least {MIN_PROBE_BUDGET}; 0: no global budget].",
)
@click.option(
    "--probe-burst",
    type=click.IntRange(min=1),
    default=None,
    help="Probes the global budget allows at once [default: one second's worth].",
)
@click.option(
    "--rtt-buckets",
    default=None,
    metavar="S,S,...",
    help="Upper bounds (seconds) of udpbeat_rtt_seconds' buckets "
    f"[default: {','.join(f'{b:g}' for b in DEFAULT_BUCKETS)}].",
)
@click.option(
    "--on-change",
    metavar="CMD",
    default=None,
    help="Shell command run on every state change (as for udpbeat client), with "
    "UDPBEAT_TARGET (the name), UDPBEAT_HOST, UDPBEAT_PORT and UDPBEAT_LABELS (JSON) too.",
)
@click.option(
    "--events",
    metavar="FILE",
    default=None,
    help="Append every state change to FILE as a JSON line (reopened on SIGHUP).",
)
@click.option(
    "--db",
    metavar="FILE",
    default=None,
    help="Keep the history (per minute, state changes, outages) in this SQLite file; a "
    "restart resumes from it. A file that is not a udpbeat history is refused, untouched.",
)
@click.option(
    "--retention",
    "retention_days",
    type=click.FloatRange(min=0.0, min_open=True, max=36500),
    default=None,
    metavar="DAYS",
    help=f"Delete history older than DAYS (with --db) [default: {DEFAULT_RETENTION_DAYS:g}].",
)
@click.option(
    "--view",
    type=click.Choice(["auto", "live", "plain"]),
    default="auto",
    show_default=True,
    help="live: a live view (rich); plain: a line per state change; auto: live on a terminal.",
)
def monitor(
    hosts: tuple[str, ...],
    config_file: str | None,
    port: int | None,
    interval: float | None,
    timeout: float | None,
    detector: str | None,
    listen: str,
    shard_text: str | None,
    probe_budget: float | None,
    probe_burst: int | None,
    rtt_buckets: str | None,
    on_change: str | None,
    events: str | None,
    db: str | None,
    retention_days: float | None,
    view: str,
) -> int:
    """Watch many servers at once: HOST[:PORT] arguments and/or a --config file."""
    if not hosts and config_file is None:
        raise click.UsageError("no targets: give HOST[:PORT] arguments and/or --config FILE")
    if retention_days is not None and db is None:
        raise click.UsageError("--retention needs --db FILE (there is no history to keep)")
    settings = Settings(
        hosts=hosts,
        config_file=config_file,
        port=port,
        interval=interval,
        timeout=timeout,
        detector=detector,
        shard=shard.parse_shard(shard_text) if shard_text else (0, 1),
        listen=parse_listen(listen),
        probe_budget=probe_budget,
        probe_burst=probe_burst,
        buckets=parse_buckets(rtt_buckets) if rtt_buckets else DEFAULT_BUCKETS,
        on_change=on_change,
        events=events,
        view=view,
        db=db,
        retention_days=DEFAULT_RETENTION_DAYS if retention_days is None else retention_days,
    )
    return asyncio.run(run_monitor(settings, stdout_closed=stdout_was_closed()))
