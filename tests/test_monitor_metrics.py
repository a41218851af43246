"""/metrics: the fast exposition is byte for byte prometheus_client's, in both formats."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families
from test_monitor_fleet import START, Net

from udpbeat.monitor.config import parse_config
from udpbeat.monitor.metrics import FAMILIES, FleetCollector, render

ODD_LABELS = {"quote": 'say "hi"', "slash": "a\\b", "newline": "one\ntwo", "utf8": "Zürich ✓"}


def make_net() -> Net:
    targets = [
        {"name": "plain", "host": "127.1.0.1"},
        {"name": 'odd "name" \\ here', "host": "127.1.0.2", "labels": ODD_LABELS},
        {"name": "phi", "host": "127.1.0.3", "detector": "phi", "labels": {"a": "1", "z": "2"}},
        {"name": "dead", "host": "127.1.0.4", "labels": {"state_of": "x", "lf": "y"}},
    ]
    net = Net(parse_config({"defaults": {"labels": {"env": "test"}}, "targets": targets}))
    net.alive.discard("dead")
    # A target that never answered is DOWN after about 8 s (the adaptive detector has no
    # history to go on): by 15 s its outage has lasted some 7 s.
    net.run(START + 15)
    return net


def collector_output(net: Net, openmetrics: bool) -> str:
    registry = CollectorRegistry()
    registry.register(FleetCollector(net.fleet, lambda: net.now))
    if openmetrics:
        return generate_openmetrics(registry).decode()
    return generate_latest(registry).decode()


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_render_is_prometheus_clients_output(openmetrics: bool) -> None:
    net = make_net()
    net.target("plain").stats.sent = 12_345_678  # Go's exponent format above 1e6
    fast = render(net.fleet, net.now, openmetrics=openmetrics)
    if openmetrics:
        fast += "# EOF\n"
    assert fast == collector_output(net, openmetrics)


def test_every_family_with_every_targets_labels() -> None:
    net = make_net()
    families = {
        family.name: family
        for family in text_string_to_metric_families(render(net.fleet, net.now, openmetrics=False))
    }
    assert set(families) == {family.name for family in FAMILIES}
    up = {sample.labels["target"]: sample.value for sample in families["udpbeat_up"].samples}
    assert up == {"plain": 1, 'odd "name" \\ here': 1, "phi": 1, "dead": 0}
    odd = next(
        sample.labels
        for sample in families["udpbeat_up"].samples
        if sample.labels["target"].startswith("odd")
    )
    assert odd == {"target": 'odd "name" \\ here', "env": "test", **ODD_LABELS}
    states = [s for s in families["udpbeat_state"].samples if s.labels["target"] == "dead"]
    assert {s.labels["state"]: s.value for s in states} == {
        "UNKNOWN": 0,
        "UP": 0,
        "SUSPECT": 0,
        "DOWN": 1,
    }
    assert families["udpbeat_rtt_seconds"].type == "histogram"
    assert families["udpbeat_heartbeats_sent"].type == "counter"
    outage = {s.labels["target"]: s.value for s in families["udpbeat_outage_seconds"].samples}
    assert outage["dead"] > 5 and outage["plain"] == 0


def test_openmetrics_parses_and_ends_with_eof() -> None:
    net = make_net()
    body = render(net.fleet, net.now, openmetrics=True) + "# EOF\n"
    names = {family.name for family in parse_om(body)}
    assert "udpbeat_replies" in names and "udpbeat_rtt_seconds" in names


def test_loss_ratio_is_left_out_until_known() -> None:
    net = Net(parse_config({"targets": [{"name": "new", "host": "127.1.0.1"}]}))
    text = render(net.fleet, net.now, openmetrics=False)
    assert "udpbeat_loss_ratio{" not in text
    net.run(START + 3)
    text = render(net.fleet, net.now, openmetrics=False)
    assert 'udpbeat_loss_ratio{target="new"} 0.0' in text
