"""Fuzz a real ``udpbeat server`` over loopback with random and mutated datagrams.

Usage: ``python benchmarks/fuzz.py [--count 1000000] [--seed 1]``. The test suite runs the same
code with 100,000 datagrams (``tests/test_fuzz.py``).

Every datagram is sent from one socket; after each chunk a valid heartbeat from a second socket
must be answered before the next chunk goes out. That probe proves the server still answers
during the fuzzing, and it is the flow control: the server reads its queue in order, so when the
probe's reply arrives every earlier datagram has been handled and none was dropped for lack of
buffer space. Nothing is lost, so the server's counters must match, exactly, what this side
expects from decoding every datagram with the same codec: replies only to the valid ones, every
other one counted as malformed under its reason.

The server runs with ``--rate-limit 0`` so that every datagram reaches the parser (with the
default per-source limit, almost all of a flood from one address would be refused unparsed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from udpbeat.errors import WIRE_ERROR_REASONS, WireError
from udpbeat.wire import text

HOST = "127.0.0.1"
#: Datagrams per chunk between probes, and the receive-buffer space a chunk may take (about
#: what the kernel charges: the payload plus ~768 bytes of overhead each). Both are well inside
#: a default receive buffer (~208 KiB), so no datagram is dropped before the server reads it.
CHUNK = 128
CHUNK_BYTES = 96 * 1024
DATAGRAM_OVERHEAD = 768
#: Every reason the codec can give (the fuzz mix is meant to produce each one).
WIRE_REASONS = frozenset(WIRE_ERROR_REASONS) - {"oversize"}
#: The longest wait for a probe's reply before the run fails.
PROBE_TIMEOUT = 10.0

_SPECIAL_NUMBERS = [
    b"nan", b"NaN", b"-nan", b"inf", b"-inf", b"Infinity", b"1e308", b"1e309", b"-0", b"0",
    b"1e400", b"9" * 30, b"9223372036854775807", b"9223372036854775808", b"18446744073709551616",
    b"1_000", b"0x10", b"+5", b" 5", b"5 ", b"1e-400", b"1.", b".5", b"1e", b"1e+", b"--1",
    b"\xd9\xa1\xd9\xa2", "\uff11\uff12\uff13".encode(), "1.5\u00a0".encode(), b"1\x00",
    b"1e10", b"9999999999.9",
]  # fmt: skip
_UNICODE = ["é", "ü", "€", "\uff11", "\u0663", "\u200b", "\ufeff", "\U0001d7d9", "\u0000", "🫀"]


def valid_request(rng: random.Random) -> bytes:
    seq = rng.choice([0, 1, rng.randrange(10**6), rng.randrange(2**63)])
    stamp = rng.choice([time.time(), rng.uniform(0, 1e10), 0.0, float(rng.randrange(10**9))])
    ending = rng.choice([b"", b"", b"", b"\n", b"\r\n"])
    return b"Heartbeat %d %r%s" % (seq, stamp, ending)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation of ``data``."""
    kind = rng.randrange(9)
    if kind == 0 and data:  # bit flips
        buffer = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
        return bytes(buffer)
    if kind == 1:  # truncation
        return data[: rng.randrange(len(data) + 1)]
    if kind == 2:  # extension, sometimes far past the size limit
        size = rng.choice([1, 2, 8, 64, 200, 1400, 9000])
        return data + rng.randbytes(size)
    fields = data.split(b" ")
    if kind == 3 and len(fields) >= 3:  # fields swapped
        i, j = rng.sample(range(len(fields)), 2)
        fields[i], fields[j] = fields[j], fields[i]
        return b" ".join(fields)
    if kind == 4 and len(fields) >= 3:  # huge, special or odd numbers
        fields[rng.choice([1, 2])] = rng.choice(_SPECIAL_NUMBERS)
        return b" ".join(fields)
    if kind == 5:  # unicode inserted
        at = rng.randrange(len(data) + 1)
        return data[:at] + rng.choice(_UNICODE).encode() + data[at:]
    if kind == 6:  # separators changed
        return data.replace(b" ", rng.choice([b"  ", b"\t", b"", b"\x00", b" , "]), 1)
    if kind == 7:  # a byte deleted or duplicated
        if not data:
            return data
        at = rng.randrange(len(data))
        return data[:at] + data[at + 1 :] if rng.random() < 0.5 else data[:at] + data[at:]
    return rng.choice([b"heartbeat", b"HEARTBEAT", b"Seq:", b"Heartbeat\n"]) + data[9:]


def datagrams(count: int, seed: int) -> Iterator[bytes]:
    """``count`` datagrams: mostly mutated requests, some random bytes, some valid ones."""
    rng = random.Random(seed)
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1:
            yield valid_request(rng)
        elif roll < 0.25:
            yield rng.randbytes(rng.choice([0, 1, 5, 20, 40, 96, 97, 300, 1500]))
        else:
            data = valid_request(rng)
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                data = mutate(data, rng)
            yield data


