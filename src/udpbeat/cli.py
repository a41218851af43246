"""``udpbeat``: argument parsing and printing. The only module that prints or exits.

Exit status: 0 the run ended with the server up; 1 the server was declared down (or never
answered); 2 bad usage or an error that stopped the run, with one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

import click

from udpbeat.client import Prober, probe
from udpbeat.detector import DETECTORS, AdaptiveDetector, Detector, State, make_detector
from udpbeat.errors import UdpbeatError
from udpbeat.hooks import HookRunner
from udpbeat.reflector import MAX_DATAGRAM_SIZE, Reflected, ReflectorConfig
from udpbeat.server import DEFAULT_PORT, Server, display_address
from udpbeat.session import (
    DuplicateReply,
    Event,
    HeartbeatLost,
    HeartbeatSent,
    LateReply,
    MalformedReply,
    ProbeReport,
    ReplyReceived,
    SessionFinished,
    StateChanged,
    UnknownReply,
    event_to_dict,
)

EXIT_UP = 0
EXIT_DOWN = 1
EXIT_ERROR = 2

#: Malformed datagrams are logged at most this many times a second; the rest are counted.
MALFORMED_LOG_PER_SECOND = 5


def _emit(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def _json_line(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(", ", ": "))


# --- server ----------------------------------------------------------------------------------


_SERVER_DEFAULTS = ReflectorConfig()


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A click callback: ``FloatRange`` lets ``nan`` through."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number")
    return value


#: Records of datagrams refused; shown at most MALFORMED_LOG_PER_SECOND a second, on stderr.
_REFUSED = {
    "malformed": "Ignored malformed datagram from {source}: {detail}",
    "rate-limited": "Rate-limited datagram from {source} ({detail} limit)",
    "denied": "Denied datagram from {source} ({detail})",
}


class _RecordPrinter:
    """Prints the reflector's records in batches; refused ones rate-limited, on stderr."""

    def __init__(self, *, as_json: bool, quiet: bool) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self._window_start = 0.0
        self._in_window = 0
        self._suppressed = 0

    def __call__(self, records: list[Reflected]) -> None:
        lines: list[str] = []
        for record in records:
            if record.outcome in _REFUSED:
                self._malformed(record)
            elif not self.quiet:
                lines.append(self._format(record))
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()

    def _malformed(self, record: Reflected) -> None:
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            if self._suppressed:
                _emit(
                    sys.stderr,
                    f"udpbeat: {self._suppressed} more malformed or refused datagrams not shown",
                )
            self._window_start, self._in_window, self._suppressed = now, 0, 0
        if self._in_window >= MALFORMED_LOG_PER_SECOND:
            self._suppressed += 1
            return
        self._in_window += 1
        if self.as_json:
            _emit(sys.stdout, self._format(record))
        else:
            _emit(
                sys.stderr,
                _REFUSED[record.outcome].format(
                    source=display_address(record.source), detail=record.detail
                ),
            )

    def _format(self, record: Reflected) -> str:
        source = display_address(record.source)
        if self.as_json:
            return _json_line(
                {"type": record.outcome, "at": record.at, "source": source, "detail": record.detail}
            )
        if record.outcome == "replied":
            return f"Responded to {source} with {record.detail}"
        return f"Simulating packet loss for heartbeat {record.detail} from {source}"


def _server_summary(server: Server, kind: str = "summary") -> dict[str, object]:
    """The counters as one object: ``kind`` is "summary" at the end, "stats" on the way."""
    return {"type": kind, **server.stats()}


def _counters_line(summary: dict[str, object]) -> str:
    """``received`` and, in the order they add up to it, where every datagram went."""

    def by(total: str, parts: str) -> str:
        reasons = summary[parts]
        assert isinstance(reasons, dict)
        detail = ", ".join(f"{k} {v}" for k, v in reasons.items())
        return f"{summary[total]} {total.replace('_', '-')}" + (f" ({detail})" if detail else "")

    return (
        f"{summary['received']} received, {summary['replied']} replied, "
        f"{summary['dropped_loss']} dropped by simulated loss, "
        f"{by('rate_limited', 'rate_limited_by_scope')}, {by('malformed', 'malformed_by_reason')}, "
        f"{by('denied', 'denied_by_reason')}"
    )


