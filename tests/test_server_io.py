"""The server's two receive paths: batched (Linux ``recvmmsg``/``sendmmsg``) and portable.

Both must answer exactly alike. These tests run a server in this process on loopback and send
bursts, so that the batched path really receives several datagrams per call (and has to leave
out the ones it does not answer); ``tests/test_server.py`` runs the CLI against both paths.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import has_ipv6_loopback

from udpbeat import BackgroundServer, ReflectorConfig, ServerConfig, _mmsg
from udpbeat import server as server_module
from udpbeat.cadence import ARRIVALS
from udpbeat.reflector import Reflected

HAS_MMSG = _mmsg.load() is not None
PATHS = [
    pytest.param(
        "batched", marks=pytest.mark.skipif(not HAS_MMSG, reason="no recvmmsg/sendmmsg here")
    ),
    "portable",
]
REPLY = re.compile(rb"Seq: ([0-9]+), Time Difference: -?[0-9]+\.[0-9]{6} seconds")
WAIT = 5.0


@pytest.fixture(params=PATHS)
def io_path(request: pytest.FixtureRequest) -> ServerConfig:
    return ServerConfig(io=request.param)


def _clients(count: int, host: str = "127.0.0.1") -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        sock.settimeout(WAIT)
        yield sock


def _config(**changes: object) -> ReflectorConfig:
    settings: dict[str, object] = {"rate_limit": 0, "log_events": True, **changes}
    return ReflectorConfig(**settings)  # type: ignore[arg-type]


def test_the_path_asked_for_is_the_path_used(io_path: ServerConfig) -> None:
    with BackgroundServer("127.0.0.1", 0, _config(), server_config=io_path) as background:
        assert background.server.io == io_path.io


def test_auto_is_batched_where_recvmmsg_exists() -> None:
    expected = "batched" if HAS_MMSG else "portable"
    assert server_module.choose_io("auto")[0] == expected
    assert server_module.choose_io("portable") == ("portable", None)


def test_bursts_from_several_sources_are_answered_exactly(io_path: ServerConfig) -> None:
    # Each client sends a burst without waiting, valid requests (sequence numbers of different
    # widths, so replies differ in length) interleaved with malformed ones; every valid request
    # must be answered, to its own sender, in order, and nothing else.
    records: list[Reflected] = []
    clients = list(_clients(3))
    client_addresses = {tuple(client.getsockname()) for client in clients}
    rounds, per_burst = 4, 40
    try:
        with BackgroundServer(
            "127.0.0.1", 0, _config(), on_records=records.extend, server_config=io_path
        ) as server:
            address = server.address
            expected: dict[int, list[bytes]] = {index: [] for index in range(len(clients))}
            for burst in range(rounds):
                sent: dict[int, list[bytes]] = {index: [] for index in range(len(clients))}
                for position in range(per_burst):
                    for index, client in enumerate(clients):
                        seq = f"{index}{burst}{position:0{1 + position % 3}d}".encode()
                        # Malformed ones never last: the reply to a burst's last request then
                        # says the reader has taken every datagram before it (one queue, read in
                        # order), so the counters below are complete when the server stops.
                        if position % 4 == 1:
                            client.sendto(b"Heartbeat x " + seq, address)
                        else:
                            client.sendto(b"Heartbeat %s %.6f" % (seq, time.time()), address)
                            sent[index].append(seq)
                for index, client in enumerate(clients):
                    for seq in sent[index]:
                        match = REPLY.fullmatch(client.recv(2048))
                        assert match is not None and match.group(1) == seq
                    expected[index].extend(sent[index])
            counters = server.stop()
        for client in clients:
            client.settimeout(0.05)
            with pytest.raises(TimeoutError):
                client.recv(2048)  # nothing more: no reply to a malformed request
    finally:
        for client in clients:
            client.close()
    valid = sum(len(seqs) for seqs in expected.values())
    total = rounds * per_burst * len(clients)
    assert counters.received == total
    assert counters.replied == valid
    assert counters.malformed == {"bad-sequence": total - valid}
    sources = {record.source for record in records if record.outcome == "replied"}
    assert sources == client_addresses


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_sources_are_what_recvfrom_gives(io_path: ServerConfig) -> None:
    records: list[Reflected] = []
    with (
        BackgroundServer(
            "::1", 0, _config(), on_records=records.extend, server_config=io_path
        ) as server,
        next(_clients(1, "::1")) as client,
    ):
        client.sendto(b"Heartbeat 7 %.6f" % time.time(), server.address)
        assert client.recv(2048).startswith(b"Seq: 7, ")
        server.stop()
        assert [record.source for record in records] == [tuple(client.getsockname())]


def test_sources_are_answered_after_the_source_cache_is_cleared(
    io_path: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "SOURCE_CACHE", 2)
    clients = list(_clients(5))
    try:
        with BackgroundServer("127.0.0.1", 0, _config(), server_config=io_path) as server:
            for round_number in range(3):
                for index, client in enumerate(clients):
                    seq = b"%d%d" % (round_number, index)
                    client.sendto(b"Heartbeat %s %.6f" % (seq, time.time()), server.address)
                    assert client.recv(2048).startswith(b"Seq: %s, " % seq)
            assert server.stop().replied == 15
    finally:
        for client in clients:
            client.close()


@pytest.mark.skipif(not HAS_MMSG, reason="no recvmmsg/sendmmsg here")
def test_raw_socket_addresses_decode_as_recvfrom_returns_them() -> None:
    family4 = socket.AF_INET.to_bytes(2, sys.byteorder)
    raw4 = family4 + (40000).to_bytes(2, "big") + socket.inet_aton("192.0.2.7") + bytes(8)
    assert _mmsg.decode_address(socket.AF_INET, raw4) == ("192.0.2.7", 40000)
    family6 = socket.AF_INET6.to_bytes(2, sys.byteorder)
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.7")
    raw6 = family6 + (53).to_bytes(2, "big") + (5).to_bytes(4, "big") + mapped + bytes(4)
    assert _mmsg.decode_address(socket.AF_INET6, raw6) == ("::ffff:192.0.2.7", 53, 5, 0)
    link_local = socket.inet_pton(socket.AF_INET6, "fe80::1")
    scope = socket.if_nametoindex("lo")
    raw_scoped = (
        family6 + (9).to_bytes(2, "big") + bytes(4) + link_local + scope.to_bytes(4, sys.byteorder)
    )
    assert _mmsg.decode_address(socket.AF_INET6, raw_scoped) == ("fe80::1%lo", 9, 0, scope)


def test_a_busy_polling_reader_answers_and_stops_promptly() -> None:
    # A spin of a whole second: every lone request after the first is read by the spinning
    # loop, and stop() must still wake the reader at once rather than after the spin.
    spinning = ServerConfig(busy_poll_us=1_000_000)
    with (
        BackgroundServer("127.0.0.1", 0, _config(), server_config=spinning) as server,
        next(_clients(1)) as client,
    ):
        assert server.server.busy_poll == 1.0
        for seq in range(20):
            client.sendto(b"Heartbeat %d %.6f" % (seq, time.time()), server.address)
            assert client.recv(2048).startswith(b"Seq: %d, " % seq)
        started = time.monotonic()
        counters = server.stop()
        stopped_in = time.monotonic() - started
    assert counters.received == counters.replied == 20
    assert stopped_in < server_module.READER_JOIN_TIMEOUT / 2


def test_busy_polling_follows_the_wait_and_retries_once_per_cycle() -> None:
    spin, cycle = 50e-6, server_module.SINGLES
    assert all(server_module.should_spin(20e-6, spin, left) for left in range(cycle))
    # A wait beyond the spin (as seen after blocking, wake-up included): no spin, but for one
    # trial per cycle of lone requests, so a client just beyond the spin is not locked out.
    spins = [server_module.should_spin(80e-6, spin, left) for left in range(cycle)]
    assert spins.count(True) == 1
    # Spinning turned off is off for every gap.
    assert not any(server_module.should_spin(0.0, 0.0, left) for left in range(cycle))


@pytest.mark.skipif(not HAS_MMSG, reason="no recvmmsg/sendmmsg here")
@pytest.mark.parametrize("share", [0.5, 0.0])
def test_the_reader_wakes_ahead_of_steady_heartbeats_only_when_asked(share: float) -> None:
    # Lone requests every 20 ms: after cadence.ARRIVALS of them, the reader knows their period
    # and wakes ahead of each (windows up to half the period at share 0.5, wide enough for a
    # loaded machine's jitter); with share 0 it always blocks. Every request is answered.
    config = ServerConfig(awake_share=share)
    count = ARRIVALS + 48
    with (
        BackgroundServer("127.0.0.1", 0, _config(), server_config=config) as server,
        next(_clients(1)) as client,
    ):
        due = time.monotonic()
        for seq in range(count):
            due += 0.02
            time.sleep(max(0.0, due - time.monotonic()))
            client.sendto(b"Heartbeat %d %.6f" % (seq, time.time()), server.address)
            assert client.recv(2048).startswith(b"Seq: %d, " % seq)
        sockets = server.server.socket_counters
        counters = server.stop()
    assert counters.received == counters.replied == count
    if share:
        # Whether a request then comes while the reader polls depends on this machine's timer
        # and load (benchmarks/turnaround.py measures it); that it woke for them does not.
        assert sockets.awake_windows > 0 and sockets.caught_awake <= sockets.awake_windows
    else:
        assert (sockets.awake_windows, sockets.caught_awake) == (0, 0)


def test_replies_of_equal_and_of_mixed_lengths_in_turn(io_path: ServerConfig) -> None:
    # The batched path lays a batch of equal-length replies out back to back and a mixed batch
    # in fixed slots; switching between the two must not garble or misdirect any reply.
    bursts = [
        [b"%06d" % seq for seq in range(50)],
        [b"%0*d" % (1 + seq % 5, seq) for seq in range(50)],
        [b"%09d" % seq for seq in range(50)],
        [b"%06d" % seq for seq in range(50)],
    ]
    with (
        BackgroundServer("127.0.0.1", 0, _config(), server_config=io_path) as server,
        next(_clients(1)) as client,
    ):
        for burst in bursts:
            for seq in burst:
                client.sendto(b"Heartbeat %s %.6f" % (seq, time.time()), server.address)
            for seq in burst:
                match = REPLY.fullmatch(client.recv(2048))
                assert match is not None and match.group(1) == seq
        assert server.stop().replied == sum(map(len, bursts))


@pytest.mark.parametrize("max_size", [2000, 60000])
def test_a_large_max_size_reads_long_datagrams_whole(io_path: ServerConfig, max_size: int) -> None:
    # Slots this large are copied out datagram by datagram, and fewer fit in a batch. The log
    # says what was refused: a datagram of max_size bytes arrives whole (and the codec refuses it
    # with its length), one byte more is cut to max_size + 1 and refused by the size check, which
    # cannot know how long it was and says so.
    records: list[Reflected] = []
    config = _config(max_size=max_size)
    with BackgroundServer(
        "127.0.0.1", 0, config, on_records=records.extend, server_config=io_path
    ) as server:
        with next(_clients(1)) as client:
            for round_number in range(3):
                client.sendto(b"x" * max_size, server.address)  # as long as allowed
                client.sendto(b"x" * (max_size + 1), server.address)  # one byte too long
                for seq in range(20):
                    request = b"Heartbeat %d%02d %.6f" % (round_number, seq, time.time())
                    client.sendto(request, server.address)
                for seq in range(20):
                    assert client.recv(2048).startswith(b"Seq: %d%02d, " % (round_number, seq))
        counters = server.stop()
    assert counters.replied == 60
    assert counters.malformed == {"oversize": 6}
    details = [record.detail for record in records if record.outcome == "malformed"]
    assert (
        details
        == [
            f"oversize: request of {max_size} bytes is longer than 96",
            f"oversize: longer than {max_size} bytes",
        ]
        * 3
    )
