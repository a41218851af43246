"""Both directions with the exercise's own code: its client against our server, ours against its.

The exercise's scripts are not in this repository: :mod:`exercise_code` takes them from the
exercise's text beside it (``../shared/reference/exercise-udp-heartbeat.md``) at run time and
changes only their address; these tests skip when that text is absent.
"""

from __future__ import annotations

import difflib
import re
import signal
from pathlib import Path

import pytest
from exercise_code import REFERENCE, SKIP_REASON, Role, code_blocks, with_address, write_script
from helpers import Process, free_udp_port, json_lines, udpbeat_server

needs_the_exercise = pytest.mark.skipif(not REFERENCE.exists(), reason=SKIP_REASON)

# --- the loader --------------------------------------------------------------------------------

SAMPLE = """Intro.

#### Server Code:
```python
sock.bind(('', 12000))
```

#### Client Code:
```python
serverAddress = ('localhost', 12000)
print("x")
```

```python
unlabelled = True
```
"""


def test_blocks_are_found_by_their_headings() -> None:
    assert code_blocks(SAMPLE) == {
        "server": "sock.bind(('', 12000))\n",
        "client": "serverAddress = ('localhost', 12000)\nprint(\"x\")\n",
    }


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        (SAMPLE.replace("Client Code", "Other"), "one 'Client Code:' python block, found 0"),
        (SAMPLE + SAMPLE, "one 'Server Code:' python block, found 2"),
    ],
    ids=["none", "two"],
)
def test_a_missing_or_doubled_block_is_an_error(markdown: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        code_blocks(markdown)


def test_only_the_address_changes_and_a_missing_address_line_is_an_error() -> None:
    client = code_blocks(SAMPLE)["client"]
    assert with_address("client", client, "127.0.0.1", 5) == (
        "serverAddress = ('127.0.0.1', 5)\nprint(\"x\")\n"
    )
    with pytest.raises(ValueError, match="no longer has the line"):
        with_address("server", client, "127.0.0.1", 5)


@needs_the_exercise
@pytest.mark.parametrize("role", ["server", "client"])
def test_the_script_run_is_the_exercise_code_but_for_one_line(role: Role, tmp_path: Path) -> None:
    original = code_blocks(REFERENCE.read_text(encoding="utf-8"))[role]
    written = write_script(role, tmp_path, 4321).read_text(encoding="utf-8")
    changed = [
        line
        for line in difflib.ndiff(original.splitlines(), written.splitlines())
        if line.startswith(("- ", "+ "))
    ]
    assert len(changed) == 2 and "12000" in changed[0] and "('127.0.0.1', 4321)" in changed[1]
    compile(written, "exercise", "exec")


# --- both directions ---------------------------------------------------------------------------


@needs_the_exercise
def test_exercise_client_against_our_server(tmp_path: Path) -> None:
    with udpbeat_server("--loss", "0") as (server, port):
        with Process([str(write_script("client", tmp_path, port))]) as client:
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


@needs_the_exercise
@pytest.mark.parametrize("detector", ["consecutive", "adaptive"])
def test_our_client_against_the_exercise_server(detector: str, tmp_path: Path) -> None:
    # The exercise's server drops when randint(0, 10) < 4: 4 in 11. Three drops in a row end
    # a run as DOWN under the exercise's rule in a fair share of runs, so both endings are
    # checked. The adaptive detector also sends confirmation probes, in the same format.
    port = free_udp_port()
    count, max_misses = 30, 3
    with Process([str(write_script("server", tmp_path, port))]) as server:
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

    # Matched by sequence number: each reply answers a heartbeat this run sent, once. The run
    # numbers its heartbeats on from a random first one.
    assert sent == list(range(sent[0], sent[0] + len(sent)))
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