def _print_server_summary(summary: dict[str, object], as_json: bool) -> None:
    if as_json:
        _emit(sys.stdout, _json_line(summary))
        return
    _emit(sys.stdout, "--- udpbeat server statistics ---\n" + _counters_line(summary))


def _limits(config: ReflectorConfig) -> dict[str, object]:
    return {
        "max_size": config.max_size,
        "rate_limit": config.rate_limit,
        "burst": config.burst,
        "max_sources": config.max_sources,
        "global_rate_limit": config.global_rate_limit,
        "allow": list(config.allow),
        "allow_privileged_ports": config.allow_privileged_ports,
    }


def _limits_text(config: ReflectorConfig) -> str:
    parts = [
        f"rate limit {config.rate_limit:g}/s per source, burst {config.burst}"
        if config.rate_limit
        else "no rate limit per source"
    ]
    if config.global_rate_limit:
        parts.append(f"{config.global_rate_limit:g}/s in all")
    if config.allow:
        parts.append("allow " + " ".join(config.allow))
    if config.allow_privileged_ports:
        parts.append("privileged source ports answered")
    return ", ".join(parts)


async def _wait_reporting(
    stopping: asyncio.Event, interval: float | None, report: Callable[[], None]
) -> None:
    """Wait for ``stopping``, calling ``report`` every ``interval`` seconds meanwhile."""
    if interval is None:
        await stopping.wait()
        return
    loop = asyncio.get_running_loop()
    next_report = loop.time() + interval
    while True:
        try:
            async with asyncio.timeout_at(next_report):
                await stopping.wait()
            return
        except TimeoutError:
            report()
            # On schedule, not drifting; after a stall, skip the reports missed.
            next_report = max(next_report + interval, loop.time())


async def _serve(
    host: str,
    port: int,
    config: ReflectorConfig,
    printer: _RecordPrinter,
    stats_interval: float | None = None,
) -> None:
    server = Server(host, port, config, on_records=printer)
    await server.start()
    # Before the listening line: whoever waits for it may stop the server at once.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    bound_host, bound_port = server.address
    loss = f"simulated loss {config.loss:.1%}"
    if config.seed is not None:
        loss += f", seed {config.seed}"
    if printer.as_json:
        _emit(
            sys.stdout,
            _json_line(
                {
                    "type": "listening",
                    "host": bound_host,
                    "port": bound_port,
                    "loss": config.loss,
                    "seed": config.seed,
                    **_limits(config),
                }
            ),
        )
    else:
        _emit(
            sys.stdout,
            f"udpbeat server listening on {display_address((bound_host, bound_port))}"
            f" ({loss}; {_limits_text(config)}); Ctrl-C to stop",
        )
    started = time.monotonic()

    def report() -> None:
        stats = _server_summary(server, "stats")
        elapsed = time.monotonic() - started
        if printer.as_json:
            _emit(sys.stdout, _json_line({**stats, "at": time.time(), "uptime": elapsed}))
        else:
            _emit(sys.stdout, f"stats +{elapsed:.1f}s: " + _counters_line(stats))

    try:
        await _wait_reporting(stopping, stats_interval, report)
    finally:
        await server.stop()
        _print_server_summary(_server_summary(server), printer.as_json)


