"""The public API is what ``udpbeat.__all__`` lists: pinned here, so a change is a decision."""

from __future__ import annotations

from importlib.metadata import version

import udpbeat

PUBLIC = [
    "AdaptiveDetector",
    "BackgroundServer",
    "ConfigError",
    "ConsecutiveDetector",
    "Counters",
    "DETECTORS",
    "Detector",
    "ImpairedPath",
    "Impairment",
    "Outage",
    "PhiDetector",
    "ProbeConfig",
    "ProbeReport",
    "ProbeSession",
    "Prober",
    "Proxy",
    "ProxyConfig",
    "Reflector",
    "ReflectorConfig",
    "ScheduledOutage",
    "Server",
    "ServerConfig",
    "StampOptions",
    "StampReflector",
    "State",
    "Transition",
    "UdpbeatError",
    "WireError",
    "__version__",
    "event_to_dict",
    "make_detector",
    "probe",
    "probe_sync",
    "run_sync",
    "start_background_server",
]


def test_all_is_pinned() -> None:
    assert sorted(udpbeat.__all__) == PUBLIC
    assert len(set(udpbeat.__all__)) == len(udpbeat.__all__)


def test_every_public_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from udpbeat import *", namespace)
    for name in PUBLIC:
        assert getattr(udpbeat, name) is namespace[name]


def test_version_matches_the_installed_distribution() -> None:
    assert udpbeat.__version__ == version("udpbeat")


def test_errors_share_one_base() -> None:
    assert issubclass(udpbeat.ConfigError, udpbeat.UdpbeatError)
    assert issubclass(udpbeat.WireError, udpbeat.UdpbeatError)
    # Both are also ValueErrors, so callers catching ValueError keep working.
    assert issubclass(udpbeat.ConfigError, ValueError)
    assert issubclass(udpbeat.WireError, ValueError)
