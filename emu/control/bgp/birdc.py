"""Reading a BIRD daemon's state through its control socket with ``birdc`` (never its logs).

The parsers are pure (text in, values out) so they are unit-tested on known
output; :func:`birdc` is the one place that runs the client. The control
socket is a file, so ``birdc`` needs no namespace of its own.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
from dataclasses import dataclass

from emu.errors import DataplaneError

BIRDC = "birdc"


@dataclass(frozen=True)
class ProtocolState:
    name: str
    proto: str  # BGP, Static, Kernel, Device, BFD
    state: str  # up, start, down
    info: str  # BGP: Established, Idle, Active, Connect, OpenSent, ...
    since: str = ""  # when the state last changed: a different value later = the session went down meanwhile

    @property
    def established(self) -> bool:
        return self.proto == "BGP" and self.state == "up" and self.info.startswith("Established")


@dataclass(frozen=True)
class ChannelRoutes:
    imported: int
    exported: int
    preferred: int
    import_updates: int = 0  # accepted route updates in (a replaced route counts, unlike ``imported``)
    export_updates: int = 0  # accepted route updates out (the kernel protocol: route installs/replaces)


def birdc(socket_path: str, *command: str, timeout_s: float = 30.0) -> str:
    """Run one ``birdc`` command against a socket; raise when the daemon does not answer."""
    argv = [BIRDC, "-s", socket_path, *command]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DataplaneError("run birdc", None, 2, "birdc not installed (apt-get install bird2)") from None
    except subprocess.TimeoutExpired:
        raise DataplaneError(f"birdc {' '.join(command)}", None, None,
                             f"no answer from {socket_path} within {timeout_s:.0f} s") from None
    text = p.stdout + p.stderr
    if p.returncode != 0 or "Unable to connect" in text:
        raise DataplaneError(f"birdc {' '.join(command)}", None, None, f"{socket_path}: {text.strip()[:200]}")
    return p.stdout


def parse_protocols(text: str) -> dict[str, ProtocolState]:
    """``show protocols``: one :class:`ProtocolState` per protocol, keyed by name."""
    out: dict[str, ProtocolState] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[0] in ("BIRD", "Name") or line.startswith(" "):
            continue
        name, proto, _table, state, since = parts[:5]
        out[name] = ProtocolState(name, proto, state, " ".join(parts[5:]), since)
    return out


_RE_COUNT = re.compile(r"(?P<n>\d+) of (?P<m>\d+) routes for (?P<k>\d+) networks in table (?P<t>\S+)")


def parse_route_count(text: str) -> dict[str, int]:
    """``show route count``: best routes per table (``{"master6": 1000000, ...}``); the Total line skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("Total"):
            continue
        m = _RE_COUNT.search(line)
        if m:
            out[m["t"]] = int(m["n"])
    return out


_RE_ROUTES = re.compile(r"^\s*Routes:\s+(?P<i>\d+) imported, (?:(?P<f>\d+) filtered, )?(?P<e>\d+) exported"
                        r"(?:, (?P<p>\d+) preferred)?", re.M)


def parse_channel_routes(text: str) -> ChannelRoutes | None:
    """``show protocols all NAME``: the channel's ``Routes:`` line (a kernel protocol's *exported* = in the FIB)."""
    m = _RE_ROUTES.search(text)
    if not m:
        return None
    return ChannelRoutes(int(m["i"]), int(m["e"]), int(m["p"] or 0))


def protocols(socket_path: str) -> dict[str, ProtocolState]:
    return parse_protocols(birdc(socket_path, "show", "protocols"))


def route_count(socket_path: str, table: str = "master6", timeout_s: float = 30.0) -> int:
    """Routes in ``table`` (a walk of the table: seconds for 10^6 routes on a busy machine)."""
    text = birdc(socket_path, "show", "route", "count", "table", table, timeout_s=timeout_s)
    return parse_route_count(text).get(table, 0)


def channel_routes(socket_path: str, protocol: str) -> ChannelRoutes:
    r = parse_channel_routes(birdc(socket_path, "show", "protocols", "all", protocol))
    if r is None:
        raise DataplaneError(f"birdc show protocols all {protocol}", None, None, "no Routes: line in the answer")
    return r


_RE_REPLY = re.compile(r"^(?P<code>\d{4})(?P<sep>[ -])(?P<text>.*)$")


