"""``ServerConfig``: the I/O shell's knobs are configuration (an object, CLI flags), never read
from the environment."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import pytest
from helpers import run_main, run_udpbeat, udp_socket, udpbeat_server

from udpbeat import _mmsg
from udpbeat.errors import ConfigError
from udpbeat.server import BATCH, BUSY_POLL_US, BackgroundServer, Server, ServerConfig

HAS_MMSG = _mmsg.load() is not None
#: The module (``udpbeat.cli.server`` as an attribute is the click command it defines).
cli_server = importlib.import_module("udpbeat.cli.server")


def test_the_defaults() -> None:
    config = ServerConfig()
    assert (config.io, config.busy_poll_us, config.batch) == ("auto", BUSY_POLL_US, BATCH)
    server = Server("127.0.0.1", 0)
    assert server.server_config == config
    assert server.io == ("batched" if HAS_MMSG else "portable")
    assert server.busy_poll == BUSY_POLL_US / 1e6


def test_it_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerConfig().batch = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("io", "fast"),
        ("io", "BATCHED"),
        ("io", ""),
        ("io", None),
        ("busy_poll_us", -1),
        ("busy_poll_us", 1_000_001),
        ("busy_poll_us", float("nan")),
        ("busy_poll_us", float("inf")),
        ("busy_poll_us", True),
        ("busy_poll_us", "50"),
        ("awake_share", -0.01),
        ("awake_share", 0.51),
        ("awake_share", float("nan")),
        ("awake_share", True),
        ("awake_share", "0.05"),
        ("batch", 0),
        ("batch", -1),
        ("batch", 1025),
        ("batch", 1.5),
        ("batch", 64.0),
        ("batch", True),
        ("batch", "64"),
    ],
)
def test_every_bad_value_is_a_config_error(field: str, value: Any) -> None:
    name = {
        "io": "io",
        "busy_poll_us": "busy poll",
        "batch": "batch",
        "awake_share": "the awake share",
    }[field]
    with pytest.raises(ConfigError, match=f"^{name} "):
        ServerConfig(**{field: value})


@pytest.mark.parametrize(
    "changes",
    [
        {"io": "portable"},
        {"busy_poll_us": 0},
        {"busy_poll_us": 1e6},
        {"batch": 1},
        {"awake_share": 0},
        {"awake_share": 0.5},
    ],
)
def test_the_edges_are_accepted(changes: dict[str, Any]) -> None:
    ServerConfig(**changes)


@pytest.mark.skipif(HAS_MMSG, reason="recvmmsg/sendmmsg exist here")
def test_batched_where_it_does_not_exist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="batched"):
        Server("127.0.0.1", 0, server_config=ServerConfig(io="batched"))


def test_the_environment_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # The variables that used to choose the path and the spin are ignored, even with values
    # that were errors.
    monkeypatch.setenv("UDPBEAT_IO", "fast")
    monkeypatch.setenv("UDPBEAT_BUSY_POLL_US", "-1")
    server = Server("127.0.0.1", 0)
    assert server.io == ("batched" if HAS_MMSG else "portable")
    assert server.busy_poll == BUSY_POLL_US / 1e6
    monkeypatch.setenv("UDPBEAT_IO", "portable")
    assert Server("127.0.0.1", 0).io == ("batched" if HAS_MMSG else "portable")
    # A real server process starts and answers with them set.
    with udpbeat_server() as (_, port), udp_socket() as sock:
        sock.sendto(b"Heartbeat 1 1764064900.0", ("127.0.0.1", port))
        assert sock.recv(2048).startswith(b"Seq: 1, ")


@pytest.mark.parametrize("batch", [1, 3])
def test_small_batches_answer_every_request(batch: int) -> None:
    config = ServerConfig(io="auto", batch=batch, busy_poll_us=0)
    with BackgroundServer("127.0.0.1", 0, server_config=config) as server, udp_socket() as sock:
        for seq in range(40):
            sock.sendto(b"Heartbeat %d 1764064900.0" % seq, server.address)
        replies = sorted(int(sock.recv(2048).split(b",")[0][5:]) for _ in range(40))
        assert replies == list(range(40))
        assert server.stop().replied == 40


# --- the flags -------------------------------------------------------------------------------


def _serve_arguments(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *flags: str
) -> dict[str, Any]:
    """What ``udpbeat server FLAGS`` hands to ``serve``, without serving."""
    seen: dict[str, Any] = {}

    async def fake_serve(*args: Any, **kwargs: Any) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(cli_server, "serve", fake_serve)
    status, _, stderr = run_main(capsys, "server", *flags)
    assert (status, stderr) == (0, [])
    return seen


def test_the_flags_make_the_server_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--io", "portable", "--busy-poll-us", "12.5", "--batch", "8", "--awake-share", "0"]
    seen = _serve_arguments(monkeypatch, capsys, *flags)
    assert seen["server_config"] == ServerConfig(
        io="portable", busy_poll_us=12.5, batch=8, awake_share=0
    )
    assert _serve_arguments(monkeypatch, capsys)["server_config"] == ServerConfig()


def test_the_flags_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_server.server.main(["--help"], prog_name="udpbeat server")
    text = capsys.readouterr().out
    for flag in (
        "--io [auto|batched|portable]",
        "--busy-poll-us MICROSECONDS",
        "--batch",
        "--awake-share SHARE",
    ):
        assert flag in text
    assert "recvmmsg" in text and "spins" in text


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--io", "fast"], "--io"),
        (["--busy-poll-us", "-1"], "--busy-poll-us"),
        (["--busy-poll-us", "2e6"], "--busy-poll-us"),
        (["--busy-poll-us", "nan"], "--busy-poll-us"),
        (["--batch", "0"], "--batch"),
        (["--batch", "1025"], "--batch"),
        (["--batch", "many"], "--batch"),
        (["--awake-share", "0.6"], "--awake-share"),
        (["--awake-share", "inf"], "--awake-share"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(flags: list[str], named: str) -> None:
    status, stdout, stderr = run_udpbeat("server", "--host", "127.0.0.1", "--port", "0", *flags)
    assert status == 2
    assert stdout == []
    assert len(stderr) == 1, stderr
    assert named in stderr[0] and "Traceback" not in stderr[0]
