"""The reflector's defences: size, source port, allowlist, rate limits, their order and counters.

Each feature is tested on the pure reflector (a test that fails if the feature is removed) and
the rate limit, the allowlist and ``--stats-interval`` also on a real ``udpbeat server`` process
on loopback.
"""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
from helpers import WAIT, Process, run_udpbeat, udp_socket, udpbeat_server
from hypothesis import given, settings
from hypothesis import strategies as st

from udpbeat.errors import ConfigError
from udpbeat.reflector import Reflector, ReflectorConfig
from udpbeat.server import Server
from udpbeat.wire.text import MAX_REQUEST_SIZE

NOW = 1_764_064_900.0
CLIENT = ("192.0.2.10", 40000)


def request(seq: int = 1, sent_time: float = NOW - 0.25) -> bytes:
    return f"Heartbeat {seq} {sent_time}".encode()


def reflector(**settings: object) -> Reflector:
    return Reflector(ReflectorConfig(log_events=False, **settings))  # type: ignore[arg-type]


def assert_reconciled(r: Reflector) -> None:
    c = r.counters
    assert c.unaccounted == 0
    assert c.received == (
        c.replied + c.dropped_loss + c.rate_limited_total + c.malformed_total + c.denied_total
    )


# --- size ------------------------------------------------------------------------------------


def test_longer_than_max_size_is_malformed_oversize_and_never_parsed() -> None:
    r = reflector(max_size=20)
    assert r.reflect(request(), CLIENT, NOW, NOW) is None  # a valid request, but 33 bytes
    assert r.reflect(b"Heartbeat 1 0", CLIENT, NOW, NOW) is not None  # 13 bytes
    assert r.counters.malformed == {"oversize": 1}
    assert_reconciled(r)


def test_the_default_max_size_is_the_longest_valid_request() -> None:
    r = reflector()
    assert r.reflect(b"x" * (MAX_REQUEST_SIZE + 1), CLIENT, NOW, NOW) is None
    assert r.counters.malformed == {"oversize": 1}


@pytest.mark.parametrize("size", [0, -1, 65508, 2.5, True])
def test_bad_max_size_is_a_config_error(size: int) -> None:
    with pytest.raises(ConfigError, match="max size"):
        ReflectorConfig(max_size=size)


def test_the_server_reads_one_byte_past_max_size() -> None:
    assert Server("127.0.0.1", 0, ReflectorConfig(max_size=1000)).receive_size == 1001
    assert Server("127.0.0.1", 0).receive_size == MAX_REQUEST_SIZE + 1


# --- source port -----------------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, 7, 19, 53, 123, 1023])
def test_privileged_source_ports_are_denied_by_default(port: int) -> None:
    r = reflector()
    assert r.reflect(request(), ("192.0.2.10", port), NOW, NOW) is None
    assert r.counters.denied == {"privileged-port": 1}
    assert_reconciled(r)


def test_port_1024_and_up_are_answered() -> None:
    assert reflector().reflect(request(), ("192.0.2.10", 1024), NOW, NOW) is not None


def test_allow_privileged_ports_answers_them() -> None:
    r = reflector(allow_privileged_ports=True)
    assert r.reflect(request(), ("192.0.2.10", 53), NOW, NOW) is not None
    assert r.counters.denied_total == 0


