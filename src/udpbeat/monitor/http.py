"""The monitor's HTTP endpoints (aiohttp), served from the probing loop itself.

=================  ===========================================================================
``/``              the status page (HTML, :mod:`udpbeat.monitor.status`); ``/target?name=``
                   one target's page with its charts
``/metrics``       every target in the Prometheus text format, or OpenMetrics when the
                   ``Accept`` header asks for it (as Prometheus does); then the monitor's own
                   metrics (``udpbeat_monitor_*``, ``process_*``)
``/api/targets``   JSON ``{"targets": [...]}``, one object per target (``?state=DOWN`` filters)
``/api/monitor``   JSON about the monitor itself: targets by state, probe budget, send spread
``/healthz``       ``ok`` (200) while the probing loop runs; 503 if it has stalled
=================  ===========================================================================

Every handler reads the fleet as it is at that moment. The big ones (``/metrics`` and
``/api/targets`` with ten thousand targets) work a few hundred targets at a time and let the
loop run in between, so a scrape never holds up a heartbeat by more than a few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import cast

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as _openmetrics
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from udpbeat.detector import State, Transition
from udpbeat.monitor.fleet import Target, rtt_summary
from udpbeat.monitor.history import HistoryError, HistoryReader
from udpbeat.monitor.metrics import render_chunks
from udpbeat.monitor.recorder import Recorder
from udpbeat.monitor.shell import Monitor
from udpbeat.monitor.status import Query, TargetHistory, esc, page, render_index, render_target

#: The port ``udpbeat monitor`` listens on by default (on loopback only).
DEFAULT_HTTP_PORT = 9812
#: Targets serialised between two yields to the loop.
CHUNK = 500
OPENMETRICS = "application/openmetrics-text"
#: prometheus_client's OpenMetrics exposition, typed.
generate_openmetrics = cast(Callable[[CollectorRegistry], bytes], _openmetrics)


class MonitorCollector(Collector):
    """The monitor's own figures (``udpbeat_monitor_*``), read at scrape time."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        monitor = self.monitor
        fleet = monitor.fleet
        stats = monitor.stats
        targets = Metric("udpbeat_monitor_targets", "Targets configured, by state.", "gauge")
        for state, count in fleet.counts().items():
            targets.add_sample("udpbeat_monitor_targets", {"state": state}, count)
        yield targets
        budget = fleet.budget
        waits = Metric(
            "udpbeat_monitor_probe_budget_waits",
            "Confirmation probes that waited for the monitor's probe budget.",
            "counter",
        )
        waits.add_sample(
            "udpbeat_monitor_probe_budget_waits_total", {}, budget.waited if budget else 0
        )
        yield waits
        received = Metric(
            "udpbeat_monitor_datagrams_received", "Datagrams read off the sockets.", "counter"
        )
        received.add_sample("udpbeat_monitor_datagrams_received_total", {}, stats.datagrams)
        yield received
        unknown = Metric(
            "udpbeat_monitor_unknown_datagrams",
            "Datagrams from an address that is no target's.",
            "counter",
        )
        unknown.add_sample("udpbeat_monitor_unknown_datagrams_total", {}, fleet.unknown_sources)
        yield unknown
        reloads = Metric("udpbeat_monitor_reloads", "Configuration reloads (SIGHUP).", "counter")
        ok = stats.reloads - stats.reload_failures
        reloads.add_sample("udpbeat_monitor_reloads_total", {"result": "ok"}, ok)
        reloads.add_sample(
            "udpbeat_monitor_reloads_total", {"result": "refused"}, stats.reload_failures
        )
        yield reloads


