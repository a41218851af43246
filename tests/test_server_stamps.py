"""The reflector's receive time is the kernel's stamp of the request, on both I/O paths.

A reader held up inside ``reflect`` leaves the next requests waiting in the socket's queue. With
kernel stamps their replies' time differences are those of their arrival (a few milliseconds at
most); read from the clock when the reader gets to them (``receive_stamps="user"``, what every
system without ``SO_TIMESTAMPNS`` does) they include the wait.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import udpbeat_server

from udpbeat import _mmsg
from udpbeat._net import enable_receive_timestamps, receive_timestamp
from udpbeat.reflector import ReflectorConfig
from udpbeat.server import SINGLES, BackgroundServer, ServerConfig, wants_kernel_stamps
from udpbeat.wire import text

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux's"
)


@pytest.fixture(autouse=True)
def kernel_stamping_on() -> Iterator[None]:
    """Linux turns arrival stamping on for the whole system when the first socket asks for it,
    from a work queue: until that ran, a datagram is stamped when it is read, not when it came.
    A socket of the test's own keeps it on, and the test starts once a datagram shows it is."""
    if not sys.platform.startswith("linux"):
        yield
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as keeper:
        keeper.bind(("127.0.0.1", 0))
        enable_receive_timestamps(keeper)
        for _ in range(200):
            keeper.sendto(b"x", keeper.getsockname())
            time.sleep(0.002)  # the datagram waits in the queue: its stamp must be older
            _, ancillary, _, _ = keeper.recvmsg(16, 64)
            stamp = receive_timestamp(ancillary)
            if stamp is not None and time.time() - stamp >= 0.001:
                break
        yield


#: How long the reader is held up while requests queue behind it.
HOLD = 0.08
#: Enough requests behind the held one that the batched reader answers some one by one and the
#: rest in a recvmmsg batch (it tries a batch again after SINGLES lone datagrams).
QUEUED = SINGLES + 8


def _time_differences(io: str, stamps: str, host: str = "127.0.0.1") -> tuple[str, list[float]]:
    """Run a server whose reader is held up ``HOLD`` s by the first request, while ``QUEUED``
    more wait; return the server's stamp kind and the time difference of every queued reply."""
    entered = threading.Event()
    background = BackgroundServer(
        host,
        0,
        ReflectorConfig(rate_limit=0, log_events=False),
        server_config=ServerConfig(io=io, receive_stamps=stamps),
    )
    server = background.server
    if io == "batched" and server._mmsg_functions is None:
        pytest.skip("no recvmmsg here")
    real_reflect = server.reflector.reflect

    def held_reflect(data: bytes, source: Any, now: float, wall_time: float) -> Any:
        if not entered.is_set():
            entered.set()
            time.sleep(HOLD)  # the reader is busy: what comes meanwhile waits in the queue
        return real_reflect(data, source, now, wall_time)

    server.reflector.reflect = held_reflect  # type: ignore[method-assign]
    with background, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        address = ("127.0.0.1", background.address[1])
        sock.settimeout(5.0)
        sock.sendto(b"Heartbeat 0 %.6f" % time.time(), address)
        assert entered.wait(5.0)
        for seq in range(1, QUEUED + 1):
            sock.sendto(b"Heartbeat %d %.6f" % (seq, time.time()), address)
        replies = [text.decode_reply(sock.recv(256)) for _ in range(QUEUED + 1)]
    assert sorted(reply.seq for reply in replies) == list(range(QUEUED + 1))
    return server.receive_stamps, [reply.time_difference for reply in replies if reply.seq > 0]


@linux_only
@pytest.mark.parametrize("io", ["portable", "batched"])
def test_queued_requests_get_their_arrival_time_from_the_kernel(io: str) -> None:
    kind, differences = _time_differences(io, "kernel")
    assert kind == "kernel"
    # They arrived within a millisecond of being sent; HOLD later is when they were read.
    assert max(differences) < HOLD / 2, differences
    assert min(differences) >= -0.001, differences


