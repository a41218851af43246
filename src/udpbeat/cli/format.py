"""Pure formatting: events, reports and counters as the lines people and programs read.

Nothing here writes or reads a clock of its own accord: every function returns strings, so the
output of every command is tested directly (``tests/test_cli_format.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

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
from udpbeat.report import Counts, OneWayReport, Outage, ProbeReport
from udpbeat.session import ProbeConfig
from udpbeat.stats import Summary


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
#
# Times shown to people are in milliseconds, everywhere: a measured time with three decimals
# (``0.572 ms``), a duration as a whole number (``time 19012 ms``), as ping shows them.


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def _whole_ms(seconds: float) -> str:
    return f"{round(seconds * 1e3)} ms"


def _setting_ms(seconds: float) -> str:
    """A configured time, as given but in milliseconds: ``200 ms``, ``1000 ms``, ``0.5 ms``."""
    return f"{seconds * 1e3:.6g} ms"


def _split_target(target: str) -> tuple[str, str] | None:
    """``("127.0.0.1", "12000")`` from ``127.0.0.1:12000`` (``[::1]:12000`` for IPv6)."""
    if target.startswith("[") and "]:" in target:
        address, _, port = target[1:].partition("]:")
        return address, port
    address, colon, port = target.rpartition(":")
    if not colon or not address or ":" in address or not port.isdigit():
        return None
    return address, port


def format_target(host: str, target: str) -> str:
    """The target as ping names it, once with both names: ``localhost (127.0.0.1) port 12000``;
    ``127.0.0.1 port 12000`` when the host was given as its address.

    ``host`` is the name asked for (may be ``""``), ``target`` the address probed, as
    :func:`udpbeat._net.display_address` shows it (``127.0.0.1:12000``, ``[::1]:12000``).
    """
    split = _split_target(target)
    if split is None:
        return host or target
    address, port = split
    if not host or host.strip("[]") == address:
        return f"{address} port {port}"
    return f"{host} ({address}) port {port}"


def format_header(host: str, target: str, config: ProbeConfig) -> str:
    """The client's first line, as ping's: what is probed, how many, how often, how long.

    ``host`` as asked, ``target`` the resolved address (``ProbeSession.target``), e.g.
    ``UDPBEAT localhost (127.0.0.1) port 12000: 20 heartbeats, interval 1000 ms, timeout
    1000 ms``.
    """
    count = "heartbeats until stopped" if config.count is None else f"{config.count} heartbeats"
    if config.count == 1:
        count = "1 heartbeat"
    interval = (
        "each as soon as the last is answered or timed out"
        if config.interval == 0
        else f"interval {_setting_ms(config.interval)}"
    )
    watch = ", watching (a DOWN verdict does not end the run)" if config.watch else ""
    protocol = "STAMP " if config.protocol == "stamp" else ""
    return (
        f"UDPBEAT {format_target(host, target)}: {protocol}{count}, {interval}, "
        f"timeout {_setting_ms(config.timeout)}{watch}"
    )


def _subject(probe: bool | None, number: int | None) -> str | None:
    """``heartbeat 3`` or ``probe 2``, as people count them (``None``: not known)."""
    if number is None:
        return None
    return f"{'probe' if probe else 'heartbeat'} {number}"


def _fraction(value: float) -> str:
    """A probability or loss rate as people read it: ``60%``, ``0.9%``, ``2e-10``."""
    if value >= 0.1:
        return f"{value:.0%}"
    if value >= 0.001:
        return f"{value * 100:.2g}%"
    return f"{value:.0e}".replace("e-0", "e-")


def _estimated_loss(evidence: Mapping[str, object]) -> str | None:
    """The adaptive detector's loss estimate, saying whether it was measured or assumed."""
    loss, burst = evidence.get("loss"), evidence.get("burst_loss")
    if not isinstance(loss, float | int):
        return None
    text = f"estimated loss ≤ {_fraction(float(loss))}"
    count, losses = evidence.get("history"), evidence.get("history_losses")
    measured = f"{losses} lost of the last {count}"
    if count == 0:
        text += " (no history yet: assumed)"
    elif evidence.get("assumed") is True:
        text += f" (assumed: too little history, {measured})"
    elif isinstance(count, int) and isinstance(losses, int):
        text += f" ({measured})"
    if isinstance(burst, float | int) and burst > loss + 0.005:
        text += f", ≤ {_fraction(float(burst))} right after a loss"
    return text