# --- allowlist -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "host", "answered"),
    [
        (("192.0.2.0/24",), "192.0.2.77", True),
        (("192.0.2.0/24",), "198.51.100.1", False),
        (("192.0.2.0/24",), "::ffff:192.0.2.77", True),  # IPv4-mapped, from a dual-stack socket
        (("192.0.2.0/24",), "::ffff:198.51.100.1", False),
        (("::ffff:192.0.2.0/120",), "192.0.2.5", True),  # a mapped network matches IPv4 too
        (("2001:db8::/32",), "2001:db8::1", True),
        (("2001:db8::/32",), "2001:db9::1", False),
        (("2001:db8::/32",), "192.0.2.77", False),
        (("fe80::/10",), "fe80::1%lo", True),  # scoped link-local address
        (("10.0.0.0/8", "192.0.2.77"), "192.0.2.77", True),  # repeatable; bare address is /32
        (("192.0.2.0/24",), "not-an-address", False),
    ],
)
def test_allowlist(allow: tuple[str, ...], host: str, answered: bool) -> None:
    r = reflector(allow=allow)
    for _ in range(2):  # the second time from the cache of decisions
        assert (r.reflect(request(), (host, 40000), NOW, NOW) is not None) is answered
    assert r.counters.denied == ({} if answered else {"allowlist": 2})
    assert_reconciled(r)


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ("not-a-network", "not an IP network"),
        ("10.0.0.0/33", "not an IP network"),
    ],
)
def test_bad_allowlist_entries_are_config_errors(cidr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReflectorConfig(allow=(cidr,))


def test_allow_must_be_a_list_not_one_string() -> None:
    with pytest.raises(ConfigError, match="not one string"):
        ReflectorConfig(allow="10.0.0.0/8")  # type: ignore[arg-type]


# --- rate limits -----------------------------------------------------------------------------


def test_the_default_limits_each_source_to_its_burst_at_once() -> None:
    r = reflector()
    replies = [r.reflect(request(seq), CLIENT, NOW, NOW) for seq in range(300)]
    assert sum(reply is not None for reply in replies) == 200
    assert r.counters.rate_limited == {"source": 100}
    # Another source is not affected, and the first gets 100 more a second later.
    assert r.reflect(request(), ("192.0.2.11", 40000), NOW, NOW) is not None
    later = [r.reflect(request(seq), CLIENT, NOW + 1.0, NOW + 1.0) for seq in range(150)]
    assert sum(reply is not None for reply in later) == 100
    assert_reconciled(r)


def test_rate_limit_zero_turns_it_off() -> None:
    r = reflector(rate_limit=0)
    assert all(r.reflect(request(seq), CLIENT, NOW, NOW) for seq in range(1000))
    assert r.stats()["sources_tracked"] == 0


def test_a_source_is_its_address_not_its_port() -> None:
    r = reflector(rate_limit=1, burst=3)
    answered = [r.reflect(request(), ("192.0.2.10", 40000 + i), NOW, NOW) for i in range(5)]
    assert [reply is not None for reply in answered] == [True] * 3 + [False] * 2


def test_the_global_limit_caps_all_sources_together() -> None:
    r = reflector(rate_limit=0, global_rate_limit=10)  # burst: one second's worth
    answered = [r.reflect(request(), (f"192.0.2.{i}", 40000), NOW, NOW) for i in range(25)]
    assert sum(reply is not None for reply in answered) == 10
    assert r.counters.rate_limited == {"global": 15}
    assert_reconciled(r)


def test_a_source_over_its_own_limit_does_not_spend_the_global_budget() -> None:
    r = reflector(rate_limit=1, burst=2, global_rate_limit=5)
    for _ in range(100):  # one loud source: 2 pass, 98 refused by its own bucket
        r.reflect(request(), ("192.0.2.66", 40000), NOW, NOW)
    others = [r.reflect(request(), (f"192.0.2.{i}", 40000), NOW, NOW) for i in range(1, 4)]
    assert all(reply is not None for reply in others)
    assert r.counters.rate_limited == {"source": 98}


def test_a_flood_of_spoofed_sources_keeps_the_table_bounded() -> None:
    r = reflector(max_sources=500)
    for i in range(20_000):
        r.reflect(request(), (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 40000), NOW, NOW)
    stats = r.stats()
    assert stats["sources_tracked"] == 500
    assert stats["sources_evicted"] == 19_500
    assert r.counters.replied == 20_000  # one request each: all within their burst


@pytest.mark.parametrize(
    "settings",
    [
        {"rate_limit": -1},
        {"rate_limit": float("nan")},
        {"rate_limit": 1e8},
        {"burst": 0},
        {"max_sources": 0},
        {"global_rate_limit": float("inf")},
    ],
)
def test_bad_limits_are_config_errors(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ReflectorConfig(**settings)  # type: ignore[arg-type]


# --- order of the checks ---------------------------------------------------------------------


def test_garbage_over_the_rate_limit_is_refused_before_it_is_parsed() -> None:
    r = reflector(rate_limit=1, burst=5)
    for _ in range(50):
        r.reflect(b"\xff" * 40, CLIENT, NOW, NOW)
    assert r.counters.malformed == {"not-text": 5}
    assert r.counters.rate_limited == {"source": 45}


def test_size_comes_first_then_port_then_allowlist() -> None:
    r = reflector(allow=("198.51.100.0/24",))
    r.reflect(b"x" * 500, ("192.0.2.10", 53), NOW, NOW)
    r.reflect(request(), ("192.0.2.10", 53), NOW, NOW)
    r.reflect(request(), ("192.0.2.10", 40000), NOW, NOW)
    assert r.counters.malformed == {"oversize": 1}
    assert r.counters.denied == {"privileged-port": 1, "allowlist": 1}


def test_denied_sources_spend_no_tokens() -> None:
    r = reflector(rate_limit=1, burst=1, allow=("192.0.2.0/24",))
    for _ in range(10):
        r.reflect(request(), ("198.51.100.1", 40000), NOW, NOW)
        r.reflect(request(), ("192.0.2.10", 53), NOW, NOW)
    assert r.reflect(request(), CLIENT, NOW, NOW) is not None
    assert r.counters.rate_limited_total == 0


# --- counters --------------------------------------------------------------------------------

DATAGRAMS = st.one_of(
    st.integers(0, 2**63 - 1).map(lambda seq: request(seq)),
    st.binary(max_size=120),
    st.sampled_from([b"Heartbeat 0 0", b"Heartbeat 1 1e99", b"", b"x" * 97]),
)
SOURCES = st.tuples(
    st.sampled_from(["192.0.2.1", "192.0.2.2", "198.51.100.7", "::ffff:192.0.2.3", "2001:db8::1"]),
    st.sampled_from([53, 1023, 1024, 40000]),
)


@settings(max_examples=150)
@given(
    traffic=st.lists(st.tuples(DATAGRAMS, SOURCES, st.floats(0, 0.05)), max_size=200),
    allow=st.sampled_from([(), ("192.0.2.0/24",), ("192.0.2.0/24", "2001:db8::/32")]),
    rate_limit=st.sampled_from([0.0, 5.0, 100.0]),
    global_rate_limit=st.sampled_from([0.0, 20.0]),
    loss=st.sampled_from([0.0, 0.3]),
    privileged=st.booleans(),
)
def test_counters_reconcile_exactly_whatever_arrives(
    traffic: list[tuple[bytes, tuple[str, int], float]],
    allow: tuple[str, ...],
    rate_limit: float,
    global_rate_limit: float,
    loss: float,
    privileged: bool,
) -> None:
    r = Reflector(
        ReflectorConfig(
            loss=loss,
            seed=7,
            burst=3,
            max_sources=3,
            rate_limit=rate_limit,
            global_rate_limit=global_rate_limit,
            allow=allow,
            allow_privileged_ports=privileged,
        )
    )
    now = NOW
    for data, source, gap in traffic:
        now += gap
        reply = r.reflect(data, source, now, now)
        assert_reconciled(r)
        if reply is not None:
            assert source[1] >= 1024 or privileged
    assert r.counters.received == len(traffic)
    stats = r.stats()
    assert stats["received"] == len(traffic)
    assert isinstance(stats["sources_tracked"], int) and stats["sources_tracked"] <= 3


def test_refusals_are_logged_only_when_asked() -> None:
    loud = Reflector(ReflectorConfig(rate_limit=1, burst=1))
    quiet = Reflector(ReflectorConfig(rate_limit=1, burst=1, log_events=False))
    for r in (loud, quiet):
        r.reflect(request(), CLIENT, NOW, NOW)
        r.reflect(request(), CLIENT, NOW, NOW)
        r.reflect(request(), ("192.0.2.10", 53), NOW, NOW)
    assert [(x.outcome, x.detail) for x in loud.drain_log()] == [
        ("replied", "Seq: 1, Time Difference: 0.250000 seconds"),
        ("rate-limited", "source"),
        ("denied", "privileged-port"),
    ]
    assert quiet.drain_log() == []


# --- a real server ---------------------------------------------------------------------------


def stats_until(server: Process, condition: str, received: int) -> dict[str, object]:
    """The first ``stats`` object whose ``received`` reaches ``received`` (bounded wait)."""

    def ready(line: str) -> bool:
        obj = json.loads(line)
        return bool(obj.get("type") == condition and obj["received"] >= received)

    stats = json.loads(server.wait_for(ready))
    assert isinstance(stats, dict)
    return stats


def finish(server: Process) -> dict[str, object]:
    server.send_signal(signal.SIGTERM)
    status, stdout, stderr = server.finish()
    assert status == 0, stderr
    summary = json.loads(stdout[-1])
    assert summary["type"] == "summary"
    assert summary["received"] == (
        summary["replied"]
        + summary["dropped_loss"]
        + summary["rate_limited"]
        + summary["malformed"]
        + summary["denied"]
    )
    assert isinstance(summary, dict)
    return summary


def assert_exactly_replies(sock: socket.socket, count: int) -> None:
    """``count`` replies are waiting on ``sock`` (each within WAIT), and no more than that."""
    for _ in range(count):
        assert sock.recvfrom(4096)[0].startswith(b"Seq: ")
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recvfrom(4096)


def test_server_rate_limit_and_json_stats() -> None:
    flags = ["--quiet", "--rate-limit", "0.5", "--burst", "5", "--stats-interval", "0.1"]
    with udpbeat_server(*flags) as (server, port), udp_socket() as sock:
        for seq in range(1, 21):
            sock.sendto(request(seq, time.time()), ("127.0.0.1", port))
        stats = stats_until(server, "stats", 20)
        assert stats["rate_limited"] == stats["rate_limited_by_scope"]["source"]  # type: ignore[index]
        assert stats["sources_tracked"] == 1
        assert isinstance(stats["uptime"], float) and isinstance(stats["at"], float)
        summary = finish(server)
        # 5 at once, and one more if the run took over 2 s (0.5 a second).
        assert summary["replied"] in (5, 6)
        assert summary["rate_limited"] == 20 - summary["replied"]
        assert isinstance(summary["replied"], int)
        assert_exactly_replies(sock, summary["replied"])


def test_server_stats_interval_text_lines() -> None:
    args = ["-m", "udpbeat", "server", "--host", "127.0.0.1", "--port", "0", "--quiet"]
    with Process([*args, "--stats-interval", "0.1"]) as server:
        server.wait_for(lambda line: "listening" in line)
        first = server.wait_for(lambda line: line.startswith("stats +"))
        server.wait_for(lambda line: line.startswith("stats +"))
        server.send_signal(signal.SIGTERM)
        status, stdout, _ = server.finish()
    assert status == 0
    assert first.endswith(
        "0 received, 0 replied, 0 dropped by simulated loss, 0 rate-limited, 0 malformed, 0 denied"
    )
    assert stdout[-2] == "--- udpbeat server statistics ---"


def test_server_without_stats_interval_prints_no_stats() -> None:
    with udpbeat_server("--quiet") as (server, port), udp_socket() as sock:
        sock.sendto(request(1, time.time()), ("127.0.0.1", port))
        sock.recvfrom(4096)
        summary = finish(server)
    assert summary["replied"] == 1
    assert not any('"stats"' in line for line in server.stdout_lines)


def test_server_allowlist_on_loopback() -> None:
    flags = ["--quiet", "--allow", "127.0.0.2/32", "--stats-interval", "0.1"]
    with udpbeat_server(*flags) as (server, port):
        with udp_socket("127.0.0.1") as outsider:
            for seq in range(3):
                outsider.sendto(request(seq, time.time()), ("127.0.0.1", port))
            stats_until(server, "stats", 3)
            outsider.settimeout(0.2)
            with pytest.raises(TimeoutError):
                outsider.recvfrom(4096)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as insider:
            insider.bind(("127.0.0.2", 0))
            insider.settimeout(WAIT)
            insider.sendto(request(9, time.time()), ("127.0.0.1", port))
            assert insider.recvfrom(4096)[0].startswith(b"Seq: 9, ")
        summary = finish(server)
    assert summary["denied_by_reason"] == {"allowlist": 3}
    assert summary["replied"] == 1


def test_server_max_size_on_loopback() -> None:
    with udpbeat_server("--quiet", "--max-size", "20") as (server, port), udp_socket() as sock:
        sock.sendto(b"Heartbeat 1 " + str(time.time()).encode(), ("127.0.0.1", port))
        sock.sendto(b"x" * 5000, ("127.0.0.1", port))
        sock.sendto(b"Heartbeat 2 0", ("127.0.0.1", port))
        assert sock.recvfrom(4096)[0].startswith(b"Seq: 2, ")
        summary = finish(server)
    assert summary["malformed_by_reason"] == {"oversize": 2}


@pytest.mark.parametrize(
    "flags",
    [
        ["--rate-limit", "-1"],
        ["--rate-limit", "nan"],
        ["--rate-limit", "1e9"],
        ["--burst", "0"],
        ["--max-sources", "0"],
        ["--global-rate-limit", "inf"],
        ["--allow", "10.0.0.1/8"],
        ["--allow", "not-a-network"],
        ["--max-size", "0"],
        ["--max-size", "70000"],
        ["--stats-interval", "0"],
        ["--stats-interval", "nan"],
    ],
)
def test_bad_hardening_flags_give_one_line_and_exit_2(flags: list[str]) -> None:
    status, stdout, stderr = run_udpbeat("server", "--host", "127.0.0.1", "--port", "0", *flags)
    assert status == 2
    assert stdout == []
    assert len(stderr) == 1 and stderr[0].startswith("udpbeat: error: "), stderr


def test_server_logs_refusals_on_stderr_in_text_mode() -> None:
    args = ["-m", "udpbeat", "server", "--host", "127.0.0.1", "--port", "0"]
    flags = ["--rate-limit", "1", "--burst", "1", "--stats-interval", "0.1"]
    with Process([*args, *flags]) as server, udp_socket() as sock:
        listening = server.wait_for(lambda line: "listening" in line)
        assert "rate limit 1/s per source, burst 1" in listening
        port = int(listening.split(":")[1].split(" ")[0])
        for seq in (1, 2):
            sock.sendto(request(seq, time.time()), ("127.0.0.1", port))
        server.wait_for(lambda line: line.startswith("stats +") and ": 2 received," in line)
        server.send_signal(signal.SIGTERM)
        status, _, stderr = server.finish()
        client_port = sock.getsockname()[1]
    assert status == 0
    assert stderr == [f"Rate-limited datagram from 127.0.0.1:{client_port} (source limit)"]
