"""STAMP test packets (RFC 8762, with RFC 8972's SSID and TLVs), pure: bytes to packets and back.

Layouts, in octets (big-endian, as every IETF format):

- Session-Sender, unauthenticated (RFC 8762 §4.2.1, RFC 8972 §3): sequence number 4,
  timestamp 8, Error Estimate 2, SSID 2, MBZ 28: **44**.
- Session-Reflector, unauthenticated (§4.3.1): sequence number 4, timestamp (T3) 8, Error
  Estimate 2, SSID 2, receive timestamp (T2) 8, Session-Sender sequence number 4,
  Session-Sender timestamp (T1) 8, Session-Sender Error Estimate 2, MBZ 2, Session-Sender TTL 1,
  MBZ 3: **44**.
- Session-Sender, authenticated (§4.2.2): sequence number 4, MBZ 12, timestamp 8, Error
  Estimate 2, SSID 2, MBZ 68, HMAC 16: **112**.
- Session-Reflector, authenticated (§4.3.2): sequence number 4, MBZ 12, timestamp 8, Error
  Estimate 2, SSID 2, MBZ 4, receive timestamp 8, MBZ 8, Session-Sender sequence number 4,
  MBZ 12, Session-Sender timestamp 8, Session-Sender Error Estimate 2, MBZ 6, Session-Sender
  TTL 1, MBZ 15, HMAC 16: **112**.

In authenticated mode the HMAC is HMAC-SHA-256 (RFC 2104) truncated to its first 16 octets,
computed over every octet that precedes it (the first 96) with the key both ends share
(§4.4). What follows the base packet is RFC 8972's TLVs (4-octet header: flags, type, length
of the value) or, from a sender that pads in the RFC 8762 way, plain padding: either is kept
intact as ``extra``.

Timestamps stay the raw 64-bit integers of the wire in the packet objects, so that encoding
and decoding are exact inverses; :func:`to_unix` / :func:`from_unix` convert, by the Z bit of
the Error Estimate: NTP's 64-bit format (seconds since 1900 and a binary fraction) or PTPv2's
truncated one (seconds since 1970 and nanoseconds).

Decoding raises only :class:`~udpbeat.errors.WireError` subclasses. MBZ octets are ignored on
receipt and zero on transmission, as §4.2.1 says.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from dataclasses import dataclass, field

from udpbeat.errors import BadHmac, BadSequence, BadTimestamp, BadTlv, ConfigError, ShortPacket
from udpbeat.wire.base import DecodedReply, Timestamps

#: IANA's port for STAMP (and TWAMP) test packets (RFC 8762 §4).
DEFAULT_PORT = 862
BASE_SIZE = 44
AUTHENTICATED_SIZE = 112
HMAC_SIZE = 16
#: Octets the HMAC covers: all that precede it.
HMAC_COVERED = AUTHENTICATED_SIZE - HMAC_SIZE
MAX_SEQUENCE = 2**32 - 1
SEQUENCE_SIZE = 4
SEQUENCE_MODULUS = 2**32
#: Seconds from NTP's epoch (1900-01-01) to Unix's (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800
#: The TLV types understood (RFC 8972 §4.1: Extra Padding); any other is reflected intact with
#: its U (unrecognized) flag set.
EXTRA_PADDING = 1
KNOWN_TLV_TYPES = frozenset({EXTRA_PADDING})
TLV_FLAG_UNRECOGNIZED = 0x80
TLV_HEADER = struct.Struct("!BBH")
#: TTL written by a reflector that was not told the request's (no IP_RECVTTL on the platform).
UNKNOWN_TTL = 255

SENDER = struct.Struct("!IQHH28x")
REFLECTOR = struct.Struct("!IQHHQIQH2xB3x")
SENDER_AUTHENTICATED = struct.Struct("!I12xQHH68x")
REFLECTOR_AUTHENTICATED = struct.Struct("!I12xQHH4xQ8xI12xQH6xB15x")
#: The reflector's fast path: the request's sequence number, timestamp and Error Estimate (the
#: first 14 octets of an unauthenticated request) are copied as they are, never decoded.
REFLECTOR_FROM_REQUEST = struct.Struct("!IQHHQ14s2xB3x")
SENDER_HEAD = struct.Struct("!IQHH")

_TWO_32 = 2**32


# --- timestamps and the Error Estimate -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorEstimate:
    """RFC 4656 §4.1.2 (as RFC 8762 §4.2.1 uses it): ``S`` (synchronized to UTC), ``Z`` (RFC
    8186: 0 NTP, 1 PTPv2 timestamps), and the error ``multiplier * 2**(scale - 32)`` seconds.

    Raises:
        ConfigError: a field out of its bits' range.
    """

    synchronized: bool = False
    ptp: bool = False
    scale: int = 0
    multiplier: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.scale, int) and 0 <= self.scale < 64):
            raise ConfigError(f"error estimate scale must be in 0..63, got {self.scale!r}")
        if not (isinstance(self.multiplier, int) and 0 <= self.multiplier < 256):
            raise ConfigError(
                f"error estimate multiplier must be in 0..255, got {self.multiplier!r}"
            )

    @property
    def seconds(self) -> float:
        return self.multiplier * 2.0 ** (self.scale - 32)

    def to_int(self) -> int:
        return (self.synchronized << 15) | (self.ptp << 14) | (self.scale << 8) | self.multiplier

    @classmethod
    def from_int(cls, value: int) -> ErrorEstimate:
        return cls(bool(value & 0x8000), bool(value & 0x4000), (value >> 8) & 0x3F, value & 0xFF)


def from_unix(unix_time: float, ptp: bool = False) -> int:
    """The 64-bit wire timestamp of ``unix_time`` (NTP format, or PTPv2 truncated)."""
    if not math.isfinite(unix_time):
        raise BadTimestamp(f"timestamp {unix_time!r} is not a finite number")
    if ptp:
        seconds = math.floor(unix_time)
        nanoseconds = min(int((unix_time - seconds) * 1e9), 999_999_999)
        return ((seconds % _TWO_32) << 32) | nanoseconds
    since_1900 = unix_time + NTP_UNIX_OFFSET
    seconds = math.floor(since_1900)
    fraction = min(int((since_1900 - seconds) * _TWO_32), _TWO_32 - 1)
    return ((seconds % _TWO_32) << 32) | fraction


def to_unix(raw: int, ptp: bool = False) -> float:
    """Unix seconds of a 64-bit wire timestamp.

    NTP seconds with the top bit clear are taken as era 1 (from 2036 on), as RFC 4330 §3 does.

    Raises:
        BadTimestamp: a PTPv2 timestamp with a nanoseconds field of a second or more.
    """
    seconds, low = raw >> 32, raw & 0xFFFFFFFF
    if ptp:
        if low >= 1_000_000_000:
            raise BadTimestamp(f"PTPv2 timestamp has {low} nanoseconds, not under a second")
        return seconds + low * 1e-9
    if seconds < 2**31:
        seconds += _TWO_32
    return (seconds - NTP_UNIX_OFFSET) + low / _TWO_32


# --- TLVs (RFC 8972 §4) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tlv:
    """One STAMP TLV: ``flags`` (U, M, I and reserved bits), ``type`` and ``value``."""

    type: int
    value: bytes = b""
    flags: int = 0

    def encode(self) -> bytes:
        return TLV_HEADER.pack(self.flags, self.type, len(self.value)) + self.value


def parse_tlvs(data: bytes) -> list[Tlv]:
    """The TLVs that make up ``data`` exactly.

    Raises:
        BadTlv: a header or a value runs past the end.
    """
    tlvs = []
    offset, end = 0, len(data)
    while offset < end:
        if offset + TLV_HEADER.size > end:
            raise BadTlv(f"{end - offset} octets after the last TLV are too few for a header")
        flags, kind, length = TLV_HEADER.unpack_from(data, offset)
        offset += TLV_HEADER.size
        if offset + length > end:
            raise BadTlv(f"TLV type {kind} claims {length} octets, {end - offset} are left")
        tlvs.append(Tlv(kind, data[offset : offset + length], flags))
        offset += length
    return tlvs


def reflect_extra(extra: bytes) -> bytes:
    """What a reflector sends back after its base packet for a request's ``extra`` octets.

    The same length (symmetric size, RFC 8762 §4.2.1). Well-formed TLVs come back with the U
    flag set on the types not understood (RFC 8972 §4); anything else (padding, as a plain RFC
    8762 sender sends) comes back as it was.
    """
    if not extra:
        return extra
    try:
        tlvs = parse_tlvs(extra)
    except BadTlv:
        return extra
    if all(tlv.type in KNOWN_TLV_TYPES for tlv in tlvs):
        return extra
    return b"".join(
        tlv.encode()
        if tlv.type in KNOWN_TLV_TYPES
        else Tlv(tlv.type, tlv.value, tlv.flags | TLV_FLAG_UNRECOGNIZED).encode()
        for tlv in tlvs
    )


def padding_tlv(total: int) -> bytes:
    """An Extra Padding TLV of ``total`` octets in all (at least its 4-octet header)."""
    if total < TLV_HEADER.size:
        raise ConfigError(f"an Extra Padding TLV takes at least {TLV_HEADER.size} octets")
    return Tlv(EXTRA_PADDING, bytes(total - TLV_HEADER.size)).encode()


# --- packets ---------------------------------------------------------------------------------


def _check_sequence(seq: int, what: str) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQUENCE:
        raise BadSequence(f"{what} {seq!r} is not an integer in [0, 2**32-1]")


def _check_u64(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise BadTimestamp(f"{what} {value!r} is not a 64-bit wire timestamp")


def _check_u16(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**16:
        raise ConfigError(f"{what} must be in 0..65535, got {value!r}")


@dataclass(frozen=True, slots=True)
class SenderPacket:
    """A Session-Sender test packet. ``timestamp`` is the raw 64-bit T1; ``extra`` the octets
    after the base packet (TLVs or padding)."""

    seq: int
    timestamp: int
    error_estimate: ErrorEstimate = field(default_factory=ErrorEstimate)
    ssid: int = 0
    extra: bytes = b""

    def __post_init__(self) -> None:
        _check_sequence(self.seq, "sequence number")
        _check_u64(self.timestamp, "timestamp")
        _check_u16(self.ssid, "SSID")

    @property
    def time(self) -> float:
        return to_unix(self.timestamp, self.error_estimate.ptp)


@dataclass(frozen=True, slots=True)
class ReflectorPacket:
    """A Session-Reflector test packet; timestamps are raw 64-bit: ``timestamp`` T3,
    ``receive_timestamp`` T2 (both in the reflector's format), ``sender_timestamp`` T1 (in the
    sender's)."""

    seq: int
    timestamp: int
    error_estimate: ErrorEstimate
    ssid: int
    receive_timestamp: int
    sender_seq: int
    sender_timestamp: int
    sender_error_estimate: ErrorEstimate
    sender_ttl: int
    extra: bytes = b""

    def __post_init__(self) -> None:
        _check_sequence(self.seq, "sequence number")
        _check_sequence(self.sender_seq, "Session-Sender sequence number")
        _check_u64(self.timestamp, "timestamp")
        _check_u64(self.receive_timestamp, "receive timestamp")
        _check_u64(self.sender_timestamp, "Session-Sender timestamp")
        _check_u16(self.ssid, "SSID")
        if not (isinstance(self.sender_ttl, int) and 0 <= self.sender_ttl <= 255):
            raise ConfigError(f"Session-Sender TTL must be in 0..255, got {self.sender_ttl!r}")

    def timestamps(self) -> Timestamps:
        """T1, T2, T3 as Unix seconds.

        Raises:
            BadTimestamp: a PTPv2 timestamp that is not one.
        """
        ptp = self.error_estimate.ptp
        return Timestamps(
            to_unix(self.sender_timestamp, self.sender_error_estimate.ptp),
            to_unix(self.receive_timestamp, ptp),
            to_unix(self.timestamp, ptp),
            self.seq,
            self.sender_ttl,
        )


def _hmac(key: bytes, covered: bytes) -> bytes:
    return hmac.new(key, covered, hashlib.sha256).digest()[:HMAC_SIZE]


def _verify(data: bytes, key: bytes) -> None:
    expected = _hmac(key, data[:HMAC_COVERED])
    if not hmac.compare_digest(expected, data[HMAC_COVERED:AUTHENTICATED_SIZE]):
        raise BadHmac("the HMAC does not match: another key, or the packet was altered")


def _base_size(key: bytes | None) -> int:
    return BASE_SIZE if key is None else AUTHENTICATED_SIZE


def encode_sender(packet: SenderPacket, key: bytes | None = None) -> bytes:
    """The packet's octets; authenticated (with its HMAC) when a ``key`` is given."""
    ee = packet.error_estimate.to_int()
    if key is None:
        return SENDER.pack(packet.seq, packet.timestamp, ee, packet.ssid) + packet.extra
    head = SENDER_AUTHENTICATED.pack(packet.seq, packet.timestamp, ee, packet.ssid)
    return head + _hmac(key, head) + packet.extra


def decode_sender(data: bytes, key: bytes | None = None) -> SenderPacket:
    """Raises: ShortPacket; BadHmac (with a ``key``) when the HMAC does not match."""
    size = _base_size(key)
    if len(data) < size:
        raise ShortPacket(f"a Session-Sender packet takes at least {size} octets, got {len(data)}")
    if key is None:
        seq, timestamp, ee, ssid = SENDER.unpack_from(data)
    else:
        _verify(data, key)
        seq, timestamp, ee, ssid = SENDER_AUTHENTICATED.unpack_from(data)
    return SenderPacket(seq, timestamp, ErrorEstimate.from_int(ee), ssid, bytes(data[size:]))


def encode_reflector(packet: ReflectorPacket, key: bytes | None = None) -> bytes:
    fields = (
        packet.seq,
        packet.timestamp,
        packet.error_estimate.to_int(),
        packet.ssid,
        packet.receive_timestamp,
        packet.sender_seq,
        packet.sender_timestamp,
        packet.sender_error_estimate.to_int(),
        packet.sender_ttl,
    )
    if key is None:
        return REFLECTOR.pack(*fields) + packet.extra
    head = REFLECTOR_AUTHENTICATED.pack(*fields)
    return head + _hmac(key, head) + packet.extra


def decode_reflector(data: bytes, key: bytes | None = None) -> ReflectorPacket:
    """Raises: ShortPacket; BadHmac (with a ``key``) when the HMAC does not match."""
    size = _base_size(key)
    if len(data) < size:
        raise ShortPacket(
            f"a Session-Reflector packet takes at least {size} octets, got {len(data)}"
        )
    if key is None:
        seq, t3, ee, ssid, t2, sender_seq, t1, sender_ee, ttl = REFLECTOR.unpack_from(data)
    else:
        _verify(data, key)
        seq, t3, ee, ssid, t2, sender_seq, t1, sender_ee, ttl = REFLECTOR_AUTHENTICATED.unpack_from(
            data
        )
    return ReflectorPacket(
        seq,
        t3,
        ErrorEstimate.from_int(ee),
        ssid,
        t2,
        sender_seq,
        t1,
        ErrorEstimate.from_int(sender_ee),
        ttl,
        bytes(data[size:]),
    )


def read_key(path: str) -> bytes:
    """The shared key in a file: its bytes, less one trailing newline (as ``echo`` writes it).

    Raises:
        ConfigError: the file cannot be read, or is empty.
    """
    try:
        with open(path, "rb") as file:
            key = file.read(4097)
    except OSError as error:
        raise ConfigError(f"cannot read key file {path!r}: {error.strerror or error}") from None
    if key.endswith(b"\r\n"):
        key = key[:-2]
    elif key.endswith(b"\n"):
        key = key[:-1]
    if not key:
        raise ConfigError(f"key file {path!r} is empty")
    if len(key) > 4096:
        raise ConfigError(f"key file {path!r} is longer than 4096 bytes; is it the right file?")
    return key


# --- the prober's codec ----------------------------------------------------------------------


class StampCodec:
    """STAMP as a :class:`~udpbeat.wire.base.Codec`: the prober is a Session-Sender.

    ``ssid`` goes in every packet (RFC 8972 §3); with a ``key`` packets are authenticated;
    ``ptp`` writes T1 in PTPv2's format; ``size`` pads each packet to that many octets with an
    Extra Padding TLV (RFC 8972 §4.1), which the reflector sends back as large.

    Raises:
        ConfigError: an SSID or a size out of range.
    """

    name = "stamp"
    sequence_modulus: int | None = SEQUENCE_MODULUS

    def __init__(
        self,
        *,
        ssid: int = 0,
        key: bytes | None = None,
        ptp: bool = False,
        size: int | None = None,
        error_estimate: ErrorEstimate | None = None,
    ) -> None:
        _check_u16(ssid, "SSID")
        self.ssid = ssid
        self.key = key
        self.ptp = ptp
        base = _base_size(key)
        if size is None or size == base:
            self.extra = b""
        elif isinstance(size, int) and base + TLV_HEADER.size <= size <= 9000:
            self.extra = padding_tlv(size - base)
        else:
            raise ConfigError(
                f"STAMP packet size must be {base}, or {base + TLV_HEADER.size}..9000 octets "
                f"(padded with an Extra Padding TLV), got {size!r}"
            )
        self.error_estimate = error_estimate or ErrorEstimate(ptp=ptp)

    def encode_request(self, seq: int, wall_time: float) -> bytes:
        packet = SenderPacket(
            seq % SEQUENCE_MODULUS,
            from_unix(wall_time, self.ptp),
            self.error_estimate,
            self.ssid,
            self.extra,
        )
        return encode_sender(packet, self.key)

    def request_seq(self, data: bytes) -> int:
        # The sequence number is the first field in both modes; an ICMP error may quote less
        # than the whole packet, and the HMAC is not ours to check there.
        if len(data) < SEQUENCE_SIZE:
            raise ShortPacket(
                f"a quoted STAMP request of {len(data)} octets has no sequence number"
            )
        return int.from_bytes(data[:SEQUENCE_SIZE], "big")

    def decode_reply(self, data: bytes) -> DecodedReply:
        packet = decode_reflector(data, self.key)
        stamps = packet.timestamps()
        return DecodedReply(packet.sender_seq, stamps.received - stamps.sent, stamps)
