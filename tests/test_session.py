"""The prober's pure core on a fake clock: matching, timeouts, pacing, the verdict, the report."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpbeat import session as session_module
from udpbeat.detector import ConsecutiveDetector, Detector, MissReason, State, Transition
from udpbeat.errors import ConfigError
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
    event_to_dict,
)
from udpbeat.reflector import Reflector, ReflectorConfig
from udpbeat.report import Outage
from udpbeat.session import ProbeConfig
from udpbeat.testing import EPOCH, SessionDriver
from udpbeat.wire.text import (
    HeartbeatReply,
    encode_reply,
    format_reply,
    parse_request,
)

E = TypeVar("E")


class Driver(SessionDriver):
    """The public :class:`~udpbeat.testing.SessionDriver`, with this file's defaults: the
    consecutive detector and sequence numbers from 1, so tests can name heartbeats."""

    def __init__(
        self,
        *,
        count: int | None = 10,
        interval: float = 1.0,
        timeout: float = 1.0,
        max_misses: int = 3,
        watch: bool = False,
        detector: Detector | None = None,
        start: float = 100.0,
    ) -> None:
        config = ProbeConfig(
            count=count, interval=interval, timeout=timeout, watch=watch, first_seq=1
        )
        super().__init__(
            config,
            detector=detector or ConsecutiveDetector(max_misses=max_misses, timeout=timeout),
            start=start,
        )

    def answer_as_the_exercise_server(self, seq: int) -> None:
        """A reply built from the heartbeat's own bytes, as the exercise server would."""
        _, heartbeat = self.sent[seq]
        digits, sent_time = parse_request(f"Heartbeat {seq} {heartbeat.sent_time}".encode())
        self.datagram(format_reply(digits, (self.now + EPOCH) - sent_time))

    def sent_seqs(self) -> list[int]:
        return list(self.sent)

    def in_flight(self) -> int:
        return self.session.report(self.now).in_flight


def transitions(driver: Driver) -> list[tuple[State, State]]:
    return [(e.transition.old, e.transition.new) for e in driver.of_type(StateChanged)]


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"count": 0}, "count"),
        ({"count": -3}, "count"),
        ({"count": True}, "count"),
        ({"count": 2.5}, "count"),
        ({"interval": -1.0}, "interval"),
        ({"interval": math.nan}, "interval"),
        ({"interval": math.inf}, "interval"),
        ({"timeout": 0.0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"first_seq": -1}, "first sequence"),
        ({"first_seq": 2**63}, "first sequence"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ProbeConfig(**settings)  # type: ignore[arg-type]


# --- sending and matching --------------------------------------------------------------------


def test_heartbeats_carry_increasing_sequence_numbers_and_the_wall_clock() -> None:
    driver = Driver(count=3, interval=1.0, timeout=0.5)
    driver.advance(102.5)
    assert driver.sent_seqs() == [1, 2, 3]
    for seq, (sent_at, heartbeat) in driver.sent.items():
        assert sent_at == 100.0 + (seq - 1)
        assert heartbeat.sent_time == sent_at + EPOCH


def test_replies_are_matched_by_sequence_number_even_out_of_order() -> None:
    driver = Driver(count=3, interval=0.125, timeout=5.0)
    driver.advance(100.25)
    assert driver.sent_seqs() == [1, 2, 3]
    driver.advance(100.3)
    driver.reply(3, time_difference=0.003)
    driver.advance(100.5)
    driver.reply(1, time_difference=0.001)
    driver.advance(100.625)
    driver.reply(2, time_difference=0.002)
    replies = driver.of_type(ReplyReceived)
    assert [(r.seq, r.rtt, r.time_difference) for r in replies] == [
        (3, pytest.approx(0.05), 0.003),
        (1, pytest.approx(0.5), 0.001),
        (2, pytest.approx(0.5), 0.002),
    ]
    report = driver.session.report()
    assert (report.sent, report.received, report.lost, report.late) == (3, 3, 0, 0)
    assert report.rtt.max == pytest.approx(0.5)
    assert report.time_difference.min == 0.001
    assert driver.session.finished


def test_replies_in_the_exercise_servers_own_bytes_are_understood() -> None:
    driver = Driver(count=2, interval=0.0, timeout=1.0)
    driver.advance(100.01)
    driver.answer_as_the_exercise_server(1)
    driver.advance(100.03)
    driver.answer_as_the_exercise_server(2)
    replies = driver.of_type(ReplyReceived)
    assert [r.seq for r in replies] == [1, 2]
    assert replies[0].time_difference == pytest.approx(0.01, abs=1e-6)
    assert driver.session.finished


# --- late replies ----------------------------------------------------------------------------


def test_a_reply_after_its_timeout_is_late_and_never_answers_a_newer_heartbeat() -> None:
    driver = Driver(count=3, interval=0.0, timeout=1.0)
    driver.advance(101.2)  # heartbeat 1 timed out at 101.0; heartbeat 2 left then
    assert driver.sent_seqs() == [1, 2]
    driver.reply(1)
    assert driver.session.report().received == 0
    [late] = driver.of_type(LateReply)
    assert (late.seq, late.rtt) == (1, pytest.approx(1.2))
    assert driver.in_flight() == 1  # heartbeat 2 still waits for its own reply
    assert driver.sent_seqs() == [1, 2]  # and the late reply did not pace a new one
    driver.advance(101.3)
    driver.reply(2)
    report = driver.session.report()
    assert (report.received, report.late, report.lost) == (1, 1, 1)
    assert [r.seq for r in driver.of_type(ReplyReceived)] == [2]
    assert report.rtt.count == 1  # the late RTT stays out of the statistics
    assert report.rtt.max == pytest.approx(0.3)


def test_a_reply_after_its_deadline_is_late_even_before_the_timer_fired() -> None:
    # A busy shell may read the datagram before it runs the timer that was due first.
    driver = Driver(count=3, interval=1.0, timeout=0.5)
    session = driver.session
    session.receive_datagram(encode_reply(HeartbeatReply(1, 0.001)), 100.7)
    events = list(session.events())
    assert not any(isinstance(e, ReplyReceived) for e in events)
    assert [e.seq for e in events if isinstance(e, HeartbeatLost)] == [1]
    assert [e.seq for e in events if isinstance(e, LateReply)] == [1]
    report = session.report(100.7)
    assert (report.received, report.lost, report.late) == (0, 1, 1)


def test_a_reply_exactly_at_the_deadline_is_late() -> None:
    driver = Driver(count=2, interval=1.0, timeout=0.5)
    driver.advance(100.5)
    driver.reply(1)
    report = driver.session.report()
    assert (report.received, report.lost, report.late) == (0, 1, 1)


def test_a_late_reply_does_not_save_the_server_from_down() -> None:
    driver = Driver(count=10, interval=0.0, timeout=1.0, max_misses=2)
    driver.advance(101.5)
    driver.reply(1)  # late
    driver.run()
    assert driver.session.finished
    assert driver.session.state is State.DOWN
    assert driver.session.report().late == 1


def test_a_reply_for_a_heartbeat_whose_fate_was_forgotten_is_late_not_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session_module, "REMEMBERED_SEQUENCES", 2)
    driver = Driver(count=None, interval=0.0, timeout=1.0, max_misses=100)
    driver.advance(104.5)  # 1..4 timed out, only 3 and 4 are remembered; 5 is in flight
    driver.reply(1)
    [late] = driver.of_type(LateReply)
    assert late.seq == 1
    assert math.isnan(late.rtt)
    assert event_to_dict(late)["rtt"] is None
    assert driver.session.report().unknown == 0