# --- client ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def format_event(event: Event, target: str) -> str | None:
    """One human line for an event, or ``None`` for events shown only in JSON."""
    kind = "probe" if getattr(event, "probe", False) else "heartbeat"
    match event:
        case HeartbeatSent():
            return None
        case ReplyReceived(seq=seq, rtt=rtt, time_difference=diff):
            return f"Reply from {target}: {kind} {seq} rtt={_ms(rtt)} ms time diff={diff:.6f} s"
        case HeartbeatLost(seq=seq, reason="timeout"):
            return f"{kind.capitalize()} {seq}: request timed out"
        case HeartbeatLost(seq=seq):
            return f"{kind.capitalize()} {seq}: refused (ICMP: nothing listens on {target})"
        case LateReply(seq=seq, rtt=rtt):
            return f"Late reply for heartbeat {seq} (rtt={_ms(rtt)} ms, after its timeout)"
        case DuplicateReply(seq=seq):
            return f"Duplicate reply for heartbeat {seq}: not counted"
        case UnknownReply(seq=seq):
            return f"Reply for heartbeat {seq}, which was never sent: ignored"
        case MalformedReply(reason=reason, detail=detail):
            return f"Malformed reply ({reason}): {detail}"
        case StateChanged(transition=t):
            evidence = ", ".join(f"{k}={_short(v)}" for k, v in t.evidence.items())
            return f"State {t.old} -> {t.new}: {t.reason}" + (f" ({evidence})" if evidence else "")
        case SessionFinished(state=state):
            if state is State.DOWN:
                return "Server is assumed to have stopped."
            return None
    return None


def _clock(unix_time: float) -> str:
    """Local time of day with milliseconds, e.g. ``14:03:07.250``."""
    milliseconds = int(unix_time * 1000) % 1000  # truncated, so it never shows a second early
    return time.strftime("%H:%M:%S", time.localtime(unix_time)) + f".{milliseconds:03d}"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_report(report: ProbeReport) -> str:
    loss = report.loss
    lines = [
        f"--- {report.target} udpbeat statistics ---",
        f"{report.sent} heartbeats sent ({report.probes} probes), {report.received} received, "
        + ("n/a loss" if loss is None else f"{loss:.1%} loss")
        + f", {report.late} late, {report.duplicates} duplicates, {report.refused} refused"
        + (f", {report.in_flight} in flight" if report.in_flight else "")
        + f", time {report.duration:.1f}s",
    ]
    rtt = report.rtt
    if rtt.count:
        assert rtt.min is not None and rtt.avg is not None and rtt.max is not None
        assert rtt.mdev is not None and rtt.p50 is not None and rtt.p90 is not None
        assert rtt.p99 is not None
        spread = "/".join(_ms(v) for v in (rtt.min, rtt.avg, rtt.max, rtt.mdev))
        lines.append(f"rtt min/avg/max/mdev = {spread} ms")
        lines.append(f"rtt p50/p90/p99 = {_ms(rtt.p50)}/{_ms(rtt.p90)}/{_ms(rtt.p99)} ms")
    if report.jitter is not None:
        lines.append(f"jitter (RFC 3550) = {_ms(report.jitter)} ms")
    diff = report.time_difference
    if diff.count:
        lines.append(
            f"time difference min/avg/max = {diff.min:.6f}/{diff.avg:.6f}/{diff.max:.6f} s"
        )
    if report.malformed or report.unknown:
        bad = ", ".join(f"{k} {v}" for k, v in sorted(report.malformed.items()))
        lines.append(f"ignored: {report.unknown} unknown, malformed: {bad or 0}")
    # Outage times are on the monotonic clock (the event loop's); shown as wall-clock times.
    wall_offset = time.time() - time.monotonic()
    for number, outage in enumerate(report.outages, 1):
        start = _clock(outage.start + wall_offset)
        if outage.end is None:
            span = f"DOWN since {start}, still down"
        else:
            span = f"DOWN {start} to {_clock(outage.end + wall_offset)} ({outage.duration:.3f}s)"
        lines.append(f"outage {number}: {span}, {outage.heartbeats_lost} heartbeats lost")
    params = ", ".join(f"{k} {v}" for k, v in report.detector.items() if k != "name")
    lines.append(f"state: {report.state} (detector {report.detector.get('name')}: {params})")
    return "\n".join(lines)


def exit_status(report: ProbeReport) -> int:
    if report.state is State.DOWN or report.received == 0:
        return EXIT_DOWN
    return EXIT_UP


