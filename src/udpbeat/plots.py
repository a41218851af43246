"""The plots of ``udpbeat report`` (and of the demo notebook), with matplotlib.

Each function takes plain typed data (:class:`~udpbeat.series.TargetSeries`) and returns a
:class:`matplotlib.figure.Figure` drawn on an Agg canvas of its own: no ``pyplot``, so no
global state (a notebook's backend is left as it was), no window, and nothing shared between
threads or calls. :func:`save` writes a figure as PNG and SVG; :func:`png_bytes` gives the PNG
for inlining (in Jupyter, ``IPython.display.Image(png_bytes(figure))``).

- :func:`rtt_over_time`: a panel per target, RTT against time with the detector's states as
  coloured bands behind it and each miss marked along the top.
- :func:`rtt_distribution`: the RTT's histogram and its CDF (empirical distribution), a line
  per target.
- :func:`outage_timeline`: a row per target, its states as coloured bars (DOWN in red).

Times are drawn in UTC. Many targets are summarised, never crammed: the busiest
(most downtime, then most misses) get the panels and rows, and the title says how many more
there are.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from udpbeat.series import STATES, TargetSeries, summarize

#: The colour of each state, as on the monitor's page; the legend says the word too.
STATE_COLOURS = {
    "UNKNOWN": "#9e9e9e",
    "UP": "#2e7d32",
    "SUSPECT": "#f9a825",
    "DOWN": "#c62828",
}
#: How strongly a state tints the RTT panel behind the points (UP is the usual: barely).
BAND_ALPHA = {"UNKNOWN": 0.10, "UP": 0.06, "SUSPECT": 0.25, "DOWN": 0.28}
MISS_COLOUR = "#b71c1c"
#: Most RTT panels in one figure, and most rows in the timeline.
MAX_PANELS = 8
MAX_ROWS = 40
WIDTH = 10.0  # inches; at DPI 100, a 1000-pixel-wide PNG
DPI = 100


def _new_figure(height: float) -> Figure:
    # Its own Agg canvas: matplotlib's global backend (a notebook's, say) is left alone.
    figure = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


# matplotlib.dates ships without type hints for these: hence the ignores below.


def _dates(times: Sequence[float]) -> list[float]:
    return [
        float(mdates.date2num(datetime.fromtimestamp(t, UTC)))  # type: ignore[no-untyped-call]
        for t in times
    ]


def _time_axis(axes: Axes) -> None:
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    concise = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(concise)


def busiest(targets: Sequence[TargetSeries], limit: int) -> list[TargetSeries]:
    """The targets in their order if there are at most ``limit``; else the ``limit`` with the
    most downtime, then the most misses, those first."""
    if len(targets) <= limit:
        return list(targets)
    order = {id(t): i for i, t in enumerate(targets)}

    def weight(series: TargetSeries) -> tuple[float, int, int]:
        row = summarize(series)
        return (-row.downtime, -row.missed, order[id(series)])

    return sorted(targets, key=weight)[:limit]


def _more(shown: int, total: int) -> str:
    return "" if shown == total else f" ({shown} of {total} targets, the busiest)"


def _state_spans(series: TargetSeries) -> Iterator[tuple[str, list[tuple[float, float]]]]:
    """Each state the target was in, with its spans as (start, width) in Matplotlib dates."""
    for state in STATES:
        spans = [s for s in series.states if s.state == state and s.end > s.start]
        if not spans:
            continue
        starts = _dates([s.start for s in spans])
        ends = _dates([s.end for s in spans])
        yield state, [(a, b - a) for a, b in zip(starts, ends, strict=True)]


def _bands(axes: Axes, series: TargetSeries) -> None:
    transform = axes.get_xaxis_transform()
    for state, spans in _state_spans(series):
        axes.broken_barh(
            spans,
            (0, 1),
            transform=transform,
            facecolors=STATE_COLOURS[state],
            alpha=BAND_ALPHA[state],
            linewidth=0,
            zorder=0,
        )


def rtt_over_time(targets: Sequence[TargetSeries]) -> Figure:
    """RTT in milliseconds against time, a panel per target: replies as dots (probes hollow),
    a history's minutes as a min-max band with the median line, misses as crosses along the
    top (refused: triangles), the detector's states as bands behind."""
    shown = busiest(targets, MAX_PANELS)
    figure = _new_figure(1.0 + 2.2 * max(1, len(shown)))
    axes_list = figure.subplots(max(1, len(shown)), 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle("RTT over time" + _more(len(shown), len(targets)))
    for axes, series in zip(axes_list, shown, strict=False):
        _bands(axes, series)
        heartbeats = [s for s in series.samples if not s.probe]
        probes = [s for s in series.samples if s.probe]
        if heartbeats:
            axes.plot(
                _dates([s.time for s in heartbeats]),
                [s.rtt * 1e3 for s in heartbeats],
                ".",
                color="#1565c0",
                markersize=4,
            )
        if probes:
            axes.plot(
                _dates([s.time for s in probes]),
                [s.rtt * 1e3 for s in probes],
                "o",
                markerfacecolor="none",
                color="#1565c0",
                markersize=4,
            )
        if any(b.median is not None for b in series.buckets):
            _bucket_band(axes, series)
        lossy = [b for b in series.buckets if b.lost]
        if lossy:
            # A period's misses as one mark, bigger for more.
            # At the middle of the part of the period in view (the first and last minutes of
            # a history are often partly before the monitor started, or still going).
            axes.scatter(
                _dates([(max(b.start, series.start) + min(b.end, series.end)) / 2 for b in lossy]),
                [0.95] * len(lossy),
                s=[min(80.0, 18.0 * b.lost) for b in lossy],
                marker="x",
                color=MISS_COLOUR,
                transform=axes.get_xaxis_transform(),
                zorder=3,
            )
        for refused, marker in ((False, "x"), (True, "v")):
            marks = [m for m in series.misses if m.refused == refused]
            if marks:
                axes.scatter(
                    _dates([m.time for m in marks]),
                    [0.95] * len(marks),
                    s=[min(80.0, 18.0 * m.count) for m in marks],
                    marker=marker,
                    color=MISS_COLOUR,
                    transform=axes.get_xaxis_transform(),
                    zorder=3,
                )
        axes.set_ylabel("RTT (ms)")
        highest = max(
            [s.rtt for s in series.samples] + [b.maximum or 0.0 for b in series.buckets],
            default=0.0,
        )
        # Head room above the highest RTT for the row of miss marks.
        axes.set_ylim(0, highest * 1e3 * 1.25 if highest > 0 else 1.0)
        axes.set_xlim(*_dates([series.start, max(series.end, series.start + 1e-3)]))
        axes.set_title(series.name, loc="left", fontsize="medium")
        axes.grid(True, alpha=0.3)
    if shown:
        low = min(t.start for t in shown)
        high = max(max(t.end for t in shown), low + 1e-3)
        axes_list[0].set_xlim(*_dates([low, high]))
    _time_axis(axes_list[-1])
    axes_list[-1].set_xlabel("time (UTC)")
    axes_list[0].legend(
        handles=_legend_handles(shown),
        loc="lower left",
        bbox_to_anchor=(0.0, 1.12),
        ncol=4,
        fontsize="small",
        frameon=False,
    )
    return figure


def _bucket_band(axes: Axes, series: TargetSeries) -> None:
    """Each period flat from its start to its end: the min-max band and the median line. A
    period without replies, or a gap between periods, is NaN: a break, never a bridge."""
    edges: list[float] = []
    lows: list[float] = []
    medians: list[float] = []
    highs: list[float] = []
    previous_end: float | None = None
    for bucket in series.buckets:
        if previous_end is not None and bucket.start > previous_end:
            edges.append(previous_end)
            lows.append(math.nan)
            medians.append(math.nan)
            highs.append(math.nan)
        edges.append(bucket.start)
        lows.append(_ms_or_nan(bucket.minimum))
        medians.append(_ms_or_nan(bucket.median))
        highs.append(_ms_or_nan(bucket.maximum))
        previous_end = bucket.end
    if previous_end is not None:
        # The last period's values once more at its end, for the step to reach it.
        edges.append(previous_end)
        lows.append(lows[-1])
        medians.append(medians[-1])
        highs.append(highs[-1])
    dates = _dates(edges)
    axes.fill_between(dates, lows, highs, step="post", color="#1565c0", alpha=0.25, linewidth=0)
    axes.step(dates, medians, where="post", color="#0d47a1")


def _ms_or_nan(seconds: float | None) -> float:
    return math.nan if seconds is None else seconds * 1e3


def _legend_handles(targets: Sequence[TargetSeries]) -> list[Line2D | Patch]:
    """What the panels show: replies or periods, misses, the states."""
    handles: list[Line2D | Patch] = []
    if any(t.samples for t in targets):
        handles += [
            Line2D([], [], marker=".", linestyle="none", color="#1565c0", label="reply"),
            Line2D(
                [],
                [],
                marker="o",
                linestyle="none",
                color="#1565c0",
                markerfacecolor="none",
                label="probe reply",
            ),
        ]
    if any(t.buckets for t in targets):
        handles += [
            Line2D([], [], color="#0d47a1", label="median (a minute)"),
            Patch(facecolor="#1565c0", alpha=0.25, label="min-max"),
        ]
    handles.append(Line2D([], [], marker="x", linestyle="none", color=MISS_COLOUR, label="miss"))
    if any(m.refused for t in targets for m in t.misses):
        handles.append(
            Line2D([], [], marker="v", linestyle="none", color=MISS_COLOUR, label="refused")
        )
    handles += [
        Patch(facecolor=STATE_COLOURS[state], alpha=max(0.3, BAND_ALPHA[state]), label=state)
        for state in STATES
    ]
    return handles


def _rtts_ms(series: TargetSeries) -> tuple[list[float], list[float]]:
    """A target's RTTs in ms with their weights: each reply, or each period's median weighted
    by its replies when only aggregates are known."""
    if series.samples:
        return [s.rtt * 1e3 for s in series.samples], [1.0] * len(series.samples)
    pairs = [(b.median, b.answered) for b in series.buckets if b.median is not None]
    return [m * 1e3 for m, _ in pairs], [float(w) for _, w in pairs]


def rtt_distribution(targets: Sequence[TargetSeries]) -> Figure:
    """The RTT's histogram (left) and CDF (right), a line per target; the CDF marks p50 and
    p99. From a history, the periods' medians stand for the replies (said in the title)."""
    shown = busiest([t for t in targets if t.has_rtt], MAX_PANELS)
    figure = _new_figure(4.2)
    histogram, cdf = figure.subplots(1, 2)
    aggregated = any(not t.samples for t in shown)
    figure.suptitle(
        "RTT distribution"
        + (" (from per-period medians)" if aggregated else "")
        + _more(len(shown), len([t for t in targets if t.has_rtt]))
    )
    every = [value for t in shown for value in _rtts_ms(t)[0]]
    if every:
        low, high = min(every), max(every)
        if high <= low:
            high = low + 1e-3
        bins = [low + (high - low) * i / 40 for i in range(41)]
        for series in shown:
            values, weights = _rtts_ms(series)
            histogram.hist(values, bins=bins, weights=weights, histtype="step", label=series.name)
            pairs = sorted(zip(values, weights, strict=True))
            total = sum(w for _, w in pairs)
            running = 0.0
            xs: list[float] = []
            ys: list[float] = []
            for value, weight in pairs:
                running += weight
                xs.append(value)
                ys.append(running / total)
            (line,) = cdf.step(xs, ys, where="post", label=series.name)
            for fraction in (0.5, 0.99):
                at = next(x for x, y in zip(xs, ys, strict=True) if y >= fraction)
                cdf.plot([at], [fraction], "o", color=line.get_color(), markersize=4)
        cdf.axhline(0.5, color="#757575", linewidth=0.6, linestyle=":")
        cdf.axhline(0.99, color="#757575", linewidth=0.6, linestyle=":")
        histogram.legend(fontsize="small")
    else:
        histogram.text(
            0.5, 0.5, "no RTTs in this input", ha="center", transform=histogram.transAxes
        )
    histogram.set_xlabel("RTT (ms)")
    histogram.set_ylabel("replies")
    histogram.grid(True, alpha=0.3)
    cdf.set_xlabel("RTT (ms)")
    cdf.set_ylabel("share of replies at or below")
    cdf.set_ylim(0, 1.02)
    cdf.grid(True, alpha=0.3)
    return figure


def outage_timeline(targets: Sequence[TargetSeries]) -> Figure:
    """A row per target, its states as bars: DOWN red, SUSPECT amber, UP green, UNKNOWN grey."""
    shown = busiest(targets, MAX_ROWS)
    figure = _new_figure(1.6 + 0.35 * max(1, len(shown)))
    axes = figure.subplots()
    figure.suptitle("Outage timeline" + _more(len(shown), len(targets)))
    for row, series in enumerate(shown):
        for state, spans in _state_spans(series):
            axes.broken_barh(spans, (row - 0.35, 0.7), facecolors=STATE_COLOURS[state], linewidth=0)
    axes.set_yticks(range(len(shown)), [t.name for t in shown])
    axes.set_ylim(len(shown) - 0.5, -0.5)
    if shown:
        low = min(t.start for t in shown)
        high = max(max(t.end for t in shown), low + 1e-3)
        axes.set_xlim(*_dates([low, high]))
    _time_axis(axes)
    axes.set_xlabel("time (UTC)")
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(
        handles=[Patch(facecolor=STATE_COLOURS[s], label=s) for s in STATES],
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=4,
        fontsize="small",
        frameon=False,
    )
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def svg_text(figure: Figure) -> str:
    """The figure as SVG (text as paths' glyphs, so it looks the same without the fonts)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def save(figure: Figure, directory: Path, stem: str) -> tuple[Path, Path]:
    """Write ``stem.png`` and ``stem.svg`` into ``directory``; their paths."""
    png = directory / f"{stem}.png"
    svg = directory / f"{stem}.svg"
    png.write_bytes(png_bytes(figure))
    svg.write_text(svg_text(figure), encoding="utf-8")
    return png, svg
