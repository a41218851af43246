"""``parse_request``'s bytes-method shortcut gives exactly what the regular expression gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from udpbeat.errors import WireError
from udpbeat.wire import text


def by_pattern_only(data: bytes) -> tuple[bytes, float] | None:
    """The general path alone: the pattern and the bounds, no shortcut."""
    match = text._REQUEST.fullmatch(data)
    if match is None:
        return None
    digits, stamp = match.groups()
    if len(digits) == 19 and int(digits) > text.MAX_SEQUENCE:
        return None
    sent_time = float(stamp)
    return (digits, sent_time) if sent_time < text.MAX_TIMESTAMP else None


def parsed(data: bytes) -> tuple[bytes, float] | None:
    try:
        return text.parse_request(data)
    except WireError:
        return None


FIELD = st.text(alphabet="0123456789.eE+-_ \r\n\t", max_size=24).map(str.encode)


@settings(max_examples=3000)
@given(seq=FIELD, stamp=FIELD, tail=st.sampled_from([b"", b"\n", b"\r\n", b" ", b"x"]))
def test_shortcut_agrees_with_the_pattern(seq: bytes, stamp: bytes, tail: bytes) -> None:
    data = b"Heartbeat " + seq + b" " + stamp + tail
    assert parsed(data) == by_pattern_only(data)


@given(st.binary(max_size=64))
def test_shortcut_agrees_on_arbitrary_bytes(data: bytes) -> None:
    assert parsed(data) == by_pattern_only(data)
    assert parsed(b"Heartbeat " + data) == by_pattern_only(b"Heartbeat " + data)


def test_shortcut_cases_at_the_bounds() -> None:
    for data in [
        b"Heartbeat 1 1.",
        b"Heartbeat 1 1",
        b"Heartbeat 123456789012345678 1.5",  # 18 digits: the shortcut
        b"Heartbeat 9223372036854775807 1.5",  # 19 digits: the general path
        b"Heartbeat 1 9999999999.999999",
        b"Heartbeat 1 10000000000.0",  # past the bound: refused either way
        b"Heartbeat 1 12345678901234567.5",
        b"Heartbeat 1 123456789012345678.5",  # 18 digits before the point: refused
        b"Heartbeat 1 1.123456789012345678901",  # 21 decimals: refused
        b"Heartbeat 1 .5",
        b"Heartbeat 1 1.5\n",
    ]:
        assert parsed(data) == by_pattern_only(data), data
