"""Servers inside namespaces: the Internet node's standing servers and one-off iperf3 servers for tests.

A server counts as ready when its port shows up as listening in its own
namespace (``/proc/PID/net/tcp``), never after a fixed sleep.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from emu.dataplane.parsers import parse_proc_net_tcp
from emu.dataplane.procs import popen_in, stop
from emu.errors import DataplaneError

IPERF_PORT = 5201
HTTP_PORT = 80


def internet_servers(addr: str, addr6: str | None = None) -> list[tuple[list[str], str]]:
    """(argv, what) of the servers the Internet node runs on its address (and its IPv6 address): iperf3 and a
    plain HTTP server."""
    out = [(["iperf3", "-s", "-B", addr], "iperf3"),
           (["python3", "-m", "http.server", str(HTTP_PORT), "--bind", addr], "http")]
    if addr6:
        out += [(["iperf3", "-s", "-B", addr6], "iperf3 (IPv6)"),
                (["python3", "-m", "http.server", str(HTTP_PORT), "--bind", addr6], "http (IPv6)")]
    return out


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of ``pid`` (read from /proc/PID/net)."""
    return parse_proc_net_tcp(_read(f"/proc/{pid}/net/tcp") + _read(f"/proc/{pid}/net/tcp6"))


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


@contextlib.contextmanager
def oneoff_iperf_server(netns_name: str, timeout_s: float = 5.0) -> Iterator[int]:
    """An ``iperf3 -s -1`` in a namespace, listening before the body runs and gone after it; yields its port.

    A port already taken (another server) is retried on a random one. The
    server exits by itself after one test; if it has not, it is stopped.
    """
    ports = [IPERF_PORT] + random.sample(range(20000, 60000), 3)
    last = ""
    for port in ports:
        p = popen_in(netns_name, ["iperf3", "-s", "-1", "-p", str(port)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            end = time.monotonic() + timeout_s
            while p.poll() is None and port not in listening_ports(p.pid) and time.monotonic() < end:
                time.sleep(0.02)
            if p.poll() is not None:
                last = (p.stderr.read().decode(errors="replace").strip() if p.stderr else "") or f"exit {p.returncode}"
                if "in use" in last:
                    continue
                raise DataplaneError("start iperf3 server", netns_name, None, last)
            if port not in listening_ports(p.pid):
                raise DataplaneError("start iperf3 server", netns_name, None, f"not listening after {timeout_s:.0f} s")
            yield port
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2.0)  # it ends by itself after its one test
            return
        finally:
            stop(p)
            if p.stderr:
                p.stderr.close()
    raise DataplaneError("start iperf3 server", netns_name, None, last or "no free port")
