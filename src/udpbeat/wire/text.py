"""The exercise's text format, byte for byte.

Request (client to server)::

    Heartbeat <seq> <sent_unix_time>

``<sent_unix_time>`` is written as Python writes a float (``str(time.time())``, e.g.
``1764064863.1234567``). Reply (server to client)::

    Seq: <seq>, Time Difference: <receive_time - sent_time, 6 decimals> seconds

Decoding is strict: anything but these shapes raises a :class:`~udpbeat.errors.WireError`
subclass naming the field that was wrong, never another exception. The one leniency is a
trailing ``\\n`` or ``\\r\\n`` on a request, so that ``echo ... | nc -u`` works.

Bounds keep replies small (a reflector must not amplify): a sequence number is at most 19
decimal digits (``0 <= seq <= 2**63 - 1``), a timestamp lies in ``[0, 1e10)`` (before the
year 2286) and a time difference in ``(-1e10, 1e10)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from udpbeat.errors import (
    BadKeyword,
    BadSequence,
    BadTimestamp,
    MissingField,
    NotText,
    Oversize,
    WireError,
)
from udpbeat.wire.base import DecodedReply

MAX_SEQUENCE = 2**63 - 1
MAX_TIMESTAMP = 1e10
#: No valid request is longer: keyword, 19 digits, a float repr, a CRLF, with room to spare.
MAX_REQUEST_SIZE = 96
MAX_REPLY_SIZE = 96

_REQUEST = re.compile(
    rb"Heartbeat ([0-9]{1,19}) ([0-9]{1,17}(?:\.[0-9]{0,20})?(?:[eE][+-]?[0-9]{1,3})?)(?:\r?\n)?"
)
_REPLY = re.compile(rb"Seq: ([0-9]{1,19}), Time Difference: (-?[0-9]{1,11}\.[0-9]{6}) seconds")
_DIGITS = re.compile(rb"[0-9]+")
_MAX_SEQUENCE_DIGITS = str(MAX_SEQUENCE).encode()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A request: sequence number and the sender's wall-clock time (Unix seconds)."""

    seq: int
    sent_time: float

    def __post_init__(self) -> None:
        _check_sequence(self.seq)
        if not (math.isfinite(self.sent_time) and 0.0 <= self.sent_time < MAX_TIMESTAMP):
            raise BadTimestamp(
                f"heartbeat timestamp {self.sent_time!r} is outside [0, {MAX_TIMESTAMP:.0e}); "
                "send Unix time in seconds"
            )


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """A reply: the sequence number echoed and the server's receive time minus sent time.

    The wire carries the difference with 6 decimals, so a decoded reply holds it rounded
    to the microsecond.
    """

    seq: int
    time_difference: float

    def __post_init__(self) -> None:
        _check_sequence(self.seq)
        if not (math.isfinite(self.time_difference) and abs(self.time_difference) < MAX_TIMESTAMP):
            raise _bad_time_difference(self.time_difference)


def _bad_time_difference(time_difference: float) -> BadTimestamp:
    return BadTimestamp(
        f"time difference {time_difference!r} is outside (-1e10, 1e10) seconds; "
        "check that the timestamp sent is Unix time in seconds"
    )


def encode_request(message: Heartbeat) -> bytes:
    # ``+ 0.0`` turns -0.0 (which the constructor accepts) into 0.0: "-0.0" would not decode.
    return f"Heartbeat {message.seq} {message.sent_time + 0.0!r}".encode("ascii")


def encode_reply(message: HeartbeatReply) -> bytes:
    return f"Seq: {message.seq}, Time Difference: {message.time_difference:.6f} seconds".encode(
        "ascii"
    )


def parse_request(data: bytes) -> tuple[bytes, float]:
    """The hot path of a reflector: the sequence number's digits as sent, and the timestamp.

    Echoing the digits as sent (rather than re-printing an int) is what the exercise's server
    does, so ``Heartbeat 007 ...`` is answered ``Seq: 007, ...`` by both.

    Raises:
        WireError: a subclass naming what was wrong.
    """
    # The usual shape, ``Heartbeat <up to 19 digits, at most 2**63-1> <digits>[.<digits>]``
    # with no line ending, is recognised with bytes methods, cheaper than the regular
    # expression; anything else, including every error and every bound left to check, takes
    # the general path below. (Digit strings of the same length compare as their numbers.)
    if data[:10] == b"Heartbeat ":
        digits, _, stamp = data[10:].partition(b" ")
        whole, _, fraction = stamp.partition(b".")
        if (
            (len(digits) <= 18 or (len(digits) == 19 and digits <= _MAX_SEQUENCE_DIGITS))
            and digits.isdigit()
            and len(whole) <= 17
            and whole.isdigit()
            and len(fraction) <= 20
            and (fraction.isdigit() or not fraction)
        ):
            sent_time = float(stamp)
            if sent_time < MAX_TIMESTAMP:
                return digits, sent_time
    match = _REQUEST.fullmatch(data)
    if match is None:
        raise _diagnose_request(data)
    digits, stamp = match.groups()
    if len(digits) == 19 and int(digits) > MAX_SEQUENCE:
        raise BadSequence(f"sequence number {digits.decode()} exceeds {MAX_SEQUENCE}")
    sent_time = float(stamp)
    if sent_time >= MAX_TIMESTAMP:
        raise BadTimestamp(
            f"heartbeat timestamp {stamp.decode()} is not before {MAX_TIMESTAMP:.0e}; "
            "send Unix time in seconds"
        )
    return digits, sent_time


