"""``udpbeat client``: the prober's command line, its live lines and its summary."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

import click

from udpbeat._net import DEFAULT_PORT, display_address
from udpbeat.cli.format import format_event, format_report, json_line
from udpbeat.cli.output import LineWriter, stdout_was_closed
from udpbeat.client import Prober, probe
from udpbeat.detector import DETECTORS, State
from udpbeat.events import Event, SessionFinished, StateChanged, event_to_dict
from udpbeat.hooks import HookRunner
from udpbeat.report import ProbeReport
from udpbeat.session import PROBES_PER_INTERVAL, ProbeConfig

EXIT_UP = 0
EXIT_DOWN = 1


def exit_status(report: ProbeReport) -> int:
    """0 the run ended with the server up; 1 it was declared down or never answered."""
    if report.state is State.DOWN or report.received == 0:
        return EXIT_DOWN
    return EXIT_UP


class ClientOutput:
    """The client's stdout and stderr, written off the event loop.

    When stdout's reader goes away (``| head -3``) the client has no one left to tell: it
    ends at once and quietly, as ``ping | head`` does (``on_lost`` is called on the loop).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[], None],
        *,
        stdout_closed: bool = False,
    ) -> None:
        self.lost = stdout_closed
        self._on_lost = on_lost

        def lost(error: OSError) -> None:
            loop.call_soon_threadsafe(self._lose)

        self.out = LineWriter(None if stdout_closed else sys.stdout, on_lost=lost)
        self.err = LineWriter(sys.stderr, name="udpbeat-stderr")

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self._on_lost()

    def line(self, text: str) -> None:
        self.out.write(text)

    def close(self) -> None:
        self.out.close()
        self.err.close()


def event_printer(
    write: Callable[[str], None],
    *,
    as_json: bool,
    quiet: bool,
    target: str,
    first_seq: Callable[[], int],
    prefix: str = "",
    verbose: bool = False,
) -> Callable[[Event], None]:
    def show(event: Event) -> None:
        if as_json:
            write(json_line(event_to_dict(event)))
            return
        line = format_event(event, target, first_seq(), verbose=verbose)
        if line is not None and (not quiet or isinstance(event, StateChanged | SessionFinished)):
            write(prefix + line)

    return show


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
    """Probe ``host``; the report, or ``None`` if stdout was lost (nothing more to say)."""
    probers: list[Prober] = []
    interrupted = stdout_closed  # with no one to tell, end as soon as the prober exists
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

    output = ClientOutput(loop, interrupt, stdout_closed=stdout_closed)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, interrupt)
    target = display_address((host, port))
    if not as_json and not quiet:
        output.line(
            f"UDPBEAT {target}: {config.count or 'unlimited'} heartbeats, "
            f"interval {config.interval}s, timeout {config.timeout}s"
        )
    show = event_printer(
        output.line,
        as_json=as_json,
        quiet=quiet,
        target=target,
        first_seq=lambda: probers[0].session.first_seq if probers else 1,
    )
    hooks = None
    if on_change:
        # The hook's output goes to stderr, so that --json keeps stdout pure JSON Lines.
        hooks = HookRunner(
            on_change,
            target,
            on_failure=lambda message: output.err.write(f"udpbeat: {message}"),
            stdout=_stderr_fd(),
        )

    def on_event(event: Event) -> None:
        show(event)
        if hooks is not None and isinstance(event, StateChanged):
            hooks.notify(event.transition)

    try:
        report = await probe(host, port, config, on_event=on_event, on_start=started)
        if not output.lost:
            output.line(json_line(report.to_dict()) if as_json else "\n" + format_report(report))
        return None if output.lost else report
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        if hooks is not None:
            await hooks.close()
        output.close()


def _stderr_fd() -> int | None:
    """stderr's file descriptor, or ``None`` where it has none (e.g. click's CliRunner)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


@click.command()
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
    "--probes-per-interval",
    type=click.IntRange(min=0),
    default=PROBES_PER_INTERVAL,
    show_default=True,
    help="Most confirmation probes per interval (a bucket that refills that many per "
    "interval; 0: none). Fewer probes mean a slower verdict: docs/detectors.md.",
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
    probes_per_interval: int,
    watch: bool,
    on_change: str | None,
    as_json: bool,
    quiet: bool,
) -> int:
    """Send heartbeats to HOST and report how it answers."""
    name, options = choose_detector(
        detector_name,
        max_misses=max_misses,
        false_alarm=false_alarm,
        confirm_interval=confirm_interval,
        threshold=phi_threshold,
        min_std_deviation=min_std_deviation,
        acceptable_pause=acceptable_pause,
    )
    config = ProbeConfig(
        count=count or None,
        interval=interval,
        timeout=timeout,
        watch=watch,
        detector=name,
        detector_options=options,
        probes_per_interval=probes_per_interval,
    )
    stdout_closed = stdout_was_closed()
    report = asyncio.run(
        run_client(
            host,
            port,
            config,
            as_json=as_json,
            quiet=quiet,
            on_change=on_change,
            stdout_closed=stdout_closed,
        )
    )
    return EXIT_DOWN if report is None else exit_status(report)


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
