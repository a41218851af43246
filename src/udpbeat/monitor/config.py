"""``udpbeat monitor``'s targets: a TOML file and command-line arguments to config objects.

Pure: :func:`parse_config` takes the parsed TOML (a dict) and gives a :class:`MonitorConfig`
or raises :class:`~udpbeat.errors.ConfigError` with one line naming the file, the target and
the key; :func:`load_config` adds the reading and the TOML parsing (stdlib ``tomllib``)::

    [defaults]                # every key optional; these are the built-in values
    port = 12000
    interval = 1.0            # seconds between heartbeats
    timeout = 1.0             # longest wait for a reply
    detector = "adaptive"     # and that detector's parameters, e.g.
    false_alarm = 1e-9
    probes_per_interval = 50  # the per-target confirmation-probe budget
    labels = { env = "prod" } # labels every target gets

    [[targets]]
    name = "db-1"             # required, unique: the ``target`` label
    host = "192.0.2.10"       # required
    port = 12001              # any key of [defaults] may be given per target
    labels = { role = "db" }  # merged over the default labels
    protocol = "stamp"        # STAMP (RFC 8762) rather than the text format ("text")
    ssid = 7                  # STAMP: the session identifier (RFC 8972), default 0
    stamp_key_file = "k.key"  # STAMP: authenticated mode, the shared key's file

A STAMP target without a port of its own probes port 862 (unless ``[defaults]`` names a port).

A detector parameter belongs to a detector: one in ``[defaults]`` applies to the targets that
use the default detector; a target that names another detector takes only its own.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from udpbeat._net import DEFAULT_PORT
from udpbeat.detector import DETECTORS, detector_parameters, make_detector
from udpbeat.errors import ConfigError
from udpbeat.session import PROBES_PER_INTERVAL, ProbeConfig
from udpbeat.wire import PROTOCOLS, stamp

#: Keys every table may hold besides the detector's parameters.
COMMON_KEYS = (
    "port",
    "interval",
    "timeout",
    "detector",
    "probes_per_interval",
    "labels",
    *("protocol", "ssid", "stamp_key_file"),
)
TARGET_KEYS = ("name", "host", *COMMON_KEYS)
#: Label names the monitor sets itself.
RESERVED_LABELS = frozenset({"target", "state", "le"})
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One target: its name (unique), where it is, how it is probed, and its labels."""

    name: str
    host: str
    port: int
    probe: ProbeConfig
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def interval(self) -> float:
        return self.probe.interval

    def probed_as(self, other: TargetConfig) -> bool:
        """Whether ``other`` probes the same address the same way (only labels may differ)."""
        return (self.host, self.port, self.probe) == (other.host, other.port, other.probe)


