"""``/metrics``: every target's figures in the Prometheus text format, read at scrape time.

:class:`FleetCollector` is a prometheus_client collector that reads the fleet when it is
collected: no metric object is updated per heartbeat, so probing costs nothing extra between
scrapes. Every sample carries the label ``target`` (the target's name) and the target's own
labels; ``udpbeat_state`` adds ``state`` and the histogram ``le``.

prometheus_client's generic exposition formats each sample on its own (escaping and sorting
every label of every line): for ten thousand targets, about 290,000 lines, that takes seconds.
:func:`render` writes exactly the same bytes (a test holds it to prometheus_client's output, in
both formats) from label text worked out once per target, and stops every so many targets so
that the caller can let the event loop run (the monitor never stops probing for a scrape).

=====================================  =========  ==============================================
metric                                 type       meaning
=====================================  =========  ==============================================
``udpbeat_up``                         gauge      1 when the target is UP, else 0
``udpbeat_state``                      gauge      1 for the target's state, 0 for the others
``udpbeat_heartbeats_sent_total``      counter    heartbeats sent, confirmation probes included
``udpbeat_probes_sent_total``          counter    confirmation probes sent
``udpbeat_replies_total``              counter    replies within the timeout
``udpbeat_late_total``                 counter    replies after their heartbeat's timeout
``udpbeat_duplicates_total``           counter    extra copies of a reply
``udpbeat_refused_total``              counter    heartbeats refused (ICMP from the target)
``udpbeat_rtt_seconds``                histogram  round-trip times of the replies in time
``udpbeat_loss_ratio``                 gauge      the detector's current estimate of the loss
``udpbeat_state_changes_total``        counter    state changes
``udpbeat_outages_total``              counter    outages (DOWN verdicts)
``udpbeat_outage_seconds_total``       counter    seconds spent DOWN, the current outage included
=====================================  =========  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _float_to_go

from udpbeat.detector import State
from udpbeat.monitor.fleet import Fleet, Target

#: prometheus_client's number format (Go's), typed.
float_text = cast(Callable[[float], str], _float_to_go)
#: Targets rendered between two yields of :func:`render_chunks`.
CHUNK = 500
STATES = tuple(State)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its name as prometheus_client takes it, type and help text."""

    name: str
    kind: str
    help: str
    value: Callable[[Target, float], float | None] | None = None


def _counter(attribute: str) -> Callable[[Target, float], float | None]:
    def value(target: Target, now: float) -> float | None:
        return getattr(target.stats, attribute)  # type: ignore[no-any-return]

    return value


FAMILIES = (
    Family("udpbeat_up", "gauge", "1 when the target is UP, else 0."),
    Family("udpbeat_state", "gauge", "1 for the target's current state, 0 for the others."),
    Family(
        "udpbeat_heartbeats_sent",
        "counter",
        "Heartbeats sent, confirmation probes included.",
        _counter("sent"),
    ),
    Family("udpbeat_probes_sent", "counter", "Confirmation probes sent.", _counter("probes")),
    Family("udpbeat_replies", "counter", "Replies within the timeout.", _counter("received")),
    Family("udpbeat_late", "counter", "Replies after their heartbeat's timeout.", _counter("late")),
    Family("udpbeat_duplicates", "counter", "Extra copies of a reply.", _counter("duplicates")),
    Family(
        "udpbeat_refused",
        "counter",
        "Heartbeats refused by an ICMP error from the target.",
        _counter("refused"),
    ),
    Family(
        "udpbeat_rtt_seconds", "histogram", "Round-trip times of the replies within the timeout."
    ),
    Family(
        "udpbeat_loss_ratio",
        "gauge",
        "The detector's current estimate of the path's loss (0 to 1).",
        lambda target, now: target.loss_ratio(),
    ),
    Family("udpbeat_state_changes", "counter", "State changes.", _counter("state_changes")),
    Family("udpbeat_outages", "counter", "Outages: DOWN verdicts.", _counter("outages")),
    Family(
        "udpbeat_outage_seconds",
        "counter",
        "Seconds spent DOWN, the current outage included.",
        lambda target, now: target.stats.outage_total(now),
    ),
)


def _exposed(family: Family, openmetrics: bool) -> str:
    """The name HELP and TYPE lines give: a counter's carries ``_total`` in the text format."""
    if family.kind == "counter" and not openmetrics:
        return family.name + "_total"
    return family.name


def _sample_name(family: Family) -> str:
    return family.name + "_total" if family.kind == "counter" else family.name


# --- the prometheus_client collector -----------------------------------------------------------


