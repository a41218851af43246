"""The detectors on a virtual clock: the real prober over a simulated path, no sockets, no sleeping.

A :class:`Simulation` wires one :class:`~udpbeat.session.ProbeSession` (with any
:class:`~udpbeat.detector.Detector`) to a :class:`~udpbeat.reflector.Reflector` through a
simulated path, exactly as the I/O shells do: every heartbeat is encoded, crosses the path,
is parsed and answered by the reflector, crosses back, and is decoded and matched by the
session. Only time is virtual: it jumps from one event (a timer, an arrival) to the next, so a
million heartbeats at one a second take seconds, not days.

The path decides, with a seeded random generator:

- whether a request is lost (:class:`Bernoulli` independent loss, :class:`GilbertElliott`
  bursts counted in requests, :class:`Blackouts` in time, or several at once with
  :class:`Combined`). Only the round trip matters to a detector, so the loss is applied to the
  request, as the exercise's server does;
- the round-trip time: ``rtt`` plus an exponentially distributed ``jitter`` (its mean), or a
  spike's height while one of ``spikes`` (:class:`DelaySpikes`, bufferbloat) lasts;
- whether a reply arrives twice (``duplicate``);
- whether the server is running: :meth:`Simulation.stop_server` and
  :meth:`~Simulation.restart_server`; a stopped server stays silent, or with
  ``icmp_when_stopped`` its host answers "port unreachable".

Two scenarios give the figures of ``benchmarks/detector_sim.py``: :func:`run_healthy` (false
DOWN verdicts on a healthy server, probe overhead) and :func:`run_stop` (how long a real stop
takes to be noticed, and a restart). Both run the session in watch mode, so a DOWN verdict does
not end the run and false alarms are counted per heartbeat. Pure: nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from math import log as _log
from typing import Protocol

from udpbeat.detector import DETECTORS, Detector, State, Transition, make_detector
from udpbeat.errors import ConfigError
from udpbeat.reflector import Reflector, ReflectorConfig
from udpbeat.session import PROBES_PER_INTERVAL, ProbeConfig, ProbeSession
from udpbeat.stamp_reflector import StampReflector, stamp_config

#: Virtual Unix time at virtual monotonic time 0, for the timestamps the wire format carries.
WALL_CLOCK_EPOCH = 1_700_000_000.0
#: The client's address as the reflector sees it.
CLIENT_ADDRESS = ("192.0.2.1", 40000)
#: If the session asks to be woken this many times at the same instant, its timer is stuck.
STUCK_TIMER_LIMIT = 1000

LossDecider = Callable[[], bool]


class _StepDecider(Protocol):
    """A loss decision that may be given the send time, and does not need it."""

    def __call__(self, at: float = 0.0) -> bool: ...


# --- the path --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bernoulli:
    """Each request is lost independently with probability ``loss``."""

    loss: float = 0.0

    def __post_init__(self) -> None:
        _check_fraction("loss", self.loss)

    @property
    def mean_loss(self) -> float:
        return self.loss

    def decider(self, rng: random.Random) -> LossDecider:
        loss, draw = self.loss, rng.random
        if loss == 0.0:
            return lambda: False
        return lambda: draw() < loss

    def describe(self) -> str:
        return f"{self.loss:.1%} independent"


@dataclass(frozen=True, slots=True)
class GilbertElliott:
    """Bursty loss: a two-state Markov chain stepped once per request (as netem's ``gemodel``).

    In the *bad* state a request is lost with probability ``loss_bad``, in the *good* state with
    ``loss_good``. The chain is set from the long-run ``loss`` and the mean ``burst`` length (in
    requests) spent in the bad state: leaving it has probability ``1/burst``, entering it the
    probability that makes the stationary loss equal ``loss``.
    """

    loss: float
    burst: float = 3.0
    loss_bad: float = 1.0
    loss_good: float = 0.0

    def __post_init__(self) -> None:
        _check_fraction("loss", self.loss)
        _check_fraction("loss in the bad state", self.loss_bad)
        _check_fraction("loss in the good state", self.loss_good)
        if not (math.isfinite(self.burst) and self.burst >= 1.0):
            raise ConfigError(f"mean burst length must be >= 1 request, got {self.burst!r}")
        if not self.loss_good <= self.loss <= self.loss_bad or self.loss_good == self.loss_bad:
            raise ConfigError(
                f"loss {self.loss!r} must lie between the good state's {self.loss_good!r} "
                f"and the bad state's {self.loss_bad!r}"
            )
        enter, _ = self.transition_probabilities()
        if enter > 1.0:
            raise ConfigError(
                f"loss {self.loss:.1%} with bursts of {self.burst} requests needs a chain that "
                "cannot exist; use longer bursts or less loss"
            )

    @property
    def mean_loss(self) -> float:
        return self.loss

    def transition_probabilities(self) -> tuple[float, float]:
        """``(P(good -> bad), P(bad -> good))`` per request."""
        leave = 1.0 / self.burst
        bad_share = (self.loss - self.loss_good) / (self.loss_bad - self.loss_good)
        if bad_share >= 1.0:
            return 1.0, 0.0
        return leave * bad_share / (1.0 - bad_share), leave

    def decider(self, rng: random.Random) -> LossDecider:
        return self._chain(rng)

    def decider_at(self, rng: random.Random) -> TimedLossDecider:
        """:meth:`decider` taking the send time, which it does not use (the chain steps per
        request): the same function, without a wrapper's call per request."""
        return self._chain(rng)

    def _chain(self, rng: random.Random) -> _StepDecider:
        enter, leave = self.transition_probabilities()
        bad_share = enter / (enter + leave) if enter + leave > 0 else 0.0
        draw = rng.random
        state = {"bad": draw() < bad_share}
        loss_good, loss_bad = self.loss_good, self.loss_bad

        def lost(at: float = 0.0) -> bool:
            bad = state["bad"]
            if bad:
                if draw() < leave:
                    state["bad"] = bad = False
            elif draw() < enter:
                state["bad"] = bad = True
            return draw() < (loss_bad if bad else loss_good)

        return lost

    def describe(self) -> str:
        return f"{self.loss:.1%} bursty (mean burst {self.burst:g})"


@dataclass(frozen=True, slots=True)
class Blackouts:
    """Loss in time, not per request: the path goes dark now and then (a Wi-Fi roam, a cellular
    handover, a flapping link), and every request sent during a blackout is lost.

    Blackouts last between ``min_length`` and ``max_length`` seconds (uniformly); the clear
    spells between them are exponentially distributed, with the mean that makes the share of
    time spent dark equal ``loss``. Unlike :class:`GilbertElliott`, the chain does not step per
    request: ten probes fired 10 ms apart into a blackout are all lost, ten spread a second
    apart each meet a fresh chance.
    """

    loss: float
    min_length: float = 0.05
    max_length: float = 0.5

    def __post_init__(self) -> None:
        _check_fraction("loss", self.loss)
        if self.loss >= 1.0:
            raise ConfigError("blackouts need clear spells between them: loss must be < 1")
        if not (math.isfinite(self.min_length) and 0 < self.min_length <= self.max_length):
            raise ConfigError(
                f"blackouts must last > 0 s, the shortest no longer than the longest; got "
                f"{self.min_length!r} to {self.max_length!r}"
            )
        if not math.isfinite(self.max_length):
            raise ConfigError(f"the longest blackout must be finite, got {self.max_length!r}")

    @property
    def mean_loss(self) -> float:
        return self.loss

    @property
    def mean_clear(self) -> float:
        """Mean seconds between blackouts."""
        mean_dark = (self.min_length + self.max_length) / 2
        return mean_dark * (1.0 - self.loss) / self.loss if self.loss else math.inf

    def decider_at(self, rng: random.Random) -> TimedLossDecider:
        if self.loss == 0.0:
            return lambda at: False
        draw, expo, uniform = rng.random, rng.expovariate, rng.uniform
        shortest, longest, rate = self.min_length, self.max_length, 1.0 / self.mean_clear
        # Start at a random point of the alternating process: dark with probability ``loss``.
        dark = draw() < self.loss
        ends = [uniform(0.0, uniform(shortest, longest)) if dark else expo(rate)]
        state = [dark]

        def lost(at: float) -> bool:
            end = ends[0]
            if at >= end:
                dark = state[0]
                while at >= end:
                    dark = not dark
                    end += uniform(shortest, longest) if dark else expo(rate)
                state[0], ends[0] = dark, end
            return state[0]

        return lost

    def describe(self) -> str:
        return (
            f"{self.loss:.1%} in blackouts of {self.min_length * 1e3:g}-"
            f"{self.max_length * 1e3:g} ms"
        )


@dataclass(frozen=True, slots=True)
class Combined:
    """Several loss models at once, each deciding on its own: a request is lost if any loses it
    (bursts on a path that also has blackouts, say). The mean loss is 1 - the product of each
    model's (1 - loss)."""

    models: tuple[Bernoulli | GilbertElliott | Blackouts, ...]

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("a combined loss model needs at least one model")

    @property
    def mean_loss(self) -> float:
        return 1.0 - math.prod(1.0 - model.mean_loss for model in self.models)

    def decider_at(self, rng: random.Random) -> TimedLossDecider:
        deciders = [timed_decider(model, rng) for model in self.models]

        def lost(at: float) -> bool:
            # Every model steps on every request (no short cut), so each keeps its own rhythm.
            verdicts = [decide(at) for decide in deciders]
            return any(verdicts)

        return lost

    def describe(self) -> str:
        return " + ".join(model.describe() for model in self.models)


LossModel = Bernoulli | GilbertElliott | Blackouts | Combined
TimedLossDecider = Callable[[float], bool]


def timed_decider(model: LossModel, rng: random.Random) -> TimedLossDecider:
    """The model's loss decision for a request sent at a given (virtual) time."""
    if isinstance(model, Blackouts | Combined):
        return model.decider_at(rng)
    if isinstance(model, GilbertElliott):
        return model.decider_at(rng)
    if isinstance(model, Bernoulli):
        # The same draws as model.decider(rng), one call fewer per request.
        loss, draw = model.loss, rng.random
        if loss == 0.0:
            return lambda at: False
        return lambda at: draw() < loss
    lost = model.decider(rng)
    return lambda at: lost()


@dataclass(frozen=True, slots=True)
class DelaySpikes:
    """Bufferbloat: now and then the round trip jumps from its usual ``rtt`` to hundreds of
    milliseconds for seconds (a queue fills behind a bulk upload), and may lose some too.

    Spikes start at random (exponential gaps of mean ``every`` seconds between one's end and
    the next one's start), last ``min_duration`` to ``max_duration`` seconds, and during one the
    round trip of every request sent is a spike height drawn once per spike between
    ``min_rtt`` and ``max_rtt`` (plus the path's jitter); ``loss`` is the extra chance a
    request sent during a spike is lost (a full queue drops).
    """

    every: float = 30.0
    min_duration: float = 1.0
    max_duration: float = 5.0
    min_rtt: float = 0.1
    max_rtt: float = 0.4
    loss: float = 0.0

    def __post_init__(self) -> None:
        for name, value in (("spike spacing", self.every), ("spike duration", self.max_duration)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")
        if not 0 < self.min_duration <= self.max_duration:
            raise ConfigError(
                f"spikes must last > 0 s, the shortest no longer than the longest; got "
                f"{self.min_duration!r} to {self.max_duration!r}"
            )
        if not (math.isfinite(self.max_rtt) and 0 <= self.min_rtt <= self.max_rtt):
            raise ConfigError(
                f"spike round trips must be >= 0 s, the lowest no higher than the highest; got "
                f"{self.min_rtt!r} to {self.max_rtt!r}"
            )
        _check_fraction("loss during a spike", self.loss)

    def describe(self) -> str:
        return (
            f"delay spikes to {self.min_rtt * 1e3:g}-{self.max_rtt * 1e3:g} ms for "
            f"{self.min_duration:g}-{self.max_duration:g} s every ~{self.every:g} s"
            + (f", {self.loss:.0%} lost in them" if self.loss else "")
        )


@dataclass(frozen=True, slots=True)
class PathConfig:
    """The simulated network between prober and server. Times in seconds."""

    loss: LossModel = field(default_factory=Bernoulli)
    rtt: float = 0.001
    jitter: float = 0.0002
    duplicate: float = 0.0
    icmp_when_stopped: bool = False
    #: The server's wall clock minus the prober's (what STAMP's timestamps see; the RTT does not).
    clock_offset: float = 0.0
    #: The share of ``rtt`` spent on the way to the server (0.5: symmetric).
    forward_share: float = 0.5
    #: Each direction draws its own jitter (mean ``jitter / 2`` each) rather than the round trip
    #: one draw split evenly: the two one-way delays then differ from exchange to exchange.
    independent_jitter: bool = False
    #: Bufferbloat-like delay spikes on top of the loss (``None``: the round trip stays put).
    spikes: DelaySpikes | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.clock_offset):
            raise ConfigError(
                f"clock offset must be a finite number of seconds, got {self.clock_offset!r}"
            )
        _check_fraction("forward share", self.forward_share)
        if not (math.isfinite(self.rtt) and self.rtt >= 0):
            raise ConfigError(f"rtt must be >= 0 seconds, got {self.rtt!r}")
        if not (math.isfinite(self.jitter) and self.jitter >= 0):
            raise ConfigError(f"jitter must be >= 0 seconds, got {self.jitter!r}")
        _check_fraction("duplicate", self.duplicate)


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be a fraction in [0, 1], got {value!r}")


# --- detectors by name -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector by name and parameters; picklable, so worker processes can build their own."""

    name: str
    params: tuple[tuple[str, float | int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> DetectorSpec:
        """``NAME`` or ``NAME:key=value,...``; ``consecutive:N`` is short for max_misses=N."""
        name, _, rest = text.strip().partition(":")
        params: list[tuple[str, float | int]] = []
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep and name == "consecutive":
                key, value = "max_misses", item
            elif not sep:
                raise ConfigError(f"detector parameter {item!r} must be key=value")
            params.append((key.strip(), _number(value.strip(), item)))
        spec = cls(name, tuple(params))
        spec.build(1.0)  # fail now, not in a worker
        return spec

    @property
    def label(self) -> str:
        if self.name == "consecutive":
            return f"consecutive({dict(self.params).get('max_misses', 3)})"
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.params)})"

    def build(self, timeout: float) -> Detector:
        return make_detector(self.name, timeout, **dict(self.params))


