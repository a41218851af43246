"""The kernel's send stamp starts the RTT (ProbeSession.mark_left), on a given clock."""

from __future__ import annotations

import pytest

from udpbeat.events import ReplyReceived
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.wire.text import HeartbeatReply, encode_reply

EPOCH = 1_764_000_000.0


def _session() -> ProbeSession:
    return ProbeSession(ProbeConfig(count=2, interval=1.0, timeout=0.5, first_seq=7), 100.0)


def _reply(seq: int) -> bytes:
    return encode_reply(HeartbeatReply(seq, 0.0001))


def test_the_rtt_starts_at_the_send_stamp_when_one_comes() -> None:
    session = _session()
    session.handle_timer(100.0, EPOCH + 100.0)
    assert len(session.datagrams_to_send()) == 1
    assert session.mark_sent(100.001) == [7]
    assert not session.mark_left(7, 100.0005), "a stamp cannot be before the send call"
    assert not session.mark_left(8, 100.0012), "no such heartbeat waits"
    assert session.mark_left(7, 100.00105)
    session.receive_datagram(_reply(7), 100.00205, kernel_stamp=True)
    replies = [event for event in session.events() if isinstance(event, ReplyReceived)]
    assert [reply.rtt for reply in replies] == [pytest.approx(0.001, abs=1e-9)]
    assert not session.mark_left(7, 100.0011), "answered: nothing waits any more"
    # The next heartbeat gets no stamp: its RTT starts at the clock read before the send.
    session.handle_timer(101.0, EPOCH + 101.0)
    session.datagrams_to_send()
    assert session.mark_sent(101.0001) == [8]
    session.receive_datagram(_reply(8), 101.0003)
    report = session.report(101.5)
    assert report.rtt.min == pytest.approx(0.0002, abs=1e-9)
    assert report.send_timestamps == {"kernel": 1, "user": 1}
    assert report.to_dict()["send_timestamps"] == {"kernel": 1, "user": 1}
