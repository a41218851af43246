"""100,000 random and mutated datagrams against a real ``udpbeat server`` on loopback.

The driver is ``benchmarks/fuzz.py`` (which sends 10**6 when run by hand): a valid heartbeat
probe after every 128 datagrams must be answered before more are sent, so the server answers
during the run, nothing is dropped for lack of buffer, and the server's final counters must match
exactly what decoding every datagram here says: replies to the valid ones only, every other one
counted as malformed under its reason.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from types import ModuleType

import pytest
from helpers import ROOT, exchange, udp_socket

from udpbeat.wire import text

COUNT = 100_000


def load_fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("udpbeat_fuzz", ROOT / "benchmarks" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


fuzz = load_fuzz()


def test_the_mix_covers_every_outcome() -> None:
    outcomes = {fuzz.expected_outcome(data) for data in fuzz.datagrams(20_000, seed=1)}
    assert outcomes == {"replied", "oversize", *fuzz.WIRE_REASONS}


def test_expected_outcome_agrees_with_the_codec() -> None:
    assert fuzz.expected_outcome(b"Heartbeat 1 1700000000.5") == "replied"
    assert fuzz.expected_outcome(b"Heartbeat 1 nan") == "bad-timestamp"
    assert fuzz.expected_outcome(b"x" * (text.MAX_REQUEST_SIZE + 1)) == "oversize"


@pytest.mark.timeout(90)
def test_server_survives_100k_fuzz_datagrams_and_counts_every_one() -> None:
    with fuzz.server_process() as (process, port):
        result = fuzz.fuzz(port, COUNT, seed=20261125)
        assert process.poll() is None, "the server died during the fuzzing"
        with udp_socket() as sock:  # still answering after the run
            reply = exchange(sock, b"Heartbeat 7 %r" % time.time(), ("127.0.0.1", port))
        assert reply.startswith(b"Seq: 7, Time Difference: ")
        status, summary, stderr = fuzz.stop(process)
    assert status == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert result.sent == COUNT
    assert result.probes_answered == result.probes > COUNT // fuzz.CHUNK
    # The probe after the run is one more datagram received and replied.
    assert summary["received"] == result.sent + result.probes + 1
    summary = {**summary, "received": summary["received"] - 1, "replied": summary["replied"] - 1}
    assert fuzz.reconcile(result, summary) == []
    # Each mutation family reached the parser: far more malformed than valid, every reason seen.
    assert set(summary["malformed_by_reason"]) == {"oversize", *fuzz.WIRE_REASONS}
