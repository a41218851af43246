"""The status page: HTML and SVG rendered on the server, so it reads without JavaScript.

``/`` lists every target: its state (a colour *and* the word, so it reads without colour), the
loss over the last 5 minutes and the last hour, RTT p50 and p99, the time since its last
change; open outages first (DOWN, then SUSPECT, UNKNOWN, UP). ``?q=`` filters by name, address
or label (``role=db`` for a label's value), ``?state=`` by state, and ``?page=`` pages through
the rest, :data:`PAGE_SIZE` targets a page, so ten thousand targets cost one page's rendering.

``/target?name=NAME`` is one target: RTT and loss over the last hour and day as SmokePing draws
them (a band from the minimum to the maximum of each column, the median as a tick coloured by
the loss, the loss as a strip below, DOWN shaded), its outages and its latest changes.

Everything shown that comes from a configuration or a detector (names, labels, hosts, reasons)
is escaped. Links are relative, so the pages work behind a reverse proxy under a sub-path. A
few lines of JavaScript refresh the page in place every :data:`REFRESH_SECONDS`; without it
the page is complete, just static.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from udpbeat.detector import State
from udpbeat.monitor.fleet import Fleet, Target
from udpbeat.monitor.history import ChangeRow, MinuteRow, OutageRow
from udpbeat.monitor.recorder import SEVERITY, Recorder
from udpbeat.stats import percentile

#: Targets per page of ``/``.
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: Seconds between two refreshes by the page's script.
REFRESH_SECONDS = 10
#: Order of the list: open outages first.
ORDER = {State.DOWN: 0, State.SUSPECT: 1, State.UNKNOWN: 2, State.UP: 3}
#: A state's colour (the word is always written beside it).
COLOURS = {"UP": "#1a7f37", "SUSPECT": "#bf8700", "DOWN": "#cf222e", "UNKNOWN": "#6e7781"}

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1rem 2rem;color:#1f2328;background:#fff}
h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse}td,th{padding:.2rem .6rem;text-align:left;
border-bottom:1px solid #d0d7de;white-space:nowrap}th{background:#f6f8fa}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;min-width:5.5em;padding:0 .4em;border-radius:.3em;color:#fff;
font-weight:600;text-align:center}
.UP{background:#1a7f37}.SUSPECT{background:#bf8700}.DOWN{background:#cf222e}
.UNKNOWN{background:#6e7781}.label{color:#57606a;font-size:.9em}
.summary span{margin-right:1em}form{margin:.6rem 0}nav{margin:.6rem 0}
.muted{color:#57606a}svg{display:block;margin:.3rem 0 1rem}a{color:#0969da}
"""

_SCRIPT = """
(function(){var s=%d;function refresh(){
if(document.activeElement&&document.activeElement.tagName==='INPUT'){return}
fetch(location.href,{cache:'no-store'}).then(function(r){return r.text()}).then(function(t){
var doc=new DOMParser().parseFromString(t,'text/html');var m=doc.querySelector('main');
if(m){document.querySelector('main').replaceWith(m)}}).catch(function(){})}
setInterval(refresh,s*1000)})();
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def duration_text(seconds: float | None) -> str:
    """``45s``, ``12m 5s``, ``3h 4m``, ``2d 5h``."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def clock(unix_time: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_time))


def percent(ratio: float | None) -> str:
    return "&ndash;" if ratio is None else f"{ratio * 100:.1f}%"


def milliseconds(seconds: float | None) -> str:
    return "&ndash;" if seconds is None else f"{seconds * 1e3:.3f} ms"


def state_badge(state: str) -> str:
    return f'<span class="state {esc(state)}">{esc(state)}</span>'


def page(title: str, body: str, *, refresh: bool = True) -> str:
    script = f"<script>{_SCRIPT % REFRESH_SECONDS}</script>" if refresh else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main>{script}</body></html>\n"
    )


# --- the list --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """What ``/`` was asked: a filter, a state, a page."""

    text: str = ""
    state: str = ""
    page: int = 1
    size: int = PAGE_SIZE

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Query:
        """From a query string; bad numbers fall back to the defaults."""
        state = query.get("state", "").upper()
        return cls(
            text=query.get("q", "").strip()[:200],
            state=state if state in State.__members__ else "",
            page=_whole(query.get("page"), 1, 1, 1_000_000),
            size=_whole(query.get("per"), PAGE_SIZE, 1, MAX_PAGE_SIZE),
        )

    def link(self, **changes: object) -> str:
        values = {"q": self.text, "state": self.state, "page": self.page, "per": self.size}
        values.update(changes)
        kept = {
            key: value
            for key, value in values.items()
            if value not in ("", None)
            and not (key == "page" and value == 1)
            and not (key == "per" and value == PAGE_SIZE)
        }
        return "./?" + urlencode(kept) if kept else "./"