# --- duplicates, unknown and malformed replies ------------------------------------------------


def test_duplicates_are_counted_once_and_never_as_received() -> None:
    driver = Driver(count=2, interval=1.0, timeout=0.5)
    driver.advance(100.1)
    driver.reply(1)
    driver.reply(1)
    driver.reply(1)
    report = driver.session.report()
    assert (report.received, report.duplicates) == (1, 2)
    assert report.rtt.count == 1
    assert [e.seq for e in driver.of_type(DuplicateReply)] == [1, 1]


def test_a_duplicated_late_reply_is_late_once_then_a_duplicate() -> None:
    driver = Driver(count=3, interval=1.0, timeout=0.5, max_misses=5)
    driver.advance(100.8)
    driver.reply(1)
    driver.reply(1)
    report = driver.session.report()
    assert (report.received, report.late, report.duplicates) == (0, 1, 1)


def test_unknown_sequence_numbers_are_counted_apart() -> None:
    driver = Driver(count=2, interval=1.0, timeout=0.5)
    driver.advance(100.1)
    driver.reply(0)  # below the first sequence number
    driver.reply(2)  # not sent yet
    driver.reply(2**63 - 1)
    report = driver.session.report()
    assert (report.unknown, report.received, report.late, report.duplicates) == (3, 0, 0, 0)
    assert [e.seq for e in driver.of_type(UnknownReply)] == [0, 2, 2**63 - 1]
    driver.reply(1)  # the real one still counts
    assert driver.session.report().received == 1


def test_malformed_replies_are_counted_by_reason_and_change_nothing_else() -> None:
    driver = Driver(count=2, interval=1.0, timeout=0.5)
    driver.advance(100.1)
    for data in (
        b"\xff\xfe",
        b"Pong 1",
        b"Seq: 1, Time Difference: 0.000100 secs",
        b"Seq: 1",
        b"Seq: one, Time Difference: 0.000100 seconds",
        b"Seq: 1, Time Difference: nan seconds",
        b"Seq: 1, Time Difference: 0.1 seconds",
        b"S" * 500,
    ):
        driver.datagram(data)
    report = driver.session.report()
    assert report.malformed == {
        "not-text": 1,
        "bad-keyword": 1,
        "missing-field": 2,
        "bad-sequence": 1,
        "bad-timestamp": 2,
        "oversize": 1,
    }
    assert (report.received, report.unknown, report.late) == (0, 0, 0)
    malformed = driver.of_type(MalformedReply)
    assert len(malformed) == 8
    assert all(e.detail for e in malformed)
    assert malformed[-1].size == 500
    assert driver.in_flight() == 1
    driver.reply(1)
    assert driver.session.report().received == 1


# --- refused (ICMP errors) -------------------------------------------------------------------


