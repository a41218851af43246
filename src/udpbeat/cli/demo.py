"""``udpbeat demo``: a lossy server, a client against it, then the server stops."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

import click

from udpbeat._net import display_address
from udpbeat.cli.client import EXIT_DOWN, EXIT_UP, event_printer
from udpbeat.cli.format import format_report
from udpbeat.cli.options import Integer, Number, Seconds
from udpbeat.cli.output import LineWriter
from udpbeat.client import Prober, probe
from udpbeat.detector import State
from udpbeat.events import Event, HeartbeatSent
from udpbeat.reflector import ReflectorConfig
from udpbeat.report import ProbeReport
from udpbeat.server import Server
from udpbeat.session import ProbeConfig

#: Exit status of a demo stopped by Ctrl-C (or SIGTERM) before it could show the detection.
EXIT_INTERRUPTED = 130


@click.command()
@click.option(
    "--loss",
    type=Number(0.0, 1.0),
    default=0.3,
    show_default=True,
    help="Fraction of heartbeats the server drops on purpose (0.3 = 30%).",
)
@click.option(
    "--seed",
    type=Integer(),
    default=None,
    help="Seed for the server's loss (the same seed drops the same heartbeats) [default: random].",
)
@click.option(
    "--count",
    type=Integer(min=1),
    default=40,
    show_default=True,
    help="Heartbeats before the server is stopped.",
)
@click.option(
    "--interval",
    type=Seconds(min=0.01),
    default=0.1,
    show_default=True,
    help="Seconds between heartbeats; the client's timeout is three of them (at least 0.25 s).",
)
def demo(loss: float, seed: int | None, count: int, interval: float) -> int:
    """Server with simulated loss, a client against it, then the server stops.

    Exit status: 0 the stop was detected; 1 a false alarm came first; 130 interrupted (the
    statistics so far are printed).
    """
    return asyncio.run(run_demo(loss, seed, count, interval))


async def run_demo(loss: float, seed: int | None, count: int, interval: float) -> int:
    output = LineWriter(sys.stdout)
    try:
        return await _demo(output.write, loss, seed, count, interval)
    finally:
        output.close()


async def _demo(
    say: Callable[[str], None], loss: float, seed: int | None, count: int, interval: float
) -> int:
    timeout = round(max(0.25, 3 * interval), 3)
    server = Server("127.0.0.1", 0, ReflectorConfig(loss=loss, seed=seed, log_events=False))
    await server.start()
    host, port = server.address
    target = display_address((host, port))
    say(f"demo: server on {target} drops {loss:.0%} of heartbeats on purpose")
    say(
        f"demo: client sends one heartbeat every {interval}s, timeout {timeout}s; "
        f"after {count} heartbeats the server is stopped\n"
    )
    config = ProbeConfig(count=None, interval=interval, timeout=timeout)
    first_seq: list[int] = []
    printer = event_printer(
        say,
        as_json=False,
        quiet=False,
        target=target,
        first_seq=lambda: first_seq[0] if first_seq else 1,
        prefix="client | ",
    )
    stop_due = asyncio.Event()
    stopped_at: list[float] = []
    loop = asyncio.get_running_loop()
    regular_sent = 0
    probers: list[Prober] = []
    interrupted = False

    def interrupt() -> None:
        # Ctrl-C: end the client now; its statistics so far and the server's are still shown.
        nonlocal interrupted
        interrupted = True
        for prober in probers:
            prober.stop()

    def started(prober: Prober) -> None:
        first_seq.append(prober.session.first_seq)
        probers.append(prober)
        if interrupted:
            prober.stop()

    def on_event(event: Event) -> None:
        nonlocal regular_sent
        printer(event)
        if isinstance(event, HeartbeatSent) and not event.probe:
            regular_sent += 1  # probes have sequence numbers too: count heartbeats, not seqs
            if regular_sent == count:
                stop_due.set()

    async def stop_when_due(probing: asyncio.Task[ProbeReport]) -> None:
        waiting = asyncio.ensure_future(stop_due.wait())
        try:
            await asyncio.wait({waiting, probing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if stop_due.is_set():
            await server.stop()
            stopped_at.append(loop.time())
            say("demo  | >>> server stopped: the client must now detect it <<<")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    try:
        async with asyncio.TaskGroup() as group:
            probing = group.create_task(
                probe(host, port, config, on_event=on_event, on_start=started)
            )
            group.create_task(stop_when_due(probing))
        report = probing.result()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        counters = await server.stop()
    say("\n" + format_report(report))
    say(
        f"server: {counters.received} received, {counters.replied} replied, "
        f"{counters.dropped_loss} dropped by simulated loss"
    )
    if interrupted:
        when = "after" if stopped_at else "before"
        say(f"demo: interrupted {when} the server was stopped; the statistics so far are above")
        return EXIT_INTERRUPTED
    if report.state is State.DOWN and stopped_at:
        down_at = report.transitions[-1].at
        delay = down_at - stopped_at[0]
        say(f"demo: stop detected {delay:.2f}s after the server stopped")
        return EXIT_UP
    say("demo: the server was declared down before it was stopped (a false alarm)")
    return EXIT_DOWN
