"""Ctrl-C is honoured even when it arrives before the first heartbeat leaves."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import socket
from typing import Any

import pytest

from udpbeat.cli.client import run_client
from udpbeat.session import ProbeConfig


def test_interrupt_while_the_host_is_still_resolving_ends_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    # The module, not the command of the same name that ``udpbeat.cli`` exports.
    client_module = importlib.import_module("udpbeat.cli.client")
    real_resolve = client_module.resolve

    async def slow_resolve(host: str, port: int, family: int = 0) -> tuple[tuple[Any, ...], int]:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(50):  # let the loop run the signal handler before resolution "ends"
            await asyncio.sleep(0)
        return await real_resolve(host, port, family)

    # The command resolves every name before it prints anything, then starts the probers.
    monkeypatch.setattr(client_module, "resolve", slow_resolve)
    config = ProbeConfig(
        count=None,
        interval=0.05,
        timeout=0.05,
        detector="consecutive",
        detector_options={"max_misses": 1000},
    )

    async def run() -> Any:
        return await asyncio.wait_for(
            run_client(
                "127.0.0.1",
                silent.getsockname()[1],
                config,
                as_json=True,
                quiet=True,
            ),
            timeout=10,
        )

    try:
        report = asyncio.run(run())
    finally:
        silent.close()
    assert report.sent == 0 and report.in_flight == 0
