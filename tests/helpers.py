"""Shared test helpers: free ports, a subprocess runner, and a UDP server that misbehaves on cue.

Everything here binds 127.0.0.1 (or ::1) on ports the system chooses, and every wait has a
deadline: a helper that cannot see what it waits for fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from udpbeat.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: The longest any helper waits for a line, a datagram or a process to exit.
WAIT = 10.0


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing listens on right now: bind port 0, note the port, close the socket.

    Used for programs that need a port given to them (the exercise's scripts) and for a port that
    is known to be closed (ICMP port unreachable).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def stuck_lookup(monkeypatch: pytest.MonkeyPatch, host: str = "stuck.example") -> Iterator[None]:
    """``socket.getaddrinfo`` stuck for ``host``, as behind a DNS server that does not answer,
    until the block ends (then it gives 127.0.0.1); other names resolve as usual."""
    released = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def stuck_getaddrinfo(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            released.wait(30)
            name = "127.0.0.1"
        return real_getaddrinfo(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", stuck_getaddrinfo)
    try:
        yield
    finally:
        released.set()


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    """A client socket on loopback with a bounded receive timeout."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(WAIT)
    return sock


def exchange(sock: socket.socket, request: bytes, address: tuple[str, int]) -> bytes:
    """Send one datagram and return the next one that comes back (within :data:`WAIT`)."""
    sock.sendto(request, address)
    reply, _ = sock.recvfrom(4096)
    return reply


# --- subprocesses ----------------------------------------------------------------------------


class Process:
    """A child Python process whose stdout is read line by line as it comes.

    ``wait_for`` returns the first new stdout line that satisfies a predicate, or fails the test
    when the deadline passes or the process exits first. ``finish`` waits for the exit and
    returns the status with everything printed. Used as a context manager, a child still alive
    at the end is killed.
    """

    def __init__(self, args: Sequence[str], *, cwd: Path = ROOT) -> None:
        self.args = [sys.executable, "-u", *args]
        self.popen = subprocess.Popen(
            self.args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._fresh: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.stdout_lines.append(line.rstrip("\n"))
            self._fresh.put(line.rstrip("\n"))
        self._fresh.put(None)

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._fresh.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"no matching line within {timeout}s from {self.args}\n{self.output()}"
                ) from None
            if line is None:
                self._fresh.put(None)  # later waits see the end too
                raise AssertionError(f"process ended before a matching line\n{self.output()}")
            if predicate(line):
                return line

    def send_signal(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    def finish(self, timeout: float = WAIT) -> tuple[int, list[str], list[str]]:
        """Wait for the exit; returns (status, stdout lines, stderr lines)."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.args} did not exit within {timeout}s") from None
        for reader in self._readers:
            reader.join(WAIT)
        return status, self.stdout_lines, self.stderr_lines

    def output(self) -> str:
        return (
            "stdout:\n"
            + "\n".join(self.stdout_lines)
            + "\nstderr:\n"
            + "\n".join(self.stderr_lines)
        )

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        for reader in self._readers:
            reader.join(WAIT)


def run_benchmark(script: str, *args: str, timeout: float = 120.0) -> str:
    """``benchmarks/SCRIPT ARGS`` run as a user runs it, a process of its own (tests never import
    from ``benchmarks/``); its stdout, once it has ended with status 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_udpbeat(*args: str, timeout: float = 30.0) -> tuple[int, list[str], list[str]]:
    """Run ``python -m udpbeat ARGS`` to its end; returns (status, stdout lines, stderr lines)."""
    result = subprocess.run(
        [sys.executable, "-m", "udpbeat", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout.splitlines(), result.stderr.splitlines()


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    """``udpbeat ARGS`` in this process, for the cases that end before any I/O (bad flags).

    Returns (status, stdout lines, stderr lines); an exception escaping ``main`` fails the test.
    """
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out.splitlines(), err.splitlines()


def json_lines(lines: Sequence[str]) -> list[dict[str, object]]:
    """Every line parsed as one JSON object (fails on the first line that is not one)."""
    objects = []
    for line in lines:
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        objects.append(obj)
    return objects


@contextlib.contextmanager
def udpbeat_server(*flags: str, host: str = "127.0.0.1") -> Iterator[tuple[Process, int]]:
    """``udpbeat server --json`` on a free port of ``host``; yields the process and the port."""
    with Process(["-m", "udpbeat", "server", "--host", host, "--port", "0", "--json", *flags]) as p:
        listening = json.loads(p.wait_for(lambda line: '"listening"' in line))
        assert listening["type"] == "listening"
        yield p, int(listening["port"])


# --- a UDP server that misbehaves on cue -----------------------------------------------------


@dataclass
class Script:
    """What :class:`ScriptedServer` does with each heartbeat, by sequence number.

    ``hold``: {k: m} keeps the reply to k and sends it just before the reply to m (so it is late
    by construction when m is sent only after k timed out); ``copies``: {k: n} sends the reply to
    k n times; ``delay``: {k: seconds} sends the reply that much later; ``drop``: never answer;
    ``extra``: {k: [datagrams]} sends these right before the reply to k (or instead of it, if
    k is dropped).
    """

    hold: dict[int, int] = field(default_factory=dict)
    copies: dict[int, int] = field(default_factory=dict)
    delay: dict[int, float] = field(default_factory=dict)
    drop: set[int] = field(default_factory=set)
    extra: dict[int, list[bytes]] = field(default_factory=dict)


def exercise_reply(request: bytes, receive_time: float) -> tuple[int, bytes]:
    """The sequence number and the reply, computed the exercise server's way."""
    _, seq, sent = request.decode().split()
    difference = receive_time - float(sent)
    return int(seq), f"Seq: {seq}, Time Difference: {difference:.6f} seconds".encode()


class ScriptedServer:
    """A heartbeat server on 127.0.0.1 in a thread, answering as its :class:`Script` says."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.requests: list[int] = []
        self._held: dict[int, list[tuple[bytes, tuple[str, int]]]] = {}
        self._timed: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._stopping = threading.Event()
        self._seen = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name="scripted-server", daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._thread.join(WAIT)
        self.sock.close()

    def wait_for_requests(self, count: int, timeout: float = WAIT) -> None:
        with self._seen:
            if not self._seen.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"only {len(self.requests)} of {count} requests arrived")

    def _serve(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            while self._timed and self._timed[0][0] <= now:
                _, _, reply, address = heapq.heappop(self._timed)
                self.sock.sendto(reply, address)
            wait = 0.05 if not self._timed else min(0.05, self._timed[0][0] - now)
            self.sock.settimeout(max(wait, 0.001))
            try:
                data, address = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self._answer(data, address)

    def _answer(self, data: bytes, address: tuple[str, int]) -> None:
        seq, reply = exercise_reply(data, time.time())
        with self._seen:
            self.requests.append(seq)
            self._seen.notify_all()
        script = self.script
        for held in [k for k, m in script.hold.items() if m == seq]:
            for late_reply, late_address in self._held.pop(held, []):
                self.sock.sendto(late_reply, late_address)
        for datagram in script.extra.get(seq, []):
            self.sock.sendto(datagram, address)
        if seq in script.drop:
            return
        if seq in script.hold:
            self._held.setdefault(seq, []).append((reply, address))
            return
        if seq in script.delay:
            due = time.monotonic() + script.delay[seq]
            heapq.heappush(self._timed, (due, seq, reply, address))
            return
        for _ in range(script.copies.get(seq, 1)):
            self.sock.sendto(reply, address)
