"""The exercise's text format: byte-exact encoding, strict decoding, and the fuzz invariant."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from udpbeat.errors import (
    BadKeyword,
    BadSequence,
    BadTimestamp,
    MissingField,
    NotText,
    Oversize,
    WireError,
)
from udpbeat.wire.text import (
    MAX_REPLY_SIZE,
    MAX_REQUEST_SIZE,
    MAX_SEQUENCE,
    MAX_TIMESTAMP,
    Heartbeat,
    HeartbeatReply,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    format_reply,
    parse_request,
)

sequences = st.integers(min_value=0, max_value=MAX_SEQUENCE)
timestamps = st.floats(min_value=0.0, max_value=MAX_TIMESTAMP, exclude_max=True)
# What the wire can carry: at most 6 decimals, strictly inside (-1e10, 1e10).
time_differences = st.floats(min_value=-9e9, max_value=9e9).map(lambda d: round(d, 6))


def exercise_request(seq: int, start_time: float) -> bytes:
    """The exercise client's message, exactly as it builds it."""
    return f"Heartbeat {seq} {start_time}".encode()


def exercise_reply(seq: object, time_difference: float) -> bytes:
    """The exercise server's response, exactly as it builds it."""
    return f"Seq: {seq}, Time Difference: {time_difference:.6f} seconds".encode()


# --- encoding is the exercise's, byte for byte -----------------------------------------------


def test_request_of_the_current_time_is_the_exercise_bytes() -> None:
    for seq in (1, 2, 100, MAX_SEQUENCE):
        now = time.time()
        assert encode_request(Heartbeat(seq, now)) == exercise_request(seq, now)


@given(sequences, timestamps)
@example(1, 0.0)
@example(1, 1e-05)
@example(1, 5e-324)
@example(1, 0.00012345678901234567)
@example(1, 1764064863.1234567)
@example(1, 9999999999.999998)
def test_request_encoding_matches_the_exercise_fstring(seq: int, sent_time: float) -> None:
    assert encode_request(Heartbeat(seq, sent_time)) == exercise_request(seq, sent_time)


@given(sequences, time_differences)
@example(1, 0.0)
@example(1, -0.0)
@example(7, 0.0000004)
@example(7, -1.5)
def test_reply_encoding_matches_the_exercise_fstring(seq: int, difference: float) -> None:
    assert encode_reply(HeartbeatReply(seq, difference)) == exercise_reply(seq, difference)


@given(sequences, time_differences)
def test_format_reply_matches_encode_reply(seq: int, difference: float) -> None:
    digits = str(seq).encode()
    assert format_reply(digits, difference) == encode_reply(HeartbeatReply(seq, difference))


@given(sequences, timestamps, st.floats(min_value=0.0, max_value=1e9))
def test_parse_request_and_format_reply_answer_as_the_exercise_server_does(
    seq: int, sent_time: float, elapsed: float
) -> None:
    receive_time = sent_time + elapsed
    digits, parsed_time = parse_request(exercise_request(seq, sent_time))
    assert digits == str(seq).encode()
    assert parsed_time == sent_time
    reply = format_reply(digits, receive_time - parsed_time)
    # The exercise server's own computation on the same datagram:
    parts = exercise_request(seq, sent_time).decode().split()
    assert reply == exercise_reply(parts[1], receive_time - float(parts[2]))
    assert reply == encode_reply(HeartbeatReply(seq, receive_time - sent_time))


def test_sequence_digits_are_echoed_as_sent() -> None:
    digits, sent_time = parse_request(b"Heartbeat 007 12.5")
    assert (digits, sent_time) == (b"007", 12.5)
    assert format_reply(digits, 0.25) == b"Seq: 007, Time Difference: 0.250000 seconds"
    assert decode_request(b"Heartbeat 007 12.5") == Heartbeat(7, 12.5)


# --- round trips -----------------------------------------------------------------------------


@given(sequences, timestamps)
@example(0, 0.0)
@example(MAX_SEQUENCE, 9999999999.999998)
@example(1, -0.0)
def test_request_round_trip(seq: int, sent_time: float) -> None:
    message = Heartbeat(seq, sent_time)
    decoded = decode_request(encode_request(message))
    assert decoded == message
    assert decoded.sent_time == sent_time


