"""What people read: the client's lines and summary (``udpbeat.cli.format``), pure, on runs
driven on a virtual clock; and once through ``udpbeat client`` itself, with click's CliRunner.

Times shown to people are in milliseconds; heartbeats are numbered 1..N as asked, probes apart;
evidence reads in words; the JSON keeps the figures.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from helpers import Script, ScriptedServer
from hypothesis import given
from hypothesis import strategies as st

from udpbeat.cli import cli
from udpbeat.cli.format import (
    format_event,
    format_header,
    format_report,
    format_target,
    format_transition,
)
from udpbeat.detector import AdaptiveDetector, ConsecutiveDetector, State, Transition
from udpbeat.events import (
    HeartbeatOverdue,
    LateReply,
    SessionFinished,
    StateChanged,
    event_to_dict,
)
from udpbeat.report import Outage
from udpbeat.session import ProbeConfig
from udpbeat.testing import SessionDriver
from udpbeat.wire.text import decode_request

TARGET = "127.0.0.1:12000"


def lines_of(driver: SessionDriver, *, verbose: bool = False) -> list[str]:
    shown = (format_event(event, TARGET, verbose=verbose) for event in driver.log)
    return [line for line in shown if line is not None]


def adaptive(count: int | None = 10, **settings: object) -> SessionDriver:
    config = ProbeConfig(count=count, first_seq=1, detector="adaptive", **settings)  # type: ignore[arg-type]
    return SessionDriver(config, start=100.0, target=TARGET)


# --- units: milliseconds everywhere ------------------------------------------------------------


def test_reply_lines_and_the_summary_show_milliseconds_only() -> None:
    driver = adaptive(count=2, interval=1.0, timeout=1.0)
    driver.advance(100.0005723)
    driver.reply(1, time_difference=0.000332)
    driver.advance(101.0004)
    driver.reply(2, time_difference=0.000244)
    lines = lines_of(driver)
    assert lines[0] == f"Reply from {TARGET}: heartbeat 1 rtt=0.572 ms time diff=0.332 ms"
    assert lines[1] == "State UNKNOWN -> UP: reply from heartbeat 1 (rtt 0.572 ms)"
    summary = format_report(driver.session.report()).splitlines()
    assert "time difference min/avg/max = 0.244/0.288/0.332 ms" in summary
    assert summary[1] == "2 heartbeats sent, 2 received, 0.0% loss, time 1000 ms"
    # No bare seconds anywhere: every time carries "ms".
    for line in [*lines, *summary]:
        assert not re.search(r"\d\.\d{4,}(?! ms)", line), line
        assert not re.search(r"\d s\b", line), line


def test_json_times_are_rounded_to_the_nanosecond_and_at_is_unix_time() -> None:
    driver = adaptive(count=3, interval=0.1, timeout=1.0)
    for seq in (1, 2, 3):
        driver.advance(100.0 + (seq - 1) * 0.1 + 0.0003672149999829344)
        driver.reply(seq, time_difference=0.000123456789)
    objects = [event_to_dict(e) for e in driver.log]
    objects.append(driver.session.report().to_dict())

    def floats(value: object) -> list[float]:
        if isinstance(value, float):
            return [value]
        if isinstance(value, dict):
            return [f for v in value.values() for f in floats(v)]
        if isinstance(value, list):
            return [f for v in value for f in floats(v)]
        return []

    for obj in objects:
        for number in floats(obj):
            if number < 1e6:  # times and durations; Unix times have too few digits left
                assert len(repr(number).split(".")[-1]) <= 9 or "e" in repr(number), obj
        if obj["type"] != "summary":
            assert obj["at"] == pytest.approx(obj["monotonic"] + 1_764_000_000.0)  # type: ignore[operator]
    reply = next(o for o in objects if o["type"] == "reply")
    assert reply["rtt"] == 0.000367215
    summary = objects[-1]
    assert summary["transitions"][0]["at"] > 1e9  # type: ignore[index]


# --- the count is the count ----------------------------------------------------------------------


def test_probes_are_shown_as_probes_numbered_apart_and_the_count_stays_the_count() -> None:
    driver = adaptive(count=3, interval=1.0, timeout=1.0)
    driver.advance(100.001)
    driver.reply(1)
    driver.advance(101.001)
    driver.reply(2)
    driver.advance(102.2)  # heartbeat 3 unanswered: overdue, probes go
    for seq in sorted(s for s in driver.sent if s > 3):
        driver.reply(seq)
    driver.advance(102.5)
    driver.reply(3)
    driver.run()
    lines = lines_of(driver)
    assert any(re.fullmatch(rf"Reply from {TARGET}: probe 1 rtt=.*", line) for line in lines)
    assert not any("heartbeat 4" in line for line in lines)
    summary = format_report(driver.session.report()).splitlines()
    probes = driver.session.report().probes
    assert summary[1].startswith("3 heartbeats sent, 3 received, 0.0% loss, time ")
    assert summary[2] == f"{probes} confirmation probes sent, {probes} received, 0.0% loss"


def test_the_detectors_early_deadline_is_quiet_unless_verbose() -> None:
    driver = adaptive(count=3, interval=1.0, timeout=1.0)
    for seq in (1, 2):
        driver.advance(99.001 + seq)
        driver.reply(seq)
    driver.advance(102.3)
    driver.reply(3)  # after the detector's deadline (about 50 ms), within the 1 s timeout
    driver.run()
    assert driver.of_type(HeartbeatOverdue)
    quiet = lines_of(driver)
    assert not any("Heartbeat 3: request timed out" in line for line in quiet)
    assert not any("no reply after" in line for line in quiet)
    assert f"Reply from {TARGET}: heartbeat 3 rtt=300.000 ms time diff=0.500 ms" in quiet
    assert any(
        line.startswith("State SUSPECT -> UP: slow reply from heartbeat 3") for line in quiet
    )
    verbose = lines_of(driver, verbose=True)
    assert any(
        line.startswith("Heartbeat 3: no reply after 50.000 ms, the detector's deadline")
        for line in verbose
    )


# --- evidence in words ---------------------------------------------------------------------------


def test_a_first_miss_says_the_loss_estimate_was_assumed() -> None:
    driver = adaptive(count=5, interval=1.0, timeout=0.5)
    driver.advance(100.001)
    driver.reply(1)
    driver.advance(101.6)
    [suspect] = [e for e in driver.of_type(StateChanged) if e.transition.new is State.SUSPECT]
    line = format_transition(suspect)
    assert line == (
        "State UP -> SUSPECT: no reply to heartbeat 2 in time; "
        "estimated loss ≤ 60% (assumed: too little history, 0 lost of the last 1), "
        "≤ 90% right after a loss"  # the cold prior: no loss has followed a loss yet
    )
    assert "loss=" not in line and "probability" not in line
    data = event_to_dict(suspect)["evidence"]
    assert isinstance(data, dict)
    assert (data["loss"], data["history"], data["history_losses"]) == (0.6, 1, 0)
    assert data["assumed"] is True
    never = AdaptiveDetector()
    never.on_sent(1, 0.0, probe=False)
    first = never.on_miss(1, 1.0, "timeout")
    assert first is not None
    # Never answered: 60 % loss and the cold prior right after a loss, both assumed.
    assert format_transition(StateChanged(first, 1, 1, False)).endswith(
        "estimated loss ≤ 60% (no history yet: assumed), ≤ 90% right after a loss"
    )


def test_a_down_verdict_says_how_unlikely_the_silence_is_from_a_live_server() -> None:
    detector = AdaptiveDetector()
    for seq in range(1, 1001):
        detector.on_sent(seq, float(seq), probe=False)
        detector.on_reply(seq, 0.001, seq + 0.001)
    for seq in range(1001, 1100):
        detector.on_sent(seq, 2000.0, probe=True)
        detector.on_miss(seq, 2000.05, "timeout")
        verdict_at = detector.check_at()
        if verdict_at is not None:
            break
    # Enough misses: the verdict comes once they are the detector's patience old.
    assert verdict_at is not None
    transition = detector.check(verdict_at)
    assert transition is not None and transition.new is State.DOWN
    assert transition.evidence["seq"] == seq
    line = format_transition(StateChanged(transition, seq, seq - 1000, True))
    misses = transition.evidence["misses"]
    assert line.startswith(f"State SUSPECT -> DOWN: {misses} misses in a row, the last probe ")
    assert re.search(r"; chance from a live server \de-\d+; ", line), line
    assert "estimated loss ≤ 0.89% (0 lost of the last 1000), ≤ 60% right after a loss" in line
    assert transition.evidence["assumed"] is False


def test_refusals_and_consecutive_and_phi_evidence_read_in_words() -> None:
    refused = Transition(1.0, State.UP, State.SUSPECT, "refused", {"seq": 5, "misses": 1})
    assert format_transition(StateChanged(refused, 5, 5, False)) == (
        "State UP -> SUSPECT: heartbeat 5 refused (ICMP: nothing listens)"
    )
    evidence = {"seq": 7, "misses": 3, "cause": "timeout"}
    down = Transition(2.0, State.SUSPECT, State.DOWN, "3 consecutive misses", evidence)
    assert format_transition(StateChanged(down, 7, 7, False)) == (
        "State SUSPECT -> DOWN: 3 misses in a row, the last heartbeat 7"
    )
    phi = {"phi": 8.02, "silence": 2.35, "mean_interval": 1.0, "std_deviation": 0.1}
    suspect = Transition(3.0, State.UP, State.DOWN, "phi >= 8", phi)
    assert format_transition(StateChanged(suspect)) == (
        "State UP -> DOWN: phi >= 8 (phi 8.02 after 2350 ms of silence); "
        "replies came every 1000 ms ± 100 ms"
    )
    up = Transition(4.0, State.SUSPECT, State.UP, "reply", {"seq": 9, "rtt": 0.000758, "misses": 2})
    assert format_transition(StateChanged(up, 9, 2, True)) == (
        "State SUSPECT -> UP: reply from probe 2 (rtt 0.758 ms) after 2 misses"
    )


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "seq",
                "rtt",
                "misses",
                "refused",
                "loss",
                "burst_loss",
                "probability",
                "history",
                "history_losses",
                "phi",
                "silence",
                "mean_interval",
                "std_deviation",
                "cause",
            ]
        ),
        st.one_of(st.integers(0, 10**6), st.floats(0, 1e6, allow_nan=False), st.just("timeout")),
    ),
    st.sampled_from(list(State)),
    st.sampled_from(list(State)),
)
def test_any_evidence_formats_to_one_line(
    evidence: dict[str, object], old: State, new: State
) -> None:
    transition = Transition(1.0, old, new, "reason", evidence)  # type: ignore[arg-type]
    line = format_transition(StateChanged(transition, 3, 3, False))
    assert line.startswith(f"State {old} -> {new}: ") and "\n" not in line


# --- the summary ----------------------------------------------------------------------------------


def test_the_summary_ends_with_a_short_state_line_and_verbose_adds_the_parameters() -> None:
    driver = adaptive(count=1, interval=1.0, timeout=1.0)
    driver.advance(100.001)
    driver.reply(1)
    report = driver.session.report()
    assert format_report(report).splitlines()[-1] == "state: UP (detector adaptive)"
    verbose = format_report(report, verbose=True).splitlines()[-1]
    assert verbose.startswith("state: UP (detector adaptive: timeout 1.0, false_alarm 1e-09, ")


def test_the_summary_tells_the_paths_loss_from_the_misses_of_the_outage() -> None:
    config = ProbeConfig(count=None, interval=1.0, timeout=0.5, first_seq=1)
    driver = SessionDriver(config, detector=ConsecutiveDetector(3, 0.5), start=100.0)
    for seq in range(1, 11):
        driver.advance(99.0 + seq + 0.01)
        if seq not in (3, 7):
            driver.reply(seq)
    driver.run()
    text = format_report(driver.session.report(), 0.0)
    assert "13 heartbeats sent, 8 received, 38.5% loss, time " in text
    assert "loss while up 20.0% (2 of 10 heartbeats and probes), 3 lost during outages" in text
    assert re.search(r"outage 1: DOWN since [\d:.]+, still down, 3 heartbeats lost$", text, re.M)


def test_refused_heartbeats_are_lost_in_the_outage_and_never_answered_is_said() -> None:
    config = ProbeConfig(count=10, interval=1.0, timeout=0.5, first_seq=1)
    driver = SessionDriver(config, detector=ConsecutiveDetector(3, 0.5), start=100.0)
    for seq in (1, 2, 3):
        driver.advance(99.001 + seq)
        driver.refused(seq)
    lines = lines_of(driver)
    assert lines[-1] == "Nothing ever answered: the server is assumed to be down."
    text = format_report(driver.session.report())
    assert re.search(
        r"outage 1: DOWN since [\d:.]+, still down, 3 heartbeats lost \(all refused\)", text
    )
    finished = driver.of_type(SessionFinished)[-1]
    assert event_to_dict(finished)["received"] == 0


def test_a_stop_after_replies_is_still_a_stop() -> None:
    driver = SessionDriver(
        ProbeConfig(count=10, interval=1.0, timeout=0.5, first_seq=1),
        detector=ConsecutiveDetector(2, 0.5),
        start=100.0,
    )
    driver.advance(100.01)
    driver.reply(1)
    driver.run()
    assert lines_of(driver)[-1] == "Server is assumed to have stopped."


def test_late_replies_are_named_by_number_and_said_not_counted() -> None:
    driver = SessionDriver(
        ProbeConfig(count=2, interval=1.0, timeout=0.5, first_seq=1),
        detector=ConsecutiveDetector(3, 0.5),
        start=100.0,
    )
    driver.advance(100.7)
    driver.reply(1)
    [late] = driver.of_type(LateReply)
    assert format_event(late, TARGET) == (
        "Late reply for heartbeat 1 (rtt=700.000 ms, after its timeout): not counted"
    )


# --- naming the target once, as ping does ------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "target", "shown"),
    [
        ("localhost", "127.0.0.1:12000", "localhost (127.0.0.1) port 12000"),
        ("127.0.0.1", "127.0.0.1:12000", "127.0.0.1 port 12000"),
        ("", "127.0.0.1:12000", "127.0.0.1 port 12000"),
        ("localhost", "[::1]:12000", "localhost (::1) port 12000"),
        ("::1", "[::1]:9", "::1 port 9"),
        ("[::1]", "[::1]:9", "::1 port 9"),
        ("example", "test", "example"),
    ],
)
def test_format_target_names_host_and_address_once(host: str, target: str, shown: str) -> None:
    assert format_target(host, target) == shown


def test_format_header_says_what_is_probed_in_milliseconds() -> None:
    config = ProbeConfig(count=20, interval=0.2, timeout=1.0)
    assert format_header("localhost", "127.0.0.1:12000", config) == (
        "UDPBEAT localhost (127.0.0.1) port 12000: 20 heartbeats, interval 200 ms, timeout 1000 ms"
    )
    forever = ProbeConfig(count=None, interval=0.0, timeout=0.5, watch=True)
    assert format_header("::1", "[::1]:9", forever) == (
        "UDPBEAT ::1 port 9: heartbeats until stopped, each as soon as the last is answered or "
        "timed out, timeout 500 ms, watching (a DOWN verdict does not end the run)"
    )


def test_the_summary_names_the_target_as_the_header_does() -> None:
    driver = SessionDriver(ProbeConfig(count=1, first_seq=1), start=100.0, target=TARGET)
    driver.session.host = "localhost"
    driver.advance(100.001)
    driver.reply(1)
    report = driver.session.report()
    assert report.to_dict()["host"] == "localhost"
    assert format_report(report).splitlines()[0] == (
        "--- localhost (127.0.0.1) port 12000 udpbeat statistics ---"
    )


# --- through the command: a slow reply within the timeout is a reply ------------------------------


class EveryFifthSlow(ScriptedServer):
    """Answers every request; the reply to every 5th on the wire (probes included) 120 ms late."""

    def _answer(self, data: bytes, address: tuple[str, int]) -> None:
        if not self.requests:
            first = decode_request(data).seq
            self.script = Script(delay={first + k - 1: 0.12 for k in range(5, 500, 5)})
        super()._answer(data, address)


def test_client_counts_a_slow_reply_within_the_timeout_as_ping_does() -> None:
    with EveryFifthSlow() as server:
        result = CliRunner().invoke(
            cli,
            [
                "client",
                "127.0.0.1",
                "--port",
                str(server.port),
                *("-c", "10", "-i", "0.05", "-W", "1"),
            ],
        )
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert not any("timed out" in line or "Late reply" in line for line in lines), lines
    replies = [line for line in lines if " heartbeat " in line and line.startswith("Reply")]
    numbers = [int(re.search(r"heartbeat (\d+) ", line).group(1)) for line in replies]  # type: ignore[union-attr]
    assert sorted(numbers) == list(range(1, 11))
    assert any(line.startswith("10 heartbeats sent, 10 received, 0.0% loss") for line in lines)
    [spread] = [line for line in lines if line.startswith("rtt min/avg/max/mdev = ")]
    rtt_max = float(spread.split(" = ")[1].split("/")[2])
    assert rtt_max >= 120.0
    assert lines[-1] == "state: UP (detector adaptive)"


def test_client_json_carries_numbers_unix_times_and_the_new_summary_keys() -> None:
    with EveryFifthSlow() as server:
        result = CliRunner().invoke(
            cli,
            ["client", "127.0.0.1", "--port", str(server.port), "-c", "6", "-i", "0.05", "--json"],
        )
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.output.splitlines()]
    summary = objects[-1]
    sent = [o for o in objects if o["type"] == "sent"]
    assert [o["number"] for o in sent if not o["probe"]] == [1, 2, 3, 4, 5, 6]
    assert all(o["at"] > 1e9 and o["at"] == pytest.approx(o["wall_time"]) for o in sent)
    assert summary["heartbeats"]["sent"] == 6 and summary["heartbeats"]["loss_percent"] == 0.0
    assert summary["sent"] == 6 + summary["probes"]
    assert summary["loss_while_up_percent"] == 0.0 and summary["lost_in_outages"] == 0


def test_outage_lines_name_probes_and_refusals() -> None:
    outage = Outage(10.0, 12.5, 4, probes_lost=3, refused=2, start_time=0.0, end_time=2.5)
    from udpbeat.cli.format import _outage_line

    line = _outage_line(1, outage, 0.0)
    assert line.endswith("(2500 ms), 4 heartbeats and 3 probes lost (2 refused)")
