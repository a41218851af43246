"""The reflector's two clocks: monotonic ``now`` for its rate limits, ``wall_time`` for the wire.

The shell reads both when a datagram arrives. A step of the wall clock (NTP, an operator) must
change the time differences the replies carry, as it would for any server, and nothing else:
the rate limits keep counting on the monotonic clock.
"""

from __future__ import annotations

import pytest

from udpbeat.reflector import Reflector, ReflectorConfig

SOURCE = ("192.0.2.10", 40000)
WALL = 1_764_064_900.0
#: A monotonic reading: its epoch (boot, typically) has nothing to do with Unix time.
MONO = 5_000.0


def request(seq: int, sent_time: float = WALL - 0.25) -> bytes:
    return f"Heartbeat {seq} {sent_time}".encode()


def test_the_reply_and_the_log_use_wall_time_the_limits_monotonic_time() -> None:
    reflector = Reflector(ReflectorConfig(rate_limit=1, burst=2))
    # Two requests at the same monotonic instant, while the wall clock steps an hour back.
    first = reflector.reflect(request(1), SOURCE, MONO, WALL)
    second = reflector.reflect(request(2), SOURCE, MONO, WALL - 3600)
    assert first == b"Seq: 1, Time Difference: 0.250000 seconds"
    assert second == b"Seq: 2, Time Difference: -3599.750000 seconds"
    # The step gave the source no fresh bucket: its burst is spent until a monotonic second.
    assert reflector.reflect(request(3), SOURCE, MONO + 0.5, WALL - 3600) is None
    assert reflector.reflect(request(4), SOURCE, MONO + 1.0, WALL + 3600) is not None
    assert reflector.counters.rate_limited == {"source": 1}
    records = reflector.drain_log()
    assert [(record.at, record.outcome) for record in records] == [
        (WALL, "replied"),
        (WALL - 3600, "replied"),
        (WALL - 3600, "rate-limited"),
        (WALL + 3600, "replied"),
    ]


def test_a_wall_clock_jump_forward_lets_no_flood_through() -> None:
    # With the buckets on wall time, a jump forward of an hour refilled every bucket at once.
    reflector = Reflector(ReflectorConfig(rate_limit=10, burst=5, global_rate_limit=20))
    answered = [
        reflector.reflect(request(seq), SOURCE, MONO, WALL + 3600 * (seq % 2)) is not None
        for seq in range(50)
    ]
    assert sum(answered) == 5


def test_reflect_batch_takes_both_clocks_too() -> None:
    one, batched = Reflector(), Reflector()
    datagrams = [request(seq) for seq in range(5)] + [b"junk"]
    # One receive time per datagram (the kernel stamps each): 1 ms apart here.
    walls = [WALL + seq / 1000 for seq in range(6)]
    expected = [
        one.reflect(data, SOURCE, MONO, wall) for data, wall in zip(datagrams, walls, strict=True)
    ]
    assert batched.reflect_batch(datagrams, SOURCE, MONO, walls) == expected
    assert expected[0] == b"Seq: 0, Time Difference: 0.250000 seconds"
    assert expected[3] == b"Seq: 3, Time Difference: 0.253000 seconds"
    assert [record.at for record in batched.drain_log()] == walls


def test_reflect_batch_wants_one_receive_time_per_datagram() -> None:
    with pytest.raises(ValueError, match="2 datagrams but 1 receive times"):
        Reflector().reflect_batch([request(1), request(2)], SOURCE, MONO, [WALL])


@pytest.mark.parametrize("monotonic_start", [0.0, 1e-3, 1e9])
def test_any_monotonic_epoch_gives_the_same_decisions(monotonic_start: float) -> None:
    # Requests every 1/256 s against 128 a second (both exact in binary at every epoch here):
    # the decisions depend on the time between requests, never on the clock's reading.
    def run(start: float) -> list[bool]:
        reflector = Reflector(ReflectorConfig(rate_limit=128, burst=3, log_events=False))
        return [
            reflector.reflect(request(seq), SOURCE, start + seq / 256, WALL) is not None
            for seq in range(200)
        ]

    decisions = run(monotonic_start)
    assert decisions == run(MONO)
    assert 100 <= sum(decisions) <= 104  # 3 at once, then one in two
