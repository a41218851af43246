"""``udpbeat client``: the prober's command line, its live lines and its summaries.

One target reads like ``ping``: a header, a line per reply or miss, the statistics at the end.
Several targets are probed at once, as ``fping`` does: every live line starts with its target,
and the run ends with one summary line per target. Every name is resolved before anything is
printed, so a name that does not resolve is one line on stderr and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from udpbeat._net import (
    DEFAULT_PORT,
    FAMILIES,
    check_source,
    display_address,
    resolve,
    run_on_time,
    split_host_port,
)
from udpbeat.cli.format import format_event, format_header, format_report, json_line
from udpbeat.cli.lines import summary_line, target_prefix, timestamp
from udpbeat.cli.options import Integer, Number, Seconds
from udpbeat.cli.output import LineWriter, stdout_was_closed
from udpbeat.client import Prober, probe
from udpbeat.detector import DETECTORS, AdaptiveDetector, State
from udpbeat.errors import ConfigError
from udpbeat.events import Event, SessionFinished, StateChanged, event_to_dict
from udpbeat.hooks import ChangeFilter, HookRunner
from udpbeat.report import ProbeReport
from udpbeat.session import PROBES_PER_INTERVAL, ProbeConfig
from udpbeat.wire import PROTOCOLS, stamp

EXIT_UP = 0
EXIT_DOWN = 1

#: Signals that end a run with its summary (SIGHUP too: a client has nothing to re-read).
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: ping's Ctrl-\: statistics so far, and the run goes on.
STATS_SIGNAL = getattr(signal, "SIGQUIT", None)


def exit_status(report: ProbeReport) -> int:
    """0 the run ended with the server up; 1 it was declared down or never answered."""
    if report.state is State.DOWN or report.received == 0:
        return EXIT_DOWN
    return EXIT_UP


def exit_status_all(reports: Sequence[ProbeReport]) -> int:
    """0 only if every target ended up (fping's rule); else 1."""
    return max((exit_status(report) for report in reports), default=EXIT_DOWN)


@dataclass(frozen=True)
class ClientOptions:
    """How ``udpbeat client`` shows a run: everything but what the session is told."""

    as_json: bool = False
    #: ping -q: the header and the summary only (with ``as_json``: the summary only).
    quiet: bool = False
    #: State changes and the summary only.
    changes_only: bool = False
    #: ping -D: each live line starts with its Unix time.
    timestamps: bool = False
    on_change: str | None = None
    on_change_suspect: bool = False
    stats_interval: float | None = None
    deadline: float | None = None
    #: Where the JSON Lines also go (``-o FILE``), open for writing.
    output: TextIO | None = None
    family: int = socket.AF_UNSPEC
    source: str | None = None
    #: Arrival times from the kernel's receive stamps where it gives them.
    kernel_timestamps: bool = True
    stdout_closed: bool = False


class ClientOutput:
    """The client's stdout, stderr and ``-o`` file, written off the event loop.

    When stdout's reader goes away (``| head -3``) the client has no one left to tell: it
    ends at once and quietly, as ``ping | head`` does (``on_lost`` is called on the loop). A
    ``-o`` file that fails is said once on stderr; the run goes on without it.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[], None],
        *,
        stdout_closed: bool = False,
        json_file: TextIO | None = None,
    ) -> None:
        self.lost = stdout_closed
        self._on_lost = on_lost

        def lost(error: OSError) -> None:
            loop.call_soon_threadsafe(self._lose)

        self.out = LineWriter(None if stdout_closed else sys.stdout, on_lost=lost)
        self.err = LineWriter(sys.stderr, name="udpbeat-stderr")
        self.file: LineWriter | None = None
        if json_file is not None:
            name = getattr(json_file, "name", "the output file")

            def file_lost(error: OSError) -> None:
                reason = error.strerror or str(error)
                self.err.write(f"udpbeat: cannot write to {name}: {reason}; going on without it")

            self.file = LineWriter(json_file, on_lost=file_lost, name="udpbeat-file")

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self._on_lost()

    def line(self, text: str) -> None:
        self.out.write(text)

    def record(self, obj: dict[str, object]) -> None:
        """A JSON object for the ``-o`` file, if there is one."""
        if self.file is not None:
            self.file.write(json_line(obj))

    def close(self) -> None:
        self.out.close()
        if self.file is not None:
            self.file.close()
        self.err.close()


def event_printer(
    write: Callable[[str], None],
    *,
    as_json: bool,
    quiet: bool,
    target: str,
    first_seq: Callable[[], int],
    prefix: str = "",
    changes_only: bool = False,
    wall_time: Callable[[Event], float] | None = None,
    extra: dict[str, object] | None = None,
    verbose: bool = False,
) -> Callable[[Event], None]:
    """What a run shows of each event on stdout.

    ``quiet``: nothing (the summary says it all); ``changes_only``: state changes (and the
    verdict that ends a run); ``wall_time``: each line starts with ``[unix time]`` (``-D``);
    ``extra``: keys added to every JSON object (``target`` when there are several);
    ``verbose``: also the quiet events (a detector's early deadline).
    """

    def show(event: Event) -> None:
        if quiet:
            return
        change = isinstance(event, StateChanged)
        if as_json:
            if changes_only and not change:
                return
            write(json_line({**event_to_dict(event), **(extra or {})}))
            return
        if changes_only and not (change or isinstance(event, SessionFinished)):
            return
        line = format_event(event, target, first_seq(), verbose=verbose)
        if line is None:
            return
        stamp = "" if wall_time is None else timestamp(wall_time(event))
        write(stamp + prefix + line)

    return show


@dataclass
class _Target:
    """One target of a run: as given, as resolved, and its prober once it starts."""

    host: str
    port: int
    address: tuple[Any, ...] = ()
    family: int = socket.AF_UNSPEC
    prober: Prober | None = None
    hook_filter: ChangeFilter = field(default_factory=ChangeFilter)

    @property
    def display(self) -> str:
        return display_address(self.address) if self.address else f"{self.host}:{self.port}"

    def first_seq(self) -> int:
        return self.prober.session.first_seq if self.prober is not None else 1


async def run_client(
    host: str,
    port: int,
    config: ProbeConfig,
    *,
    as_json: bool,
    quiet: bool,
    on_change: str | None = None,
    stdout_closed: bool = False,
) -> ProbeReport | None:
    """Probe one target; the report, or ``None`` if stdout was lost (nothing more to say)."""
    options = ClientOptions(
        as_json=as_json, quiet=quiet, on_change=on_change, stdout_closed=stdout_closed
    )
    reports = await run_targets([(host, port)], config, options)
    return None if reports is None else reports[0]


async def run_targets(
    targets: Sequence[tuple[str, int]], config: ProbeConfig, options: ClientOptions
) -> list[ProbeReport] | None:
    """Probe every target at once; their reports in order, or ``None`` if stdout was lost.

    Raises:
        ConfigError: a target does not resolve (nothing is printed then), or cannot be
            probed from ``options.source``.
    """
    return await _ClientRun(targets, config, options).run()


class _ClientRun:
    """One ``udpbeat client`` run: its targets, its output, its signals and timers."""

    def __init__(
        self, targets: Sequence[tuple[str, int]], config: ProbeConfig, options: ClientOptions
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.targets = [_Target(host, port) for host, port in targets]
        self.several = len(self.targets) > 1
        self.config = config
        self.options = options
        # With no one to tell, end as soon as the probers exist.
        self.stopping = options.stdout_closed
        self.output = ClientOutput(
            self.loop, self.stop, stdout_closed=options.stdout_closed, json_file=options.output
        )
        self.wall_offset = time.time() - self.loop.time()
        self.hooks: HookRunner | None = None
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """End every probe now (a signal, the deadline, or stdout gone); summaries follow."""
        self.stopping = True
        self._stopped.set()
        for target in self.targets:
            if target.prober is not None:
                target.prober.stop()

    def show_stats(self) -> None:
        """Statistics so far, one line (or a ``stats`` object) per target; the run goes on."""
        now = self.loop.time()
        for target in self.targets:
            if target.prober is None:
                continue
            report = target.prober.session.report(now)
            stats = {**report.to_dict(), "type": "stats"}
            self.output.record(stats)
            if self.options.as_json:
                self.output.line(json_line(stats))
            else:
                stamp = timestamp(now + self.wall_offset) if self.options.timestamps else ""
                self.output.line(stamp + summary_line(report))

    def _wall_time(self, event: Event) -> float:
        return float(getattr(event, "at", self.loop.time())) + self.wall_offset

    def _arm_timers(self) -> None:
        loop, options = self.loop, self.options
        if options.deadline is not None:
            self._handles["deadline"] = loop.call_later(options.deadline, self.stop)
        if options.stats_interval is not None:
            interval = options.stats_interval

            def tick(due: float) -> None:
                self.show_stats()
                due = max(due + interval, loop.time())  # on schedule; after a stall, skip
                self._handles["stats"] = loop.call_at(due, tick, due)

            first = loop.time() + interval
            self._handles["stats"] = loop.call_at(first, tick, first)

    async def run(self) -> list[ProbeReport] | None:
        loop, options, output = self.loop, self.options, self.output
        for signum in ENDING_SIGNALS:
            loop.add_signal_handler(signum, self.stop)
        if STATS_SIGNAL is not None:
            loop.add_signal_handler(STATS_SIGNAL, self.show_stats)
        self._arm_timers()
        try:
            if not await self._resolve():
                return None  # stopped before every name resolved: nothing was sent or said
            if not options.as_json:
                for target in self.targets:
                    output.line(format_header(target.host, target.display, self.config))
            if options.on_change:
                # The hook's output goes to stderr, so that --json keeps stdout pure JSON Lines.
                self.hooks = HookRunner(
                    options.on_change,
                    self.targets[0].display,
                    on_failure=lambda message: output.err.write(f"udpbeat: {message}"),
                    stdout=_stderr_fd(),
                )
            reports = await self._probe_all()
            if output.lost:
                return None
            for report in reports:
                output.record(report.to_dict())
            if options.as_json:
                for report in reports:
                    output.line(json_line(report.to_dict()))
            elif self.several:
                output.line("\n" + "\n".join(summary_line(report) for report in reports))
            else:
                output.line("\n" + format_report(reports[0]))
            return None if output.lost else reports
        finally:
            for handle in self._handles.values():
                handle.cancel()
            for signum in ENDING_SIGNALS:
                loop.remove_signal_handler(signum)
            if STATS_SIGNAL is not None:
                loop.remove_signal_handler(STATS_SIGNAL)
            if self.hooks is not None:
                await self.hooks.close()
            output.close()

    async def _resolve(self) -> bool:
        """Every name (and the source address) first: an error is then the only thing said.

        False if the run was stopped first (Ctrl-C while a slow DNS server thinks): the run
        then ends at once, without waiting for the lookups.
        """
        resolving = asyncio.gather(
            *(resolve(t.host, t.port, self.options.family) for t in self.targets),
            return_exceptions=True,
        )
        stopped = asyncio.ensure_future(self._stopped.wait())
        await asyncio.wait((resolving, stopped), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not resolving.done():
            resolving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resolving
            return False
        outcomes = resolving.result()
        for target, outcome in zip(self.targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            target.address, target.family = outcome
            if self.options.source is not None:
                check_source(self.options.source, target.family)
        return True

    async def _probe_all(self) -> list[ProbeReport]:
        """One prober per target, concurrently; an error in any ends them all."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._probe(target)) for target in self.targets]
        except BaseExceptionGroup as errors:
            raise _first_leaf(errors) from None
        return [task.result() for task in tasks]

    async def _probe(self, target: _Target) -> ProbeReport:
        options = self.options
        display = target.display
        show = event_printer(
            self.output.line,
            as_json=options.as_json,
            quiet=options.quiet,
            changes_only=options.changes_only,
            target=display,
            first_seq=target.first_seq,
            prefix=target_prefix(display) if self.several else "",
            wall_time=self._wall_time if options.timestamps else None,
            extra={"target": display} if self.several else None,
        )
        target.hook_filter = ChangeFilter(include_suspect=options.on_change_suspect)
        record_extra = {"target": display} if self.several else {}

        def on_event(event: Event) -> None:
            show(event)
            self.output.record({**event_to_dict(event), **record_extra})
            if (
                self.hooks is not None
                and isinstance(event, StateChanged)
                and target.hook_filter.wants(event.transition)
            ):
                self.hooks.notify(event.transition, target=display)

        def started(prober: Prober) -> None:
            # Stopped while the name was still resolving: stop as soon as the prober exists.
            target.prober = prober
            if self.stopping:
                prober.stop()

        return await probe(
            str(target.address[0]),
            target.port,
            self.config,
            on_event=on_event,
            on_start=started,
            family=target.family,
            source=options.source,
            kernel_timestamps=options.kernel_timestamps,
        )


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _stderr_fd() -> int | None:
    """stderr's file descriptor, or ``None`` where it has none (e.g. click's CliRunner)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _adaptive_default(name: str, fallback: float) -> float:
    parameter = inspect.signature(AdaptiveDetector).parameters.get(name)
    return fallback if parameter is None else float(parameter.default)


#: ``--confirm-interval`` (the slowest pace of confirmation probes) may not be faster than the
#: adaptive detector's fastest pace: checked by the option, so that the error names the flag
#: rather than the detector's own parameter, which the command line does not have.
MIN_CONFIRM_INTERVAL = _adaptive_default("min_confirm_interval", 0.01)


@click.command()
@click.argument("targets", metavar="HOST[:PORT]...", nargs=-1, required=True)
@click.option(
    "--port",
    type=Integer(1, 65535),
    metavar="PORT",
    default=DEFAULT_PORT,
    show_default=f"{DEFAULT_PORT}; {stamp.DEFAULT_PORT} with --protocol stamp",
    help="UDP port of every HOST given without one (HOST:PORT or [IPV6]:PORT sets its own).",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="text",
    show_default=True,
    help="Wire format: the exercise's text heartbeats, or STAMP test packets (RFC 8762), "
    "which add one-way delays, the reflector's time and the clocks' offset to the summary.",
)
@click.option(
    "--ssid",
    type=Integer(0, 65535),
    metavar="N",
    default=None,
    help="STAMP: the session identifier (RFC 8972 SSID) in every packet [default: 0].",
)
@click.option(
    "--stamp-key-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="STAMP authenticated mode (RFC 8762 §4.2.2): the shared HMAC key is this file's "
    "content; replies with a bad HMAC are counted as malformed.",
)
@click.option(
    "--stamp-size",
    type=Integer(stamp.BASE_SIZE, 9000),
    metavar="OCTETS",
    default=None,
    help="STAMP: pad each packet to this size with an Extra Padding TLV (RFC 8972 §4.1); the "
    "reflector answers as large [default: 44, 112 authenticated].",
)
@click.option(
    "--count",
    "-c",
    type=Integer(min=0),
    metavar="N",
    default=100,
    show_default=True,
    help="Heartbeats to send (0: until stopped).",
)
@click.option(
    "--interval",
    "-i",
    type=Seconds(min=0.0),
    metavar="SECONDS",
    default=1.0,
    show_default=True,
    help="Seconds between heartbeats (0: next one as soon as the last is resolved).",
)
@click.option(
    "--timeout",
    "-W",
    type=Seconds(min=0.0, min_open=True),
    metavar="SECONDS",
    default=1.0,
    show_default=True,
    help="Longest wait for a reply, in seconds.",
)
@click.option(
    "--deadline",
    "-w",
    type=Seconds(min=0.0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop after SECONDS whatever the count (ping -w), with the summary.",
)
@click.option("-4", "ipv4", is_flag=True, help="Use IPv4 addresses only (names resolve to IPv4).")
@click.option("-6", "ipv6", is_flag=True, help="Use IPv6 addresses only (names resolve to IPv6).")
@click.option(
    "--source",
    "-I",
    metavar="ADDRESS",
    default=None,
    help="Send from this local address (ping -I; an address, not an interface name).",
)
@click.option(
    "--receive-stamps",
    type=click.Choice(["kernel", "user"]),
    default="kernel",
    show_default=True,
    help="Where a reply's arrival time comes from: the kernel's receive stamp (Linux; "
    "'user' where there is none) or the clock when udpbeat reads the reply.",
)
@click.option(
    "--detector",
    "detector_name",
    type=click.Choice(sorted(DETECTORS)),
    default=None,
    help="How the server is judged down [default: adaptive; consecutive if only --max-misses "
    "is given].",
)
@click.option(
    "--max-misses",
    type=Integer(min=1),
    metavar="N",
    default=None,
    help="consecutive: down after this many consecutive misses [default: 3].",
)
@click.option(
    "--false-alarm",
    type=Number(0.0, 1.0, min_open=True, max_open=True),
    metavar="P",
    default=None,
    help="adaptive: highest accepted chance that a live server is declared down [default: 1e-9].",
)
@click.option(
    "--confirm-interval",
    type=Seconds(min=MIN_CONFIRM_INTERVAL),
    metavar="SECONDS",
    default=None,
    help="adaptive: slowest pace of confirmation probes after a miss, in seconds; the pace "
    f"follows the RTT, never below {MIN_CONFIRM_INTERVAL:g} s [default: 0.05].",
)
@click.option(
    "--phi-threshold",
    type=Number(min=0.0, min_open=True),
    metavar="PHI",
    default=None,
    help="phi: suspicion level that means down; half of it means suspect [default: 8].",
)
@click.option(
    "--min-std-deviation",
    type=Seconds(min=0.0, min_open=True),
    metavar="SECONDS",
    default=None,
    help="phi: floor of the reply intervals' standard deviation, in seconds [default: 0.1].",
)
@click.option(
    "--acceptable-pause",
    type=Seconds(min=0.0),
    metavar="SECONDS",
    default=None,
    help="phi: silence tolerated on top of the usual interval, in seconds [default: 0].",
)
@click.option(
    "--probes-per-interval",
    type=Integer(min=0),
    metavar="N",
    default=PROBES_PER_INTERVAL,
    show_default=True,
    help="Most confirmation probes per interval (a bucket that refills that many per "
    "interval; 0: none). Fewer probes mean a slower verdict.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep probing after DOWN and go back UP on the next reply; outages in the summary.",
)
@click.option(
    "--on-change",
    metavar="CMD",
    default=None,
    help="Shell command run when a target goes UP or DOWN, with UDPBEAT_TARGET, "
    "UDPBEAT_OLD_STATE, UDPBEAT_NEW_STATE, UDPBEAT_REASON, UDPBEAT_EVIDENCE (JSON) and "
    "UDPBEAT_TIME set.",
)
@click.option(
    "--on-change-suspect",
    is_flag=True,
    help="Run the --on-change command on every change, SUSPECT flaps included.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="JSON Lines: an object per event, then a summary."
)
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8", lazy=False),
    default=None,
    metavar="FILE",
    help="Also write the JSON Lines (every event, then the summary) to FILE.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Only the header and the summary, as ping -q (with --json: the summary only).",
)
@click.option(
    "--changes-only",
    is_flag=True,
    help="Only state changes and the summary.",
)
@click.option(
    "--timestamps",
    "-D",
    "timestamps",
    is_flag=True,
    help="Start each live line with its Unix time, [1733112345.123456] (ping -D).",
)
@click.option(
    "--stats-interval",
    type=Seconds(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Print the statistics so far every SECONDS (also on SIGQUIT, Ctrl-\\).",
)
@click.pass_context
def client(
    ctx: click.Context,
    targets: tuple[str, ...],
    port: int,
    protocol: str,
    ssid: int | None,
    stamp_key_file: str | None,
    stamp_size: int | None,
    count: int,
    interval: float,
    timeout: float,
    deadline: float | None,
    ipv4: bool,
    ipv6: bool,
    source: str | None,
    receive_stamps: str,
    detector_name: str | None,
    max_misses: int | None,
    false_alarm: float | None,
    confirm_interval: float | None,
    phi_threshold: float | None,
    min_std_deviation: float | None,
    acceptable_pause: float | None,
    probes_per_interval: int,
    watch: bool,
    on_change: str | None,
    on_change_suspect: bool,
    as_json: bool,
    output: TextIO | None,
    quiet: bool,
    changes_only: bool,
    timestamps: bool,
    stats_interval: float | None,
) -> int:
    """Send heartbeats to each HOST and report how it answers.

    Several hosts are probed at once; the exit status is 0 only if every one ends up.
    """
    if ipv4 and ipv6:
        raise click.UsageError("-4 and -6 exclude each other")
    if quiet and changes_only:
        raise click.UsageError("-q and --changes-only exclude each other: -q shows no changes")
    if timestamps and as_json:
        raise click.UsageError("-D stamps text lines; with --json every event has its own time")
    if on_change_suspect and not on_change:
        raise click.UsageError("--on-change-suspect needs --on-change CMD")
    port_given = ctx.get_parameter_source("port") is not click.core.ParameterSource.DEFAULT
    name, options = choose_detector(
        detector_name,
        max_misses=max_misses,
        false_alarm=false_alarm,
        confirm_interval=confirm_interval,
        threshold=phi_threshold,
        min_std_deviation=min_std_deviation,
        acceptable_pause=acceptable_pause,
    )
    stamp_options: dict[str, object] = {}
    if protocol == "stamp":
        if ssid is not None:
            stamp_options["ssid"] = ssid
        if stamp_key_file is not None:
            stamp_options["key"] = stamp.read_key(stamp_key_file)
        if stamp_size is not None:
            stamp_options["size"] = stamp_size
        if not port_given:
            port = stamp.DEFAULT_PORT
    elif ssid is not None or stamp_key_file is not None or stamp_size is not None:
        raise click.UsageError("--ssid, --stamp-key-file and --stamp-size need --protocol stamp")
    config = ProbeConfig(
        count=count or None,
        interval=interval,
        timeout=timeout,
        watch=watch,
        detector=name,
        detector_options=options,
        probes_per_interval=probes_per_interval,
        protocol=protocol,
        protocol_options=stamp_options,
    )
    addresses = [target_address(target, port, port_given=port_given) for target in targets]
    settings = ClientOptions(
        as_json=as_json,
        quiet=quiet,
        changes_only=changes_only,
        timestamps=timestamps,
        on_change=on_change,
        on_change_suspect=on_change_suspect,
        stats_interval=stats_interval,
        deadline=deadline,
        output=output,
        family=FAMILIES[4] if ipv4 else FAMILIES[6] if ipv6 else socket.AF_UNSPEC,
        source=source,
        kernel_timestamps=receive_stamps == "kernel",
        stdout_closed=stdout_was_closed(),
    )
    reports = run_on_time(run_targets(addresses, config, settings), sockets=len(addresses))
    return EXIT_DOWN if reports is None else exit_status_all(reports)


def target_address(target: str, port: int, *, port_given: bool) -> tuple[str, int]:
    """The host and port of one ``HOST[:PORT]`` argument; ``port`` is ``--port``'s value.

    Raises:
        click.UsageError: a malformed target, or a port in it that ``--port`` contradicts.
    """
    try:
        host, own_port = split_host_port(target)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    if own_port is None:
        return host, port
    if port_given and own_port != port:
        raise click.UsageError(
            f"{target} names port {own_port} but --port says {port}: give the port once"
        )
    return host, own_port


#: Each detector's own options: the parameter name and the flag that sets it.
_DETECTOR_OPTIONS: dict[str, dict[str, str]] = {
    "consecutive": {"max_misses": "--max-misses"},
    "adaptive": {"false_alarm": "--false-alarm", "confirm_interval": "--confirm-interval"},
    "phi": {
        "threshold": "--phi-threshold",
        "min_std_deviation": "--min-std-deviation",
        "acceptable_pause": "--acceptable-pause",
    },
}


def choose_detector(name: str | None, **options: float | None) -> tuple[str, dict[str, float]]:
    """The detector the client's flags ask for, and its parameters; a flag of another detector
    is a usage error.

    Raises:
        click.UsageError: a flag that belongs to another detector.
        (A value the detector rejects raises ConfigError when the ProbeConfig is built.)
    """
    given = {key: value for key, value in options.items() if value is not None}
    chosen = name
    if name is None:
        name = "consecutive" if set(given) == {"max_misses"} else "adaptive"
    own = _DETECTOR_OPTIONS[name]
    for key in given:
        if key not in own:
            owner = next(n for n, flags in _DETECTOR_OPTIONS.items() if key in flags)
            flag = _DETECTOR_OPTIONS[owner][key]
            current = f"--detector {name}" if chosen else f"{name} (the default detector)"
            raise click.UsageError(f"{flag} applies to --detector {owner}, not to {current}")
    return name, given