def _number(text: str, item: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"detector parameter {item!r} needs a number") from None


def available_detectors() -> tuple[str, ...]:
    """The detector names :meth:`DetectorSpec.parse` accepts."""
    return tuple(DETECTORS)


# --- the simulation --------------------------------------------------------------------------


class Simulation:
    """One session, one reflector and the path between them, on a virtual clock."""

    def __init__(
        self, session: ProbeSession, path: PathConfig, rng: random.Random, *, start: float = 0.0
    ) -> None:
        self.session = session
        self.path = path
        self.now = start
        if session.codec.name == "stamp":
            # It answers at once: T3 is T2 (no clock), on the server's clock (``clock_offset``).
            self.reflector: Reflector = StampReflector(
                stamp_config(rate_limit=0, log_events=False), clock=None
            )
        else:
            self.reflector = Reflector(ReflectorConfig(loss=0.0, rate_limit=0, log_events=False))
        self._rng = rng
        self._lost = timed_decider(path.loss, rng)
        self._draw = rng.random
        self._plain_jitter = not path.independent_jitter and path.forward_share == 0.5
        self._jitter = path.jitter
        self._jitter_rate = 1.0 / path.jitter if path.jitter else 0.0
        self._spike_rtt = _spike_schedule(path.spikes, rng) if path.spikes else None
        # (arrival time, tie-breaker, datagram; None stands for an ICMP port-unreachable)
        self._arrivals: list[tuple[float, int, bytes | None]] = []
        self._order = 0
        self._down_from = math.inf
        self._down_until = math.inf

    def stop_server(self, at: float) -> None:
        """The server stops at ``at``; requests reaching it from then on are not answered."""
        self._down_from, self._down_until = at, math.inf

    def restart_server(self, at: float) -> None:
        """The stopped server runs again from ``at`` on."""
        self._down_until = at

    def run(self, until: float = math.inf, *, until_state: State | None = None) -> float:
        """Process everything due up to ``until``; with ``until_state``, stop once it is reached.

        Returns the virtual time reached. Ends early if the session finishes.
        """
        session = self.session
        arrivals = self._arrivals
        transmit = self._transmit
        receive_datagram = session.receive_datagram
        handle_timer = session.handle_timer
        get_timer = session.get_timer
        datagrams_to_send = session.datagrams_to_send
        events = session.events if session.records_events else None
        last_timer, same_timer = -1.0, 0
        while not session.finished:
            timer = get_timer()
            if arrivals and (timer is None or arrivals[0][0] <= timer):
                at = arrivals[0][0]
                if at > until:
                    break
                _, _, data = heapq.heappop(arrivals)
                now = self.now
                self.now = at = now if now > at else at  # max(at, now), without the call
                if data is None:
                    session.receive_error(at)
                else:
                    receive_datagram(data, at)
            elif timer is not None:
                if timer > until:
                    break
                now = self.now
                self.now = at = now if now > timer else timer
                if timer == last_timer:
                    same_timer += 1
                    if same_timer > STUCK_TIMER_LIMIT:
                        raise RuntimeError(f"the session's timer is stuck at {timer!r}")
                else:
                    last_timer, same_timer = timer, 0
            else:
                break
            # As the I/O shell does after every input: run the timer, then send what is due.
            handle_timer(at, WALL_CLOCK_EPOCH + at)
            for datagram in datagrams_to_send():
                transmit(datagram, at)
            if events is not None:
                deque(events(), maxlen=0)
            if until_state is not None and session.state is until_state:
                return self.now
        if math.isfinite(until) and not session.finished:
            self.now = max(self.now, until)
        return self.now

    def _transmit(self, datagram: bytes, at: float) -> None:
        path = self.path
        rtt = path.rtt
        spike_lost = False
        if self._spike_rtt is not None:
            spike = self._spike_rtt(at)
            if spike is not None:
                rtt, spike_lost = spike
        if self._plain_jitter:
            # The usual path, as below, with rng.expovariate(1 / jitter) written out (the same
            # arithmetic, so the same draws): this runs for every datagram.
            if self._jitter:
                rtt += -_log(1.0 - self._draw()) / self._jitter_rate
            at_server = at + rtt / 2
        elif path.independent_jitter or path.forward_share != 0.5:
            forward, backward = rtt * path.forward_share, rtt * (1 - path.forward_share)
            if path.jitter and path.independent_jitter:
                forward += self._rng.expovariate(2.0 / path.jitter)
                backward += self._rng.expovariate(2.0 / path.jitter)
            elif path.jitter:
                half = self._rng.expovariate(1.0 / path.jitter) / 2
                forward, backward = forward + half, backward + half
            rtt = forward + backward
            at_server = at + forward
        else:
            if path.jitter:
                rtt += self._rng.expovariate(1.0 / path.jitter)
            at_server = at + rtt / 2
        if self._down_from <= at_server < self._down_until:
            if path.icmp_when_stopped:
                self._arrive(at + rtt, None)
            return
        if self._lost(at) or spike_lost:
            return
        reply = self.reflector.reflect(
            datagram, CLIENT_ADDRESS, at_server, WALL_CLOCK_EPOCH + at_server + path.clock_offset
        )
        if reply is None:
            return
        self._arrive(at + rtt, reply)
        if path.duplicate and self._rng.random() < path.duplicate:
            self._arrive(at + rtt + path.rtt / 2 + 1e-6, reply)

    def _arrive(self, at: float, data: bytes | None) -> None:
        self._order += 1
        heapq.heappush(self._arrivals, (at, self._order, data))


