"""The status page in a real browser: headless Chromium loads what ``udpbeat monitor --db``
serves for a target that is up, one that loses a third of its heartbeats, and one where nothing
listens, and the test reads what a person would see: the three states as words, the open
outage, the charts. Skips, saying why, where Debian's ``chromium`` is not installed."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import WAIT, Process, free_udp_port

from udpbeat.reflector import ReflectorConfig
from udpbeat.server import BackgroundServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)"
)


def browser(profile: Path, *args: str, timeout: float = 30.0) -> str:
    """Run headless Chromium once (a fresh profile, nothing fetched but the page) and return
    its stdout."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def text_of(dom: str) -> str:
    """The page's visible words: tags, scripts and styles out, entities decoded."""
    import html

    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return str(response.read().decode())


def wait_until(url: str, ready: object, timeout: float = WAIT) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        targets = {t["name"]: t for t in json.loads(get(f"{url}/api/targets"))["targets"]}
        if ready(targets):  # type: ignore[operator]
            return targets
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready in time: {targets}")
        time.sleep(0.1)


def test_a_person_sees_up_lossy_and_down_with_the_open_outage_and_charts(
    tmp_path: Path,
) -> None:
    up = BackgroundServer("127.0.0.1", 0, ReflectorConfig(rate_limit=0, log_events=False)).start()
    lossy = BackgroundServer(
        "127.0.0.1", 0, ReflectorConfig(rate_limit=0, log_events=False, loss=0.34, seed=5)
    ).start()
    closed = free_udp_port()
    config = tmp_path / "fleet.toml"
    config.write_text(
        f"""
[defaults]
interval = 0.1
timeout = 0.5
detector = "consecutive"
max_misses = 3

[[targets]]
name = "api-<i>1</i>"
host = "127.0.0.1"
port = {up.address[1]}
labels = {{ role = "api" }}

[[targets]]
name = "flaky-link"
host = "127.0.0.1"
port = {lossy.address[1]}
labels = {{ role = "edge" }}

[[targets]]
name = "dead-host"
host = "127.0.0.1"
port = {closed}
labels = {{ role = "db" }}
"""
    )
    db = tmp_path / "history.db"
    args = ["-m", "udpbeat", "monitor", "--config", str(config), "--db", str(db)]
    args += ["--listen", "127.0.0.1:0", "--view", "plain"]
    try:
        with Process(args) as process:
            deadline = time.monotonic() + WAIT
            while not any("status page on http://" in line for line in process.stderr_lines):
                assert time.monotonic() < deadline, process.output()
                time.sleep(0.05)
            line = next(x for x in process.stderr_lines if "status page on" in x)
            url = line.split("status page on ")[1].split("/,")[0]
            wait_until(
                url,
                lambda t: (
                    t["api-<i>1</i>"]["state"] == "UP"
                    and t["dead-host"]["state"] == "DOWN"
                    and t["flaky-link"]["lost"] >= 3
                    and t["flaky-link"]["state"] in ("UP", "SUSPECT")
                ),
            )

            dom = browser(tmp_path / "profile", "--dump-dom", f"{url}/")
            seen = text_of(dom)
            # Every state as a word, beside each target's name; the open outage first.
            rows = re.findall(r"\b(UP|SUSPECT|DOWN) ([\w<>/-]+) 127\.0\.0\.1:\d+", seen)
            # DOWN first, then SUSPECT (the lossy one may be, for a moment), then UP; by name.
            order = {"DOWN": 0, "SUSPECT": 1, "UP": 2}
            assert rows == sorted(rows, key=lambda row: (order[row[0]], row[1]))
            assert rows[0] == ("DOWN", "dead-host") and len(rows) == 3
            states = dict((name, state) for state, name in rows)
            assert states["dead-host"] == "DOWN" and states["api-<i>1</i>"] == "UP"
            assert "1 open outage" in seen and "down for" in seen
            # The name is shown as typed: escaped once, never taken for markup.
            assert "api-<i>1</i>" in seen and "&lt;" not in seen
            assert "<i>" not in dom and "api-&lt;i&gt;1&lt;/i&gt;" in dom
            flaky = re.search(r"flaky-link 127\.0\.0\.1:\d+ role=edge (\d+\.\d)%", seen)
            assert flaky is not None and float(flaky.group(1)) > 0, seen

            # The filter is a plain GET with the query: the browser's page and the server's
            # HTML (no script run at all) show the same.
            filtered = text_of(browser(tmp_path / "profile", "--dump-dom", f"{url}/?q=role%3Ddb"))
            assert "DOWN dead-host" in filtered and "flaky-link" not in filtered
            assert "targets 1\N{EN DASH}1 of 1" in filtered
            served = text_of(get(f"{url}/?q=role%3Ddb"))
            assert "DOWN dead-host" in served and "targets 1\N{EN DASH}1 of 1" in served

            # A target's page: its charts (SVG drawn by the server) and the outage, still open.
            page = browser(tmp_path / "profile", "--dump-dom", f"{url}/target?name=dead-host")
            assert (
                page.count("<svg") == 2 and 'aria-label="RTT and loss over the last hour"' in page
            )
            assert "still DOWN" in text_of(page)
            lossy_page = browser(
                tmp_path / "profile", "--dump-dom", f"{url}/target?name=flaky-link"
            )
            assert re.search(r"<rect [^>]*fill=\"#[0-9a-f]{6}\"><title>[\d.]+% loss", lossy_page)

            shot = tmp_path / "status.png"
            browser(
                tmp_path / "profile",
                "--hide-scrollbars",
                "--window-size=1100,420",
                f"--screenshot={shot}",
                f"{url}/",
            )
            png = shot.read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            assert struct.unpack(">II", png[16:24]) == (1100, 420)
            assert len(png) > 10_000  # a drawn page, not a blank one
    finally:
        up.stop()
        lossy.stop()


def test_the_page_refreshes_itself_in_place_and_spares_a_field_being_typed_in(
    tmp_path: Path,
) -> None:
    """The page's script fetches the page again every REFRESH_SECONDS and swaps its ``<main>``
    in, with no reload. Chromium's virtual time runs the timer at once; the server answers each
    fetch with the next version, so the dumped page shows which fetch it holds."""
    import http.server
    import threading

    from udpbeat.monitor.status import REFRESH_SECONDS, page

    served: list[str] = []

    class Versions(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/favicon"):
                self.send_error(404)
                return
            served.append(self.path)
            focus = "<input autofocus>" if "focus" in self.path else ""
            body = page("versions", f"{focus}<p>version {len(served)}</p>").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Versions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        # One refresh period and a half of virtual time: the first load, then one fetch.
        budget = f"--virtual-time-budget={int(REFRESH_SECONDS * 1500)}"
        refreshed = text_of(browser(tmp_path / "a", budget, "--dump-dom", url))
        assert "version 2" in refreshed and "version 1" not in refreshed
        assert served == ["/", "/"]
        # While a person types in a field (the filter), the page is left alone.
        served.clear()
        typing = text_of(browser(tmp_path / "b", budget, "--dump-dom", url + "?focus"))
        assert "version 1" in typing
        assert served == ["/?focus"]
    finally:
        server.shutdown()
        server.server_close()