def _misses(evidence: Mapping[str, object]) -> str | None:
    misses, refused = evidence.get("misses"), evidence.get("refused")
    if not isinstance(misses, int):
        return None
    text = "1 miss" if misses == 1 else f"{misses} misses in a row"
    if isinstance(refused, int) and refused:
        text += " (all refused)" if refused == misses else f" ({refused} refused)"
    return text


def format_transition(change: StateChanged) -> str:
    """A change of state in words: what caused it, and the evidence in units people read.

    ``State UP -> SUSPECT: no reply to heartbeat 3 in time; estimated loss ≤ 60% (no history
    yet: assumed)``; the machine-readable figures are in the JSON event.
    """
    t = change.transition
    evidence = t.evidence
    subject = _subject(change.probe, change.number)
    reason = t.reason
    clauses: list[str] = []
    if t.new is State.UP:
        head = f"{reason} from {subject}" if subject else reason
        rtt = evidence.get("rtt")
        if isinstance(rtt, float | int):
            head += f" (rtt {_ms(rtt)} ms)"
        misses = evidence.get("misses")
        if isinstance(misses, int) and misses:
            head += " after 1 miss" if misses == 1 else f" after {misses} misses"
        clauses.append(head)
    elif "phi" in evidence:
        head = reason
        phi, silence = evidence.get("phi"), evidence.get("silence")
        if isinstance(phi, float | int) and isinstance(silence, float | int):
            head += f" (phi {phi:.2f} after {_whole_ms(silence)} of silence)"
        clauses.append(head)
        mean, spread = evidence.get("mean_interval"), evidence.get("std_deviation")
        if isinstance(mean, float | int) and isinstance(spread, float | int):
            clauses.append(f"replies came every {_whole_ms(mean)} ± {_whole_ms(spread)}")
    else:
        misses = _misses(evidence)
        if t.new is State.DOWN and misses is not None:
            head = misses + (f", the last {subject}" if subject else "")
        elif reason == "refused":
            head = f"{subject or 'a heartbeat'} refused (ICMP: nothing listens)"
        elif reason == "timeout":
            head = f"no reply to {subject} in time" if subject else "no reply in time"
        else:
            head = reason + (f" ({subject})" if subject else "")
        clauses.append(head)
        probability = evidence.get("probability")
        if t.new is State.DOWN and isinstance(probability, float | int):
            clauses.append(f"chance from a live server {_fraction(float(probability))}")
        estimate = _estimated_loss(evidence)
        if estimate is not None:
            clauses.append(estimate)
    return f"State {t.old} -> {t.new}: " + "; ".join(clauses)


