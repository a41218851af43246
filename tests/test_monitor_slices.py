"""The monitor runs a round's due sessions in slices, and the event loop gets a turn between two.

A monitor of many targets once sent a whole round's heartbeats in one go; yielding the CPU
after each of them then held its loop so long that ``/metrics`` timed out. Each round is now
cut into slices of at most ``SLICE`` sessions, with a turn of the loop between slices. The timer
wheel's part (a bounded ``due`` costs what it returns) is tested on its own; the shell's on real
sockets: a couple of thousand targets on 127.3.x.y, a loop held up on purpose so that hundreds
fall due at once, and ``/metrics`` fetched meanwhile. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from helpers import WAIT
from test_monitor import reflector, running

from udpbeat.monitor.config import MonitorConfig, parse_config
from udpbeat.monitor.fleet import Fleet, Target, TimerWheel
from udpbeat.monitor.shell import SLICE

#: Targets of the real-socket test, and how long its loop is held up: about a third of them
#: fall due meanwhile, many times a slice.
MANY = 2000
HOLD = 0.3


def many_targets(port: int, count: int) -> MonitorConfig:
    targets = [
        {"name": f"s{i:05d}", "host": f"127.3.{i // 250}.{i % 250 + 1}"} for i in range(count)
    ]
    return parse_config({"defaults": {"port": port, "interval": 1.0}, "targets": targets}, "test")


def test_a_bounded_due_leaves_the_rest_armed_in_order() -> None:
    fleet = Fleet()
    config = many_targets(9, 40)
    fleet.apply([(target, (target.host, 9)) for target in config.targets], 100.0)
    wheel = TimerWheel()
    targets = list(fleet)
    for index, target in enumerate(targets):
        target.timer = 100.0 + index * 0.0001  # four to a slot of a millisecond
        wheel.add(target, target.timer)
    taken: list[Target] = []
    while batch := wheel.due(200.0, 7):
        assert len(batch) <= 7
        taken += [target for target, _ in batch]
    assert taken == targets  # every one once, oldest first
    assert wheel.due(200.0) == []


def test_run_due_holds_to_its_limit_and_to_its_horizon() -> None:
    fleet = Fleet()
    sent: list[str] = []
    fleet.send = lambda target, datagram: sent.append(target.name)
    config = many_targets(9, 100)
    fleet.apply([(target, (target.host, 9)) for target in config.targets], 0.0)
    now = 1.0  # every target's first heartbeat is due (phases lie within one interval)
    assert fleet.run_due(lambda: now, 0.0, limit=SLICE) == SLICE
    assert len(sent) == SLICE
    while fleet.run_due(lambda: now, 0.0, limit=SLICE) == SLICE:
        pass
    assert sorted(sent) == sorted(t.name for t in config.targets)  # each once
    # A horizon before every timer runs nothing, whatever the clock says.
    before = len(sent)
    assert fleet.run_due(lambda: now + 10.0, 0.0, horizon=0.0) == 0
    assert len(sent) == before


def test_the_loop_gets_a_turn_between_slices_and_metrics_answer_meanwhile() -> None:
    server = reflector()
    port = server.address[1]

    async def scenario() -> None:
        async with running(many_targets(port, MANY)) as (monitor, url):
            fleet = monitor.fleet
            since_turn = most_since_turn = 0
            round_sends: list[int] = []

            real_run_due = fleet.run_due
            stop_ticking = asyncio.Event()

            def counted_run_due(*args: Any, **kwargs: Any) -> int:
                # Sessions run between two turns of the loop: a slice's (a session run late,
                # after the loop was held, may send a heartbeat and probes at once, so sends
                # per slice can exceed SLICE; the sessions cannot).
                nonlocal since_turn, most_since_turn
                ran = real_run_due(*args, **kwargs)
                if not stop_ticking.is_set():  # once the ticker stops, no turn is counted
                    since_turn += ran
                    most_since_turn = max(most_since_turn, since_turn)
                return ran

            fleet.run_due = counted_run_due  # type: ignore[method-assign]

            async def ticker() -> None:
                # Another task on the loop: each of its turns ends a run of sends.
                nonlocal since_turn
                while not stop_ticking.is_set():
                    since_turn = 0
                    await asyncio.sleep(0)

            async def rounds_watch() -> None:
                last_rounds, last_sends = monitor.stats.rounds, monitor.sends
                while not stop_ticking.is_set():
                    await asyncio.sleep(0.001)
                    if monitor.stats.rounds != last_rounds:
                        round_sends.append(monitor.sends - last_sends)
                        last_rounds, last_sends = monitor.stats.rounds, monitor.sends

            ticking = asyncio.create_task(ticker())
            watching = asyncio.create_task(rounds_watch())
            async with aiohttp.ClientSession() as http:
                await asyncio.sleep(1.5)  # every target has sent (phases lie within 1 s)
                loop = asyncio.get_running_loop()
                for _ in range(3):
                    # Hold the loop: a few hundred heartbeats fall due meanwhile, for one round.
                    loop.call_soon(time.sleep, HOLD)
                    began = time.monotonic()
                    async with asyncio.timeout(WAIT), http.get(f"{url}/metrics") as response:
                        body = await response.text()
                    assert response.status == 200
                    assert body.count("udpbeat_up{") == MANY
                    assert time.monotonic() - began < WAIT
                    await asyncio.sleep(0.3)
            stop_ticking.set()
            await asyncio.gather(ticking, watching)
            stats = monitor.stats
            assert max(round_sends) > 4 * SLICE, round_sends  # rounds had many sends...
            assert 0 < most_since_turn <= SLICE  # ...but the loop had a turn every SLICE
            assert stats.most_sends_per_slice > 0
            assert stats.slices > stats.rounds
            assert sum(t.stats.received for t in fleet) > MANY  # and they were answered

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
