"""``udpbeat client`` as a real process: output, JSON Lines, exit codes and interruption.

Exit status: 0 the run ended with the server up, 1 it was declared down (or never answered),
2 bad usage or an error that stopped the run, always with one line on stderr and no traceback.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator

import pytest
from helpers import (
    Process,
    Script,
    ScriptedServer,
    free_udp_port,
    has_ipv6_loopback,
    json_lines,
    run_main,
    run_udpbeat,
)

from udpbeat import BackgroundServer
from udpbeat.wire.text import decode_request

#: The keys of the last JSON object, documented by ProbeReport.to_dict.
SUMMARY_KEYS = {
    "type",
    "target",
    "sent",
    "probes",
    "received",
    "lost",
    "refused",
    "late",
    "duplicates",
    "unknown",
    "malformed",
    "in_flight",
    "loss_percent",
    "rtt_ms",
    "jitter_ms",
    "time_difference_ms",
    "state",
    "detector",
    "transitions",
    "outages",
    "duration_s",
    "socket_errors",
    "first_seq",
    "host",
    "heartbeats",
    "confirmation_probes",
    "loss_while_up_percent",
    "lost_in_outages",
    "receive_timestamps",
    "send_timestamps",
}
#: The exercise's rule (down after 3 consecutive misses), for tests that count on its verdicts.
EXERCISE_RULE = ("--detector", "consecutive")
STATISTIC_KEYS = {"count", "min", "avg", "max", "mdev", "p50", "p90", "p99"}
#: Every event has ``at`` (Unix time) and ``monotonic`` (the client's clock) besides these.
EVENT_FIELDS = {
    "sent": {"type", "seq", "number", "wall_time", "probe"},
    "reply": {
        "type",
        "seq",
        "number",
        "rtt",
        "time_difference",
        "probe",
        "overdue",
        "timestamp",
    },
    "overdue": {"type", "seq", "number", "waited", "probe"},
    "late": {"type", "seq", "number", "rtt", "time_difference", "probe"},
    "duplicate": {"type", "seq", "number", "probe"},
    "unknown": {"type", "seq"},
    "malformed": {"type", "reason", "size", "detail"},
    "lost": {"type", "seq", "number", "reason", "probe"},
    "state": {"type", "old", "new", "reason", "evidence", "seq", "number", "probe"},
    "finished": {"type", "state", "received"},
}


class NumberedServer(ScriptedServer):
    """A :class:`ScriptedServer` whose script numbers heartbeats from 1, as the client's lines do.

    The client's first sequence number is random (and ``udpbeat client`` has no flag to set it),
    so the script is shifted onto it when the first heartbeat arrives; the client sends them in
    order, one at a time with ``-i 0``.
    """

    def _answer(self, data: bytes, address: tuple[str, int]) -> None:
        if not self.requests:
            offset = decode_request(data).seq - 1
            script = self.script
            self.script = Script(
                hold={k + offset: m + offset for k, m in script.hold.items()},
                copies={k + offset: n for k, n in script.copies.items()},
                delay={k + offset: d for k, d in script.delay.items()},
                drop={k + offset for k in script.drop},
                extra={k + offset: v for k, v in script.extra.items()},
            )
        super()._answer(data, address)


def relative_seqs(objects: list[dict[str, object]], kind: str) -> list[int]:
    """The ``seq`` of every JSON event of this ``type``, counted from 1 as the text lines are."""
    first = objects[-1]["first_seq"]
    seqs = [o["seq"] for o in objects if o["type"] == kind]
    assert isinstance(first, int) and all(isinstance(seq, int) for seq in seqs)
    return [seq - first + 1 for seq in seqs]  # type: ignore[operator]


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    with BackgroundServer("127.0.0.1", 0) as server:
        yield server.address[1]


def client(*args: str) -> tuple[int, list[str], list[str]]:
    return run_udpbeat("client", *args)


def assert_clean(stderr: list[str]) -> None:
    assert not any("Traceback" in line for line in stderr), stderr


def test_up_run_prints_ping_style_lines_and_exits_0(server_port: int) -> None:
    status, stdout, stderr = client(
        "127.0.0.1", "--port", str(server_port), "-c", "5", "-i", "0", "-W", "0.5"
    )
    assert (status, stderr) == (0, [])
    target = f"127.0.0.1:{server_port}"
    assert stdout[0] == (
        f"UDPBEAT 127.0.0.1 port {server_port}: 5 heartbeats, "
        "each as soon as the last is answered or timed out, timeout 500 ms"
    )
    replies = [line for line in stdout if line.startswith(f"Reply from {target}: heartbeat ")]
    assert len(replies) == 5
    assert re.fullmatch(
        rf"Reply from {target}: heartbeat 1 rtt=\d+\.\d{{3}} ms time diff=-?\d+\.\d{{3}} ms",
        replies[0],
    )
    assert f"--- 127.0.0.1 port {server_port} udpbeat statistics ---" in stdout
    assert any(line.startswith("5 heartbeats sent, 5 received, 0.0% loss") for line in stdout)
    assert any(line.startswith("rtt min/avg/max/mdev = ") for line in stdout)
    assert any(line.startswith("rtt p50/p90/p99 = ") for line in stdout)
    assert any(line.startswith("jitter (RFC 3550) = ") for line in stdout)
    assert any(line.startswith("time difference min/avg/max = ") for line in stdout)
    assert stdout[-1].startswith("state: UP")


def test_json_is_one_object_per_event_then_the_summary(server_port: int) -> None:
    status, stdout, stderr = client(
        "127.0.0.1", "--port", str(server_port), "-c", "4", "-i", "0", "-W", "0.5", "--json"
    )
    assert (status, stderr) == (0, [])
    objects = json_lines(stdout)
    summary = objects[-1]
    assert summary["type"] == "summary"
    assert set(summary) == SUMMARY_KEYS
    assert set(summary["rtt_ms"]) == set(summary["time_difference_ms"]) == STATISTIC_KEYS  # type: ignore[arg-type]
    for event in objects[:-1]:
        assert event["type"] in EVENT_FIELDS, event
        assert set(event) == EVENT_FIELDS[str(event["type"])] | {"at", "monotonic"}, event
    kinds = [str(o["type"]) for o in objects[:-1]]
    assert kinds.count("sent") == summary["sent"] == 4
    assert kinds.count("reply") == summary["received"] == 4
    assert summary["rtt_ms"]["count"] == 4  # type: ignore[index]
    assert summary["loss_percent"] == 0.0 and summary["state"] == "UP"
    assert kinds[-1] == "finished"
    assert relative_seqs(objects, "reply") == [1, 2, 3, 4]


def test_json_counts_late_and_duplicate_replies() -> None:
    with NumberedServer(Script(hold={2: 4}, copies={3: 3})) as server:
        status, stdout, _ = client(
            "127.0.0.1",
            "--port",
            str(server.port),
            "-c",
            "5",
            "-i",
            "0",
            "-W",
            "0.4",
            "--json",
            *EXERCISE_RULE,
        )
    objects = json_lines(stdout)
    summary = objects[-1]
    assert status == 0
    assert relative_seqs(objects, "late") == [2]
    assert relative_seqs(objects, "duplicate") == [3, 3]
    assert relative_seqs(objects, "reply") == [1, 3, 4, 5]
    assert (summary["sent"], summary["received"], summary["lost"]) == (5, 4, 1)
    assert (summary["late"], summary["duplicates"]) == (1, 2)
    assert summary["loss_percent"] == 20.0


def test_text_mode_shows_late_and_duplicate_lines() -> None:
    with NumberedServer(Script(hold={2: 4}, copies={3: 2})) as server:
        status, stdout, _ = client(
            "127.0.0.1",
            "--port",
            str(server.port),
            "-c",
            "5",
            "-i",
            "0",
            "-W",
            "0.4",
            *EXERCISE_RULE,
        )
    assert status == 0
    assert "Heartbeat 2: request timed out" in stdout
    assert any(line.startswith("Late reply for heartbeat 2 ") for line in stdout)
    assert "Duplicate reply for heartbeat 3: not counted" in stdout
    assert "replies not counted: 1 late (after the timeout), 1 duplicates" in stdout


@pytest.mark.parametrize("detector", [(), EXERCISE_RULE], ids=["default", "consecutive"])
def test_closed_port_is_refused_down_and_exit_1(detector: tuple[str, ...]) -> None:
    port = free_udp_port()
    args = ("127.0.0.1", "--port", str(port), "-c", "10", "-i", "0", "-W", "0.5", *detector)
    status, stdout, stderr = client(*args, "--json")
    assert status == 1
    assert_clean(stderr)
    summary = json_lines(stdout)[-1]
    assert summary["received"] == 0 and summary["lost"] == 0
    assert summary["refused"] == summary["sent"] >= 1  # type: ignore[operator]
    if detector == EXERCISE_RULE:
        assert summary["refused"] == 3
    assert summary["state"] == "DOWN"
    status, stdout, stderr = client(*args)
    assert status == 1
    assert_clean(stderr)
    assert f"Heartbeat 1: refused (ICMP: nothing listens on 127.0.0.1:{port})" in stdout
    assert "Nothing ever answered: the server is assumed to be down." in stdout
    assert stdout[-1].startswith("state: DOWN")


def test_never_answered_is_exit_1_even_before_down() -> None:
    with NumberedServer(Script(drop={1, 2})) as server:
        status, stdout, _ = client(
            "127.0.0.1",
            "--port",
            str(server.port),
            "-c",
            "2",
            "-i",
            "0",
            "-W",
            "0.1",
            "--json",
            *EXERCISE_RULE,
        )
    summary = json_lines(stdout)[-1]
    assert summary["received"] == 0 and summary["state"] != "DOWN"
    assert status == 1


def test_max_misses_sets_the_rule() -> None:
    with NumberedServer(Script(drop={2, 3})) as server:
        status, stdout, _ = client(
            "127.0.0.1",
            "--port",
            str(server.port),
            "-c",
            "6",
            "-i",
            "0",
            "-W",
            "0.3",
            "--max-misses",
            "2",
            "--json",
        )
    summary = json_lines(stdout)[-1]
    assert status == 1
    assert summary["state"] == "DOWN" and summary["sent"] == 3
    assert summary["detector"]["max_misses"] == 2  # type: ignore[index]


def test_quiet_prints_the_header_and_the_summary_only(server_port: int) -> None:
    # ping -q: "Nothing is displayed except the summary lines at startup time and when finished."
    status, stdout, _ = client("127.0.0.1", "--port", str(server_port), "-c", "3", "-i", "0", "-q")
    assert status == 0
    assert stdout[0].startswith("UDPBEAT 127.0.0.1 port ")
    assert not any(line.startswith(("Reply from", "State ")) for line in stdout)
    assert any(line.startswith("3 heartbeats sent") for line in stdout)


@pytest.mark.parametrize(
    "args",
    [
        ["127.0.0.1", "--count", "-1"],
        ["127.0.0.1", "--interval", "-1"],
        ["127.0.0.1", "--interval", "soon"],
        ["127.0.0.1", "--timeout", "0"],
        ["127.0.0.1", "--max-misses", "0"],
        ["127.0.0.1", "--port", "0"],
        ["127.0.0.1", "--port", "70000"],
        ["127.0.0.1", "--port", "abc"],
        ["127.0.0.1", "--no-such-flag"],
        [],
        ["no-such-host.invalid", "--count", "1"],
    ],
    ids=lambda args: " ".join(args) or "no host",
)
def test_errors_are_one_line_and_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, stderr = run_main(capsys, "client", *args)
    assert status == 2
    assert len(stderr) == 1, stderr
    assert stderr[0].startswith("udpbeat: error: ")


def test_unresolvable_host_in_a_real_process() -> None:
    status, _, stderr = client("no-such-host.invalid", "--count", "1")
    assert status == 2
    assert len(stderr) == 1
    assert stderr[0].startswith("udpbeat: error: cannot resolve host 'no-such-host.invalid'")


def test_unknown_command_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, stderr = run_main(capsys, "serve")
    assert status == 2 and len(stderr) == 1 and "serve" in stderr[0]


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, stdout, _ = run_main(capsys, "--help")
    assert status == 0 and any("client" in line for line in stdout)
    status, stdout, _ = run_main(capsys, "--version")
    assert status == 0 and re.search(r"\d+\.\d+\.\d+", stdout[0])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_prints_the_summary_so_far(server_port: int, signum: signal.Signals) -> None:
    args = ["-m", "udpbeat", "client", "127.0.0.1", "--port", str(server_port)]
    with Process([*args, "--count", "0", "--interval", "0.02", "--json"]) as run:
        for _ in range(3):
            run.wait_for(lambda line: '"type": "reply"' in line)
        run.send_signal(signum)
        status, stdout, stderr = run.finish()
    assert status == 0
    assert_clean(stderr)
    assert stderr == []
    objects = json_lines(stdout)
    summary = objects[-1]
    assert summary["type"] == "summary"
    assert summary["received"] >= 3  # type: ignore[operator]
    assert summary["received"] == sum(o["type"] == "reply" for o in objects)
    assert summary["sent"] == sum(o["type"] == "sent" for o in objects)
    assert summary["state"] == "UP"


def test_interrupt_in_text_mode_prints_the_statistics(server_port: int) -> None:
    args = ["-m", "udpbeat", "client", "127.0.0.1", "--port", str(server_port)]
    with Process([*args, "--count", "0", "--interval", "0.02"]) as run:
        run.wait_for(lambda line: line.startswith("Reply from") and " heartbeat 2 " in line)
        run.send_signal(signal.SIGINT)
        status, stdout, stderr = run.finish()
    assert (status, stderr) == (0, [])
    assert any(line.endswith("udpbeat statistics ---") for line in stdout)
    assert stdout[-1].startswith("state: UP")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_target() -> None:
    with BackgroundServer("::1", 0) as server:
        port = server.address[1]
        status, stdout, stderr = client("::1", "--port", str(port), "-c", "2", "-i", "0")
    assert (status, stderr) == (0, [])
    assert sum(line.startswith(f"Reply from [::1]:{port}: heartbeat ") for line in stdout) == 2
