"""Helpers for the live map's tests: a ``leo-emu web`` subprocess and headless Chromium over DevTools.

Chromium is Debian's ``chromium`` (``make install-apt``), launched with the flags
a root, offline, throwaway profile needs; it is driven with ``websocket-client``.
Both are ended by their own process handles, never by name.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .helpers import ROOT

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,820"]


class Server:
    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "emu.cli.main", "web", *args, "--port", "0"], cwd=ROOT,
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stderr.readline()
        if "http://127.0.0.1:" not in line:
            self.stop()
            raise AssertionError(f"leo-emu web did not start: {line!r}")
        self.url = line.split()[2]

    def get(self, path: str, method: str = "GET"):
        req = urllib.request.Request(self.url.rstrip("/") + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type"), exc.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, url: str):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="leo-emu-chromium-")
        self.proc = subprocess.Popen([shutil.which("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-port=0", url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > end or self.proc.poll() is not None:
                self.close()
                raise AssertionError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            if pages or time.monotonic() > end:
                break
            time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def wait_for(self, expr: str, timeout_s: float = 30.0):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expr}; page says {self.dom()}")

    def dom(self) -> dict:
        return self.eval("""JSON.stringify({slice: document.getElementById('slice').textContent,
            sats: document.getElementById('sat-count').textContent,
            links: document.getElementById('link-count').textContent,
            circles: document.querySelectorAll('#sats circle:not(.ew-off)').length,
            lines: document.querySelectorAll('#links line').length,
            mode: document.getElementById('mode').textContent,
            apply: document.getElementById('apply-summary').textContent,
            paths: document.getElementById('path-list').textContent,
            land: document.querySelectorAll('#coast polygon').length,
            error: document.getElementById('error').textContent})""")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser_factory():
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian package chromium; make install-apt installs it)")
    pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e .[test])")
    opened = []

    def make(url: str) -> Browser:
        b = Browser(url)
        opened.append(b)
        return b

    yield make
    for b in opened:
        b.close()


