"""Codecs: bytes to typed messages and back. Pure: no sockets, no clocks.

One module per format; :mod:`udpbeat.wire.text` is the exercise's text format,
:mod:`udpbeat.wire.stamp` STAMP (RFC 8762, RFC 8972). :func:`make_codec` builds the prober's
side of either by name.
"""

from collections.abc import Mapping
from typing import Any

from udpbeat.errors import ConfigError
from udpbeat.wire.base import Codec, DecodedReply, Timestamps
from udpbeat.wire.stamp import StampCodec
from udpbeat.wire.text import Heartbeat, HeartbeatReply, TextCodec

#: The protocols a prober speaks, by name.
PROTOCOLS = ("text", "stamp")


def make_codec(protocol: str, options: Mapping[str, Any] | None = None) -> Codec:
    """The prober's codec for ``protocol``; ``options`` are :class:`StampCodec`'s (``ssid``,
    ``key``, ``ptp``, ``size``).

    Raises:
        ConfigError: an unknown protocol, or options it does not take.
    """
    options = dict(options or {})
    if protocol == "text":
        if options:
            raise ConfigError(f"the text protocol takes no options, got {sorted(options)}")
        return TextCodec()
    if protocol == "stamp":
        unknown = set(options) - {"ssid", "key", "ptp", "size"}
        if unknown:
            raise ConfigError(f"unknown STAMP option(s): {', '.join(sorted(unknown))}")
        return StampCodec(**options)
    raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


__all__ = [
    "PROTOCOLS",
    "Codec",
    "DecodedReply",
    "Heartbeat",
    "HeartbeatReply",
    "StampCodec",
    "TextCodec",
    "Timestamps",
    "make_codec",
]
