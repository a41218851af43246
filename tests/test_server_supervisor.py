"""A failure inside the reflector is counted and survived; a dead reader stops the server."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import exchange, udp_socket

from udpbeat import ReflectorConfig, Server
from udpbeat.cli.format import format_report
from udpbeat.reflector import Reflected
from udpbeat.server import ServerFailure
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.wire import text


def _request(seq: int) -> bytes:
    return text.encode_request(text.Heartbeat(seq, time.time()))


@pytest.mark.parametrize("io", ["portable", "batched"])
def test_an_exception_in_reflect_is_counted_and_the_server_keeps_answering(io: str) -> None:
    records: list[Reflected] = []

    async def run() -> tuple[int, int, list[int]]:
        server = Server("127.0.0.1", 0, ReflectorConfig(rate_limit=0), on_records=records.extend)
        if io == "batched" and server._mmsg_functions is None:
            pytest.skip("no recvmmsg here")
        if io == "portable":
            server._mmsg_functions = None
        reflector = server.reflector
        real_reflect_batch = reflector.reflect_batch
        failed = []

        def reflect_batch(datagrams, source, *args):  # type: ignore[no-untyped-def]
            if not failed:
                failed.append(True)
                reflector.counters.received += len(datagrams)  # as the real one starts
                raise RuntimeError("a defect")
            return real_reflect_batch(datagrams, source, *args)

        reflector.reflect_batch = reflect_batch  # type: ignore[method-assign]
        await server.start()
        host, port = server.address
        answered = []
        loop = asyncio.get_running_loop()
        with udp_socket() as sock:
            sock.sendto(_request(1), (host, port))  # the one that fails: no reply
            # Wait until it is counted, so that the next ones are not in the same failing batch.
            deadline = loop.time() + 5.0
            while server.counters.internal_errors == 0 and loop.time() < deadline:
                await asyncio.sleep(0.005)
            for seq in range(2, 6):
                reply = await loop.run_in_executor(
                    None, exchange, sock, _request(seq), (host, port)
                )
                answered.append(text.decode_reply(reply).seq)
        counters = await server.stop()
        return counters.internal_errors, counters.unaccounted, answered

    internal_errors, unaccounted, answered = asyncio.run(run())
    assert answered == [2, 3, 4, 5]
    assert internal_errors == 1
    assert unaccounted == 0, "the counters still add up"
    said = [r for r in records if r.outcome == "internal-error"]
    assert len(said) == 1 and "RuntimeError: a defect" in said[0].detail


def test_a_reader_that_dies_is_reported_to_whoever_waits() -> None:
    async def run() -> None:
        server = Server("127.0.0.1", 0)

        def broken(sock):  # type: ignore[no-untyped-def]
            raise OSError(5, "the reader broke")

        server._receive = broken  # type: ignore[method-assign]
        server._receive_batched = broken  # type: ignore[method-assign]
        await server.start()
        try:
            async with asyncio.timeout(5):
                await server.wait_stopped()
        finally:
            await server.stop()

    with pytest.raises(ServerFailure, match="the reader stopped: OSError"):
        asyncio.run(run())


def test_server_counters_are_a_snapshot() -> None:
    async def run() -> None:
        server = Server("127.0.0.1", 0)
        await server.start()
        first = server.counters
        with udp_socket() as sock:
            exchange(sock, _request(1), server.address)
        assert first.received == 0, "a snapshot does not move"
        assert server.counters.received == 1
        await server.stop()

    asyncio.run(run())


def test_the_summary_shows_socket_errors_by_kind() -> None:
    session = ProbeSession(ProbeConfig(first_seq=1), 0.0)
    session.count_socket_error("icmp-elsewhere")
    session.count_socket_error("icmp-elsewhere")
    session.count_socket_error("enobufs")
    report = session.report(1.0)
    assert report.socket_errors == {"icmp-elsewhere": 2, "enobufs": 1}
    assert "socket errors: enobufs 1, icmp-elsewhere 2" in format_report(report, 0.0)
