"""udpbeat monitor's configuration: the TOML file, HOST[:PORT] arguments, and --shard."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from helpers import ROOT, run_main

from udpbeat.errors import ConfigError
from udpbeat.monitor import shard
from udpbeat.monitor.config import (
    Defaults,
    command_line_target,
    load_config,
    parse_config,
    split_host_port,
)

GOOD = """
[defaults]
port = 12001
interval = 0.5
timeout = 0.8
false_alarm = 1e-6
labels = { env = "prod" }

[[targets]]
name = "db-1"
host = "127.0.0.1"
labels = { role = "db" }

[[targets]]
name = "web-1"
host = "::1"
port = 12002
interval = 2
detector = "phi"
threshold = 10
labels = { env = "staging", role = "web" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(text)
    return path


def test_defaults_apply_and_targets_override(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    db, web = config.targets
    assert (db.name, db.host, db.port) == ("db-1", "127.0.0.1", 12001)
    assert (db.probe.interval, db.probe.timeout, db.probe.detector) == (0.5, 0.8, "adaptive")
    assert db.probe.detector_options == {"false_alarm": 1e-6}
    assert db.probe.watch and db.probe.count is None
    assert dict(db.labels) == {"env": "prod", "role": "db"}
    # Another detector takes only its own parameters, not the default detector's.
    assert (web.port, web.probe.interval, web.probe.detector) == (12002, 2.0, "phi")
    assert web.probe.detector_options == {"threshold": 10}
    assert dict(web.labels) == {"env": "staging", "role": "web"}


def test_targets_probed_alike_share_one_probe_config() -> None:
    targets = [{"name": f"t{i}", "host": f"127.0.0.{i + 1}"} for i in range(100)]
    config = parse_config({"targets": targets})
    assert len({id(target.probe) for target in config.targets}) == 1


def test_the_shipped_example_loads() -> None:
    config = load_config(ROOT / "examples" / "monitor.toml")
    names = [target.name for target in config.targets]
    assert names == ["db-1", "db-2", "web-1", "cache-1"]
    assert all(("env", "demo") in target.labels for target in config.targets)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[targets]]\nhost = '127.0.0.1'\n", ["targets[0]", "name: missing"]),
        ("[[targets]]\nname = 'a'\n", ["target 'a' (targets[0])", "host: missing"]),
        ("[[targets]]\nname = 'a'\nhost = 'h'\nport = 70000\n", ["target 'a'", "port:"]),
        ("[[targets]]\nname = 'a'\nhost = 'h'\ninterval = 0\n", ["target 'a'", "interval:"]),
        ("[[targets]]\nname = 'a'\nhost = 'h'\ntimeout = 'x'\n", ["target 'a'", "timeout:"]),
        ("[[targets]]\nname = 'a'\nhost = 'h'\ndetector = 'nope'\n", ["target 'a'", "detector:"]),
        (
            "[[targets]]\nname = 'a'\nhost = 'h'\nthreshold = 3\n",
            ["target 'a'", "threshold:", "phi"],
        ),
        ("[[targets]]\nname = 'a'\nhost = 'h'\nfalse_alarm = 2\n", ["target 'a'", "false_alarm:"]),
        (
            "[[targets]]\nname = 'a'\nhost = 'h'\ncolour = 'red'\n",
            ["target 'a'", "colour: unknown"],
        ),
        (
            "[[targets]]\nname = 'a'\nhost = 'h'\nlabels = { target = 'x' }\n",
            ["labels:", "'target'"],
        ),
        ("[[targets]]\nname = 'a'\nhost = 'h'\nlabels = { 'a-b' = 'x' }\n", ["labels:", "'a-b'"]),
        ("[[targets]]\nname = 'a'\nhost = 'h'\nlabels = { a = 1 }\n", ["labels:", "a: must be"]),
        (
            "[[targets]]\nname = 'a'\nhost = 'h'\n[[targets]]\nname = 'a'\nhost = 'i'\n",
            ["target 'a' (targets[1])", "name:", "another target"],
        ),
        ("[defaults]\ninterval = -1\n", ["[defaults]", "interval:"]),
        ("[defaults]\nhost = 'h'\n", ["[defaults]", "host:"]),
        ("[defaults]\nmin_std_deviation = 1\n", ["[defaults]", "min_std_deviation:"]),
        ("[monitor]\nx = 1\n", ["unknown key 'monitor'"]),
        ("targets = 3\n", ["targets:"]),
        ("[[targets]\n", ["not valid TOML"]),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_the_target_and_the_key(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_udpbeat_monitor_with_a_bad_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[[targets]]\nname = 'db-1'\nhost = 'h'\ninterval = -2\n")
    status, out, err = run_main(capsys, "monitor", "--config", str(path), "--listen", "off")
    assert status == 2
    assert out == []
    assert len(err) == 1
    assert str(path) in err[0] and "'db-1'" in err[0] and "interval" in err[0]


def test_udpbeat_monitor_needs_targets(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_main(capsys, "monitor")
    assert status == 2
    assert len(err) == 1 and "no targets" in err[0]


@pytest.mark.parametrize(
    ("spec", "host", "port"),
    [
        ("example.net", "example.net", None),
        ("example.net:12001", "example.net", 12001),
        ("127.0.0.1:5", "127.0.0.1", 5),
        ("[::1]:7", "::1", 7),
        ("[::1]", "::1", None),
        ("::1", "::1", None),
    ],
)
def test_host_port_arguments(spec: str, host: str, port: int | None) -> None:
    assert split_host_port(spec) == (host, port)


@pytest.mark.parametrize("spec", ["", ":5", "host:x", "[::1", "[::1]x"])
def test_bad_host_port_arguments(spec: str) -> None:
    with pytest.raises(ConfigError):
        split_host_port(spec)


def test_command_line_targets_are_named_host_port() -> None:
    defaults = Defaults(port=12005)
    assert command_line_target("10.0.0.1", defaults).name == "10.0.0.1:12005"
    assert command_line_target("10.0.0.1", defaults, port=7).name == "10.0.0.1:7"
    assert command_line_target("[::1]:9", defaults).name == "[::1]:9"
    with pytest.raises(ConfigError):
        command_line_target("h:0", defaults)


# --- --shard I/N -----------------------------------------------------------------------------


def test_shards_are_disjoint_and_cover_every_target() -> None:
    config = parse_config({"targets": [{"name": f"t{i}", "host": "h"} for i in range(3000)]})
    shares = [shard.select(config.targets, index, 3) for index in range(3)]
    names = [target.name for share in shares for target in share]
    assert sorted(names) == sorted(target.name for target in config.targets)
    assert len(set(names)) == len(names)
    for share in shares:  # balanced, within a few standard deviations
        assert 850 < len(share) < 1150


def test_a_shard_is_the_same_in_every_process() -> None:
    # BLAKE2b of the name, not Python's randomised hash(): the same values everywhere.
    assert [shard.shard_of(f"t{i}", 4) for i in range(12)] == [0, 1, 2, 3, 1, 1, 3, 3, 3, 1, 2, 3]


def test_one_more_shard_moves_only_the_targets_it_takes() -> None:
    names = [f"target-{i}" for i in range(4000)]
    before = {name: shard.shard_of(name, 4) for name in names}
    after = {name: shard.shard_of(name, 5) for name in names}
    moved = [name for name in names if before[name] != after[name]]
    assert all(after[name] == 4 for name in moved)  # only to the new shard
    assert 600 < len(moved) < 1000  # about 1/5
    assert collections.Counter(after.values())[4] == len(moved)


@pytest.mark.parametrize("text", ["1", "3/3", "-1/3", "a/b", "0/0", "0/5000"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        shard.parse_shard(text)


def test_shard_numbers_start_at_zero() -> None:
    assert shard.parse_shard("0/3") == (0, 3)
    assert shard.parse_shard("2/3") == (2, 3)
