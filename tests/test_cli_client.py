"""``udpbeat client``'s command line: its edges, and what ping, fping and irtt users reach for.

In process (click's ``CliRunner``, or ``main`` with captured streams for the error paths) against
servers on loopback; subprocesses only where a signal is what is tested.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import (
    Process,
    Script,
    ScriptedServer,
    free_udp_port,
    has_ipv6_loopback,
    json_lines,
    run_main,
)
from test_cli import NumberedServer

from udpbeat import BackgroundServer
from udpbeat._net import check_allow_families, receivable_families, split_host_port
from udpbeat.cli import cli
from udpbeat.detector import State, Transition
from udpbeat.errors import ConfigError
from udpbeat.hooks import ChangeFilter

IPV6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")


def invoke(*args: str) -> tuple[int, list[str], list[str]]:
    """``udpbeat ARGS`` through click's CliRunner: (exit status, stdout lines, stderr lines)."""
    result = CliRunner().invoke(cli, list(args), standalone_mode=False, obj={})
    if result.exception is not None:
        raise result.exception
    status = result.return_value
    assert isinstance(status, int)
    return status, result.stdout.splitlines(), result.stderr.splitlines()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with BackgroundServer("127.0.0.1", 0) as server:
        yield server.address[1]


@pytest.fixture(scope="module")
def other_port() -> Iterator[int]:
    with BackgroundServer("127.0.0.1", 0) as server:
        yield server.address[1]


