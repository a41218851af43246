"""The prober's I/O shell: errors surface, sequence numbers are unguessable, ICMP is checked.

Real sockets on loopback, short runs; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest

from udpbeat import BackgroundServer, ProbeConfig, ReflectorConfig, probe, probe_sync
from udpbeat.detector import AdaptiveDetector, State
from udpbeat.errors import ConfigError
from udpbeat.events import Event, HeartbeatSent
from udpbeat.session import ProbeSession
from udpbeat.wire import text

#: Longest a run here may take before the test calls it a hang.
BOUND = 10.0


class Boom(RuntimeError):
    pass


class FailingOnReply(AdaptiveDetector):
    def on_reply(self, seq, rtt, now):  # type: ignore[no-untyped-def]
        raise Boom("detector failed on a reply")


class FailingOnSecondSend(AdaptiveDetector):
    """Raises from the timer's path: sending the second heartbeat."""

    def on_sent(self, seq: int, now: float, *, probe: bool) -> None:
        super().on_sent(seq, now, probe=probe)
        if not hasattr(self, "_sent_once"):
            self._sent_once = True
            return
        raise Boom("detector failed on a send")


@pytest.fixture
def reflector():  # type: ignore[no-untyped-def]
    with BackgroundServer("127.0.0.1", 0, ReflectorConfig(rate_limit=0, log_events=False)) as s:
        yield s


@pytest.mark.parametrize("detector_class", [FailingOnReply, FailingOnSecondSend])
def test_an_exception_inside_the_session_reaches_whoever_awaits_probe(
    reflector: BackgroundServer, detector_class: type[AdaptiveDetector]
) -> None:
    host, port = reflector.address

    async def run() -> None:
        await asyncio.wait_for(
            probe(host, port, count=5, interval=0.05, detector=detector_class(1.0)), BOUND
        )

    with pytest.raises(Boom):
        asyncio.run(run())


def test_an_exception_in_on_event_ends_the_run(reflector: BackgroundServer) -> None:
    host, port = reflector.address

    def on_event(event: Event) -> None:
        if isinstance(event, HeartbeatSent) and event.seq > event_first[0]:
            raise Boom("printing failed")

    event_first: list[int] = []

    async def run() -> None:
        await asyncio.wait_for(
            probe(
                host,
                port,
                count=5,
                interval=0.05,
                on_event=on_event,
                on_start=lambda prober: event_first.append(prober.session.first_seq),
            ),
            BOUND,
        )

    with pytest.raises(Boom):
        asyncio.run(run())


def test_first_sequence_numbers_are_random_and_large() -> None:
    firsts = {ProbeSession(ProbeConfig(), 0.0).first_seq for _ in range(20)}
    assert len(firsts) == 20
    assert all(1 <= seq <= 2**62 for seq in firsts)
    # Guessing one is as hard as guessing 62 random bits: none is small.
    assert min(firsts) > 2**40


def test_the_wire_carries_the_random_sequence_numbers(reflector: BackgroundServer) -> None:
    host, port = reflector.address
    sent: list[int] = []
    report = probe_sync(
        host,
        port,
        count=3,
        interval=0.02,
        on_event=lambda e: sent.append(e.seq) if isinstance(e, HeartbeatSent) else None,
    )
    assert report.received == 3
    assert sent == [report.first_seq, report.first_seq + 1, report.first_seq + 2]
    assert report.to_dict()["first_seq"] == report.first_seq


def test_a_configured_first_sequence_number_is_kept() -> None:
    session = ProbeSession(ProbeConfig(first_seq=1), 0.0)
    session.handle_timer(0.0, 1.7e9)
    (datagram,) = session.datagrams_to_send()
    assert text.decode_request(datagram).seq == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"timeout": "1"},
        {"interval": "0.5"},
        {"count": 2.5},
        {"first_seq": 1.5},
        {"first_seq": 2**63},
        {"watch": "yes"},
        {"detector": "nope"},
        {"detector": 3},
        {"detector_options": {"bogus": 1}},
        {"detector_options": [("false_alarm", 0.1)]},
        {"detector": "adaptive", "detector_options": {"false_alarm": 2.0}},
        {"probes_per_interval": -1},
    ],
)
def test_every_bad_probe_setting_is_a_config_error(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ProbeConfig(**settings)  # type: ignore[arg-type]


def test_probe_rejects_an_unknown_setting_with_a_config_error() -> None:
    with pytest.raises(ConfigError, match="colour"):
        probe_sync("127.0.0.1", 9, colour="red")


def test_probe_by_detector_name_builds_what_the_cli_builds(reflector: BackgroundServer) -> None:
    from click.testing import CliRunner

    from udpbeat.cli import cli

    host, port = reflector.address
    report = probe_sync(host, port, count=2, interval=0.05, detector="phi")
    result = CliRunner().invoke(
        cli,
        ["client", host, "--port", str(port), "-c2", "-i0.05", "--detector", "phi", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.splitlines()[-1])
    assert summary["detector"] == report.detector
    assert report.detector["name"] == "phi"
    assert report.detector["first_heartbeat_estimate"] == 0.05


# --- ICMP errors: only the target's count ------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _port_unreachable(
    icmp_source: str, client: tuple[str, int], target: tuple[str, int], payload: bytes
) -> bytes:
    """An IPv4 packet: ICMP port unreachable from ``icmp_source`` about a datagram of ours."""
    udp = struct.pack("!HHHH", client[1], target[1], 8 + len(payload), 0) + payload
    quoted_ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(client[0]),
        socket.inet_aton(target[0]),
    )
    quoted_ip = quoted_ip[:10] + struct.pack("!H", _checksum(quoted_ip)) + quoted_ip[12:]
    body = quoted_ip + udp
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + body
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        0,
        0,
        64,
        socket.IPPROTO_ICMP,
        0,
        socket.inet_aton(icmp_source),
        socket.inet_aton(client[0]),
    )
    return header + icmp


