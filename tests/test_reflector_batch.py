"""reflect_batch makes the same decisions, in the same order, as one reflect call per datagram."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from udpbeat.reflector import Reflector, ReflectorConfig

VALID = st.builds(
    lambda seq, stamp: b"Heartbeat %d %r" % (seq, stamp),
    st.integers(0, 10**6),
    st.floats(0, 1.8e9, allow_nan=False),
)
DATAGRAM = st.one_of(VALID, st.binary(max_size=120), st.just(b"Heartbeat 1 nan"))
CONFIG = st.builds(
    ReflectorConfig,
    loss=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 100),
    rate_limit=st.sampled_from([0.0, 5.0, 1e6]),
    burst=st.integers(1, 20),
    global_rate_limit=st.sampled_from([0.0, 7.0]),
    allow=st.sampled_from([(), ("127.0.0.0/8",), ("192.0.2.0/24",)]),
    max_size=st.sampled_from([13, 96]),
)
SOURCE = st.sampled_from([("127.0.0.1", 40000), ("127.0.0.1", 53), ("::ffff:127.0.0.1", 5000)])


@settings(max_examples=300, deadline=None)
@given(
    config=CONFIG,
    source=SOURCE,
    batches=st.lists(st.lists(DATAGRAM, min_size=1, max_size=12), min_size=1, max_size=5),
)
def test_a_batch_is_reflected_as_its_datagrams_one_by_one(
    config: ReflectorConfig, source: tuple[str, int], batches: list[list[bytes]]
) -> None:
    one_by_one, batched = Reflector(config), Reflector(config)
    for step, batch in enumerate(batches):
        now = 1_764_000_000.0 + step * 0.25
        expected = [one_by_one.reflect(data, source, now, now) for data in batch]
        assert batched.reflect_batch(batch, source, now, [now] * len(batch)) == expected
    assert batched.counters == one_by_one.counters
    assert batched.drain_log() == one_by_one.drain_log()
