"""The monitor's pure core on a virtual clock: phases, routing, ICMP, the probe budget, reloads.

A :class:`Net` stands for the network and a reflector at every target's address: it answers
the targets it is told are alive after ``rtt`` and nothing else, so a thousand targets run
for minutes of virtual time in a second or so, without a socket.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable

import pytest

from udpbeat.budget import ProbeBudget
from udpbeat.detector import State
from udpbeat.errors import ConfigError
from udpbeat.monitor.config import MonitorConfig, TargetConfig, parse_config
from udpbeat.monitor.fleet import Fleet, Target, address_key, first_send, phase_of
from udpbeat.monitor.shell import numeric_address
from udpbeat.reflector import Reflector, ReflectorConfig
from udpbeat.wire import text

START = 1000.0


def fleet_config(count: int, **defaults: object) -> MonitorConfig:
    targets = [
        {"name": f"t{i}", "host": f"127.1.{i // 250}.{i % 250 + 1}", "port": 12000}
        for i in range(count)
    ]
    return parse_config({"defaults": dict(defaults), "targets": targets})


def resolved(targets: Iterable[TargetConfig]) -> list[tuple[TargetConfig, tuple[str, int]]]:
    out = []
    for target in targets:
        address = numeric_address(target.host, target.port)
        assert address is not None and len(address) == 2
        out.append((target, (str(address[0]), int(address[1]))))
    return out


class Net:
    """The fleet's network on a virtual clock; every target at its own address."""

    def __init__(
        self, config: MonitorConfig, *, budget: ProbeBudget | None = None, rtt: float = 0.0005
    ) -> None:
        self.now = START
        self.rtt = rtt
        self.reflector = Reflector(ReflectorConfig(rate_limit=0, log_events=False))
        self.alive: set[str] = {target.name for target in config.targets}
        #: Every datagram sent: (time, target name, seq, is it a probe? unknown here: None)
        self.sent: list[tuple[float, str, int]] = []
        self._arrivals: list[tuple[float, int, bytes, bytes]] = []
        self._order = 0
        self.fleet = Fleet(self.send, budget=budget)
        self.fleet.apply(resolved(config.targets), self.now)

    def send(self, target: Target, datagram: bytes) -> None:
        self.sent.append((self.now, target.name, text.decode_request(datagram).seq))
        if target.name not in self.alive:
            return
        at = self.now + self.rtt
        reply = self.reflector.reflect(datagram, ("192.0.2.1", 40000), at, at + 1.7e9)
        assert reply is not None
        self.arrive(at, target.key, reply)

    def arrive(self, at: float, key: bytes, data: bytes) -> None:
        self._order += 1
        heapq.heappush(self._arrivals, (at, self._order, key, data))

    def run(self, until: float) -> None:
        fleet = self.fleet
        for _ in range(10_000_000):
            timer = fleet.next_timer()
            arrival = self._arrivals[0][0] if self._arrivals else None
            due = min(t for t in (timer, arrival, until + 1) if t is not None)
            if due > until:
                break
            self.now = max(self.now, due)
            while self._arrivals and self._arrivals[0][0] <= self.now:
                at, _, key, data = heapq.heappop(self._arrivals)
                fleet.receive(key, data, at)
            fleet.run_due(lambda: self.now, 0.0)
        self.now = until

    def target(self, name: str) -> Target:
        return self.fleet.targets[name]


def test_sends_spread_evenly_over_the_interval_at_stable_phases() -> None:
    net = Net(fleet_config(1000))
    net.run(START + 5.0)
    assert all(t.state is State.UP for t in net.fleet)
    times = [at for at, _, _ in net.sent if START + 2 <= at < START + 4]
    assert len(times) == 2000  # no probes: every target answers
    bins = [0] * 200
    for at in times:
        bins[int((at - START - 2) * 100)] += 1
    assert max(bins) <= 30  # 10 a bin on average: never a burst
    assert min(bins) >= 1
    # Each target at its phase, one interval apart.
    by_target: dict[str, list[float]] = {}
    for at, name, _ in net.sent:
        by_target.setdefault(name, []).append(at)
    for name, sends in by_target.items():
        assert all(abs(b - a - 1.0) < 1e-9 for a, b in itertools.pairwise(sends))
        assert (sends[0] - phase_of(name, 1.0)) % 1.0 == pytest.approx(0.0, abs=1e-6)