def test_refused_is_counted_and_is_a_miss_for_the_detector() -> None:
    driver = Driver(count=10, interval=1.0, timeout=0.5, max_misses=3)
    driver.advance(100.1)
    driver.reply(1)
    driver.advance(101.01)
    driver.refused()
    [lost] = driver.of_type(HeartbeatLost)
    assert (lost.seq, lost.reason) == (2, "refused")
    assert driver.session.state is State.SUSPECT
    assert driver.of_type(StateChanged)[-1].transition.evidence["cause"] == "refused"
    driver.advance(102.01)
    driver.refused()
    driver.advance(103.01)
    driver.refused()
    assert driver.session.state is State.DOWN
    assert driver.session.finished
    report = driver.session.report()
    assert (report.refused, report.lost, report.received, report.in_flight) == (3, 0, 1, 0)
    assert report.loss == pytest.approx(0.75)  # refused heartbeats got no reply either


def test_refused_paces_the_next_heartbeat_when_interval_is_zero() -> None:
    driver = Driver(count=3, interval=0.0, timeout=1.0)
    driver.advance(100.01)
    driver.refused()
    assert driver.sent_seqs() == [1, 2]
    assert driver.sent[2][0] == 100.01


def test_refused_with_nothing_in_flight_is_counted_but_blames_no_heartbeat() -> None:
    driver = Driver(count=2, interval=1.0, timeout=0.5)
    driver.advance(100.1)
    driver.reply(1)
    driver.refused()
    report = driver.session.report()
    assert report.refused == 0  # a refusal naming no waiting heartbeat is stale
    assert report.socket_errors == {"refused-stale": 1}
    assert driver.of_type(HeartbeatLost) == []
    assert driver.session.state is State.UP


def test_a_reply_after_a_refusal_is_late() -> None:
    driver = Driver(count=3, interval=1.0, timeout=0.5)
    driver.advance(100.1)
    driver.refused()
    driver.reply(1)
    report = driver.session.report()
    assert (report.refused, report.late, report.received) == (1, 1, 0)


# --- pacing ----------------------------------------------------------------------------------


def test_interval_zero_sends_the_next_only_when_the_previous_is_resolved() -> None:
    driver = Driver(count=4, interval=0.0, timeout=1.0, max_misses=5)
    driver.advance(100.5)
    assert driver.sent_seqs() == [1]  # one at a time
    assert driver.in_flight() == 1
    driver.reply(1)
    assert driver.sent_seqs() == [1, 2]
    assert driver.sent[2][0] == 100.5  # as soon as the reply came
    driver.advance(101.49)
    assert driver.sent_seqs() == [1, 2]
    driver.advance(101.6)  # heartbeat 2 timed out at 101.5
    assert driver.sent_seqs() == [1, 2, 3]
    assert driver.sent[3][0] == 101.5  # as soon as the timeout
    driver.advance(101.7)
    driver.reply(3)
    driver.advance(101.8)
    driver.reply(4)
    assert driver.session.finished
    assert driver.sent_seqs() == [1, 2, 3, 4]


def test_interval_keeps_a_fixed_schedule_with_several_in_flight() -> None:
    driver = Driver(count=5, interval=0.25, timeout=2.0)
    driver.advance(100.8)
    assert [driver.sent[seq][0] for seq in driver.sent] == [100.0, 100.25, 100.5, 100.75]
    assert driver.in_flight() == 4
    driver.reply(2)  # a reply does not move the schedule
    driver.advance(101.0)
    assert driver.sent[5][0] == 101.0
    assert len(driver.sent) == 5
    driver.advance(105.0)
    assert driver.sent_seqs() == [1, 2, 3, 4, 5]  # no more than count


def test_timer_is_the_earliest_of_next_send_and_next_deadline() -> None:
    driver = Driver(count=3, interval=1.0, timeout=0.3)
    assert driver.session.get_timer() == pytest.approx(100.3)  # heartbeat 1's deadline
    driver.advance(100.3)
    assert driver.session.get_timer() == pytest.approx(101.0)  # heartbeat 2's send


# --- finishing -------------------------------------------------------------------------------


def test_finishes_after_count_once_the_last_heartbeat_is_answered() -> None:
    driver = Driver(count=2, interval=1.0, timeout=0.5)
    driver.advance(100.1)
    driver.reply(1)
    driver.advance(101.2)
    assert not driver.session.finished
    driver.session.receive_datagram(encode_reply(HeartbeatReply(2, 0.0)), 101.2)
    # Without waiting for a timer: the shell may have nothing left to arm.
    assert driver.session.finished
    assert driver.session.get_timer() is None
    [finished] = [e for e in driver.session.events() if isinstance(e, SessionFinished)]
    assert (finished.at, finished.state) == (101.2, State.UP)
    report = driver.session.report()
    assert report.duration == pytest.approx(1.2)
    assert (report.sent, report.received, report.loss) == (2, 2, 0.0)


def test_finishes_after_count_when_the_last_heartbeat_times_out() -> None:
    driver = Driver(count=2, interval=1.0, timeout=0.5, max_misses=3)
    driver.run()
    assert driver.session.finished
    [finished] = driver.of_type(SessionFinished)
    assert finished.at == pytest.approx(101.5)
    assert driver.session.state is State.SUSPECT
    driver.advance(200.0)
    assert driver.sent_seqs() == [1, 2]


def test_a_finished_session_ignores_everything() -> None:
    driver = Driver(count=1, interval=1.0, timeout=0.5)
    driver.advance(100.1)
    driver.reply(1)
    assert driver.session.finished
    before = driver.session.report()
    driver.reply(1)
    driver.datagram(b"junk")
    driver.refused()
    driver.advance(200.0)
    assert driver.session.report() == before
    assert sum(isinstance(e, SessionFinished) for e in driver.log) == 1