def parse_reply(lines: list[str]) -> tuple[bool, str]:
    """BIRD's control protocol (what ``birdc`` speaks): reply lines ``CODE-text`` (more follow), `` text``
    (continuation) and a last ``CODE text``. -> (complete, text without codes). Pure."""
    out = []
    for line in lines:
        m = _RE_REPLY.match(line)
        if m:
            out.append(m["text"])
            if m["sep"] == " ":
                return True, "\n".join(out)
        else:
            out.append(line[1:] if line.startswith(" ") else line)
    return False, "\n".join(out)


def control(socket_path: str, command: str, timeout_s: float = 30.0) -> str:
    """One command over the control socket itself, no ``birdc`` process (the hot path of an MNP move: a
    process start costs tens of ms on a loaded machine). Raise when the daemon does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(socket_path)
            buf = b""
            lines: list[str] = []
            greeted = False
            s.sendall(command.encode() + b"\n")
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise DataplaneError(f"bird control {command}", None, None, f"{socket_path}: connection closed")
                buf += chunk
                *done, buf = buf.split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace")
                    if not greeted:  # "0001 BIRD 2.0.12 ready."
                        greeted = True
                        continue
                    lines.append(line)
                complete, text = parse_reply(lines)
                if complete:
                    return text
    except (OSError, TimeoutError) as exc:
        raise DataplaneError(f"bird control {command}", None, None, f"{socket_path}: {exc}") from None


def configure(socket_path: str) -> None:
    """``configure``: re-read the configuration (and its MNP file); raise unless BIRD took it."""
    text = control(socket_path, "configure")
    if "Reconfigured" not in text and "Reconfiguration in progress" not in text:
        raise DataplaneError("birdc configure", None, None, f"{socket_path}: {text.strip()[-300:]}")


def bgp_route_count(socket_path: str, table: str = "master6", timeout_s: float = 30.0) -> int:
    """Routes in ``table`` that BGP brought (an s-ASBR: the default route only, spec §3)."""
    text = birdc(socket_path, "show", "route", "count", "table", table, "where", "source", "=", "RTS_BGP",
                 timeout_s=timeout_s)
    return parse_route_count(text).get(table, 0)


_RE_UPDATES = re.compile(r"^\s*(?P<dir>Import|Export) updates:\s+(?:(?:\d+|---)\s+){4}(?P<accepted>\d+)\s*$")


def parse_protocols_all(text: str) -> dict[str, ChannelRoutes]:
    """``show protocols all``: each protocol's channel counters (cheap: no table walk).

    ``Routes:`` gives the routes held; the ``Import/Export updates:`` rows' *accepted* column the updates so far.
    """
    out: dict[str, ChannelRoutes] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            parts = line.split()
            current = parts[0] if len(parts) >= 4 and parts[0] not in ("BIRD", "Name") else None
            continue
        if current is None:
            continue
        r = parse_channel_routes(line)
        if r is not None:
            out[current] = r
            continue
        m = _RE_UPDATES.match(line)
        if m and current in out:
            key = "import_updates" if m["dir"] == "Import" else "export_updates"
            out[current] = dataclasses.replace(out[current], **{key: int(m["accepted"])})
    return out


def protocols_routes(socket_path: str) -> dict[str, ChannelRoutes]:
    return parse_protocols_all(birdc(socket_path, "show", "protocols", "all"))


def with_socket(argv: list[str], socket_path: str | None) -> list[str]:
    """``birdc ARGS`` -> ``birdc -s SOCKET ARGS`` when the node runs a BIRD of the run (``leo-emu exec NODE --
    birdc ...``): each router's control socket is in its run directory, not BIRD's default /run/bird/bird.ctl.
    Anything else, or a birdc already given ``-s``, is left as it is."""
    if not argv or socket_path is None or argv[0].rsplit("/", 1)[-1] not in ("birdc", "birdcl"):
        return argv
    if any(a == "-s" or (a.startswith("-s") and len(a) > 2) for a in argv[1:]):
        return argv
    return [argv[0], "-s", socket_path, *argv[1:]]


def router_of(run_dir, node: str) -> dict | None:
    """NODE's entry in a run's BGP overlay record (``<run dir>/bgp/overlay.json``: ``netns``, ``socket``, role,
    ...), or None. The extra c-ASBRs (scenario ``bgp.c_asbrs``) are nodes of the run only there."""
    import json
    from pathlib import Path

    p = Path(run_dir) / "bgp" / "overlay.json"
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    r = rec.get("routers", {}).get(node) if isinstance(rec, dict) else None
    return r if isinstance(r, dict) else None


def socket_of(run_dir, node: str) -> str | None:
    """The control socket of NODE's BIRD in a run (from ``<run dir>/bgp/overlay.json``), or None."""
    r = router_of(run_dir, node)
    return r.get("socket") if r else None
