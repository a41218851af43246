"""STAMP test packets (RFC 8762, RFC 8972): exact layouts, round trips, and the fuzz invariant."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpbeat.errors import BadHmac, BadTimestamp, BadTlv, ConfigError, ShortPacket, WireError
from udpbeat.wire import stamp
from udpbeat.wire.stamp import (
    ErrorEstimate,
    ReflectorPacket,
    SenderPacket,
    StampCodec,
    Tlv,
    decode_reflector,
    decode_sender,
    encode_reflector,
    encode_sender,
    from_unix,
    parse_tlvs,
    reflect_extra,
    to_unix,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
u16 = st.integers(0, 2**16 - 1)
estimates = st.builds(
    ErrorEstimate, st.booleans(), st.booleans(), st.integers(0, 63), st.integers(0, 255)
)
tlvs = st.lists(
    st.builds(Tlv, st.integers(0, 255), st.binary(max_size=40), st.integers(0, 255)), max_size=4
).map(lambda items: b"".join(t.encode() for t in items))
extras = st.one_of(tlvs, st.binary(max_size=64))
keys = st.one_of(st.none(), st.binary(min_size=1, max_size=64))
senders = st.builds(SenderPacket, u32, u64, estimates, u16, extras)
reflectors = st.builds(
    ReflectorPacket, u32, u64, estimates, u16, u64, u32, u64, estimates, st.integers(0, 255), extras
)


@given(senders, keys)
def test_sender_round_trip(packet: SenderPacket, key: bytes | None) -> None:
    data = encode_sender(packet, key)
    assert len(data) == (44 if key is None else 112) + len(packet.extra)
    assert decode_sender(data, key) == packet


@given(reflectors, keys)
def test_reflector_round_trip(packet: ReflectorPacket, key: bytes | None) -> None:
    data = encode_reflector(packet, key)
    assert len(data) == (44 if key is None else 112) + len(packet.extra)
    assert decode_reflector(data, key) == packet


@given(st.binary(max_size=200), keys)
def test_decoding_raises_only_wire_errors(data: bytes, key: bytes | None) -> None:
    for decode in (decode_sender, decode_reflector):
        try:
            packet = decode(data, key)
        except WireError:
            continue
        try:
            if isinstance(packet, ReflectorPacket):
                packet.timestamps()
            else:
                _ = packet.time
        except BadTimestamp:
            pass
    with contextlib.suppress(BadTlv):
        parse_tlvs(data)
    assert len(reflect_extra(data)) == len(data)


@given(st.binary(max_size=200))
def test_codec_decoding_raises_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        StampCodec().decode_reply(data)


def test_unauthenticated_sender_layout_field_by_field() -> None:
    packet = SenderPacket(0x01020304, 0x1112131415161718, ErrorEstimate(True, False, 5, 9), 0xABCD)
    data = encode_sender(packet)
    assert data[0:4] == bytes([1, 2, 3, 4])
    assert data[4:12] == bytes(range(0x11, 0x19))
    assert data[12:14] == bytes([0x80 | 5, 9])  # S bit, scale, multiplier
    assert data[14:16] == b"\xab\xcd"  # RFC 8972 SSID
    assert data[16:44] == bytes(28)  # MBZ


def test_unauthenticated_reflector_layout_field_by_field() -> None:
    packet = ReflectorPacket(
        7, 0x0102030405060708, ErrorEstimate(ptp=True), 3, 0x2122232425262728, 9,
        0x3132333435363738, ErrorEstimate(scale=1, multiplier=2), 61, b"",
    )  # fmt: skip
    data = encode_reflector(packet)
    assert len(data) == 44
    assert struct.unpack("!I", data[0:4]) == (7,)
    assert data[4:12] == bytes(range(1, 9))  # T3
    assert data[12:14] == b"\x40\x01"  # Z bit
    assert data[14:16] == b"\x00\x03"  # SSID
    assert data[16:24] == bytes(range(0x21, 0x29))  # receive timestamp, T2
    assert struct.unpack("!I", data[24:28]) == (9,)  # Session-Sender sequence number
    assert data[28:36] == bytes(range(0x31, 0x39))  # Session-Sender timestamp, T1
    assert data[36:38] == b"\x01\x02"  # Session-Sender Error Estimate
    assert data[38:40] == b"\0\0" and data[41:44] == b"\0\0\0"  # MBZ
    assert data[40] == 61  # Session-Sender TTL


def test_authenticated_layouts_and_hmac_over_the_first_96_octets() -> None:
    """RFC 8762 §4.2.2/§4.3.2, checked independently of the codec's own structs."""
    key = b"secret key"
    sender = encode_sender(SenderPacket(5, 0xAABBCCDDEEFF0011, ErrorEstimate(), 0x0102), key)
    assert len(sender) == 112
    assert sender[0:4] == b"\0\0\0\x05" and sender[4:16] == bytes(12)
    assert sender[16:24] == bytes.fromhex("aabbccddeeff0011")
    assert sender[24:26] == b"\x00\x01" and sender[26:28] == b"\x01\x02"
    assert sender[28:96] == bytes(68)
    assert sender[96:] == hmac.new(key, sender[:96], hashlib.sha256).digest()[:16]
    reflector = encode_reflector(
        ReflectorPacket(1, 2, ErrorEstimate(), 3, 4, 5, 6, ErrorEstimate(), 7), key
    )
    assert len(reflector) == 112
    fields = (reflector[0:4], reflector[16:24], reflector[32:40], reflector[48:52])
    assert fields == (b"\0\0\0\x01", (2).to_bytes(8, "big"), (4).to_bytes(8, "big"), b"\0\0\0\x05")
    assert reflector[64:72] == (6).to_bytes(8, "big") and reflector[80] == 7
    assert reflector[26:28] == b"\x00\x03"
    for start, end in ((4, 16), (28, 32), (40, 48), (52, 64), (74, 80), (81, 96)):
        assert reflector[start:end] == bytes(end - start)
    assert reflector[96:] == hmac.new(key, reflector[:96], hashlib.sha256).digest()[:16]


