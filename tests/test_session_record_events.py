"""``ProbeSession(record_events=False)``, as the simulator builds it: no events, the same run.

Both sessions are driven by the simulator on the same seeded path (bursty loss, duplicates, a
stop and an ICMP refusal, delay spikes), so sends, replies, late and duplicate replies, misses,
overdue heartbeats, verdicts and the outage all happen; the reports must be equal field by field.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest

from udpbeat.events import Event
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.simulate import Combined, DelaySpikes, GilbertElliott, PathConfig, Simulation

PATH = PathConfig(
    loss=Combined((GilbertElliott(0.3, 4.0),)),
    duplicate=0.05,
    icmp_when_stopped=True,
    spikes=DelaySpikes(every=20.0, min_rtt=0.5, max_rtt=1.5),
)


def run(detector: str, record_events: bool) -> tuple[ProbeSession, list[bytes], Counter[str]]:
    session = ProbeSession(
        ProbeConfig(
            count=None,
            interval=1.0,
            timeout=1.0,
            watch=True,
            first_seq=1000,
            detector=detector,
        ),
        0.0,
        record_events=record_events,
    )
    sent: list[bytes] = []
    original = session.datagrams_to_send

    def spy() -> list[bytes]:
        out = original()
        sent.extend(out)
        return out

    kinds: Counter[str] = Counter()
    original_events = session.events

    def count_events() -> Iterator[Event]:
        for event in original_events():
            kinds[event.kind] += 1
            yield event

    session.datagrams_to_send = spy  # type: ignore[method-assign]
    session.events = count_events  # type: ignore[method-assign]
    simulation = Simulation(session, PATH, random.Random(11))
    simulation.stop_server(600.0)
    simulation.restart_server(640.0)
    simulation.run(1000.0)
    session.stop(simulation.now)
    sum(1 for _ in session.events())
    return session, sent, kinds


@pytest.mark.parametrize("detector", ["adaptive", "consecutive", "phi"])
def test_a_session_without_events_runs_the_same(detector: str) -> None:
    with_events, sent_with, events_with = run(detector, True)
    without, sent_without, events_without = run(detector, False)
    assert with_events.records_events and not without.records_events
    # Every kind of event the run produced, and none without them.
    assert {"sent", "reply", "lost", "state", "finished"} <= set(events_with)
    assert not events_without
    assert sent_with == sent_without
    report = with_events.report()
    assert report == without.report()
    assert report.late + report.duplicates > 0 and report.refused > 0 and report.outages