def format_event(
    event: Event, target: str, first_seq: int = 1, *, verbose: bool = False
) -> str | None:
    """One human line for an event, or ``None`` for events shown only in JSON (or, with
    ``verbose``, the quiet ones too: the detector's own deadlines).

    Heartbeats and probes are named by their ``number``, each kind counted from 1; a reply for
    a heartbeat the session forgot is named by its wire number less ``first_seq``.
    """
    subject = _subject(getattr(event, "probe", False), getattr(event, "number", None))
    match event:
        case HeartbeatSent():
            return None
        case HeartbeatOverdue(waited=waited):
            if not verbose:
                return None
            return (
                f"{str(subject).capitalize()}: no reply after {_ms(waited)} ms, the detector's "
                "deadline (counted as a miss by the detector; still waiting for the timeout)"
            )
        case ReplyReceived(rtt=rtt, time_difference=diff):
            return f"Reply from {target}: {subject} rtt={_ms(rtt)} ms time diff={_ms(diff)} ms"
        case HeartbeatLost(reason="timeout"):
            return f"{str(subject).capitalize()}: request timed out"
        case HeartbeatLost():
            return f"{str(subject).capitalize()}: refused (ICMP: nothing listens on {target})"
        case LateReply(rtt=rtt, seq=seq):
            if subject is None:
                return (
                    f"Late reply for heartbeat number {seq - first_seq + 1} on the wire, "
                    "sent too long ago to be remembered: not counted"
                )
            return f"Late reply for {subject} (rtt={_ms(rtt)} ms, after its timeout): not counted"
        case DuplicateReply():
            return f"Duplicate reply for {subject}: not counted"
        case UnknownReply(seq=wire_seq):
            return f"Reply for sequence number {wire_seq}, which was never sent: ignored"
        case MalformedReply(reason=reason, detail=detail):
            return f"Malformed reply ({reason}): {detail}"
        case StateChanged():
            return format_transition(event)
        case SessionFinished(state=state, received=received):
            if received == 0:
                if state is State.DOWN:
                    return "Nothing ever answered: the server is assumed to be down."
                return "Nothing ever answered."
            if state is State.DOWN:
                return "Server is assumed to have stopped."
            return None
    return None


def _clock(unix_time: float) -> str:
    """Local time of day with milliseconds, e.g. ``14:03:07.250``."""
    milliseconds = int(unix_time * 1000) % 1000  # truncated, so it never shows a second early
    return time.strftime("%H:%M:%S", time.localtime(unix_time)) + f".{milliseconds:03d}"


def _counts(label: str, counts: Counts) -> str:
    loss = counts.loss
    text = f"{label}, {counts.received} received, " + (
        "n/a loss" if loss is None else f"{loss:.1%} loss"
    )
    if counts.refused:
        text += f", {counts.refused} refused"
    if counts.in_flight:
        text += f", {counts.in_flight} in flight"
    return text


