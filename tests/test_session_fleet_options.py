"""ProbeSession's options for running among thousands: a shared probe budget, a bounded
history, and no wake-up for the deadline of a heartbeat already answered."""

from __future__ import annotations

import pytest

from udpbeat.budget import ProbeBudget
from udpbeat.detector import State
from udpbeat.errors import ConfigError
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.stats import RecentSeries, Series
from udpbeat.wire import text

CONFIG = ProbeConfig(count=None, interval=1.0, timeout=1.0, watch=True, first_seq=1)


class Run:
    """Sessions on one virtual clock; ``answer`` says whether a session's target replies."""

    def __init__(self, sessions: list[ProbeSession]) -> None:
        self.sessions = sessions
        self.now = 0.0
        self.sent: list[tuple[float, int, int]] = []  # (time, session index, seq)
        self.alive = [True] * len(sessions)

    def run(self, until: float) -> None:
        for _ in range(1_000_000):
            timers = [(s.get_timer(), i) for i, s in enumerate(self.sessions)]
            due = [(t, i) for t, i in timers if t is not None and t <= until]
            if not due:
                break
            when, index = min(due)
            self.now = max(self.now, when)
            session = self.sessions[index]
            session.handle_timer(self.now, self.now + 1.7e9)
            for datagram in session.datagrams_to_send():
                seq = text.decode_request(datagram).seq
                self.sent.append((self.now, index, seq))
                if self.alive[index]:
                    reply = text.encode_reply(text.HeartbeatReply(seq, 0.0))
                    session.receive_datagram(reply, self.now + 0.001)
            list(session.events())
        self.now = until


def test_a_shared_budget_bounds_the_probes_of_all_its_sessions() -> None:
    budget = ProbeBudget(rate=5, burst=2)
    sessions = [ProbeSession(CONFIG, 0.0, shared_budget=budget) for _ in range(20)]
    run = Run(sessions)
    run.run(30.0)
    assert all(s.state is State.UP for s in sessions)
    assert sum(s.report().probes for s in sessions) == 0
    run.alive = [False] * 20
    start = run.now
    run.run(start + 10.0)
    probes = sum(s.report().probes for s in sessions)
    # Alone, each would send dozens of probes; together they share 5 a second and 2 at once.
    assert 0 < probes <= 5 * 10 + 2
    assert budget.granted >= probes and budget.waited > 0


def test_without_a_shared_budget_each_session_has_only_its_own() -> None:
    sessions = [ProbeSession(CONFIG, 0.0) for _ in range(20)]
    run = Run(sessions)
    run.run(30.0)
    run.alive = [False] * 20
    run.run(run.now + 10.0)
    assert sum(s.report().probes for s in sessions) > 5 * 10 + 2


def test_a_reservation_is_given_up_when_no_probe_is_wanted() -> None:
    budget = ProbeBudget(rate=0.2, burst=1)  # one probe every 5 s
    session = ProbeSession(CONFIG, 0.0, shared_budget=budget)
    run = Run([session])
    run.run(20.5)
    budget.reserve(20.5)  # another session took the only probe: the next one is at 25.5
    run.alive = [False]
    run.run(21.1)  # the heartbeat at 21.0 is missed: SUSPECT, a probe reserved for 25.5
    assert session.state is State.SUSPECT
    assert budget.granted == 2 and session.report().probes == 0
    run.alive = [True]
    run.run(30.0)  # the heartbeat at 22.0 is answered: the probe is no longer wanted
    assert session.state is State.UP
    assert session.report().probes == 0


def test_history_bounds_what_a_session_keeps() -> None:
    session = ProbeSession(CONFIG, 0.0, history=8)
    run = Run([session])
    run.run(50.0)
    report = session.report(run.now)
    assert report.rtt.count == report.received == 51  # every reply counted (0 s to 50 s)
    assert len(session._resolved) <= 8
    # A reply to a heartbeat older than the history is late, never received twice.
    old = run.sent[0][2]
    session.receive_datagram(text.encode_reply(text.HeartbeatReply(old, 0.0)), run.now)
    assert session.report(run.now).late == 1
    with pytest.raises(ConfigError):
        ProbeSession(CONFIG, 0.0, history=0)


def test_recent_series_counts_everything_and_ranks_the_recent() -> None:
    series = RecentSeries(3)
    for value in (10.0, 1.0, 2.0, 3.0, 4.0):
        series.add(value)
    summary = series.summary()
    assert (summary.count, summary.min, summary.max, summary.avg) == (5, 1.0, 10.0, 4.0)
    assert summary.p50 == 3.0  # of 2, 3, 4
    assert len(series) == 5
    full = Series()
    for value in (10.0, 1.0, 2.0, 3.0, 4.0):
        full.add(value)
    assert full.summary().mdev == pytest.approx(summary.mdev)


def test_no_wake_up_for_the_deadline_of_an_answered_heartbeat() -> None:
    session = ProbeSession(CONFIG, 0.0)
    session.handle_timer(0.0, 1.7e9)
    (datagram,) = session.datagrams_to_send()
    assert session.get_timer() == pytest.approx(1.0)  # the deadline (timeout 1 s) or the next
    seq = text.decode_request(datagram).seq
    session.receive_datagram(text.encode_reply(text.HeartbeatReply(seq, 0.0)), 0.001)
    assert session.get_timer() == pytest.approx(1.0)  # the next heartbeat, nothing before
    session2 = ProbeSession(ProbeConfig(count=None, interval=5.0, timeout=1.0), 0.0)
    session2.handle_timer(0.0, 1.7e9)
    (datagram,) = session2.datagrams_to_send()
    assert session2.get_timer() == pytest.approx(1.0)  # the deadline
    seq = text.decode_request(datagram).seq
    session2.receive_datagram(text.encode_reply(text.HeartbeatReply(seq, 0.0)), 0.001)
    assert session2.get_timer() == pytest.approx(5.0)  # answered: straight to the next one