@dataclass(frozen=True, slots=True)
class Defaults:
    """What a target gets for the keys it does not give."""

    port: int = DEFAULT_PORT
    interval: float = 1.0
    timeout: float = 1.0
    detector: str = "adaptive"
    detector_options: Mapping[str, Any] = field(default_factory=dict)
    probes_per_interval: int = PROBES_PER_INTERVAL
    labels: Mapping[str, str] = field(default_factory=dict)
    protocol: str = "text"
    protocol_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Every target, in the order given (command-line targets first)."""

    targets: tuple[TargetConfig, ...]
    defaults: Defaults = Defaults()
    source: str | None = None


def load_config(path: str | Path) -> MonitorConfig:
    """Read and check a monitor's TOML file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or a value is wrong (one line that
            names the file, and the target and the key when there is one).
    """
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{source}: cannot read: {error.strerror or error}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    return parse_config(data, source)


def parse_config(
    data: Mapping[str, Any], source: str = "<config>", *, extra: Sequence[TargetConfig] = ()
) -> MonitorConfig:
    """The :class:`MonitorConfig` of a parsed TOML document; ``extra`` targets (from the
    command line) come first and share the check for unique names.

    Raises:
        ConfigError: one line naming ``source``, the target and the key.
    """
    for key in data:
        if key not in ("defaults", "targets"):
            raise ConfigError(
                f"{source}: unknown key {key!r} (a monitor's file has [defaults] and [[targets]])"
            )
    raw_defaults = data.get("defaults", {})
    if not isinstance(raw_defaults, Mapping):
        raise ConfigError(f"{source}: defaults: must be a table ([defaults])")
    defaults = parse_defaults(raw_defaults, f"{source}: [defaults]")
    raw_targets = data.get("targets", [])
    if not isinstance(raw_targets, list):
        raise ConfigError(f"{source}: targets: must be an array of tables ([[targets]])")
    targets = list(extra)
    seen = {target.name for target in targets}
    for index, raw in enumerate(raw_targets):
        where = f"{source}: targets[{index}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: must be a table ([[targets]])")
        name = raw.get("name")
        if isinstance(name, str) and name:
            where = f"{source}: target {name!r} (targets[{index}])"
        target = parse_target(raw, defaults, where)
        if target.name in seen:
            raise ConfigError(f"{where}: name: {target.name!r} is used by another target too")
        seen.add(target.name)
        targets.append(target)
    return MonitorConfig(tuple(targets), defaults, source)


def parse_defaults(raw: Mapping[str, Any], where: str) -> Defaults:
    """The ``[defaults]`` table. Raises: ConfigError naming ``where`` and the key."""
    base = Defaults()
    for key in ("name", "host"):
        if key in raw:
            raise ConfigError(f"{where}: {key}: belongs to a target, not to [defaults]")
    detector = _detector_name(raw.get("detector", base.detector), where)
    options = _detector_options(raw, detector, where)
    values = _common(raw, base, where)
    protocol, protocol_options = _protocol(raw, base, where)
    if protocol == "stamp" and "port" not in raw:
        values["port"] = stamp.DEFAULT_PORT
    defaults = Defaults(
        port=values["port"],
        protocol=protocol,
        protocol_options=protocol_options,
        interval=values["interval"],
        timeout=values["timeout"],
        detector=detector,
        detector_options=options,
        probes_per_interval=values["probes_per_interval"],
        labels=values["labels"],
    )
    _probe_config(defaults, detector, options, where)
    return defaults


def parse_target(raw: Mapping[str, Any], defaults: Defaults, where: str) -> TargetConfig:
    """One ``[[targets]]`` table over the defaults. Raises: ConfigError naming the key."""
    name = raw.get("name")
    if name is None:
        raise ConfigError(f"{where}: name: missing (every target needs a unique name)")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
        raise ConfigError(
            f"{where}: name: must be a non-empty printable string of at most {MAX_NAME} "
            f"characters, got {name!r}"
        )
    host = raw.get("host")
    if host is None:
        raise ConfigError(f"{where}: host: missing")
    if not isinstance(host, str) or not host.strip() or not host.isprintable():
        raise ConfigError(f"{where}: host: must be a host name or address, got {host!r}")
    detector = _detector_name(raw.get("detector", defaults.detector), where)
    options: dict[str, Any] = (
        dict(defaults.detector_options) if detector == defaults.detector else {}
    )
    options.update(_detector_options(raw, detector, where, allowed=TARGET_KEYS))
    values = _common(raw, defaults, where)
    protocol, protocol_options = _protocol(raw, defaults, where)
    own_port = "port" in raw or defaults.port != DEFAULT_PORT
    if protocol == "stamp" and defaults.protocol != "stamp" and not own_port:
        values["port"] = stamp.DEFAULT_PORT
    labels = {**defaults.labels, **values["labels"]} if "labels" in raw else defaults.labels
    probe = _probe_config(
        Defaults(
            interval=values["interval"],
            timeout=values["timeout"],
            probes_per_interval=values["probes_per_interval"],
            protocol=protocol,
            protocol_options=protocol_options,
        ),
        detector,
        options,
        where,
    )
    return TargetConfig(
        name=name,
        host=host.strip(),
        port=values["port"],
        probe=probe,
        labels=tuple(sorted(labels.items())),
    )


def command_line_target(
    spec: str, defaults: Defaults, *, port: int | None = None, where: str = "command line"
) -> TargetConfig:
    """A ``HOST[:PORT]`` argument (``[v6]:PORT`` for IPv6) as a target named ``host:port``.

    Raises:
        ConfigError: an empty host or a bad port.
    """
    host, given_port = split_host_port(spec, where)
    chosen = given_port if given_port is not None else port if port is not None else defaults.port
    target_port = _port(chosen, f"{where}: {spec}")
    name = f"[{host}]:{target_port}" if ":" in host else f"{host}:{target_port}"
    probe = _probe_config(defaults, defaults.detector, defaults.detector_options, where)
    return TargetConfig(name, host, target_port, probe, tuple(sorted(defaults.labels.items())))


def split_host_port(spec: str, where: str = "command line") -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address.

    Raises:
        ConfigError: an empty host or a port that is not a number.
    """
    text = spec.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"{where}: {spec!r}: expected [IPv6]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a name, an IPv4 address, or a bare IPv6 address (no port)
    if not host:
        raise ConfigError(f"{where}: {spec!r}: no host")
    if port_text is None:
        return host, None
    if not port_text.isdigit():
        raise ConfigError(f"{where}: {spec!r}: port must be a number in 1..65535")
    return host, int(port_text)


# --- the keys --------------------------------------------------------------------------------


def _common(raw: Mapping[str, Any], base: Defaults, where: str) -> dict[str, Any]:
    return {
        "port": _port(raw.get("port", base.port), f"{where}: port"),
        "interval": _seconds(raw.get("interval", base.interval), f"{where}: interval"),
        "timeout": _seconds(raw.get("timeout", base.timeout), f"{where}: timeout"),
        "probes_per_interval": _count(
            raw.get("probes_per_interval", base.probes_per_interval),
            f"{where}: probes_per_interval",
        ),
        "labels": _labels(raw.get("labels", base.labels), f"{where}: labels"),
    }


