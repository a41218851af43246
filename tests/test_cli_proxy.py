"""``udpbeat proxy`` as people run it: flags, output, signals, counters, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import pytest
from helpers import WAIT, Process, run_main, stuck_lookup

from udpbeat.cli.proxy import (
    build_impairment,
    parse_address,
    parse_duration,
    parse_fraction,
    parse_rate,
)
from udpbeat.impair import ScheduledOutage


@contextmanager
def echo_server() -> Iterator[int]:
    """A UDP echo on 127.0.0.1 in a thread; yields its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                data, source = sock.recvfrom(65536)
            except TimeoutError:
                continue
            sock.sendto(data, source)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stopping.set()
        thread.join(WAIT)
        sock.close()


def exchange(port: int, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        sock.sendto(payload, ("127.0.0.1", port))
        return sock.recv(65536)


def adds_up(direction: dict[str, Any]) -> bool:
    """The identity of docs/proxy.md."""
    return bool(
        direction["received"] + direction["duplicated"]
        == direction["forwarded"] + direction["dropped"] + direction["in_flight"]
        and direction["dropped"] == sum(direction["dropped_by_cause"].values())
    )


# --- values and flags ------------------------------------------------------------------------


def test_value_parsers() -> None:
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("500us") == pytest.approx(0.0005)
    assert parse_duration("0.25") == 0.25
    assert parse_duration("2m") == 120
    assert parse_fraction("10%") == pytest.approx(0.1)
    assert parse_fraction("0.3") == 0.3
    assert parse_rate("1mbit") == 1e6
    assert parse_rate("500kbit") == 5e5
    assert parse_rate("64000") == 64000
    assert parse_address("127.0.0.1:9000", listen=False) == ("127.0.0.1", 9000)
    assert parse_address("[::1]:9000", listen=False) == ("::1", 9000)
    assert parse_address(":0", listen=True) == ("", 0)
    for parser, bad in [
        (parse_duration, "soon"),
        (parse_duration, "-1s"),
        (parse_duration, "2d"),
        (parse_fraction, "150%"),
        (parse_fraction, "nan"),
        (parse_rate, "1mbps"),  # megabytes? say bits
        (parse_rate, "fast"),
    ]:
        with pytest.raises(ValueError):
            parser(bad)
    for bad in ("9000", "::1:9000", "host:", "host:70000", ":9000"):
        with pytest.raises(ValueError):
            parse_address(bad, listen=False)


def test_one_direction_wins_over_both_outages_add_up() -> None:
    flags: dict[str, Any] = {
        "loss": 0.1,
        "down_loss": 0.2,
        "delay": 0.01,
        "up_jitter": 0.002,
        "outage": (ScheduledOutage(1, 1),),
        "up_outage": (ScheduledOutage(5, 1),),
        "down_keep_order": True,
    }
    up, down = build_impairment("up", flags), build_impairment("down", flags)
    assert (up.loss, down.loss) == (0.1, 0.2)
    assert up.delay == down.delay == 0.01
    assert (up.jitter, down.jitter) == (0.002, 0.0)
    assert up.outages == (ScheduledOutage(1, 1), ScheduledOutage(5, 1)) and down.outages == (
        ScheduledOutage(1, 1),
    )
    assert (up.keep_order, down.keep_order) == (False, True)
    with pytest.raises(click.BadParameter) as error:
        build_impairment("up", {"up_loss": 0.9, "loss_burst": 2.0})
    assert error.value.param_hint == "the up direction" and "impossible" in str(error.value)


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--listen", "127.0.0.1:0"],
        ["--listen", "nowhere", "--upstream", "127.0.0.1:9"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:0"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--loss", "2"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--down-delay", "later"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--loss", "0.5",
         "--loss-burst", "0.5"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--loss", "0.9",
         "--up-loss-burst", "2"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--outage", "10s"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--distribution", "uniform"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--rate", "1mbps"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--queue", "0"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--idle-timeout", "0"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--stats-interval", "nan"],
        ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--max-clients", "0"],
        ["--listen", "203.0.113.1:9", "--upstream", "127.0.0.1:9"],  # not ours to bind
    ],
)  # fmt: skip
def test_bad_flags_get_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    status, out, err = run_main(capsys, "proxy", *flags)
    assert status == 2
    assert out == []
    assert len(err) == 1 and err[0].startswith("udpbeat: error: "), err
    assert "Traceback" not in err[0]


