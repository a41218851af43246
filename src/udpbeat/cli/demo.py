"""``udpbeat demo``: a lossy server (or one behind a bad path), a client against it, then the
server stops."""

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
from udpbeat.impair import PATHS
from udpbeat.proxy import Proxy, ProxyConfig
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
    default=None,
    help="Fraction of heartbeats the server drops on purpose (0.3 = 30%) "
    "[default: 0.3; 0 with --path].",
)
@click.option(
    "--path",
    type=click.Choice(sorted(PATHS)),
    default=None,
    help="Put the server behind an in-process udpbeat proxy with this bad path.",
)
@click.option(
    "--seed",
    type=Integer(),
    default=None,
    help="Seed for the loss (the same seed drops the same heartbeats) [default: random].",
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
def demo(
    loss: float | None, path: str | None, seed: int | None, count: int, interval: float
) -> int:
    """Server with simulated loss (or behind a bad path), a client against it, then the
    server stops.

    Exit status: 0 the stop was detected; 1 a false alarm came first; 130 interrupted (the
    statistics so far are printed).
    """
    if loss is None:
        loss = 0.0 if path else 0.3
    return asyncio.run(run_demo(loss, seed, count, interval, path))


async def run_demo(
    loss: float, seed: int | None, count: int, interval: float, path: str | None = None
) -> int:
    output = LineWriter(sys.stdout)
    try:
        return await _demo(output.write, loss, seed, count, interval, path)
    finally:
        output.close()


async def _demo(
    say: Callable[[str], None],
    loss: float,
    seed: int | None,
    count: int,
    interval: float,
    path: str | None = None,
) -> int:
    timeout = round(max(0.25, 3 * interval), 3)
    server = Server("127.0.0.1", 0, ReflectorConfig(loss=loss, seed=seed, log_events=False))
    await server.start()
    host, port = server.address
    target = display_address((host, port))
    say(f"demo: server on {target} drops {loss:.0%} of heartbeats on purpose")
    proxy = None
    if path is not None:
        up, down = PATHS[path]
        proxy = Proxy(("127.0.0.1", 0), (host, port), ProxyConfig(up=up, down=down, seed=seed))
        await proxy.start()
        host, port = proxy.address
        target = display_address((host, port))
        say(f"demo: the client talks to it through a {path} path, a proxy on {target}")
        say(f"demo:   up: {up.describe()}; down: {down.describe()}")
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
        proxied = await proxy.stop() if proxy is not None else None
    say("\n" + format_report(report))
    say(
        f"server: {counters.received} received, {counters.replied} replied, "
        f"{counters.dropped_loss} dropped by simulated loss"
    )
    if proxied is not None:
        for name in ("up", "down"):
            flow = proxied[name]
            assert isinstance(flow, dict)
            say(
                f"proxy {name}: {flow['received']} received, {flow['forwarded']} forwarded, "
                f"{flow['dropped']} dropped, {flow['duplicated']} duplicated"
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
