"""Failure detectors: from heartbeat outcomes to a verdict on the server.

One module per detector, as aioquic keeps its congestion controllers: :mod:`.base` holds the
state machine and the interface every detector implements, :mod:`.registry` finds one by name.
"""

from udpbeat.detector.adaptive import AdaptiveDetector, LossHistory, RttEstimator, wilson_upper
from udpbeat.detector.base import Detector, Evidence, MissReason, State, Transition
from udpbeat.detector.consecutive import ConsecutiveDetector
from udpbeat.detector.phi import PhiDetector, deviations_for_phi, phi_of
from udpbeat.detector.registry import DETECTORS, detector_parameters, make_detector

__all__ = [
    "DETECTORS",
    "AdaptiveDetector",
    "ConsecutiveDetector",
    "Detector",
    "Evidence",
    "LossHistory",
    "MissReason",
    "PhiDetector",
    "RttEstimator",
    "State",
    "Transition",
    "detector_parameters",
    "deviations_for_phi",
    "make_detector",
    "phi_of",
    "wilson_upper",
]
