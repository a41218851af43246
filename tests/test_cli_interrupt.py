"""Ctrl-C is honoured even when it arrives before the first heartbeat leaves."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import socket
import threading
from typing import Any

import pytest
from helpers import stuck_lookup

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
    # Nothing was sent, nor said: a run stopped before its names resolved ends without them.
    assert report is None


def test_interrupt_during_a_lookup_that_never_ends_ends_the_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A DNS server that does not answer keeps getaddrinfo busy for tens of seconds; Ctrl-C used
    # to wait for it (and asyncio.run for its executor thread), then print a summary.
    config = ProbeConfig(count=3, interval=0.05, timeout=0.05)

    async def run() -> Any:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
        return await run_client("stuck.example", 9, config, as_json=True, quiet=True)

    with stuck_lookup(monkeypatch):
        report = asyncio.run(run())
        # The run is over while the lookup is still stuck: it did not wait for it.
        still_looking_up = [t for t in threading.enumerate() if "stuck.example" in t.name]
    assert report is None
    assert still_looking_up


#: The monitor with a resolver that never answers for ``stuck.example`` (it says on stderr
#: when the lookup has begun, so that the test knows when to press Ctrl-C).
_STUCK_MONITOR = """
import socket, sys, threading
real = socket.getaddrinfo
def stuck(host, *args, **kwargs):
    if host == "stuck.example":
        print("lookup started", file=sys.stderr, flush=True)
        threading.Event().wait(60)
    return real(host, *args, **kwargs)
socket.getaddrinfo = stuck
from udpbeat.cli import main
sys.argv = ["udpbeat", "monitor", "stuck.example", "--listen", "off", "--view", "plain"]
main()
"""


def test_ctrl_c_while_the_monitor_resolves_its_targets_ends_it_at_once() -> None:
    import subprocess
    import sys
    import time

    process = subprocess.Popen(
        [sys.executable, "-c", _STUCK_MONITOR],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline().strip() == "lookup started"
        pressed = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=50)
        waited = time.monotonic() - pressed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The lookup would have held it 60 s; it did not wait for it, nor print a traceback.
    assert waited < 20
    assert process.returncode == 130, err
    assert "Traceback" not in err and out == ""
