"""The prober speaking STAMP: the same session, its one-way figures on the simulator's virtual
clock (known clock offset, asymmetric paths), and directional loss with a stateful reflector."""

from __future__ import annotations

import random

import pytest

from udpbeat.errors import ConfigError
from udpbeat.oneway import OneWay
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.simulate import PathConfig, Simulation
from udpbeat.stamp_reflector import StampOptions, StampReflector, stamp_config
from udpbeat.wire import stamp
from udpbeat.wire.base import Timestamps

EPOCH = 1_700_000_000.0


def simulate(path: PathConfig, count: int = 2000, seed: int = 1) -> dict[str, object]:
    config = ProbeConfig(count=count, interval=0.1, timeout=1.0, protocol="stamp")
    session = ProbeSession(config, 0.0)
    Simulation(session, path, random.Random(seed)).run()
    summary = session.report().to_dict()
    assert summary["received"] == count
    return summary


def ms(summary: dict[str, object], key: str, figure: str = "p50") -> float:
    value = summary[key]
    assert isinstance(value, dict)
    result = value[figure]
    assert isinstance(result, float)
    return result


def test_known_offset_with_jittery_symmetric_delays_is_found_within_half_a_millisecond() -> None:
    path = PathConfig(rtt=0.010, jitter=0.004, clock_offset=0.037, independent_jitter=True)
    summary = simulate(path)
    offset = summary["clock_offset_ms"]
    assert isinstance(offset, float)
    assert abs(offset - 37.0) < 0.5
    # The one-way figures carry the offset: +37 ms out, -37 ms back (5 ms each way and jitter).
    assert ms(summary, "forward_delay_ms", "min") == pytest.approx(5.0 + 37.0, abs=0.5)
    assert ms(summary, "backward_delay_ms", "min") == pytest.approx(5.0 - 37.0, abs=0.5)
    # An instant reflector on the simulator: T3 - T2 is 0.
    assert ms(summary, "reflector_time_ms", "max") == 0.0
    # Per exchange, forward + reflector + backward is the RTT (same clocks for T1 and T4).
    assert ms(summary, "forward_delay_ms", "avg") + ms(summary, "backward_delay_ms", "avg") == (
        pytest.approx(ms(summary, "rtt_ms", "avg"), abs=1e-6)
    )


def test_asymmetric_delays_bias_the_offset_by_half_the_asymmetry_and_no_more() -> None:
    # 5 ms out, 15 ms back, clocks in step: a two-way method sees half the 10 ms difference.
    path = PathConfig(rtt=0.020, jitter=0.002, forward_share=0.25, independent_jitter=True)
    summary = simulate(path)
    offset = summary["clock_offset_ms"]
    assert isinstance(offset, float)
    assert abs(offset - (0.0 - 5.0)) < 0.5
    # One-way delays follow the same rule: each is off by the (apparent) offset.
    assert ms(summary, "forward_delay_ms", "min") == pytest.approx(5.0, abs=0.5)
    assert ms(summary, "backward_delay_ms", "min") == pytest.approx(15.0, abs=0.5)
    corrected_forward = ms(summary, "forward_delay_ms", "min") - offset
    assert corrected_forward == pytest.approx(10.0, abs=0.5)  # truth 5 + half the asymmetry


def test_asymmetry_and_offset_together() -> None:
    path = PathConfig(
        rtt=0.020, jitter=0.002, forward_share=0.25, independent_jitter=True, clock_offset=0.037
    )
    offset = simulate(path)["clock_offset_ms"]
    assert isinstance(offset, float)
    assert abs(offset - (37.0 - 5.0)) < 0.5


def test_the_text_protocol_summary_has_no_stamp_keys() -> None:
    session = ProbeSession(ProbeConfig(count=5, interval=0.1), 0.0)
    Simulation(session, PathConfig(), random.Random(1)).run()
    summary = session.report().to_dict()
    assert "clock_offset_ms" not in summary and "protocol" not in summary


def test_stateless_reflector_gives_no_directional_loss() -> None:
    summary = simulate(PathConfig(), count=50)
    assert summary["reflector_stateful"] is False
    assert summary["forward_lost"] is None and summary["backward_lost"] is None


def _exchange(session: ProbeSession, reflector: StampReflector, now: float, lose: str) -> float:
    session.handle_timer(now, EPOCH + now)
    for datagram in session.datagrams_to_send():
        if lose == "forward":
            continue
        reply = reflector.reflect(datagram, ("192.0.2.1", 40000), now, EPOCH + now)
        if reply is not None and lose != "backward":
            session.receive_datagram(reply, now + 0.001)
    return now + 0.1


def test_stateful_reflector_tells_forward_from_backward_loss() -> None:
    config = ProbeConfig(
        count=20,
        interval=0.1,
        timeout=0.05,
        protocol="stamp",
        detector="consecutive",
        detector_options={"max_misses": 100},
    )
    session = ProbeSession(config, 0.0)
    reflector = StampReflector(
        stamp_config(rate_limit=0), StampOptions(mode="stateful"), clock=None
    )
    now = 0.0
    losses = [
        "forward" if i in (3, 4, 9) else "backward" if i in (6, 12) else "" for i in range(20)
    ]
    for lose in losses:
        now = _exchange(session, reflector, now, lose)
    session.handle_timer(now + 1, EPOCH + now + 1)
    summary = session.report().to_dict()
    assert summary["lost"] == 5
    assert summary["reflector_stateful"] is True
    assert (summary["forward_lost"], summary["backward_lost"]) == (3, 2)


