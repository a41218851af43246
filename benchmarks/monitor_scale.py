"""udpbeat monitor at 1, 1,000 and 10,000 targets, with fping and smokeping_prober beside it.

One udpbeat reflector bound to 0.0.0.0 (``--rate-limit 0``: its one source is the monitor)
answers every target 127.1.x.y, one loopback address per target. For each size the monitor
(``udpbeat monitor --config``, interval 1 s, in its own process) is measured once all its
targets are UP:

- CPU (cores, user + system, from /proc) over the window, and per heartbeat sent;
- RSS at the end of the window;
- RTT p50 over targets (the median of each target's recent p50, ``/api/targets``);
- the spread of send times: in 10 ms bins over the last second, the busiest bin against the
  mean (1.0 is perfectly even; a burst would be 100x), sampled through the window;
- ``/metrics``: time to fetch it over loopback (median of three) and its size;
- then the reflector is killed, and the time until every target is DOWN is taken from the
  monitor's ``--events`` file, with the confirmation probes sent and the global probe budget.

``fping -l`` and ``prometheus-smokeping-prober`` then probe the same addresses at 1 Hz (ICMP
echo, which loopback answers; smokeping_prober needs raw ICMP, so root or CAP_NET_RAW), for
CPU, RSS and RTT (fping's per-target average; smokeping's mean from its histogram). Tools
that are missing or fail are reported as such. Every process is started and stopped here, and
every wait has a deadline. On a shared machine the figures are noisy: the load average is
printed before and after.

    python benchmarks/monitor_scale.py                      # 1, 1000, 10000; a few minutes
    python benchmarks/monitor_scale.py --targets 1000 --measure 5 --tools none
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")
#: Longest wait for anything (all targets UP, a tool to start, a line to appear).
WAIT = 90.0


@dataclass
class Row:
    targets: int
    tool: str
    cpu_cores: float | None = None
    cpu_us_per_heartbeat: float | None = None
    heartbeats_per_s: float | None = None
    rss_mb: float | None = None
    rtt_p50_ms: float | None = None
    spread_peak_to_mean: float | None = None
    metrics_s: float | None = None
    metrics_mb: float | None = None
    down_p50_s: float | None = None
    down_max_s: float | None = None
    probes: int | None = None
    probe_budget: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def address(index: int) -> str:
    return f"127.1.{index // 250}.{index % 250 + 1}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def get(url: str, timeout: float = 30.0, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def get_json(url: str) -> Any:
    return json.loads(get(url))


def wait_until(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if check():
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "0.0.0.0") -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[Any] | None, signum: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def started(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kwargs)
    try:
        yield process
    finally:
        stop(process)


def monitor_url(monitor: subprocess.Popen[Any], stderr_path: Path) -> str:
    """The base URL of a started monitor's HTTP server, once its first line (written to
    ``stderr_path``) names it; fails if the monitor exits first."""
    url = ""

    def listening() -> bool:
        nonlocal url
        said = stderr_path.read_text()
        if monitor.poll() is not None:
            raise RuntimeError(f"the monitor exited: {said}")
        if "metrics on " not in said:
            return False
        url = said.split("metrics on ")[1].split("/metrics")[0]
        return True

    wait_until("monitor listening", listening)
    return url


def start_reflector(port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            *(PYTHON, "-m", "udpbeat", "server", "--host", "0.0.0.0", "--port", str(port)),
            *("--rate-limit", "0", "--quiet", "--json"),
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if '"listening"' not in line:
        stop(process)
        raise RuntimeError(f"the reflector did not start: {line!r}")
    return process


def write_config(path: Path, count: int, port: int, detector: str) -> None:
    lines = [f'[defaults]\nport = {port}\ninterval = 1.0\ntimeout = 1.0\ndetector = "{detector}"\n']
    lines += [f'[[targets]]\nname = "t{i:05d}"\nhost = "{address(i)}"\n' for i in range(count)]
    path.write_text("\n".join(lines))


def measure_monitor(
    count: int, detector: str, port: int, work: Path, measure: float, stop_phase: bool
) -> Row:
    row = Row(count, f"udpbeat monitor ({detector})")
    config, events = work / f"m{count}-{detector}.toml", work / f"events-{count}-{detector}.jsonl"
    write_config(config, count, port, detector)
    events.unlink(missing_ok=True)
    reflector = start_reflector(port)
    stderr_path = work / "monitor.err"
    try:
        with (
            stderr_path.open("w") as stderr,
            started(
                [
                    *(PYTHON, "-m", "udpbeat", "monitor", "--config", str(config)),
                    *("--listen", "127.0.0.1:0", "--view", "plain", "--events", str(events)),
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            ) as monitor,
        ):
            url = monitor_url(monitor, stderr_path)
            wait_until(
                f"all {count} targets UP",
                lambda: get_json(f"{url}/api/monitor")["states"]["UP"] == count,
            )
            time.sleep(3.0)  # settle
            before = get_json(f"{url}/api/monitor")
            cpu0, t0 = cpu_seconds(monitor.pid), time.monotonic()
            spreads = []
            while time.monotonic() - t0 < measure:
                time.sleep(min(2.0, max(0.0, measure - (time.monotonic() - t0))))
                spread = get_json(f"{url}/api/monitor")["spread"]
                if spread["sends"] >= 100:
                    spreads.append(spread["peak_to_mean"])
            cpu1, t1 = cpu_seconds(monitor.pid), time.monotonic()
            after = get_json(f"{url}/api/monitor")
            sends = after["sends"] - before["sends"]
            row.cpu_cores = (cpu1 - cpu0) / (t1 - t0)
            row.heartbeats_per_s = sends / (t1 - t0)
            row.cpu_us_per_heartbeat = (cpu1 - cpu0) / sends * 1e6 if sends else None
            row.rss_mb = rss_mb(monitor.pid)
            row.spread_peak_to_mean = statistics.median(spreads) if spreads else None
            targets = json.loads(get(f"{url}/api/targets"))["targets"]
            p50s = [t["rtt_ms"]["p50"] for t in targets if t["rtt_ms"]["p50"] is not None]
            row.rtt_p50_ms = statistics.median(p50s) if p50s else None
            timings, size = [], 0
            for _ in range(3):
                began = time.monotonic()
                size = len(get(f"{url}/metrics", timeout=60))
                timings.append(time.monotonic() - began)
            row.metrics_s = statistics.median(timings)
            row.metrics_mb = size / 1e6
            row.extra["metrics_openmetrics_s"] = _timed(
                lambda: get(
                    f"{url}/metrics",
                    timeout=60,
                    headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                )
            )
            if stop_phase:
                stop_and_detect(row, count, url, reflector, events)
    finally:
        stop(reflector, signal.SIGKILL)
    return row


def _timed(fetch: Callable[[], bytes]) -> float:
    began = time.monotonic()
    fetch()
    return time.monotonic() - began


def stop_and_detect(
    row: Row, count: int, url: str, reflector: subprocess.Popen[str], events: Path
) -> None:
    before = get_json(f"{url}/api/monitor")
    budget = before["probe_budget"]
    stopped = time.time()
    reflector.kill()  # the socket closes at once: ICMP port unreachable from now on
    reflector.wait()
    with contextlib.suppress(TimeoutError):
        wait_until(
            "every target DOWN",
            lambda: get_json(f"{url}/api/monitor")["states"]["DOWN"] == count,
            timeout=60,
        )
    elapsed = time.time() - stopped
    after = get_json(f"{url}/api/monitor")
    downs: dict[str, float] = {}
    for line in events.read_text().splitlines():
        record = json.loads(line)
        if record["new"] == "DOWN" and record["time"] >= stopped:
            downs.setdefault(record["target"], record["time"] - stopped)
    if len(downs) == count:
        ordered = sorted(downs.values())
        row.down_p50_s = ordered[len(ordered) // 2]
        row.down_max_s = ordered[-1]
    else:
        row.note += f"{count - len(downs)} of {count} not DOWN after {elapsed:.0f} s; "
    row.probes = after["probes_sent"] - before["probes_sent"]
    if budget is not None:
        granted = after["probe_budget"]["granted"] - budget["granted"]
        allowed = budget["rate"] * elapsed + budget["burst"]
        row.probe_budget = f"{budget['rate']:g}/s burst {budget['burst']}: " + (
            "respected" if granted <= allowed + 1 else f"EXCEEDED ({granted} > {allowed:.0f})"
        )
        row.extra["probes_waited"] = after["probe_budget"]["waited"] - budget["waited"]


def measure_fping(count: int, work: Path, measure: float) -> Row:
    row = Row(count, "fping -l (ICMP)")
    fping = shutil.which("fping")
    if fping is None:
        row.note = "fping not installed"
        return row
    targets = work / f"fping-{count}.txt"
    targets.write_text("".join(address(i) + "\n" for i in range(count)))
    interval = max(0.01, 1000.0 / count * 0.9)  # all targets within the period
    summary = work / "fping.err"
    with (
        summary.open("w") as stderr,
        started(
            [
                *(fping, "-l", "-Q", "3600", "-p", "1000", "-i", f"{interval:g}", "-t", "1000"),
                *("-f", str(targets)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        ) as process,
    ):
        time.sleep(3.0)
        if process.poll() is not None:
            row.note = f"fping exited: {summary.read_text()[-200:]}"
            return row
        cpu0, t0 = cpu_seconds(process.pid), time.monotonic()
        time.sleep(measure)
        cpu1, t1 = cpu_seconds(process.pid), time.monotonic()
        row.rss_mb = rss_mb(process.pid)
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
    sent, averages = 0, []
    for line in summary.read_text().splitlines():
        if "xmt/rcv/%loss" in line:
            counts = line.split("=")[1].split(",")[0].strip().split("/")
            sent += int(counts[0])
            if "min/avg/max" in line:
                averages.append(float(line.rsplit("=", 1)[1].split("/")[1]))
    duration = t1 - t0
    row.cpu_cores = (cpu1 - cpu0) / duration
    row.heartbeats_per_s = float(count)
    row.cpu_us_per_heartbeat = (cpu1 - cpu0) / (count * duration) * 1e6
    row.rtt_p50_ms = statistics.median(averages) if averages else None
    row.extra["pings_sent"] = sent
    row.note = "RTT: median of per-target averages"
    return row


def measure_smokeping(count: int, work: Path, measure: float) -> Row:
    row = Row(count, "smokeping_prober (ICMP)")
    prober = shutil.which("prometheus-smokeping-prober") or shutil.which("smokeping_prober")
    if prober is None:
        row.note = "smokeping_prober not installed"
        return row
    port = free_port(socket.SOCK_STREAM, "127.0.0.1")
    empty = work / "smokeping.yml"
    empty.write_text("targets: []\n")
    log = work / "smokeping.err"
    addresses = [address(i) for i in range(count)]
    with (
        log.open("w") as stderr,
        started(
            [
                *(prober, f"--config.file={empty}", f"--web.listen-address=127.0.0.1:{port}"),
                *("--ping.interval=1s", "--privileged", "--log.level=warn", *addresses),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        ) as process,
    ):
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_until("smokeping_prober up", lambda: bool(get(url)), timeout=60)
        except TimeoutError:
            row.note = f"did not come up: {log.read_text()[-300:]}"
            return row
        time.sleep(3.0)
        cpu0, t0 = cpu_seconds(process.pid), time.monotonic()
        time.sleep(measure)
        cpu1, t1 = cpu_seconds(process.pid), time.monotonic()
        row.rss_mb = rss_mb(process.pid)
        began = time.monotonic()
        body = get(url, timeout=60).decode()
        row.metrics_s = time.monotonic() - began
        row.metrics_mb = len(body) / 1e6
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    requests = 0.0
    for line in body.splitlines():
        if line.startswith("smokeping_response_duration_seconds_sum{"):
            sums[line.split("}")[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("smokeping_response_duration_seconds_count{"):
            counts[line.split("}")[0].replace("_count", "_sum")] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("smokeping_requests_total{"):
            requests += float(line.rsplit(" ", 1)[1])
    means = [sums[key] / counts[key] * 1e3 for key in sums if counts.get(key)]
    duration = t1 - t0
    row.cpu_cores = (cpu1 - cpu0) / duration
    row.heartbeats_per_s = float(count)
    row.cpu_us_per_heartbeat = (cpu1 - cpu0) / (count * duration) * 1e6
    row.rtt_p50_ms = statistics.median(means) if means else None
    row.extra["requests_total"] = requests
    row.note = "RTT: median of per-target means"
    return row


def cell(value: float | int | str | None, fmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return format(value, fmt)


def table(rows: list[Row]) -> str:
    head = (
        "| targets | tool | CPU (cores) | CPU per heartbeat | RSS | RTT p50 | send spread "
        "(busiest 10 ms / mean) | /metrics | all DOWN after stop (p50 / max) | probes "
        "(global budget) |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    for r in rows:
        metrics = (
            "—" if r.metrics_s is None else f"{r.metrics_s:.2f} s, {cell(r.metrics_mb, '.1f')} MB"
        )
        openmetrics = r.extra.get("metrics_openmetrics_s")
        if openmetrics is not None:
            metrics += f" (OpenMetrics {openmetrics:.2f} s)"
        if r.cpu_cores is None and r.note:
            lines.append(f"| {r.targets:,} | {r.tool}: {r.note} |" + " |" * 8)
            continue
        down = "—" if r.down_max_s is None else f"{r.down_p50_s:.2f} / {r.down_max_s:.2f} s"
        probes = "—" if r.probes is None else f"{r.probes:,} ({r.probe_budget or 'none'})"
        lines.append(
            f"| {r.targets:,} | {r.tool} | {cell(r.cpu_cores, '.3f')} | "
            f"{cell(r.cpu_us_per_heartbeat, ',.0f')} µs | {cell(r.rss_mb, '.0f')} MB | "
            f"{cell(r.rtt_p50_ms, '.3f')} ms | {cell(r.spread_peak_to_mean, '.2f')} | "
            f"{metrics} | {down} | {probes} |"
        )
    return "\n".join(lines)


def goals(rows: list[Row], largest: int) -> list[str]:
    """The issue's goals at the largest size, each met or not."""
    out = []
    main = next(
        (r for r in rows if r.targets == largest and r.tool == "udpbeat monitor (adaptive)"), None
    )
    one = next((r for r in rows if r.targets == 1 and r.tool.startswith("udpbeat")), None)
    fping = next((r for r in rows if r.targets == largest and r.tool.startswith("fping")), None)
    if main is None:
        return out

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT met")

    cpu = main.cpu_cores
    out.append(
        f"CPU {cell(cpu, '.3f')} cores <= 0.5: {verdict(None if cpu is None else cpu <= 0.5)}"
    )
    if fping is not None and fping.cpu_us_per_heartbeat and main.cpu_us_per_heartbeat:
        ratio = main.cpu_us_per_heartbeat / fping.cpu_us_per_heartbeat
        out.append(
            f"CPU per heartbeat {ratio:.1f}x fping's: "
            f"{verdict(main.cpu_us_per_heartbeat <= fping.cpu_us_per_heartbeat)}"
        )
    rss = main.rss_mb
    out.append(f"RSS {cell(rss, '.0f')} MB <= 300: {verdict(None if rss is None else rss <= 300)}")
    m = main.metrics_s
    out.append(f"/metrics {cell(m, '.2f')} s <= 1: {verdict(None if m is None else m <= 1)}")
    if one is not None and one.rtt_p50_ms and main.rtt_p50_ms:
        ratio = main.rtt_p50_ms / one.rtt_p50_ms
        out.append(f"RTT p50 {ratio:.2f}x the one-target p50 <= 1.5: {verdict(ratio <= 1.5)}")
    for row in rows:
        if row.targets == largest and row.tool.startswith("udpbeat"):
            d = row.down_max_s
            respected = row.probe_budget is not None and "respected" in row.probe_budget
            out.append(
                f"{row.tool}: every target DOWN {cell(d, '.2f')} s after the stop <= 2 s: "
                f"{verdict(None if d is None else d <= 2)}; probe budget "
                f"{'respected' if respected else row.probe_budget or 'none'}"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="1,1000,10000", help="sizes, comma-separated")
    parser.add_argument("--measure", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument(
        "--detectors",
        default="adaptive,phi",
        help="detectors to run the stop with at the largest size (the first at every size)",
    )
    parser.add_argument("--tools", default="fping,smokeping", help="'none' to skip them")
    parser.add_argument(
        "--smokeping-max",
        type=int,
        default=1000,
        help="largest size smokeping_prober is run at (it needs 1.5 cores for 1,000 here)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    sizes = [int(size) for size in args.targets.split(",")]
    detectors = args.detectors.split(",")
    tools = [] if args.tools == "none" else args.tools.split(",")
    if max(sizes) > 62500:
        parser.error("at most 62500 targets (127.1.0.1 to 127.250.249.250 is plenty)")
    print(
        f"# {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; interval 1 s; {args.measure:g} s per measurement"
    )
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    began = time.monotonic()
    rows: list[Row] = []
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="udpbeat-monitor-scale-") as tmp:
        work = Path(tmp)
        for size in sizes:
            for detector in detectors if size == max(sizes) else detectors[:1]:
                row = measure_monitor(size, detector, port, work, args.measure, stop_phase=True)
                rows.append(row)
                print(f"# {row.tool} x {size}: done", flush=True)
            if "fping" in tools:
                rows.append(measure_fping(size, work, args.measure))
            if "smokeping" in tools and size <= args.smokeping_max:
                rows.append(measure_smokeping(size, work, args.measure))
            elif "smokeping" in tools:
                skipped = Row(size, "smokeping_prober (ICMP)")
                skipped.note = f"not run above {args.smokeping_max} targets (--smokeping-max)"
                rows.append(skipped)
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# {time.monotonic() - began:.0f} s in all\n")
    print(table(rows))
    print()
    for line in goals(rows, max(sizes)):
        print(f"- {line}")
    notes = [f"{r.tool} x {r.targets}: {r.note}" for r in rows if r.note]
    for note in notes:
        print(f"- note: {note}")
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