@given(sequences, time_differences)
@example(MAX_SEQUENCE, -9999999999.999998)
@example(0, 9999999999.999998)
def test_reply_round_trip(seq: int, difference: float) -> None:
    message = HeartbeatReply(seq, difference)
    assert decode_reply(encode_reply(message)) == message


def test_decoded_reply_is_rounded_to_the_microsecond() -> None:
    reply = decode_reply(encode_reply(HeartbeatReply(3, 0.12345678)))
    assert reply == HeartbeatReply(3, 0.123457)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_request_accepts_one_trailing_newline(ending: bytes) -> None:
    assert decode_request(b"Heartbeat 5 1764064863.25" + ending) == Heartbeat(5, 1764064863.25)


def test_sequence_and_timestamp_bounds_are_inclusive_where_documented() -> None:
    assert decode_request(f"Heartbeat {MAX_SEQUENCE} 0.0".encode()).seq == MAX_SEQUENCE
    assert decode_request(b"Heartbeat 0 0").sent_time == 0.0
    assert decode_request(b"Heartbeat 1 9999999999.5").sent_time == 9999999999.5
    assert decode_request(b"Heartbeat 1 1.5e3").sent_time == 1500.0
    assert decode_reply(f"Seq: {MAX_SEQUENCE}, Time Difference: 0.000000 seconds".encode()).seq == (
        MAX_SEQUENCE
    )


# --- malformed requests: the right error, a useful message -----------------------------------

MALFORMED_REQUESTS: list[tuple[bytes, type[WireError], str]] = [
    (b"Heartbeat 1 \xff", NotText, "ASCII"),
    (b"\xff\xfe\x00\x01", NotText, "ASCII"),
    ("Heartbeat \u0661 1.0".encode(), NotText, "ASCII"),  # an Arabic-Indic digit, valid UTF-8
    ("Heartbeat 1 1.0\u00a0".encode(), NotText, "ASCII"),
    (b"Heartbeet 1 1.0", BadKeyword, "'Heartbeat'"),
    (b"heartbeat 1 1.0", BadKeyword, "'heartbeat'"),
    (b"", BadKeyword, "'Heartbeat'"),
    (b" Heartbeat 1 1.0", BadKeyword, "'Heartbeat'"),
    (b"Ping 1 1.0", BadKeyword, "'Ping'"),
    (b"Heartbeat", MissingField, "single spaces"),
    (b"Heartbeat 1", MissingField, "1 field"),
    (b"Heartbeat 1 1.0 2.0", MissingField, "3 field"),
    (b"Heartbeat 1 1.0 ", MissingField, "single spaces"),
    (b"Heartbeat  1 1.0", MissingField, "single spaces"),
    (b"Heartbeat 1  1.0", MissingField, "single spaces"),
    (b"Heartbeat\t1\t1.0", BadKeyword, "'Heartbeat\\t1"),
    (b"Heartbeat x 1.0", BadSequence, "'x'"),
    (b"Heartbeat -1 1.0", BadSequence, "'-1'"),
    (b"Heartbeat +1 1.0", BadSequence, "'+1'"),
    (b"Heartbeat 1.5 1.0", BadSequence, "'1.5'"),
    (b"Heartbeat 1e3 1.0", BadSequence, "'1e3'"),
    (b"Heartbeat 9223372036854775808 1.0", BadSequence, "9223372036854775808"),
    (b"Heartbeat 99999999999999999999 1.0", BadSequence, "99999999999999999999"),
    (b"Heartbeat 1 abc", BadTimestamp, "'abc'"),
    (b"Heartbeat 1 nan", BadTimestamp, "'nan'"),
    (b"Heartbeat 1 NaN", BadTimestamp, "'NaN'"),
    (b"Heartbeat 1 inf", BadTimestamp, "'inf'"),
    (b"Heartbeat 1 -inf", BadTimestamp, "'-inf'"),
    (b"Heartbeat 1 infinity", BadTimestamp, "'infinity'"),
    (b"Heartbeat 1 1e999", BadTimestamp, "1e999"),
    (b"Heartbeat 1 -1.0", BadTimestamp, "'-1.0'"),
    (b"Heartbeat 1 -0.0", BadTimestamp, "'-0.0'"),
    (b"Heartbeat 1 1e10", BadTimestamp, "1e10"),
    (b"Heartbeat 1 10000000000.0", BadTimestamp, "10000000000.0"),
    (b"Heartbeat 1 1_000.0", BadTimestamp, "'1_000.0'"),
    (b"Heartbeat 1 .5", BadTimestamp, "'.5'"),
    (b"Heartbeat 1 0x10", BadTimestamp, "'0x10'"),
    (b"Heartbeat 1 1.0\n\n", BadTimestamp, "1.0"),
    (b"Heartbeat 1 1.0\r", BadTimestamp, "1.0"),
    (b"Heartbeat 1 1.0\x00", BadTimestamp, "1.0"),
    (b"Heartbeat 1 " + b"1" * MAX_REQUEST_SIZE, Oversize, f"longer than {MAX_REQUEST_SIZE}"),
    (b"\xff" * 2000, Oversize, "2000 bytes"),
]


