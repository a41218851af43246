"""The proxy's shell on real loopback sockets: relaying, clients, timing, counters, failures.

Each test is short and bounded: every wait has a deadline (``WAIT``), and the statistics of
the impairments themselves are tested on a virtual clock in ``test_impair.py``.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from helpers import has_ipv6_loopback

from udpbeat.errors import ConfigError
from udpbeat.impair import Impairment, ScheduledOutage
from udpbeat.proxy import Proxy, ProxyConfig, ProxyFailure

WAIT = 5.0
IO_MODES = ["batched", "portable"]


class Echo:
    """An upstream that sends every datagram back and remembers who sent it.

    A plain socket on the loop (asyncio's datagram transport would not send an empty one).
    """

    def __init__(self, host: str) -> None:
        self.sock = client_socket(host)
        self.sources: list[tuple[Any, ...]] = []
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._echo)

    @property
    def address(self) -> tuple[Any, ...]:
        return tuple(self.sock.getsockname()[:2])

    def _echo(self) -> None:
        for _ in range(64):
            try:
                data, source = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            self.sources.append(source)
            self.sock.sendto(data, source)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@asynccontextmanager
async def relay(
    config: ProxyConfig | None = None, *, io: str = "batched", host: str = "127.0.0.1"
) -> AsyncIterator[tuple[Proxy, Echo]]:
    echo = Echo(host)
    try:
        async with Proxy((host, 0), echo.address, config, io=io) as proxy:
            yield proxy, echo
    finally:
        echo.close()


def client_socket(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)  # bursts are not dropped
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def receive(sock: socket.socket, timeout: float = WAIT) -> bytes:
    loop = asyncio.get_running_loop()
    data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65536), timeout)
    return data


async def nothing_arrives(sock: socket.socket, within: float) -> bool:
    try:
        await receive(sock, within)
    except TimeoutError:
        return True
    return False


def run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), 20))


# --- relaying --------------------------------------------------------------------------------


@pytest.mark.parametrize("io", IO_MODES)
def test_relays_both_ways_and_keeps_clients_apart(io: str) -> None:
    async def main() -> None:
        async with relay(io=io) as (proxy, echo):
            a, b = client_socket(), client_socket()
            for i in range(20):
                for name, sock in (("a", a), ("b", b)):
                    sock.sendto(f"{name}{i}".encode(), proxy.address)
                    assert await receive(sock) == f"{name}{i}".encode()
            # Two clients, two upstream sources, each stable.
            assert len(set(echo.sources)) == 2
            assert len(proxy.clients) == 2 and proxy.clients_total == 2
            up, down = proxy.counters
            assert up.received == up.forwarded == 40 and down.received == down.forwarded == 40
            for sock in (a, b):
                sock.close()

    run(main)


@pytest.mark.parametrize("io", IO_MODES)
def test_any_size_of_datagram_goes_through_intact(io: str) -> None:
    async def main() -> None:
        async with relay(io=io) as (proxy, _):
            sock = client_socket()
            for size in (0, 1, 1472, 9000, 65507):
                payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                sock.sendto(payload, proxy.address)
                assert await receive(sock) == payload
            sock.close()

    run(main)


def test_a_burst_from_many_clients_arrives_complete_and_in_order() -> None:
    async def main() -> None:
        async with relay() as (proxy, _):
            socks = [client_socket() for _ in range(8)]
            for i in range(200):  # more than a batch, interleaved sources in every batch
                for sock in socks:
                    sock.sendto(b"%d" % i, proxy.address)
            for sock in socks:
                got = [int(await receive(sock)) for _ in range(200)]
                assert got == list(range(200))
                sock.close()
            up, down = proxy.counters
            assert up.forwarded == down.forwarded == 1600

    run(main)


@pytest.mark.parametrize("io", IO_MODES)
def test_runs_of_equal_sizes_and_odd_ones_out_keep_their_order(io: str) -> None:
    """Runs of one size go out as one segmented send (UDP GSO, chunked under 64 datagrams
    and 60,000 bytes); the others one by one; the order and the bytes stay as they were."""

    async def main() -> None:
        async with relay(io=io) as (proxy, _):
            sock = client_socket()
            sizes = [40] * 100 + [9000] * 20 + [1, 2, 3] + [40] * 3 + [0, 0, 0] + [65000] * 2
            payloads = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
            for payload in payloads:
                sock.sendto(payload, proxy.address)
            got = [await receive(sock) for _ in payloads]
            assert got == payloads
            sock.close()

    run(main)


def test_how_a_batch_is_cut_for_segmented_sends() -> None:
    from udpbeat import _mmsg
    from udpbeat._proxyio import BatchIo, SocketEvents

    functions = _mmsg.load()
    if functions is None:
        pytest.skip("no recvmmsg/sendmmsg here")
    io = BatchIo(socket.AF_INET, functions, SocketEvents())
    assert io._runs([40] * 5) == [(True, 0, 5)]
    assert io._runs([40, 41, 42]) == [(False, 0, 3)]
    assert io._runs([1, 40, 40, 40, 2]) == [(False, 0, 1), (True, 1, 4), (False, 4, 5)]
    assert io._runs([40] * 150) == [(True, 0, 64), (True, 64, 128), (True, 128, 150)]
    assert io._runs([9000] * 20) == [(True, 0, 6), (True, 6, 12), (True, 12, 18), (True, 18, 20)]
    assert io._runs([0, 0, 0]) == [(False, 0, 3)]
    assert io._runs([40000, 40000]) == [(False, 0, 2)]  # more than 60,000 bytes together
    io._gso = False
    assert io._runs([40] * 5) == [(False, 0, 5)]


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6() -> None:
    async def main() -> None:
        async with relay(host="::1") as (proxy, _):
            sock = client_socket("::1")
            sock.sendto(b"six", proxy.address)
            assert await receive(sock) == b"six"
            sock.close()

    run(main)


#: A UDP echo for argv[1] datagrams (at most 10 s), printing its port first.
ECHO_PROCESS = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.settimeout(10)
print(sock.getsockname()[1], flush=True)
for _ in range(int(sys.argv[1])):
    data, source = sock.recvfrom(100)
    sock.sendto(data, source)
"""


def test_spins_back_off_when_nothing_comes_back() -> None:
    """One-way traffic gives a spin nothing to catch: after SPIN_MISSES empty spins in a row,
    only one lone datagram in SPIN_TRIAL is followed by one; a reply resets that."""
    from udpbeat.proxy import SPIN_MISSES, SPIN_TRIAL

    async def main() -> None:
        sink = client_socket()  # never answers
        # A long spin (20 ms), so that an upstream on a loaded machine still answers within it.
        async with Proxy(("127.0.0.1", 0), sink.getsockname()[:2], spin=0.02) as proxy:
            if proxy._poller is None:
                pytest.skip("no busy-polling here")
            sock = client_socket()
            for i in range(2 * SPIN_MISSES + 4):
                sock.sendto(b"%d" % i, proxy.address)
                await receive(sink)
                await asyncio.sleep(0.002)
            assert proxy._spin_misses >= SPIN_MISSES
            # An upstream in its own process answers while the proxy spins: caught, reset.
            # (A thread of this process could not: the spinning loop holds the GIL.)
            rounds = SPIN_TRIAL * 6  # trials on both phases, several of them
            echo = subprocess.Popen(
                [sys.executable, "-c", ECHO_PROCESS, str(rounds)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert echo.stdout is not None
            port = int(echo.stdout.readline())
            proxy.upstream = proxy._upstream_address = ("127.0.0.1", port)
            proxy._forget(next(iter(proxy.clients.values())))
            lowest = proxy._spin_misses
            for i in range(rounds):
                sock.sendto(b"%d" % i, proxy.address)
                await receive(sock)
                lowest = min(lowest, proxy._spin_misses)
            echo.wait(WAIT)
            assert lowest < SPIN_MISSES, "a spin caught a reply and reset the back-off"
            sock.close()
        sink.close()

    run(main)


# --- the client table ------------------------------------------------------------------------


def test_an_idle_client_is_forgotten_and_comes_back_as_new() -> None:
    async def main() -> None:
        config = ProxyConfig(idle_timeout=0.2)
        async with relay(config) as (proxy, echo):
            sock = client_socket()
            sock.sendto(b"1", proxy.address)
            await receive(sock)
            async with asyncio.timeout(WAIT):
                while proxy.clients_expired == 0:
                    await asyncio.sleep(0.05)
            assert not proxy.clients
            sock.sendto(b"2", proxy.address)
            await receive(sock)
            assert proxy.clients_total == 2 and len(set(echo.sources)) == 2
            sock.close()

    run(main)


def test_the_table_is_bounded_least_recently_active_out_first() -> None:
    async def main() -> None:
        async with relay(ProxyConfig(max_clients=2)) as (proxy, _):
            a, b, c = client_socket(), client_socket(), client_socket()
            for sock in (a, b, a, c):  # b is the least recently active when c comes
                sock.sendto(b"x", proxy.address)
                await receive(sock)
            assert proxy.clients_evicted == 1 and len(proxy.clients) == 2
            remaining = {client.address[1] for client in proxy.clients.values()}
            assert remaining == {a.getsockname()[1], c.getsockname()[1]}
            for sock in (a, b, c):
                sock.close()

    run(main)


# --- impairments on real sockets -------------------------------------------------------------


def test_delays_are_honest() -> None:
    """Each datagram leaves its delay after it arrived, never before, and hardly later: the
    departure is scheduled on the loop's monotonic clock (a timerfd), from the arrival time."""

    async def main() -> None:
        delay = 0.02
        async with relay(ProxyConfig(up=Impairment(delay=delay))) as (proxy, _):
            loop = asyncio.get_running_loop()
            sock = client_socket()
            rtts = []
            for _ in range(30):
                sent = loop.time()
                sock.sendto(b"x", proxy.address)
                await receive(sock)
                rtts.append(loop.time() - sent)
            assert min(rtts) >= delay
            # The median round trip: the delay, the loopback and the lateness of a timer on a
            # loaded machine; 2 ms is a generous bound for all three.
            assert statistics.median(rtts) < delay + 0.002
            stats = proxy.stats()
            timing = stats["timing"]
            assert isinstance(timing, dict)
            assert timing["up_late_mean_ms"] is not None and timing["up_late_mean_ms"] < 2
            assert timing["precise"] is proxy.precise_timer
            sock.close()

    run(main)


def test_counters_add_up_and_stop_drops_what_is_held() -> None:
    async def main() -> None:
        impaired = Impairment(loss=0.2, duplicate=0.2, delay=0.002, jitter=0.001)
        config = ProxyConfig(up=impaired, down=Impairment(delay=5.0), seed=4)
        async with relay(config) as (proxy, _):
            sock = client_socket()
            for i in range(200):
                sock.sendto(b"%d" % i, proxy.address)
            # Everything up has left by 10 ms or so; down holds it all for 5 s. Wait until the
            # proxy has read all 200 and every one it forwarded is back from the echo and held.
            async with asyncio.timeout(WAIT):
                while True:
                    up, down = proxy.counters
                    if up.received == 200 and not proxy.up.held and down.received == up.forwarded:
                        break
                    await asyncio.sleep(0.01)
            up, down = proxy.counters
            for counters in (up, down):
                assert counters.unaccounted == 0
            assert up.dropped["loss"] > 0 and up.duplicated > 0
            assert up.forwarded == up.received + up.duplicated - up.dropped_total
            assert down.in_flight == proxy.down.held > 0
            stats = await proxy.stop()
            down_after = stats["down"]
            assert isinstance(down_after, dict)
            assert down_after["in_flight"] == 0
            assert down_after["dropped_by_cause"]["stopped"] == down.in_flight
            assert await nothing_arrives(sock, 0.05)
            sock.close()

    run(main)


def test_the_same_seed_drops_the_same_datagrams_on_real_sockets() -> None:
    results: list[list[int]] = []

    async def once() -> None:
        async with relay(ProxyConfig(up=Impairment(loss=0.3), seed=77)) as (proxy, _):
            sock = client_socket()
            for i in range(100):
                sock.sendto(b"%d" % i, proxy.address)
            got = []
            while True:
                try:
                    got.append(int(await receive(sock, 0.2)))
                except TimeoutError:
                    break
            results.append(got)
            sock.close()

    run(once)
    run(once)
    assert results[0] == results[1]
    assert 50 < len(results[0]) < 90


def test_an_outage_on_real_sockets() -> None:
    async def main() -> None:
        config = ProxyConfig(up=Impairment(outages=(ScheduledOutage(0.0, 0.3),)))
        async with relay(config) as (proxy, _):
            sock = client_socket()
            sock.sendto(b"during", proxy.address)
            assert await nothing_arrives(sock, 0.1)
            loop = asyncio.get_running_loop()
            assert proxy.started_at is not None
            await asyncio.sleep(max(0.0, proxy.started_at + 0.3 - loop.time()) + 0.01)
            sock.sendto(b"after", proxy.address)
            assert await receive(sock) == b"after"
            assert proxy.up.counters.dropped["outage"] == 1
            sock.close()

    run(main)


# --- the upstream going away, and defects ----------------------------------------------------


def test_a_closed_upstream_is_counted_and_the_proxy_goes_on() -> None:
    async def main() -> None:
        # A port nothing listens on: each datagram relayed up draws "port unreachable".
        spare = client_socket()
        closed = spare.getsockname()[:2]
        spare.close()
        async with Proxy(("127.0.0.1", 0), closed) as proxy:
            sock = client_socket()
            for _ in range(5):
                sock.sendto(b"x", proxy.address)
                assert await nothing_arrives(sock, 0.02)
            up, _ = proxy.counters
            assert up.received == 5 and up.unaccounted == 0
            assert proxy.events.refused >= 1
            assert up.forwarded + up.dropped["send-error"] == 5
            sock.close()

    run(main)


def test_a_defect_stops_the_proxy_and_reaches_wait_stopped() -> None:
    async def main() -> None:
        async with relay(ProxyConfig(up=Impairment(delay=0.001))) as (proxy, _):

            def broken(*args: object) -> None:
                raise RuntimeError("boom")

            proxy.up.send = broken  # type: ignore[method-assign,assignment]
            sock = client_socket()
            sock.sendto(b"x", proxy.address)
            with pytest.raises(ProxyFailure, match="RuntimeError: boom"):
                await asyncio.wait_for(proxy.wait_stopped(), WAIT)
            assert proxy.failure is not None
            sock.close()

    run(main)


def test_bad_configuration() -> None:
    for kwargs in (
        {"max_clients": 0},
        {"idle_timeout": 0},
        {"idle_timeout": float("nan")},
        {"max_in_flight": 0},
        {"seed": 1.5},
        {"up": "lossy"},
    ):
        with pytest.raises(ConfigError):
            ProxyConfig(**kwargs)  # type: ignore[arg-type]


def test_a_port_in_use_is_a_config_error() -> None:
    async def main() -> None:
        taken = client_socket()
        with pytest.raises(ConfigError, match="cannot bind"):
            await Proxy(taken.getsockname()[:2], ("127.0.0.1", 9)).start()
        taken.close()

    run(main)
