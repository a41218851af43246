"""The prober's I/O shell: a connected UDP socket and a timer around :class:`ProbeSession`.

All decisions are the session's; this module only moves datagrams, reads the clocks and arms
the session's timer. ``now`` is the event loop's clock (monotonic), so RTTs do not move when the
wall clock is stepped; the wall clock is read only for the timestamp the wire format carries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from udpbeat.detector import AdaptiveDetector, Detector
from udpbeat.errors import ConfigError
from udpbeat.server import DEFAULT_PORT, display_address
from udpbeat.session import Event, ProbeConfig, ProbeReport, ProbeSession

EventSink = Callable[[Event], None]
T = TypeVar("T")

#: Errors a connected UDP socket reports when an ICMP error came back for a heartbeat.
REFUSALS = (ConnectionRefusedError, ConnectionResetError)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, prober: Prober) -> None:
        self._prober = prober

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._prober.on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        self._prober.on_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._prober.on_closed(exc)


class Prober:
    """Runs one :class:`ProbeSession` against one target on the running loop."""

    def __init__(
        self,
        session: ProbeSession,
        *,
        on_event: EventSink | None = None,
    ) -> None:
        self.session = session
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        self.socket_errors: list[str] = []

    async def run(self, address: tuple[Any, ...], family: int) -> ProbeReport:
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self), remote_addr=address[:2], family=family
        )
        self._transport = transport
        try:
            self._step()
            await self._done
        finally:
            self._cancel_timer()
            transport.close()
        return self.session.report(self._loop.time())

    def stop(self) -> None:
        """End the run now; the report covers what happened so far."""
        self.session.stop(self._loop.time())
        self._flush()

    def on_datagram(self, data: bytes) -> None:
        self.session.receive_datagram(data, self._loop.time())
        self._step()

    def on_error(self, exc: Exception) -> None:
        now = self._loop.time()
        if isinstance(exc, REFUSALS):
            self.session.receive_error(now)
        else:
            self.socket_errors.append(f"{type(exc).__name__}: {exc}")
        self._step()

    def on_closed(self, exc: Exception | None) -> None:
        if not self._done.done() and exc is not None:
            self._done.set_exception(exc)

    def _on_timer(self) -> None:
        self._timer = None
        self._step()

    def _step(self) -> None:
        session = self.session
        session.handle_timer(self._loop.time(), time.time())
        self._flush()
        self._cancel_timer()
        when = session.get_timer()
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _flush(self) -> None:
        transport = self._transport
        if transport is not None:
            for datagram in self.session.datagrams_to_send():
                transport.sendto(datagram)
        if self._on_event is not None:
            for event in self.session.events():
                self._on_event(event)
        else:
            for _ in self.session.events():
                pass
        if self.session.finished and not self._done.done():
            self._done.set_result(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def resolve(host: str, port: int) -> tuple[tuple[Any, ...], int]:
    """The first UDP address of ``host``; raises ConfigError if it does not resolve."""
    if not 0 < port <= 65535:
        raise ConfigError(f"port must be in 1..65535, got {port}")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as error:
        raise ConfigError(f"cannot resolve host {host!r}: {error.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return sockaddr, family


async def probe(
    host: str,
    port: int = DEFAULT_PORT,
    *,
    count: int | None = 100,
    interval: float = 1.0,
    timeout: float = 1.0,
    watch: bool = False,
    detector: Detector | None = None,
    on_event: EventSink | None = None,
    on_start: Callable[[Prober], None] | None = None,
) -> ProbeReport:
    """Send heartbeats to ``host:port`` and return the report (the async entry point).

    ``detector`` defaults to :class:`AdaptiveDetector`, as the CLI does. ``on_event`` sees every
    event as it happens; ``on_start`` receives the :class:`Prober`, whose ``stop()`` ends the run
    early (the report then covers what happened so far).

    Raises:
        ConfigError: a setting is out of range or the host does not resolve.
    """
    config = ProbeConfig(count=count, interval=interval, timeout=timeout, watch=watch)
    if detector is None:
        detector = AdaptiveDetector(timeout)
    address, family = await resolve(host, port)
    loop = asyncio.get_running_loop()
    session = ProbeSession(config, detector, loop.time(), target=display_address(address))
    prober = Prober(session, on_event=on_event)
    if on_start is not None:
        on_start(prober)
    return await prober.run(address, family)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even where a loop already runs.

    Jupyter runs an event loop in the kernel's thread, so ``asyncio.run`` fails there; the
    coroutine then runs on a fresh loop in a worker thread while the caller waits.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="udpbeat") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def probe_sync(host: str, port: int = DEFAULT_PORT, **options: Any) -> ProbeReport:
    """:func:`probe` for synchronous code and notebooks; takes the same keyword options."""
    return run_sync(probe(host, port, **options))
