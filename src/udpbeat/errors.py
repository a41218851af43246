"""Every error udpbeat raises for bad input.

The tree::

    UdpbeatError                     base of everything below
    ├── WireError                    a datagram that is not a valid message (from udpbeat.wire)
    │   ├── Oversize                 longer than the format allows
    │   ├── NotText                  not ASCII text
    │   ├── BadKeyword               does not start with the format's keyword
    │   ├── MissingField             a field is absent or the spacing is wrong
    │   ├── BadSequence              sequence number not a decimal integer in range
    │   ├── BadTimestamp             timestamp or time difference not a finite number in range
    │   ├── ShortPacket              a STAMP packet shorter than its base format
    │   ├── BadTlv                   STAMP TLVs that overrun the packet
    │   └── BadHmac                  a STAMP packet whose HMAC does not match the key
    └── ConfigError                  a setting (flag, argument, API parameter) out of range

A server counts a ``WireError`` by its ``reason`` and drops the datagram; it never replies to
one. ``ConfigError`` stops a command before it touches the network.
"""

from __future__ import annotations


class UdpbeatError(Exception):
    """Base class of every error udpbeat raises for bad input."""


class WireError(UdpbeatError, ValueError):
    """A datagram could not be decoded. ``reason`` is a short stable name used in counters."""

    reason = "malformed"


class Oversize(WireError):
    reason = "oversize"


class NotText(WireError):
    reason = "not-text"


class BadKeyword(WireError):
    reason = "bad-keyword"


class MissingField(WireError):
    reason = "missing-field"


class BadSequence(WireError):
    reason = "bad-sequence"


class BadTimestamp(WireError):
    reason = "bad-timestamp"


class ShortPacket(WireError):
    reason = "short-packet"


class BadTlv(WireError):
    reason = "bad-tlv"


class BadHmac(WireError):
    reason = "bad-hmac"


#: The text format's reasons (the STAMP codec adds ``STAMP_WIRE_ERROR_REASONS``).
WIRE_ERROR_REASONS: tuple[str, ...] = tuple(
    cls.reason for cls in (Oversize, NotText, BadKeyword, MissingField, BadSequence, BadTimestamp)
)

STAMP_WIRE_ERROR_REASONS: tuple[str, ...] = tuple(
    cls.reason for cls in (ShortPacket, BadTlv, BadHmac)
)


class ConfigError(UdpbeatError, ValueError):
    """A setting is out of range; the message names the setting and what it accepts."""