# --- the verdict -----------------------------------------------------------------------------


def test_down_ends_the_run() -> None:
    driver = Driver(count=100, interval=0.0, timeout=1.0, max_misses=3)
    driver.advance(100.2)
    driver.reply(1)
    driver.run()
    assert driver.session.finished
    assert driver.session.state is State.DOWN
    assert driver.sent_seqs() == [1, 2, 3, 4]
    assert transitions(driver) == [
        (State.UNKNOWN, State.UP),
        (State.UP, State.SUSPECT),
        (State.SUSPECT, State.DOWN),
    ]
    [finished] = driver.of_type(SessionFinished)
    assert finished.at == pytest.approx(103.2)
    report = driver.session.report()
    assert report.state is State.DOWN
    assert (report.lost, report.in_flight) == (3, 0)
    # The three misses that led to the verdict belong to the outage.
    assert [o.to_dict() for o in report.outages] == [
        {
            "start": pytest.approx(103.2 + EPOCH),
            "end": None,
            "duration_s": None,
            "heartbeats_lost": 3,
            "probes_lost": 0,
            "refused": 0,
            "start_monotonic": pytest.approx(103.2),
            "end_monotonic": None,
        }
    ]
    assert report.lost_in_outages == 3
    assert report.loss_while_up == 0.0  # heartbeat 1 was answered: the path lost nothing


def test_watch_mode_keeps_going_and_records_outages() -> None:
    driver = Driver(count=None, interval=1.0, timeout=0.5, max_misses=2, watch=True)
    driver.advance(100.1)
    driver.reply(1)  # UP
    driver.advance(104.9)  # 2..5 lost: DOWN at 102.5 (3 lost), then 4 and 5 lost while DOWN
    assert driver.session.state is State.DOWN
    assert not driver.session.finished
    driver.advance(105.1)
    driver.reply(6)  # UP again
    driver.advance(106.5)  # 7 lost: SUSPECT
    driver.advance(107.5)  # 8 lost: DOWN at 107.5
    driver.advance(109.4)  # 9 lost while DOWN; 10 in flight
    assert driver.session.state is State.DOWN
    report = driver.session.report(109.4)
    # Each outage owns the misses that led to it (2 and 3; 7 and 8) and those while DOWN.
    assert report.outages == (
        Outage(102.5, 105.1, heartbeats_lost=4, start_time=102.5 + EPOCH, end_time=105.1 + EPOCH),
        Outage(107.5, None, heartbeats_lost=3, start_time=107.5 + EPOCH),
    )
    assert report.lost_in_outages == report.lost == 7
    assert report.loss_while_up == 0.0
    assert report.outages[0].duration == pytest.approx(2.6)
    assert transitions(driver) == [
        (State.UNKNOWN, State.UP),
        (State.UP, State.SUSPECT),
        (State.SUSPECT, State.DOWN),
        (State.DOWN, State.UP),
        (State.UP, State.SUSPECT),
        (State.SUSPECT, State.DOWN),
    ]
    assert (report.sent, report.received, report.lost, report.in_flight) == (10, 2, 7, 1)


def test_stop_mid_run_leaves_in_flight_heartbeats_out_of_the_loss() -> None:
    driver = Driver(count=10, interval=0.125, timeout=1.0)
    driver.advance(100.05)
    driver.reply(1)
    driver.advance(100.3)  # 2 and 3 in flight
    driver.session.stop(100.3)
    driver.step()
    assert driver.session.finished
    report = driver.session.report()
    assert (report.sent, report.received, report.lost, report.in_flight) == (3, 1, 0, 2)
    assert report.loss == 0.0
    assert report.duration == pytest.approx(0.3)
    assert report.to_dict()["loss_percent"] == 0.0
    assert driver.of_type(SessionFinished)[-1].at == 100.3
    driver.advance(110.0)
    assert driver.sent_seqs() == [1, 2, 3]


def test_stop_before_anything_resolved_has_no_loss_figure() -> None:
    driver = Driver(count=10, interval=1.0, timeout=1.0)
    driver.session.stop(100.0)
    report = driver.session.report()
    assert (report.sent, report.in_flight) == (1, 1)
    assert report.loss is None
    summary = report.to_dict()
    assert summary["loss_percent"] is None
    assert summary["rtt_ms"] == {
        "count": 0,
        "min": None,
        "avg": None,
        "max": None,
        "mdev": None,
        "p50": None,
        "p90": None,
        "p99": None,
    }
    assert summary["jitter_ms"] is None


# --- the report ------------------------------------------------------------------------------

SUMMARY_KEYS = [
    "type",
    "target",
    "sent",
    "probes",
    "received",
    "lost",
    "refused",
    "late",
    "duplicates",
    "unknown",
    "malformed",
    "in_flight",
    "loss_percent",
    "rtt_ms",
    "jitter_ms",
    "time_difference_ms",
    "state",
    "detector",
    "transitions",
    "outages",
    "duration_s",
    "socket_errors",
    "first_seq",
    "host",
    "heartbeats",
    "confirmation_probes",
    "loss_while_up_percent",
    "lost_in_outages",
    "receive_timestamps",
    "send_timestamps",
]


