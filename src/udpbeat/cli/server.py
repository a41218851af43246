"""``udpbeat server``: the reflector's command line, its log and its counters on exit."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
from collections.abc import Callable

import click

from udpbeat._net import DEFAULT_PORT, check_allow_families, display_address
from udpbeat.cadence import SHARE as AWAKE_SHARE
from udpbeat.cli.format import REFUSED, counters_line, format_record, json_line, limits, limits_text
from udpbeat.cli.output import LineWriter, stdout_was_closed
from udpbeat.errors import ConfigError
from udpbeat.ratelimit import MAX_BURST, MAX_RATE, MIN_RATE, check_rate
from udpbeat.reflector import MAX_DATAGRAM_SIZE, Reflected, ReflectorConfig
from udpbeat.server import (
    BATCH,
    BUSY_POLL_US,
    IO_MODES,
    MAX_AWAKE_SHARE,
    MAX_BATCH,
    MAX_BUSY_POLL_US,
    RECEIVE_STAMPS,
    Server,
    ServerConfig,
)
from udpbeat.stamp_reflector import MODES, STAMP_MAX_SIZE, StampOptions
from udpbeat.wire import stamp

#: Refused datagrams (malformed, rate-limited, denied) are logged at most this many times a
#: second; the rest are counted and the count is shown when the window closes.
MALFORMED_LOG_PER_SECOND = 5

_SERVER_DEFAULTS = ReflectorConfig()
#: What ``--protocol`` takes.
PROTOCOLS = ("text", "stamp")


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A click callback: ``FloatRange`` lets ``nan`` through."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number")
    return value


def rate_or_off(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A click callback: 0 (no limit) or a rate the token buckets can keep, which is neither
    too small for ``burst / rate`` to stay a finite number of seconds nor above their maximum."""
    if value != 0:
        try:
            check_rate(value, "rate")
        except ConfigError:
            raise click.BadParameter(
                f"must be 0 (no limit) or a number of requests per second in "
                f"[{MIN_RATE:g}, {MAX_RATE:g}], got {value:g}"
            ) from None
    return value