def test_help_names_every_impairment(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(capsys, "proxy", "--help")
    text = "\n".join(out)
    assert status == 0
    for flag in ("--loss", "--loss-burst", "--delay", "--jitter", "--distribution",
                 "--keep-order", "--duplicate", "--reorder", "--rate", "--queue", "--outage",
                 "--seed", "--json", "--up-loss", "--down-loss"):  # fmt: skip
        assert flag in text


# --- a running proxy -------------------------------------------------------------------------


@contextmanager
def running_proxy(upstream: int, *flags: str) -> Iterator[tuple[Process, dict[str, Any]]]:
    args = ["-m", "udpbeat", "proxy", "--listen", "127.0.0.1:0"]
    with Process([*args, "--upstream", f"127.0.0.1:{upstream}", *flags]) as process:
        first = process.wait_for(lambda line: True)
        yield process, (json.loads(first) if "--json" in flags else {"line": first})


def test_json_run_with_sighup_and_sigterm() -> None:
    with (
        echo_server() as upstream,
        running_proxy(
            upstream, "--json", "--seed", "5", "--up-duplicate", "1", "--down-delay", "5ms"
        ) as (process, listening),
    ):
        assert listening["type"] == "listening" and listening["seed"] == 5
        assert listening["upstream"] == f"127.0.0.1:{upstream}"
        assert listening["up"]["duplicate"] == 1 and listening["down"]["delay"] == 0.005
        port = listening["port"]
        for i in range(10):
            assert exchange(port, b"%d" % i) == b"%d" % i
        process.send_signal(signal.SIGHUP)
        stats = json.loads(process.wait_for(lambda line: '"stats"' in line))
        assert stats["up"]["received"] == 10 and stats["up"]["duplicated"] == 10
        assert exchange(port, b"still") == b"still"  # SIGHUP did not stop it
        process.send_signal(signal.SIGTERM)
        status, out, err = process.finish()
    assert status == 0, process.output()
    assert any("SIGHUP" in line for line in err)
    summary = json.loads(out[-1])
    assert summary["type"] == "summary"
    up, down = summary["up"], summary["down"]
    assert up["received"] == 11 and up["forwarded"] == 22
    assert adds_up(up) and adds_up(down)
    assert down["delayed"] == down["forwarded"] + down["dropped_by_cause"]["stopped"]
    assert summary["timing"]["down_late_mean_ms"] is not None


def test_text_run_and_ctrl_c() -> None:
    flags = ("--loss", "0.5", "--seed", "1", "--stats-interval", "0.2")
    with echo_server() as upstream, running_proxy(upstream, *flags) as (process, first):
        line = first["line"]
        assert line.startswith("udpbeat proxy 127.0.0.1:")
        assert f"-> 127.0.0.1:{upstream}" in line and "seed 1" in line
        assert "up: loss 0.5" in line and "down: loss 0.5" in line
        process.wait_for(lambda text: text.startswith("stats +"))
        process.send_signal(signal.SIGINT)
        status, out, _ = process.finish()
    assert status == 0
    at = out.index("--- udpbeat proxy statistics ---")
    assert out[at + 1].startswith("up:   0 received") and out[at + 2].startswith("down: 0 received")
    assert out[at + 3].startswith("clients: 0 now, 0 in all")


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with Process(["-m", "udpbeat", "proxy", "--listen", f"127.0.0.1:{port}",
                      "--upstream", "127.0.0.1:9"]) as process:  # fmt: skip
            status, out, err = process.finish()
    assert status == 2 and out == []
    assert len(err) == 1 and err[0].startswith("udpbeat: error: cannot bind"), err


def test_ctrl_c_while_the_upstream_is_still_resolving_stops_the_proxy_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A DNS server that does not answer keeps getaddrinfo busy for tens of seconds; the proxy
    # used to wait it out, then start relaying and print its statistics.
    from udpbeat.cli.proxy import run_proxy
    from udpbeat.proxy import ProxyConfig

    async def run() -> int:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGINT)
        return await run_proxy(
            ("127.0.0.1", 0),
            ("stuck.example", 9),
            ProxyConfig(),
            as_json=False,
            stats_interval=None,
        )

    with stuck_lookup(monkeypatch):
        status = asyncio.run(run())
        still_looking_up = [t for t in threading.enumerate() if "stuck.example" in t.name]
    assert status == 0
    assert still_looking_up  # it did not wait for the lookup
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "udpbeat proxy: stopped before the upstream's name resolved"
