"""The live map's HTTP server: stdlib ``http.server`` on 127.0.0.1, GET only, a fixed set of paths.

- ``/`` and ``/static/{app.js,style.css}``: the page, from this package (no CDN, no external script);
- ``/api/meta``: satellites, groups, ground nodes, link classes, pairs (once per page);
- ``/api/state``: the current slice and the run's apply times (polled);
- ``/api/frame/K``: slice K's positions, links, serving links and paths (fetched when the slice changes);
- ``/api/coast``: the land outline as [lon, lat] rings (:func:`emu.viz.coast.coast_rings`).

One thread serves everything (the plan's SQLite handle stays in the thread that opened it).
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources

from emu.errors import EmuError

BIND = "127.0.0.1"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
FRAME = re.compile(r"^/api/frame/(\d{1,7})$")


def static_bytes(name: str) -> bytes:
    return resources.files("emu.web").joinpath("static", name).read_bytes()


def make_handler(src):
    coast_cache: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        server_version = "leo-emu-web"

        def log_message(self, fmt, *args):  # quiet: one line per poll would flood the terminal
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj, code: int = 200) -> None:
            self._send(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

        def do_HEAD(self):  # noqa: N802
            self.do_GET()

        def do_GET(self):  # noqa: N802
            path = self.path.split("?", 1)[0]
            try:
                if path in STATIC:
                    name, ctype = STATIC[path]
                    self._send(200, static_bytes(name), ctype)
                elif path == "/api/meta":
                    self._json(src.frames.meta())
                elif path == "/api/state":
                    self._json(src.state())
                elif path == "/api/coast":
                    if not coast_cache:
                        from emu.viz.coast import coast_rings

                        coast_cache.append(json.dumps(coast_rings(), separators=(",", ":")).encode())
                    self._send(200, coast_cache[0], "application/json")
                elif (m := FRAME.match(path)) is not None:
                    self._json(src.frames.frame(int(m.group(1))))
                else:
                    self._json({"error": f"no such path (got {path!r})"}, 404)
            except EmuError as exc:
                self._json({"error": str(exc)}, 400)

        def _refuse(self):
            self._json({"error": "read-only: GET only"}, 405)

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    return Handler


def serve(src, port: int, ready=None) -> None:
    """Serve until Ctrl-C. ``ready(url)`` is called once the socket listens."""
    from emu.errors import InputError

    try:
        httpd = HTTPServer((BIND, port), make_handler(src))
    except OSError as exc:
        raise InputError(f"--port: cannot listen on {BIND}:{port} ({exc.strerror}) (got {port})") from None
    if ready:
        ready(f"http://{BIND}:{httpd.server_port}/")
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
