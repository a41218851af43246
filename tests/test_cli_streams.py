"""stdout and signals: a blocked or lost reader never hangs a command or silences a server.

Subprocesses, because pipes, closed descriptors and signals are what is tested. Every wait is
bounded; none sleeps and hopes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, Process, exchange, udp_socket, udpbeat_server

from udpbeat.wire import text

#: How long a command may take to react to what a test does to it.
BOUND = 8.0


def _udpbeat(*args: str, **popen: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "udpbeat", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        **popen,
    )


def _request(seq: int) -> bytes:
    return text.encode_request(text.Heartbeat(seq, time.time()))


def _wait_exit(process: subprocess.Popen[bytes], bound: float = BOUND) -> int:
    try:
        return process.wait(bound)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.args} still running after {bound}s") from None


# --- the client -------------------------------------------------------------------------------


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_client_whose_reader_goes_away_ends_at_once_and_quietly(json_flag: list[str]) -> None:
    # `udpbeat client HOST | head -2`: head reads two lines and exits.
    with udpbeat_server("--rate-limit", "0") as (_, port):
        client = _udpbeat(
            "client",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "0",
            "-i",
            "0.05",
            *json_flag,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert client.stdout is not None and client.stderr is not None
        client.stdout.readline()
        client.stdout.readline()
        client.stdout.close()  # the reader goes away
        status = _wait_exit(client)
        assert client.stderr.read() == b"", "no traceback, no message: it ends quietly"
        assert status in (0, 1)


def test_a_client_with_stdout_closed_ends_quietly() -> None:
    with udpbeat_server() as (_, port):
        client = subprocess.run(
            [
                "sh",
                "-c",
                f'exec "$0" -m udpbeat client 127.0.0.1 --port {port} -c 0 >&-',
                sys.executable,
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=BOUND,
        )
    assert client.stderr == b""
    assert client.returncode == 1  # nothing to say, no verdict to give: not "up"


def test_a_client_with_stdout_blocked_still_obeys_sigterm() -> None:
    # A pipe nobody reads: it fills, and the client's writes would block.
    with udpbeat_server("--rate-limit", "0", "--quiet") as (_, port):
        client = _udpbeat(
            "client",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "0",
            "-i",
            "0",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert client.stdout is not None
        _shrink_pipe(client.stdout.fileno())
        _wait_until_pipe_full(client.stdout.fileno())
        client.send_signal(signal.SIGTERM)
        _wait_exit(client)
        client.stdout.close()
        assert client.stderr is not None
        assert b"Traceback" not in client.stderr.read()


def _shrink_pipe(fd: int) -> None:
    """Make the pipe behind ``fd`` as small as the kernel allows (a page), so that a busy
    machine fills it in a few dozen lines (F_SETPIPE_SZ; Linux)."""
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, 1031, 4096)  # F_SETPIPE_SZ


def _wait_until_pipe_full(fd: int, bound: float = BOUND) -> None:
    """Wait until the pipe behind ``fd`` holds a full buffer (the writer is stuck)."""
    import fcntl
    import termios

    deadline = time.monotonic() + bound
    size = fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ
    while time.monotonic() < deadline:
        queued = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
        if queued >= size - min(4096, size // 4):
            return
        time.sleep(0.01)
    raise AssertionError("the pipe never filled")


def test_sighup_ends_a_client_like_sigterm_and_reaps_its_hooks(tmp_path: Path) -> None:
    pids = tmp_path / "hook.pid"
    with (
        udpbeat_server() as (_, port),
        Process(
            [
                "-m",
                "udpbeat",
                "client",
                "127.0.0.1",
                "--port",
                str(port),
                "-c",
                "0",
                "-i",
                "0.05",
                "--on-change",
                f"echo $$ >> {pids}; exec sleep 60",
            ]
        ) as client,
    ):
        client.wait_for(lambda line: "UNKNOWN -> UP" in line)
        _wait_for(lambda: pids.exists() and pids.read_text().strip() != "")
        client.send_signal(signal.SIGHUP)
        status, stdout, _ = client.finish(timeout=BOUND)
    assert status == 0
    assert any("udpbeat statistics" in line for line in stdout), "it printed its summary"
    hook_pid = int(pids.read_text().split()[0])
    _wait_for(lambda: not _alive(hook_pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent, the client, is gone and init reaps it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _wait_for(condition, bound: float = BOUND) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# --- the server -------------------------------------------------------------------------------


def _answers(port: int, seq: int) -> bool:
    with udp_socket() as sock:
        reply = exchange(sock, _request(seq), ("127.0.0.1", port))
    return text.decode_reply(reply).seq == seq


@contextlib.contextmanager
def _piped_server(*flags: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``udpbeat server --json`` on loopback with stdout and stderr on pipes this test holds;
    yields the process and its port (read from the listening line). Killed if still running."""
    server = _udpbeat(
        "server", "--host", "127.0.0.1", "--port", "0", "--json", *flags,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None and server.stderr is not None
    try:
        yield server, json.loads(server.stdout.readline())["port"]
    finally:
        if not server.stdout.closed:
            server.stdout.close()
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.parametrize("flags", [[], ["--stats-interval", "0.1"], ["--json"]])
def test_a_server_that_loses_stdout_keeps_answering(flags: list[str]) -> None:
    with _piped_server(*flags) as (server, port):
        assert server.stdout is not None and server.stderr is not None
        server.stdout.close()  # `| head -1`
        for seq in range(1, 30):
            assert _answers(port, seq)
        assert server.poll() is None, "it is still running"
        server.send_signal(signal.SIGTERM)
        assert _wait_exit(server) == 0
        errors = server.stderr.read().decode().splitlines()
    lost = [line for line in errors if "stdout lost" in line]
    assert len(lost) == 1, errors
    assert "Traceback" not in "\n".join(errors)
    summary = json.loads(errors[-1])
    assert summary["type"] == "summary"
    assert summary["replied"] >= 29


def test_a_server_started_with_stdout_closed_serves_and_reports_on_stderr() -> None:
    server = subprocess.Popen(
        ["sh", "-c", 'exec "$0" -m udpbeat server --host 127.0.0.1 --port 0 >&-', sys.executable],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert server.stderr is not None
    try:
        first = server.stderr.readline().decode()
        assert "stdout lost" in first
        server.send_signal(signal.SIGTERM)
        assert _wait_exit(server) == 0
        rest = server.stderr.read().decode()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert "udpbeat server statistics" in rest
    assert "Traceback" not in rest


def test_a_server_with_stdout_blocked_still_obeys_sigterm_and_answers() -> None:
    with _piped_server("--rate-limit", "0") as (server, port):
        assert server.stdout is not None and server.stderr is not None
        _shrink_pipe(server.stdout.fileno())
        # One log line per reply, never read: the pipe fills.
        with udp_socket() as sock:
            sock.setblocking(False)
            for seq in range(1, 4001):
                sock.sendto(_request(seq), ("127.0.0.1", port))
                if seq % 200 == 0:
                    time.sleep(0.005)  # let the kernel's socket buffers drain (bounded)
        _wait_until_pipe_full(server.stdout.fileno())
        assert _answers(port, 99_999), "the reflector answers with its log stuck"
        server.send_signal(signal.SIGTERM)
        assert _wait_exit(server) == 0
        errors = server.stderr.read().decode()
    assert "Traceback" not in errors
    assert "summary" in errors, "the summary that stdout could not take went to stderr"


def test_sighup_keeps_a_server_running() -> None:
    with udpbeat_server() as (server, port):
        server.send_signal(signal.SIGHUP)
        server.wait_for(lambda line: '"stats"' in line)
        assert _answers(port, 7)
        server.send_signal(signal.SIGTERM)
        status, stdout, stderr = server.finish()
    assert status == 0
    assert any("SIGHUP" in line for line in stderr)
    assert json.loads(stdout[-1])["type"] == "summary"


def test_a_server_whose_reader_dies_exits_2_with_one_line(tmp_path: Path) -> None:
    # The reader's loop itself fails (not one datagram's handling): the process must not stay
    # up deaf. A sitecustomize makes the reader raise at once.
    (tmp_path / "sitecustomize.py").write_text(
        "import udpbeat.server as s\n"
        "def broken(self, sock):\n"
        "    raise OSError(5, 'the reader broke')\n"
        "s.Server._receive = broken\n"
        "s.Server._receive_batched = broken\n"
    )
    environment = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}" + os.environ.get("PYTHONPATH", ""),
    }
    result = subprocess.run(
        [sys.executable, "-m", "udpbeat", "server", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=BOUND,
        env=environment,
    )
    assert result.returncode == 2
    errors = result.stderr.decode().splitlines()
    assert [line for line in errors if line.startswith("udpbeat: error:")] == [
        "udpbeat: error: the reader stopped: OSError: [Errno 5] the reader broke"
    ]
    assert "Traceback" not in result.stderr.decode()


def test_socket_module_is_not_shadowed() -> None:
    # guard_standard_streams opens /dev/null on closed descriptors; the sockets a command
    # opens afterwards never take descriptors 0-2.
    from udpbeat.cli.output import guard_standard_streams

    assert guard_standard_streams() is False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert sock.fileno() > 2
