"""The STAMP reflector: the pure decisions (modes, sizes, TTL, HMAC, counters) and the server
around it on loopback (both receive paths, the TTL read from the kernel, replies leaving with
TTL 255)."""

from __future__ import annotations

import asyncio
import random
import socket
import sys
import time
from pathlib import Path

import pytest
from helpers import has_ipv6_loopback
from hypothesis import given, settings
from hypothesis import strategies as st

from udpbeat import _mmsg
from udpbeat._net import IP_RECVTTL, SOL_IP, take_ttl
from udpbeat.detector import State
from udpbeat.monitor.config import parse_config
from udpbeat.monitor.fleet import Fleet
from udpbeat.monitor.shell import Monitor
from udpbeat.reflector import ReflectorConfig
from udpbeat.server import BackgroundServer, ServerConfig
from udpbeat.stamp_reflector import StampOptions, StampReflector, stamp_config
from udpbeat.wire import stamp
from udpbeat.wire.stamp import ErrorEstimate, SenderPacket, Tlv

SOURCE = ("192.0.2.7", 40000)
T2 = 1_764_000_000.5
T3 = 1_764_000_000.75
WAIT = 5.0


def reflector(**options: object) -> StampReflector:
    config = stamp_config(rate_limit=0, log_events=True)
    return StampReflector(config, StampOptions(**options), clock=lambda: T3)  # type: ignore[arg-type]


def request(seq: int = 1, ssid: int = 0, extra: bytes = b"", key: bytes | None = None) -> bytes:
    packet = SenderPacket(seq, stamp.from_unix(T2 - 0.01), ErrorEstimate(scale=3), ssid, extra)
    return stamp.encode_sender(packet, key)


def test_a_stateless_reply_echoes_the_sender_and_carries_t2_t3_and_ttl() -> None:
    reply = reflector().reflect(request(41, ssid=5), SOURCE, 0.0, T2, (57,))
    assert reply is not None and len(reply) == stamp.BASE_SIZE
    packet = stamp.decode_reflector(reply)
    assert (packet.seq, packet.sender_seq, packet.ssid, packet.sender_ttl) == (41, 41, 5, 57)
    assert packet.sender_error_estimate == ErrorEstimate(scale=3)
    assert packet.sender_timestamp == stamp.from_unix(T2 - 0.01)
    stamps = packet.timestamps()
    assert stamps.received == pytest.approx(T2, abs=1e-9)
    assert stamps.reflected == pytest.approx(T3, abs=1e-9)


def test_stateful_numbers_each_session_from_zero() -> None:
    stateful = reflector(mode="stateful")
    seqs = []
    for sender_seq, ssid in ((100, 1), (101, 1), (500, 2), (103, 1)):
        reply = stateful.reflect(request(sender_seq, ssid), SOURCE, 0.0, T2)
        assert reply is not None
        seqs.append(stamp.decode_reflector(reply).seq)
    assert seqs == [0, 1, 0, 2]
    other_port = stateful.reflect(request(7, 1), (SOURCE[0], 40001), 0.0, T2)
    assert other_port is not None and stamp.decode_reflector(other_port).seq == 0


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_replies_are_exactly_as_long_as_requests(extra: bytes) -> None:
    reply = reflector().reflect(request(extra=extra), SOURCE, 0.0, T2)
    assert reply is not None and len(reply) == stamp.BASE_SIZE + len(extra)


def test_tlvs_come_back_unrecognized_ones_flagged() -> None:
    extra = stamp.padding_tlv(8) + Tlv(99, b"xyz").encode()
    reply = reflector().reflect(request(extra=extra), SOURCE, 0.0, T2)
    assert reply is not None
    tlvs = stamp.parse_tlvs(stamp.decode_reflector(reply).extra)
    assert tlvs == [Tlv(1, bytes(4)), Tlv(99, b"xyz", stamp.TLV_FLAG_UNRECOGNIZED)]


def test_authenticated_mode_answers_a_good_hmac_and_refuses_a_bad_one() -> None:
    key = b"shared secret"
    authenticated = reflector(key=key)
    reply = authenticated.reflect(request(9, key=key), SOURCE, 0.0, T2)
    assert reply is not None and len(reply) == stamp.AUTHENTICATED_SIZE
    assert stamp.decode_reflector(reply, key).sender_seq == 9
    assert authenticated.reflect(request(9, key=b"wrong"), SOURCE, 0.0, T2) is None
    assert authenticated.reflect(request(9), SOURCE, 0.0, T2) is None  # 44 octets: too short
    counters = authenticated.counters
    assert counters.denied == {"bad-hmac": 1}
    assert counters.malformed == {"short-packet": 1}
    assert counters.replied == 1 and counters.unaccounted == 0