@pytest.mark.parametrize("io", ["portable", "batched"])
def test_by_default_only_the_batched_path_takes_kernel_stamps(io: str) -> None:
    # The portable path keeps recvfrom and the clock (recvmsg cost it a fifth to a third of its
    # replies per second): its queued requests' time differences include their wait.
    kind, differences = _time_differences(io, "auto")
    if io == "portable" or not sys.platform.startswith("linux"):
        assert kind == "user"
        assert max(differences) >= HOLD * 0.9, differences
    else:
        assert kind == "kernel"
        assert max(differences) < HOLD / 2, differences


def test_auto_asks_the_kernel_on_the_batched_path_only() -> None:
    assert wants_kernel_stamps("auto", "batched")
    assert not wants_kernel_stamps("auto", "portable")
    assert wants_kernel_stamps("kernel", "portable") and wants_kernel_stamps("kernel", "batched")
    assert not wants_kernel_stamps("user", "batched") and not wants_kernel_stamps(
        "user", "portable"
    )
    assert ServerConfig().receive_stamps == "auto"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--io", "portable"], "user"),
        (["--io", "portable", "--receive-stamps", "kernel"], "kernel"),
        (["--io", "portable", "--receive-stamps", "user"], "user"),
    ],
)
def test_the_listening_line_says_which_stamps_the_server_takes(
    flags: list[str], expected: str
) -> None:
    if expected == "kernel" and not sys.platform.startswith("linux"):
        expected = "user"
    with udpbeat_server(*flags) as (process, _port):
        listening = json.loads(process.stdout_lines[0])
    assert listening["receive_stamps"] == expected


@pytest.mark.parametrize("io", ["portable", "batched"])
def test_user_stamps_count_the_wait_in_the_queue(io: str) -> None:
    kind, differences = _time_differences(io, "user")
    assert kind == "user"
    assert max(differences) >= HOLD * 0.9, differences


@linux_only
def test_a_wildcard_server_answers_from_the_destination_with_stamps_on() -> None:
    # A wildcard bind sends each reply with its request's destination (IP_PKTINFO); the receive
    # stamp that came before it in the control buffer must not go out with the reply.
    kind, differences = _time_differences("batched", "kernel", host="0.0.0.0")
    assert kind == "kernel"
    assert max(differences) < HOLD / 2, differences


@linux_only
def test_a_batch_has_one_kernel_stamp_per_datagram() -> None:
    functions = _mmsg.load()
    if functions is None:
        pytest.skip("no recvmmsg here")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        assert enable_receive_timestamps(server)
        batch = _mmsg.BatchSocket(server, functions, 97, 8, 64, timestamps=True)
        before = time.time()
        for seq in range(5):
            client.sendto(b"Heartbeat %d 1.0" % seq, server.getsockname())
        after = time.time()
        datagrams, _names = batch.receive()
        assert len(datagrams) == 5
        times = batch.receive_times(fallback=-1.0)
        assert len(times) == 5
        assert times == sorted(times)
        assert all(before - 0.001 <= t <= after + 0.001 for t in times), (before, times, after)


@linux_only
def test_a_batch_without_stamps_gets_the_fallback() -> None:
    functions = _mmsg.load()
    if functions is None:
        pytest.skip("no recvmmsg here")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        batch = _mmsg.BatchSocket(server, functions, 97, 8, 64)
        for seq in range(3):
            client.sendto(b"Heartbeat %d 1.0" % seq, server.getsockname())
        datagrams, _names = batch.receive()
        assert batch.receive_times(fallback=42.0) == [42.0] * len(datagrams)


def test_a_socket_without_kernel_stamps_falls_back_to_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on a system without SO_TIMESTAMPNS: the option is refused, the server reads the clock.
    monkeypatch.setattr("udpbeat.server.enable_receive_timestamps", lambda sock: False)
    kind, differences = _time_differences("auto", "kernel")
    assert kind == "user"
    assert max(differences) >= HOLD * 0.9, differences