class Console:
    """The server's stdout and stderr, written off the event loop (:class:`LineWriter`).

    Losing stdout does not stop the server: it says so once on stderr and keeps answering;
    lines meant for stdout from then on are dropped, and the summary at exit goes to stderr.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, stdout_closed: bool = False) -> None:
        self._loop = loop
        self.err = LineWriter(sys.stderr, name="udpbeat-stderr")
        self.out = LineWriter(
            None if stdout_closed else sys.stdout,
            on_lost=lambda error: self._call_soon(self._stdout_lost, error),
            name="udpbeat-stdout",
        )
        self._told_lost = False
        if stdout_closed:
            self._stdout_lost(BrokenPipeError("stdout is closed"))

    def _call_soon(self, callback: Callable[[OSError], None], error: OSError) -> None:
        self._loop.call_soon_threadsafe(callback, error)

    @property
    def stdout_ok(self) -> bool:
        return self.out.lost is None

    def _stdout_lost(self, error: OSError) -> None:
        if self._told_lost:
            return
        self._told_lost = True
        reason = error.strerror or str(error) or type(error).__name__
        self.err.write(
            f"udpbeat: stdout lost ({reason}); still answering, the summary will be on stderr"
        )

    def summary(self, line: str) -> None:
        """The last word: on stdout if it still works, else on stderr."""
        if self.stdout_ok and self.out.flush():
            self.out.write(line)
            if self.out.close():
                self.err.close()
                return
        if self.out.lost is not None:
            self._stdout_lost(self.out.lost)  # if the loop had no turn to say it yet
        if self.out.dropped:
            self.err.write(f"udpbeat: {self.out.dropped} lines not shown: stdout was blocked")
        self.err.write(line)
        self.err.close()


class RecordPrinter:
    """Turns the reflector's records into lines, in the order they happened.

    Refused datagrams come in floods: at most ``MALFORMED_LOG_PER_SECOND`` of them are shown a
    second (on stderr, or as JSON on stdout), and the number not shown is said when the window
    ends and at exit; so is the number of records the reflector could not keep.
    """

    def __init__(
        self,
        *,
        as_json: bool,
        quiet: bool,
        out: Callable[[str], None],
        err: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self._out = out
        self._err = err
        self._clock = clock
        self._window_start = -math.inf
        self._in_window = 0
        self._suppressed = 0

    def __call__(self, records: list[Reflected]) -> None:
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._close_window()
            self._window_start, self._in_window = now, 0
        for record in records:
            if record.outcome == "internal-error":
                self._err(format_record(record, as_json=False))
            elif record.outcome == "not-logged":
                self._err(
                    f"udpbeat: {record.detail} records not logged "
                    "(the log backlog was full; the counters have them all)"
                )
            elif record.outcome in REFUSED:
                if self._in_window >= MALFORMED_LOG_PER_SECOND:
                    self._suppressed += 1
                    continue
                self._in_window += 1
                line = format_record(record, as_json=self.as_json)
                (self._out if self.as_json else self._err)(line)
            elif not self.quiet:
                self._out(format_record(record, as_json=self.as_json))

    def finish(self) -> None:
        """Say what the last window did not show."""
        self._close_window()

    def _close_window(self) -> None:
        if self._suppressed:
            self._err(f"udpbeat: {self._suppressed} more malformed or refused datagrams not shown")
            self._suppressed = 0


def server_summary(server: Server, kind: str = "summary") -> dict[str, object]:
    """The counters as one object: ``kind`` is "summary" at the end, "stats" on the way."""
    return {"type": kind, **server.stats()}


def summary_text(summary: dict[str, object], as_json: bool) -> str:
    if as_json:
        return json_line(summary)
    return "--- udpbeat server statistics ---\n" + counters_line(summary)


async def wait_reporting(
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


async def serve(
    host: str,
    port: int,
    config: ReflectorConfig,
    *,
    as_json: bool,
    quiet: bool,
    stats_interval: float | None = None,
    stdout_closed: bool = False,
    server_config: ServerConfig | None = None,
    stamp: StampOptions | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    # First of all: from here on a signal is handled, whatever happens next.
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    console = Console(loop, stdout_closed=stdout_closed)
    printer = RecordPrinter(
        as_json=as_json, quiet=quiet, out=console.out.write, err=console.err.write
    )
    server = Server(
        host, port, config, on_records=printer, server_config=server_config, stamp=stamp
    )
    try:
        await server.start()
        check_allow_families(config.allow, server.address[0])
    except BaseException:
        await server.stop()
        console.err.close()
        console.out.close()
        raise
    started = time.monotonic()

    def report(kind: str = "stats") -> None:
        stats = server_summary(server, kind)
        elapsed = time.monotonic() - started
        if as_json:
            console.out.write(json_line({**stats, "at": time.time(), "uptime": elapsed}))
        else:
            console.out.write(f"{kind} +{elapsed:.1f}s: " + counters_line(stats))

    def hangup() -> None:
        # A daemon re-reads its configuration on SIGHUP; the server has none to re-read (its
        # settings are its flags), so it keeps serving and says where it stands.
        console.err.write("udpbeat: SIGHUP: nothing to reload; still serving")
        report()

    loop.add_signal_handler(signal.SIGHUP, hangup)
    bound_host, bound_port = server.address
    loss = f"simulated loss {config.loss:.1%}"
    if config.seed is not None:
        loss += f", seed {config.seed}"
    if as_json:
        listening = {
            "type": "listening",
            "host": bound_host,
            "port": bound_port,
            "protocol": "text" if stamp is None else "stamp",
            "loss": config.loss,
            "seed": config.seed,
            **limits(config),
            "receive_stamps": server.receive_stamps,
        }
        console.out.write(json_line(listening))
    else:
        protocol = "" if stamp is None else f"STAMP {stamp_mode_text(stamp)}, "
        console.out.write(
            f"udpbeat server listening on {display_address((bound_host, bound_port))}"
            f" ({protocol}{loss}; {limits_text(config)}); Ctrl-C to stop"
        )
    waiting = asyncio.ensure_future(wait_reporting(stopping, stats_interval, report))
    watching = asyncio.ensure_future(server.wait_stopped())
    try:
        await asyncio.wait({waiting, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        watching.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await server.stop()
        printer.finish()
        console.summary(summary_text(server_summary(server), as_json))
    if server.failure is not None:
        raise server.failure
    return 0


@click.command()
@click.option(
    "--host", default="", show_default="all interfaces, IPv4 and IPv6", help="Address to bind."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    show_default=f"{DEFAULT_PORT}; {stamp.DEFAULT_PORT} with --protocol stamp",
    help="UDP port (0: any free port). A port below 1024 (STAMP's 862) needs root or "
    "CAP_NET_BIND_SERVICE.",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="text",
    show_default=True,
    help="What to answer: the exercise's text heartbeats, or STAMP test packets (RFC 8762).",
)
@click.option(
    "--stamp-mode",
    type=click.Choice(MODES),
    default="stateless",
    show_default=True,
    help="STAMP: 'stateful' numbers each session's replies, so senders tell forward from "
    "backward loss (RFC 8762 §4.3).",
)
@click.option(
    "--stamp-key-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="STAMP authenticated mode (RFC 8762 §4.2.2): the shared HMAC key is this file's "
    "content; requests with a bad HMAC are counted and not answered.",
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
    callback=finite,
    default=None,
    metavar="SECONDS",
    help="Print the counters every SECONDS (a 'stats' object with --json).",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0.0),
    callback=rate_or_off,
    default=_SERVER_DEFAULTS.rate_limit,
    show_default=True,
    metavar="PER_SECOND",
    help=f"Requests a second answered per source address, {MIN_RATE:g} to {MAX_RATE:g} "
    "(0: no limit).",
)
@click.option(
    "--burst",
    type=click.IntRange(1, MAX_BURST),
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
    callback=rate_or_off,
    default=_SERVER_DEFAULTS.global_rate_limit,
    show_default=True,
    metavar="PER_SECOND",
    help=f"Requests a second answered over all sources, {MIN_RATE:g} to {MAX_RATE:g} "
    "(0: no limit).",
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
    default=None,
    show_default=f"{_SERVER_DEFAULTS.max_size}; {STAMP_MAX_SIZE} with --protocol stamp",
    metavar="BYTES",
    help="Longest datagram accepted; longer ones are counted as malformed (oversize).",
)
@click.option(
    "--io",
    type=click.Choice(IO_MODES),
    default="auto",
    show_default=True,
    help="Receive path: 'batched' (Linux recvmmsg/sendmmsg), 'portable' (recvfrom/sendto), "
    "'auto' batched where available. Both answer alike.",
)
@click.option(
    "--busy-poll-us",
    type=click.FloatRange(0, MAX_BUSY_POLL_US),
    callback=finite,
    default=BUSY_POLL_US,
    show_default=True,
    metavar="MICROSECONDS",
    help="How long the batched reader spins on an empty socket before it blocks, while lone "
    "requests come closer together than that: a lower round trip for some CPU (0: never spin).",
)
@click.option(
    "--awake-share",
    type=click.FloatRange(0, MAX_AWAKE_SHARE),
    callback=finite,
    default=AWAKE_SHARE,
    show_default=True,
    metavar="SHARE",
    help="While lone requests keep a period (a prober's heartbeats), the batched reader wakes "
    "shortly before each is due and polls until it comes, for at most this share of the "
    "period: the wake-up of a sleeping thread leaves the round trip for at most this share of "
    "a CPU (0: always block).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH),
    default=BATCH,
    show_default=True,
    metavar="DATAGRAMS",
    help="Datagrams taken per recvmmsg and answered per sendmmsg on the batched path.",
)
@click.option(
    "--receive-stamps",
    type=click.Choice(RECEIVE_STAMPS),
    default="auto",
    show_default=True,
    help="A request's receive time (its reply's time difference): the kernel's receive stamp "
    "(Linux SO_TIMESTAMPNS; elsewhere 'user') or the clock when the reader takes it; 'auto' "
    "is 'kernel' on the batched path and 'user' with --io portable (recvfrom is cheaper).",
)
def server(
    host: str,
    port: int | None,
    protocol: str,
    stamp_mode: str,
    stamp_key_file: str | None,
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
    max_size: int | None,
    io: str,
    busy_poll_us: float,
    awake_share: float,
    batch: int,
    receive_stamps: str,
) -> int:
    """Answer heartbeats (the reflector).

    Its limits and counters: the README's section "udpbeat server — the reflector".
    """
    stamp_options = None
    if protocol == "stamp":
        key = None if stamp_key_file is None else stamp.read_key(stamp_key_file)
        stamp_options = StampOptions(mode=stamp_mode, key=key)
    elif stamp_key_file is not None or stamp_mode != "stateless":
        raise ConfigError("--stamp-mode and --stamp-key-file need --protocol stamp")
    if port is None:
        port = DEFAULT_PORT if stamp_options is None else stamp.DEFAULT_PORT
    if max_size is None:
        max_size = _SERVER_DEFAULTS.max_size if stamp_options is None else STAMP_MAX_SIZE
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
    server_config = ServerConfig(
        io=io,
        busy_poll_us=busy_poll_us,
        awake_share=awake_share,
        batch=batch,
        receive_stamps=receive_stamps,
    )
    stdout_closed = stdout_was_closed()
    return asyncio.run(
        serve(
            host,
            port,
            config,
            as_json=as_json,
            quiet=quiet,
            stats_interval=stats_interval,
            stdout_closed=stdout_closed,
            server_config=server_config,
            stamp=stamp_options,
        )
    )


def stamp_mode_text(options: StampOptions) -> str:
    """``stateless``, ``stateful, authenticated``... for the listening line."""
    return options.mode + (", authenticated" if options.key is not None else "")
