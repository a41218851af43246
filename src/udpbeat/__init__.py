"""udpbeat: UDP heartbeats that tell a lossy path from a dead server.

The public API; everything not listed in ``__all__`` is private.
"""

from udpbeat.client import Prober, probe, probe_sync, run_sync
from udpbeat.detector import (
    DETECTORS,
    AdaptiveDetector,
    ConsecutiveDetector,
    Detector,
    PhiDetector,
    State,
    Transition,
    make_detector,
)
from udpbeat.errors import ConfigError, UdpbeatError, WireError
from udpbeat.events import event_to_dict
from udpbeat.impair import ImpairedPath, Impairment, ScheduledOutage
from udpbeat.proxy import Proxy, ProxyConfig
from udpbeat.reflector import Counters, Reflector, ReflectorConfig
from udpbeat.report import Outage, ProbeReport
from udpbeat.server import BackgroundServer, Server, ServerConfig, start_background_server
from udpbeat.session import ProbeConfig, ProbeSession
from udpbeat.stamp_reflector import StampOptions, StampReflector

__version__ = "0.1.0"

__all__ = [
    "DETECTORS",
    "AdaptiveDetector",
    "BackgroundServer",
    "ConfigError",
    "ConsecutiveDetector",
    "Counters",
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
