"""The README's set-up: exactly two commands, CI runs the test one verbatim, and what they name.

The commands themselves were run by hand on Debian 12's system Python (marked externally
managed), with and without its ``ensurepip`` and ``pip`` (hidden by a private mount
namespace); running them here would install packages from the network inside the test suite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

from helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def setup_commands() -> list[str]:
    """The ``sh`` blocks of the README's set-up section, one command each."""
    section = README.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [block.strip() for block in blocks]


def test_the_readme_has_exactly_two_set_up_commands_each_in_its_own_venv() -> None:
    commands = setup_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    for command in commands:
        assert "\n" not in command
        assert command.startswith("(python3 -m venv .venv || python3 -m venv --without-pip")
        # Nothing is installed outside .venv: every pip runs as the venv's Python.
        assert " pip " not in command.replace(".venv/bin/python -m pip ", "")
    assert demo.endswith("&& .venv/bin/udpbeat demo")
    assert tests.endswith("&& .venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command_exactly() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line.strip() for line in script if line and not line.startswith("#")]
    # The test command last, word for word; before it only the set-up and the installation of
    # the Debian packages the tests use.
    assert commands[-1] == setup_commands()[1]
    assert commands.count(setup_commands()[1]) == 1
    assert not any("pytest" in line for line in commands[:-1])


def test_the_license_pyproject_names_is_there() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    for name in project["license-files"]:
        text = (ROOT / name).read_text(encoding="utf-8")
        assert text.startswith("MIT License") and "udpbeat authors" in text


def test_the_notebooks_extra_can_run_them_headless() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = " ".join(project["optional-dependencies"]["notebooks"])
    for needed in ("ipykernel", "nbconvert", "jupyterlab"):
        assert needed in extra


def test_shell_completion_as_the_readme_says() -> None:
    assert "_UDPBEAT_COMPLETE=bash_source udpbeat" in README
    result = subprocess.run(
        [sys.executable, "-c", "from udpbeat.cli import main; main()"],
        env={**os.environ, "_UDPBEAT_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "_udpbeat_completion()" in result.stdout
    assert "-F _udpbeat_completion udpbeat" in result.stdout
