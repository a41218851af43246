"""Overload a real ``udpbeat server`` at a multiple of its measured capacity and account for it.

Usage: ``python benchmarks/overload.py [--duration 10] [--factor 2]``. The test suite runs the same
code for 3 seconds (``tests/test_overload.py``).

1. Start ``udpbeat server --json --quiet --rate-limit 0 --loss 0.1 --seed 7`` on loopback (no
   rate limit: every request reaches the parser, the costliest case; 10% simulated loss, so that
   ``dropped_loss`` is exercised too).
2. Measure its capacity: replies/s with a window of requests in flight (``loadgen.py``), divided
   by the fraction not dropped on purpose.
3. Flood it open-loop at ``factor`` x that rate for ``duration`` seconds (``loadgen.py --mode
   rate``, its own process), plus a trickle of malformed datagrams, while a separate probe sends a
   heartbeat every 20 ms and counts the replies: the server must keep answering.
4. Stop it with SIGTERM and compare its final counters with what was sent. The server's own
   identity must hold exactly: received = replied + dropped_loss + rate_limited + malformed +
   denied. What it never received was dropped by the kernel: ``/proc/net/snmp`` Udp
   RcvbufErrors is reported beside it (machine-wide, so other traffic may add to it).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
LOSS = 0.1
PROBE_INTERVAL = 0.02
PROBE_TIMEOUT = 0.2
#: Malformed datagrams sent during the flood, per second.
JUNK_RATE = 2000
SERVER_FLAGS = ["--json", "--quiet", "--rate-limit", "0", "--loss", str(LOSS), "--seed", "7"]


def udp_snmp() -> dict[str, int]:
    """The ``Udp:`` counters of /proc/net/snmp (empty where there is no such file)."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    except OSError:
        return {}
    rows = [line for line in lines if line and line[0] == "Udp:"]
    if len(rows) < 2:
        return {}
    return {name: int(value) for name, value in zip(rows[0][1:], rows[1][1:], strict=True)}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def loadgen(port: int, *options: str) -> dict[str, float]:
    command = [sys.executable, str(HERE / "loadgen.py"), HOST, str(port), *options]
    output = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, float] = json.loads(output.stdout)
    return result


@dataclass
class Probe:
    """Heartbeats from their own socket every ``PROBE_INTERVAL`` until stopped."""

    sent: int = 0
    answered: int = 0
    rtts: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            while not self.stop.is_set():
                self.sent += 1
                started = time.perf_counter()
                sock.sendto(b"Heartbeat %d %.6f" % (self.sent, time.time()), (HOST, port))
                deadline = started + PROBE_TIMEOUT
                try:
                    while time.perf_counter() < deadline:
                        reply = sock.recv(4096)
                        if reply.startswith(b"Seq: %d, " % self.sent):
                            self.answered += 1
                            self.rtts.append(time.perf_counter() - started)
                            break
                except TimeoutError:
                    pass
                self.stop.wait(PROBE_INTERVAL)


