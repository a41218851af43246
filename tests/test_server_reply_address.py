"""A server bound to a wildcard address answers from the address each request was sent to.

A host has many addresses (here: all of 127.0.0.0/8, and ::1). A server bound to ``0.0.0.0`` or
``::`` that answered with a plain ``sendto`` let the kernel pick the reply's source by routing,
127.0.0.1 for a request to 127.1.2.3; a client's connected socket drops such a reply, so every
heartbeat looked lost. The server asks for each datagram's destination (``IP_PKTINFO``,
``IPV6_RECVPKTINFO``) and sends the reply from it, on both receive paths.
"""

from __future__ import annotations

import socket
import sys
import time

import pytest
from helpers import has_ipv6_loopback

from udpbeat import BackgroundServer, ReflectorConfig, ServerConfig, _mmsg
from udpbeat._net import bind_udp
from udpbeat.server import CONTROL_SIZE, ask_destinations

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="destination addresses need Linux IP_PKTINFO"
)
PATHS = [
    pytest.param(
        "batched",
        marks=pytest.mark.skipif(_mmsg.load() is None, reason="no recvmmsg/sendmmsg here"),
    ),
    "portable",
]
IPV6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
#: (address the server binds, address the client sends to): "" is the default bind, dual-stack.
CASES = [
    ("0.0.0.0", "127.1.2.3"),
    ("0.0.0.0", "127.0.0.1"),
    pytest.param("", "127.1.2.3", marks=IPV6, id="dual-stack-127.1.2.3"),
    pytest.param("", "127.0.0.1", marks=IPV6, id="dual-stack-127.0.0.1"),
    pytest.param("", "::1", marks=IPV6, id="dual-stack-::1"),
    pytest.param("::", "::1", marks=IPV6),
]
#: Long enough for a loaded machine; a reply from the wrong address never comes at all.
WAIT = 3.0


def _config() -> ReflectorConfig:
    return ReflectorConfig(rate_limit=0, log_events=False)


def _client(target: str, port: int) -> socket.socket:
    """A socket connected to ``target``: the kernel drops datagrams from any other address."""
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(WAIT)
    sock.connect((target, port))
    return sock


@pytest.fixture(params=PATHS)
def io_path(request: pytest.FixtureRequest) -> ServerConfig:
    return ServerConfig(io=request.param)


def _heartbeat(seq: int) -> bytes:
    return b"Heartbeat %d %.6f" % (seq, time.time())


@pytest.mark.parametrize(("bind", "target"), CASES)
def test_a_lone_request_is_answered_from_the_address_it_was_sent_to(
    io_path: ServerConfig, bind: str, target: str
) -> None:
    with BackgroundServer(bind, 0, _config(), server_config=io_path) as server:
        port = server.address[1]
        with _client(target, port) as client:
            for seq in range(3):
                client.send(_heartbeat(seq))
                reply, source = client.recvfrom(2048)
                assert reply.startswith(b"Seq: %d, " % seq)
                assert source[0] == target
        assert server.server.replies_from_destination


@pytest.mark.parametrize("bind", ["0.0.0.0", pytest.param("", marks=IPV6, id="dual-stack")])
def test_bursts_to_several_addresses_are_each_answered_from_their_own(
    io_path: ServerConfig, bind: str
) -> None:
    # Bursts fill recvmmsg batches with requests to different destinations, some malformed (no
    # reply: the batch's replies are then sent to a subset of its sources, which must keep
    # their own destinations), from several clients.
    targets = ["127.0.0.1", "127.1.2.3", "127.4.5.6"]
    if bind == "":
        targets.append("::1")
    with BackgroundServer(bind, 0, _config(), server_config=io_path) as server:
        port = server.address[1]
        clients = [_client(target, port) for target in targets]
        try:
            for burst in range(4):
                expected: list[list[bytes]] = [[] for _ in clients]
                for position in range(30):
                    for index, client in enumerate(clients):
                        seq = b"%d%d%02d" % (index, burst, position)
                        if position % 5 == 4:
                            client.send(b"Heartbeat x " + seq)
                        else:
                            client.send(b"Heartbeat %s %.6f" % (seq, time.time()))
                            expected[index].append(seq)
                for index, client in enumerate(clients):
                    for seq in expected[index]:
                        reply, source = client.recvfrom(2048)
                        assert reply.startswith(b"Seq: %s, " % seq)
                        assert source[0] == targets[index]
        finally:
            for client in clients:
                client.close()
        counters = server.stop()
    assert counters.replied == 4 * 24 * len(targets)


@pytest.mark.parametrize("bind", ["127.0.0.1", pytest.param("::1", marks=IPV6)])
def test_a_specific_address_needs_no_destination_lookup(io_path: ServerConfig, bind: str) -> None:
    # The socket's own address is the only one it can answer from: nothing to ask the kernel.
    with BackgroundServer(bind, 0, _config(), server_config=io_path) as server:
        assert not server.server.replies_from_destination
        with _client(bind, server.address[1]) as client:
            client.send(_heartbeat(1))
            assert client.recv(2048).startswith(b"Seq: 1, ")


@pytest.mark.skipif(_mmsg.load() is None, reason="no recvmmsg/sendmmsg here")
@pytest.mark.parametrize(
    ("bind", "target"),
    [
        ("0.0.0.0", "127.1.2.3"),
        pytest.param("", "127.1.2.3", marks=IPV6, id="dual-stack-127.1.2.3"),
        pytest.param("", "::1", marks=IPV6, id="dual-stack-::1"),
    ],
)
def test_the_batch_reads_the_control_messages_recvmsg_reads(bind: str, target: str) -> None:
    functions = _mmsg.load()
    assert functions is not None
    with bind_udp(bind, 0) as sock:
        sock.setblocking(True)
        assert ask_destinations(sock)
        batch = _mmsg.BatchSocket(sock, functions, 97, 8, 64, CONTROL_SIZE)
        with _client(target, sock.getsockname()[1]) as client:
            for _ in range(2):  # the second time after the capacity was set back
                client.send(b"one")
                datagrams, _ = batch.receive()
                client.send(b"two")
                _, expected, _, _ = sock.recvmsg(97, CONTROL_SIZE)
                assert datagrams == [b"one"]
                assert batch.ancillary(0) == expected != []
                assert {level for level, _, _ in expected} >= {
                    socket.IPPROTO_IPV6 if ":" in target else socket.IPPROTO_IP
                }