def expected_outcome(data: bytes, max_size: int = text.MAX_REQUEST_SIZE) -> str:
    """``"replied"`` or the malformed reason the server must count ``data`` under."""
    if len(data) > max_size:
        return "oversize"
    try:
        text.parse_request(data)
    except WireError as error:
        return error.reason
    return "replied"


@dataclass
class FuzzResult:
    sent: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    fuzz_replies: int = 0
    probes: int = 0
    probes_answered: int = 0
    elapsed: float = 0.0


def fuzz(port: int, count: int, seed: int) -> FuzzResult:
    """Send ``count`` fuzz datagrams to ``HOST:port`` with a probe after every chunk."""
    result = FuzzResult()
    address = (HOST, port)
    started = time.monotonic()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fuzzer,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prober,
    ):
        fuzzer.setblocking(False)
        prober.settimeout(PROBE_TIMEOUT)
        chunk: list[bytes] = []
        space = 0
        for data in datagrams(count, seed):
            if len(chunk) == CHUNK or space + len(data) + DATAGRAM_OVERHEAD > CHUNK_BYTES:
                _send_chunk(fuzzer, prober, address, chunk, result)
                chunk, space = [], 0
            chunk.append(data)
            space += len(data) + DATAGRAM_OVERHEAD
        if chunk:
            _send_chunk(fuzzer, prober, address, chunk, result)
    result.elapsed = time.monotonic() - started
    return result


def _send_chunk(
    fuzzer: socket.socket,
    prober: socket.socket,
    address: tuple[str, int],
    chunk: list[bytes],
    result: FuzzResult,
) -> None:
    for data in chunk:
        fuzzer.sendto(data, address)
        result.expected[expected_outcome(data)] += 1
    result.sent += len(chunk)
    result.probes += 1
    prober.sendto(b"Heartbeat %d %r" % (result.probes, time.time()), address)
    reply, _ = prober.recvfrom(4096)  # raises TimeoutError if the server stopped answering
    if reply.startswith(b"Seq: %d, " % result.probes):
        result.probes_answered += 1
    while True:  # the replies to valid fuzz datagrams, all in by now
        try:
            reply = fuzzer.recv(4096)
        except BlockingIOError:
            break
        text.decode_reply(reply)  # a reply the server sends is always well-formed
        result.fuzz_replies += 1


def reconcile(result: FuzzResult, summary: dict[str, object]) -> list[str]:
    """What does not add up between this side and the server's final summary (empty: all)."""
    problems = []
    valid = result.expected["replied"]
    malformed = {k: v for k, v in result.expected.items() if k != "replied"}
    expected = {
        "received": result.sent + result.probes,
        "replied": valid + result.probes_answered,
        "dropped_loss": 0,
        "rate_limited": 0,
        "denied": 0,
        "malformed": sum(malformed.values()),
        "malformed_by_reason": dict(sorted(malformed.items())),
    }
    for key, value in expected.items():
        if summary.get(key) != value:
            problems.append(f"{key}: server says {summary.get(key)}, expected {value}")
    if result.fuzz_replies != valid:
        problems.append(f"{result.fuzz_replies} replies to fuzz datagrams, {valid} were valid")
    if result.probes_answered != result.probes:
        problems.append(f"{result.probes - result.probes_answered} probes unanswered")
    return problems


@contextlib.contextmanager
def server_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``udpbeat server --json --quiet --rate-limit 0`` on a free loopback port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "udpbeat", "server", "--host", HOST, "--port", "0", "--json",
         "--quiet", "--rate-limit", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        listening = json.loads(process.stdout.readline())
        yield process, int(listening["port"])
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def stop(process: subprocess.Popen[str]) -> tuple[int, dict[str, object], str]:
    """SIGTERM, then (exit status, final summary, stderr)."""
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    summaries = [line for line in lines if line.get("type") == "summary"]
    return process.returncode, (summaries[-1] if summaries else {}), stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="fuzz datagrams")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"$ python benchmarks/fuzz.py --count {args.count} --seed {args.seed}", flush=True)
    with server_process() as (process, port):
        result = fuzz(port, args.count, args.seed)
        alive = process.poll() is None
        status, summary, stderr = stop(process)
    print(
        f"sent {result.sent:,} fuzz datagrams + {result.probes:,} probes in {result.elapsed:.1f}s"
    )
    print(f"expected outcomes: {dict(result.expected.most_common())}")
    print(f"server summary:    {json.dumps(summary)}")
    print(f"probes answered during the run: {result.probes_answered}/{result.probes}")
    print(f"server alive at the end: {alive}; exit status on SIGTERM: {status}")
    problems = reconcile(result, summary)
    if "Traceback" in stderr:
        problems.append("a traceback on the server's stderr")
    if status != 0 or not alive:
        problems.append("the server did not survive")
    print("reconciled exactly: yes" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
