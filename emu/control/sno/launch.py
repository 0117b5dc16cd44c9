"""Start a run's SNO control plane: keys, certificates, configurations, supervised daemons.

spec: inter-sno-mobility §4.2 (one core per SNO, keys and authentication
at the home core, authenticated channel between cores), §5 (procedures).

:func:`start` is what a builder calls once the data plane exists. What it
needs from the data plane (:class:`ControlSpec`):

- per core: its namespace, a public IPv4 address reachable from the other
  cores (tunnel endpoint and TLS address), a tunnel pool (a /24 no one else
  routes), and its access links: interface name in the core's namespace ->
  the ground station's address on that link. Every ground station must
  route the discovery anycast (``config.ANYCAST``) and the cores' replies
  toward its core, and the core must route its access subnets to its GSs;
- per user terminal: its namespace, its identifier ``name@realm`` (the
  realm names the home core), its home prefix (the device's subnet, routed
  by every GS to the terminal), and its uplink interfaces; the terminal's
  default route names the uplink in use (the agent watches it);
- latency: where the kernel has netem, the links the terrestrial delay goes
  on; otherwise the cores delay their own messages to each other.

Everything goes under ``<run dir>/sno/``: ``pki/``, ``<daemon>.json``
(mode 0600: keys), ``<daemon>.jsonl`` (steps), ``<daemon>.log`` (stderr),
``supervise.json``, ``supervise.jsonl``, ``control.json``. The supervisor
is journaled before anything else starts; it journals every daemon it
starts. ``down`` stops all of it (:mod:`emu.dataplane.cleanup`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import emu
from emu.control.sno import kernel, pki
from emu.control.sno.config import ANYCAST, AgentConf, CoreConf, HomeUser, Peer, write
from emu.dataplane.state import Run, proc_starttime, wait_for
from emu.errors import InputError


@dataclass
class CoreSpec:
    name: str
    netns: str
    index: int
    realm: str
    public: str
    tunnel_pool: str
    access: dict[str, str]
    access6: dict[str, str] = field(default_factory=dict)  # IPv6: access link -> the GS's IPv6 address


@dataclass
class UserSpec:
    name: str          # the agent's name (the UT node)
    netns: str
    user: str          # name@realm
    prefix: str        # home prefix: never changes
    uplinks: list[str] = field(default_factory=list)
    prefix6: str = ""  # IPv6 home prefix ("" none): never changes either


@dataclass
class ControlSpec:
    cores: list[CoreSpec]
    users: list[UserSpec]
    procedure: str = "baseline"
    latency_ms: float = 0.0
    notice_ms: float = 20.0
    netem_links: list[tuple[str, str, float]] = field(default_factory=list)  # (netns, ifname, delay ms)
    anycast: str = ANYCAST        # core discovery address (a live run moves it out of the data plane's space)
    access_table: int = 254       # the terminals' table whose default route names the uplink in use
    guard6: list[str] = field(default_factory=list)  # IPv6 user pools: forwarded by a core only once registered


def _pythonpath() -> str:
    root = str(Path(emu.__file__).resolve().parent.parent)
    old = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + old if old else "")


def latency_mode(features, spec: ControlSpec) -> str:
    """``netem`` where the kernel has it and the caller named the links; else the daemons delay."""
    return "netem" if spec.latency_ms > 0 and spec.netem_links and features.has("netem") else "daemon"


def _apply_netem(spec: ControlSpec) -> None:
    from emu.dataplane import procs
    for ns, ifname, ms in spec.netem_links:
        p = procs.run_in(ns, ["tc", "qdisc", "replace", "dev", ifname, "root", "netem", "delay", f"{ms}ms"])
        if p.returncode != 0:
            raise InputError(f"netem_links: tc netem failed on {ns}/{ifname} (got {p.stderr.strip()!r})")


def start(run: Run, spec: ControlSpec, features, keys: dict[str, bytes] | None = None) -> dict:
    """Write everything and start the supervisor; returns what ``control.json`` records.

    ``keys`` (user -> key) lets a test give a terminal a key of its choice; by default
    each user gets 32 random bytes, shared by its home core and its agent only.
    """
    kind = kernel.tunnel_kind(features)
    realms = {c.realm: c for c in spec.cores}
    for u in spec.users:
        realm = u.user.rpartition("@")[2]
        if realm not in realms:
            raise InputError(f"users.{u.name}.user: realm names no core (got {u.user!r})")
    mode = latency_mode(features, spec)
    d = run.dir / "sno"
    d.mkdir(mode=0o700, exist_ok=True)
    certs = pki.mint(d / "pki", {c.name: c.public for c in spec.cores})
    keys = dict(keys or {})
    home_keys = {u.user: secrets.token_bytes(32) for u in spec.users}
    peers = {c.name: Peer(c.name, c.index, c.realm, c.public) for c in spec.cores}
    children = []
    info = {"latency_mode": mode, "latency_ms": spec.latency_ms, "procedure": spec.procedure, "tunnel": kind,
            "cores": {}, "agents": {}}
    for c in spec.cores:
        conf = CoreConf(
            name=c.name, index=c.index, realm=c.realm, public=c.public, tunnel_pool=c.tunnel_pool,
            access=dict(c.access), peers={n: p for n, p in peers.items() if n != c.name},
            users={u.user: HomeUser(u.prefix, home_keys[u.user], u.prefix6) for u in spec.users
                   if u.user.rpartition("@")[2] == c.realm},
            access6=dict(c.access6), guard6=list(spec.guard6) if c.access6 else [],
            procedure=spec.procedure, latency_ms=spec.latency_ms, latency_mode=mode, notice_ms=spec.notice_ms,
            anycast=spec.anycast,
            log=str(d / f"{c.name}.jsonl"), state=str(d / f"{c.name}.state.json"),
            admin=str(d / f"{c.name}.sock"), pki=certs[c.name])
        path = d / f"{c.name}.json"
        write(path, conf)
        children.append({"name": c.name, "netns": c.netns, "log": str(d / f"{c.name}.log"),
                         "argv": [sys.executable, "-m", "emu.control.sno.core", str(path)],
                         "env": {"PYTHONPATH": _pythonpath()}})
        info["cores"][c.name] = {"netns": c.netns, "admin": conf.admin, "log": conf.log, "config": str(path)}
    for u in spec.users:
        conf = AgentConf(name=u.name, user=u.user, key=keys.get(u.user, home_keys[u.user]), uplinks=list(u.uplinks),
                         anycast=spec.anycast, table=spec.access_table, log=str(d / f"{u.name}.jsonl"), admin=str(d / f"{u.name}.sock"))
        path = d / f"{u.name}.json"
        write(path, conf)
        children.append({"name": u.name, "netns": u.netns, "log": str(d / f"{u.name}.log"),
                         "argv": [sys.executable, "-m", "emu.control.sno.agent", str(path)],
                         "env": {"PYTHONPATH": _pythonpath()}})
        info["agents"][u.name] = {"netns": u.netns, "user": u.user, "admin": conf.admin, "log": conf.log,
                                  "config": str(path)}
    if mode == "netem":
        _apply_netem(spec)
    sup = {"run": {"root": str(run.root), "id": run.run_id}, "events": str(d / "supervise.jsonl"),
           "children": children}
    (d / "supervise.json").write_text(json.dumps(sup, indent=1))
    out = open(d / "supervise.log", "ab")
    try:
        p = subprocess.Popen([sys.executable, "-m", "emu.control.supervise", str(d / "supervise.json")],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
                             start_new_session=True, env={**os.environ, "PYTHONPATH": _pythonpath()})
    finally:
        out.close()
    run.record_pid(p.pid, "sno supervisor")
    info["supervisor_pid"] = p.pid
    info["supervisor_start"] = proc_starttime(p.pid)
    (d / "control.json").write_text(json.dumps(info, indent=1))
    return info


def info_of(run: Run) -> dict:
    try:
        return json.loads((run.dir / "sno" / "control.json").read_text())
    except (OSError, ValueError):
        return {}


def admin(path: str, req: dict, timeout_s: float = 3.0) -> dict:
    """One request on a daemon's admin socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def try_admin(path: str, req: dict) -> dict | None:
    try:
        return admin(path, req)
    except (OSError, ValueError):
        return None


def wait_ready(info: dict, timeout_s: float = 15.0) -> bool:
    """Every core answers and is connected to every peer; every agent answers."""
    def ready() -> bool:
        for c in info["cores"].values():
            st = try_admin(c["admin"], {"op": "status"})
            if not st or len(st.get("connected", {})) < len(info["cores"]) - 1 \
                    or not all(st["connected"].values()):
                return False
        return all(try_admin(a["admin"], {"op": "status"}) for a in info["agents"].values())
    return wait_for(ready, timeout_s, 0.1)


def stop(run: Run, timeout_s: float = 8.0) -> bool:
    """Stop the supervisor (it stops the daemons, which remove their tunnels); True if it is gone."""
    info = info_of(run)
    pid, start_t = info.get("supervisor_pid"), info.get("supervisor_start")
    if not pid or proc_starttime(pid) != start_t:
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    gone = wait_for(lambda: proc_starttime(pid) != start_t, timeout_s)
    time.sleep(0.05)
    return gone