def counted(count: int, noun: str) -> str:
    """``1 heartbeat``, ``2 heartbeats``: a summary says what a person would."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _outage_line(number: int, outage: Outage, wall_offset: float) -> str:
    start = _clock(outage.start + wall_offset if outage.start_time is None else outage.start_time)
    if outage.end is None or outage.duration is None:
        span = f"DOWN since {start}, still down"
    else:
        end = _clock(outage.end + wall_offset if outage.end_time is None else outage.end_time)
        span = f"DOWN {start} to {end} ({_whole_ms(outage.duration)})"
    heartbeats = (
        "1 heartbeat" if outage.heartbeats_lost == 1 else f"{outage.heartbeats_lost} heartbeats"
    )
    if outage.probes_lost:
        probes = "1 probe" if outage.probes_lost == 1 else f"{outage.probes_lost} probes"
        heartbeats += f" and {probes}"
    missed = outage.heartbeats_lost + outage.probes_lost
    refused = ""
    if outage.refused:
        refused = " (all refused)" if outage.refused == missed else f" ({outage.refused} refused)"
    return f"outage {number}: {span}, {heartbeats} lost{refused}"


def _spread(summary: Summary) -> str | None:
    if not summary.count:
        return None
    assert summary.min is not None and summary.avg is not None and summary.max is not None
    return "/".join(_ms(v) for v in (summary.min, summary.avg, summary.max))


def _lowest(samples: int) -> str:
    return "lowest-delay exchange" if samples == 1 else f"{samples} lowest-delay exchanges"


def _one_way_lines(one_way: OneWayReport) -> list[str]:
    """STAMP's figures: one-way delays, the reflector's time, the clocks' offset, loss by
    direction (``docs/stamp.md`` says how to read them)."""
    lines = []
    forward, backward = _spread(one_way.forward), _spread(one_way.backward)
    if forward is not None and backward is not None:
        lines.append(f"one-way forward min/avg/max = {forward} ms, backward = {backward} ms")
    reflector = _spread(one_way.reflector_time)
    if reflector is not None:
        lines.append(f"reflector time min/avg/max = {reflector} ms")
    round_trip = _spread(one_way.round_trip_delay)
    if round_trip is not None:
        lines.append(f"round-trip delay (RTT less reflector time) min/avg/max = {round_trip} ms")
    if one_way.clock_offset is not None:
        lines.append(
            f"clock offset (reflector minus this host) = {_ms(one_way.clock_offset)} ms, "
            f"from the {_lowest(one_way.offset_samples)}; one-way figures "
            "include it"
        )
    if one_way.forward_lost is not None and one_way.backward_lost is not None:
        lines.append(
            f"lost by direction (stateful reflector): {one_way.forward_lost} forward, "
            f"{one_way.backward_lost} backward"
        )
    elif not one_way.stateful and one_way.forward.count:
        lines.append("lost by direction: unknown (the reflector is stateless)")
    return lines


def format_report(
    report: ProbeReport, wall_offset: float | None = None, *, verbose: bool = False
) -> str:
    """The summary, as ping ends its run. Outages are shown as times of day: from the Unix times
    the session recorded, else ``wall_offset`` (Unix time minus the session's monotonic time;
    default: the report's, else read from the clocks now). ``verbose`` adds the detector's
    parameters to the last line."""
    regular, probes = report.heartbeats, report.confirmation
    if regular.sent + probes.sent != report.sent:  # a report built by hand, without the kinds
        regular = Counts(
            report.sent, report.received, report.lost, report.refused, report.in_flight
        )
        probes = Counts()
    lines = [
        f"--- {format_target(report.host, report.target)} udpbeat statistics ---",
        _counts(f"{counted(regular.sent, 'heartbeat')} sent", regular)
        + f", time {_whole_ms(report.duration)}",
    ]
    if probes.sent:
        lines.append(_counts(f"{counted(probes.sent, 'confirmation probe')} sent", probes))
    if report.outages:
        up = report.loss_while_up
        resolved = report.sent - report.in_flight - report.lost_in_outages
        missed = report.lost + report.refused - report.lost_in_outages
        lines.append(
            "loss while up "
            + ("n/a" if up is None else f"{up:.1%} ({missed} of {resolved} heartbeats and probes)")
            + f", {report.lost_in_outages} lost during outages"
        )
    if report.late or report.duplicates:
        lines.append(
            f"replies not counted: {report.late} late (after the timeout), "
            f"{report.duplicates} duplicates"
        )
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
        assert diff.min is not None and diff.avg is not None and diff.max is not None
        spread = "/".join(_ms(v) for v in (diff.min, diff.avg, diff.max))
        lines.append(f"time difference min/avg/max = {spread} ms")
    if report.one_way is not None:
        lines.extend(_one_way_lines(report.one_way))
    if report.socket_errors:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(report.socket_errors.items()))
        lines.append(f"socket errors: {errors}")
    if report.malformed or report.unknown:
        bad = ", ".join(f"{k} {v}" for k, v in sorted(report.malformed.items()))
        lines.append(f"ignored: {report.unknown} unknown, malformed: {bad or 0}")
    if wall_offset is None:
        wall_offset = report.wall_offset
    if wall_offset is None:
        wall_offset = time.time() - time.monotonic()
    for number, outage in enumerate(report.outages, 1):
        lines.append(_outage_line(number, outage, wall_offset))
    state = f"state: {report.state} (detector {report.detector.get('name')}"
    if verbose:
        params = ", ".join(f"{k} {v}" for k, v in report.detector.items() if k != "name")
        state += f": {params}"
    lines.append(state + ")")
    return "\n".join(lines)