def test_defences_and_counters_as_the_text_reflector() -> None:
    config = stamp_config(rate_limit=1, burst=2, max_size=100, log_events=False)
    limited = StampReflector(config, clock=None)
    outcomes = limited.reflect_batch(
        [request(1), bytes(10), request(2), request(3), bytes(101)], SOURCE, 0.0, [T2] * 5
    )
    # As the text reflector: the size first, then the rate limit, and only then the parser, so
    # the short datagram spends the second token and the next two requests find none.
    assert [reply is not None for reply in outcomes] == [True, False, False, False, False]
    counters = limited.counters
    assert counters.malformed == {"short-packet": 1, "oversize": 1}
    assert counters.rate_limited == {"source": 2}
    assert counters.unaccounted == 0
    assert limited.reflect(request(), ("192.0.2.7", 53), 10.0, T2) is None
    assert limited.counters.denied == {"privileged-port": 1}


def test_each_request_of_a_batch_carries_its_own_receive_time_as_t2() -> None:
    # The batched path hands one kernel receive stamp per datagram: T2 is each request's own.
    times = [T2, T2 + 0.25, T2 + 0.5]
    replies = reflector().reflect_batch([request(seq) for seq in (1, 2, 3)], SOURCE, 0.0, times)
    received = [stamp.to_unix(stamp.decode_reflector(r).receive_timestamp) for r in replies if r]
    assert received == pytest.approx(times, abs=1e-6)
    with pytest.raises(ValueError):
        reflector().reflect_batch([request(1), request(2)], SOURCE, 0.0, [T2])


@given(st.lists(st.binary(max_size=120), max_size=20))
def test_fuzz_counters_reconcile(datagrams: list[bytes]) -> None:
    fuzzed = reflector(mode="stateful")
    replies = fuzzed.reflect_batch(datagrams, SOURCE, 0.0, [T2] * len(datagrams))
    assert fuzzed.counters.unaccounted == 0
    for data, reply in zip(datagrams, replies, strict=True):
        assert reply is None or len(reply) == len(data)


def test_take_ttl_reads_and_rewrites_the_ttl() -> None:
    ttl, reply = take_ttl([(0, 2, (61).to_bytes(4, sys.byteorder))])
    assert ttl == 61 and reply == [(0, 2, (255).to_bytes(4, sys.byteorder))]
    assert take_ttl([]) == (None, [])


# --- the server on loopback ---------------------------------------------------------------------

PATHS = [
    pytest.param(
        "batched",
        marks=pytest.mark.skipif(_mmsg.load() is None, reason="no recvmmsg/sendmmsg here"),
    ),
    "portable",
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVTTL is Linux's")
@pytest.mark.parametrize("io", PATHS)
@pytest.mark.parametrize("host", ["127.0.0.1", ""])
def test_server_answers_stamp_with_the_ttl_and_replies_leave_with_255(io: str, host: str) -> None:
    config = stamp_config(rate_limit=0, log_events=False)
    options = StampOptions(mode="stateful")
    background = BackgroundServer(host, 0, config, server_config=ServerConfig(io=io), stamp=options)
    with background, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        assert background.server.receives_ttl
        client.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 33)
        client.setsockopt(SOL_IP, IP_RECVTTL, 1)
        client.settimeout(WAIT)
        port = background.address[1]
        burst = [request(seq, ssid=4, extra=stamp.padding_tlv(20)) for seq in range(10, 30)]
        before = time.time()
        for data in burst:  # a burst, so that the batched path takes several per call
            client.sendto(data, ("127.0.0.1", port))
        replies = []
        for _ in burst:
            data, ancillary, _, _ = client.recvmsg(2048, 256)
            replies.append((stamp.decode_reflector(data), len(data), take_ttl(ancillary)[0]))
        after = time.time()
    assert sorted(packet.sender_seq for packet, _, _ in replies) == list(range(10, 30))
    assert sorted(packet.seq for packet, _, _ in replies) == list(range(20))
    for packet, size, reply_ttl in replies:
        assert size == 64 and packet.ssid == 4
        assert packet.sender_ttl == 33
        assert reply_ttl == 255
        stamps = packet.timestamps()
        assert before - 0.001 <= stamps.received <= stamps.reflected <= after + 0.001
    assert background.counters.replied == 20


