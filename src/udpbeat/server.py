"""The reflector's I/O shell: a UDP socket on an asyncio loop around :class:`Reflector`.

The receive path drains the socket: on each readiness callback it reads datagrams until the
socket would block (up to a batch limit, so timers still run under a flood), reflects each one and
sends the reply at once with a non-blocking ``sendto``. asyncio's default ``DatagramProtocol``
reads one datagram per loop iteration and is several times slower. A dedicated reader thread on a
blocking socket, larger or smaller batches and uvloop were measured too and were no faster
(``docs/performance.md``), so the single-threaded drain stays: no lock, and it stops cleanly on
every platform.

Log records are handed to ``on_records`` once per drained batch, never per packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from udpbeat.errors import ConfigError
from udpbeat.reflector import Counters, Reflected, Reflector, ReflectorConfig
from udpbeat.wire import text

DEFAULT_PORT = 12000
#: Datagrams handled per readiness callback before yielding to the loop.
DRAIN_BATCH = 512
#: Read one byte more than a valid request can be, so an oversize datagram is seen as such
#: (a server reads ``config.max_size + 1``; this is the size for the default config).
RECEIVE_SIZE = text.MAX_REQUEST_SIZE + 1

RecordSink = Callable[[list[Reflected]], None]


@dataclass(frozen=True, slots=True)
class SocketCounters:
    """What happened at the socket, outside the reflector's decisions."""

    send_errors: int
    send_dropped: int
    receive_errors: int

    def to_dict(self) -> dict[str, int]:
        return {
            "send_errors": self.send_errors,
            "send_dropped": self.send_dropped,
            "receive_errors": self.receive_errors,
        }


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` (``""``: every IPv4 and IPv6 interface).

    Raises:
        ConfigError: the port is out of range, the host does not resolve, or binding failed.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    if host in ("", "*"):
        candidates = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as error:
            raise ConfigError(f"cannot resolve host {host!r}: {error.strerror}") from None
        candidates = [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos]
    last_error: OSError | None = None
    for family, address in candidates:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host in ("", "*"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((address, port))
        except OSError as error:
            sock.close()
            last_error = error
            continue
        sock.setblocking(False)
        return sock
    reason = last_error.strerror if last_error is not None else "no address"
    raise ConfigError(f"cannot bind UDP {host or '*'}:{port}: {reason}")


def display_address(address: tuple[object, ...]) -> str:
    """``host:port`` (``[host]:port`` for IPv6), with IPv4-mapped IPv6 shown as plain IPv4."""
    host, port = str(address[0]), address[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    """A heartbeat reflector on the running asyncio loop.

    Use ``async with Server(...) as server`` or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        host: str = "",
        port: int = DEFAULT_PORT,
        config: ReflectorConfig | None = None,
        *,
        on_records: RecordSink | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.reflector = Reflector(config)
        #: One byte past the largest datagram accepted: longer ones arrive cut to this size (the
        #: kernel truncates), are still longer than ``max_size``, and are counted as oversize.
        self.receive_size = self.reflector.config.max_size + 1
        self._on_records = on_records
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_errors = 0
        self._send_dropped = 0
        self._receive_errors = 0

    @property
    def counters(self) -> Counters:
        return self.reflector.counters

    @property
    def socket_counters(self) -> SocketCounters:
        return SocketCounters(self._send_errors, self._send_dropped, self._receive_errors)

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; with port 0 asked, the port the system chose."""
        if self._sock is None:
            raise RuntimeError("the server is not started")
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> None:
        if self._sock is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._sock = bind_udp(self.host, self.port)
        self._loop.add_reader(self._sock.fileno(), self._drain)

    async def stop(self) -> Counters:
        """Stop receiving, hand over the last log records, and return the counters."""
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self._flush()
        return self.counters

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _drain(self) -> None:
        sock = self._sock
        if sock is None:
            return
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        reflect = self.reflector.reflect
        receive_size = self.receive_size
        clock = time.time
        for _ in range(DRAIN_BATCH):
            try:
                data, source = recvfrom(receive_size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._receive_errors += 1
                continue
            reply = reflect(data, source, clock())
            if reply is not None:
                try:
                    sendto(reply, source)
                except (BlockingIOError, InterruptedError):
                    self._send_dropped += 1
                except OSError:
                    self._send_errors += 1
        self._flush()

    def _flush(self) -> None:
        records = self.reflector.drain_log()
        if records and self._on_records is not None:
            self._on_records(records)


class BackgroundServer:
    """A :class:`Server` on its own thread and event loop, for scripts and Jupyter notebooks.

    ``start()`` returns once the socket is bound (or raises what binding raised); ``stop()`` closes
    it and returns the final counters. Also a context manager.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: ReflectorConfig | None = None,
        *,
        on_records: RecordSink | None = None,
    ) -> None:
        self.server = Server(host, port, config, on_records=on_records)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="udpbeat-server", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    @property
    def counters(self) -> Counters:
        return self.server.counters

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        if self._thread.is_alive():
            return self  # started already, e.g. by start_background_server() before a `with`
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout)
        except BaseException:
            self.stop(timeout)
            raise
        return self

    def stop(self, timeout: float = 10.0) -> Counters:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
        return self.counters

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_background_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    loss: float = 0.0,
    seed: int | None = None,
    on_records: RecordSink | None = None,
) -> BackgroundServer:
    """Start a reflector in the background (works inside Jupyter) and return its handle."""
    config = ReflectorConfig(loss=loss, seed=seed, log_events=on_records is not None)
    return BackgroundServer(host, port, config, on_records=on_records).start()