@pytest.mark.parametrize(
    ("data", "error", "in_message"),
    MALFORMED_REQUESTS,
    ids=[repr(m[0])[:40] for m in MALFORMED_REQUESTS],
)
def test_malformed_request_raises_the_error_naming_the_field(
    data: bytes, error: type[WireError], in_message: str
) -> None:
    with pytest.raises(error) as raised:
        decode_request(data)
    assert type(raised.value) is error
    assert in_message in str(raised.value)
    with pytest.raises(error):
        parse_request(data)


def test_every_request_error_has_a_distinct_stable_reason() -> None:
    reasons = {error.reason for _, error, _ in MALFORMED_REQUESTS}
    assert reasons == {
        "not-text",
        "bad-keyword",
        "missing-field",
        "bad-sequence",
        "bad-timestamp",
        "oversize",
    }


# --- malformed replies -----------------------------------------------------------------------

MALFORMED_REPLIES: list[tuple[bytes, type[WireError], str]] = [
    (b"Seq: 1, Time Difference: 0.000100 seconds\xff", NotText, "ASCII"),
    ("Seq: \u0661, Time Difference: 0.000100 seconds".encode(), NotText, "ASCII"),
    (b"Sequence: 1, Time Difference: 0.000100 seconds", BadKeyword, "'Seq: '"),
    (b"seq: 1, Time Difference: 0.000100 seconds", BadKeyword, "'Seq: '"),
    (b"", BadKeyword, "'Seq: '"),
    (b"Seq: 1", MissingField, "Time Difference"),
    (b"Seq: 1, Time Difference: 0.000100", MissingField, "Time Difference"),
    (b"Seq: 1, Time Difference: 0.000100 seconds extra", MissingField, "Time Difference"),
    (b"Seq: 1,  Time Difference: 0.000100 seconds", MissingField, "Time Difference"),
    (b"Seq: 1, Time Difference:  0.000100 seconds", BadTimestamp, "' 0.000100'"),
    (b"Seq:  1, Time Difference: 0.000100 seconds", BadSequence, "' 1'"),
    (b"Seq: x, Time Difference: 0.000100 seconds", BadSequence, "'x'"),
    (b"Seq: -1, Time Difference: 0.000100 seconds", BadSequence, "'-1'"),
    (b"Seq: 9223372036854775808, Time Difference: 0.000100 seconds", BadSequence, "exceeds"),
    (
        b"Seq: 99999999999999999999, Time Difference: 0.1 seconds",
        BadSequence,
        "99999999999999999999",
    ),
    (b"Seq: 1, Time Difference: 0.1 seconds", BadTimestamp, "'0.1'"),
    (b"Seq: 1, Time Difference: nan seconds", BadTimestamp, "'nan'"),
    (b"Seq: 1, Time Difference: inf seconds", BadTimestamp, "'inf'"),
    (b"Seq: 1, Time Difference: abc seconds", BadTimestamp, "'abc'"),
    (b"Seq: 1, Time Difference: 1e3 seconds", BadTimestamp, "'1e3'"),
    (b"Seq: 1, Time Difference: 99999999999.000000 seconds", BadTimestamp, "1e10"),
    (b"Seq: 1, Time Difference: -10000000000.000000 seconds", BadTimestamp, "1e10"),
    (b"Seq: 1, Time Difference: 0.000100 seconds" + b" " * MAX_REPLY_SIZE, Oversize, "longer"),
]


