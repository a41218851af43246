"""What users trip on, found by running udpbeat as the README tells them to.

Each test here was written for a defect seen in such a run: a bad value must be one line that
names its flag, an error at start-up must be that one line and nothing more.
"""

from __future__ import annotations

import pytest

from tests.helpers import run_main


def test_a_monitor_whose_target_does_not_resolve_says_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # It used to say "udpbeat monitor: stopped; " too, of a monitor that had never started.
    status, out, err = run_main(capsys, "monitor", "nosuch.invalid", "--listen", "off")
    assert status == 2
    assert out == []
    assert len(err) == 1, err
    assert err[0].startswith("udpbeat: error: ")
    assert "nosuch.invalid" in err[0]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--listen", "garbage"),
        ("--listen", "127.0.0.1:99999"),
        ("--rtt-buckets", "x"),
        ("--rtt-buckets", "0.2,0.1"),
    ],
)
def test_a_bad_monitor_value_names_its_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    status, out, err = run_main(capsys, "monitor", "127.0.0.1", flag, value)
    assert status == 2
    assert out == []
    assert len(err) == 1, err
    assert f"'{flag}'" in err[0]
    assert repr(value) in err[0]
