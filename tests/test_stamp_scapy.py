"""Interoperability with an implementation udpbeat's authors did not write: scapy's STAMP
classes (``scapy.contrib.stamp``, RFC 8762 with RFC 8972's SSID and TLVs).

Both directions, unauthenticated (scapy has no authenticated STAMP packets; that mode is checked
against the RFC's layout in ``test_wire_stamp.py``):

- scapy builds Session-Sender packets, udpbeat's reflector answers them on loopback, and scapy
  parses the replies;
- a small reflector written with scapy's classes answers udpbeat's sender (the real client
  command), which must match every reply and measure one-way delays from its timestamps.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from helpers import json_lines

from udpbeat.cli import cli
from udpbeat.server import BackgroundServer
from udpbeat.stamp_reflector import StampOptions, stamp_config

scapy_stamp = pytest.importorskip("scapy.contrib.stamp", reason="scapy (test extra) is needed")
Sender = scapy_stamp.STAMPSessionSenderTestUnauthenticated
Reflector = scapy_stamp.STAMPSessionReflectorTestUnauthenticated
StampTlv = scapy_stamp.STAMPTestTLV

#: scapy's NTP timestamp fields hold seconds since 1900 (NTP's epoch).
NTP_EPOCH = 2_208_988_800
WAIT = 5.0


def ntp_now() -> float:
    return time.time() + NTP_EPOCH


@pytest.mark.parametrize("mode", ["stateless", "stateful"])
def test_udpbeat_reflector_answers_scapy_senders(mode: str) -> None:
    config = stamp_config(rate_limit=0, log_events=False)
    server = BackgroundServer("127.0.0.1", 0, config, stamp=StampOptions(mode=mode))
    with server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 42)
        address = ("127.0.0.1", server.address[1])
        for number, seq in enumerate((1000, 1001, 1005)):
            sent = ntp_now()
            # A TLV of a type udpbeat does not know (scapy leaves its length to be given).
            tlv = StampTlv(type=200, len=6, value=b"hello!")
            request = Sender(seq=seq, ts=sent, ssid=0x1234, tlv_objects=[tlv])
            data = bytes(request)
            assert len(data) == 44 + 4 + 6
            sock.sendto(data, address)
            raw, _ = sock.recvfrom(2048)
            received = ntp_now()
            reply = Reflector(raw)
            assert len(raw) == len(data)  # symmetric size
            assert reply.seq_sender == seq
            assert reply.seq == (number if mode == "stateful" else seq)
            assert reply.ssid == 0x1234
            assert reply.ttl_sender == 42
            assert abs(float(reply.ts_sender) - sent) < 1e-6
            assert sent - 0.001 <= float(reply.ts_rx) <= float(reply.ts) <= received + 0.001
            assert reply.err_estimate.Z == 0 and reply.err_estimate.multiplier >= 1
            (tlv,) = reply.tlv_objects
            # Reflected intact, with the U (unrecognized) flag set as RFC 8972 §4 says.
            assert (tlv.type, tlv.value, int(tlv.flags) & 0x80) == (200, b"hello!", 0x80)


class ScapyReflector:
    """A stateful STAMP reflector written with scapy's classes, on a loopback socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            received = ntp_now()
            request = Sender(data)
            reply = Reflector(
                seq=self.answered,
                ts=ntp_now(),
                ssid=request.ssid,
                ts_rx=received,
                seq_sender=request.seq,
                ts_sender=request.ts,
                err_estimate_sender=request.err_estimate,
                ttl_sender=64,
            )
            self.sock.sendto(bytes(reply), source)
            self.answered += 1

    def __enter__(self) -> ScapyReflector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self.sock.close()


@contextlib.contextmanager
def scapy_reflector() -> Iterator[ScapyReflector]:
    with ScapyReflector() as reflector:
        yield reflector


def test_udpbeat_sender_is_answered_by_a_scapy_reflector() -> None:
    with scapy_reflector() as reflector:
        result = CliRunner().invoke(
            cli,
            ["client", f"127.0.0.1:{reflector.port}", "--protocol", "stamp", "-c", "5", "-i",
             "0.02", "--ssid", "9", "--json", "--quiet"],
            standalone_mode=False,
            obj={},
        )  # fmt: skip
    assert result.exception is None, result.exception
    summary = json_lines(result.stdout.splitlines())[-1]
    assert summary["received"] == 5 and summary["malformed"] == {} and summary["unknown"] == 0
    assert summary["reflector_stateful"] is True
    assert (summary["forward_lost"], summary["backward_lost"]) == (0, 0)
    forward = summary["forward_delay_ms"]
    assert isinstance(forward, dict) and forward["count"] == 5
    # One host, one clock: a one-way delay on loopback is well under the RTT's scale.
    assert isinstance(summary["clock_offset_ms"], float) and abs(summary["clock_offset_ms"]) < 20
    assert reflector.answered == 5