def one_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Runs ``udpbeat ARGS``, which must fail with exit 2, one line on stderr, nothing on stdout."""
    status, stdout, stderr = run_main(capsys, *args)
    assert (status, stdout, len(stderr)) == (2, [], 1), (status, stdout, stderr)
    assert stderr[0].startswith("udpbeat: error: ")
    return stderr[0]


# --- 6. the edges of the command line --------------------------------------------------------


def test_udpbeat_alone_prints_its_help_as_usage_not_as_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, stdout, stderr = run_main(capsys)
    assert status == 2 and stdout == []
    assert stderr[0].startswith("Usage: udpbeat ")
    assert any(line.strip().startswith("client ") for line in stderr)
    assert not any("error" in line.lower() for line in stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "inf"], "Invalid value for '--interval' / '-i': 'inf' is not a finite"),
        (["--timeout", "nan"], "Invalid value for '--timeout' / '-W': 'nan' is not a finite"),
        (["--deadline", "inf"], "Invalid value for '--deadline' / '-w': 'inf' is not a finite"),
        (["--count", "abc"], "Invalid value for '--count' / '-c': 'abc' is not a valid integer."),
        (["--port", "abc"], "Invalid value for '--port': 'abc' is not a valid integer."),
        (["--interval", "soon"], "'soon' is not a valid number of seconds."),
        (["--confirm-interval", "0.001"], "Invalid value for '--confirm-interval': 0.001 is"),
        (["-q", "--changes-only"], "-q and --changes-only exclude each other"),
        (["-4", "-6"], "-4 and -6 exclude each other"),
        (["-D", "--json"], "-D stamps text lines"),
        (["--on-change-suspect"], "--on-change-suspect needs --on-change CMD"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_bad_flag_is_one_line_that_names_it_and_nothing_else(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_error(capsys, "client", "127.0.0.1", *args)
    assert message in line, line


def test_a_name_that_does_not_resolve_is_the_only_thing_said(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = one_error(capsys, "client", "no-such-host.invalid", "-c", "1")
    assert "cannot resolve host 'no-such-host.invalid'" in line
    # With several targets too: no header for the one that did resolve.
    line = one_error(capsys, "client", "127.0.0.1", "no-such-host.invalid", "-c", "1")
    assert "no-such-host.invalid" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.net", ("example.net", None)),
        ("example.net:7", ("example.net", 7)),
        ("127.0.0.1:12000", ("127.0.0.1", 12000)),
        ("::1", ("::1", None)),
        ("fe80::1%eth0", ("fe80::1%eth0", None)),
        ("[::1]", ("::1", None)),
        ("[::1]:9", ("::1", 9)),
    ],
)
def test_targets_are_host_host_port_or_bracketed_ipv6(
    text: str, expected: tuple[str, int | None]
) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["[::1", "[::1]x", "[::1]:", "host:", "host:abc", ":9", "h:0"])
def test_a_malformed_target_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        split_host_port(text)


def test_host_port_is_accepted_and_agrees_with_port(port: int) -> None:
    status, stdout, _ = invoke("client", f"127.0.0.1:{port}", "-c", "2", "-i", "0")
    assert status == 0
    assert stdout[0].startswith(f"UDPBEAT 127.0.0.1 port {port}: 2 heartbeats")
    # The same port given twice is no conflict.
    status, _, _ = invoke("client", f"127.0.0.1:{port}", "--port", str(port), "-c", "1")
    assert status == 0


@IPV6
def test_a_bracketed_ipv6_target_with_its_port() -> None:
    with BackgroundServer("::1", 0) as server:
        port = server.address[1]
        status, stdout, _ = invoke("client", f"[::1]:{port}", "-c", "1")
    assert status == 0 and stdout[0].startswith(f"UDPBEAT ::1 port {port}:")


def test_a_port_in_the_target_that_port_contradicts_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = one_error(capsys, "client", "127.0.0.1:12000", "--port", "13000")
    assert line.endswith(
        "127.0.0.1:12000 names port 12000 but --port says 13000: give the port once"
    )
    line = one_error(capsys, "client", "127.0.0.1:abc")
    assert "the port must be a number in 1..65535" in line


def test_a_name_is_shown_with_its_address(port: int) -> None:
    status, stdout, _ = invoke("client", "localhost", "--port", str(port), "-c", "1", "-4")
    assert status == 0
    assert stdout[0].startswith(f"UDPBEAT localhost (127.0.0.1) port {port}: 1 heartbeat,")


def test_quiet_json_is_the_summary_only(port: int) -> None:
    status, stdout, _ = invoke(
        "client", "127.0.0.1", "--port", str(port), "-c", "3", "-q", "--json"
    )
    assert status == 0
    assert [obj["type"] for obj in json_lines(stdout)] == ["summary"]


def test_changes_only_shows_state_changes_and_the_summary(port: int) -> None:
    status, stdout, _ = invoke(
        "client", "127.0.0.1", "--port", str(port), "-c", "3", "-i", "0", "--changes-only"
    )
    assert status == 0
    assert stdout[0].startswith("UDPBEAT ")
    assert stdout[1].startswith("State UNKNOWN -> UP")
    assert not any(line.startswith("Reply from") for line in stdout)
    assert any(line.startswith("3 heartbeats sent") for line in stdout)
    status, stdout, _ = invoke(
        "client", "127.0.0.1", "--port", str(port), "-c", "3", "--changes-only", "--json"
    )
    assert [obj["type"] for obj in json_lines(stdout)] == ["state", "summary"]


def test_an_allow_network_the_bound_socket_cannot_hear_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = one_error(capsys, "server", "--host", "127.0.0.1", "--port", "0", "--allow", "::1")
    assert "--allow ::1 is an IPv6 network" in line and "could never match" in line


@pytest.mark.parametrize(
    ("bound", "families"),
    [("127.0.0.1", {4}), ("::1", {6}), ("::", {4, 6}), ("0.0.0.0", {4}), ("fe80::1%lo", {6})],
)
def test_receivable_families(bound: str, families: set[int]) -> None:
    assert receivable_families(bound) == families


def test_allow_networks_of_a_family_the_socket_hears_pass() -> None:
    check_allow_families(["127.0.0.0/8", "10.0.0.0/8"], "127.0.0.1")
    check_allow_families(["127.0.0.0/8", "::1/128"], "::")
    with pytest.raises(ConfigError, match="IPv4 network"):
        check_allow_families(["::1", "10.0.0.0/8"], "::1")


def _help_texts() -> Iterator[tuple[str, click.Command]]:
    yield "udpbeat", cli
    yield from sorted(cli.commands.items())


@pytest.mark.parametrize(("name", "command"), list(_help_texts()), ids=lambda v: str(v)[:10])
def test_every_option_has_help_and_no_help_names_a_repository_file(
    name: str, command: click.Command
) -> None:
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"udpbeat {name} {param.opts[0]} has no help"
    context = click.Context(command, info_name=name)
    text = command.get_help(context)
    assert "docs/" not in text and ".md" not in text, text


# --- 7. what ping, fping and irtt users reach for --------------------------------------------


def test_timestamps_start_each_live_line_as_ping_d(port: int) -> None:
    before = time.time()
    status, stdout, _ = invoke(
        "client", "127.0.0.1", "--port", str(port), "-c", "3", "-i", "0", "-D"
    )
    after = time.time()
    assert status == 0
    assert stdout[0].startswith("UDPBEAT ")  # the header and the summary are not stamped
    live = [line for line in stdout if line.startswith("[")]
    assert len(live) == 4  # 3 replies and the change to UP
    for line in live:
        stamp = re.match(r"\[(\d{10}\.\d{6})\] (Reply from|State )", line)
        assert stamp is not None, line
        assert before <= float(stamp.group(1)) <= after
    assert stdout[-1].startswith("state: UP")


def test_minus_4_and_minus_6_restrict_the_family(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_error(capsys, "client", "::1", "-4", "-c", "1")
    assert "cannot resolve host '::1' as IPv4" in line
    line = one_error(capsys, "client", "127.0.0.1", "-6", "-c", "1")
    assert "cannot resolve host '127.0.0.1' as IPv6" in line
    status, stdout, _ = invoke("client", "localhost", "--port", str(port), "-4", "-c", "1")
    assert status == 0 and "localhost (127.0.0.1) port" in stdout[0]


class SourceRecorder(ScriptedServer):
    """Notes the source address of every heartbeat."""

    def __init__(self) -> None:
        super().__init__(Script())
        self.sources: list[str] = []

    def _answer(self, data: bytes, address: tuple[str, int]) -> None:
        self.sources.append(address[0])
        super()._answer(data, address)


def test_source_sends_from_the_address_given() -> None:
    with SourceRecorder() as server:
        status, _, _ = invoke(
            "client",
            "127.0.0.1",
            "--port",
            str(server.port),
            "-I",
            "127.0.0.2",
            "-c",
            "2",
            "-i",
            "0",
        )
        assert status == 0
        assert server.sources == ["127.0.0.2", "127.0.0.2"]


def test_a_source_the_host_does_not_have_or_of_another_family_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = str(free_udp_port())
    # 192.0.2.1 (TEST-NET-1) is no address of this host: binding fails, nothing is sent.
    line = one_error(capsys, "client", "127.0.0.1", "--port", port, "-I", "192.0.2.1", "-c", "1")
    assert "cannot send from source address 192.0.2.1" in line
    line = one_error(capsys, "client", "127.0.0.1", "--port", port, "-I", "::1", "-c", "1")
    assert "source address '::1' has no IPv4 address" in line


def test_deadline_ends_the_run_whatever_the_count(port: int) -> None:
    started = time.monotonic()
    status, stdout, _ = invoke(
        "client", "127.0.0.1", "--port", str(port), "-c", "0", "-i", "0.05", "-w", "0.5", "--json"
    )
    elapsed = time.monotonic() - started
    assert status == 0
    summary = json_lines(stdout)[-1]
    assert summary["type"] == "summary" and summary["state"] == "UP"
    assert 5 <= summary["sent"] <= 12  # type: ignore[operator]
    assert 0.4 <= summary["duration_s"] < 1.0  # type: ignore[operator]
    assert elapsed < 5.0


def test_several_targets_are_probed_at_once_with_one_summary_line_each(
    port: int, other_port: int
) -> None:
    first, second = f"127.0.0.1:{port}", f"127.0.0.1:{other_port}"
    status, stdout, _ = invoke("client", first, second, "-c", "3", "-i", "0.01")
    assert status == 0
    assert stdout[0].startswith(f"UDPBEAT 127.0.0.1 port {port}: 3 heartbeats")
    assert stdout[1].startswith(f"UDPBEAT 127.0.0.1 port {other_port}: 3 heartbeats")
    for target in (first, second):
        replies = [line for line in stdout if line.startswith(f"{target} : Reply from {target}:")]
        assert len(replies) == 3
    assert re.fullmatch(
        rf"{first} : UP, 3 heartbeats sent, 3 received, 0\.0% loss, "
        r"rtt min/avg/max = \d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3} ms, time \d+ ms",
        stdout[-2],
    )
    assert stdout[-1].startswith(f"{second} : UP, 3 heartbeats sent")


def test_several_targets_exit_0_only_if_every_one_is_up(port: int) -> None:
    closed = f"127.0.0.1:{free_udp_port()}"
    status, stdout, _ = invoke(
        "client", f"127.0.0.1:{port}", closed, "-c", "3", "-i", "0", "-W", "0.2", "--json"
    )
    assert status == 1
    objects = json_lines(stdout)
    summaries = {obj["target"]: obj for obj in objects if obj["type"] == "summary"}
    assert summaries[f"127.0.0.1:{port}"]["state"] == "UP"
    assert summaries[closed]["received"] == 0
    # With several targets every event names its own.
    events = [obj for obj in objects if obj["type"] != "summary"]
    assert {obj["target"] for obj in events} == {f"127.0.0.1:{port}", closed}


def test_stats_interval_prints_the_statistics_so_far(port: int) -> None:
    status, stdout, _ = invoke(
        "client", "127.0.0.1", "--port", str(port), "-c", "0", "-i", "0.02",
        "--stats-interval", "0.2", "-w", "0.9", "--json", "-q",
    )  # fmt: skip
    assert status == 0
    objects = json_lines(stdout)
    stats = [obj for obj in objects if obj["type"] == "stats"]
    assert objects[-1]["type"] == "summary"
    assert 2 <= len(stats) <= 5
    sent = [obj["sent"] for obj in stats]
    assert sent == sorted(sent) and sent[0] > 0  # type: ignore[type-var]
    # In text, one summary line each time.
    _, stdout, _ = invoke(
        "client", "127.0.0.1", "--port", str(port), "-c", "0", "-i", "0.02",
        "--stats-interval", "0.2", "-w", "0.5", "-q",
    )  # fmt: skip
    interim = [line for line in stdout if line.startswith(f"127.0.0.1:{port} : UP, ")]
    assert len(interim) >= 1


def test_sigquit_prints_the_statistics_so_far_and_the_run_goes_on(port: int) -> None:
    args = ["-m", "udpbeat", "client", "127.0.0.1", "--port", str(port), "-c", "0", "-i", "0.02"]
    with Process(args) as run:
        run.wait_for(lambda line: line.startswith("Reply from") and " heartbeat 2 " in line)
        run.send_signal(signal.SIGQUIT)
        run.wait_for(lambda line: line.startswith(f"127.0.0.1:{port} : UP, "))
        run.wait_for(lambda line: line.startswith("Reply from"))  # still probing
        run.send_signal(signal.SIGINT)
        status, stdout, stderr = run.finish()
    assert (status, stderr) == (0, [])
    assert stdout[-1].startswith("state: UP")


def test_output_writes_the_json_lines_to_a_file_while_showing_text(
    port: int, tmp_path: Path
) -> None:
    path = tmp_path / "run.jsonl"
    status, stdout, _ = invoke(
        "client", "127.0.0.1", "--port", str(port), "-c", "3", "-i", "0", "-q", "-o", str(path)
    )
    assert status == 0
    assert stdout[0].startswith("UDPBEAT ") and not any(line.startswith("{") for line in stdout)
    objects = json_lines(path.read_text().splitlines())
    kinds = [obj["type"] for obj in objects]
    assert kinds.count("sent") == kinds.count("reply") == 3  # every event, even with -q
    assert kinds[-1] == "summary" and objects[-1]["received"] == 3
    assert any(line.startswith("3 heartbeats sent, 3 received") for line in stdout)


def test_an_output_file_that_cannot_be_opened_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = one_error(capsys, "client", "127.0.0.1", "-o", str(tmp_path / "no" / "such.jsonl"))
    assert "such.jsonl" in line


# --- hooks: UP and DOWN by default, SUSPECT flaps on request ------------------------------------


def _change(old: State, new: State) -> Transition:
    return Transition(0.0, old, new, "test", {})


U, S, D, N = State.UNKNOWN, State.SUSPECT, State.DOWN, State.UP


def test_the_hook_runs_on_up_and_down_not_on_suspect_flaps() -> None:
    changes = [(U, N), (N, S), (S, N), (N, S), (S, D), (D, N), (N, S), (S, N)]
    default = ChangeFilter()
    assert [default.wants(_change(*c)) for c in changes] == [
        True, False, False, False, True, True, False, False,
    ]  # fmt: skip
    every = ChangeFilter(include_suspect=True)
    assert all(every.wants(_change(*c)) for c in changes)


@pytest.mark.parametrize("suspect", [False, True], ids=["default", "on-change-suspect"])
def test_a_suspect_flap_runs_the_hook_only_when_asked(suspect: bool, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    hook = f'echo "$UDPBEAT_OLD_STATE $UDPBEAT_NEW_STATE" >> {log}'
    flags = ["--on-change-suspect"] if suspect else []
    with NumberedServer(Script(drop={2})) as server:
        status, stdout, _ = invoke(
            "client", "127.0.0.1", "--port", str(server.port), "-c", "4", "-i", "0",
            "-W", "0.2", "--json", "--on-change", hook, *flags,
        )  # fmt: skip
    assert status == 0
    changes = [f"{o['old']} {o['new']}" for o in json_lines(stdout) if o["type"] == "state"]
    assert changes == ["UNKNOWN UP", "UP SUSPECT", "SUSPECT UP"]
    # The client waits for its hooks before it exits.
    assert log.read_text().splitlines() == (changes if suspect else ["UNKNOWN UP"])


def test_json_lines_of_one_target_carry_no_target_key(port: int) -> None:
    _, stdout, _ = invoke("client", "127.0.0.1", "--port", str(port), "-c", "1", "--json")
    objects = json_lines(stdout)
    assert all("target" not in obj for obj in objects[:-1])
    assert json.loads(stdout[-1])["target"] == f"127.0.0.1:{port}"


def test_socket_module_constants_used_by_the_family_flags() -> None:
    assert {socket.AF_INET, socket.AF_INET6} <= set(socket.AddressFamily)
