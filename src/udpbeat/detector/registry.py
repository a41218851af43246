"""Detectors by name: what ``--detector NAME`` and a config file's ``detector = "NAME"`` mean."""

from __future__ import annotations

import inspect
from typing import Any

from udpbeat.detector.adaptive import AdaptiveDetector
from udpbeat.detector.base import Detector
from udpbeat.detector.consecutive import ConsecutiveDetector
from udpbeat.detector.phi import PhiDetector
from udpbeat.errors import ConfigError

#: Every detector by the name ``udpbeat client --detector`` knows it by.
DETECTORS: dict[str, type[Detector]] = {
    AdaptiveDetector.name: AdaptiveDetector,
    ConsecutiveDetector.name: ConsecutiveDetector,
    PhiDetector.name: PhiDetector,
}


def detector_parameters(name: str) -> tuple[str, ...]:
    """The keyword parameters (besides ``timeout``) the detector ``name`` accepts."""
    signature = inspect.signature(_detector_class(name))
    return tuple(p for p in signature.parameters if p != "timeout")


def make_detector(name: str, timeout: float, **params: Any) -> Detector:
    """A detector by name, e.g. ``make_detector("phi", 1.0, threshold=10)``.

    Raises:
        ConfigError: unknown name, unknown parameter, or a value out of range.
    """
    accepted = detector_parameters(name)
    for key in params:
        if key not in accepted:
            raise ConfigError(
                f"detector {name!r} has no parameter {key!r}; it takes: {', '.join(accepted)}"
            )
    return _detector_class(name)(timeout=timeout, **params)


def _detector_class(name: str) -> type[Detector]:
    cls = DETECTORS.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown detector {name!r}; choose one of: {', '.join(sorted(DETECTORS))}"
        )
    return cls
