"""Watch mode (``udpbeat client --watch``) and ``--on-change`` hooks.

The issue's long scenario (3,000 heartbeats at 30 % loss, a stop, a restart) runs on the
simulator's virtual clock: the real session and reflector, no sockets, no sleeping. The rest is
on real sockets (127.0.0.1, ephemeral ports), kept to a few seconds: servers run in this process
(``Server`` on the test's loop, or ``BackgroundServer`` on a thread) so that a test can stop one
and restart it on the same port. Every wait is for an event or an output line, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import shlex
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import Process, json_lines, run_udpbeat

from udpbeat import BackgroundServer, ReflectorConfig, Server, State, Transition, probe
from udpbeat.cli.format import format_report
from udpbeat.detector import DETECTORS, make_detector
from udpbeat.events import Event, HeartbeatSent, StateChanged
from udpbeat.hooks import ChangeFilter, HookRunner, hook_environment
from udpbeat.report import ProbeReport
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.simulate import Bernoulli, PathConfig, Simulation

#: The deadline of every wait in these tests; none is expected to come near it.
WAIT = 20.0


def _lossy(loss: float) -> ReflectorConfig:
    # No rate limit: a client probing every 10 ms, plus its probes, exceeds the default one.
    return ReflectorConfig(loss=loss, seed=11, rate_limit=0, log_events=False)


# --- watch mode with every detector, in process ------------------------------------------------


async def _stop_and_restart(name: str) -> tuple[ProbeReport, list[Transition], float, float]:
    """Probe every 10 ms; stop the server after 50 heartbeats; restart it 10 heartbeats after
    the DOWN verdict; end at UP."""
    loop = asyncio.get_running_loop()
    server = Server("127.0.0.1", 0, _lossy(0.0))
    await server.start()
    port = server.address[1]
    params: dict[str, Any] = {"first_heartbeat_estimate": 0.01} if name == "phi" else {}
    detector = make_detector(name, 0.2, **params)
    transitions: list[Transition] = []
    warmed_up, down, up_again = asyncio.Event(), asyncio.Event(), asyncio.Event()
    down_a_while = asyncio.Event()
    regular = 0
    regular_at_down = 0

    def on_event(event: Event) -> None:
        nonlocal regular, regular_at_down
        if isinstance(event, HeartbeatSent) and not event.probe:
            regular += 1
            if regular == 50:
                warmed_up.set()
            if down.is_set() and regular == regular_at_down + 10:
                down_a_while.set()
        elif isinstance(event, StateChanged):
            transitions.append(event.transition)
            if event.transition.new is State.DOWN:
                regular_at_down = regular
                down.set()
            elif event.transition.new is State.UP and down.is_set():
                up_again.set()

    probers: list[Any] = []
    run = loop.create_task(
        probe(
            "127.0.0.1",
            port,
            count=None,
            interval=0.01,
            timeout=0.2,
            watch=True,
            detector=detector,
            on_event=on_event,
            on_start=probers.append,
        )
    )
    restarted = None
    try:
        async with asyncio.timeout(WAIT):
            await warmed_up.wait()
            stopped_at = loop.time()
            await server.stop()
            await down_a_while.wait()
            restarted = Server("127.0.0.1", port, _lossy(0.0))
            await restarted.start()
            restarted_at = loop.time()
            await up_again.wait()
            probers[0].stop()
            report = await run
    finally:
        run.cancel()
        await server.stop()
        if restarted is not None:
            await restarted.stop()
    return report, transitions, stopped_at, restarted_at


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_watch_goes_down_on_a_stop_and_back_up_on_a_restart(name: str) -> None:
    report, transitions, stopped_at, restarted_at = asyncio.run(_stop_and_restart(name))
    downs = [t for t in transitions if t.new is State.DOWN]
    assert len(downs) == 1 and downs[0].at >= stopped_at
    assert transitions[-1].old is State.DOWN and transitions[-1].new is State.UP
    assert report.state is State.UP
    assert len(report.outages) == 1
    outage = report.outages[0]
    assert outage.start == downs[0].at
    assert outage.end is not None and outage.end >= restarted_at
    assert outage.heartbeats_lost > 0
    summary = report.to_dict()
    assert summary["state"] == "UP"
    assert summary["detector"] == report.detector and report.detector["name"] == name
    outages = summary["outages"]
    assert isinstance(outages, list) and len(outages) == 1
    assert outages[0]["heartbeats_lost"] == outage.heartbeats_lost
    # Seconds rounded to the nanosecond in JSON.
    assert math.isclose(outages[0]["duration_s"], outage.end - outage.start, abs_tol=1e-9)
    text = format_report(report)
    # "N heartbeats lost", or "N heartbeats and M probes lost" when probes were refused too.
    assert "outage 1: DOWN " in text and f"{outage.heartbeats_lost} heartbeats " in text


# --- the acceptance scenario, on the simulator's virtual clock --------------------------

#: The scenario: a heartbeat every 10 ms with the CLI's default timeout, 30 % loss on the path,
#: 3,000 regular heartbeats before the server stops, and the issue's bound on noticing the stop.
INTERVAL, TIMEOUT, LOSS, HEALTHY_HEARTBEATS, DOWN_WITHIN = 0.01, 1.0, 0.3, 3000, 1.0


@pytest.mark.parametrize("seed", range(5))
def test_adaptive_watch_survives_30_percent_loss_and_sees_a_stop_and_a_restart(seed: int) -> None:
    """The real session and reflector over a simulated lossy path, 30 virtual seconds in ~0.1 s."""
    config = ProbeConfig(
        count=None, interval=INTERVAL, timeout=TIMEOUT, watch=True, detector="adaptive", first_seq=1
    )
    session = ProbeSession(config, 0.0)
    simulation = Simulation(session, PathConfig(loss=Bernoulli(LOSS)), random.Random(seed))

    # Healthy: 3,000 regular heartbeats, a third of them lost, and never a DOWN verdict.
    stopped_at = (HEALTHY_HEARTBEATS - 0.5) * INTERVAL  # just after the 3,000th is sent
    simulation.stop_server(stopped_at)
    simulation.run(stopped_at)
    healthy = session.report(stopped_at)
    assert healthy.sent - healthy.probes == HEALTHY_HEARTBEATS
    assert 0.25 < healthy.lost / healthy.sent < 0.35  # the loss was real
    assert healthy.transitions[0].new is State.UP
    assert all(t.new is not State.DOWN for t in healthy.transitions), healthy.transitions

    # Stopped: DOWN within the bound.
    simulation.run(stopped_at + 10 * DOWN_WITHIN, until_state=State.DOWN)
    assert session.state is State.DOWN
    down = session.report().transitions[-1]
    assert down.new is State.DOWN
    assert stopped_at <= down.at <= stopped_at + DOWN_WITHIN

    # Restarted a second later: UP on the first replies.
    restarted_at = down.at + 1.0
    simulation.restart_server(restarted_at)
    simulation.run(restarted_at + 10.0, until_state=State.UP)
    assert session.state is State.UP
    up = session.report().transitions[-1]
    assert (up.old, up.new) == (State.DOWN, State.UP)
    assert restarted_at <= up.at <= restarted_at + DOWN_WITHIN

    # The heartbeats sent while it was down are lost once their timeout has passed.
    simulation.run(up.at + TIMEOUT + INTERVAL)
    session.stop(simulation.now)
    report = session.report()
    assert [t.new for t in report.transitions].count(State.DOWN) == 1
    assert len(report.outages) == 1
    outage = report.outages[0]
    assert (outage.start, outage.end) == (down.at, up.at)
    # At least the heartbeats sent while the server was down (one every 10 ms) were lost.
    assert outage.heartbeats_lost >= int((restarted_at - down.at) / INTERVAL) - 1
    summary = report.to_dict()
    assert summary["state"] == "UP"
    assert report.detector["name"] == "adaptive"


# --- the CLI on real sockets: a short smoke test ------------------------------------------------


def _state_changes(process: Process) -> list[dict[str, object]]:
    events = json_lines([line for line in process.stdout_lines if line.startswith("{")])
    return [e for e in events if e["type"] == "state"]


def test_cli_watch_sees_a_real_stop_and_restart_and_runs_the_hooks(tmp_path: Path) -> None:
    """``udpbeat client --watch --on-change`` against a real server stopped and restarted."""
    hook_log = tmp_path / "hooks.log"
    hook = f'echo "$UDPBEAT_OLD_STATE $UDPBEAT_NEW_STATE" >> {shlex.quote(str(hook_log))}'
    server = BackgroundServer("127.0.0.1", 0, _lossy(0.0)).start()
    port = server.address[1]
    restarted: BackgroundServer | None = None
    args = ["client", "127.0.0.1", "--port", str(port), "--detector", "adaptive", "--watch"]
    args += ["--interval", "0.01", "--timeout", "0.2", "--count", "0", "--json"]
    try:
        with Process(["-m", "udpbeat", *args, "--on-change", hook]) as client:
            client.wait_for(lambda line: '"old": "UNKNOWN", "new": "UP"' in line, WAIT)
            # The client's ``monotonic`` event times are its event loop's clock,
            # time.monotonic(): the same system-wide CLOCK_MONOTONIC as this process's.
            stopped_at = time.monotonic()
            server.stop()
            down = json.loads(client.wait_for(lambda line: '"new": "DOWN"' in line, WAIT))
            # Down for 10 more heartbeats (refused or unanswered: lost in the outage).
            for _ in range(10):
                client.wait_for(lambda line: '"type": "lost"' in line, WAIT)
            restarted_at = time.monotonic()
            restarted = BackgroundServer("127.0.0.1", port, _lossy(0.0)).start()
            up = json.loads(
                client.wait_for(lambda line: '"old": "DOWN", "new": "UP"' in line, WAIT)
            )
            client.send_signal(signal.SIGINT)
            status, stdout, stderr = client.finish(WAIT)
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()
    assert status == 0, stderr
    assert stopped_at <= down["monotonic"] <= restarted_at <= up["monotonic"]
    assert down["at"] == pytest.approx(down["monotonic"] + time.time() - time.monotonic(), abs=1)
    changes = _state_changes(client)
    assert [c["new"] for c in changes].count("DOWN") == 1
    summary = json.loads(stdout[-1])
    assert summary["type"] == "summary"
    assert summary["state"] == "UP"
    assert summary["detector"]["name"] == "adaptive"
    assert len(summary["outages"]) == 1
    outage = summary["outages"][0]
    assert (outage["start"], outage["end"]) == (down["at"], up["at"])
    assert outage["heartbeats_lost"] > 0
    # The client waits for its hooks before it exits: one ran per change to UP or DOWN (none
    # for a flap to SUSPECT and back), each saw its change.
    hooks_run = Counter(hook_log.read_text().splitlines())
    wanted = ChangeFilter()
    expected = Counter(
        f"{c['old']} {c['new']}"
        for c in changes
        if wanted.wants(Transition(0.0, State(c["old"]), State(c["new"]), "", {}))
    )
    assert hooks_run == expected, stderr
    assert set(expected) >= {"UNKNOWN UP", "DOWN UP"} and sum(expected.values()) == 3


# --- on-change hooks ---------------------------------------------------------------------------


def test_hook_environment_carries_the_change() -> None:
    transition = Transition(
        5.0, State.SUSPECT, State.DOWN, "3 consecutive misses", {"misses": 3, "p": math.nan}
    )
    env = hook_environment(transition, "[::1]:12000", 1764064863.25)
    assert env == {
        "UDPBEAT_TARGET": "[::1]:12000",
        "UDPBEAT_OLD_STATE": "SUSPECT",
        "UDPBEAT_NEW_STATE": "DOWN",
        "UDPBEAT_REASON": "3 consecutive misses",
        "UDPBEAT_EVIDENCE": '{"misses": 3, "p": null}',
        "UDPBEAT_TIME": "1764064863.250000",
    }


def test_on_change_runs_the_hook_with_its_environment_and_keeps_json_clean(
    tmp_path: Path,
) -> None:
    hook = f"env > {shlex.quote(str(tmp_path))}/$UDPBEAT_NEW_STATE.env; echo from-the-hook"
    with BackgroundServer("127.0.0.1", 0, _lossy(0.0)) as server:
        port = server.address[1]
        before = time.time()
        status, stdout, stderr = run_udpbeat(
            "client", "127.0.0.1", "--port", str(port), "--count", "5", "--interval", "0.01",
            "--json", "--on-change", hook,
        )  # fmt: skip
        after = time.time()
    assert status == 0, stderr
    json_lines(stdout)  # the hook's output went to stderr, not into the JSON Lines
    assert "from-the-hook" in stderr
    # One change (UNKNOWN -> UP), so one hook, finished before the client exited.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["UP.env"]
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / "UP.env").read_text().splitlines()
        if line.startswith("UDPBEAT_")
    )
    assert env["UDPBEAT_TARGET"] == f"127.0.0.1:{port}"
    assert (env["UDPBEAT_OLD_STATE"], env["UDPBEAT_NEW_STATE"]) == ("UNKNOWN", "UP")
    assert env["UDPBEAT_REASON"] == "reply"
    first_sent = next(e for e in json_lines(stdout) if e["type"] == "sent")
    assert json.loads(env["UDPBEAT_EVIDENCE"])["seq"] == first_sent["seq"]
    assert before <= float(env["UDPBEAT_TIME"]) <= after


def _transition(old: State, new: State) -> Transition:
    return Transition(asyncio.get_running_loop().time(), old, new, "test", {})


async def _probing_while_a_hook_blocks(release: Path) -> tuple[ProbeReport, int, HookRunner]:
    failures: list[str] = []
    hook = f"while [ ! -e {shlex.quote(str(release))} ]; do sleep 0.02; done"
    async with Server("127.0.0.1", 0, _lossy(0.0)) as server:
        runner = HookRunner(hook, "test", on_failure=failures.append)

        def on_event(event: Event) -> None:
            if isinstance(event, StateChanged):
                runner.notify(event.transition)

        try:
            async with asyncio.timeout(WAIT):
                report = await probe(
                    "127.0.0.1", server.address[1], count=30, interval=0.01, on_event=on_event
                )
            running_when_probing_ended = runner.running
        finally:
            release.touch()  # also on failure, so that no hook outlives the test
            await runner.close(timeout=WAIT)
    assert failures == []
    return report, running_when_probing_ended, runner


def test_a_hook_that_blocks_does_not_delay_probing(tmp_path: Path) -> None:
    report, running, runner = asyncio.run(_probing_while_a_hook_blocks(tmp_path / "release"))
    # Every heartbeat was sent and answered while the UNKNOWN -> UP hook was still blocked.
    assert (report.sent, report.received) == (30, 30)
    assert running == 1
    assert (runner.started, runner.running, runner.failed) == (1, 0, 0)


async def _run_hooks(
    command: str, changes: int, close_timeout: float, **limits: int
) -> tuple[HookRunner, list[str]]:
    failures: list[str] = []
    runner = HookRunner(command, "test", on_failure=failures.append, **limits)
    for _ in range(changes):
        runner.notify(_transition(State.UP, State.DOWN))
    await runner.close(timeout=close_timeout)
    return runner, failures


def test_a_failing_hook_is_reported_in_one_line() -> None:
    runner, failures = asyncio.run(_run_hooks("exit 3", 1, WAIT))
    assert failures == ["on-change hook for UP -> DOWN exited with status 3"]
    assert (runner.started, runner.failed) == (1, 1)


def test_hooks_still_running_at_exit_are_killed_and_reaped() -> None:
    runner, failures = asyncio.run(_run_hooks("sleep 60", 2, 0.2))
    assert failures == ["on-change hook for UP -> DOWN still running at exit: killed"] * 2
    assert (runner.started, runner.running) == (2, 0)


def test_hooks_beyond_the_bounds_wait_or_are_skipped() -> None:
    # One runs, one waits, the third finds the queue full; at exit the waiting one is dropped.
    runner, failures = asyncio.run(_run_hooks("sleep 60", 3, 0.2, max_running=1, max_waiting=1))
    assert failures == [
        "on-change hook not run for UP -> DOWN: 2 hooks already running or waiting",
        "on-change hook for UP -> DOWN still running at exit: killed",
        "on-change hook for UP -> DOWN not run: udpbeat is exiting",
    ]
    assert (runner.started, runner.skipped, runner.running) == (1, 2, 0)
