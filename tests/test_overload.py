"""A real ``udpbeat server`` flooded at twice its measured capacity stays up and accounts for it.

The driver is ``benchmarks/overload.py`` (10 seconds when run by hand, 3 here). Nothing here
asserts a speed: the flood rate is whatever twice the capacity measured on this machine is, and
the assertions are about survival, responsiveness, memory and exact accounting.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
from helpers import ROOT

#: Growth of the server's resident memory allowed over the flood: its log backlog and per-source
#: table are bounded, so a flood must not grow it by more than noise.
RSS_GROWTH_LIMIT_KIB = 64 * 1024


def load_overload() -> ModuleType:
    path = ROOT / "benchmarks" / "overload.py"
    spec = importlib.util.spec_from_file_location("udpbeat_overload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


overload = load_overload()


@pytest.mark.timeout(120)
def test_flood_at_twice_capacity_is_survived_and_every_datagram_accounted_for() -> None:
    result = overload.run(duration=3.0, factor=2.0, capacity_duration=1.0)
    report = "\n".join(overload.report(result))
    summary = result.summary
    assert result.alive, report
    assert result.status == 0, report + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # The server's own identity, exactly.
    assert result.outcomes == summary["received"], report
    # Everything sent was received or dropped by the kernel before the server could read it.
    assert summary["received"] <= result.sent, report
    if result.snmp_before:  # Linux: /proc/net/snmp counts those drops (machine-wide: >=)
        assert result.sent - summary["received"] <= result.kernel_drops, report
    # Each kind of outcome was exercised: replies, simulated loss, and the malformed trickle.
    assert summary["replied"] > 0 and summary["dropped_loss"] > 0, report
    assert summary["malformed_by_reason"] == {"bad-sequence": summary["malformed"]}, report
    # Responsive during the flood: the separate probe got answers.
    assert result.probe.answered > 0, report
    assert result.rss_after_kib - result.rss_before_kib < RSS_GROWTH_LIMIT_KIB, report
