"""Rate limits too small to keep: refused with one line naming the setting, never overflowed.

``1 / rate`` or ``burst / rate`` once overflowed to infinity for the tiniest rates, and an
infinite tolerance is no limit at all: ``--rate-limit 1e-308 --burst 5`` answered everything.
"""

from __future__ import annotations

import pytest
from helpers import run_udpbeat

from udpbeat.errors import ConfigError
from udpbeat.ratelimit import MAX_BURST, MIN_RATE
from udpbeat.reflector import Reflector, ReflectorConfig

SOURCE = ("192.0.2.10", 40000)
TINY = ["1e-308", "5e-324", "1e-7"]


@pytest.mark.parametrize("rate", [1e-308, 5e-324, 1e-7, MIN_RATE / 2])
def test_a_rate_below_the_minimum_is_a_config_error(rate: float) -> None:
    with pytest.raises(ConfigError, match=r"^rate limit .*1e-06"):
        ReflectorConfig(rate_limit=rate, burst=5)
    with pytest.raises(ConfigError, match=r"^global rate limit .*1e-06"):
        ReflectorConfig(global_rate_limit=rate)


def test_a_huge_burst_is_a_config_error_not_an_overflow() -> None:
    with pytest.raises(ConfigError, match="burst"):
        ReflectorConfig(burst=10**400)
    with pytest.raises(ConfigError, match="burst"):
        ReflectorConfig(burst=MAX_BURST + 1)


def test_the_minimum_rate_limits_for_real() -> None:
    reflector = Reflector(ReflectorConfig(rate_limit=MIN_RATE, burst=5, global_rate_limit=MIN_RATE))
    answered = [
        reflector.reflect(b"Heartbeat %d 1.0" % seq, SOURCE, 10.0 + seq, 2.0) is not None
        for seq in range(20)
    ]
    # A source may send 5 at once; the global bucket holds one second's worth, at least one
    # request: one is answered, four pass their source's bucket and stop at the global one.
    assert answered == [True] + [False] * 19
    assert reflector.counters.rate_limited == {"global": 4, "source": 15}


@pytest.mark.parametrize("flag", ["--rate-limit", "--global-rate-limit"])
@pytest.mark.parametrize("rate", TINY)
def test_the_cli_refuses_tiny_rates_in_one_line(flag: str, rate: str) -> None:
    status, stdout, stderr = run_udpbeat(
        "server", "--host", "127.0.0.1", "--port", "0", "--burst", "5", flag, rate
    )
    assert status == 2
    assert stdout == []
    assert len(stderr) == 1, stderr
    assert flag in stderr[0] and "1e-06" in stderr[0]
    assert "Traceback" not in stderr[0]


@pytest.mark.parametrize("flag", ["--rate-limit", "--global-rate-limit"])
def test_the_cli_still_takes_zero_for_off(flag: str) -> None:
    status, _, stderr = run_udpbeat("server", "--port", "70000", flag, "0")
    assert status == 2
    assert "--port" in stderr[0]  # refused for the port, not for the rate