def mixed_run() -> Driver:
    """A run with a bit of everything: replies, a loss, a late and a duplicate reply."""
    driver = Driver(count=4, interval=1.0, timeout=0.5, max_misses=3)
    driver.advance(100.010)
    driver.reply(1, time_difference=0.004)
    driver.advance(101.030)
    driver.reply(2, time_difference=0.006)
    driver.reply(2)
    driver.advance(102.7)  # 3 lost at 102.5
    driver.reply(3)  # late
    driver.advance(103.020)
    driver.reply(4, time_difference=0.005)
    driver.datagram(b"junk")
    return driver


def test_report_to_dict_has_stable_keys_and_milliseconds() -> None:
    driver = mixed_run()
    assert driver.session.finished
    summary = driver.session.report().to_dict()
    assert list(summary) == SUMMARY_KEYS
    assert summary["type"] == "summary"
    assert summary["target"] == "test"
    assert (summary["sent"], summary["received"], summary["lost"]) == (4, 3, 1)
    assert (summary["late"], summary["duplicates"], summary["unknown"]) == (1, 1, 0)
    assert summary["malformed"] == {}  # the junk came after the end
    assert summary["loss_percent"] == 25.0
    rtt = summary["rtt_ms"]
    assert isinstance(rtt, dict)
    assert list(rtt) == ["count", "min", "avg", "max", "mdev", "p50", "p90", "p99"]
    assert rtt["count"] == 3
    assert rtt["min"] == pytest.approx(10.0)
    assert rtt["max"] == pytest.approx(30.0)
    assert rtt["avg"] == pytest.approx(20.0)
    assert rtt["p50"] == pytest.approx(20.0)
    # RTTs 10, 30, 20 ms in arrival order: J = (20/16), then += (10 - J)/16.
    first = 20.0 / 16
    assert summary["jitter_ms"] == pytest.approx(first + (10.0 - first) / 16)
    difference = summary["time_difference_ms"]
    assert isinstance(difference, dict)
    assert (difference["min"], difference["max"]) == (pytest.approx(4.0), pytest.approx(6.0))
    assert summary["state"] == "UP"
    assert summary["detector"] == {"name": "consecutive", "timeout": 0.5, "max_misses": 3}
    assert summary["duration_s"] == pytest.approx(3.02)
    assert (summary["socket_errors"], summary["first_seq"]) == ({}, 1)
    json.dumps(summary, allow_nan=False)


def test_report_counts_malformed_replies_while_running() -> None:
    driver = Driver(count=2, interval=1.0, timeout=0.5)
    driver.datagram(b"junk")
    assert driver.session.report().to_dict()["malformed"] == {"bad-keyword": 1}


# --- events ----------------------------------------------------------------------------------


def every_event_type() -> Iterable[Event]:
    driver = Driver(count=None, interval=1.0, timeout=0.5, max_misses=2, watch=True)
    driver.advance(100.1)
    driver.reply(1)
    driver.reply(1)
    driver.reply(999)
    driver.datagram(b"\xff")
    driver.advance(101.7)
    driver.reply(2)
    driver.advance(102.01)
    driver.refused()
    driver.session.stop(102.5)
    driver.step()
    return driver.log


def test_event_to_dict_of_every_event_type_is_json() -> None:
    events = list(every_event_type())
    kinds = {type(event) for event in events}
    assert kinds == {
        HeartbeatSent,
        ReplyReceived,
        LateReply,
        DuplicateReply,
        UnknownReply,
        MalformedReply,
        HeartbeatLost,
        StateChanged,
        SessionFinished,
    }
    types = set()
    for event in events:
        as_dict = event_to_dict(event)
        types.add(as_dict["type"])
        line = json.dumps(as_dict, allow_nan=False)
        assert json.loads(line) == as_dict
    assert types == {
        "sent",
        "reply",
        "late",
        "duplicate",
        "unknown",
        "malformed",
        "lost",
        "state",
        "finished",
    }


def test_event_dicts_carry_their_fields() -> None:
    events = list(every_event_type())
    by_type = {}
    for event in events:
        by_type.setdefault(event_to_dict(event)["type"], event_to_dict(event))
    # ``at`` is Unix time, as in the server's records; ``monotonic`` the session's clock.
    assert by_type["sent"] == {
        "type": "sent",
        "seq": 1,
        "wall_time": 100.0 + EPOCH,
        "probe": False,
        "number": 1,
        "at": 100.0 + EPOCH,
        "monotonic": 100.0,
    }
    assert by_type["reply"]["seq"] == 1
    assert by_type["reply"]["rtt"] == 0.1  # rounded to the nanosecond: no 0.09999999999990905
    assert by_type["reply"]["time_difference"] == 0.0005
    assert by_type["lost"] == {
        "type": "lost",
        "seq": 2,
        "reason": "timeout",
        "probe": False,
        "number": 2,
        "at": 101.5 + EPOCH,
        "monotonic": 101.5,
    }
    assert by_type["late"]["rtt"] == 0.7
    assert by_type["malformed"]["reason"] == "not-text"
    assert by_type["state"] == {
        "type": "state",
        "old": "UNKNOWN",
        "new": "UP",
        "reason": "reply",
        "evidence": {"seq": 1, "rtt": 0.1},
        "seq": 1,
        "number": 1,
        "probe": False,
        "at": 100.1 + EPOCH,
        "monotonic": 100.1,
    }
    assert by_type["finished"] == {
        "type": "finished",
        "state": "DOWN",
        "received": 1,
        "at": 102.5 + EPOCH,
        "monotonic": 102.5,
    }


