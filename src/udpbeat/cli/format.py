"""Pure formatting: events, reports and counters as the lines people and programs read.

Nothing here writes or reads a clock of its own accord: every function returns strings, so the
output of every command is tested directly (``tests/test_cli_format.py``).
"""

from __future__ import annotations

import json
import time

from udpbeat._net import display_address
from udpbeat.detector import State
from udpbeat.events import (
    DuplicateReply,
    Event,
    HeartbeatLost,
    HeartbeatOverdue,
    HeartbeatSent,
    LateReply,
    MalformedReply,
    ReplyReceived,
    SessionFinished,
    StateChanged,
    UnknownReply,
)
from udpbeat.reflector import Reflected, ReflectorConfig
from udpbeat.report import ProbeReport


def json_line(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(", ", ": "))


# --- server ----------------------------------------------------------------------------------

#: Records of datagrams refused; shown at most MALFORMED_LOG_PER_SECOND a second, on stderr.
REFUSED = {
    "malformed": "Ignored malformed datagram from {source}: {detail}",
    "rate-limited": "Rate-limited datagram from {source} ({detail} limit)",
    "denied": "Denied datagram from {source} ({detail})",
}


def format_record(record: Reflected, *, as_json: bool) -> str:
    """One line for a record of the reflector's log."""
    source = display_address(record.source)
    if as_json:
        return json_line(
            {"type": record.outcome, "at": record.at, "source": source, "detail": record.detail}
        )
    if record.outcome in REFUSED:
        return REFUSED[record.outcome].format(source=source, detail=record.detail)
    if record.outcome == "internal-error":
        return f"udpbeat: internal error, counted and survived ({record.detail}); still serving"
    if record.outcome == "replied":
        return f"Responded to {source} with {record.detail}"
    return f"Simulating packet loss for heartbeat {record.detail} from {source}"


def counters_line(summary: dict[str, object]) -> str:
    """``received`` and, in the order they add up to it, where every datagram went."""

    def by(total: str, parts: str) -> str:
        reasons = summary[parts]
        assert isinstance(reasons, dict)
        detail = ", ".join(f"{k} {v}" for k, v in reasons.items())
        return f"{summary[total]} {total.replace('_', '-')}" + (f" ({detail})" if detail else "")

    return (
        f"{summary['received']} received, {summary['replied']} replied, "
        f"{summary['dropped_loss']} dropped by simulated loss, "
        f"{by('rate_limited', 'rate_limited_by_scope')}, {by('malformed', 'malformed_by_reason')}, "
        f"{by('denied', 'denied_by_reason')}"
    )


def limits(config: ReflectorConfig) -> dict[str, object]:
    return {
        "max_size": config.max_size,
        "rate_limit": config.rate_limit,
        "burst": config.burst,
        "max_sources": config.max_sources,
        "global_rate_limit": config.global_rate_limit,
        "allow": list(config.allow),
        "allow_privileged_ports": config.allow_privileged_ports,
    }


def limits_text(config: ReflectorConfig) -> str:
    parts = [
        f"rate limit {config.rate_limit:g}/s per source, burst {config.burst}"
        if config.rate_limit
        else "no rate limit per source"
    ]
    if config.global_rate_limit:
        parts.append(f"{config.global_rate_limit:g}/s in all")
    if config.allow:
        parts.append("allow " + " ".join(config.allow))
    if config.allow_privileged_ports:
        parts.append("privileged source ports answered")
    return ", ".join(parts)


