"""A real browser opens the report from disk: headless Chromium driven over the DevTools protocol.

No websocket client or driver download is needed: Chromium's ``--remote-debugging-pipe`` speaks
the DevTools protocol as NUL-separated JSON on file descriptors 3 (commands in) and 4 (replies
out). Skipped, with the reason, when no Chromium binary exists (``.ci/run`` installs Debian's).
Set TERNBENCH_SCREENSHOT=PATH to keep a screenshot of the rendered page.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
    # Keep Chromium from waiting on a network that is not there.
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic", "--disable-extensions", "--no-default-browser-check", "--window-size=1400,1000",
)


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class DevTools:
    """A minimal DevTools-protocol client over --remote-debugging-pipe."""

    def __init__(self, binary: str, timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="ternbench-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def child_fds():  # runs in the child before exec: put the pipe ends on fds 3 and 4
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"], preexec_fn=child_fds,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, pass_fds=(3, 4))  # close_fds runs after preexec_fn: keep 3 and 4
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            if select.select([self._res_r], [], [], left)[0]:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, m in enumerate(self.events):
            if m.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._read(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._res_r)
        shutil.rmtree(self.profile, ignore_errors=True)


def console_errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.exceptionThrown":
            out.append(json.dumps(p.get("exceptionDetails", {}))[:500])
        elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(json.dumps(p.get("args", []))[:500])
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(p["entry"].get("text", "")[:500])
    return out


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium binary (install Debian's `chromium`, or set CHROMIUM=/path/to/chrome)")
    dt = DevTools(binary)
    try:
        yield dt
    finally:
        dt.close()


def test_report_in_a_real_browser(browser, pipeline_results, pipeline_report):
    from reports.loading import load_results

    n_models = load_results(pipeline_results).df["model_id"].nunique()
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        browser.send(f"{domain}.enable", session=s)
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=s)
    browser.send("Page.navigate", {"url": Path(pipeline_report).resolve().as_uri()}, session=s)
    browser.wait_event("Page.loadEventFired")

    def js(expr: str):
        r = browser.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=s)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    assert js("document.querySelectorAll('#leaderboard tbody tr').length") == n_models
    assert js("document.querySelectorAll('#details tbody tr').length") == n_models
    assert js("document.querySelectorAll('#per-dataset tbody tr').length") == 3
    assert js("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)") is True

    # The main table fits a 1400 px window: nothing of it is off-screen or scrolls sideways.
    assert js("window.innerWidth") == 1400
    right, scroll, client = js("(() => { const t = document.querySelector('#leaderboard'); "
                               "return [t.getBoundingClientRect().right, t.scrollWidth, t.clientWidth]; })()")
    assert right <= 1400 and scroll <= client
    assert js("document.documentElement.scrollWidth <= window.innerWidth") is True

    def click(table: str, col: str):
        th = f"document.querySelector('#{table} th[data-key={col}]')"
        js(f"{th}.scrollIntoView()")
        x, y = js(f"(() => {{ const r = {th}.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            browser.send("Input.dispatchMouseEvent",
                         {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}, session=s)

    def values(table: str, col: str):
        return js(f"Array.from(document.querySelectorAll('#{table} tbody td[data-key={col}]'))"
                  ".map(td => td.dataset.value === '' ? null : parseFloat(td.dataset.value))")

    # Main table: a real mouse click on a header sorts the rows under the pinned baseline.
    pinned = js("document.querySelector('#leaderboard tbody tr').dataset.model")
    assert js("document.querySelector('#leaderboard tbody tr').dataset.pinned") == "1"
    for order in ("ascending", "descending"):
        click("leaderboard", "avg")
        assert js("document.querySelector('#leaderboard th[data-key=avg]').getAttribute('aria-sort')") == order
        assert js("document.querySelector('#leaderboard tbody tr').dataset.model") == pinned
        rest = [v for v in values("leaderboard", "avg")[1:] if v is not None]
        assert rest == sorted(rest, reverse=order == "descending")

    # Details table (opened first): every column sorts too, ascending then descending.
    js("document.querySelector('#details-section').open = true")
    col = "image_latency_b1_ms"
    before = values("details", col)
    click("details", col)
    asc = values("details", col)
    assert sorted(asc) == sorted(before) and asc == sorted(asc)
    click("details", col)
    assert values("details", col) == sorted(asc, reverse=True)

    shot = os.environ.get("TERNBENCH_SCREENSHOT")
    if shot:
        data = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=s)
        Path(shot).write_bytes(base64.b64decode(data["data"]))
    assert console_errors(browser.events) == []


def test_main_table_sorts_under_the_pinned_baseline(browser, synthetic_results, tmp_path):
    from reports import render_report

    page = render_report(synthetic_results, tmp_path / "report.html")
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime"):
        browser.send(f"{domain}.enable", session=s)
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=s)
    browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=s)
    browser.wait_event("Page.loadEventFired")

    def js(expr: str):
        r = browser.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=s)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    order = "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.dataset.model)"
    # Default: the baseline, then by difference, best first.
    assert js(order) == ["tiny@fp16", "tiny@fp32", "tiny@q-ffn", "tiny@q-all"]
    th = "document.querySelector('#leaderboard th[data-key=memory]')"
    x, y = js(f"(() => {{ const r = {th}.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
    for kind in ("mousePressed", "mouseReleased"):
        browser.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                     session=s)
    # Peak memory ascending (synthetic: 1.5 x checkpoint bytes), the baseline still first.
    assert js(order) == ["tiny@fp16", "tiny@q-all", "tiny@q-ffn", "tiny@fp32"]
    assert js("document.querySelector('#leaderboard tr[data-model=\"tiny@q-ffn\"] .badge').textContent") == \
        "best ternary"