# --- invariants under any order of events ----------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=0.7)),
        st.tuples(st.just("reply"), st.integers(min_value=-2, max_value=0)),
        st.tuples(st.just("reply-to"), st.integers(min_value=0, max_value=12)),
        st.tuples(st.just("refused"), st.just(0)),
        st.tuples(st.just("junk"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=150)
@given(
    operations,
    st.sampled_from([0.0, 0.25, 1.0]),
    st.sampled_from([0.3, 1.0]),
    st.booleans(),
)
def test_every_heartbeat_is_accounted_for_once(
    ops: list[tuple[str, float]], interval: float, timeout: float, watch: bool
) -> None:
    driver = Driver(count=8, interval=interval, timeout=timeout, max_misses=3, watch=watch)
    for op, value in ops:
        if op == "wait":
            driver.advance(driver.now + value)
        elif op == "reply":  # the newest heartbeats, or a repeat of one
            sent = driver.sent_seqs()
            driver.reply(sent[max(len(sent) - 1 + int(value), 0)])
        elif op == "reply-to":  # any number: old, in flight, unknown
            driver.reply(int(value))
        elif op == "refused":
            driver.refused()
        else:
            driver.datagram(b"Seq: 1, Time Difference: 0.1 seconds")
    report = driver.session.report(driver.now)
    refused_misses = sum(e.reason == "refused" for e in driver.of_type(HeartbeatLost))
    # Each heartbeat sent ends in exactly one place.
    assert report.sent == len(driver.sent)
    assert report.sent == report.received + report.lost + refused_misses + report.in_flight
    assert report.lost == sum(e.reason == "timeout" for e in driver.of_type(HeartbeatLost))
    received = [e.seq for e in driver.of_type(ReplyReceived)]
    assert len(received) == len(set(received)) == report.received
    # A reply is received only within its timeout; a late one never answers a newer heartbeat.
    for event in driver.of_type(ReplyReceived):
        assert event.rtt < timeout
        assert event.at - driver.sent[event.seq][0] == event.rtt
    late = [e.seq for e in driver.of_type(LateReply)]
    assert len(late) == len(set(late)) == report.late
    assert not set(late) & set(received)
    lost = {e.seq for e in driver.of_type(HeartbeatLost)}
    assert set(late) <= lost
    assert not lost & set(received)  # a heartbeat is received or lost, never both
    # Numbers: regular heartbeats 1..n in the order sent, never above the count.
    regular = [e.number for e in driver.of_type(HeartbeatSent) if not e.probe]
    assert regular == list(range(1, len(regular) + 1)) and len(regular) <= 8
    assert report.rtt.count == report.received
    # Unknown numbers are the ones not sent (yet) when their reply came.
    for unknown in driver.of_type(UnknownReply):
        assert unknown.seq not in driver.sent or driver.sent[unknown.seq][0] >= unknown.at
    # Without watch, DOWN ends the sending, and the run once no heartbeat waits any more;
    # with it, the run goes on to its count.
    if report.state is State.DOWN and not watch:
        down_at = report.transitions[-1].at
        assert all(e.at <= down_at for e in driver.of_type(HeartbeatSent))
        assert driver.session.finished or report.in_flight > 0
        if report.in_flight:
            assert driver.session.get_timer() == min(
                sent_at + timeout
                for seq, (sent_at, _) in driver.sent.items()
                if seq not in lost and seq not in received
            )
    if interval == 0:
        assert report.in_flight <= 1


def test_a_refusal_read_after_a_deadline_leaves_the_overdue_heartbeat_timed_out() -> None:
    driver = Driver(count=1, interval=1.0, timeout=0.5, max_misses=5)
    driver.now = 100.7  # past heartbeat 1's deadline (100.5), its timer not yet run
    driver.refused()
    [lost] = driver.of_type(HeartbeatLost)
    assert (lost.seq, lost.reason, lost.at) == (1, "timeout", 100.5)
    report = driver.session.report()
    assert (report.lost, report.refused) == (1, 0)  # the refusal is blamed on nothing
    assert report.socket_errors == {"refused-stale": 1}  # but counted apart


# --- the timeout is the timeout: a detector's early deadline never decides a fate ------------


class SlowFifth(SessionDriver):
    """Answers every datagram: every 5th after 120 ms, the rest after 0.5 ms (the issue's
    reflector that delays every fifth reply)."""

    def step(self) -> None:
        before = set(self.sent)
        super().step()
        for seq in self.sent.keys() - before:
            sent_at, _ = self.sent[seq]
            delay = 0.12 if (seq - self.session.first_seq + 1) % 5 == 0 else 0.0005
            self.arrive_at(sent_at + delay, encode_reply(HeartbeatReply(seq, 0.0003)))


def test_a_reply_within_the_timeout_is_received_even_after_the_detectors_early_deadline() -> None:
    config = ProbeConfig(count=20, interval=0.2, timeout=1.0, detector="adaptive", first_seq=1)
    driver = SlowFifth(config, start=100.0)
    driver.run()
    session = driver.session
    assert session.finished
    report = session.report()
    regular = [e for e in driver.of_type(ReplyReceived) if not e.probe]
    assert len(regular) == 20  # every heartbeat got its reply within the 1 s timeout
    assert report.late == 0 and report.lost == 0 and report.refused == 0
    assert report.loss == 0.0
    assert report.rtt.max == pytest.approx(0.12)  # the slow replies are in the statistics
    assert not driver.of_type(LateReply)
    assert not driver.of_type(HeartbeatLost)
    # The detector did act on its own, shorter deadline: it was told of the misses then.
    overdue = driver.of_type(HeartbeatOverdue)
    assert overdue and all(e.waited < 1.0 for e in overdue)
    assert {e.seq for e in overdue} <= {e.seq for e in driver.of_type(ReplyReceived)}
    slow = [e for e in regular if e.rtt > 0.1]
    assert all(e.overdue for e in slow if e.seq in {o.seq for o in overdue})
    assert State.SUSPECT in [t.new for t in report.transitions]
    assert report.state is State.UP


def test_a_heartbeat_is_lost_only_when_the_configured_timeout_passes() -> None:
    config = ProbeConfig(count=3, interval=1.0, timeout=1.0, detector="adaptive", first_seq=1)
    driver = SessionDriver(config, start=100.0)
    for seq in (1, 2):  # two quick replies teach the detector a short deadline of its own
        driver.advance(99.001 + seq)
        driver.reply(seq)
    driver.advance(102.0)  # heartbeat 3 leaves, and nothing answers any more
    assert driver.detector.reply_timeout() < 0.1
    driver.advance(102.5)  # past the detector's deadline, within the timeout
    [overdue] = [e for e in driver.of_type(HeartbeatOverdue) if not e.probe]
    assert overdue.seq == 3 and overdue.at == pytest.approx(102.05)
    # Its probes are confirming (two replies of history: many are needed); the run still
    # waits for every heartbeat's fate.
    assert driver.session.state is State.SUSPECT and not driver.session.finished
    assert driver.of_type(HeartbeatSent)[-1].probe
    assert not driver.of_type(HeartbeatLost)  # the probes are not lost yet either
    driver.advance(102.99)
    assert not driver.of_type(HeartbeatLost)
    driver.advance(103.0)  # the timeout: now it is lost
    lost = [e for e in driver.of_type(HeartbeatLost) if not e.probe]
    assert [(e.seq, e.at) for e in lost] == [(3, pytest.approx(103.0))]
    driver.run()
    report = driver.session.report()
    assert (report.received, report.in_flight) == (2, 0)
    assert report.lost == report.sent - 2


def test_an_overdue_reply_is_news_to_the_detector_as_a_late_one_is() -> None:
    calls: list[str] = []

    class Spy(ConsecutiveDetector):
        def reply_timeout(self) -> float:
            return 0.1

        def on_reply(self, seq: int, rtt: float, now: float) -> Transition | None:
            calls.append(f"reply {seq}")
            return super().on_reply(seq, rtt, now)

        def on_late(self, seq: int, rtt: float, now: float) -> Transition | None:
            calls.append(f"late {seq}")
            return super().on_reply(seq, rtt, now)

        def on_miss(self, seq: int, now: float, reason: MissReason) -> Transition | None:
            calls.append(f"miss {seq} {reason}")
            return super().on_miss(seq, now, reason)

    driver = Driver(count=3, interval=1.0, timeout=1.0, detector=Spy(timeout=1.0))
    driver.advance(100.05)
    driver.reply(1)
    driver.advance(101.5)  # heartbeat 2 is overdue at 101.1, still within its timeout
    driver.reply(2)
    driver.advance(102.2)  # heartbeat 3 overdue at 102.1 ...
    driver.refused(3)  # ... then refused: the detector already counted its miss
    driver.run()
    assert calls == ["reply 1", "miss 2 timeout", "late 2", "miss 3 timeout"]
    report = driver.session.report()
    assert (report.received, report.lost, report.refused, report.late) == (2, 0, 1, 0)
    assert report.rtt.max == pytest.approx(0.5)


def test_down_without_watch_waits_for_the_heartbeats_still_within_their_timeout() -> None:
    config = ProbeConfig(count=None, interval=1.0, timeout=1.0, detector="adaptive", first_seq=1)
    driver = SessionDriver(config, start=100.0)
    driver.advance(100.001)
    driver.reply(1)
    driver.silence()
    driver.run()
    session = driver.session
    assert session.state is State.DOWN and session.finished
    down = session.report().transitions[-1]
    [finished] = driver.of_type(SessionFinished)
    assert down.new is State.DOWN and finished.at > down.at
    report = session.report()
    assert report.in_flight == 0  # every heartbeat's fate is known: no overdue left hanging
    assert report.lost == report.sent - report.received
    assert all(t <= down.at for t, _ in driver.sent.values())  # nothing sent after DOWN


# --- the count is the count: heartbeats 1..N, probes numbered apart ----------------------------


def test_count_is_the_count_and_probes_are_numbered_apart() -> None:
    config = ProbeConfig(count=20, interval=1.0, timeout=1.0, detector="adaptive", first_seq=1)
    driver = SessionDriver(config, start=100.0)

    class EveryFourthLost:
        def __init__(self) -> None:
            self.n = 0

        def __call__(self) -> bool:
            self.n += 1
            return self.n % 4 == 0

    driver.answer_with(Reflector(ReflectorConfig(rate_limit=0)), lost=EveryFourthLost())
    driver.run()
    sent = driver.of_type(HeartbeatSent)
    regular = [e for e in sent if not e.probe]
    probes = [e for e in sent if e.probe]
    assert probes  # the losses made the detector send probes, with sequence numbers of their own
    assert [e.number for e in regular] == list(range(1, 21))
    assert [e.number for e in probes] == list(range(1, len(probes) + 1))
    assert sorted(e.seq for e in sent) == list(range(1, 21 + len(probes)))  # one wire series
    number_of = {e.seq: (e.probe, e.number) for e in sent}
    for event in [*driver.of_type(ReplyReceived), *driver.of_type(HeartbeatLost)]:
        assert (event.probe, event.number) == number_of[event.seq]
    for change in driver.of_type(StateChanged):
        assert change.seq is not None and (change.probe, change.number) == number_of[change.seq]
    report = driver.session.report()
    assert report.heartbeats.sent == 20 and report.confirmation.sent == report.probes
    assert report.sent == 20 + len(probes)
    for counts in (report.heartbeats, report.confirmation):
        assert counts.sent == counts.received + counts.lost + counts.refused + counts.in_flight
    assert report.heartbeats.received + report.confirmation.received == report.received
    summary = report.to_dict()
    assert summary["heartbeats"] == {
        "sent": 20,
        "received": report.heartbeats.received,
        "lost": report.heartbeats.lost,
        "refused": 0,
        "in_flight": 0,
        "loss_percent": round(100 * report.heartbeats.lost / 20, 3),
    }
    assert summary["confirmation_probes"]["sent"] == summary["probes"]  # type: ignore[index]


def test_a_late_or_duplicate_reply_names_its_heartbeat_by_number() -> None:
    driver = Driver(count=3, interval=1.0, timeout=0.5)
    driver.advance(100.1)
    driver.reply(1)
    driver.reply(1)
    driver.advance(101.7)
    driver.reply(2)
    [duplicate] = driver.of_type(DuplicateReply)
    [late] = driver.of_type(LateReply)
    assert (duplicate.number, duplicate.probe, late.number, late.probe) == (1, False, 2, False)


# --- outages own the misses that led to them; the path's loss while up is apart --------------


def test_the_misses_that_led_to_down_belong_to_the_outage_not_to_the_path() -> None:
    driver = Driver(count=None, interval=1.0, timeout=0.5, max_misses=3)
    for seq in range(1, 11):  # 2 of 10 lost while up: 20 %
        driver.advance(99.0 + seq + 0.01)
        if seq not in (3, 7):
            driver.reply(seq)
    driver.run()  # then the server stops: 11, 12, 13 lost and DOWN
    report = driver.session.report()
    assert report.state is State.DOWN and report.sent == 13
    assert report.heartbeats.loss == pytest.approx(5 / 13)  # what ping would say
    assert report.loss_while_up == pytest.approx(0.2)  # what the path did
    assert report.lost_in_outages == 3
    [outage] = report.outages
    assert (outage.heartbeats_lost, outage.probes_lost, outage.refused) == (3, 0, 0)
    summary = report.to_dict()
    assert summary["loss_while_up_percent"] == 20.0 and summary["lost_in_outages"] == 3
    assert summary["loss_percent"] == round(100 * 5 / 13, 3)  # the stable key keeps its meaning


def test_refused_heartbeats_count_as_lost_in_the_outage_they_led_to() -> None:
    driver = Driver(count=None, interval=1.0, timeout=0.5, max_misses=3, watch=True)
    driver.advance(100.01)
    driver.reply(1)
    for seq in range(2, 15):  # 13 refused: 3 lead to DOWN, 10 more while DOWN
        driver.advance(99.0 + seq + 0.001)
        driver.refused(seq)
    assert driver.session.state is State.DOWN
    report = driver.session.report(driver.now)
    [outage] = report.outages
    assert (outage.heartbeats_lost, outage.refused, outage.end) == (13, 13, None)
    driver.advance(114.01)
    driver.reply(15)  # the server is back
    report = driver.session.report(driver.now)
    [outage] = report.outages
    assert (outage.heartbeats_lost, outage.refused) == (13, 13)
    assert outage.end == pytest.approx(114.01)
    assert report.loss_while_up == 0.0 and report.lost_in_outages == 13


def test_a_heartbeat_sent_during_an_outage_and_lost_after_it_ended_is_the_outages() -> None:
    driver = Driver(count=None, interval=0.25, timeout=1.0, max_misses=2, watch=True)
    driver.advance(100.01)
    driver.reply(1)
    driver.advance(101.76)  # 2, 3 lost (at 101.25, 101.5): DOWN; 4 lost at 101.75
    assert driver.session.state is State.DOWN
    driver.reply(8)  # 8 (sent at 101.75) answers: UP; 5..7 were sent while the server was down
    driver.advance(102.9)  # 5..7 time out after the outage ended
    report = driver.session.report(driver.now)
    # (This detector counts 5 and 6 as a new run and goes DOWN again; that outage owns only
    # what was sent after 8.)
    assert report.outages[0].heartbeats_lost == 6  # 2, 3, 4 and 5..7
    assert report.lost_in_outages == report.lost == 6
