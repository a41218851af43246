"""Pure lines of the client's own: headers, one-line summaries, timestamps, target prefixes.

The session's events and the full summary are formatted by :mod:`.format`; these are the lines
only the client command adds around them (several targets at once, ``-D``, interim statistics).
"""

from __future__ import annotations

from udpbeat.cli.format import counted
from udpbeat.report import ProbeReport


def summary_line(report: ProbeReport) -> str:
    """One line per target: its state, its heartbeats and its RTT spread (fping's summary)."""
    heartbeats = report.heartbeats
    loss = heartbeats.loss
    line = (
        f"{report.target} : {report.state}, {counted(heartbeats.sent, 'heartbeat')} sent, "
        f"{heartbeats.received} received, " + ("n/a loss" if loss is None else f"{loss:.1%} loss")
    )
    if report.probes:
        line += f" ({counted(report.probes, 'confirmation probe')})"
    rtt = report.rtt
    if rtt.count and rtt.min is not None and rtt.avg is not None and rtt.max is not None:
        line += ", rtt min/avg/max = " + "/".join(
            f"{value * 1e3:.3f}" for value in (rtt.min, rtt.avg, rtt.max)
        )
        line += " ms"
    return line + f", time {report.duration * 1e3:.0f} ms"


def timestamp(wall_time: float) -> str:
    """``ping -D``'s prefix: ``[1733112345.123456] ``."""
    return f"[{wall_time:.6f}] "


def target_prefix(display: str) -> str:
    """The prefix of every live line when several targets are probed at once (fping's)."""
    return f"{display} : "