def test_sequence_numbers_wrap_on_the_wire_and_replies_still_match() -> None:
    config = ProbeConfig(count=6, interval=0.1, protocol="stamp", first_seq=2**32 - 3)
    session = ProbeSession(config, 0.0)
    reflector = StampReflector(stamp_config(rate_limit=0), clock=None)
    now = 0.0
    for _ in range(6):
        now = _exchange(session, reflector, now, "")
    report = session.report()
    assert report.received == 6 and report.unknown == 0


def test_one_way_offset_takes_the_lowest_delay_exchanges() -> None:
    one_way = OneWay()
    # A true offset of 10 ms; most exchanges queue on the way out only (biasing them).
    for i in range(100):
        queued = 0.0 if i % 10 == 0 else 0.020
        sent = 100.0 + i
        stamps = Timestamps(
            sent, sent + 0.005 + queued + 0.010, sent + 0.005 + queued + 0.010, i, 64
        )
        one_way.add(i, sent, sent + 0.010 + queued, stamps)
    offset = one_way.clock_offset()
    assert offset == pytest.approx(0.010, abs=1e-9)


def test_round_trip_delay_is_the_rtt_less_the_reflectors_time_whatever_the_clocks() -> None:
    # 1 ms on the wire both ways together, 3 ms held by the reflector (T3 - T2), and the
    # reflector's clock 0.5 s ahead: RFC 8762's round-trip delay is the 1 ms, the RTT 4 ms.
    wire, held, offset = 0.001, 0.003, 0.5
    session = ProbeSession(ProbeConfig(count=5, interval=0.1, protocol="stamp"), 0.0)
    reflector_clock = [0.0]
    reflector = StampReflector(stamp_config(rate_limit=0), clock=lambda: reflector_clock[0])
    for i in range(5):
        now = i * 0.1
        session.handle_timer(now, EPOCH + now)
        for datagram in session.datagrams_to_send():
            arrived = EPOCH + offset + now + wire / 2  # T2, on the reflector's clock
            reflector_clock[0] = arrived + held  # T3
            reply = reflector.reflect(datagram, ("192.0.2.1", 40000), now + wire / 2, arrived)
            assert reply is not None
            session.receive_datagram(reply, now + wire + held)
    summary = session.report().to_dict()
    assert summary["received"] == 5
    for figure in ("min", "p50", "max"):
        assert ms(summary, "rtt_ms", figure) == pytest.approx(4.0, abs=1e-3)
        assert ms(summary, "reflector_time_ms", figure) == pytest.approx(3.0, abs=1e-3)
        assert ms(summary, "round_trip_delay_ms", figure) == pytest.approx(1.0, abs=1e-3)
    round_trip = summary["round_trip_delay_ms"]
    assert isinstance(round_trip, dict) and round_trip["count"] == 5
    assert set(round_trip) == set(summary["rtt_ms"])  # type: ignore[arg-type]


def test_one_way_round_trip_delay_from_known_timestamps() -> None:
    one_way = OneWay()
    # T1 = 10.000, T2 = 20.002 (clock 10 s ahead), T3 = 20.007, T4 = 10.009: (9 ms) - (5 ms).
    one_way.add(7, 10.000, 10.009, Timestamps(10.000, 20.002, 20.007, 7, 64))
    one_way.add(8, 11.000, 11.012, Timestamps(11.000, 21.003, 21.004, 8, 64))
    report = one_way.report()
    assert report.round_trip_delay.count == 2
    assert report.round_trip_delay.min == pytest.approx(0.004)
    assert report.round_trip_delay.max == pytest.approx(0.011)
    assert report.to_dict()["round_trip_delay_ms"]["max"] == pytest.approx(11.0)  # type: ignore[index]


def test_bad_protocol_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        ProbeConfig(protocol="morse")
    with pytest.raises(ConfigError):
        ProbeConfig(protocol="stamp", protocol_options={"colour": 1})
    with pytest.raises(ConfigError):
        ProbeConfig(protocol="stamp", protocol_options={"size": 10})
    with pytest.raises(ConfigError):
        ProbeConfig(protocol_options={"ssid": 1})
    assert ProbeConfig(protocol="stamp", protocol_options={"ssid": 3}).build_codec().name == "stamp"
    assert stamp.DEFAULT_PORT == 862


def test_an_icmp_error_quoting_a_stamp_request_names_its_heartbeat() -> None:
    config = ProbeConfig(count=3, interval=0.1, protocol="stamp", first_seq=2**32 - 2)
    session = ProbeSession(config, 0.0)
    sent = []
    for now in (0.0, 0.1, 0.2):
        session.handle_timer(now, EPOCH + now)
        sent.extend(session.datagrams_to_send())
    assert [session.sent_seq(datagram) for datagram in sent] == [2**32 - 2, 2**32 - 1, 2**32]
    assert session.sent_seq(sent[2][:4]) == 2**32  # an ICMP error may quote only the start
    assert session.sent_seq(b"\x00") is None
    session.receive_error(0.25, session.sent_seq(sent[1]))
    assert session.report().refused == 1
