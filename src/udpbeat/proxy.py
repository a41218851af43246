"""The proxy's I/O shell: sockets and a timer on an asyncio loop around two :class:`ImpairedPath`.

``udpbeat proxy`` relays datagrams between clients and one upstream address. Each client
address gets its own upstream socket (connected to the upstream), so the upstream sees distinct
clients as distinct; the table of clients is bounded (``max_clients``, least recently active
evicted first) and a client idle for ``idle_timeout`` seconds is forgotten.

Everything runs on the event loop's thread, in reader callbacks:

- the listening socket's reader takes a batch (:mod:`udpbeat._proxyio`) and hands each
  datagram to the *up* path with its arrival time (the kernel's receive timestamp, on the
  loop's monotonic clock); the readers of the upstream sockets do the same for the *down* path;
- a direction with no impairment is a fast lane: the batch is sent on at once, as received,
  without a copy and without the path's decisions (only its counters);
- otherwise the path decides (:mod:`udpbeat.impair`) and holds each copy until its departure
  time; the copies due are sent at once, and the one timer is armed for the next departure:
  a ``timerfd`` at an absolute time on ``CLOCK_MONOTONIC``, the loop's clock, ``TIMER_LEAD``
  early, after which the relay busy-polls its sockets up to the departure. Departures are
  computed from arrival times, never from the time a timer fired, so delays do not drift;
- after a lone datagram the relay busy-polls for a moment (``spin``, ``--busy-poll-us``), so that
  a reply or the next request finds it running rather than asleep.

Nothing here prints; :mod:`udpbeat.cli.proxy` does. An exception in a reader or the timer is a
defect: it stops the proxy, and :meth:`Proxy.wait_stopped` raises :class:`ProxyFailure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import select
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from udpbeat._net import bind_udp, resolve
from udpbeat._proxyio import (
    RECEIVE_BUFFER,
    Io,
    Key,
    MonotonicTimer,
    SocketEvents,
    enable_timestamps,
    make_io,
)
from udpbeat.errors import ConfigError, UdpbeatError
from udpbeat.impair import MAX_IN_FLIGHT, ImpairedPath, Impairment, PathCounters
from udpbeat.server import choose_io

#: Batches a reader takes per wake-up before it lets the loop run other callbacks.
BATCHES_PER_WAKE = 16
#: Longest time between two sweeps of idle clients, in seconds.
SWEEP_INTERVAL = 1.0
#: Datagrams relayed in one spin after a lone datagram, at most, before the loop runs again.
SPIN_ROUNDS = 64
#: Seconds the relay busy-polls after a lone datagram unless ``spin`` says otherwise: longer
#: than the server's 50 us, because what it waits for (a reply) includes the upstream's own
#: wake-up, 85 us at the median on the 2-core VM.
SPIN = 200e-6
#: After this many spins in a row that caught nothing (one-way traffic), only one lone datagram
#: in ``SPIN_TRIAL`` is followed by a spin, until a spin catches something again. Odd, so that
#: the trials of a ping-pong (two lone relays a round trip) fall on both of its phases.
SPIN_MISSES = 8
SPIN_TRIAL = 17
#: Seconds before a departure that the timer fires, to busy-poll up to it: a sleeping thread
#: wakes late, 85 us at the median and 110 us at the 75th percentile on the 2-core VM
#: (docs/proxy.md).
TIMER_LEAD = 200e-6


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What the proxy does to datagrams, and how many clients it keeps.

    - ``up``, ``down``: the impairments of each direction (up: client to upstream).
    - ``seed``: the seed of every random decision (``None``: a random seed, reported by
      :attr:`Proxy.seed`); the same seed gives the same fate to the same sequence of datagrams.
    - ``max_clients``: client addresses kept at once, each with its upstream socket; a new one
      past that evicts the least recently active.
    - ``idle_timeout``: seconds without a datagram either way after which a client is forgotten.
    - ``max_in_flight``: datagrams held (delayed) at once per direction; more are dropped.
    """

    up: Impairment = field(default_factory=Impairment)
    down: Impairment = field(default_factory=Impairment)
    seed: int | None = None
    max_clients: int = 1024
    idle_timeout: float = 60.0
    max_in_flight: int = MAX_IN_FLIGHT

    def __post_init__(self) -> None:
        for name in ("up", "down"):
            if not isinstance(getattr(self, name), Impairment):
                raise ConfigError(f"{name} must be an Impairment")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ConfigError(f"seed must be a whole number, got {self.seed!r}")
        for name in ("max_clients", "max_in_flight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be a whole number, at least 1, "
                                  f"got {value!r}")  # fmt: skip
        timeout = self.idle_timeout
        if not (
            isinstance(timeout, int | float)
            and not isinstance(timeout, bool)
            and math.isfinite(timeout)
            and timeout > 0
        ):
            raise ConfigError(f"idle timeout must be more than 0 seconds, got {timeout!r}")