@pytest.mark.parametrize(
    ("data", "error", "in_message"),
    MALFORMED_REPLIES,
    ids=[repr(m[0])[:40] for m in MALFORMED_REPLIES],
)
def test_malformed_reply_raises_the_error_naming_the_field(
    data: bytes, error: type[WireError], in_message: str
) -> None:
    with pytest.raises(error) as raised:
        decode_reply(data)
    assert type(raised.value) is error
    assert in_message in str(raised.value)


def test_reply_takes_no_trailing_newline() -> None:
    with pytest.raises(WireError):
        decode_reply(b"Seq: 1, Time Difference: 0.000100 seconds\n")


# --- constructors validate their fields ------------------------------------------------------


@pytest.mark.parametrize("seq", [-1, MAX_SEQUENCE + 1, True, 1.0, "1"])
def test_messages_reject_a_bad_sequence(seq: object) -> None:
    with pytest.raises(BadSequence):
        Heartbeat(seq, 1.0)  # type: ignore[arg-type]
    with pytest.raises(BadSequence):
        HeartbeatReply(seq, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("sent_time", [-1.0, MAX_TIMESTAMP, math.inf, math.nan])
def test_heartbeat_rejects_a_bad_timestamp(sent_time: float) -> None:
    with pytest.raises(BadTimestamp, match="Unix time"):
        Heartbeat(1, sent_time)


@pytest.mark.parametrize("difference", [MAX_TIMESTAMP, -MAX_TIMESTAMP, math.inf, math.nan])
def test_reply_rejects_a_bad_time_difference(difference: float) -> None:
    with pytest.raises(BadTimestamp, match="time difference"):
        HeartbeatReply(1, difference)


# --- the fuzz invariant: a message or a WireError, nothing else ------------------------------


def near_requests() -> st.SearchStrategy[bytes]:
    """Bytes close to a request, so the fuzzing reaches past the keyword check."""
    pieces = st.sampled_from(
        [
            "Heartbeat",
            " ",
            "  ",
            "1",
            "0",
            "9" * 19,
            "9" * 20,
            ".",
            "-",
            "+",
            "e",
            "E",
            "nan",
            "inf",
            "\r",
            "\n",
            "\x00",
            "\xe9",
            "1764064863.1234567",
            "1e-05",
            "_",
        ]
    )
    return st.lists(pieces, max_size=8).map(lambda parts: "".join(parts).encode("utf-8"))


def near_replies() -> st.SearchStrategy[bytes]:
    pieces = st.sampled_from(
        [
            "Seq: ",
            "Seq:",
            "1",
            "-",
            "9" * 19,
            "9" * 20,
            ", Time Difference: ",
            ",",
            " ",
            "0.123456",
            "0.1",
            "nan",
            "inf",
            "99999999999.000000",
            " seconds",
            "seconds",
            "\n",
            "\xff",
        ]
    )
    return st.lists(pieces, max_size=8).map(lambda parts: "".join(parts).encode("utf-8"))


@given(st.one_of(st.binary(max_size=200), near_requests()))
@example(b"Heartbeat 1 1e-999")
@example(b"Heartbeat 1 00000000000000000.00000000000000000000e999")
def test_decode_request_returns_a_message_or_raises_wire_error(data: bytes) -> None:
    try:
        message = decode_request(data)
    except WireError as error:
        assert error.reason != WireError.reason
        assert str(error)
    else:
        assert isinstance(message, Heartbeat)
        assert 0 <= message.seq <= MAX_SEQUENCE
        assert 0.0 <= message.sent_time < MAX_TIMESTAMP


@given(st.one_of(st.binary(max_size=200), near_replies()))
def test_decode_reply_returns_a_message_or_raises_wire_error(data: bytes) -> None:
    try:
        message = decode_reply(data)
    except WireError as error:
        assert error.reason != WireError.reason
        assert str(error)
    else:
        assert isinstance(message, HeartbeatReply)
        assert decode_reply(encode_reply(message)) == message