def test_a_bad_hmac_or_a_short_packet_is_refused() -> None:
    data = bytearray(encode_sender(SenderPacket(1, 2), b"k"))
    data[3] ^= 1
    with pytest.raises(BadHmac):
        decode_sender(bytes(data), b"k")
    with pytest.raises(BadHmac):
        decode_sender(encode_sender(SenderPacket(1, 2), b"k"), b"other")
    with pytest.raises(ShortPacket):
        decode_sender(bytes(43))
    with pytest.raises(ShortPacket):
        decode_reflector(bytes(111), b"k")


def test_ntp_timestamps() -> None:
    # RFC 5905's epoch: 1970-01-01 is 2208988800 seconds after 1900-01-01.
    assert from_unix(0.0) == 2_208_988_800 << 32
    assert from_unix(0.5) == (2_208_988_800 << 32) | 2**31
    assert to_unix((2_208_988_800 << 32) | 2**31) == 0.5
    t = 1_764_000_000.123456
    assert abs(to_unix(from_unix(t)) - t) < 1e-6
    # After 2036 the seconds wrap (era 1): still the right Unix time.
    t = 2_100_000_000.25
    assert to_unix(from_unix(t)) == t


def test_ptp_timestamps() -> None:
    assert from_unix(1.5, ptp=True) == (1 << 32) | 500_000_000
    assert to_unix((1 << 32) | 500_000_000, ptp=True) == 1.5
    with pytest.raises(BadTimestamp):
        to_unix((1 << 32) | 1_000_000_000, ptp=True)


def test_error_estimate_bits() -> None:
    assert ErrorEstimate.from_int(0xC1FF) == ErrorEstimate(True, True, 1, 255)
    assert ErrorEstimate(scale=32, multiplier=3).seconds == 3.0
    with pytest.raises(ConfigError):
        ErrorEstimate(scale=64)


def test_tlvs_unrecognized_flagged_padding_intact() -> None:
    padding = stamp.padding_tlv(12)
    assert parse_tlvs(padding) == [Tlv(1, bytes(8))]
    unknown = Tlv(200, b"abc").encode()
    reflected = reflect_extra(padding + unknown)
    assert parse_tlvs(reflected) == [Tlv(1, bytes(8)), Tlv(200, b"abc", 0x80)]
    assert reflect_extra(b"\0\0\0") == b"\0\0\0"  # not TLVs: padding, sent back as it came
    with pytest.raises(BadTlv):
        parse_tlvs(b"\x00\x01\x00\x09ab")


def test_codec_wraps_sequence_numbers_and_measures_one_way() -> None:
    codec = StampCodec(ssid=9, size=100)
    request = codec.encode_request(2**32 + 5, 1_764_000_000.0)
    assert len(request) == 100
    packet = decode_sender(request)
    assert (packet.seq, packet.ssid) == (5, 9)
    reply = encode_reflector(
        ReflectorPacket(
            0, from_unix(1_764_000_000.004), ErrorEstimate(), 9, from_unix(1_764_000_000.003),
            5, packet.timestamp, ErrorEstimate(), 64,
        )
    )  # fmt: skip
    decoded = codec.decode_reply(reply)
    assert decoded.seq == 5
    assert decoded.time_difference == pytest.approx(0.003, abs=1e-6)
    assert decoded.timestamps is not None and decoded.timestamps.ttl == 64
    with pytest.raises(ConfigError):
        StampCodec(size=45)