def _whole(text: str | None, default: int, low: int, high: int) -> int:
    if text is None or not text.strip().isdigit():
        return default
    return min(high, max(low, int(text)))


def matches(target: Target, text: str) -> bool:
    """Whether ``text`` is in the target's name, host or a label (``key=value``: that
    label's value contains ``value``), case-insensitively."""
    if not text:
        return True
    needle = text.casefold()
    config = target.config
    key, equals, value = needle.partition("=")
    if equals:
        return any(
            k.casefold() == key.strip() and value.strip() in v.casefold() for k, v in config.labels
        )
    return (
        needle in config.name.casefold()
        or needle in config.host.casefold()
        or any(needle in v.casefold() or needle in k.casefold() for k, v in config.labels)
    )


def select(fleet: Fleet, query: Query) -> tuple[list[Target], dict[str, int], int]:
    """The targets ``query`` asks for, open outages first (the oldest outage first), then
    SUSPECT, UNKNOWN and UP, by name; with the whole fleet's targets by state and its open
    outages (one pass: reading a target's state is the costly part at 10,000 targets)."""
    counts = {str(state): 0 for state in State}
    keyed: list[tuple[int, float, str, Target]] = []
    open_outages = 0
    wanted = query.state
    for target in fleet:
        state = target.state
        name = str(state)
        counts[name] += 1
        down = target.stats.down_since
        if down is not None:
            open_outages += 1
        if (not wanted or name == wanted) and matches(target, query.text):
            keyed.append((ORDER[state], down if down is not None else 0.0, target.name, target))
    keyed.sort(key=lambda item: item[:3])
    return [item[3] for item in keyed], counts, open_outages


def render_index(
    fleet: Fleet,
    recorder: Recorder,
    query: Query,
    now: float,
    wall_offset: float,
) -> str:
    """The whole ``/`` page."""
    chosen, counts, open_outages = select(fleet, query)
    pages = max(1, math.ceil(len(chosen) / query.size))
    page_number = min(query.page, pages)
    first = (page_number - 1) * query.size
    shown = chosen[first : first + query.size]
    parts = [
        f"<h1>udpbeat monitor: {len(fleet):,} target{'' if len(fleet) == 1 else 's'}</h1>",
        '<p class="summary">',
        *(
            f'<span><a href="{esc(query.link(state=state, page=1))}">{state_badge(state)}</a> '
            f"{counts[state]:,}</span>"
            for state in ("DOWN", "SUSPECT", "UNKNOWN", "UP")
        ),
        f'<span class="muted">{open_outages:,} open outage'
        f"{'' if open_outages == 1 else 's'} · {esc(clock(now + wall_offset))}"
        + (f" · history in {esc(recorder.history_path)}" if recorder.history_path else "")
        + "</span></p>",
        '<form method="get" action="./">'
        '<label>Filter <input name="q" size="30" placeholder="name, address or label=value" '
        f'value="{esc(query.text)}"></label> <label>State <select name="state">'
        + "".join(
            f'<option value="{value}"{" selected" if value == query.state else ""}>'
            f"{value or 'any'}</option>"
            for value in ("", "DOWN", "SUSPECT", "UNKNOWN", "UP")
        )
        + '</select></label> <button type="submit">Show</button>'
        + (' <a href="./">clear</a>' if query.text or query.state else "")
        + "</form>",
    ]
    parts.append(_nav(query, page_number, pages, first, len(shown), len(chosen)))
    parts.append(
        "<table><thead><tr><th>state</th><th>target</th><th>address</th><th>labels</th>"
        "<th>loss 5 min</th><th>loss 1 h</th><th>RTT p50</th><th>RTT p99</th>"
        "<th>since last change</th><th>outage</th></tr></thead><tbody>"
    )
    for target in shown:
        parts.append(_row(target, recorder, now, wall_offset))
    parts.append("</tbody></table>")
    if not chosen:
        parts.append('<p class="muted">No target matches.</p>')
    parts.append(_nav(query, page_number, pages, first, len(shown), len(chosen)))
    parts.append(
        '<p class="muted">Also: <a href="metrics">/metrics</a> · '
        '<a href="api/targets">/api/targets</a> · <a href="api/monitor">/api/monitor</a></p>'
    )
    return page("udpbeat monitor", "".join(parts))