@dataclass
class Junk:
    """Malformed datagrams at ``JUNK_RATE`` a second until stopped."""

    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not self.stop.wait(0.01):
                for _ in range(JUNK_RATE // 100):
                    sock.sendto(b"Heartbeat x %d" % self.sent, (HOST, port))
                    self.sent += 1


@dataclass
class OverloadResult:
    capacity: float
    offered_rate: float
    flood: dict[str, float]
    capacity_run: dict[str, float]
    junk_sent: int
    probe: Probe
    drain_probes: int
    rss_before_kib: int
    rss_after_kib: int
    snmp_before: dict[str, int]
    snmp_after: dict[str, int]
    alive: bool
    status: int
    summary: dict[str, object]
    stderr: str

    @property
    def sent(self) -> int:
        """Every datagram sent to the server that left this side."""
        loads = [self.capacity_run, self.flood]
        loadgen_sent = sum(int(r["sent"]) - int(r["send_errors"]) for r in loads)
        return loadgen_sent + self.junk_sent + self.probe.sent + self.drain_probes + 1

    @property
    def kernel_drops(self) -> int:
        return self.snmp_after.get("RcvbufErrors", 0) - self.snmp_before.get("RcvbufErrors", 0)

    @property
    def outcomes(self) -> int:
        s = self.summary
        keys = ("replied", "dropped_loss", "rate_limited", "malformed", "denied", "internal_errors")
        return sum(int(s[key]) for key in keys)  # type: ignore[call-overload]


def run(duration: float, factor: float, capacity_duration: float = 2.0) -> OverloadResult:
    command = [sys.executable, "-m", "udpbeat", "server", "--host", HOST, "--port", "0"]
    process = subprocess.Popen(
        [*command, *SERVER_FLAGS],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(json.loads(process.stdout.readline())["port"])
        # One answered heartbeat first, so the baseline RSS is that of a working server.
        drain_probes = wait_answered(port)
        rss_before = rss_kib(process.pid)
        snmp_before = udp_snmp()
        capacity_run = loadgen(port, "--mode", "window", "--duration", str(capacity_duration))
        capacity = capacity_run["replies_per_s"] / (1 - LOSS)
        offered = factor * capacity
        probe, junk = Probe(), Junk()
        threads = [
            threading.Thread(target=probe.run, args=(port,), daemon=True),
            threading.Thread(target=junk.run, args=(port,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        flood = loadgen(port, "--mode", "rate", "--rate", str(offered), "--duration", str(duration))
        probe.stop.set()
        junk.stop.set()
        for thread in threads:
            thread.join(5)
        drain_probes += wait_answered(port)  # the backlog is handled once this is answered
        rss_after = rss_kib(process.pid)
        snmp_after = udp_snmp()
        alive = process.poll() is None
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    objects = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    summaries = [o for o in objects if o.get("type") == "summary"]
    return OverloadResult(
        capacity=capacity,
        offered_rate=offered,
        flood=flood,
        capacity_run=capacity_run,
        junk_sent=junk.sent,
        probe=probe,
        drain_probes=drain_probes - 1,  # the final "+ 1" in ``sent`` is the first of them
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        snmp_before=snmp_before,
        snmp_after=snmp_after,
        alive=alive,
        status=process.returncode,
        summary=summaries[-1] if summaries else {},
        stderr=stderr,
    )


def wait_answered(port: int, timeout: float = 30.0) -> int:
    """Heartbeats until one is answered; returns how many were sent."""
    deadline = time.monotonic() + timeout
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            sent += 1
            sock.sendto(b"Heartbeat %d %.6f" % (sent, time.time()), (HOST, port))
            try:
                while not sock.recv(4096).startswith(b"Seq: %d, " % sent):
                    pass
                return sent
            except TimeoutError:
                continue
    raise RuntimeError(f"the server on port {port} did not answer within {timeout}s")


def report(result: OverloadResult) -> list[str]:
    s = result.summary
    flood = result.flood
    rtts = sorted(result.probe.rtts)
    p50 = f"{rtts[len(rtts) // 2] * 1e3:.2f} ms" if rtts else "n/a"
    return [
        f"capacity (windowed, loss {LOSS:.0%} added back): {result.capacity:,.0f} requests/s",
        f"offered: {result.offered_rate:,.0f}/s asked, {flood['sent_per_s']:,.0f}/s sent "
        f"({flood['sent_per_s'] / result.capacity:.2f}x capacity) for {flood['sent'] / flood['sent_per_s']:.1f}s"  # noqa: E501
        f"; {flood['replies_per_s']:,.0f} replies/s came back",
        f"junk (malformed) sent during the flood: {result.junk_sent:,}",
        f"probe during the flood: {result.probe.answered}/{result.probe.sent} answered, "
        f"RTT p50 {p50}",
        f"server RSS: {result.rss_before_kib / 1024:.1f} MiB before, "
        f"{result.rss_after_kib / 1024:.1f} MiB after",
        "",
        f"sent to the server          {result.sent:>12,}",
        f"received by the server      {s.get('received', 0):>12,}",
        f"  replied                   {s.get('replied', 0):>12,}",
        f"  dropped by simulated loss {s.get('dropped_loss', 0):>12,}",
        f"  rate limited              {s.get('rate_limited', 0):>12,}",
        f"  malformed                 {s.get('malformed', 0):>12,}",
        f"  denied                    {s.get('denied', 0):>12,}",
        f"  (sum of the outcomes      {result.outcomes:>12,})",
        f"not received (sent - recv)  {result.sent - int(s.get('received', 0)):>12,}",  # type: ignore[call-overload]
        f"kernel RcvbufErrors (all)   {result.kernel_drops:>12,}",
        "",
        f"server alive through the flood: {result.alive}; exit status on SIGTERM: "
        f"{result.status}; traceback on stderr: {'Traceback' in result.stderr}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="flood seconds")
    parser.add_argument("--factor", type=float, default=2.0, help="x the measured capacity")
    parser.add_argument(
        "--capacity-duration", type=float, default=2.0, help="seconds measuring the capacity"
    )
    parser.add_argument(
        "--json", action="store_true", help="end with one JSON object of every figure"
    )
    args = parser.parse_args()
    print(f"$ python benchmarks/overload.py --duration {args.duration} --factor {args.factor}")
    result = run(args.duration, args.factor, args.capacity_duration)
    print("\n".join(report(result)))
    reconciled = result.outcomes == result.summary.get("received")
    print(
        "received = replied + dropped_loss + rate_limited + malformed + denied + internal_errors:"
        f" {reconciled}"
    )
    if args.json:
        figures = {
            "alive": result.alive,
            "status": result.status,
            "traceback": "Traceback" in result.stderr,
            "sent": result.sent,
            "outcomes": result.outcomes,
            "kernel_drops": result.kernel_drops if result.snmp_before else None,
            "probe_answered": result.probe.answered,
            "rss_growth_kib": result.rss_after_kib - result.rss_before_kib,
            "summary": result.summary,
        }
        print(json.dumps(figures))
    sys.exit(0 if reconciled and result.alive and result.status == 0 else 1)


if __name__ == "__main__":
    main()
