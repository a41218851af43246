"""The prober's hot path, piece by piece: CPU per call of the text codec and of one heartbeat's
round trip through a ProbeSession, each beside its anchor in the same run.

The anchors are the general paths the fast ones must equal: ``encode_request(Heartbeat(...))``
for :func:`~udpbeat.wire.text.format_request`, ``decode_reply`` (which builds a
``HeartbeatReply``) for :func:`~udpbeat.wire.text.parse_reply`, and a session that builds its
events (what the client and monitor use) for ``record_events=False`` (what the simulator uses).

    python benchmarks/session_codec.py                 # 200,000 calls each
    python benchmarks/session_codec.py --calls 1000    # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.wire import text

#: A sequence number as a session draws them (19 digits, below 2**62) and a Unix time.
SEQ = 4_370_396_582_804_450_666
WALL_TIME = 1_764_064_863.1234567
REQUEST = text.format_request(SEQ, WALL_TIME)
REPLY = text.format_reply(str(SEQ).encode(), 0.000512)


def per_call(action: Callable[[], object], calls: int) -> float:
    """CPU microseconds per call (the best of three runs)."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            action()
        best = min(best, time.process_time() - started)
    return best / calls * 1e6


def session_round_trips(calls: int, *, record_events: bool) -> float:
    """CPU microseconds per heartbeat: sent, answered 1 ms later, matched, timers re-armed."""
    config = ProbeConfig(count=None, interval=1.0, timeout=1.0, first_seq=SEQ)
    best = float("inf")
    for _ in range(3):
        session = ProbeSession(config, 0.0, record_events=record_events)
        now = 0.0
        started = time.process_time()
        for _ in range(calls):
            session.handle_timer(now, WALL_TIME + now)
            for datagram in session.datagrams_to_send():
                seq_digits, _ = text.parse_request(datagram)
                reply = text.format_reply(seq_digits, 0.0005)
                session.receive_datagram(reply, now + 0.001)
                session.handle_timer(now + 0.001, WALL_TIME + now + 0.001)
            for _ in session.events():
                pass
            session.get_timer()
            now += 1.0
        best = min(best, time.process_time() - started)
        if session.report().received != calls:
            raise RuntimeError("the session did not match every reply")
    return best / calls * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200_000, help="calls per figure")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be >= 1")
    codec = text.TextCodec()
    rows = [
        (
            "encode a request",
            per_call(lambda: text.encode_request(text.Heartbeat(SEQ, WALL_TIME)), args.calls),
            "encode_request(Heartbeat(...))",
            per_call(lambda: codec.encode_request(SEQ, WALL_TIME), args.calls),
            "TextCodec.encode_request",
        ),
        (
            "decode a reply",
            per_call(lambda: text.decode_reply(REPLY), args.calls),
            "decode_reply",
            per_call(lambda: text.parse_reply(REPLY), args.calls),
            "parse_reply",
        ),
        (
            "one heartbeat through a session",
            session_round_trips(args.calls, record_events=True),
            "with events",
            session_round_trips(args.calls, record_events=False),
            "record_events=False",
        ),
    ]
    command = " ".join(["python benchmarks/session_codec.py", *(argv or sys.argv[1:])])
    print(f"$ {command}")
    print()
    print("| what | anchor | µs per call | fast path | µs per call |")
    print("|---|---|---|---|---|")
    for what, anchor_us, anchor, fast_us, fast in rows:
        print(f"| {what} | {anchor} | {anchor_us:.2f} | {fast} | {fast_us:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