def make_registry(monitor: Monitor) -> CollectorRegistry:
    """The registry of ``/metrics`` besides the targets: the monitor's and the process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(monitor))
    registry.register(ProcessCollector(registry=None))
    return registry


def make_app(
    monitor: Monitor,
    registry: CollectorRegistry | None = None,
    *,
    recorder: Recorder | None = None,
) -> web.Application:
    """The aiohttp application serving ``monitor``. ``recorder`` keeps the minutes the status
    page shows (and the history, if it has a writer); without one, the application makes its
    own and runs it while it is served."""
    registry = registry if registry is not None else make_registry(monitor)
    loop = asyncio.get_running_loop()
    app = web.Application()
    if recorder is None:
        own = recorder = Recorder(monitor.fleet, clock=loop.time)
        own.watch_all()

        async def run_recorder(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(own.run())
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(run_recorder)
    status_recorder = recorder

    def wall_offset() -> float:
        return time.time() - loop.time()

    async def metrics(request: web.Request) -> web.Response:
        _, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith(OPENMETRICS)
        if openmetrics:
            own = generate_openmetrics(registry).decode()
            own = own.removesuffix("# EOF\n")
        else:
            own = generate_latest(registry).decode()
        pieces = []
        for piece in render_chunks(monitor.fleet, loop.time(), openmetrics=openmetrics):
            pieces.append(piece)
            await asyncio.sleep(0)
        pieces.append(own)
        if openmetrics:
            pieces.append("# EOF\n")
        return web.Response(body="".join(pieces).encode(), headers={"Content-Type": content_type})

    async def targets(request: web.Request) -> web.Response:
        wanted = request.query.get("state")
        if wanted is not None and wanted.upper() not in State.__members__:
            raise web.HTTPBadRequest(
                text=f"state must be one of {', '.join(State.__members__)}, got {wanted!r}\n"
            )
        offset = wall_offset()
        now = loop.time()
        pieces: list[str] = []
        for chunk in _chunks(list(monitor.fleet), CHUNK):
            pieces.extend(
                json.dumps(target_json(target, now, offset))
                for target in chunk
                if wanted is None or str(target.state) == wanted.upper()
            )
            await asyncio.sleep(0)
        body = '{"targets": [' + ", ".join(pieces) + "]}\n"
        return web.Response(body=body.encode(), content_type="application/json")

    async def about(request: web.Request) -> web.Response:
        return web.json_response(monitor_json(monitor), dumps=_dumps)

    async def health(request: web.Request) -> web.Response:
        if monitor.healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="stalled: the probing loop has not run for 5 s\n")

    async def index(request: web.Request) -> web.Response:
        query = Query.parse(request.query)
        body = render_index(monitor.fleet, status_recorder, query, loop.time(), wall_offset())
        return web.Response(text=body, content_type="text/html", headers=_NO_CACHE)

    async def target_page(request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        target = monitor.fleet.targets.get(name)
        if target is None:
            body = page(
                "no such target",
                f'<p><a href="./">&lsaquo; all targets</a></p><h1>No target named {esc(name)}</h1>',
                refresh=False,
            )
            return web.Response(status=404, text=body, content_type="text/html")
        path = status_recorder.history_path
        history = TargetHistory()
        if path is not None:
            wall = time.time()
            try:
                history = await loop.run_in_executor(None, read_history, path, name, wall)
            except HistoryError as error:
                history = TargetHistory(error=str(error))
        body = render_target(target, status_recorder, history, loop.time(), wall_offset())
        return web.Response(text=body, content_type="text/html", headers=_NO_CACHE)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/targets", targets)
    app.router.add_get("/api/monitor", about)
    app.router.add_get("/healthz", health)
    app.router.add_get("/", index)
    app.router.add_get("/target", target_page)
    return app


_NO_CACHE = {"Cache-Control": "no-store"}


def read_history(path: str, name: str, wall: float) -> TargetHistory:
    """A target's last day, outages and changes from the history file (on a worker thread).

    Raises:
        HistoryError: the file cannot be read.
    """
    with HistoryReader(path) as reader:
        return TargetHistory(
            day=reader.minutes(name, since=wall - 86400),
            outages=reader.outages(name)[-100:],
            changes=reader.changes(name, since=wall - 7 * 86400)[-20:],
            kept=True,
        )


def target_json(target: Target, now: float, wall_offset: float) -> dict[str, object]:
    """One target as ``/api/targets`` shows it (times as Unix time)."""
    stats = target.stats
    config = target.config
    resolved = stats.received + stats.lost + stats.refused
    loss = target.loss_ratio()
    outages = [
        {
            "start": start + wall_offset,
            "end": None if end is None else end + wall_offset,
            "duration_s": None if end is None else end - start,
        }
        for start, end in stats.outage_log
    ]
    if stats.down_since is not None:
        outages.append({"start": stats.down_since + wall_offset, "end": None, "duration_s": None})
    return {
        "name": config.name,
        "host": config.host,
        "port": config.port,
        "address": target.address[0],
        "labels": dict(config.labels),
        "state": str(target.state),
        "sent": stats.sent,
        "probes": stats.probes,
        "received": stats.received,
        "lost": stats.lost,
        "late": stats.late,
        "duplicates": stats.duplicates,
        "refused": stats.refused,
        "loss_percent": None if not resolved else round(100.0 * (1 - stats.received / resolved), 3),
        "loss_ratio": loss,
        "rtt_ms": rtt_summary(stats),
        "last_change": change_json(stats.last_change, wall_offset),
        "outages": outages,
        "outages_total": stats.outages,
        "outage_seconds": stats.outage_total(now),
        "interval": config.probe.interval,
        "timeout": config.probe.timeout,
        "detector": config.probe.detector,
    }


def change_json(transition: Transition | None, wall_offset: float) -> dict[str, object] | None:
    if transition is None:
        return None
    return {
        "time": transition.at + wall_offset,
        "old": str(transition.old),
        "new": str(transition.new),
        "reason": transition.reason,
    }


def monitor_json(monitor: Monitor) -> dict[str, object]:
    """The monitor itself, for ``/api/monitor``."""
    fleet = monitor.fleet
    stats = monitor.stats
    budget = fleet.budget
    return {
        "targets": len(fleet),
        "states": fleet.counts(),
        "uptime_s": asyncio.get_running_loop().time() - monitor.started,
        "rounds": stats.rounds,
        "slices": stats.slices,
        "most_sends_per_slice": stats.most_sends_per_slice,
        "timer_runs": fleet.timer_runs,
        "sends": monitor.sends,
        "datagrams_received": stats.datagrams,
        "unknown_sources": fleet.unknown_sources,
        "icmp_errors": stats.icmp_errors,
        "icmp_unrouted": fleet.icmp_unrouted,
        "socket_errors": dict(stats.send_errors),
        "probe_budget": None
        if budget is None
        else {
            "rate": budget.rate,
            "burst": budget.burst,
            "granted": budget.granted,
            "waited": budget.waited,
        },
        "probes_sent": sum(target.stats.probes for target in fleet),
        "spread": monitor.spread(),
        "reloads": stats.reloads,
        "reload_failures": stats.reload_failures,
        "gc_freezes": stats.freezes,
        "sockets": [list(address) for address in monitor.addresses()],
    }


def _dumps(obj: object) -> str:
    return json.dumps(obj)


def _chunks(items: list[Target], size: int) -> Iterator[list[Target]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
