"""The client's loop waits with select(2), whose timeout is in microseconds, so heartbeats leave
on schedule rather than up to a millisecond late (epoll's timeout is whole milliseconds)."""

from __future__ import annotations

import asyncio
import importlib
import selectors
from typing import Any

import pytest
from click.testing import CliRunner

from udpbeat import BackgroundServer, _net
from udpbeat.cli import cli

cli_client = importlib.import_module("udpbeat.cli.client")


async def _selector_kind() -> type[selectors.BaseSelector]:
    loop = asyncio.get_running_loop()
    return type(loop._selector)  # type: ignore[attr-defined]


def test_few_sockets_wait_with_select_many_with_the_default_loop() -> None:
    assert _net.run_on_time(_selector_kind()) is selectors.SelectSelector
    many = _net.PRECISE_WAIT_MAX_SOCKETS + 1
    assert _net.run_on_time(_selector_kind(), sockets=many) is selectors.DefaultSelector


def test_an_error_in_the_coroutine_is_raised() -> None:
    async def failing() -> None:
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        _net.run_on_time(failing())


def test_a_process_holding_nearly_a_thousand_files_keeps_the_default_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_net, "_lowest_free_descriptor", lambda: 1000)
    assert _net.run_on_time(_selector_kind()) is selectors.DefaultSelector


def test_the_client_command_runs_on_time_with_one_socket_per_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    real = _net.run_on_time

    def spy(coroutine: Any, *, sockets: int = 1) -> Any:
        seen.append(sockets)
        return real(coroutine, sockets=sockets)

    monkeypatch.setattr(cli_client, "run_on_time", spy)
    with BackgroundServer() as server:
        port = str(server.address[1])
        result = CliRunner().invoke(
            cli, ["client", "127.0.0.1", "127.0.0.1", "--port", port, "-c", "2", "-i", "0.01"]
        )
    assert result.exit_code == 0, result.output
    assert seen == [2]
