"""Codecs: bytes to typed messages and back. Pure: no sockets, no clocks.

One module per format; :mod:`udpbeat.wire.text` is the exercise's text format.
"""

from udpbeat.wire.text import Heartbeat, HeartbeatReply

__all__ = ["Heartbeat", "HeartbeatReply"]
