"""The HTML page of ``udpbeat report``: one self-contained file, pure text from typed data.

Images are inlined as base64 PNG (``data:`` URIs), so the page needs nothing beside it and opens
from a mail attachment as well as from the report's directory; each links to its SVG twin,
which is there when the page sits in the directory it was written to. No JavaScript, no external
style sheet, and every string from the input (target names, times, the input's name) is
HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from udpbeat.series import Capture, OutageSpan, TargetSummary, summarize

STATE_COLOURS = {"UNKNOWN": "#757575", "UP": "#2e7d32", "SUSPECT": "#a66f00", "DOWN": "#c62828"}


@dataclass(frozen=True, slots=True)
class Picture:
    """A figure on the page: its heading, what it shows, its PNG, and its files' names."""

    title: str
    caption: str
    png: bytes
    png_name: str
    svg_name: str


def clock(unix_time: float | None) -> str:
    """A Unix time as UTC, to the millisecond; an em dash when unknown."""
    if unix_time is None:
        return "\u2014"
    stamp = datetime.fromtimestamp(unix_time, UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d} UTC"


def duration(seconds: float) -> str:
    """``0.250 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if seconds < 10:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _ms(value: float | None) -> str:
    return "\u2014" if value is None else f"{value * 1e3:.3f}"


def _loss(row: TargetSummary) -> str:
    return "\u2014" if row.loss is None else f"{100 * row.loss:.1f}%"


def _state(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#000")
    return f'<span class="state" style="color:{colour}">{html.escape(state)}</span>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1040px; color: #212121; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f5f5f5; }
tr.open td { background: #fdecea; }
.state { font-weight: bold; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def render(
    capture: Capture,
    *,
    source: str,
    pictures: Sequence[Picture],
    generated: float,
) -> str:
    """The page: what was read, a row per target, the outages (open ones first), the figures.

    ``source``: the input's name as the user gave it; ``generated``: Unix time of the report.
    """
    rows = [summarize(series) for series in capture.targets]
    end = capture.end
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>udpbeat report: {html.escape(source)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>udpbeat report: {html.escape(source)}</h1>",
        '<p class="meta">'
        + html.escape(
            f"{capture.kind}, {len(rows)} target{'s' if len(rows) != 1 else ''}, "
            f"from {clock(capture.start)} to {clock(end)}; written {clock(generated)}"
        )
        + "</p>",
        "<h2>Targets</h2>",
        "<table><thead><tr><th>target</th><th>state at the end</th><th>replies</th>"
        "<th>misses</th><th>loss</th><th>RTT min (ms)</th><th>p50</th><th>p99</th>"
        "<th>max</th><th>outages</th><th>down for</th></tr></thead><tbody>",
    ]
    for row in rows:
        out.append(
            f"<tr><td>{html.escape(row.name)}</td><td>{_state(row.state)}</td>"
            f"<td>{row.answered}</td><td>{row.missed}</td><td>{_loss(row)}</td>"
            f"<td>{_ms(row.rtt_min)}</td><td>{_ms(row.rtt_p50)}</td><td>{_ms(row.rtt_p99)}</td>"
            f"<td>{_ms(row.rtt_max)}</td><td>{row.outages}</td>"
            f"<td>{html.escape(duration(row.downtime))}</td></tr>"
        )
    out.append("</tbody></table>")
    out.append("<h2>Outages</h2>")
    outages = [
        (series.name, outage, series.end) for series in capture.targets for outage in series.outages
    ]
    # Open outages first, then the newest.
    outages.sort(key=lambda item: (item[1].end is not None, -item[1].start))
    if outages:
        out.append(
            "<table><thead><tr><th>target</th><th>start</th><th>end</th><th>lasted</th>"
            "<th>lost (heartbeats and probes)</th></tr></thead><tbody>"
        )
        for name, outage, until in outages:
            still = outage.end is None
            out.append(
                f'<tr class="{"open" if still else "closed"}"><td>{html.escape(name)}</td>'
                f"<td>{html.escape(clock(outage.start))}</td>"
                f"<td>{'still down' if still else html.escape(clock(outage.end))}</td>"
                f"<td>{'at least ' if still else ''}"
                f"{html.escape(duration(outage.duration(until)))}</td>"
                f"<td>{html.escape(_lost(outage))}</td></tr>"
            )
        out.append("</tbody></table>")
    else:
        out.append("<p>No outage: no target was held DOWN.</p>")
    for picture in pictures:
        encoded = base64.b64encode(picture.png).decode("ascii")
        out.append(
            f"<h2>{html.escape(picture.title)}</h2><figure>"
            f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(picture.title)}">'
            f"<figcaption>{html.escape(picture.caption)} "
            f'Files: <a href="{html.escape(picture.png_name)}">PNG</a>, '
            f'<a href="{html.escape(picture.svg_name)}">SVG</a>.</figcaption></figure>'
        )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _lost(outage: OutageSpan) -> str:
    """``56 (41 heartbeats, 15 probes)``, ``420``, or a dash when the input does not say."""
    if outage.lost is None:
        return "\u2014"
    if outage.heartbeats_lost is None or outage.probes_lost is None:
        return str(outage.lost)
    return f"{outage.lost} ({outage.heartbeats_lost} heartbeats, {outage.probes_lost} probes)"
