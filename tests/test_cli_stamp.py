"""``udpbeat client --protocol stamp`` and ``udpbeat server --protocol stamp`` from the command
line: the summary's STAMP keys, authenticated mode end to end, and the flags' edges."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import json_lines, run_main, udpbeat_server

from udpbeat._net import bind_udp
from udpbeat.cli import cli
from udpbeat.errors import ConfigError
from udpbeat.server import BackgroundServer
from udpbeat.stamp_reflector import StampOptions, stamp_config
from udpbeat.wire import stamp


def invoke(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, list(args), standalone_mode=False, obj={})
    if result.exception is not None:
        raise result.exception
    assert isinstance(result.return_value, int)
    return result.return_value, result.stdout.splitlines()


@pytest.fixture(scope="module")
def stateful_port() -> Iterator[int]:
    config = stamp_config(rate_limit=0, log_events=False)
    with BackgroundServer("127.0.0.1", 0, config, stamp=StampOptions(mode="stateful")) as server:
        yield server.address[1]


def test_a_stamp_run_summary_has_one_way_figures(stateful_port: int) -> None:
    status, lines = invoke(
        "client", f"127.0.0.1:{stateful_port}", "--protocol", "stamp", "-c", "5", "-i", "0.02",
        "--ssid", "77", "--json", "--quiet",
    )  # fmt: skip
    assert status == 0
    summary = json_lines(lines)[-1]
    assert summary["protocol"] == "stamp" and summary["received"] == 5
    for key in ("forward_delay_ms", "backward_delay_ms", "reflector_time_ms"):
        figures = summary[key]
        assert isinstance(figures, dict) and figures["count"] == 5
        assert set(figures) == set(summary["rtt_ms"])  # type: ignore[arg-type]
    assert isinstance(summary["clock_offset_ms"], float)
    # Loopback: one clock, so the offset is within the path's own asymmetry.
    assert abs(summary["clock_offset_ms"]) < 5.0
    assert summary["reflector_stateful"] is True
    assert (summary["forward_lost"], summary["backward_lost"]) == (0, 0)


def test_the_text_lines_show_the_one_way_figures(stateful_port: int) -> None:
    status, lines = invoke(
        "client", "127.0.0.1", "--port", str(stateful_port), "--protocol", "stamp", "-c", "3",
        "-i", "0.02",
    )  # fmt: skip
    assert status == 0
    assert lines[0].startswith("UDPBEAT 127.0.0.1 port ") and ": STAMP 3 heartbeats" in lines[0]
    text = "\n".join(lines)
    assert "one-way forward min/avg/max = " in text
    assert "clock offset (reflector minus this host) = " in text
    assert "lost by direction (stateful reflector): 0 forward, 0 backward" in text


def test_authenticated_mode_end_to_end_and_a_wrong_key_is_refused(tmp_path: Path) -> None:
    key, wrong = tmp_path / "key", tmp_path / "wrong"
    key.write_text("correct horse\n")
    wrong.write_text("battery staple\n")
    flags = ("--protocol", "stamp", "--stamp-key-file", str(key), "--quiet")
    with udpbeat_server(*flags) as (server, port):
        base = ["client", f"127.0.0.1:{port}", "--protocol", "stamp", "-i", "0.02", "--json"]
        status, lines = invoke(*base, "-c", "3", "--quiet", "--stamp-key-file", str(key))
        assert status == 0 and json_lines(lines)[-1]["received"] == 3
        status, lines = invoke(
            *base, "-c", "2", "-W", "0.2", "--quiet", "--stamp-key-file", str(wrong)
        )
        refused = json_lines(lines)[-1]
        assert refused["received"] == 0 and refused["malformed"] == {}
        server.send_signal(signal.SIGINT)
        _, stdout, _ = server.finish()
    summary = [record for record in json_lines(stdout) if "denied_by_reason" in record][-1]
    assert summary["replied"] == 3
    # Every heartbeat and confirmation probe with the wrong key: counted, never answered.
    assert summary["denied_by_reason"] == {"bad-hmac": refused["sent"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["client", "127.0.0.1", "--ssid", "3"], "need --protocol stamp"),
        (["client", "127.0.0.1", "--protocol", "stamp", "--stamp-size", "46"], "STAMP packet size"),
        (["client", "127.0.0.1", "--protocol", "stamp", "--stamp-key-file", "/nonexistent/k"],
         "cannot read key file"),
        (["server", "--stamp-mode", "stateful"], "need --protocol stamp"),
        (["client", "127.0.0.1", "--protocol", "morse"], "Invalid value for '--protocol'"),
    ],
)  # fmt: skip
def test_bad_stamp_flags_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, stdout, stderr = run_main(capsys, *args)
    assert (status, stdout, len(stderr)) == (2, [], 1), (status, stdout, stderr)
    assert message in stderr[0]


def test_a_privileged_port_refused_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(ConfigError, match="needs root or CAP_NET_BIND_SERVICE; --port"):
        bind_udp("127.0.0.1", stamp.DEFAULT_PORT)
    with pytest.raises(ConfigError) as refused:
        bind_udp("127.0.0.1", 12000)
    assert "CAP_NET_BIND_SERVICE" not in str(refused.value)