def _raw_socket() -> socket.socket:
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        pytest.skip("forging ICMP needs a raw socket (root or CAP_NET_RAW)")
    return raw


async def _probe_while_forging(
    icmp_source: str, target: tuple[str, int], *, count: int
) -> tuple[object, list[Event]]:
    """Probe ``target`` while forging a port unreachable from ``icmp_source`` every 20 ms."""
    raw = _raw_socket()
    events: list[Event] = []
    probers = []
    stop = asyncio.Event()

    async def forge() -> None:
        while not probers:
            await asyncio.sleep(0.001)
        prober = probers[0]
        while not stop.is_set():
            sock = prober._sock
            pending = prober.session._pending
            if sock is not None:
                # Quote a heartbeat that is really waiting: the forger knows it (the worst case).
                seq = max(pending) if pending else prober.session.first_seq
                quoted = text.encode_request(text.Heartbeat(seq, 1.7e9))
                client = sock.getsockname()[:2]
                raw.sendto(_port_unreachable(icmp_source, client, target, quoted), (client[0], 0))
            await asyncio.sleep(0.02)

    forger = asyncio.create_task(forge())
    try:
        report = await asyncio.wait_for(
            probe(
                *target,
                count=count,
                interval=0.05,
                on_event=events.append,
                on_start=probers.append,
            ),
            BOUND,
        )
    finally:
        stop.set()
        await forger
        raw.close()
    return report, events


def test_an_icmp_error_forged_from_another_address_is_counted_and_ignored(
    reflector: BackgroundServer,
) -> None:
    target = reflector.address
    report, _ = asyncio.run(_probe_while_forging("127.0.0.99", target, count=20))
    assert report.refused == 0  # type: ignore[attr-defined]
    assert report.state is State.UP  # type: ignore[attr-defined]
    assert [t.new for t in report.transitions] == [State.UP]  # type: ignore[attr-defined]
    assert report.socket_errors.get("icmp-elsewhere", 0) >= 5  # type: ignore[attr-defined]


def test_an_icmp_error_from_the_target_itself_is_a_refusal() -> None:
    # The control for the test above: the same forged packet, from the target's address, is
    # taken as a refusal, so the forged packets do reach the prober's socket.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound but never read: no reply, no kernel ICMP
        target = silent.getsockname()
        report, _ = asyncio.run(_probe_while_forging(target[0], target, count=5))
    assert report.refused >= 1  # type: ignore[attr-defined]
    assert report.socket_errors.get("icmp-elsewhere", 0) == 0  # type: ignore[attr-defined]


def test_an_icmp_error_quoting_no_waiting_heartbeat_is_ignored(
    reflector: BackgroundServer,
) -> None:
    # Even from the target's own address, a forger must also guess a sequence number that is
    # waiting for its reply: the quoted one here never was.
    target = reflector.address
    raw = _raw_socket()

    async def run() -> object:
        probers: list[object] = []
        task = asyncio.ensure_future(
            probe(*target, count=20, interval=0.05, on_start=probers.append)
        )
        while not probers or probers[0]._sock is None:  # type: ignore[attr-defined]
            await asyncio.sleep(0.001)
        client = probers[0]._sock.getsockname()[:2]  # type: ignore[attr-defined]
        quoted = text.encode_request(text.Heartbeat(12345, 1.7e9))
        while not task.done():
            raw.sendto(_port_unreachable(target[0], client, target, quoted), (client[0], 0))
            await asyncio.sleep(0.02)
        return await asyncio.wait_for(task, BOUND)

    try:
        report = asyncio.run(run())
    finally:
        raw.close()
    assert report.refused == 0  # type: ignore[attr-defined]
    assert report.state is State.UP  # type: ignore[attr-defined]
    assert report.socket_errors.get("refused-stale", 0) >= 5  # type: ignore[attr-defined]


def test_a_refusal_of_a_heartbeat_no_longer_waiting_changes_nothing() -> None:
    session = ProbeSession(ProbeConfig(first_seq=1, count=3), 0.0)
    session.handle_timer(0.0, 1.7e9)
    session.datagrams_to_send()
    session.receive_error(0.01, seq=999)  # never sent
    report = session.report(0.02)
    assert report.refused == 0
    assert report.socket_errors == {"refused-stale": 1}
    assert session.state is State.UNKNOWN


def test_a_refusal_naming_its_heartbeat_charges_that_one() -> None:
    session = ProbeSession(ProbeConfig(first_seq=1, count=3, interval=0.1), 0.0)
    for now in (0.0, 0.1):
        session.handle_timer(now, 1.7e9 + now)
    session.datagrams_to_send()
    session.receive_error(0.15, seq=1)
    lost = [e for e in session.events() if type(e).__name__ == "HeartbeatLost"]
    assert [(e.seq, e.reason) for e in lost] == [(1, "refused")]  # type: ignore[attr-defined]