def _event_printer(
    as_json: bool, quiet: bool, target: str, prefix: str = ""
) -> Callable[[Event], None]:
    def show(event: Event) -> None:
        if as_json:
            _emit(sys.stdout, _json_line(event_to_dict(event)))
            return
        line = format_event(event, target)
        if line is not None and (not quiet or isinstance(event, StateChanged | SessionFinished)):
            _emit(sys.stdout, prefix + line)

    return show


async def _run_client(
    host: str,
    port: int,
    options: dict[str, Any],
    detector: Detector,
    *,
    as_json: bool,
    quiet: bool,
    on_change: str | None = None,
) -> ProbeReport:
    probers: list[Prober] = []
    interrupted = False
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        for prober in probers:
            prober.stop()

    def started(prober: Prober) -> None:
        # Ctrl-C while the host name was still resolving: stop as soon as the prober exists.
        probers.append(prober)
        if interrupted:
            prober.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    target = display_address((host, port))
    if not as_json and not quiet:
        _emit(
            sys.stdout,
            f"UDPBEAT {target}: {options.get('count') or 'unlimited'} heartbeats, "
            f"interval {options['interval']}s, timeout {options['timeout']}s",
        )
    show = _event_printer(as_json, quiet, target)
    hooks = None
    if on_change:
        # The hook's output goes to stderr, so that --json keeps stdout pure JSON Lines.
        hooks = HookRunner(on_change, target, on_failure=_hook_failed, stdout=_stderr_fd())

    def on_event(event: Event) -> None:
        show(event)
        if hooks is not None and isinstance(event, StateChanged):
            hooks.notify(event.transition)

    try:
        return await probe(
            host,
            port,
            detector=detector,
            on_event=on_event,
            on_start=started,
            **options,
        )
    finally:
        if hooks is not None:
            await hooks.close()


def _hook_failed(message: str) -> None:
    _emit(sys.stderr, f"udpbeat: {message}")


