"""Confirmation probes stay within their budget: a dead target cannot draw a flood."""

from __future__ import annotations

import pytest

from udpbeat.detector import State
from udpbeat.events import HeartbeatSent
from udpbeat.session import PROBES_PER_INTERVAL, ProbeConfig
from udpbeat.testing import SessionDriver


def _probe_times(driver: SessionDriver) -> list[float]:
    return [e.at for e in driver.of_type(HeartbeatSent) if e.probe]


@pytest.mark.parametrize("budget", [1, 5, 10, PROBES_PER_INTERVAL])
def test_probes_to_a_target_that_never_answers_stay_within_the_budget(budget: int) -> None:
    interval = 1.0
    driver = SessionDriver(
        ProbeConfig(count=None, interval=interval, probes_per_interval=budget), start=0.0
    )
    driver.run(limit=120.0)
    probes = _probe_times(driver)
    assert probes, "a target that does not answer is still confirmed with probes"
    # A bucket of `budget`, refilled `budget` per interval: by any time t, at most
    # budget + budget * t / interval probes (and a hair of rounding).
    for count, at in enumerate(probes, 1):
        assert count <= budget + budget * at / interval + 1e-9, (count, at)
    # And in any window: from any probe on, at most budget + budget * (elapsed / interval).
    for i, first in enumerate(probes):
        for j in range(i, len(probes)):
            assert j - i + 1 <= budget + budget * (probes[j] - first) / interval + 1e-9
    assert driver.session.state is State.DOWN, "it is still declared down"


def test_a_smaller_budget_only_delays_the_verdict() -> None:
    def down_after(budget: int) -> float:
        driver = SessionDriver(
            ProbeConfig(count=None, probes_per_interval=budget, first_seq=1), start=0.0
        )
        driver.run(limit=120.0)
        (down,) = [t for t in driver.session.report().transitions if t.new is State.DOWN]
        return down.at

    assert down_after(5) > down_after(10) >= down_after(10**6)


def test_no_budget_means_no_probes() -> None:
    driver = SessionDriver(ProbeConfig(count=None, probes_per_interval=0), start=0.0)
    # Regular heartbeats alone: about 193 misses (60 % loss assumed, and the cold prior).
    driver.run(limit=300.0)
    assert _probe_times(driver) == []
    assert driver.session.state is State.DOWN
