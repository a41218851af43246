"""``udpbeat proxy``: a UDP relay that makes the network as bad as asked, in each direction.

Every impairment flag comes three ways: ``--loss 0.1`` for both directions, ``--up-loss`` for
client to upstream only, ``--down-loss`` for upstream to client only. A one-direction flag wins
over the both-ways one, except ``--outage``, whose windows add up, and ``--keep-order``, which
holds if either says so. Values: fractions as ``0.1`` or ``10%``; durations as ``20ms``,
``1.5s``, ``500us`` or seconds; rates as ``1mbit``, ``500kbit`` or bits a second.
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from udpbeat._net import display_address
from udpbeat.cli.format import json_line
from udpbeat.cli.output import LineWriter, stdout_was_closed
from udpbeat.cli.server import finite, wait_reporting
from udpbeat.errors import ConfigError
from udpbeat.impair import DISTRIBUTIONS, MAX_IN_FLIGHT, MAX_SECONDS, Impairment, ScheduledOutage
from udpbeat.proxy import SPIN, Proxy, ProxyConfig
from udpbeat.server import IO_MODES

# --- values ----------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(us|µs|ms|s|m|h)?\s*$", re.I)
_UNITS = {None: 1.0, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([kmg]?)(bit|bps)?\s*$", re.I)


def parse_duration(text: str) -> float:
    """``20ms``, ``1.5s``, ``500us``, ``2m`` or a number of seconds; ``ValueError`` if not."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 20ms, 1.5s, 500us)")
    unit = match.group(2)
    seconds = float(match.group(1)) * _UNITS[unit.lower() if unit else None]
    if not (math.isfinite(seconds) and seconds <= MAX_SECONDS):
        raise ValueError(f"{text!r} is longer than a day")
    return seconds


def parse_fraction(text: str) -> float:
    """``0.1`` or ``10%``; ``ValueError`` outside [0, 1]."""
    value = text.strip()
    try:
        fraction = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a fraction (e.g. 0.1 or 10%)") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{text!r} is not in [0, 1] (0%..100%)")
    return fraction


def parse_rate(text: str) -> float:
    """``1mbit``, ``500kbit``, ``2gbit`` or bits a second; ``ValueError`` if not."""
    match = _RATE.match(text)
    if match is None or (match.group(3) or "bit").lower() != "bit":
        raise ValueError(f"{text!r} is not a rate in bits a second (e.g. 1mbit, 500kbit)")
    scale = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    rate = float(match.group(1)) * scale
    if not math.isfinite(rate):
        raise ValueError(f"{text!r} is not a finite rate")
    return rate


def parse_outage(text: str) -> ScheduledOutage:
    """``START:LENGTH``: down for LENGTH from START after the proxy starts (``10s:5s``)."""
    start, sep, length = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not START:LENGTH (e.g. 10s:5s)")
    try:
        return ScheduledOutage(parse_duration(start), parse_duration(length))
    except ConfigError as error:
        raise ValueError(str(error)) from None


def parse_address(text: str, *, listen: bool) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``; for ``--listen`` also ``:PORT`` (every interface)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, [{host}]:{port_text}")
    port = int(port_text)
    lowest = 0 if listen else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"port must be in {lowest}..65535, got {port}")
    if not host and not listen:
        raise ValueError(f"{text!r} has no host")
    return host, port