def _stderr_fd() -> int | None:
    """stderr's file descriptor, or ``None`` where it has none (e.g. click's CliRunner)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


# --- commands --------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="udpbeat")
def cli() -> None:
    """UDP heartbeats: is the server alive, and how does the path to it behave?"""


@cli.command()
@click.option(
    "--host", default="", show_default="all interfaces, IPv4 and IPv6", help="Address to bind."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="UDP port (0: any free port).",
)
@click.option(
    "--loss",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Fraction of valid requests to drop on purpose (0.3 = 30%).",
)
@click.option(
    "--seed", type=int, default=None, help="Seed for the loss RNG (same seed, same drops)."
)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines output.")
@click.option("--quiet", "-q", is_flag=True, help="No line per packet; counters at the end.")
@click.option(
    "--stats-interval",
    type=click.FloatRange(0.1, 86400.0),
    callback=_finite,
    default=None,
    metavar="SECONDS",
    help="Print the counters every SECONDS (a 'stats' object with --json).",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0.0),
    default=_SERVER_DEFAULTS.rate_limit,
    show_default=True,
    metavar="PER_SECOND",
    help="Requests a second answered per source address (0: no limit).",
)
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    default=_SERVER_DEFAULTS.burst,
    show_default=True,
    help="Requests a source may send at once before --rate-limit applies.",
)
@click.option(
    "--max-sources",
    type=click.IntRange(min=1),
    default=_SERVER_DEFAULTS.max_sources,
    show_default=True,
    help="Source addresses remembered by the rate limit (least recently seen forgotten first).",
)
@click.option(
    "--global-rate-limit",
    type=click.FloatRange(min=0.0),
    default=_SERVER_DEFAULTS.global_rate_limit,
    show_default=True,
    metavar="PER_SECOND",
    help="Requests a second answered over all sources (0: no limit).",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="CIDR",
    help="Answer only sources in this network (repeatable; default: any source).",
)
@click.option(
    "--allow-privileged-ports",
    is_flag=True,
    help="Also answer source ports below 1024 (refused by default: likely spoofed).",
)
@click.option(
    "--max-size",
    type=click.IntRange(1, MAX_DATAGRAM_SIZE),
    default=_SERVER_DEFAULTS.max_size,
    show_default=True,
    metavar="BYTES",
    help="Longest datagram accepted; longer ones are counted as malformed (oversize).",
)
def server(
    host: str,
    port: int,
    loss: float,
    seed: int | None,
    as_json: bool,
    quiet: bool,
    stats_interval: float | None,
    rate_limit: float,
    burst: int,
    max_sources: int,
    global_rate_limit: float,
    allow: tuple[str, ...],
    allow_privileged_ports: bool,
    max_size: int,
) -> int:
    """Answer heartbeats (the reflector). Limits and counters: docs/reflector.md."""
    config = ReflectorConfig(
        loss=loss,
        seed=seed,
        log_events=not quiet,
        max_size=max_size,
        rate_limit=rate_limit,
        burst=burst,
        max_sources=max_sources,
        global_rate_limit=global_rate_limit,
        allow=allow,
        allow_privileged_ports=allow_privileged_ports,
    )
    printer = _RecordPrinter(as_json=as_json, quiet=quiet)
    asyncio.run(_serve(host, port, config, printer, stats_interval))
    return 0


@cli.command()
@click.argument("host")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--count",
    "-c",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Heartbeats to send (0: until stopped).",
)
@click.option(
    "--interval",
    "-i",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Seconds between heartbeats (0: next one as soon as the last is resolved).",
)
@click.option(
    "--timeout",
    "-W",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Longest wait for a reply, in seconds.",
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
    type=click.IntRange(min=1),
    default=None,
    help="consecutive: down after this many consecutive misses [default: 3].",
)
@click.option(
    "--false-alarm",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=None,
    help="adaptive: highest accepted chance that a live server is declared down [default: 1e-9].",
)
@click.option(
    "--confirm-interval",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="adaptive: slowest pace of confirmation probes after a miss, in seconds; the pace "
    "follows the RTT, never below 0.01 s [default: 0.05].",
)
@click.option(
    "--phi-threshold",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="phi: suspicion level that means down; half of it means suspect [default: 8].",
)
@click.option(
    "--min-std-deviation",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="phi: floor of the reply intervals' standard deviation, in seconds [default: 0.1].",
)
@click.option(
    "--acceptable-pause",
    type=click.FloatRange(min=0.0),
    default=None,
    help="phi: silence tolerated on top of the usual interval, in seconds [default: 0].",
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
    help="Shell command run on every state change, with UDPBEAT_TARGET, UDPBEAT_OLD_STATE, "
    "UDPBEAT_NEW_STATE, UDPBEAT_REASON, UDPBEAT_EVIDENCE (JSON) and UDPBEAT_TIME set.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="JSON Lines: an object per event, then a summary."
)
@click.option("--quiet", "-q", is_flag=True, help="Only state changes and the summary.")
def client(
    host: str,
    port: int,
    count: int,
    interval: float,
    timeout: float,
    detector_name: str | None,
    max_misses: int | None,
    false_alarm: float | None,
    confirm_interval: float | None,
    phi_threshold: float | None,
    min_std_deviation: float | None,
    acceptable_pause: float | None,
    watch: bool,
    on_change: str | None,
    as_json: bool,
    quiet: bool,
) -> int:
    """Send heartbeats to HOST and report how it answers."""
    detector = choose_detector(
        detector_name,
        timeout,
        interval,
        max_misses=max_misses,
        false_alarm=false_alarm,
        confirm_interval=confirm_interval,
        threshold=phi_threshold,
        min_std_deviation=min_std_deviation,
        acceptable_pause=acceptable_pause,
    )
    options = {"count": count or None, "interval": interval, "timeout": timeout, "watch": watch}
    report = asyncio.run(
        _run_client(
            host, port, options, detector, as_json=as_json, quiet=quiet, on_change=on_change
        )
    )
    _print_report(report, as_json)
    return exit_status(report)


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


def choose_detector(
    name: str | None, timeout: float, interval: float, **options: float | None
) -> Detector:
    """The detector the client's flags ask for; a flag of another detector is a usage error.

    Raises:
        click.UsageError: a flag that belongs to another detector.
        ConfigError: a value the detector rejects.
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
    if name == "phi" and interval > 0:
        given["first_heartbeat_estimate"] = interval
    return make_detector(name, timeout, **given)