# --- client ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def format_event(
    event: Event, target: str, first_seq: int = 1, *, verbose: bool = False
) -> str | None:
    """One human line for an event, or ``None`` for events shown only in JSON (or, with
    ``verbose``, the quiet ones too: the detector's own deadlines).

    Heartbeats are numbered from 1: the wire's sequence number less the run's (random) first.
    """
    kind = "probe" if getattr(event, "probe", False) else "heartbeat"
    seq = getattr(event, "seq", first_seq) - first_seq + 1
    match event:
        case HeartbeatSent():
            return None
        case HeartbeatOverdue(waited=waited):
            if not verbose:
                return None
            return (
                f"{kind.capitalize()} {seq}: no reply after {_ms(waited)} ms, the detector's "
                "deadline (counted as a miss by the detector; still waiting for the timeout)"
            )
        case ReplyReceived(rtt=rtt, time_difference=diff):
            return f"Reply from {target}: {kind} {seq} rtt={_ms(rtt)} ms time diff={diff:.6f} s"
        case HeartbeatLost(reason="timeout"):
            return f"{kind.capitalize()} {seq}: request timed out"
        case HeartbeatLost():
            return f"{kind.capitalize()} {seq}: refused (ICMP: nothing listens on {target})"
        case LateReply(rtt=rtt):
            return f"Late reply for heartbeat {seq} (rtt={_ms(rtt)} ms, after its timeout)"
        case DuplicateReply():
            return f"Duplicate reply for heartbeat {seq}: not counted"
        case UnknownReply(seq=wire_seq):
            return f"Reply for sequence number {wire_seq}, which was never sent: ignored"
        case MalformedReply(reason=reason, detail=detail):
            return f"Malformed reply ({reason}): {detail}"
        case StateChanged(transition=t):
            evidence = ", ".join(
                f"{k}={_short(v - first_seq + 1 if k == 'seq' and isinstance(v, int) else v)}"
                for k, v in t.evidence.items()
            )
            return f"State {t.old} -> {t.new}: {t.reason}" + (f" ({evidence})" if evidence else "")
        case SessionFinished(state=state):
            if state is State.DOWN:
                return "Server is assumed to have stopped."
            return None
    return None


def _clock(unix_time: float) -> str:
    """Local time of day with milliseconds, e.g. ``14:03:07.250``."""
    milliseconds = int(unix_time * 1000) % 1000  # truncated, so it never shows a second early
    return time.strftime("%H:%M:%S", time.localtime(unix_time)) + f".{milliseconds:03d}"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_report(report: ProbeReport, wall_offset: float | None = None) -> str:
    """The summary, as ping ends its run. ``wall_offset`` is Unix time minus the session's
    monotonic time, to show outages as times of day (default: read from the clocks now)."""
    loss = report.loss
    lines = [
        f"--- {report.target} udpbeat statistics ---",
        f"{report.sent} heartbeats sent ({report.probes} probes), {report.received} received, "
        + ("n/a loss" if loss is None else f"{loss:.1%} loss")
        + f", {report.late} late, {report.duplicates} duplicates, {report.refused} refused"
        + (f", {report.in_flight} in flight" if report.in_flight else "")
        + f", time {report.duration:.1f}s",
    ]
    rtt = report.rtt
    if rtt.count:
        assert rtt.min is not None and rtt.avg is not None and rtt.max is not None
        assert rtt.mdev is not None and rtt.p50 is not None and rtt.p90 is not None
        assert rtt.p99 is not None
        spread = "/".join(_ms(v) for v in (rtt.min, rtt.avg, rtt.max, rtt.mdev))
        lines.append(f"rtt min/avg/max/mdev = {spread} ms")
        lines.append(f"rtt p50/p90/p99 = {_ms(rtt.p50)}/{_ms(rtt.p90)}/{_ms(rtt.p99)} ms")
    if report.jitter is not None:
        lines.append(f"jitter (RFC 3550) = {_ms(report.jitter)} ms")
    diff = report.time_difference
    if diff.count:
        lines.append(
            f"time difference min/avg/max = {diff.min:.6f}/{diff.avg:.6f}/{diff.max:.6f} s"
        )
    if report.socket_errors:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(report.socket_errors.items()))
        lines.append(f"socket errors: {errors}")
    if report.malformed or report.unknown:
        bad = ", ".join(f"{k} {v}" for k, v in sorted(report.malformed.items()))
        lines.append(f"ignored: {report.unknown} unknown, malformed: {bad or 0}")
    # Outage times are on the monotonic clock (the event loop's); shown as wall-clock times.
    if wall_offset is None:
        wall_offset = time.time() - time.monotonic()
    for number, outage in enumerate(report.outages, 1):
        start = _clock(outage.start + wall_offset)
        if outage.end is None:
            span = f"DOWN since {start}, still down"
        else:
            span = f"DOWN {start} to {_clock(outage.end + wall_offset)} ({outage.duration:.3f}s)"
        lines.append(f"outage {number}: {span}, {outage.heartbeats_lost} heartbeats lost")
    params = ", ".join(f"{k} {v}" for k, v in report.detector.items() if k != "name")
    lines.append(f"state: {report.state} (detector {report.detector.get('name')}: {params})")
    return "\n".join(lines)