def _protocol(raw: Mapping[str, Any], base: Defaults, where: str) -> tuple[str, dict[str, Any]]:
    """The ``protocol`` key and STAMP's keys (``ssid``, ``stamp_key_file``) over ``base``."""
    protocol = raw.get("protocol", base.protocol)
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"{where}: protocol: must be one of {', '.join(PROTOCOLS)}, got {protocol!r}"
        )
    options = dict(base.protocol_options) if protocol == base.protocol else {}
    if "ssid" in raw:
        ssid = raw["ssid"]
        if isinstance(ssid, bool) or not isinstance(ssid, int) or not 0 <= ssid <= 65535:
            raise ConfigError(f"{where}: ssid: must be a number in 0..65535, got {ssid!r}")
        options["ssid"] = ssid
    if "stamp_key_file" in raw:
        path = raw["stamp_key_file"]
        if not isinstance(path, str):
            raise ConfigError(f"{where}: stamp_key_file: must be a file name, got {path!r}")
        try:
            options["key"] = stamp.read_key(path)
        except ConfigError as error:
            raise ConfigError(f"{where}: stamp_key_file: {error}") from None
    if options and protocol != "stamp":
        raise ConfigError(f'{where}: ssid and stamp_key_file need protocol = "stamp"')
    return protocol, options


def _port(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: must be a port number in 1..65535, got {value!r}")
    return value


def _seconds(value: object, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < math.inf
        or value > 86400
    ):
        raise ConfigError(
            f"{where}: must be a number of seconds > 0 (at most 86400), got {value!r}"
        )
    return float(value)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: must be a whole number >= 0, got {value!r}")
    return value


def _labels(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where}: must be a table of strings, e.g. {{ role = "db" }}')
    labels: dict[str, str] = {}
    for key, text in value.items():
        if not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
            raise ConfigError(
                f"{where}: {key!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, "
                "not starting with __)"
            )
        if key in RESERVED_LABELS:
            raise ConfigError(f"{where}: {key!r} is set by udpbeat itself; choose another name")
        if not isinstance(text, str):
            raise ConfigError(f"{where}: {key}: must be a string, got {text!r}")
        labels[key] = text
    return labels


def _detector_name(value: object, where: str) -> str:
    if not isinstance(value, str) or value not in DETECTORS:
        raise ConfigError(
            f"{where}: detector: unknown detector {value!r}; "
            f"choose one of: {', '.join(sorted(DETECTORS))}"
        )
    return value


def _detector_options(
    raw: Mapping[str, Any],
    detector: str,
    where: str,
    *,
    allowed: Sequence[str] = COMMON_KEYS,
) -> dict[str, Any]:
    accepted = detector_parameters(detector)
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key in allowed:
            continue
        if key in accepted:
            options[key] = value
            continue
        owners = [name for name in sorted(DETECTORS) if key in detector_parameters(name)]
        if owners:
            raise ConfigError(
                f"{where}: {key}: a parameter of the {' and '.join(owners)} detector, "
                f"not of {detector!r}"
            )
        raise ConfigError(
            f"{where}: {key}: unknown key; a target takes {', '.join(TARGET_KEYS)} and its "
            f"detector's parameters ({', '.join(accepted)})"
        )
    return options


#: Targets probed alike share one ProbeConfig (ten thousand targets, a handful of configs).
_SHARED: dict[tuple[object, ...], ProbeConfig] = {}
_SHARED_MAX = 1024


def _probe_config(
    values: Defaults, detector: str, options: Mapping[str, Any], where: str
) -> ProbeConfig:
    """The session's config: heartbeats forever, DOWN never ends the run (watch)."""
    key = (
        values.interval,
        values.timeout,
        values.probes_per_interval,
        values.protocol,
        *sorted(values.protocol_options.items()),
        detector,
        *sorted((k, type(v), v) for k, v in options.items()),
    )
    try:
        hash(key)
    except TypeError:  # an unhashable value (an array, a table): refused below
        return _new_probe_config(values, detector, options, where)
    shared = _SHARED.get(key)
    if shared is None:
        shared = _new_probe_config(values, detector, options, where)
        if len(_SHARED) < _SHARED_MAX:
            _SHARED[key] = shared
    return shared


def _new_probe_config(
    values: Defaults, detector: str, options: Mapping[str, Any], where: str
) -> ProbeConfig:
    # A value the detector refuses is put down to its own key when it fails alone.
    for key, value in options.items():
        try:
            make_detector(detector, values.timeout, **{key: value})
        except ConfigError as error:
            raise ConfigError(f"{where}: {key}: {error}") from None
        except TypeError as error:
            raise ConfigError(f"{where}: {key}: {error}") from None
    try:
        return ProbeConfig(
            count=None,
            interval=values.interval,
            timeout=values.timeout,
            watch=True,
            detector=detector,
            detector_options=dict(options),
            probes_per_interval=values.probes_per_interval,
            protocol=values.protocol,
            protocol_options=dict(values.protocol_options),
        )
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{where}: detector: {error}") from None
