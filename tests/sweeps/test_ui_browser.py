"""``lrsweep ui`` in a real browser: headless Chromium finds a sweep, its trials and its report.

Chromium is Debian's ``chromium`` (``make system-deps``), driven over the Chrome DevTools
Protocol with ``websocket-client``. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from _server_helpers import lrsweep_ui

from sweeps.tracking import Tracker, default_tracking_uri

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
REPORT_HTML = """<!doctype html><html><body>
<h1>Strategy comparison</h1>
<table><tr><th>strategy</th><th>best valid_loss</th></tr>
<tr><td>lr_finder</td><td>0.2510</td></tr><tr><td>grid</td><td>0.2497</td></tr></table>
</body></html>"""
TRIALS = ("trial-grid-lr0.003-seed0", "trial-lr_finder-valley-seed0")


class Chromium:
    """Headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], suppress_origin=True, timeout=60
        )
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call(
            "Target.setAutoAttach", autoAttach=True, waitForDebuggerOnStart=False, flatten=True
        )

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def js(self, expression: str, session: str | None = None) -> Any:
        result = self.call(
            "Runtime.evaluate",
            session=session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        return result["result"].get("value")

    def text(self, session: str | None = None) -> str:
        return self.js("document.body ? document.body.innerText : ''", session) or ""

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.3)
        self.screenshot(ARTIFACTS / "mlflow-ui-failure.png")
        raise AssertionError(f"timed out waiting for {what}; page text:\n{self.text()[:3000]}")

    def frame_sessions(self) -> list[str]:
        self.call("Runtime.evaluate", expression="0")  # drain pending events
        return [
            e["params"]["sessionId"]
            for e in self.events
            if e.get("method") == "Target.attachedToTarget"
            and e["params"]["targetInfo"]["type"] == "iframe"
        ]

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An embedded store (``<cwd>/.lrsweep``) holding one sweep with its report and 2 trials."""
    cwd = tmp_path_factory.mktemp("ui")
    tracker = Tracker(default_tracking_uri(cwd))
    exp_id = tracker.ensure_experiment("digits-lr")
    parent = tracker.start_run(exp_id, run_name="digits-lr-sweep", tags={"sweeps.kind": "sweep"})
    tracker.log_text(parent, REPORT_HTML, "report.html")
    for name in TRIALS:
        child = tracker.start_run(exp_id, run_name=name, parent_run_id=parent)
        tracker.log_metrics(child, [("valid_loss", 0.3, 0), ("valid_loss", 0.25, 1)])
        tracker.end_run(child)
    tracker.end_run(parent)
    return {"cwd": str(cwd), "experiment_id": exp_id, "parent": parent}


@pytest.fixture(scope="module")
def ui(sweep_store: dict[str, str]) -> Iterator[str]:
    """``lrsweep ui`` on the embedded default store, on a free loopback port."""
    with lrsweep_ui(Path(sweep_store["cwd"])) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Chromium]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing; run `make system-deps` (apt-get install chromium).")
    profile = Path(tempfile.mkdtemp(prefix="lrsweep-chromium-"))
    chromium = Chromium(profile)
    try:
        yield chromium
    finally:
        chromium.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_browser_finds_the_sweep_its_trials_and_its_report(ui, sweep_store, browser) -> None:
    exp_id, parent = sweep_store["experiment_id"], sweep_store["parent"]
    browser.goto(f"{ui}/")
    browser.wait("the experiment list", lambda: "digits-lr" in browser.text())
    browser.js(f"document.querySelector('a[href*=\"experiments/{exp_id}\"]').click()")
    # MLflow 3 opens experiments in its GenAI view; sweeps live in "Model training".
    browser.wait(
        "the Model training switch",
        lambda: browser.js(
            "(() => { const b = Array.from(document.querySelectorAll('button,[role=button]'))"
            ".find(b => b.innerText.trim() === 'Model training'); b && b.click(); return !!b })()"
        ),
    )
    browser.wait("the sweep's parent run", lambda: "digits-lr-sweep" in browser.text())
    expand = (
        "(() => { const row = Array.from(document.querySelectorAll('[role=row]'))"
        ".find(r => r.innerText.includes('digits-lr-sweep'));"
        " const b = row && row.querySelector('button'); b && b.click(); return !!b })()"
    )
    browser.wait("the expander of the parent run", lambda: browser.js(expand))
    browser.wait("both trial runs", lambda: all(name in browser.text() for name in TRIALS))
    browser.screenshot(ARTIFACTS / "mlflow-ui.png")

    browser.goto(f"{ui}/#/experiments/{exp_id}/runs/{parent}/artifacts/report.html")
    browser.wait("the artifact list", lambda: "report.html" in browser.text())
    session = browser.wait(
        "the report rendered in an iframe",
        lambda: next(
            (s for s in browser.frame_sessions() if "Strategy comparison" in browser.text(s)), None
        ),
    )
    report = browser.text(session)
    assert "lr_finder" in report and "0.2497" in report
    browser.screenshot(ARTIFACTS / "mlflow-ui-report.png")
    assert (ARTIFACTS / "mlflow-ui.png").stat().st_size > 10_000
