"""The prober on real loopback sockets, against a server that delays, duplicates and reorders.

Replies are matched by sequence number: a reply after its timeout is *late* and never answers a
newer heartbeat; a second copy is a *duplicate*; neither is counted as received.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import Script, ScriptedServer, free_udp_port, has_ipv6_loopback

from udpbeat import (
    BackgroundServer,
    ConsecutiveDetector,
    Prober,
    ProbeReport,
    State,
    probe,
    probe_sync,
)
from udpbeat.events import (
    DuplicateReply,
    Event,
    HeartbeatLost,
    HeartbeatSent,
    LateReply,
    MalformedReply,
    ReplyReceived,
    UnknownReply,
)


def run_probe(
    port: int, host: str = "127.0.0.1", *, timeout: float, **options: object
) -> tuple[ProbeReport, list[Event]]:
    """Probe with the exercise's rule (3 consecutive misses), which these tests count on, and
    with heartbeats numbered from 1, as the scripts name them."""
    events: list[Event] = []
    detector = ConsecutiveDetector(3, timeout)
    report = probe_sync(
        host,
        port,
        timeout=timeout,
        detector=detector,
        first_seq=1,
        on_event=events.append,
        **options,
    )
    return report, events


def seqs(events: list[Event], kind: type) -> list[int]:
    return [e.seq for e in events if isinstance(e, kind)]  # type: ignore[attr-defined]


def position(events: list[Event], kind: type, seq: int) -> int:
    """Where the event of this kind for this heartbeat is in the sequence of events."""
    return next(
        i
        for i, e in enumerate(events)
        if isinstance(e, kind) and e.seq == seq  # type: ignore[attr-defined]
    )


def test_late_replies_and_duplicates_are_counted_apart() -> None:
    # With interval 0 the next heartbeat leaves only when the previous one is resolved, so the
    # reply held back for 2 reaches the client while 5 is waiting (and 7's while 10 is), and
    # the second copies of 4 and 11 arrive while 5 and 12 are waiting.
    script = Script(hold={2: 5, 7: 10}, copies={4: 2, 11: 2})
    with ScriptedServer(script) as server:
        report, events = run_probe(server.port, count=12, interval=0, timeout=0.5)
        assert server.requests == list(range(1, 13))
    assert seqs(events, HeartbeatSent) == list(range(1, 13))
    assert seqs(events, ReplyReceived) == [1, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert seqs(events, HeartbeatLost) == [2, 7]
    assert seqs(events, LateReply) == [2, 7]
    assert seqs(events, DuplicateReply) == [4, 11]
    assert seqs(events, UnknownReply) == []
    # The late reply came while the newer heartbeat waited, and did not answer it.
    for late, newer in [(2, 5), (7, 10)]:
        assert (
            position(events, HeartbeatSent, newer)
            < position(events, LateReply, late)
            < position(events, ReplyReceived, newer)
        )
    assert (report.sent, report.received, report.lost, report.late) == (12, 10, 2, 2)
    assert (report.duplicates, report.unknown, report.refused, report.in_flight) == (2, 0, 0, 0)
    assert report.rtt.count == 10
    assert report.loss == pytest.approx(2 / 12)
    assert report.state is State.UP


def test_reply_delayed_beyond_the_timeout_is_late() -> None:
    # Unlimited heartbeats, stopped as soon as the delayed reply has come back: no race with
    # the end of the run, whatever the machine's load.
    events: list[Event] = []
    probers: list[Prober] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, LateReply):
            asyncio.get_running_loop().call_soon(probers[0].stop)

    async def main(port: int) -> ProbeReport:
        run = probe(
            "127.0.0.1",
            port,
            count=None,
            interval=0.05,
            timeout=0.25,
            detector=ConsecutiveDetector(3, 0.25),
            first_seq=1,
            on_event=on_event,
            on_start=probers.append,
        )
        return await asyncio.wait_for(run, 10)

    with ScriptedServer(Script(delay={3: 0.6})) as server:
        report = asyncio.run(main(server.port))
    late = [e for e in events if isinstance(e, LateReply)]
    assert [e.seq for e in late] == [3]
    assert late[0].rtt >= 0.6
    assert 3 in seqs(events, HeartbeatLost)
    assert 3 not in seqs(events, ReplyReceived)
    assert report.late == 1 and report.duplicates == 0
    assert (
        report.received
        == len(seqs(events, ReplyReceived))
        == report.sent - report.lost - report.in_flight
    )


def test_unknown_and_malformed_replies_are_counted_and_ignored() -> None:
    extra = {
        2: [b"Seq: 99, Time Difference: 0.000100 seconds"],
        3: [b"garbage", b"Seq: 3, Time Difference: lots seconds"],
    }
    with ScriptedServer(Script(extra=extra)) as server:
        report, events = run_probe(server.port, count=4, interval=0, timeout=0.5)
    assert seqs(events, ReplyReceived) == [1, 2, 3, 4]
    assert seqs(events, UnknownReply) == [99]
    assert sorted(e.reason for e in events if isinstance(e, MalformedReply)) == [
        "bad-keyword",
        "bad-timestamp",
    ]
    assert (report.received, report.unknown, report.lost) == (4, 1, 0)
    assert report.malformed == {"bad-keyword": 1, "bad-timestamp": 1}
    assert report.state is State.UP


def test_three_consecutive_timeouts_declare_down() -> None:
    with ScriptedServer(Script(drop={3, 4, 5})) as server:
        report, events = run_probe(server.port, count=10, interval=0, timeout=0.3)
    assert seqs(events, HeartbeatSent) == [1, 2, 3, 4, 5]
    assert seqs(events, HeartbeatLost) == [3, 4, 5]
    assert report.state is State.DOWN
    assert [t.new for t in report.transitions] == [State.UP, State.SUSPECT, State.DOWN]
    assert len(report.outages) == 1 and report.outages[0].end is None


def test_closed_port_is_refused_not_a_crash() -> None:
    report, events = run_probe(free_udp_port(), count=10, interval=0, timeout=0.5)
    lost = [e for e in events if isinstance(e, HeartbeatLost)]
    assert [e.reason for e in lost] == ["refused"] * 3
    assert report.refused == 3 and report.lost == 0 and report.received == 0
    assert report.state is State.DOWN
    assert report.transitions[-1].evidence["cause"] == "refused"


def test_interval_paces_the_heartbeats() -> None:
    with ScriptedServer() as server:
        report, events = run_probe(server.port, count=4, interval=0.05, timeout=0.5)
    sent_at = [e.at for e in events if isinstance(e, HeartbeatSent)]
    assert len(sent_at) == 4
    # Scheduled on a grid from the first send, never ahead of it (the loop's clock may fire a
    # hair early, hence the small tolerance).
    for k, at in enumerate(sent_at):
        assert at - sent_at[0] >= k * 0.05 - 0.002
    assert report.received == 4 and report.state is State.UP


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_loopback() -> None:
    with BackgroundServer("::1", 0) as server:
        report, _ = run_probe(server.address[1], host="::1", count=3, interval=0, timeout=0.5)
        assert server.counters.replied == 3
    assert report.received == 3
    assert report.target.startswith("[::1]:")