def test_first_send_is_the_phase_after_now() -> None:
    for now in (0.0, 5.25, 1e6 + 0.3):
        at = first_send("db-1", 2.0, now)
        assert now <= at < now + 2.0
        assert (at - phase_of("db-1", 2.0)) % 2.0 == pytest.approx(0.0, abs=1e-6)


def test_replies_go_to_the_target_at_their_source_address() -> None:
    net = Net(fleet_config(3))
    net.alive.clear()
    net.run(START + 0.99)
    a, b = net.target("t0"), net.target("t1")
    seq_a = next(seq for _, name, seq in net.sent if name == "t0")
    reply = text.encode_reply(text.HeartbeatReply(seq_a, 0.0))
    # A reply to t0's heartbeat coming from t1's address does not answer t0.
    net.fleet.receive(b.key, reply, net.now)
    assert a.stats.received == 0 and b.stats.received == 0
    assert b.session.report().unknown == 1
    # From t0's own address it does.
    net.fleet.receive(a.key, reply, net.now)
    assert a.stats.received == 1
    # From no target's address: counted by the fleet.
    net.fleet.receive(address_key(("127.9.9.9", 12000)), reply, net.now)
    assert net.fleet.unknown_sources == 1


def test_icmp_errors_refuse_only_from_the_target_they_name() -> None:
    net = Net(fleet_config(2))
    net.alive.clear()
    net.run(START + 0.99)
    a = net.target("t0")
    heartbeats = [seq for _, name, seq in net.sent if name == "t0"]
    quoted = text.encode_request(text.Heartbeat(heartbeats[0], 1.7e9))
    # From another host: counted, ignored.
    net.fleet.receive_error(a.address, ("127.200.0.1", 0), quoted, net.now)
    assert a.stats.refused == 0
    assert a.session.report().socket_errors == {"icmp-elsewhere": 1}
    # From the target's own host, about its heartbeat: refused.
    net.fleet.receive_error(a.address, (a.address[0], 0), quoted, net.now)
    assert a.stats.refused == 1
    # About a datagram sent to no target: counted by the fleet.
    net.fleet.receive_error(("127.9.9.9", 1), None, quoted, net.now)
    assert net.fleet.icmp_unrouted == 1


def test_the_global_budget_bounds_the_probes_of_a_dead_fleet() -> None:
    count = 400
    budget = ProbeBudget(100, 50)
    net = Net(fleet_config(count), budget=budget)
    net.run(START + 20)
    assert all(t.state is State.UP for t in net.fleet)
    before = len(net.sent)
    probes_before = sum(t.stats.probes for t in net.fleet)
    stop = net.now
    net.alive.clear()
    # Fresh targets: the cold prior wants about 190 misses each, 76,000 in all, far more than
    # the budget's 100 a second lets out, so the regular heartbeats bring most verdicts.
    net.run(stop + 240)
    assert all(t.state is State.DOWN for t in net.fleet)
    probes = sum(t.stats.probes for t in net.fleet) - probes_before
    assert probes > 0
    # Over any second: the regular heartbeats (400) plus at most rate + burst probes.
    sent = net.sent[before:]
    times = sorted(at for at, _, _ in sent)
    start = 0
    worst = 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        worst = max(worst, end - start + 1)
    assert worst <= count + 1 + 100 + 50
    assert budget.waited > 0


def test_without_a_global_budget_the_same_stop_is_a_flood() -> None:
    net = Net(fleet_config(400))
    # 110 clean outcomes each, under the 300 after which a clean path is taken to hardly lose:
    # the cold prior wants about 190 misses, which each target's own budget lets out in about
    # 3.5 s (with a few, the rule of a target never seen alive would take longer than 5 s).
    net.run(START + 110)
    stop = net.now
    before = len(net.sent)
    net.alive.clear()
    net.run(stop + 5)
    assert all(t.state is State.DOWN for t in net.fleet)
    probes = len(net.sent[before:]) - 400 * 5
    assert probes > 400 * 10  # every target's own budget allows dozens of probes