def _nav(query: Query, number: int, pages: int, first: int, shown: int, total: int) -> str:
    text = f"targets {first + 1 if shown else 0:,}&ndash;{first + shown:,} of {total:,}"
    links = []
    if number > 1:
        links.append(
            f'<a href="{esc(query.link(page=number - 1))}" rel="prev">&lsaquo; previous</a>'
        )
    if number < pages:
        links.append(f'<a href="{esc(query.link(page=number + 1))}" rel="next">next &rsaquo;</a>')
    if pages > 1:
        text += f" · page {number} of {pages}"
    return f"<nav>{text}{' · ' if links else ''}{' · '.join(links)}</nav>"


def target_link(name: str) -> str:
    return "target?" + urlencode({"name": name})


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    return " ".join(f'<span class="label">{esc(k)}={esc(v)}</span>' for k, v in labels)


def _address(target: Target) -> str:
    config = target.config
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{host}:{config.port}"


def _row(target: Target, recorder: Recorder, now: float, wall_offset: float) -> str:
    stats = target.stats
    state = str(target.state)
    rtts = stats.rtts()
    p50 = percentile(rtts, 50) if rtts else None
    p99 = percentile(rtts, 99) if rtts else None
    change = stats.last_change
    since = ""
    if change is not None:
        since = (
            f'<span title="{esc(clock(change.at + wall_offset))}: {esc(change.old)} → '
            f'{esc(change.new)}: {esc(change.reason)}">{duration_text(now - change.at)}</span>'
        )
    outage = ""
    if stats.down_since is not None:
        outage = f"down for {duration_text(now - stats.down_since)}"
    return (
        f"<tr><td>{state_badge(state)}</td>"
        f'<td><a href="{esc(target_link(target.name))}">{esc(target.name)}</a></td>'
        f"<td>{esc(_address(target))}</td><td>{_labels(target.config.labels)}</td>"
        f'<td class="n">{percent(recorder.loss(target, 5).ratio)}</td>'
        f'<td class="n">{percent(recorder.loss(target, 60).ratio)}</td>'
        f'<td class="n">{milliseconds(p50)}</td><td class="n">{milliseconds(p99)}</td>'
        f'<td class="n">{since}</td><td>{outage}</td></tr>'
    )


# --- one target ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetHistory:
    """What the history file adds for a target page (empty without ``--db``)."""

    day: Sequence[MinuteRow] = ()
    outages: Sequence[OutageRow] = ()
    changes: Sequence[ChangeRow] = ()
    kept: bool = False
    #: Why the history could not be read, if it could not.
    error: str = ""


def render_target(
    target: Target,
    recorder: Recorder,
    history: TargetHistory,
    now: float,
    wall_offset: float,
) -> str:
    """The page of one target."""
    stats = target.stats
    config = target.config
    wall = now + wall_offset
    state = str(target.state)
    resolved = stats.received + stats.lost + stats.refused
    hour = recorder.hour(target, since=wall - 3600)
    parts = [
        '<p><a href="./">&lsaquo; all targets</a></p>',
        f"<h1>{esc(config.name)} {state_badge(state)}</h1>",
        f"<p>{esc(_address(target))} · {_labels(config.labels)} · detector "
        f"{esc(config.probe.detector)}, every {config.probe.interval:g} s, timeout "
        f"{config.probe.timeout:g} s</p>",
        "<table><tbody>",
        f'<tr><th>heartbeats sent</th><td class="n">{stats.sent:,}</td>'
        f'<th>answered</th><td class="n">{stats.received:,}</td>'
        f'<th>loss</th><td class="n">{percent(stats_loss(stats.received, resolved))}</td></tr>',
        f'<tr><th>loss 5 min</th><td class="n">{percent(recorder.loss(target, 5).ratio)}</td>'
        f'<th>loss 1 h</th><td class="n">{percent(recorder.loss(target, 60).ratio)}</td>'
        f'<th>outages</th><td class="n">{stats.outages:,} '
        f"({duration_text(stats.outage_total(now)) or '0s'} down)</td></tr>",
        "</tbody></table>",
        "<h2>Last hour</h2>",
        rtt_chart(hour, wall - 3600, wall, 60, "RTT and loss over the last hour"),
        "<h2>Last day</h2>",
    ]
    if history.kept:
        day = merge_minutes(history.day, hour)
        parts.append(rtt_chart(day, wall - 86400, wall, 300, "RTT and loss over the last day"))
    elif history.error:
        parts.append(f'<p class="muted">History unavailable: {esc(history.error)}</p>')
    else:
        parts.append(
            '<p class="muted">Only the last hour is kept in memory: start the monitor with '
            "<code>--db FILE</code> to keep days of history.</p>"
        )
    parts.append(_legend())
    parts.append("<h2>Outages</h2>")
    outages = list(history.outages) if history.kept else memory_outages(target, wall_offset)
    if stats.down_since is not None and not any(o.end is None for o in outages):
        outages.append(OutageRow(config.name, stats.down_since + wall_offset, None, 0, ""))
    if outages:
        parts.append(
            "<table><thead><tr><th>start</th><th>end</th><th>duration</th>"
            "<th>heartbeats lost</th><th>reason</th></tr></thead><tbody>"
        )
        for outage in sorted(outages, key=lambda o: (o.end is not None, -o.start)):
            end = "still DOWN" if outage.end is None else clock(outage.end)
            length = (wall if outage.end is None else outage.end) - outage.start
            parts.append(
                f"<tr><td>{clock(outage.start)}</td><td>{esc(end)}</td>"
                f'<td class="n">{duration_text(length)}</td>'
                f'<td class="n">{f"{outage.lost:,}" if history.kept else "&ndash;"}</td>'
                f"<td>{esc(outage.reason)}</td></tr>"
            )
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="muted">No outage.</p>')
    changes = list(history.changes)
    if not changes and stats.last_change is not None:
        change = stats.last_change
        changes = [
            ChangeRow(
                config.name,
                change.at + wall_offset,
                str(change.old),
                str(change.new),
                change.reason,
            )
        ]
    if changes:
        parts.append("<h2>Latest state changes</h2><table><tbody>")
        for row in sorted(changes, key=lambda c: -c.time)[:20]:
            parts.append(
                f"<tr><td>{clock(row.time)}</td><td>{state_badge(row.old)} → "
                f"{state_badge(row.new)}</td><td>{esc(row.reason)}</td></tr>"
            )
        parts.append("</tbody></table>")
    return page(f"{config.name} · udpbeat monitor", "".join(parts))