def _spike_schedule(
    spikes: DelaySpikes, rng: random.Random
) -> Callable[[float], tuple[float, bool] | None]:
    """For a request sent at a given time: ``None`` outside a spike, else the spike's round trip
    and whether the spike loses this request. Asked at non-decreasing times."""
    draw, expo, uniform = rng.random, rng.expovariate, rng.uniform
    rate = 1.0 / spikes.every
    # (start, end, round trip) of the current or next spike.
    first = expo(rate)
    current = [first, first + uniform(spikes.min_duration, spikes.max_duration)]
    height = [uniform(spikes.min_rtt, spikes.max_rtt)]
    loss = spikes.loss

    def spike_at(at: float) -> tuple[float, bool] | None:
        while at >= current[1]:
            start = current[1] + expo(rate)
            current[0], current[1] = (
                start,
                start + uniform(spikes.min_duration, spikes.max_duration),
            )
            height[0] = uniform(spikes.min_rtt, spikes.max_rtt)
        if at < current[0]:
            return None
        return height[0], bool(loss) and draw() < loss

    return spike_at


# --- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """The prober's settings: one regular heartbeat every ``interval``, waits of ``timeout``."""

    interval: float = 1.0
    timeout: float = 1.0
    probes_per_interval: int = PROBES_PER_INTERVAL