def _print_report(report: ProbeReport, as_json: bool) -> None:
    if as_json:
        _emit(sys.stdout, _json_line(report.to_dict()))
    else:
        _emit(sys.stdout, "\n" + format_report(report))


@cli.command()
@click.option("--loss", type=click.FloatRange(0.0, 1.0), default=0.3, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for the server's loss RNG.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Heartbeats before the server is stopped.",
)
@click.option("--interval", type=click.FloatRange(min=0.01), default=0.1, show_default=True)
def demo(loss: float, seed: int | None, count: int, interval: float) -> int:
    """Server with simulated loss, a client against it, then the server stops."""
    return asyncio.run(_demo(loss, seed, count, interval))


async def _demo(loss: float, seed: int | None, count: int, interval: float) -> int:
    timeout = round(max(0.25, 3 * interval), 3)
    server = Server("127.0.0.1", 0, ReflectorConfig(loss=loss, seed=seed, log_events=False))
    await server.start()
    host, port = server.address
    target = display_address((host, port))
    _emit(sys.stdout, f"demo: server on {target} drops {loss:.0%} of heartbeats on purpose")
    _emit(
        sys.stdout,
        f"demo: client sends one heartbeat every {interval}s, timeout {timeout}s; "
        f"after {count} heartbeats the server is stopped\n",
    )
    detector = AdaptiveDetector(timeout)
    printer = _event_printer(False, False, target, prefix="client | ")
    stopped_at: list[float] = []
    stopping: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()

    regular_sent = 0

    def on_event(event: Event) -> None:
        nonlocal regular_sent
        printer(event)
        if isinstance(event, HeartbeatSent) and not event.probe:
            regular_sent += 1  # probes have sequence numbers too: count heartbeats, not seqs
            if regular_sent == count and not stopping:
                stopping.append(loop.create_task(stop_server()))

    async def stop_server() -> None:
        await server.stop()
        stopped_at.append(loop.time())
        _emit(sys.stdout, "demo  | >>> server stopped: the client must now detect it <<<")

    try:
        report = await probe(
            host,
            port,
            count=None,
            interval=interval,
            timeout=timeout,
            detector=detector,
            on_event=on_event,
        )
    finally:
        counters = await server.stop()
    _print_report(report, False)
    _emit(
        sys.stdout,
        f"server: {counters.received} received, {counters.replied} replied, "
        f"{counters.dropped_loss} dropped by simulated loss",
    )
    if report.state is State.DOWN and stopped_at:
        down_at = report.transitions[-1].at
        delay = down_at - stopped_at[0]
        _emit(sys.stdout, f"demo: stop detected {delay:.2f}s after the server stopped")
        return EXIT_UP
    _emit(sys.stdout, "demo: the server was declared down before it was stopped (a false alarm)")
    return EXIT_DOWN


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: click's parsing with one-line errors and our exit codes."""
    try:
        status = cli.main(args=argv, prog_name="udpbeat", standalone_mode=False)
    except click.UsageError as error:
        _emit(sys.stderr, f"udpbeat: error: {error.format_message()}")
        sys.exit(EXIT_ERROR)
    except click.ClickException as error:
        _emit(sys.stderr, f"udpbeat: error: {error.format_message()}")
        sys.exit(EXIT_ERROR)
    except click.Abort:
        sys.exit(130)
    except UdpbeatError as error:
        _emit(sys.stderr, f"udpbeat: error: {error}")
        sys.exit(EXIT_ERROR)
    except OSError as error:
        _emit(sys.stderr, f"udpbeat: error: {error.strerror or error}")
        sys.exit(EXIT_ERROR)
    sys.exit(status if isinstance(status, int) else 0)
