"""Both directions with the exercise's own code: its client against our server, ours against its.

The exercise's scripts are vendored in ``tests/exercise/`` unchanged but for where they listen and
send (loopback and a port from argv instead of ``''``/``localhost`` and 12000);
``test_vendored_code_is_the_exercise_verbatim`` holds them to that.
"""

from __future__ import annotations

import re
import signal

import pytest
from helpers import EXERCISE, ROOT, Process, free_udp_port, json_lines, udpbeat_server

REFERENCE = ROOT.parent / "shared" / "reference" / "exercise-udp-heartbeat.md"

#: Each vendored file: its two-line prologue, and the one line changed from the reference.
VENDORED = {
    "exercise_server.py": (
        "import sys  # udpbeat test prologue: the port comes from argv, and the bind below uses\n"
        "PORT = int(sys.argv[1])  # 127.0.0.1 and PORT, not '' and 12000; all else is verbatim.\n",
        ("serverSocket.bind(('', 12000))", "serverSocket.bind(('127.0.0.1', PORT))"),
    ),
    "exercise_client.py": (
        "import sys  # udpbeat test prologue: the port comes from argv, and the address below is\n"
        "PORT = int(sys.argv[1])  # 127.0.0.1 and PORT, not 'localhost' and 12000; "
        "all else verbatim.\n",
        ("serverAddress = ('localhost', 12000)", "serverAddress = ('127.0.0.1', PORT)"),
    ),
}


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"the exercise's text is not at {REFERENCE}")
def test_vendored_code_is_the_exercise_verbatim() -> None:
    server_block, client_block = re.findall(r"```python\n(.*?)```", REFERENCE.read_text(), re.S)
    originals = {"exercise_server.py": server_block, "exercise_client.py": client_block}
    for name, (prologue, (original_line, vendored_line)) in VENDORED.items():
        vendored = (EXERCISE / name).read_text()
        assert vendored.startswith(prologue), name
        body = vendored.removeprefix(prologue)
        assert body.count(vendored_line) == 1, name
        assert body.replace(vendored_line, original_line) == originals[name], name


def test_exercise_client_against_our_server() -> None:
    with udpbeat_server("--loss", "0") as (server, port):
        with Process([str(EXERCISE / "exercise_client.py"), str(port)]) as client:
            status, stdout, stderr = client.finish(timeout=60)
        server.send_signal(signal.SIGTERM)
        _, server_stdout, _ = server.finish()
    assert status == 0, client.output()
    assert stderr == []
    assert not any("timed out" in line or "stopped" in line for line in stdout), client.output()
    sent = [line for line in stdout if line.startswith("Sent: Heartbeat ")]
    replies = [line for line in stdout if line.startswith("Reply from ")]
    assert len(sent) == len(replies) == 100
    reply = re.compile(
        r"Reply from \('127\.0\.0\.1', \d+\): Seq: (\d+), Time Difference: -?\d+\.\d{6} seconds"
    )
    seqs = []
    for line in replies:
        match = reply.fullmatch(line)
        assert match is not None, line
        seqs.append(int(match.group(1)))
    assert seqs == list(range(1, 101))
    summary = json_lines(server_stdout)[-1]
    assert summary["type"] == "summary"
    assert summary["received"] == summary["replied"] == 100
    assert summary["malformed"] == 0


@pytest.mark.parametrize("detector", ["consecutive", "adaptive"])
def test_our_client_against_the_exercise_server(detector: str) -> None:
    # The exercise's server drops when randint(0, 10) < 4: 4 in 11. Three drops in a row end
    # a run as DOWN under the exercise's rule in a fair share of runs, so both endings are
    # checked. The adaptive detector also sends confirmation probes, in the same format.
    port = free_udp_port()
    count, max_misses = 30, 3
    with Process([str(EXERCISE / "exercise_server.py"), str(port)]) as server:
        server.wait_for(lambda line: line == "UDP Heartbeat Server is running...")
        with Process(
            [
                "-m",
                "udpbeat",
                "client",
                "127.0.0.1",
                "--port",
                str(port),
                "--count",
                str(count),
                "--interval",
                "0",
                "--timeout",
                "0.2",
                "--detector",
                detector,
                *(["--max-misses", str(max_misses)] if detector == "consecutive" else []),
                "--json",
            ]
        ) as client:
            status, stdout, stderr = client.finish(timeout=60)
        events = json_lines(stdout)
        sent = [e["seq"] for e in events if e["type"] == "sent"]
        # Wait until the exercise's server has printed what it did with every heartbeat sent.
        for _ in sent:
            server.wait_for(lambda line: line.startswith(("Responded to", "Simulating packet")))
        server.send_signal(signal.SIGTERM)
        server.finish()
    assert stderr == [], client.output()
    summary = events[-1]
    assert summary["type"] == "summary"
    replies = [e["seq"] for e in events if e["type"] == "reply"]
    late = [e["seq"] for e in events if e["type"] == "late"]
    lost = [e["seq"] for e in events if e["type"] == "lost"]

    # Matched by sequence number: each reply answers a heartbeat this run sent, once.
    assert sent == list(range(1, len(sent) + 1))
    assert len(set(replies)) == len(replies) and set(replies) <= set(sent)
    answered_by_server = {
        int(m.group(1)): float(m.group(2))
        for line in server.stdout_lines
        if (m := re.search(r"with Seq: (\d+), Time Difference: (-?[0-9.]+) seconds", line))
    }
    assert set(replies) <= set(answered_by_server)
    for event in events:
        if event["type"] in ("reply", "late"):
            difference = answered_by_server[event["seq"]]  # type: ignore[index]
            assert event["time_difference"] == pytest.approx(difference, abs=1e-9)
    assert set(lost) >= set(sent) - set(answered_by_server)

    # The summary's figures add up.
    assert summary["sent"] == len(sent)
    assert summary["received"] == len(replies) == summary["rtt_ms"]["count"]  # type: ignore[index]
    assert summary["lost"] == len(lost)
    assert summary["late"] == len(late) and set(late) <= set(lost)
    assert summary["duplicates"] == summary["unknown"] == summary["refused"] == 0
    assert summary["in_flight"] == 0
    assert summary["sent"] == summary["received"] + summary["lost"]  # type: ignore[operator]
    dropped = len(set(sent) - set(answered_by_server))
    assert dropped == sum(line.startswith("Simulating packet loss") for line in server.stdout_lines)

    regular = sum(1 for e in events if e["type"] == "sent" and not e["probe"])
    assert summary["probes"] == len(sent) - regular
    if summary["state"] == "DOWN":
        assert status == 1
        assert regular <= count
    else:
        assert summary["state"] in ("UP", "SUSPECT")  # SUSPECT: the last one or two missed
        assert status == 0
        assert regular == count
    if detector == "consecutive":
        # The exercise's rule: DOWN at the first run of `max_misses` consecutive misses, and
        # only there; no probes.
        assert summary["probes"] == 0
        outcomes = "".join(
            "R" if e["type"] == "reply" else "L" for e in events if e["type"] in ("reply", "lost")
        )
        first_down = outcomes.find("L" * max_misses)
        if summary["state"] == "DOWN":
            assert first_down + max_misses == len(outcomes) == len(sent)
        else:
            assert first_down == -1