@dataclass(frozen=True, slots=True)
class HealthyResult:
    """A healthy server for ``heartbeats`` regular heartbeats: every DOWN verdict is false."""

    heartbeats: int
    probes: int
    false_down: int
    suspect: int
    received: int
    #: Of ``false_down``, those that came before the server's first reply: a target never seen
    #: alive, which a detector may call DOWN by a rule of its own (docs/detectors.md).
    down_before_reply: int = 0

    @property
    def probe_overhead(self) -> float:
        """Extra packets (confirmation probes) per regular heartbeat."""
        return self.probes / self.heartbeats if self.heartbeats else 0.0

    def __add__(self, other: HealthyResult) -> HealthyResult:
        return HealthyResult(
            self.heartbeats + other.heartbeats,
            self.probes + other.probes,
            self.false_down + other.false_down,
            self.suspect + other.suspect,
            self.received + other.received,
            self.down_before_reply + other.down_before_reply,
        )


def run_healthy(
    spec: DetectorSpec, path: PathConfig, timing: Timing, heartbeats: int, rng: random.Random
) -> HealthyResult:
    """``heartbeats`` regular heartbeats to a server that never stops, in watch mode."""
    config = ProbeConfig(
        count=heartbeats,
        interval=timing.interval,
        timeout=timing.timeout,
        watch=True,
        probes_per_interval=timing.probes_per_interval,
    )
    # The scenarios read only the report: the session builds no event objects.
    session = ProbeSession(config, 0.0, detector=spec.build(timing.timeout), record_events=False)
    Simulation(session, path, rng).run()
    report = session.report()
    return HealthyResult(
        heartbeats=heartbeats,
        probes=report.probes,
        false_down=_count(report.transitions, State.DOWN),
        suspect=_count(report.transitions, State.SUSPECT),
        received=report.received,
        down_before_reply=_count(_before_first(report.transitions, State.UP), State.DOWN),
    )


