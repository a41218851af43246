"""The server's pure core: replies, simulated loss, malformed input, counters, the log backlog."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpbeat.errors import ConfigError, WireError
from udpbeat.reflector import LOG_BACKLOG, Reflector, ReflectorConfig
from udpbeat.wire.text import MAX_REQUEST_SIZE, decode_reply, decode_request

SOURCE = ("127.0.0.1", 40000)
NOW = 1_764_064_900.0
#: Requests in a stream are spaced this far apart on the virtual clock: 50 a second, as a
#: well-behaved prober might send, so that no rate limit of the reflector comes into play.
SPACING = 0.02


def request(seq: int, sent_time: float = NOW - 0.25) -> bytes:
    return f"Heartbeat {seq} {sent_time}".encode()


def at(index: int) -> float:
    """The receive time of the ``index``-th datagram of a stream."""
    return NOW + index * SPACING


def drops(reflector: Reflector, count: int) -> list[int]:
    """Sequence numbers of the valid requests the reflector dropped, out of ``count`` sent."""
    dropped = []
    for seq in range(1, count + 1):
        if reflector.reflect(request(seq), SOURCE, at(seq), at(seq)) is None:
            dropped.append(seq)
    return dropped


def assert_reconciled(reflector: Reflector) -> None:
    counters = reflector.counters
    assert counters.received == (
        counters.replied + counters.dropped_loss + counters.malformed_total
    )


# --- replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent_time", "now"),
    [
        (1764064899.75, NOW),
        (1764064863.1234567, 1764064863.1239999),
        (NOW + 2.0, NOW),  # a client clock ahead of ours: a negative difference
        (0.0, NOW),
    ],
)
def test_reply_carries_now_minus_sent_time_with_six_decimals(sent_time: float, now: float) -> None:
    reflector = Reflector()
    reply = reflector.reflect(f"Heartbeat 42 {sent_time}".encode(), SOURCE, now, now)
    assert reply == f"Seq: 42, Time Difference: {now - sent_time:.6f} seconds".encode()
    assert reflector.counters.replied == 1


def test_reply_echoes_the_sequence_digits_as_sent() -> None:
    reply = Reflector().reflect(b"Heartbeat 0042 1764064899.5\n", SOURCE, NOW, NOW)
    assert reply == b"Seq: 0042, Time Difference: 0.500000 seconds"


def test_replies_are_logged_with_their_source() -> None:
    reflector = Reflector()
    reflector.reflect(request(1), SOURCE, NOW, NOW)
    [record] = reflector.drain_log()
    assert (record.at, record.source, record.outcome) == (NOW, SOURCE, "replied")
    assert record.detail.startswith("Seq: 1, ")
    assert reflector.drain_log() == []


def test_nothing_valid_is_logged_when_log_events_is_off() -> None:
    reflector = Reflector(ReflectorConfig(log_events=False))
    assert reflector.reflect(request(1), SOURCE, NOW, NOW) is not None
    assert reflector.drain_log() == []
    reflector.reflect(b"junk", SOURCE, NOW, NOW)
    assert [r.outcome for r in reflector.drain_log()] == ["malformed"]


# --- simulated loss --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_loss_drops_the_fraction_asked_for(seed: int) -> None:
    reflector = Reflector(ReflectorConfig(loss=0.3, seed=seed, log_events=False))
    dropped = drops(reflector, 10_000)
    assert abs(len(dropped) / 10_000 - 0.3) <= 0.02
    counters = reflector.counters
    assert counters.dropped_loss == len(dropped)
    assert counters.replied == 10_000 - len(dropped)
    assert_reconciled(reflector)


def test_same_seed_same_drops_and_other_seeds_differ() -> None:
    def run(seed: int) -> list[int]:
        return drops(Reflector(ReflectorConfig(loss=0.3, seed=seed, log_events=False)), 10_000)

    first = run(7)
    assert run(7) == first
    assert run(8) != first
    assert run(9) != first


def test_malformed_datagrams_do_not_shift_the_drop_sequence() -> None:
    config = ReflectorConfig(loss=0.3, seed=3, log_events=False)
    clean, noisy = Reflector(config), Reflector(config)
    clean_outcomes, noisy_outcomes = [], []
    for seq in range(1, 500):
        clean_outcomes.append(clean.reflect(request(seq), SOURCE, at(2 * seq), at(2 * seq)))
        noisy.reflect(b"Heartbeat x 1.0", SOURCE, at(2 * seq - 1), at(2 * seq - 1))
        noisy_outcomes.append(noisy.reflect(request(seq), SOURCE, at(2 * seq), at(2 * seq)))
    assert noisy_outcomes == clean_outcomes


def test_loss_zero_replies_to_everything() -> None:
    reflector = Reflector(ReflectorConfig(loss=0.0, seed=1))
    assert drops(reflector, 2000) == []
    assert reflector.counters.dropped_loss == 0


def test_loss_one_replies_to_nothing_but_counts_it_all() -> None:
    reflector = Reflector(ReflectorConfig(loss=1.0, seed=1))
    assert len(drops(reflector, 2000)) == 2000
    assert reflector.counters.dropped_loss == 2000
    assert reflector.counters.replied == 0
    assert {r.outcome for r in reflector.drain_log()} == {"dropped-loss"}
    assert_reconciled(reflector)


def test_unseeded_loss_is_still_about_the_fraction_asked_for() -> None:
    dropped = drops(Reflector(ReflectorConfig(loss=0.5, log_events=False)), 10_000)
    assert abs(len(dropped) / 10_000 - 0.5) <= 0.03  # 6 standard deviations


@pytest.mark.parametrize("loss", [-0.1, 1.01, float("nan"), float("inf"), 30.0])
def test_loss_out_of_range_is_a_config_error(loss: float) -> None:
    with pytest.raises(ConfigError, match="loss"):
        ReflectorConfig(loss=loss)


# --- malformed input -------------------------------------------------------------------------

MALFORMED = [
    (b"\xff\xfe garbage", "not-text"),
    ("Heartbeat 1 1.0\u00e9".encode(), "not-text"),
    (b"Hello 1 1.0", "bad-keyword"),
    (b"", "bad-keyword"),
    (b"Heartbeat 1", "missing-field"),
    (b"Heartbeat 1 1.0 extra", "missing-field"),
    (b"Heartbeat  1 1.0", "missing-field"),
    (b"Heartbeat abc 1.0", "bad-sequence"),
    (b"Heartbeat -5 1.0", "bad-sequence"),
    (b"Heartbeat 9223372036854775808 1.0", "bad-sequence"),
    (b"Heartbeat 1 abc", "bad-timestamp"),
    (b"Heartbeat 1 nan", "bad-timestamp"),
    (b"Heartbeat 1 inf", "bad-timestamp"),
    (b"Heartbeat 1 -1.0", "bad-timestamp"),
    (b"Heartbeat 1 1e10", "bad-timestamp"),
    (b"Heartbeat 1 " + b"9" * MAX_REQUEST_SIZE, "oversize"),
    (b"x" * 65507, "oversize"),
]


@pytest.mark.parametrize(
    ("data", "reason"), MALFORMED, ids=[m[1] + "-" + repr(m[0])[:24] for m in MALFORMED]
)
def test_malformed_datagram_is_counted_by_reason_and_never_answered(
    data: bytes, reason: str
) -> None:
    reflector = Reflector(ReflectorConfig(loss=0.0))
    assert reflector.reflect(data, SOURCE, NOW, NOW) is None
    counters = reflector.counters
    assert dict(counters.malformed) == {reason: 1}
    assert (counters.received, counters.replied, counters.dropped_loss) == (1, 0, 0)
    [record] = reflector.drain_log()
    assert record.outcome == "malformed"
    assert record.detail.startswith(f"{reason}: ")
    assert record.source == SOURCE


@given(
    st.lists(
        st.one_of(st.binary(max_size=120), st.builds(request, st.integers(0, 10**6))), max_size=20
    )
)
def test_any_datagrams_get_a_valid_reply_or_none_and_are_all_counted(
    datagrams: list[bytes],
) -> None:
    reflector = Reflector(ReflectorConfig(loss=0.3, seed=5))
    for index, data in enumerate(datagrams):
        reply = reflector.reflect(data, SOURCE, at(index), at(index))
        try:
            asked = decode_request(data)
        except WireError:
            assert reply is None
            continue
        if reply is not None:
            assert decode_reply(reply).seq == asked.seq
    assert reflector.counters.received == len(datagrams)
    assert_reconciled(reflector)


def test_counters_reconcile_over_a_mixed_stream() -> None:
    reflector = Reflector(ReflectorConfig(loss=0.3, seed=11))
    replies = 0
    for seq in range(1, 3001):
        data = MALFORMED[seq % len(MALFORMED)][0] if seq % 3 == 0 else request(seq)
        if reflector.reflect(data, SOURCE, at(seq), at(seq)) is not None:
            replies += 1
        assert_reconciled(reflector)
    counters = reflector.counters
    assert counters.received == 3000
    assert counters.malformed_total == 1000
    assert counters.replied == replies
    assert counters.dropped_loss == 2000 - replies
    summary = counters.to_dict()
    assert summary["received"] == 3000
    assert summary["malformed"] == 1000
    assert summary["malformed_by_reason"] == dict(sorted(counters.malformed.items()))
    assert set(counters.malformed) == {reason for _, reason in MALFORMED}


# --- the log backlog is bounded --------------------------------------------------------------


def test_log_backlog_is_bounded_and_counts_what_it_suppressed() -> None:
    reflector = Reflector()
    extra = 123
    for seq in range(LOG_BACKLOG + extra):
        reflector.reflect(request(seq) if seq % 2 else b"junk", SOURCE, at(seq), at(seq))
    assert reflector.log_suppressed == extra
    records = reflector.drain_log()
    assert len(records) == LOG_BACKLOG
    # The oldest records are kept, in order; only the overflow is dropped.
    assert records[0].outcome == "malformed"
    assert records[1].outcome == "replied"
    assert records[1].detail.startswith("Seq: 1, ")
    # Counting is never suppressed, only logging.
    assert reflector.counters.received == LOG_BACKLOG + extra
    assert_reconciled(reflector)
    # Draining makes room again.
    reflector.reflect(request(1), SOURCE, at(LOG_BACKLOG + extra), at(LOG_BACKLOG + extra))
    assert len(reflector.drain_log()) == 1
    assert reflector.log_suppressed == extra
