"""Pure lines of the client's own: headers, one-line summaries, timestamps, target prefixes.

The session's events and the full summary are formatted by :mod:`.format`; these are the lines
only the client command adds around them (several targets at once, ``-D``, interim statistics).
"""

from __future__ import annotations

from udpbeat.report import ProbeReport
from udpbeat.session import ProbeConfig


def target_label(host: str, display: str) -> str:
    """``display`` (``host:port``), with the name it was given first when that is not it."""
    numeric = display.rpartition(":")[0].strip("[]")
    return display if host in (numeric, display) else f"{host} ({display})"


def header(label: str, config: ProbeConfig) -> str:
    """The first line of a run, as ping starts with ``PING host (address) ...``."""
    return (
        f"UDPBEAT {label}: {config.count or 'unlimited'} heartbeats, "
        f"interval {config.interval}s, timeout {config.timeout}s"
    )


def summary_line(report: ProbeReport) -> str:
    """One line per target: its state, its counts and its RTT spread (fping's summary)."""
    loss = report.loss
    line = (
        f"{report.target} : {report.state}, {report.sent} heartbeats sent "
        f"({report.probes} probes), {report.received} received, "
        + ("n/a loss" if loss is None else f"{loss:.1%} loss")
    )
    rtt = report.rtt
    if rtt.count and rtt.min is not None and rtt.avg is not None and rtt.max is not None:
        line += ", rtt min/avg/max = " + "/".join(
            f"{value * 1e3:.3f}" for value in (rtt.min, rtt.avg, rtt.max)
        )
        line += " ms"
    return line + f", time {report.duration:.1f}s"


def timestamp(wall_time: float) -> str:
    """``ping -D``'s prefix: ``[1733112345.123456] ``."""
    return f"[{wall_time:.6f}] "


def target_prefix(display: str) -> str:
    """The prefix of every live line when several targets are probed at once (fping's)."""
    return f"{display} : "
