"""A measuring tool udpbeat's authors did not write sees what the proxy was told to do.

irtt (https://github.com/heistp/irtt, the Debian package ``irtt``) measures round trips and
one-way delays and counts losses in each direction. Its server and clients run on loopback with
``udpbeat proxy`` between them:

- **loss**: 10% on the way up, over at least 10,000 packets; irtt's upstream loss must be
  within 1 point of 10%. Over ``n`` packets the measured rate is binomial, standard deviation
  ``sqrt(0.1 * 0.9 / n)`` = 0.3 points for ``n = 10,000``: 1 point is 3.3 standard deviations,
  which a random seed would miss once in a thousand runs (the seed is fixed, and every client's
  packets share the up direction's one stream of draws).
- **median delay**: 5 ms with a normal jitter of 1 ms on the way up (median 5 ms), 3 ms with
  a pareto-normal jitter of 1 ms on the way down (median 3 + 1 * q(0.5) = 2.792 ms); irtt's
  one-way delays (its server's receive time less its client's send time, on one host's clock)
  must have those medians within 0.5 ms. The sample median of ``n`` delays has a standard
  deviation of ``jitter * q'(0.5) / (2 sqrt(n))`` (see test_impair.py): 0.03 ms for ~1,500
  packets, so the tolerance is nearly all for what the proxy, loopback and irtt itself add
  (about 0.1 ms on a quiet machine; docs/proxy.md).
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import WAIT, Process, free_udp_port

from udpbeat.impair import ImpairedPath, Impairment

IRTT = shutil.which("irtt")
pytestmark = pytest.mark.skipif(
    IRTT is None,
    reason="irtt is not installed (Debian/Ubuntu: apt-get install irtt; .ci/run installs it)",
)

UP = Impairment(loss=0.1, delay=0.005, jitter=0.001)
DOWN = Impairment(delay=0.003, jitter=0.001, distribution="pareto-normal")
FLAGS = [
    "--up-loss", "0.1", "--up-delay", "5ms", "--up-jitter", "1ms",
    "--down-delay", "3ms", "--down-jitter", "1ms", "--down-distribution", "pareto-normal",
]  # fmt: skip
#: irtt retries a lost handshake after these waits (its shortest allowed).
TIMEOUTS = "--timeouts=200ms,200ms,200ms,200ms,200ms"
LOSS_PACKETS = 10_000
CLIENTS = 4


def quiet_start_seed() -> int:
    """A seed whose first 16 datagrams up are not lost, so that the clients' handshakes (the
    first datagrams the proxy sees) do not wait for irtt's retries."""
    for seed in range(1000):
        path: ImpairedPath[None] = ImpairedPath(UP, seed=seed, direction="up")
        if all(path.send(b"x", None, 0.0).departures for _ in range(16)):
            return seed
    raise AssertionError("no seed found")


@contextmanager
def irtt_behind_proxy() -> Iterator[int]:
    """An irtt server on loopback and ``udpbeat proxy`` in front of it; yields the proxy's port."""
    assert IRTT is not None
    port = free_udp_port()
    server = subprocess.Popen(
        [IRTT, "server", "-b", f"127.0.0.1:{port}", "-i", "0", "--timeout=30s"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_line(server, "[ListenerStart]")
        flags = ["--json", "--seed", str(quiet_start_seed()), *FLAGS]
        args = ["-m", "udpbeat", "proxy", "--listen", "127.0.0.1:0"]
        with Process([*args, "--upstream", f"127.0.0.1:{port}", *flags]) as proxy:
            listening = json.loads(proxy.wait_for(lambda line: '"listening"' in line))
            yield int(listening["port"])
    finally:
        server.terminate()
        server.communicate(timeout=WAIT)


def wait_for_line(process: subprocess.Popen[str], prefix: str) -> None:
    """Read ``process``'s output until a line starts with ``prefix`` (within ``WAIT``)."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in iter(stdout.readline, ""):
            lines.put(line)
            if line.startswith(prefix):
                return
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + WAIT
    while True:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.001))
        if line.startswith(prefix):
            return
        if not line:
            raise AssertionError(f"irtt server ended before {prefix!r}")


def irtt_clients(port: int, count: int, duration: str, out: Path) -> list[dict[str, Any]]:
    """Run ``count`` irtt clients at once, one packet a millisecond each; their statistics."""
    assert IRTT is not None
    outputs = [out / f"client{i}.json" for i in range(count)]
    clients = [
        subprocess.Popen(
            [IRTT, "client", "-i", "1ms", "-d", duration, "-Q", TIMEOUTS, "-o", str(output),
             f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for output in outputs
    ]  # fmt: skip
    for client in clients:
        _, errors = client.communicate(timeout=60)
        assert client.returncode == 0, errors.decode()
    return [json.loads(output.read_text())["stats"] for output in outputs]


def test_irtt_sees_the_configured_loss_and_median_delays(tmp_path: Path) -> None:
    with irtt_behind_proxy() as port:
        # Loss: clients in parallel until 10,000 packets went up (irtt skips a send its timer
        # missed, so a busy machine needs another round).
        sent = lost = 0.0
        seconds = 3.5
        for round_number in range(4):
            folder = tmp_path / f"loss{round_number}"
            folder.mkdir()
            round_sent = 0
            for stats in irtt_clients(port, CLIENTS, f"{seconds:.2f}s", folder):
                round_sent += stats["packets_sent"]
                lost += stats["packets_sent"] * stats["upstream_loss_percent"] / 100
            sent += round_sent
            if sent >= LOSS_PACKETS:
                break
            # At the pace the clients kept (they skip the sends their timers missed).
            seconds = max(1.0, 1.1 * (LOSS_PACKETS - sent) * seconds / max(round_sent, 1))
        loss_percent = 100 * lost / sent
        print(f"irtt: {sent:.0f} packets up, upstream loss {loss_percent:.2f}%")
        assert sent >= LOSS_PACKETS
        assert loss_percent == pytest.approx(100 * UP.loss, abs=1.0)
        # Delays: one client alone, so that the medians are the proxy's, not the contention's.
        folder = tmp_path / "delay"
        folder.mkdir()
        # 4 s at 1 ms: 4,000 sends asked, well over 1,000 even when irtt's timer misses many.
        (stats,) = irtt_clients(port, 1, "4s", folder)
    assert stats["send_delay"]["n"] > 1000
    send_median = stats["send_delay"]["median"] / 1e9
    receive_median = stats["receive_delay"]["median"] / 1e9
    print(
        f"irtt: {stats['send_delay']['n']} delays, median up {send_median * 1e3:.3f} ms "
        f"(configured {UP.median_delay * 1e3:.3f}), down {receive_median * 1e3:.3f} ms "
        f"(configured {DOWN.median_delay * 1e3:.3f})"
    )
    assert UP.median_delay == 0.005 and DOWN.median_delay == pytest.approx(0.002792, abs=1e-6)
    assert send_median == pytest.approx(UP.median_delay, abs=0.0005)
    assert receive_median == pytest.approx(DOWN.median_delay, abs=0.0005)
