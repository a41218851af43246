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


FIELD = st.one_of(
    st.text(alphabet="0123456789.eE+-_ \r\n\t", max_size=24).map(str.encode),
    # Around the largest sequence number, where the shortcut compares digit strings.
    st.integers(text.MAX_SEQUENCE - 10**6, text.MAX_SEQUENCE + 10**6).map(lambda n: b"%d" % n),
    st.integers(0, 10**19 - 1).map(lambda n: b"%019d" % n),
)


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


# The prober's side: ``format_request`` and ``TextCodec.encode_request`` write what
# ``encode_request(Heartbeat(...))`` writes; ``parse_reply`` and ``TextCodec.decode_reply`` accept
# and refuse what ``decode_reply`` does, with the same values and the same errors.

SEQUENCES = st.integers(min_value=0, max_value=text.MAX_SEQUENCE)
SEND_TIMES = st.floats(min_value=0.0, max_value=text.MAX_TIMESTAMP, exclude_max=True)


@settings(max_examples=1000)
@given(seq=SEQUENCES, sent_time=SEND_TIMES)
def test_format_request_is_encode_request_byte_for_byte(seq: int, sent_time: float) -> None:
    expected = text.encode_request(text.Heartbeat(seq, sent_time))
    assert text.format_request(seq, sent_time) == expected
    assert text.TextCodec().encode_request(seq, sent_time) == expected


@given(
    seq=st.one_of(st.integers(), st.booleans()),
    sent_time=st.one_of(st.floats(), st.integers(min_value=-5, max_value=5)),
)
def test_codec_encode_refuses_what_the_heartbeat_refuses(seq: int, sent_time: float) -> None:
    try:
        expected: bytes | str = text.encode_request(text.Heartbeat(seq, sent_time))
    except WireError as error:
        expected = str(error)
    try:
        got: bytes | str = text.TextCodec().encode_request(seq, sent_time)
    except WireError as error:
        got = str(error)
    assert got == expected


def decoded(data: bytes) -> tuple[int, float] | str:
    try:
        reply = text.decode_reply(data)
    except WireError as error:
        return f"{type(error).__name__}: {error}"
    return reply.seq, reply.time_difference


def reply_by_pattern_only(data: bytes) -> tuple[int, float] | None:
    """The reply's general path alone: the pattern and the bounds, no shortcut."""
    if len(data) > text.MAX_REPLY_SIZE:
        return None
    match = text._REPLY.fullmatch(data)
    if match is None:
        return None
    seq, difference = int(match[1]), float(match[2])
    if seq > text.MAX_SEQUENCE or not abs(difference) < text.MAX_TIMESTAMP:
        return None
    return seq, difference


def parsed_reply(data: bytes) -> tuple[int, float] | str:
    try:
        return text.parse_reply(data)
    except WireError as error:
        return f"{type(error).__name__}: {error}"


REPLY_FIELD = st.text(alphabet="0123456789.-+e ,", max_size=22).map(str.encode)


@settings(max_examples=1000)
@given(
    seq=st.one_of(REPLY_FIELD, st.integers(0, 2**64).map(lambda n: str(n).encode())),
    difference=st.one_of(
        REPLY_FIELD,
        st.floats(min_value=-2e11, max_value=2e11).map(lambda x: b"%.6f" % x),
    ),
)
def test_parse_reply_agrees_with_decode_reply(seq: bytes, difference: bytes) -> None:
    data = b"Seq: " + seq + b", Time Difference: " + difference + b" seconds"
    result = parsed_reply(data)
    assert result == decoded(data)
    expected = reply_by_pattern_only(data)
    assert result == expected if expected is not None else isinstance(result, str)
    codec_result: tuple[int, float] | str
    try:
        reply = text.TextCodec().decode_reply(data)
        codec_result = reply.seq, reply.time_difference
    except WireError as error:
        codec_result = f"{type(error).__name__}: {error}"
    assert codec_result == result
