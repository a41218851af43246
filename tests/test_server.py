"""``udpbeat server`` as a real process on loopback: replies, bad input, signals, output modes."""

from __future__ import annotations

import functools
import json
import re
import signal
import socket
import time

import helpers
import pytest
from helpers import (
    Process,
    exchange,
    has_ipv6_loopback,
    json_lines,
    run_main,
    run_udpbeat,
    udp_socket,
    udpbeat_server,
)

from udpbeat import _mmsg

REPLY = re.compile(rb"Seq: ([0-9]+), Time Difference: (-?[0-9]+\.[0-9]{6}) seconds")


@pytest.fixture(
    autouse=True,
    params=[
        pytest.param(
            "batched",
            marks=pytest.mark.skipif(_mmsg.load() is None, reason="no recvmmsg/sendmmsg here"),
        ),
        "portable",
    ],
)
def io_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs against both receive paths (``udpbeat server --io``)."""
    path: str = request.param
    with_io = functools.partial(helpers.udpbeat_server, "--io", path)
    monkeypatch.setitem(globals(), "udpbeat_server", with_io)
    return path


#: One datagram of every malformed kind, with the reason it must be counted under.
MALFORMED: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00Heartbeat", "not-text"),
    ("Heartbeat 1 1700000000.5 é".encode(), "not-text"),
    (b"", "bad-keyword"),
    (b"Heartbeet 1 1700000000.5", "bad-keyword"),
    (b"heartbeat 1 1700000000.5", "bad-keyword"),
    (b"Seq: 1, Time Difference: 0.000001 seconds", "bad-keyword"),
    (b"Heartbeat", "missing-field"),
    (b"Heartbeat 1", "missing-field"),
    (b"Heartbeat  1 1700000000.5", "missing-field"),
    (b"Heartbeat 1 1700000000.5 extra", "missing-field"),
    (b"Heartbeat x 1700000000.5", "bad-sequence"),
    (b"Heartbeat -1 1700000000.5", "bad-sequence"),
    (b"Heartbeat 1.5 1700000000.5", "bad-sequence"),
    (b"Heartbeat 9223372036854775808 1700000000.5", "bad-sequence"),
    (b"Heartbeat 99999999999999999999999 1700000000.5", "bad-sequence"),
    (b"Heartbeat 1 abc", "bad-timestamp"),
    (b"Heartbeat 1 nan", "bad-timestamp"),
    (b"Heartbeat 1 inf", "bad-timestamp"),
    (b"Heartbeat 1 -1700000000.5", "bad-timestamp"),
    (b"Heartbeat 1 1e300", "bad-timestamp"),
    (b"Heartbeat 1 " + b"1" * 200, "oversize"),
    (b"x" * 1500, "oversize"),
]


def heartbeat(seq: int | str, sent: float) -> bytes:
    return f"Heartbeat {seq} {sent}".encode()


def stop_and_summary(server: Process, signum: signal.Signals) -> dict[str, object]:
    server.send_signal(signum)
    status, stdout, stderr = server.finish()
    assert status == 0, server.output()
    assert not any("Traceback" in line for line in stderr), server.output()
    summary = json_lines(stdout)[-1]
    assert summary["type"] == "summary"
    return summary


def test_reply_is_the_exercise_format_byte_for_byte() -> None:
    with udpbeat_server() as (server, port), udp_socket() as sock:
        address = ("127.0.0.1", port)
        for seq, offset in [(1, 0.0), (2, -0.25), ("007", 0.0), (9223372036854775807, 5.0)]:
            sent = time.time() + offset
            before = time.time()
            reply = exchange(sock, heartbeat(seq, sent), address)
            after = time.time()
            match = REPLY.fullmatch(reply)
            assert match is not None, reply
            assert match.group(1) == str(seq).encode()  # the digits echoed as sent
            difference = float(match.group(2))
            # The server's clock is ours: its receive time lies between our send and receive.
            # (Slack for the 6-decimal rounding and float resolution near 1.7e9 s.)
            assert before - sent - 2e-6 <= difference <= after - sent + 2e-6
            assert reply == f"Seq: {seq}, Time Difference: {difference:.6f} seconds".encode()
        # A trailing newline (``echo ... | nc -u``) is tolerated and not echoed.
        reply = exchange(sock, heartbeat(5, time.time()) + b"\n", address)
        assert REPLY.fullmatch(reply) is not None and reply.startswith(b"Seq: 5, ")
        summary = stop_and_summary(server, signal.SIGTERM)
    assert summary["received"] == summary["replied"] == 5


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_malformed_datagrams_are_never_answered_and_counted_by_reason(
    signum: signal.Signals,
) -> None:
    with udpbeat_server() as (server, port), udp_socket() as sock:
        address = ("127.0.0.1", port)
        for index, (datagram, _) in enumerate(MALFORMED):
            sock.sendto(datagram, address)
            # Datagrams on loopback arrive in order, so the next reply answers this valid
            # heartbeat only if nothing was sent back for the malformed one before it.
            reply = exchange(sock, heartbeat(1000 + index, time.time()), address)
            assert reply.startswith(f"Seq: {1000 + index}, ".encode()), (datagram, reply)
        summary = stop_and_summary(server, signum)
    expected: dict[str, int] = {}
    for _, reason in MALFORMED:
        expected[reason] = expected.get(reason, 0) + 1
    assert summary["malformed_by_reason"] == expected
    assert summary["malformed"] == len(MALFORMED)
    assert summary["replied"] == len(MALFORMED)
    assert summary["received"] == 2 * len(MALFORMED)
    assert summary["dropped_loss"] == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_with_counters(signum: signal.Signals, io_path: str) -> None:
    args = ["-m", "udpbeat", "server", "--host", "127.0.0.1", "--port", "0", "--io", io_path]
    with Process(args) as server:
        listening = server.wait_for(lambda line: "listening" in line)
        port = int(re.findall(r":(\d+)", listening)[0])
        with udp_socket() as sock:
            address = ("127.0.0.1", port)
            exchange(sock, heartbeat(1, time.time()), address)
            sock.sendto(b"Heartbeat one 2.0", address)
            exchange(sock, heartbeat(2, time.time()), address)
        server.wait_for(lambda line: line.startswith("Responded to") and "Seq: 2," in line)
        server.send_signal(signum)
        status, stdout, stderr = server.finish()
    assert status == 0, server.output()
    assert not any("Traceback" in line for line in stderr), server.output()
    assert "--- udpbeat server statistics ---" in stdout
    assert stdout[-1].startswith("3 received, 2 replied, 0 dropped by simulated loss, ")
    assert "1 malformed (bad-sequence 1)" in stdout[-1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_right_after_the_listening_line_is_a_clean_stop(signum: signal.Signals) -> None:
    # The listening line is the cue scripts wait for; a stop sent the moment it appears must
    # already be handled (not kill the process or raise KeyboardInterrupt).
    with udpbeat_server() as (server, _):
        summary = stop_and_summary(server, signum)
    assert summary["received"] == 0


def test_json_output_lines_all_parse() -> None:
    with udpbeat_server("--loss", "0.5", "--seed", "7") as (server, port), udp_socket() as sock:
        address = ("127.0.0.1", port)
        for seq in range(1, 21):
            sock.sendto(heartbeat(seq, time.time()), address)
        sock.sendto(b"junk", address)
        server.wait_for(lambda line: '"malformed"' in line)
        summary = stop_and_summary(server, signal.SIGTERM)
        objects = json_lines(server.stdout_lines)
    kinds = [obj["type"] for obj in objects]
    assert kinds[0] == "listening" and kinds[-1] == "summary"
    assert objects[0]["loss"] == 0.5 and objects[0]["seed"] == 7
    assert kinds.count("replied") == summary["replied"]
    assert kinds.count("dropped-loss") == summary["dropped_loss"]
    assert summary["replied"] + summary["dropped_loss"] == 20
    assert 0 < summary["dropped_loss"] < 20  # type: ignore[operator]
    assert kinds.count("malformed") == 1 and summary["malformed"] == 1
    for obj in objects[1:-1]:
        assert set(obj) == {"type", "at", "source", "detail"}
        assert obj["source"].startswith("127.0.0.1:")  # type: ignore[union-attr]
    assert set(summary) >= {
        "type",
        "received",
        "replied",
        "dropped_loss",
        "malformed",
        "malformed_by_reason",
        "send_errors",
        "send_dropped",
        "receive_errors",
    }


def test_same_seed_drops_the_same_heartbeats() -> None:
    def replied_seqs() -> list[int]:
        with udpbeat_server("--loss", "0.3", "--seed", "42") as (server, port):
            with udp_socket() as sock:
                for seq in range(1, 41):
                    sock.sendto(heartbeat(seq, time.time()), ("127.0.0.1", port))
            server.wait_for(lambda line: '"detail": "40"' in line or "Seq: 40," in line)
            summary = stop_and_summary(server, signal.SIGTERM)
            assert summary["received"] == 40
            replies = [o for o in json_lines(server.stdout_lines) if o["type"] == "replied"]
        return [int(str(o["detail"]).split(",")[0].removeprefix("Seq: ")) for o in replies]

    first = replied_seqs()
    assert first == replied_seqs()
    assert 0 < len(first) < 40


def test_quiet_prints_no_line_per_packet() -> None:
    with udpbeat_server("--quiet") as (server, port), udp_socket() as sock:
        for seq in range(1, 6):
            exchange(sock, heartbeat(seq, time.time()), ("127.0.0.1", port))
        summary = stop_and_summary(server, signal.SIGINT)
        kinds = [obj["type"] for obj in json_lines(server.stdout_lines)]
    assert kinds == ["listening", "summary"]
    assert summary["received"] == summary["replied"] == 5


def test_quiet_text_mode_prints_only_the_listening_line_and_counters(io_path: str) -> None:
    args = ["-m", "udpbeat", "server", "--host", "127.0.0.1", "--port", "0", "--quiet"]
    args += ["--io", io_path]
    with Process(args) as server:
        listening = server.wait_for(lambda line: "listening" in line)
        port = int(re.findall(r":(\d+)", listening)[0])
        with udp_socket() as sock:
            for seq in range(1, 4):
                exchange(sock, heartbeat(seq, time.time()), ("127.0.0.1", port))
        server.send_signal(signal.SIGTERM)
        status, stdout, _ = server.finish()
    assert status == 0
    assert stdout[:2] == [listening, "--- udpbeat server statistics ---"]
    assert len(stdout) == 3
    assert stdout[2].startswith("3 received, 3 replied, 0 dropped by simulated loss, ")
    assert "0 malformed" in stdout[2]


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_loopback() -> None:
    with udpbeat_server(host="::1") as (server, port), udp_socket("::1") as sock:
        reply = exchange(sock, heartbeat(3, time.time()), ("::1", port))
        assert REPLY.fullmatch(reply) is not None and reply.startswith(b"Seq: 3, ")
        summary = stop_and_summary(server, signal.SIGTERM)
        replied = [o for o in json_lines(server.stdout_lines) if o["type"] == "replied"]
    assert summary["replied"] == 1
    assert str(replied[0]["source"]).startswith("[::1]:")


@pytest.mark.parametrize(
    "flags",
    [
        ["--loss", "2"],
        ["--loss", "-0.1"],
        ["--loss", "nan"],
        ["--port", "abc"],
        ["--port", "70000"],
        ["--seed", "x"],
        ["--host", "no-such-host.invalid", "--port", "0"],
        ["--no-such-flag"],
    ],
    ids=lambda flags: " ".join(flags),
)
def test_bad_flags_give_one_line_and_exit_2(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, stdout, stderr = run_main(capsys, "server", *flags)
    assert status == 2
    assert len(stderr) == 1, stderr
    assert stderr[0].startswith("udpbeat: error: ")
    assert not any("listening" in line for line in stdout)


def test_bad_flag_in_a_real_process() -> None:
    status, stdout, stderr = run_udpbeat("server", "--port", "abc")
    assert (status, stdout) == (2, [])
    assert stderr == [
        "udpbeat: error: Invalid value for '--port': 'abc' is not a valid integer range."
    ]


def test_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        status, _, stderr = run_udpbeat("server", "--host", "127.0.0.1", "--port", str(port))
    assert status == 2
    assert len(stderr) == 1 and stderr[0].startswith("udpbeat: error: cannot bind"), stderr


def test_json_summary_is_valid_json_after_a_flood_of_junk() -> None:
    with udpbeat_server() as (server, port), udp_socket() as sock:
        address = ("127.0.0.1", port)
        # Fewer than the default per-source burst, so that none is rate limited.
        for _ in range(100):
            sock.sendto(b"\x00" * 8, address)
        reply = exchange(sock, heartbeat(1, time.time()), address)
        assert reply.startswith(b"Seq: 1, ")
        summary = stop_and_summary(server, signal.SIGTERM)
        json.dumps(summary)
    assert summary["malformed_by_reason"] == {"bad-keyword": 100}
    # Malformed datagrams are logged rate-limited: far fewer lines than datagrams.
    logged = [o for o in json_lines(server.stdout_lines) if o["type"] == "malformed"]
    assert 1 <= len(logged) < 50
