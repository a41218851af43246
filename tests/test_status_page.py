"""The status page's HTML and SVG, rendered from a fleet on a virtual clock: open outages first,
pages, the filter, escaping of everything a configuration can say, and the chart's columns."""

from __future__ import annotations

import re

from test_monitor_fleet import START, Net

from udpbeat.monitor.config import parse_config
from udpbeat.monitor.history import MinuteRow
from udpbeat.monitor.recorder import Recorder
from udpbeat.monitor.status import (
    Query,
    TargetHistory,
    columns,
    render_index,
    render_target,
    rtt_chart,
)

EVIL = '<script>alert("x")</script>'


def fleet(count: int = 250) -> Net:
    targets = [
        {
            "name": f"t{i:03d}",
            "host": f"127.1.{i // 250}.{i % 250 + 1}",
            "labels": {"role": "db" if i % 2 else "web"},
        }
        for i in range(count)
    ]
    targets[10]["name"] = EVIL
    targets[10]["labels"] = {"note": '"><img src=x onerror=alert(1)>'}
    config = parse_config(
        {
            "defaults": {"port": 12000, "detector": "consecutive", "max_misses": 3},
            "targets": targets,
        }
    )
    net = Net(config)
    net.alive -= {"t200", "t007", "t100"}
    net.run(START + 10)
    return net


def rows_of(html: str) -> list[tuple[str, str]]:
    """(state, name) of each row of the list, in order."""
    return re.findall(
        r'<tr><td><span class="state (\w+)">\w+</span></td><td><a [^>]*>([^<]*)</a>', html
    )


def test_open_outages_first_then_pages_of_a_hundred() -> None:
    net = fleet()
    recorder = Recorder(net.fleet, clock=lambda: net.now, wall=lambda: net.now + 1.7e9)
    recorder.watch_all()
    first = render_index(net.fleet, recorder, Query(), net.now, 1.7e9)
    rows = rows_of(first)
    assert len(rows) == 100
    assert [state for state, _ in rows[:3]] == ["DOWN"] * 3 and rows[3][0] == "UP"
    assert {name for _, name in rows[:3]} == {"t200", "t007", "t100"}
    assert "targets 1&ndash;100 of 250 · page 1 of 3" in first
    assert 'href="./?page=2" rel="next"' in first and 'rel="prev"' not in first
    assert "3 open outages" in first
    last = render_index(net.fleet, recorder, Query.parse({"page": "3"}), net.now, 1.7e9)
    assert len(rows_of(last)) == 50 and 'href="./?page=2" rel="prev"' in last
    assert 'rel="next"' not in last
    # Out of range and nonsense fall back to something sensible.
    assert rows_of(render_index(net.fleet, recorder, Query.parse({"page": "99"}), 0, 0)) == (
        rows_of(last)
    )
    assert Query.parse({"page": "-1", "per": "x", "state": "nope"}) == Query()


def test_the_filter_by_name_label_and_state() -> None:
    net = fleet()
    recorder = Recorder(net.fleet)
    by_label = rows_of(render_index(net.fleet, recorder, Query.parse({"q": "role=db"}), 0, 0))
    assert len(by_label) == 100 and all(int(name[1:]) % 2 for _, name in by_label)
    assert [name for _, name in by_label[:2]] == ["t007", "t001"]  # the DOWN one first
    down = rows_of(render_index(net.fleet, recorder, Query.parse({"state": "down"}), 0, 0))
    assert sorted(name for _, name in down) == ["t007", "t100", "t200"]
    one = render_index(net.fleet, recorder, Query.parse({"q": "T20", "state": "DOWN"}), 0, 0)
    assert [name for _, name in rows_of(one)] == ["t200"]
    assert 'value="T20"' in one and '<option value="DOWN" selected>' in one
    none = render_index(net.fleet, recorder, Query.parse({"q": "nothing-like-it"}), 0, 0)
    assert "No target matches." in none and "targets 0&ndash;0 of 0" in none


def test_every_name_and_label_is_escaped() -> None:
    net = fleet()
    recorder = Recorder(net.fleet)
    query = Query.parse({"q": '"><b>'})
    index = render_index(net.fleet, recorder, query, net.now, 0)
    both = index + render_index(net.fleet, recorder, Query(), net.now, 0)
    target = net.fleet.targets[EVIL]
    page = render_target(target, recorder, TargetHistory(), net.now, 0)
    for html in (both, page):
        assert "<script>alert" not in html and "<img" not in html and '"><b>' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in both
    assert "target?name=%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E" in both


def test_chart_columns_take_the_band_the_median_the_loss_and_the_worst_state() -> None:
    rows = [
        MinuteRow("t", 0.0, 60, 0, 60, 0, 0.001, 0.002, 0.004, 0.005, "UP"),
        MinuteRow("t", 60.0, 60, 0, 50, 10, 0.0005, 0.003, 0.008, 0.009, "SUSPECT"),
        MinuteRow("t", 120.0, 60, 5, 0, 60, None, None, None, None, "DOWN"),
    ]
    five = columns(rows, 0.0, 300.0, 300)
    assert len(five) == 1
    (col,) = five
    assert (col.low, col.high, col.median) == (0.0005, 0.009, 0.0025)
    assert col.loss == 70 / 180 and col.state == "DOWN"
    per_minute = columns(rows, 0.0, 300.0, 60)
    assert [c.state for c in per_minute] == ["UP", "SUSPECT", "DOWN", "", ""]
    assert per_minute[2].median is None and per_minute[2].loss == 1.0
    svg = rtt_chart(rows, 0.0, 300.0, 60, "RTT <hour>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'aria-label="RTT &lt;hour&gt;"' in svg
    assert "<title>DOWN</title>" in svg and "100.0% loss at" in svg and "16.7% loss at" in svg
