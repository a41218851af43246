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
    expected = [one.reflect(data, SOURCE, MONO, WALL) for data in datagrams]
    assert batched.reflect_batch(datagrams, SOURCE, MONO, WALL) == expected
    assert expected[0] == b"Seq: 0, Time Difference: 0.250000 seconds"
    assert [record.at for record in batched.drain_log()] == [WALL] * 6


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
