"""What the monitor does to spend less CPU per heartbeat, and to stay on time when it is behind.

- The batched receive hands the fleet routing keys cut straight from the raw ``sockaddr``s:
  they must be the keys :func:`address_key` gives the same addresses (IPv4 and IPv6), or
  replies would be counted as from unknown sources.
- The fleet counts the sessions it made and the targets still waiting for theirs; the shell
  freezes the long-lived objects (``gc.freeze``) once every target has a session, and again
  only after a reload made new ones.
- A loop held past every reply timeout loses nothing: the replies that waited in the socket
  meanwhile are read, by their kernel stamps, before the timers of their heartbeats run.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time

import pytest
from helpers import WAIT, has_ipv6_loopback
from test_monitor import loopback_fleet, reflector, running, until

from udpbeat import _mmsg
from udpbeat._net import enable_receive_timestamps
from udpbeat.monitor.fleet import Fleet, address_key
from udpbeat.monitor.shell import Receiver


@pytest.mark.parametrize(
    ("family", "host"),
    [
        (socket.AF_INET, "127.0.0.1"),
        pytest.param(
            socket.AF_INET6,
            "::1",
            marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
    ],
)
def test_the_batched_receive_gives_the_fleet_its_own_routing_keys(family: int, host: str) -> None:
    functions = _mmsg.load()
    if functions is None:
        pytest.skip("recvmmsg is not available here")
    with (
        socket.socket(family, socket.SOCK_DGRAM) as receiving,
        socket.socket(family, socket.SOCK_DGRAM) as sending,
    ):
        receiving.bind((host, 0))
        assert enable_receive_timestamps(receiving)
        receiving.setblocking(False)
        sending.bind((host, 0))
        receiver = Receiver(receiving, functions[0])
        payloads = [f"Seq: {i}, Time Difference: 0.000100 seconds".encode() for i in range(5)]
        for payload in payloads:
            sending.sendto(payload, receiving.getsockname())
        got: list[tuple[bytes, bytes, float | None]] = []
        deadline = time.monotonic() + WAIT
        while len(got) < len(payloads) and time.monotonic() < deadline:
            got += receiver.receive()
        assert [data for data, _, _ in got] == payloads
        expected = address_key(sending.getsockname())
        assert {key for _, key, _ in got} == {expected}
        now = time.time()
        for _, _, stamp in got:
            assert stamp is not None and 0.0 <= now - stamp < WAIT  # the kernel's receive stamp


def test_the_fleet_counts_sessions_made_and_targets_waiting_for_one() -> None:
    fleet = Fleet()
    config = loopback_fleet(9, 10)
    targets = [(target, (target.host, 9)) for target in config.targets]
    fleet.apply(targets, 100.0)
    assert (fleet.sessions_made, fleet.unstarted) == (0, 10)
    fleet.run_due(lambda: 101.0, 0.0)  # every phase lies within one interval
    assert (fleet.sessions_made, fleet.unstarted) == (10, 0)
    fleet.apply(targets[:4], 101.5)  # six removed: nothing waits, nothing made
    assert (fleet.sessions_made, fleet.unstarted) == (10, 0)
    fleet.apply(targets, 102.0)  # six back: they wait for their first heartbeat
    assert fleet.unstarted == 6
    fleet.run_due(lambda: 103.0, 0.0)
    assert (fleet.sessions_made, fleet.unstarted) == (16, 0)
    fleet.apply(targets[:9], 103.5)  # the removal of one waiting for nothing changes nothing
    fleet.apply(targets, 103.6)
    fleet.apply(targets[:9], 103.7)  # the one re-added is removed before its session is made
    assert fleet.unstarted == 0


def test_the_monitor_freezes_its_long_lived_objects_once_every_target_has_a_session() -> None:
    server = reflector()
    port = server.address[1]

    async def scenario() -> None:
        async with running(loopback_fleet(port, 8)) as (monitor, _url):
            fleet = monitor.fleet
            await until(lambda: fleet.unstarted == 0 and monitor.stats.freezes > 0)
            assert monitor.stats.freezes == 1
            assert gc.get_freeze_count() > 0
            await asyncio.sleep(0.2)  # more rounds, no new session: no new freeze
            assert monitor.stats.freezes == 1
            await monitor.apply(loopback_fleet(port, 10))  # a reload adds two
            await until(lambda: fleet.sessions_made == 10 and monitor.stats.freezes == 2)

    try:
        asyncio.run(scenario())
    finally:
        gc.unfreeze()  # the rest of this test process collects as usual
        server.stop()


def test_a_loop_held_past_every_reply_timeout_loses_no_heartbeat() -> None:
    server = reflector()
    port = server.address[1]

    async def scenario() -> None:
        async with running(loopback_fleet(port, 20)) as (monitor, _url):
            fleet = monitor.fleet
            await until(lambda: all(t.stats.received >= 2 for t in fleet))
            received = sum(t.stats.received for t in fleet)
            loop = asyncio.get_running_loop()
            for _ in range(3):
                # Hold the loop well past every heartbeat's reply timeout: the replies to the
                # heartbeats sent just before wait in the socket meanwhile.
                loop.call_soon(time.sleep, 0.4)
                await asyncio.sleep(0.6)
            await until(lambda: sum(t.stats.received for t in fleet) >= received + 40)
            for target in fleet:
                stats = target.stats
                assert stats.lost == stats.refused == stats.late == 0, target.name
                assert str(target.state) == "UP", target.name

    try:
        asyncio.run(scenario())
    finally:
        gc.unfreeze()
        server.stop()
