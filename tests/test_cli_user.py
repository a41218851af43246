"""What users trip on, found by running udpbeat as the README tells them to.

Each test here was written for a defect seen in such a run: a bad value must be one line that
names its flag, an error at start-up must be that one line and nothing more.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_main
from udpbeat.cli.format import format_report
from udpbeat.cli.lines import summary_line
from udpbeat.events import event_to_dict
from udpbeat.report import OneWayReport
from udpbeat.session import ProbeConfig
from udpbeat.stats import Summary
from udpbeat.testing import SessionDriver


def test_a_monitor_whose_target_does_not_resolve_says_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # It used to say "udpbeat monitor: stopped; " too, of a monitor that had never started.
    status, out, err = run_main(capsys, "monitor", "nosuch.invalid", "--listen", "off")
    assert status == 2
    assert out == []
    assert len(err) == 1, err
    assert err[0].startswith("udpbeat: error: ")
    assert "nosuch.invalid" in err[0]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--listen", "garbage"),
        ("--listen", "127.0.0.1:99999"),
        ("--rtt-buckets", "x"),
        ("--rtt-buckets", "0.2,0.1"),
    ],
)
def test_a_bad_monitor_value_names_its_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    status, out, err = run_main(capsys, "monitor", "127.0.0.1", flag, value)
    assert status == 2
    assert out == []
    assert len(err) == 1, err
    assert f"'{flag}'" in err[0]
    assert repr(value) in err[0]


# A Ctrl-C while Python is still importing the command: the import hook below sends it at the
# moment ``udpbeat.cli`` starts to import, which takes a third of a second or more in real runs.
INTERRUPTED_WHILE_IMPORTING = """
import os, signal, sys
import _udpbeat_launcher

class InterruptOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "udpbeat.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None

if sys.argv[1] == "ignored":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.meta_path.insert(0, InterruptOnImport())
sys.argv = ["udpbeat", "--version"]
_udpbeat_launcher.main()
"""


def test_ctrl_c_while_the_command_is_still_importing_ends_it_quietly_with_130() -> None:
    # It used to end with a KeyboardInterrupt traceback from whichever import it fell in.
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_IMPORTING, "default"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout, result.stderr) == (130, "", "")


def test_an_ignored_ctrl_c_stays_ignored_while_the_command_imports() -> None:
    # A background job or nohup ignores SIGINT: the launcher must not make it count again.
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_IMPORTING, "ignored"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "udpbeat" in result.stdout  # --version ran to its end


def test_one_heartbeat_is_said_in_the_singular() -> None:
    # A target refused at once ends after one heartbeat: "1 heartbeats sent" it used to say.
    config = ProbeConfig(count=1, first_seq=1, detector="consecutive")
    driver = SessionDriver(config, start=100.0, target="127.0.0.1:12001")
    driver.advance(100.0001)
    driver.reply(1, time_difference=0.0001)
    report = driver.session.report()
    assert summary_line(report).startswith("127.0.0.1:12001 : UP, 1 heartbeat sent, 1 received, ")
    assert format_report(report).splitlines()[1].startswith("1 heartbeat sent, 1 received, ")


README = Path(__file__).resolve().parent.parent / "README.md"


def _keys_in_first_column(table: str) -> set[str]:
    keys: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return keys


def test_the_readme_lists_every_key_of_the_json_summary() -> None:
    # receive_timestamps and send_timestamps were in every summary, not in the README's table.
    text = README.read_text(encoding="utf-8")
    table = text.split("and last a summary, whose keys are stable:")[1].split("`udpbeat server")[0]
    config = ProbeConfig(count=1, first_seq=1, detector="consecutive")
    driver = SessionDriver(config, start=100.0, target="127.0.0.1:12000")
    driver.advance(100.0001)
    driver.reply(1)
    summary = driver.session.report().to_dict()
    assert set(summary) == _keys_in_first_column(table)


def test_the_readme_lists_every_key_of_a_reply_event() -> None:
    # A reply's "timestamp" (kernel or user) was missing from the README's table of events.
    text = README.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `reply` |"))
    listed = set(re.findall(r"`([a-z_]+)`", row.split("|")[2]))
    config = ProbeConfig(count=1, first_seq=1, detector="consecutive")
    driver = SessionDriver(config, start=100.0, target="127.0.0.1:12000")
    driver.advance(100.0001)
    driver.reply(1)
    (reply,) = [event_to_dict(e) for e in driver.log if e.kind == "reply"]
    # type, at and monotonic are every event's, said once above the table; the row also names
    # values (kernel, user), so every key must be in it, not only keys.
    assert set(reply) - {"type", "at", "monotonic"} <= listed


@pytest.mark.parametrize(
    ("samples", "said"),
    [(1, "from the lowest-delay exchange;"), (4, "from the 4 lowest-delay exchanges;")],
)
def test_the_clock_offset_line_counts_its_exchanges_in_words(samples: int, said: str) -> None:
    # "from the 1 lowest-delay exchanges" is what a ten-heartbeat STAMP run used to print.
    delays = Summary(1, 0.0001, 0.0001, 0.0001, 0.0, 0.0001, 0.0001, 0.0001)
    one_way = OneWayReport(delays, delays, delays, delays, -0.00002, samples, False, None, None)
    config = ProbeConfig(count=1, first_seq=1, detector="consecutive")
    driver = SessionDriver(config, start=100.0, target="127.0.0.1:862")
    driver.advance(100.0001)
    driver.reply(1)
    report = dataclasses.replace(driver.session.report(), one_way=one_way)
    (line,) = [line for line in format_report(report).splitlines() if "clock offset" in line]
    assert said in line