def stats_loss(received: int, resolved: int) -> float | None:
    return None if not resolved else 1 - received / resolved


def memory_outages(target: Target, wall_offset: float) -> list[OutageRow]:
    return [
        OutageRow(
            target.name, start + wall_offset, None if end is None else end + wall_offset, 0, ""
        )
        for start, end in target.stats.outage_log
    ]


def merge_minutes(stored: Sequence[MinuteRow], recent: Sequence[MinuteRow]) -> list[MinuteRow]:
    """The history's minutes with the ones in memory the writer has not committed yet (a
    minute present in both is taken from memory, which saw all of it)."""
    by_start = {row.start: row for row in stored}
    for row in recent:
        by_start[row.start] = row
    return [by_start[start] for start in sorted(by_start)]


# --- the chart -------------------------------------------------------------------------------

CHART_WIDTH = 720
CHART_HEIGHT = 180
LOSS_STRIP = 24
_LEFT, _TOP, _RIGHT, _BOTTOM = 64, 10, 12, 22


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a chart: minutes from ``start`` to ``start + width``."""

    start: float
    low: float | None
    median: float | None
    high: float | None
    loss: float | None
    state: str


def columns(rows: Sequence[MinuteRow], start: float, end: float, step: int) -> list[Column]:
    """Minutes grouped in columns of ``step`` seconds between ``start`` and ``end``: the
    lowest minimum, the median of the minutes' medians, the highest maximum, the loss of all
    their heartbeats, and the worst state of their minutes."""
    first = math.floor(start / step) * step
    count = max(1, math.ceil((end - first) / step))
    groups: list[list[MinuteRow]] = [[] for _ in range(count)]
    for row in rows:
        index = int((row.start - first) // step)
        if 0 <= index < count:
            groups[index].append(row)
    out = []
    for index, group in enumerate(groups):
        lows = [r.rtt_min for r in group if r.rtt_min is not None]
        highs = [r.rtt_max for r in group if r.rtt_max is not None]
        medians = sorted(r.rtt_p50 for r in group if r.rtt_p50 is not None)
        answered = sum(r.answered for r in group)
        lost = sum(r.lost for r in group)
        state = max((r.state for r in group), key=lambda s: SEVERITY.get(s, 0), default="")
        out.append(
            Column(
                first + index * step,
                min(lows) if lows else None,
                percentile(medians, 50) if medians else None,
                max(highs) if highs else None,
                lost / (answered + lost) if answered + lost else None,
                state,
            )
        )
    return out


def loss_colour(loss: float | None) -> str:
    """SmokePing's idea: the median's colour says the loss."""
    if not loss:
        return "#1a7f37"
    if loss < 0.05:
        return "#0969da"
    if loss < 0.2:
        return "#8250df"
    if loss < 0.5:
        return "#bf8700"
    return "#cf222e"


def _scale_top(cols: Sequence[Column]) -> float:
    """The RTT at the top of the chart: the highest maximum, unless a few outliers would
    flatten the rest (then four times the 90th percentile of the medians)."""
    highs = [c.high for c in cols if c.high is not None]
    medians = sorted(c.median for c in cols if c.median is not None)
    if not highs or not medians:
        return 1e-3
    top = max(highs)
    typical = percentile(medians, 90)
    if typical > 0:
        top = min(top, 4 * typical)
    exponent = math.floor(math.log10(top))
    for factor in (1, 2, 2.5, 5, 10):
        nice = factor * 10.0**exponent
        if nice >= top:
            return nice
    return top  # pragma: no cover - 10 covers every case


def rtt_chart(rows: Sequence[MinuteRow], start: float, end: float, step: int, title: str) -> str:
    """An SVG chart of ``rows`` between ``start`` and ``end``, one column per ``step`` seconds."""
    cols = columns(rows, start, end, step)
    width, height = CHART_WIDTH, CHART_HEIGHT
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM - LOSS_STRIP - 6
    strip_top = _TOP + plot_h + 6
    top = _scale_top(cols)
    span = max(1.0, cols[-1].start + step - cols[0].start)
    column_w = plot_w * step / span

    def x(at: float) -> float:
        return _LEFT + (at - cols[0].start) / span * plot_w

    def y(rtt: float) -> float:
        return _TOP + plot_h - min(rtt, top) / top * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}" class="chart">'
        f"<title>{esc(title)}</title>"
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa"/>'
    ]
    for fraction in (0, 0.5, 1):
        level = _TOP + plot_h - fraction * plot_h
        out.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{level:.1f}" y2="{level:.1f}" '
            f'stroke="#d0d7de"/><text x="{_LEFT - 4}" y="{level + 4:.1f}" font-size="11" '
            f'text-anchor="end">{top * fraction * 1e3:.3g} ms</text>'
        )
    tick = 600 if step <= 60 else 3 * 3600
    first_tick = math.ceil(cols[0].start / tick) * tick
    at = first_tick
    while at <= cols[-1].start + step:
        out.append(
            f'<text x="{x(at):.1f}" y="{height - 4}" font-size="11" text-anchor="middle">'
            f"{time.strftime('%H:%M', time.gmtime(at))}</text>"
        )
        at += tick
    for col in cols:
        left = x(col.start)
        if col.state == "DOWN":
            out.append(
                f'<rect x="{left:.1f}" y="{_TOP}" width="{column_w:.2f}" height="{plot_h}" '
                'fill="#cf222e" fill-opacity="0.18"><title>DOWN</title></rect>'
            )
        if col.low is not None and col.high is not None:
            band_top = y(col.high)
            out.append(
                f'<rect x="{left:.1f}" y="{band_top:.1f}" width="{column_w:.2f}" '
                f'height="{max(1.0, y(col.low) - band_top):.1f}" fill="#8c959f" '
                'fill-opacity="0.45"/>'
            )
        if col.median is not None:
            out.append(
                f'<rect x="{left:.1f}" y="{y(col.median) - 1:.1f}" width="{column_w:.2f}" '
                f'height="2" fill="{loss_colour(col.loss)}"/>'
            )
        if col.loss:
            strip = max(1.0, col.loss * LOSS_STRIP)
            out.append(
                f'<rect x="{left:.1f}" y="{strip_top + LOSS_STRIP - strip:.1f}" '
                f'width="{column_w:.2f}" height="{strip:.1f}" fill="{loss_colour(col.loss)}">'
                f"<title>{percent(col.loss)} loss at "
                f"{time.strftime('%H:%M', time.gmtime(col.start))}</title></rect>"
            )
    out.append(
        f'<text x="{_LEFT - 4}" y="{strip_top + LOSS_STRIP - 6}" font-size="11" '
        'text-anchor="end">loss</text>'
        f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{strip_top + LOSS_STRIP}" '
        f'y2="{strip_top + LOSS_STRIP}" stroke="#d0d7de"/></svg>'
    )
    return "".join(out)


def _legend() -> str:
    return (
        '<p class="muted">Each column: grey band from the lowest to the highest RTT, a tick '
        "at the median coloured by the loss (green none, blue under 5%, purple under 20%, "
        "amber under 50%, red more), the loss as a bar in the strip below, DOWN shaded red. "
        "Times in UTC; the day's columns are 5 minutes.</p>"
    )
