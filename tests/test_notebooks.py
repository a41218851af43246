"""The notebooks run in a real Jupyter kernel (nbclient + ipykernel) and show what they claim.

Each notebook has a cell tagged ``parameters`` (papermill style); the tests append assignments to
its source to point the notebook at an ephemeral loopback port and to keep the runs short.

The kernel is the Python running the tests: an installed ``python3`` kernelspec may name a bare
``python`` that resolves to another interpreter on ``PATH``, so the tests write their own spec
around ``sys.executable``.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

import udpbeat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 60
LOOPBACK = "127.0.0.1"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / "python3"
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel_json = {"argv": argv, "display_name": "Python 3 (tests)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel_json))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


def load(name: str, **parameters: object) -> nbformat.NotebookNode:
    """The notebook, with ``parameters`` assigned after the defaults of its parameters cell."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    tagged = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    defaults = {
        target.id
        for node in ast.parse(tagged[0].source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert set(parameters) <= defaults, f"not parameters of {name}: {set(parameters) - defaults}"
    tagged[0].source += "".join(f"\n{key} = {value!r}" for key, value in parameters.items())
    return nb


def notebook_client(
    nb: nbformat.NotebookNode, specs: KernelSpecManager, cwd: Path
) -> NotebookClient:
    """Runs ``nb`` in a fresh kernel of the tests' own Python, in ``cwd``."""
    kernel = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)
    return NotebookClient(
        nb,
        km=kernel,
        timeout=CELL_TIMEOUT,
        shutdown_kernel="immediate",
        resources={"metadata": {"path": str(cwd)}},
    )


def stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in cell.get("outputs", []) if o.output_type == "stream")


def result(cell: nbformat.NotebookNode) -> Any:
    """The value a cell displayed as its last expression (a dict's repr, read back)."""
    shown = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert shown, f"cell shows no result: {cell.source[:60]!r}"
    return ast.literal_eval(shown[-1].data["text/plain"])


def all_stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(stdout(cell) for cell in nb.cells if cell.cell_type == "code")