class _Parsed(click.ParamType):  # type: ignore[type-arg]
    """A click type from a parser that raises ``ValueError`` with a message for people."""

    def __init__(self, name: str, parser: Callable[[str], Any]) -> None:
        self.name = name
        self._parser = parser

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parser(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


FRACTION = _Parsed("fraction", parse_fraction)
DURATION = _Parsed("duration", parse_duration)
RATE = _Parsed("rate", parse_rate)
OUTAGE = _Parsed("start:length", parse_outage)
LISTEN = _Parsed("host:port", lambda text: parse_address(text, listen=True))
UPSTREAM = _Parsed("host:port", lambda text: parse_address(text, listen=False))

# --- the impairment flags, three ways each ---------------------------------------------------

#: (name, click type, metavar, help) of every impairment; ``None`` type: a flag.
_IMPAIRMENTS: list[tuple[str, Any, str, str]] = [
    ("loss", FRACTION, "P", "Lose a fraction P of datagrams (0.1 or 10%)."),
    (
        "loss-burst",
        click.FloatRange(min=1.0),
        "N",
        "Lose them in bursts of N datagrams on average (Gilbert-Elliott) instead of independently.",
    ),
    ("delay", DURATION, "D", "Delay every datagram by D (20ms, 1.5s, 500us)."),
    ("jitter", DURATION, "D", "Add a random delay of scale D, drawn from --distribution."),
    (
        "distribution",
        click.Choice(DISTRIBUTIONS),
        "NAME",
        "Jitter's distribution: normal (D is the standard deviation), pareto-normal (long "
        "right tail), exponential (D is the mean added) [default: normal].",
    ),
    ("keep-order", None, "", "Jitter never reorders: a datagram waits for the one before it."),
    ("duplicate", FRACTION, "P", "Send a fraction P of datagrams twice."),
    ("reorder", FRACTION, "P", "Hold a fraction P of datagrams back by --reorder-gap."),
    ("reorder-gap", DURATION, "D", "How long a reordered datagram is held back [default: 10ms]."),
    ("rate", RATE, "R", "Cap the bandwidth at R (1mbit, 500kbit, bits/s)."),
    (
        "queue",
        click.IntRange(min=1),
        "N",
        "Datagrams waiting for the capped link at most; more are dropped [default: 1000].",
    ),
    (
        "outage",
        OUTAGE,
        "START:LENGTH",
        "Drop everything for LENGTH from START after the proxy starts (10s:5s); repeatable.",
    ),
]
_DIRECTIONS = ("", "up-", "down-")


def _impairment_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--X``, ``--up-X`` and ``--down-X`` for every impairment X (the last two hidden
    from ``--help``, which says how they work)."""
    for name, kind, metavar, help_text in reversed(_IMPAIRMENTS):
        for prefix in reversed(_DIRECTIONS):
            flag = f"--{prefix}{name}"
            dest = f"{prefix}{name}".replace("-", "_")
            text = help_text if not prefix else f"{help_text} ({prefix[:-1]} only)"
            if kind is None:
                option = click.option(
                    flag, dest, is_flag=True, default=False, help=text, hidden=bool(prefix)
                )
            else:
                option = click.option(
                    flag,
                    dest,
                    type=kind,
                    default=None,
                    metavar=metavar,
                    multiple=name == "outage",
                    help=text,
                    hidden=bool(prefix),
                )
            command = option(command)
    return command


def build_impairment(direction: str, flags: dict[str, Any]) -> Impairment:
    """The :class:`Impairment` of ``direction`` (``up`` or ``down``) from the flags' values.

    Raises:
        click.BadParameter: a combination the model refuses (the message names the flag).
    """
    values: dict[str, Any] = {}
    for name, kind, _, _ in _IMPAIRMENTS:
        key = name.replace("-", "_")
        shared, own = flags.get(key), flags.get(f"{direction}_{key}")
        if name == "outage":
            outages = tuple(shared or ()) + tuple(own or ())
            if outages:
                values["outages"] = outages
        elif kind is None:
            if shared or own:
                values[key] = True
        elif own is not None:
            values[key] = own
        elif shared is not None:
            values[key] = shared
    try:
        return Impairment(**values)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint=f"the {direction} direction") from None


# --- output ----------------------------------------------------------------------------------


def direction_text(counters: dict[str, Any]) -> str:
    """One direction's counters in a line: ``received + duplicated = forwarded + dropped +
    in flight``, then what was delayed or reordered."""
    causes = counters["dropped_by_cause"]
    dropped = ", ".join(f"{cause} {count}" for cause, count in causes.items() if count)
    return (
        f"{counters['received']} received, {counters['duplicated']} duplicated, "
        f"{counters['forwarded']} forwarded, {counters['dropped']} dropped"
        + (f" ({dropped})" if dropped else "")
        + f", {counters['in_flight']} in flight; {counters['delayed']} delayed, "
        f"{counters['reordered']} reordered"
    )


def stats_text(stats: dict[str, Any]) -> list[str]:
    """The counters for people: a line per direction, then clients and timing."""
    timing = stats["timing"]
    lines = [
        f"up:   {direction_text(stats['up'])}",
        f"down: {direction_text(stats['down'])}",
        f"clients: {stats['clients']} now, {stats['clients_total']} in all, "
        f"{stats['clients_expired']} expired, {stats['clients_evicted']} evicted; "
        f"upstream refused {stats['upstream_refused']} times",
    ]
    late = [
        f"{name} {timing[f'{name}_late_mean_ms']:.3f} ms mean, "
        f"{timing[f'{name}_late_max_ms']:.3f} ms max"
        for name in ("up", "down")
        if timing[f"{name}_late_mean_ms"] is not None
    ]
    if late:
        clock = "timerfd" if timing["precise"] else "asyncio timers"
        lines.append(f"held datagrams left after their time by ({clock}): " + "; ".join(late))
    return lines


class ProxyConsole:
    """stdout and stderr written off the loop; losing stdout does not stop the proxy."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, stdout_closed: bool) -> None:
        self.err = LineWriter(sys.stderr, name="udpbeat-stderr")
        self.out = LineWriter(
            None if stdout_closed else sys.stdout,
            on_lost=lambda error: self._call_soon(loop, error),
            name="udpbeat-stdout",
        )
        self._told = False
        if stdout_closed:
            self._lost(BrokenPipeError("stdout is closed"))

    def _call_soon(self, loop: asyncio.AbstractEventLoop, error: OSError) -> None:
        loop.call_soon_threadsafe(self._lost, error)

    def _lost(self, error: OSError) -> None:
        if not self._told:
            self._told = True
            reason = error.strerror or str(error) or type(error).__name__
            self.err.write(
                f"udpbeat: stdout lost ({reason}); still relaying, the summary will be on stderr"
            )

    def summary(self, lines: list[str]) -> None:
        """The last word: on stdout if it still works, else on stderr."""
        if self.out.lost is None and self.out.flush():
            for line in lines:
                self.out.write(line)
            if self.out.close():
                self.err.close()
                return
        if self.out.lost is not None:
            self._lost(self.out.lost)
        for line in lines:
            self.err.write(line)
        self.err.close()


async def run_proxy(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    config: ProxyConfig,
    *,
    as_json: bool,
    stats_interval: float | None,
    stdout_closed: bool = False,
    io: str = "auto",
    spin: float = SPIN,
) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    console = ProxyConsole(loop, stdout_closed=stdout_closed)
    proxy = Proxy(listen, upstream, config, io=io, spin=spin)
    # A stop while the upstream's name is still resolving (a slow DNS server) ends the proxy
    # at once rather than after the lookup: the lookup runs on a thread of its own.
    starting = asyncio.ensure_future(proxy.start())
    asked_to_stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({starting, asked_to_stop}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            console.err.write("udpbeat proxy: stopped before the upstream's name resolved")
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            console.out.close()
            console.err.close()
            return 0
        starting.result()
    except BaseException:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        console.err.close()
        console.out.close()
        raise
    finally:
        asked_to_stop.cancel()
    started = time.monotonic()

    def report(kind: str = "stats") -> None:
        stats = proxy.stats()
        elapsed = time.monotonic() - started
        if as_json:
            console.out.write(json_line({"type": kind, "at": time.time(), "uptime": elapsed,
                                         **stats}))  # fmt: skip
        else:
            console.out.write(f"{kind} +{elapsed:.1f}s:")
            for line in stats_text(stats):
                console.out.write("  " + line)

    def hangup() -> None:
        console.err.write("udpbeat: SIGHUP: nothing to reload; still relaying")
        report()

    loop.add_signal_handler(signal.SIGHUP, hangup)
    host, port = proxy.address
    target = display_address(proxy.upstream_address)
    if as_json:
        console.out.write(
            json_line(
                {
                    "type": "listening",
                    "host": host,
                    "port": port,
                    "upstream": target,
                    "seed": proxy.seed,
                    "precise_timer": proxy.precise_timer,
                    "up": config.up.to_dict(),
                    "down": config.down.to_dict(),
                }
            )
        )
    else:
        console.out.write(
            f"udpbeat proxy {display_address((host, port))} -> {target} "
            f"(seed {proxy.seed}; up: {config.up.describe()}; down: {config.down.describe()})"
            "; Ctrl-C to stop"
        )
    waiting = asyncio.ensure_future(wait_reporting(stopping, stats_interval, report))
    watching = asyncio.ensure_future(proxy.wait_stopped())
    try:
        await asyncio.wait({waiting, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        watching.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        stats = await proxy.stop()
        if as_json:
            console.summary([json_line({"type": "summary", **stats})])
        else:
            console.summary(["--- udpbeat proxy statistics ---", *stats_text(stats)])
    if proxy.failure is not None:
        raise proxy.failure
    return 0


EPILOG = """\b
Every impairment flag comes three ways:
  --loss P        both directions
  --up-loss P     client to upstream only
  --down-loss P   upstream to client only
and so on for every flag above. A one-direction flag wins over the both-ways
one, except --outage (the windows add up) and --keep-order (either says so).

\b
Fractions: 0.1 or 10%. Durations: 20ms, 1.5s, 500us, or seconds.
Rates: 1mbit, 500kbit, or bits a second."""


@click.command(epilog=EPILOG)
@click.option(
    "--listen",
    type=LISTEN,
    required=True,
    metavar="HOST:PORT",
    help="Address to receive clients' datagrams on (:PORT: every interface; port 0: any).",
)
@click.option(
    "--upstream",
    type=UPSTREAM,
    required=True,
    metavar="HOST:PORT",
    help="Address to relay them to.",
)
@_impairment_options
@click.option(
    "--seed", type=int, default=None, help="Seed of every random choice [default: random, shown]."
)
@click.option(
    "--max-clients",
    type=click.IntRange(min=1),
    default=ProxyConfig().max_clients,
    show_default=True,
    help="Client addresses kept at once (each has its own upstream socket); a new one evicts "
    "the least recently active.",
)
@click.option(
    "--idle-timeout",
    type=DURATION,
    default="60s",
    show_default=True,
    metavar="D",
    help="Forget a client after D without a datagram either way.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=MAX_IN_FLIGHT,
    show_default=True,
    help="Delayed datagrams held at once per direction; more are dropped (backlog).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: listening, stats, summary.")
@click.option(
    "--stats-interval",
    type=click.FloatRange(0.1, 86400.0),
    callback=finite,
    default=None,
    metavar="SECONDS",
    help="Print the counters every SECONDS.",
)
@click.option(
    "--io",
    type=click.Choice(IO_MODES),
    default="auto",
    show_default=True,
    help="Relay path: 'batched' (Linux recvmmsg/sendmmsg, kernel receive stamps, timerfd), "
    "'portable' (recvfrom/sendto, asyncio timers), 'auto' batched where available.",
)
@click.option(
    "--busy-poll-us",
    type=click.FloatRange(0, 1e6),
    callback=finite,
    default=SPIN * 1e6,
    show_default=True,
    metavar="MICROSECONDS",
    help="How long the relay spins after a lone datagram, for a lower round trip at some CPU "
    "(0: never spin, not even up to a departure).",
)
def proxy(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    seed: int | None,
    max_clients: int,
    idle_timeout: float,
    max_in_flight: int,
    as_json: bool,
    stats_interval: float | None,
    io: str,
    busy_poll_us: float,
    **impairments: Any,
) -> int:
    """Relay UDP between clients and --upstream through a network as bad as asked.

    Each client address gets its own upstream socket, so the upstream sees distinct clients
    as distinct. Counters on Ctrl-C or SIGTERM (SIGHUP prints them and goes on); the README's
    section "Bad networks on demand" describes every one.
    """
    if idle_timeout <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--idle-timeout")
    config = ProxyConfig(
        up=build_impairment("up", impairments),
        down=build_impairment("down", impairments),
        seed=seed,
        max_clients=max_clients,
        idle_timeout=idle_timeout,
        max_in_flight=max_in_flight,
    )
    return asyncio.run(
        run_proxy(
            listen,
            upstream,
            config,
            as_json=as_json,
            stats_interval=stats_interval,
            stdout_closed=stdout_was_closed(),
            io=io,
            spin=busy_poll_us / 1e6,
        )
    )
