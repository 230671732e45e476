"""Drive headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages ending in NUL on file descriptors 3 and 4), with no websocket client and no
network: enough for the browser tests to load a page (the report offline, a live TensorBoard on
127.0.0.1: loopback is never sent to the proxy), collect console errors and failed requests, move
the mouse, run a line of JavaScript and take a screenshot."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--proxy-server=127.0.0.1:9"]


class Browser:
    """One headless Chromium with one page attached (``session``)."""

    def __init__(self, chromium: str, profile: Path, width: int = 1280, height: int = 2000):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire() -> None:  # in the child: the protocol's descriptors 3 (in) and 4 (out)
            # dup2 makes them inheritable; close_fds=False below, or subprocess would close
            # them after this hook (Python's own descriptors are not inheritable: PEP 446)
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)  # neither may be 3 or 4 yet
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]

    def _read(self, timeout: float) -> dict | None:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_child], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, *, page: bool = False,
             timeout: float = 60) -> dict:
        """Send one command (to the page's session with ``page``) and return its result."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if page:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._read(deadline - time.monotonic())
            if reply is None:
                break
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(f"no answer to {method} within {timeout} s")

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        """The first event ``method`` (already received or arriving within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            left = deadline - time.monotonic()
            message = self._read(left) if left > 0 else None
            if message is None:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                           page=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def open(self, url: str, *, offline: bool = False, wait: bool = True) -> None:
        """Load ``url`` in the page (``offline``: with the network emulated offline) and, with
        ``wait``, wait for its load event (a live app that keeps loading, TensorBoard, is polled
        by its test instead); console messages, exceptions and requests go to :attr:`events`."""
        for method in ("Runtime.enable", "Log.enable", "Network.enable", "Page.enable"):
            self.call(method, page=True)
        if offline:
            self.call("Network.emulateNetworkConditions",
                      {"offline": True, "latency": 0, "downloadThroughput": -1,
                       "uploadThroughput": -1}, page=True)
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.call("Page.navigate", {"url": url}, page=True)
        if wait:
            self.wait_for("Page.loadEventFired")

    def resize(self, width: int, height: int) -> None:
        """Set the page's viewport."""
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, page=True)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport":
                                                    True}, page=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


def open_offline(chromium: str, profile: Path, url: str) -> Browser:
    """A browser whose page has loaded ``url`` with the network emulated offline; console
    messages, exceptions and requests are in ``browser.events``."""
    browser = Browser(chromium, profile)
    try:
        browser.open(url, offline=True)
    except BaseException:
        browser.close()
        raise
    return browser


def script_errors(events: list[dict]) -> list[str]:
    """Uncaught JavaScript exceptions and ``console.error`` calls."""
    return [p for p in problems(events, requests=False)
            if p.startswith(("exception:", "console.error"))]


def problems(events: list[dict], *, requests: bool = True) -> list[str]:
    """Console errors/warnings, uncaught exceptions, log errors and (``requests``) non-file
    requests."""
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning",
                                                                            "assert"):
            out.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            out.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent" and requests:
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                out.append(f"request: {url}")
    return out