def code_cells(nb: nbformat.NotebookNode) -> Iterator[tuple[int, nbformat.NotebookNode]]:
    return ((i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code")


def cell_with(nb: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
    """The one code cell whose source contains ``text``."""
    found = [cell for _, cell in code_cells(nb) if text in cell.source]
    assert len(found) == 1, f"{len(found)} cells contain {text!r}"
    return found[0]


def accounted(counters: dict[str, Any]) -> int:
    """The sum of the server's outcome counters (each datagram ends in exactly one)."""
    outcomes = ("replied", "dropped_loss", "malformed", "rate_limited", "denied")
    return sum(counters.get(outcome, 0) for outcome in outcomes)


@pytest.mark.parametrize("name", ["UDPHeartbeatServer", "UDPHeartbeatClient", "UDPHeartbeatDemo"])
def test_notebook_is_stored_clean_and_valid(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for _, cell in code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_client_notebook_against_a_lossy_server(
    kernel_specs: KernelSpecManager, tmp_path: Path
) -> None:
    server = udpbeat.start_background_server(LOOPBACK, 0, loss=0.3, seed=11)
    try:
        port = server.address[1]
        nb = load("UDPHeartbeatClient", HOST=LOOPBACK, PORT=port, COUNT=25, TIMEOUT=0.2)
        # The notebook's client has ended when execute() returns (cleanup_kc: the kernel too).
        notebook_client(nb, kernel_specs, tmp_path).execute(cleanup_kc=True)
    finally:
        counters = server.stop()

    reports = result(nb.cells[-1])
    report, adaptive = reports["exercise"], reports["adaptive"]
    for run in (report, adaptive):
        assert run["type"] == "summary"
        assert run["target"] == f"{LOOPBACK}:{port}"
        assert run["malformed"] == {} and run["unknown"] == 0
    assert report["detector"]["name"] == "consecutive"
    assert adaptive["detector"]["name"] == "adaptive"
    # The adaptive run sends every heartbeat asked for and never calls this healthy server dead.
    assert adaptive["sent"] - adaptive["probes"] == 25 and adaptive["state"] != "DOWN"
    assert report["sent"] + adaptive["sent"] == counters.received
    assert counters.dropped_loss > 0
    # Every reply the server sent came back on loopback; only the last one of each run could
    # arrive after that run had finished.
    answered = sum(run["received"] + run["late"] for run in (report, adaptive))
    assert report["received"] > 0 and adaptive["received"] > 0
    assert counters.replied - 2 <= answered <= counters.replied
    lines = all_stdout(nb)
    assert "Sent: Heartbeat 1 " in lines
    assert re.search(r"Reply from \S+: Seq: \d+, Time Difference: -?\d+\.\d{6} seconds", lines)
    assert "Request timed out" in lines
    assert f"{report['received']} received" in lines
    side_by_side = stdout(cell_with(nb, "for name, r in"))
    assert re.search(r"exercise's rule: +\d+ sent .* verdict (UP|SUSPECT|DOWN)", side_by_side)
    assert re.search(r"adaptive: +\d+ sent .* verdict (UP|SUSPECT)\n", side_by_side)
    assert list(tmp_path.iterdir()) == []


class BackgroundProbe:
    """A probe with no count on its own thread, sending until :meth:`stop`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.report: udpbeat.ProbeReport | None = None
        self._started = threading.Event()
        self._prober: udpbeat.Prober | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.report = udpbeat.probe_sync(
            LOOPBACK,
            self.port,
            count=None,
            interval=0.01,
            timeout=0.5,
            watch=True,
            on_start=self._on_start,
        )

    def _on_start(self, prober: udpbeat.Prober) -> None:
        self._prober, self._loop = prober, asyncio.get_running_loop()
        self._started.set()

    def stop(self) -> udpbeat.ProbeReport:
        assert self._started.wait(10), "the probe did not start"
        assert self._loop is not None and self._prober is not None
        self._loop.call_soon_threadsafe(self._prober.stop)
        self._thread.join(10)
        assert self.report is not None, "the probe failed"
        return self.report


def test_server_notebook_serves_a_real_client(
    kernel_specs: KernelSpecManager, tmp_path: Path
) -> None:
    garbage = [b"Heartbeat 1", b"\xff\xfe"]
    count = 20 + len(garbage)
    # DURATION beyond the cell timeout: the notebook passes only if it stops by COUNT.
    nb = load(
        "UDPHeartbeatServer",
        HOST=LOOPBACK,
        PORT=0,
        SEED=5,
        COUNT=count,
        DURATION=3.0 * CELL_TIMEOUT,
    )
    probe: BackgroundProbe | None = None
    client = notebook_client(nb, kernel_specs, tmp_path)
    # Cell by cell: once the notebook shows its port, the probe starts; the server queues what it
    # did until the serving cell prints it. The probe sends until the notebook has finished.
    try:
        with client.setup_kernel(cleanup_kc=True):
            for index, cell in code_cells(nb):
                client.execute_cell(cell, index)
                running = re.search(r"running on \S+:(\d+)", stdout(cell))
                if running and probe is None:
                    port = int(running.group(1))
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                        for datagram in garbage:
                            sock.sendto(datagram, (LOOPBACK, port))
                    probe = BackgroundProbe(port)
    finally:
        report = probe.stop() if probe is not None else None
    assert report is not None, "the notebook never said where it runs"

    counters = result(nb.cells[-1])
    assert counters["received"] >= count
    assert counters["malformed"] == len(garbage)
    assert counters["received"] == accounted(counters)
    assert counters["replied"] + counters["dropped_loss"] + len(garbage) == counters["received"]
    assert counters["dropped_loss"] > 0
    # The notebook stopped its server while the probe still sent: the probe saw it go.
    assert report.sent > counters["received"] - len(garbage)
    assert report.refused > 0 and report.state == udpbeat.State.DOWN
    assert 0 < report.received == counters["replied"] - report.late

    served = stdout(cell_with(nb, "def describe(record)"))
    assert served.count("Responded to ") == counters["replied"]
    assert served.count("Simulating packet loss") == counters["dropped_loss"]
    assert served.count("Ignored a malformed datagram") == len(garbage)
    assert f"Server stopped after {counters['received']} datagrams ({count} datagrams)" in served
    assert "heartbeats dropped on purpose" in stdout(nb.cells[-1])
    assert list(tmp_path.iterdir()) == []


def test_server_notebook_stops_soon_after_its_client_goes_quiet(
    kernel_specs: KernelSpecManager, tmp_path: Path
) -> None:
    # No COUNT, DURATION beyond the cell timeout: the notebook passes only if IDLE stops it.
    nb = load("UDPHeartbeatServer", HOST=LOOPBACK, PORT=0, IDLE=0.5, DURATION=3.0 * CELL_TIMEOUT)
    client = notebook_client(nb, kernel_specs, tmp_path)
    with client.setup_kernel(cleanup_kc=True):
        for index, cell in code_cells(nb):
            client.execute_cell(cell, index)
            running = re.search(r"running on \S+:(\d+)", stdout(cell))
            if running:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    for seq in range(3):
                        sock.sendto(
                            f"Heartbeat {seq} {time.time()}".encode(),
                            (LOOPBACK, int(running.group(1))),
                        )
    served = stdout(cell_with(nb, "def describe(record)"))
    assert "Server stopped after 3 datagrams (no datagram for 0.5 s)" in served
    assert result(nb.cells[-1])["received"] == 3


def test_demo_notebook_shows_loss_and_detects_the_stop(
    kernel_specs: KernelSpecManager, tmp_path: Path
) -> None:
    nb = load("UDPHeartbeatDemo")
    notebook_client(nb, kernel_specs, tmp_path).execute(cleanup_kc=True)

    garbage = result(cell_with(nb, "garbage = "))
    assert garbage["malformed"] == garbage["received"] == 5 and garbage["replied"] == 0

    first = result(cell_with(nb, "report = await udpbeat.probe("))
    assert first["type"] == "summary"
    assert first["sent"] == 40 and 0 < first["received"] < 40
    assert first["received"] + first["lost"] + first["late"] == 40

    stop = stdout(cell_with(nb, "STOP_AFTER = "))
    assert "server stopped" in stop
    assert re.search(r"stop detected \d+\.\d+ s after the server stopped", stop)
    assert "final state: DOWN" in stop
    assert re.search(r"heartbeat +\d+: refused", stop)

    # The plots of both runs, from their events: shown inline as PNG, written nowhere.
    plotted = cell_with(nb, "plots.rtt_over_time(runs)")
    shown = stdout(plotted)
    lossy = re.search(r"lossy server: (\d+) replies, (\d+) misses, \d+ outage\(s\)", shown)
    assert lossy and int(lossy[1]) == first["received"]
    assert int(lossy[2]) == first["lost"] + first["refused"]
    assert re.search(
        r"server that stops: \d+ replies, \d+ misses, [1-9]\d* outage\(s\), ends DOWN", shown
    )
    images = [o for o in plotted.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3
    for image in images:
        png = base64.b64decode(image.data["image/png"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert struct.unpack(">II", png[16:24])[0] == 1000  # 10 inches at 100 dpi

    counters = result(nb.cells[-1])
    assert counters["malformed"] == 5
    assert counters["dropped_loss"] > 0
    assert counters["received"] == accounted(counters)
    assert list(tmp_path.iterdir()) == []