#: ``REPLY_FORMAT % (seq_digits, time_difference)`` is :func:`format_reply` without the call.
REPLY_FORMAT = b"Seq: %s, Time Difference: %.6f seconds"


def format_reply(seq_digits: bytes, time_difference: float) -> bytes:
    """The reply for a parsed request; the hot-path twin of :func:`encode_reply`."""
    return REPLY_FORMAT % (seq_digits, time_difference)


def decode_request(data: bytes) -> Heartbeat:
    """Raises: WireError (a subclass naming the field) for anything but a valid request."""
    digits, sent_time = parse_request(data)
    return Heartbeat(int(digits), sent_time)


#: ``REQUEST_FORMAT % (seq, sent_time + 0.0)`` is :func:`format_request` without the call
#: (``%a`` of a float is its ``repr``, as :func:`encode_request` writes it).
REQUEST_FORMAT = b"Heartbeat %d %a"


def format_request(seq: int, sent_time: float) -> bytes:
    """The request for a sequence number and send time already known to be valid (a session's
    own: numbered from a checked first one, stamped by a clock); the hot-path twin of
    :func:`encode_request`, byte for byte the same, without building a :class:`Heartbeat`."""
    return REQUEST_FORMAT % (seq, sent_time + 0.0)


def decode_reply(data: bytes) -> HeartbeatReply:
    """Raises: WireError (a subclass naming the field) for anything but a valid reply."""
    return HeartbeatReply(*parse_reply(data))


def parse_reply(data: bytes) -> tuple[int, float]:
    """The hot path of a prober: the sequence number and the time difference of a reply, with
    the checks of :func:`decode_reply` and without building a :class:`HeartbeatReply`.

    Raises:
        WireError: a subclass naming what was wrong.
    """
    if len(data) > MAX_REPLY_SIZE:
        raise Oversize(f"reply of {len(data)} bytes is longer than {MAX_REPLY_SIZE}")
    match = _REPLY.fullmatch(data)
    if match is None:
        raise _diagnose_reply(data)
    digits, difference = match.groups()
    seq = int(digits)
    if seq > MAX_SEQUENCE:
        raise BadSequence(f"reply sequence number {seq} exceeds {MAX_SEQUENCE}")
    time_difference = float(difference)
    # The pattern allows 11 integer digits, so the bound is checked here (as the reply's own).
    if not abs(time_difference) < MAX_TIMESTAMP:
        raise _bad_time_difference(time_difference)
    return seq, time_difference


def _check_sequence(seq: int) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQUENCE:
        raise BadSequence(f"sequence number {seq!r} is not an integer in [0, {MAX_SEQUENCE}]")


def _ascii(data: bytes, what: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise NotText(f"{what} is not ASCII text; expected the exercise's text format") from None


def _diagnose_request(data: bytes) -> WireError:
    """Name what is wrong with a request the fast pattern rejected (the cold path)."""
    if len(data) > MAX_REQUEST_SIZE:
        return Oversize(f"request of {len(data)} bytes is longer than {MAX_REQUEST_SIZE}")
    try:
        text = _ascii(data, "request")
    except NotText as error:
        return error
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    fields = text.split(" ")
    if fields[0] != "Heartbeat":
        return BadKeyword(f"request starts with {fields[0][:16]!r}, expected 'Heartbeat'")
    if len(fields) != 3 or not all(fields):
        return MissingField(
            "request must be 'Heartbeat <seq> <unix-time>' with single spaces, "
            f"got {len(fields) - 1} field(s)"
        )
    seq_text, stamp = fields[1], fields[2]
    if not _DIGITS.fullmatch(seq_text.encode()) or len(seq_text) > 19:
        return BadSequence(f"sequence number {seq_text[:24]!r} is not a decimal integer 0..2**63-1")
    return BadTimestamp(
        f"timestamp {stamp[:24]!r} is not a non-negative decimal number; send Unix time in seconds"
    )


def _diagnose_reply(data: bytes) -> WireError:
    try:
        text = _ascii(data, "reply")
    except NotText as error:
        return error
    if not text.startswith("Seq: "):
        return BadKeyword(f"reply starts with {text[:16]!r}, expected 'Seq: '")
    head, sep, tail = text[5:].partition(", Time Difference: ")
    if not sep or not tail.endswith(" seconds"):
        return MissingField(
            f"reply must be 'Seq: <seq>, Time Difference: <x.xxxxxx> seconds', got {text[:48]!r}"
        )
    if not _DIGITS.fullmatch(head.encode()) or len(head) > 19:
        return BadSequence(f"reply sequence number {head[:24]!r} is not a decimal integer")
    return BadTimestamp(
        f"time difference {tail[:-8][:24]!r} is not a number with 6 decimals under 1e10"
    )


class TextCodec:
    """The exercise's format as a :class:`~udpbeat.wire.base.Codec` for the prober."""

    name = "text"
    sequence_modulus: int | None = None

    def encode_request(self, seq: int, wall_time: float) -> bytes:
        # The usual case, checked in one expression (NaN and infinities fail the comparisons);
        # anything else goes through the Heartbeat, which raises the error that names it.
        if (
            type(seq) is int
            and 0 <= seq <= MAX_SEQUENCE
            and type(wall_time) is float
            and 0.0 <= wall_time < MAX_TIMESTAMP
        ):
            return REQUEST_FORMAT % (seq, wall_time + 0.0)
        return encode_request(Heartbeat(seq, wall_time))

    def decode_reply(self, data: bytes) -> DecodedReply:
        seq, time_difference = parse_reply(data)
        return DecodedReply(seq, time_difference)

    def request_seq(self, data: bytes) -> int:
        return decode_request(data).seq