def test_the_monitor_probes_a_stamp_target_beside_a_text_one(tmp_path: Path) -> None:
    """``protocol = "stamp"`` per target: one monitor, a STAMP reflector and a text one."""
    key_file = tmp_path / "stamp.key"
    key_file.write_bytes(b"monitor key\n")
    stamp_server = BackgroundServer(
        "127.0.0.1", 0, stamp_config(rate_limit=0, log_events=False),
        stamp=StampOptions(mode="stateful", key=b"monitor key"),
    ).start()  # fmt: skip
    text_server = BackgroundServer("127.0.0.1", 0, ReflectorConfig(rate_limit=0)).start()
    config = parse_config(
        {
            "defaults": {"interval": 0.1, "timeout": 0.5},
            "targets": [
                {
                    "name": "router",
                    "host": "127.0.0.1",
                    "port": stamp_server.address[1],
                    "protocol": "stamp",
                    "ssid": 12,
                    "stamp_key_file": str(key_file),
                },
                {"name": "app", "host": "127.0.0.1", "port": text_server.address[1]},
            ],
        },
        "test",
    )
    assert (
        parse_config({"targets": [{"name": "r", "host": "192.0.2.1", "protocol": "stamp"}]}, "test")
        .targets[0]
        .port
        == stamp.DEFAULT_PORT
    )

    async def scenario() -> None:
        monitor = Monitor(Fleet())
        await monitor.apply(config)
        task = asyncio.create_task(monitor.run())
        try:
            deadline = time.monotonic() + WAIT
            while not all(t.state is State.UP for t in monitor.fleet):
                assert time.monotonic() < deadline, "targets not UP in time"
                await asyncio.sleep(0.05)
        finally:
            monitor.stop()
            await asyncio.wait_for(task, WAIT)
            monitor.close()

    try:
        asyncio.run(scenario())
    finally:
        stamp_counters = stamp_server.stop()
        text_counters = text_server.stop()
    assert stamp_counters.replied >= 1 and stamp_counters.denied_total == 0
    assert stamp_counters.malformed_total == 0
    assert text_counters.replied >= 1


@pytest.mark.parametrize("io", PATHS)
def test_garbage_between_requests_is_counted_and_requests_still_answered(io: str) -> None:
    """A short fuzz on loopback: random datagrams between valid requests; the server answers
    every valid one and its counters add up exactly."""
    rng = random.Random(12)
    config = stamp_config(rate_limit=0, log_events=False)
    background = BackgroundServer(
        "127.0.0.1", 0, config, server_config=ServerConfig(io=io), stamp=StampOptions()
    )
    with background, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        address = ("127.0.0.1", background.address[1])
        for round_number in range(20):
            for _ in range(20):
                client.sendto(rng.randbytes(rng.randrange(0, 60)), address)
            client.sendto(request(round_number), address)
            while True:  # garbage of 44 octets or more is a valid request too: skip its replies
                reply = stamp.decode_reflector(client.recv(2048))
                if reply.sender_seq == round_number and reply.ssid == 0:
                    break
    counters = background.counters
    assert counters.unaccounted == 0
    assert counters.received == 20 * 21
    assert counters.replied + counters.malformed_total == counters.received
    assert set(counters.malformed) <= {"short-packet"}


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IPV6_RECVHOPLIMIT is Linux's")
@pytest.mark.parametrize("io", PATHS)
@pytest.mark.parametrize("host", ["::1", ""])
def test_over_ipv6_the_hop_limit_is_the_ttl(io: str, host: str) -> None:
    config = stamp_config(rate_limit=0, log_events=False)
    background = BackgroundServer(
        host, 0, config, server_config=ServerConfig(io=io), stamp=StampOptions()
    )
    with background, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
        client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 21)
        client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        client.settimeout(WAIT)
        client.sendto(request(5), ("::1", background.address[1]))
        data, ancillary, _, _ = client.recvmsg(2048, 256)
    assert stamp.decode_reflector(data).sender_ttl == 21
    assert take_ttl(ancillary)[0] == 255


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVTTL is Linux's")
@pytest.mark.parametrize("io", PATHS)
def test_ipv4_and_ipv6_requests_mixed_each_get_their_own_ttl(io: str) -> None:
    """On a dual-stack socket IPv4 and IPv6 requests come with different control messages,
    so a batch of both is read slot by slot: each still gets its own TTL."""
    config = stamp_config(rate_limit=0, log_events=False)
    background = BackgroundServer(
        "", 0, config, server_config=ServerConfig(io=io), stamp=StampOptions()
    )
    with (
        background,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client4,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client6,
    ):
        port = background.address[1]
        client4.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 33)
        client6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 21)
        for seq in range(30):
            client4.sendto(request(seq), ("127.0.0.1", port))
            client6.sendto(request(seq), ("::1", port))
        for client, ttl in ((client4, 33), (client6, 21)):
            client.settimeout(WAIT)
            replies = [stamp.decode_reflector(client.recv(2048)) for _ in range(30)]
            assert sorted(reply.sender_seq for reply in replies) == list(range(30))
            assert {reply.sender_ttl for reply in replies} == {ttl}