def test_a_reload_keeps_unchanged_targets_and_never_resets_counters() -> None:
    net = Net(fleet_config(10))
    net.run(START + 5)
    kept = net.target("t1")
    kept_session = kept.session
    changed = net.target("t2")
    counters_before = {t.name: (t.stats.sent, t.stats.received) for t in net.fleet}
    targets = list(fleet_config(10).targets)
    # t2 changes its interval, t3 only its labels, t4 goes, t10 comes.
    targets[2] = parse_config(
        {"targets": [{"name": "t2", "host": targets[2].host, "interval": 0.5}]}
    ).targets[0]
    targets[3] = parse_config(
        {"targets": [{"name": "t3", "host": targets[3].host, "labels": {"role": "x"}}]}
    ).targets[0]
    del targets[4]
    targets.append(parse_config({"targets": [{"name": "t10", "host": "127.1.0.99"}]}).targets[0])
    net.alive.add("t10")
    applied = net.fleet.apply(resolved(targets), net.now)
    assert applied.added == ("t10",)
    assert applied.removed == ("t4",)
    assert applied.restarted == ("t2",)
    assert set(applied.kept) == {"t0", "t1", "t3", "t5", "t6", "t7", "t8", "t9"}
    assert net.target("t1") is kept and kept.session is kept_session
    assert kept.state is State.UP
    assert dict(net.target("t3").config.labels) == {"role": "x"}
    assert net.target("t2") is not changed and net.target("t2").stats is changed.stats
    sent_to_t4 = sum(1 for _, name, _ in net.sent if name == "t4")
    net.run(net.now + 5)
    assert sum(1 for _, name, _ in net.sent if name == "t4") == sent_to_t4  # stopped
    for name, (sent, received) in counters_before.items():
        if name == "t4":
            continue
        stats = net.target(name).stats
        assert stats.sent > sent and stats.received > received
    assert net.target("t2").state is State.UP
    assert net.target("t10").state is State.UP


def test_two_targets_at_one_address_are_refused_and_nothing_changes() -> None:
    net = Net(fleet_config(3))
    net.run(START + 2)
    targets = list(fleet_config(3).targets)
    clash = parse_config({"targets": [{"name": "twin", "host": targets[0].host}]}).targets[0]
    before = dict(net.fleet.targets)
    with pytest.raises(ConfigError, match=r"'twin'.*also target 't0'"):
        net.fleet.apply(resolved([*targets, clash]), net.now)
    assert net.fleet.targets == before


def test_outages_are_counted_with_their_seconds() -> None:
    net = Net(fleet_config(1))
    net.run(START + 5)
    net.alive.clear()
    net.run(START + 15)
    target = net.target("t0")
    assert target.state is State.DOWN
    down_at = target.stats.down_since
    assert down_at is not None
    assert target.stats.outage_total(net.now) == pytest.approx(net.now - down_at)
    net.alive.add("t0")
    net.run(START + 25)
    assert target.state is State.UP
    stats = target.stats
    assert stats.outages == 1 and stats.down_since is None
    assert len(stats.outage_log) == 1
    start, end = stats.outage_log[0]
    assert end is not None and stats.outage_seconds == pytest.approx(end - start)
    assert 5 < stats.outage_seconds < 12
    assert stats.state_changes >= 4  # UNKNOWN->UP, UP->SUSPECT, SUSPECT->DOWN, DOWN->UP
    changes = net.fleet.take_changes()
    assert [str(c.transition.new) for c in changes][-1] == "UP"
    assert net.fleet.take_changes() == []


def test_a_probe_budget_reserves_distinct_slots_in_order() -> None:
    budget = ProbeBudget(10, 3)
    slots = [budget.reserve(5.0) for _ in range(6)]
    assert slots[:3] == [5.0, 5.0, 5.0]
    assert slots[3:] == pytest.approx([5.1, 5.2, 5.3])
    assert budget.waited == 3 and budget.granted == 6
    assert budget.reserve(10.0) == 10.0  # refilled meanwhile
    assert budget.tokens(100.0) == 3
    with pytest.raises(ConfigError):
        ProbeBudget(0, 1)
    with pytest.raises(ConfigError):
        ProbeBudget(1, 0)