class FleetCollector(Collector):
    """Reads ``fleet`` at collect time; ``clock()`` is the fleet's ``now`` (for outage time)."""

    def __init__(self, fleet: Fleet, clock: Callable[[], float]) -> None:
        self.fleet = fleet
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        now = self.clock()
        targets = list(self.fleet)
        bounds = [float_text(b) for b in self.fleet.bounds] + ["+Inf"]
        for family in FAMILIES:
            metric = Metric(family.name, family.help, family.kind)
            name = _sample_name(family)
            for target in targets:
                labels = {"target": target.name, **dict(target.config.labels)}
                state = target.state
                if family.name == "udpbeat_up":
                    metric.add_sample(name, labels, 1 if state is State.UP else 0)
                elif family.name == "udpbeat_state":
                    for each in STATES:
                        metric.add_sample(name, {**labels, "state": str(each)}, each is state)
                elif family.kind == "histogram":
                    stats = target.stats
                    total = 0
                    for bound, count in zip(bounds, stats.buckets, strict=True):
                        total += count
                        metric.add_sample(name + "_bucket", {**labels, "le": bound}, total)
                    metric.add_sample(name + "_count", labels, total)
                    metric.add_sample(name + "_sum", labels, stats.rtt_sum)
                else:
                    assert family.value is not None
                    value = family.value(target, now)
                    if value is not None:
                        metric.add_sample(name, labels, value)
            yield metric


# --- the same bytes, fast ----------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _LabelText:
    """A target's labels as exposition text, worked out once: alone, and with ``state`` or
    ``le`` in their sorted place."""

    __slots__ = ("config", "le_after", "le_before", "plain", "state_after", "state_before")

    def __init__(self, target: Target) -> None:
        self.config = target.config
        items = sorted({"target": target.name, **dict(target.config.labels)}.items())
        parts = [f'{key}="{_escape(value)}"' for key, value in items]
        self.plain = ",".join(parts)
        self.state_before, self.state_after = _around(items, parts, "state")
        self.le_before, self.le_after = _around(items, parts, "le")


def _around(items: Sequence[tuple[str, str]], parts: list[str], extra: str) -> tuple[str, str]:
    """The label text before and after where label ``extra`` sorts, commas included."""
    split = sum(1 for key, _ in items if key < extra)
    before = ",".join(parts[:split])
    after = ",".join(parts[split:])
    return (before + "," if before else ""), ("," + after if after else "")


def _number(value: float) -> str:
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"
    return float_text(value)


def render_chunks(
    fleet: Fleet, now: float, *, openmetrics: bool, chunk: int = CHUNK
) -> Iterator[str]:
    """The exposition of every target, in pieces of about ``chunk`` targets' lines.

    Exactly what ``FleetCollector`` gives through prometheus_client's ``generate_latest``
    (text format) or its OpenMetrics ``generate_latest`` (without the final ``# EOF``).
    """
    targets = list(fleet)
    texts = [_label_text(target) for target in targets]
    bounds = [float_text(b) for b in fleet.bounds] + ["+Inf"]
    for family in FAMILIES:
        exposed = _exposed(family, openmetrics)
        help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {exposed} {help_text}\n# TYPE {exposed} {family.kind}\n"]
        name = _sample_name(family)
        value_of = family.value
        for index, (target, label) in enumerate(zip(targets, texts, strict=True)):
            if index and index % chunk == 0:
                yield "".join(lines)
                lines = []
            if family.name == "udpbeat_up":
                up = "1.0" if target.state is State.UP else "0.0"
                lines.append(f"{name}{{{label.plain}}} {up}\n")
            elif family.name == "udpbeat_state":
                state = target.state
                before, after = label.state_before, label.state_after
                for each in STATES:
                    flag = "1.0" if each is state else "0.0"
                    lines.append(f'{name}{{{before}state="{each}"{after}}} {flag}\n')
            elif family.kind == "histogram":
                stats = target.stats
                before, after = label.le_before, label.le_after
                total = 0
                for bound, count in zip(bounds, stats.buckets, strict=True):
                    total += count
                    lines.append(f'{name}_bucket{{{before}le="{bound}"{after}}} {_number(total)}\n')
                lines.append(f"{name}_count{{{label.plain}}} {_number(total)}\n")
                lines.append(f"{name}_sum{{{label.plain}}} {_number(stats.rtt_sum)}\n")
            else:
                assert value_of is not None
                value = value_of(target, now)
                if value is not None:
                    lines.append(f"{name}{{{label.plain}}} {_number(value)}\n")
        yield "".join(lines)


def render(fleet: Fleet, now: float, *, openmetrics: bool) -> str:
    """:func:`render_chunks` in one string."""
    return "".join(render_chunks(fleet, now, openmetrics=openmetrics))


def _label_text(target: Target) -> _LabelText:
    cached = target.exposition
    if not isinstance(cached, _LabelText) or cached.config is not target.config:
        cached = target.exposition = _LabelText(target)
    return cached