def _count(transitions: tuple[Transition, ...], state: State) -> int:
    return sum(1 for t in transitions if t.new is state)


def _before_first(transitions: tuple[Transition, ...], state: State) -> tuple[Transition, ...]:
    """The transitions before the first into ``state`` (all of them if none is)."""
    for index, transition in enumerate(transitions):
        if transition.new is state:
            return transitions[:index]
    return transitions


@dataclass(frozen=True, slots=True)
class StopResult:
    """One stop (and restart) of the server after ``warmup`` healthy heartbeats.

    ``detection``: seconds from the stop to the DOWN verdict (``None``: not within
    ``max_wait``, or the server was already held DOWN when it stopped); ``recovery``: seconds
    from the restart to the UP verdict. ``false_down``: DOWN verdicts before the stop.
    ``outages``: outages recorded by the session.
    """

    detection: float | None
    recovery: float | None
    false_down: int
    outages: int
    down_at_stop: bool = False


def run_stop(
    spec: DetectorSpec,
    path: PathConfig,
    timing: Timing,
    rng: random.Random,
    *,
    warmup: int = 100,
    downtime: float = 10.0,
    max_wait: float = 120.0,
) -> StopResult:
    """Healthy for ``warmup`` heartbeats, stopped at a random instant, restarted ``downtime`` later.

    The stop falls uniformly within a heartbeat interval, so detection latencies cover every
    phase between a stop and the next heartbeat.
    """
    config = ProbeConfig(
        count=None,
        interval=timing.interval,
        timeout=timing.timeout,
        watch=True,
        probes_per_interval=timing.probes_per_interval,
    )
    # The scenarios read only the report: the session builds no event objects.
    session = ProbeSession(config, 0.0, detector=spec.build(timing.timeout), record_events=False)
    simulation = Simulation(session, path, rng)
    stop_at = (warmup + rng.random()) * max(timing.interval, timing.timeout)
    simulation.stop_server(stop_at)
    simulation.run(stop_at)
    false_down = _count(session.report().transitions, State.DOWN)
    down_at_stop = session.state is State.DOWN
    detection = None if down_at_stop else _first_after(simulation, stop_at, State.DOWN, max_wait)
    # The restart follows the verdict (or the wait), so it always finds the server held DOWN;
    # its phase against the heartbeats is random, as the stop's is.
    restart_at = simulation.now + downtime + rng.random() * timing.interval
    simulation.restart_server(restart_at)
    simulation.run(restart_at)
    recovery = _first_after(simulation, restart_at, State.UP, max_wait)
    session.stop(simulation.now)
    report = session.report()
    return StopResult(detection, recovery, false_down, len(report.outages), down_at_stop)


def _first_after(
    simulation: Simulation, since: float, state: State, max_wait: float
) -> float | None:
    """Seconds from ``since`` until the session reaches ``state`` (``None``: not in time)."""
    session = simulation.session
    if session.state is not state:
        simulation.run(since + max_wait, until_state=state)
    if session.state is not state:
        return None
    transitions = session.report().transitions
    return max(transitions[-1].at - since, 0.0)
