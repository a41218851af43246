"""What the prober needs of a wire format: the seam that lets the probe session
(:class:`~udpbeat.session.ProbeSession`) speak the text format or STAMP without knowing which.

A codec turns a sequence number and the send time into a request, and a reply back into the
sequence number it answers, the server's receive-minus-send time difference, and (STAMP only)
the four timestamps of the exchange. Pure: no sockets, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Timestamps:
    """The four instants of a STAMP exchange, Unix seconds, each on its own host's clock.

    ``sent`` (T1) is the sender's transmit time as it wrote it, ``received`` (T2) the
    reflector's receive time, ``reflected`` (T3) the reflector's transmit time;
    ``reflector_seq`` is the reflector's own sequence number (equal to the sender's in stateless
    mode) and ``ttl`` the sender's TTL (hop limit) as the reflector received it.
    """

    sent: float
    received: float
    reflected: float
    reflector_seq: int
    ttl: int


@dataclass(frozen=True, slots=True)
class DecodedReply:
    """A reply as the session matches it.

    ``seq`` is the sequence number as the wire carries it (a codec with a
    :attr:`Codec.sequence_modulus` carries it modulo that); ``time_difference`` is the server's
    receive time minus the time the request carries (seconds, both clocks); ``timestamps`` the
    STAMP exchange, ``None`` for the text format.
    """

    seq: int
    time_difference: float
    timestamps: Timestamps | None = None


class Codec(Protocol):
    """A wire format as the prober sees it.

    ``sequence_modulus``: the wire carries sequence numbers modulo this (``None``: as they are).
    ``name``: the protocol's name in reports (``"text"``, ``"stamp"``).
    """

    name: str
    sequence_modulus: int | None

    def encode_request(self, seq: int, wall_time: float) -> bytes: ...

    def decode_reply(self, data: bytes) -> DecodedReply:
        """Raises: WireError (a subclass naming the field) for anything but a valid reply."""
        ...

    def request_seq(self, data: bytes) -> int:
        """The sequence number (as the wire carries it) of a request of ours, e.g. the one an
        ICMP error quotes. Raises: WireError when it is not one."""
        ...