class ProxyFailure(UdpbeatError):
    """The proxy stopped by itself: a reader or its timer met an error (a defect)."""


class Client:
    """One client address and its upstream socket."""

    __slots__ = ("address", "closed", "key", "last_active", "sock")

    def __init__(self, key: Key, address: tuple[Any, ...], sock: socket.socket, now: float):
        self.key = key
        self.address = address
        self.sock = sock
        self.last_active = now
        self.closed = False


class Proxy:
    """A UDP relay with impairments on the running asyncio loop.

    ``listen`` is ``(host, port)`` to bind (port 0: any free port, see :attr:`address`),
    ``upstream`` the ``(host, port)`` datagrams are relayed to. Use ``async with Proxy(...)``
    or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        config: ProxyConfig | None = None,
        *,
        io: str = "auto",
        spin: float = SPIN,
    ) -> None:
        """``io``: ``"auto"``, ``"batched"`` or ``"portable"``, as the server's; ``spin``:
        seconds the relay busy-polls after a lone datagram (0: never busy-poll, not even up
        to a departure).

        Raises:
            ConfigError: an unknown I/O path, or a spin that is not 0 to 1 second.
        """
        self.listen = listen
        self.upstream = upstream
        self.config = config = config or ProxyConfig()
        self.io_mode, _ = choose_io(io)
        if isinstance(spin, bool) or not isinstance(spin, int | float) or not 0 <= spin <= 1:
            raise ConfigError(f"spin must be 0 to 1 second, got {spin!r}")
        self._spin = float(spin)
        self._spin_misses = 0
        self._lone = 0
        # A spin catches a datagram early; that helps only a direction that sends datagrams on
        # the moment they arrive (a delayed one counts from the kernel's timestamp anyway).
        self._spin_helps = config.up.instant or config.down.instant
        #: The proxy's own epoll over all its sockets, for busy-polling (``None``: no spin).
        self._poller: select.epoll | None = None
        #: How early the timer fires to busy-poll up to a departure (see ``TIMER_LEAD``).
        self.timer_lead = TIMER_LEAD
        self._handlers: dict[int, Callable[[], int]] = {}
        #: The seed in use: the configured one, or one drawn at random when started.
        self.seed = (
            config.seed if config.seed is not None else random.SystemRandom().getrandbits(32)
        )
        self.events = SocketEvents()
        self.up: ImpairedPath[Client] = ImpairedPath(config.up, seed=self.seed, direction="up")
        self.down: ImpairedPath[Client] = ImpairedPath(
            config.down, seed=self.seed, direction="down"
        )
        self.clients: OrderedDict[Key, Client] = OrderedDict()
        #: Clients ever created, forgotten after ``idle_timeout``, evicted by a newer one.
        self.clients_total = 0
        self.clients_expired = 0
        self.clients_evicted = 0
        self.started_at: float | None = None
        self.failure: ProxyFailure | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._io: Io | None = None
        self._timer: MonotonicTimer | None = None
        self._upstream_address: tuple[Any, ...] = ()
        self._upstream_family: int = socket.AF_INET
        self._sweeper: asyncio.TimerHandle | None = None
        # The latest arrival time handed to each path: arrivals never go back in time.
        self._last_up = self._last_down = -math.inf
        self._stopped: asyncio.Future[None] | None = None

    # -- life cycle -------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        if self._sock is None:
            raise RuntimeError("the proxy is not started")
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    @property
    def upstream_address(self) -> tuple[Any, ...]:
        """The upstream's resolved socket address."""
        return self._upstream_address

    @property
    def precise_timer(self) -> bool:
        """Whether departures are timed by a ``timerfd`` (else asyncio's millisecond timers)."""
        return self._timer is not None and self._timer.precise

    async def start(self) -> None:
        """Resolve the upstream, bind, and start relaying.

        Raises:
            ConfigError: the upstream does not resolve, or the address cannot be bound.
        """
        if self._sock is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        host, port = self.upstream
        self._upstream_address, self._upstream_family = await resolve(host, port)
        sock = bind_udp(*self.listen)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        enable_timestamps(sock)
        self._sock = sock
        self._io = make_io(sock.family, self.events, self.io_mode)
        self._stopped = loop.create_future()
        now = loop.time()
        self.started_at = now
        # Outages count from here.
        self.up = ImpairedPath(
            self.config.up,
            seed=self.seed,
            direction="up",
            start=now,
            max_in_flight=self.config.max_in_flight,
        )
        self.down = ImpairedPath(
            self.config.down,
            seed=self.seed,
            direction="down",
            start=now,
            max_in_flight=self.config.max_in_flight,
        )
        self._timer = MonotonicTimer(loop, self._guarded(self._on_timer))
        loop.add_reader(sock.fileno(), self._guarded(self._on_listen))
        if self._spin and hasattr(select, "epoll"):
            self._poller = select.epoll()
            self._watch(sock.fileno(), lambda: self._relay_up()[0])
        self._schedule_sweep()

    async def wait_stopped(self) -> None:
        """Return when the proxy stops; raise :class:`ProxyFailure` if it stopped by itself."""
        if self._stopped is not None:
            await asyncio.shield(self._stopped)

    async def stop(self) -> dict[str, object]:
        """Stop relaying; datagrams still held are dropped (``stopped``). Returns the stats."""
        self._close()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        return self.stats()

    def _close(self) -> None:
        loop, sock = self._loop, self._sock
        if sock is None or loop is None:
            return
        with contextlib.suppress(Exception):
            loop.remove_reader(sock.fileno())
        sock.close()
        self._sock = None
        if self._timer is not None:
            self._timer.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for client in list(self.clients.values()):
            self._forget(client)
        if self._poller is not None:
            self._poller.close()
            self._poller = None
            self._handlers.clear()
        self.up.stop()
        self.down.stop()

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _guarded(self, callback: Callable[..., None]) -> Callable[..., None]:
        """A callback whose exception stops the proxy and reaches :meth:`wait_stopped`,
        instead of being logged by asyncio and retried on every wake-up."""

        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as error:
                self._fail(error)

        return guarded

    def _fail(self, error: Exception) -> None:
        described = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self.failure = ProxyFailure(f"the proxy stopped: {described}")
        self.failure.__cause__ = error
        self._close()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_exception(self.failure)

    # -- counters ---------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """Every counter as one object (JSON-ready); ``docs/proxy.md`` describes each."""
        timing: dict[str, object] = {
            "precise": self.precise_timer,
            "lead_ms": round(self.timer_lead * 1e3, 4) if self._spin else 0.0,
        }
        for name, path in (("up", self.up), ("down", self.down)):
            mean = path.mean_lateness
            timing[f"{name}_late_mean_ms"] = None if mean is None else round(mean * 1e3, 4)
            timing[f"{name}_late_max_ms"] = round(path.lateness_max * 1e3, 4)
        return {
            "up": self.up.counters.to_dict(),
            "down": self.down.counters.to_dict(),
            "clients": len(self.clients),
            "clients_total": self.clients_total,
            "clients_expired": self.clients_expired,
            "clients_evicted": self.clients_evicted,
            "upstream_refused": self.events.refused,
            "receive_errors": self.events.receive_errors,
            "timing": timing,
        }

    @property
    def counters(self) -> tuple[PathCounters, PathCounters]:
        """Snapshots of the up and down counters."""
        return self.up.counters.copy(), self.down.counters.copy()

    # -- clients ----------------------------------------------------------------------------

    def _client(self, key: Key, now: float) -> Client | None:
        """The client with this source, created if new; ``None`` if no socket could be had."""
        clients = self.clients
        client = clients.get(key)
        if client is not None:
            client.last_active = now
            clients.move_to_end(key)
            return client
        assert self._io is not None and self._loop is not None
        if len(clients) >= self.config.max_clients:
            _, oldest = clients.popitem(last=False)
            self._forget(oldest)
            self.clients_evicted += 1
        try:
            sock = socket.socket(self._upstream_family, socket.SOCK_DGRAM)
        except OSError:
            return None
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            enable_timestamps(sock)
            sock.connect(self._upstream_address)
        except OSError:
            sock.close()
            return None
        client = Client(key, self._io.display(key), sock, now)
        clients[key] = client
        self.clients_total += 1
        self._loop.add_reader(sock.fileno(), self._guarded(self._on_upstream), client)
        self._watch(sock.fileno(), lambda: self._relay_down(client))
        return client

    def _forget(self, client: Client) -> None:
        self.clients.pop(client.key, None)
        if client.closed:
            return
        client.closed = True
        fd = client.sock.fileno()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(fd)
        if self._poller is not None and self._handlers.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._poller.unregister(fd)
        client.sock.close()

    def _watch(self, fd: int, handler: Callable[[], int]) -> None:
        if self._poller is not None:
            self._poller.register(fd, select.EPOLLIN)
            self._handlers[fd] = handler

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        interval = min(self.config.idle_timeout / 4, SWEEP_INTERVAL)
        self._sweeper = self._loop.call_later(interval, self._guarded(self._sweep))

    def _sweep(self) -> None:
        """Forget the clients idle for ``idle_timeout`` (the table is in order of activity)."""
        if self._sock is None or self._loop is None:
            return
        deadline = self._loop.time() - self.config.idle_timeout
        while self.clients:
            client = next(iter(self.clients.values()))
            if client.last_active > deadline:
                break
            self._forget(client)
            self.clients_expired += 1
        self._schedule_sweep()

    # -- relaying ---------------------------------------------------------------------------

    def _on_listen(self) -> None:
        """The listening socket is readable: datagrams from clients, the up direction."""
        io = self._io
        assert io is not None
        count = 0
        for _ in range(BATCHES_PER_WAKE):
            count, _ = self._relay_up()
            if count < io.batch:
                break
        self._arm()
        if count == 1:
            self._spin_after_lone()

    def _on_upstream(self, client: Client) -> None:
        """An upstream socket is readable: datagrams to ``client``, the down direction."""
        io = self._io
        assert io is not None
        count = 0
        for _ in range(BATCHES_PER_WAKE):
            count = self._relay_down(client)
            if count < io.batch:
                break
        self._arm()
        if count == 1:
            self._spin_after_lone()

    def _spin_after_lone(self) -> None:
        """After a lone datagram, busy-poll every socket for ``spin`` seconds before the loop
        goes back to waiting; each datagram relayed meanwhile starts the spin again.

        A lone request relayed up is usually followed within microseconds by its reply, and a
        reply relayed down by the client's next request: caught while the thread still runs,
        neither pays for waking a sleeping thread (tens of microseconds on a virtual machine),
        which is most of what a relay would add to the round trip. A batch of more than one
        datagram (a queue, not a ping-pong) ends the spin, and so does ``SPIN_ROUNDS``
        datagrams, so that the loop's other callbacks run. Spins that keep catching nothing
        (one-way traffic) become rare trials (``SPIN_MISSES``, ``SPIN_TRIAL``), and there is no
        spin when both directions delay every datagram: catching one early gains nothing then.
        """
        if self._poller is None or not self._spin_helps:
            return
        self._lone += 1
        if self._spin_misses >= SPIN_MISSES and self._lone % SPIN_TRIAL:
            return  # one-way traffic: nothing to catch, spin only now and then
        monotonic = time.monotonic
        for _ in range(SPIN_ROUNDS):
            relayed = self._busy_poll(monotonic() + self._spin, stop_on_datagram=True)
            self._spin_misses = 0 if relayed else self._spin_misses + 1
            if relayed != 1:
                return

    def _busy_poll(self, until: float, *, stop_on_datagram: bool = False) -> int:
        """Relay what arrives on any socket until the monotonic clock reaches ``until`` (or,
        with ``stop_on_datagram``, the first batch); how many datagrams were relayed.

        It never yields the CPU (``sched_yield`` would hand it to any other runnable task for
        a whole time slice, milliseconds on a busy machine): spins are short and bounded.
        """
        poller = self._poller
        if poller is None:
            return 0
        poll, handlers, monotonic = poller.poll, self._handlers, time.monotonic
        relayed = 0
        while monotonic() < until and self._sock is not None:
            events = poll(0)
            if not events:
                continue
            for fd, _ in events:
                handler = handlers.get(fd)
                if handler is not None:
                    relayed += handler()
            if relayed and stop_on_datagram:
                break
        if relayed:
            self._arm()
        return relayed

    def _relay_up(self) -> tuple[int, Client | None]:
        """Relay one batch from the listening socket; how many, and the last client."""
        sock, io, loop, up = self._sock, self._io, self._loop, self.up
        assert io is not None and loop is not None
        if sock is None:
            return 0, None
        count = io.receive(sock, sources=True)
        if not count:
            return 0, None
        now = loop.time()
        sources = io.sources()
        if isinstance(sources, list):
            groups: dict[Key, list[int]] = {}
            for index, key in enumerate(sources):
                groups.setdefault(key, []).append(index)
            batches: list[tuple[Key, Sequence[int]]] = list(groups.items())
        else:
            batches = [(sources, range(count))]
        client: Client | None = None
        arrivals: list[float] | None = None
        for key, indices in batches:
            client = self._client(key, now)
            if client is None:
                up.passed(len(indices), 0, [("no-socket", len(indices))])
            elif up.clean:
                sent, failed = io.forward(client.sock, indices, None)
                up.passed(len(indices), sent, [("send-error", failed)] if failed else ())
            else:
                if arrivals is None:
                    arrivals = io.arrivals(now)
                for index, payload in zip(indices, io.payloads(indices), strict=True):
                    self._last_up = arrived = max(arrivals[index], self._last_up)
                    up.send(payload, client, arrived)
        if not up.clean:
            self._send_due(up, now)
        return count, client

    def _relay_down(self, client: Client) -> int:
        """Relay one batch from ``client``'s upstream socket to it; how many."""
        sock, io, loop, down = self._sock, self._io, self._loop, self.down
        assert io is not None and loop is not None
        if sock is None or client.closed:
            return 0
        count = io.receive(client.sock, sources=False)
        if not count:
            return 0
        now = loop.time()
        if client.key in self.clients:
            client.last_active = now
            self.clients.move_to_end(client.key)
        if down.clean:
            sent, failed = io.forward(sock, range(count), client.key, client.address)
            down.passed(count, sent, [("send-error", failed)] if failed else ())
        else:
            for arrived, payload in zip(io.arrivals(now), io.payloads(range(count)), strict=True):
                # Upstream sockets are read in no particular order: never back in time.
                self._last_down = arrived = max(arrived, self._last_down)
                down.send(payload, client, arrived)
            self._send_due(down, now)
        return count

    def _on_timer(self) -> None:
        """The timer fired, ``TIMER_LEAD`` before the next departure: busy-poll (relaying
        what arrives) until it is due, then send everything due."""
        loop = self._loop
        assert loop is not None
        if self._sock is None:
            return
        due = self._next_due()
        if due is not None and self._poller is not None:
            # Never longer than the lead: a timer that fired earlier than that is armed again.
            self._busy_poll(min(due, time.monotonic() + self.timer_lead))
        now = loop.time()
        sent = self._send_due(self.up, now) + self._send_due(self.down, now)
        self._arm()
        if sent == 1:
            self._spin_after_lone()  # its reply, or the next request, may follow at once

    def _next_due(self) -> float | None:
        up, down = self.up.get_timer(), self.down.get_timer()
        if up is None:
            return down
        return up if down is None else min(up, down)

    def _send_due(self, path: ImpairedPath[Client], now: float) -> int:
        """Send what ``path`` has due by ``now``, batched per destination; how many were due."""
        due = path.pop_due(now)
        if not due:
            return 0
        io, sock = self._io, self._sock
        assert io is not None and sock is not None
        by_client: dict[int, tuple[Client, list[bytes]]] = {}
        for client, payload in due:
            entry = by_client.get(id(client))
            if entry is None:
                by_client[id(client)] = (client, [payload])
            else:
                entry[1].append(payload)
        upward = path is self.up
        for client, payloads in by_client.values():
            if upward:
                if client.closed:
                    path.drop("evicted", len(payloads))
                    continue
                sent, failed = io.send(client.sock, payloads, None)
            else:
                sent, failed = io.send(sock, payloads, client.key, client.address)
            path.forwarded(sent)
            if failed:
                path.drop("send-error", failed)
        return len(due)

    def _arm(self) -> None:
        """Arm the timer for the next departure, :attr:`timer_lead` early when busy-polling."""
        timer = self._timer
        if timer is None:
            return
        due = self._next_due()
        if due is not None and self._poller is not None and timer.precise:
            due -= self.timer_lead
        timer.arm(due)
