"""``down``: remove exactly what a run's journal names, also after kill -9.

Order: stop the controller (its recorded pid, checked against its start
time so a reused pid is never hit), kill every process whose network
namespace is one of the run's, delete the namespaces (their interfaces,
routes, qdiscs and nftables go with them), remove the run's record.
Idempotent: a second ``down`` finds nothing and succeeds.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time

from emu.dataplane import hostlimits, netns
from emu.dataplane.state import Run, proc_starttime, wait_for

log = logging.getLogger(__name__)


def _ns_inodes(names: list[str]) -> set[tuple[int, int]]:
    out = set()
    for n in names:
        try:
            st = os.stat(netns.path(n))
            out.add((st.st_dev, st.st_ino))
        except OSError:
            continue
    return out


def processes_in(names: list[str]) -> list[int]:
    """Every pid whose network namespace is one of ``names``."""
    want = _ns_inodes(names)
    if not want:
        return []
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in want:
            pids.append(int(entry))
    return pids


def _alive(pid: int, start: str) -> bool:
    """Still our process: same pid *and* start time ('-' = it was already gone when recorded)."""
    s = proc_starttime(pid)
    return s is not None and start != "-" and s == start


def teardown(run: Run, timeout_s: float = 5.0) -> dict:
    t0 = time.perf_counter()
    _names, pids = run.journal()
    killed = removed_hosts = 0
    # 1. the controller and any recorded helper processes, gently first
    for pid, start, _what in pids:
        if pid != os.getpid() and _alive(pid, start):
            try:
                os.kill(pid, signal.SIGTERM)
                killed += 1
            except ProcessLookupError:
                pass
    wait_for(lambda: not any(_alive(p, s) for p, s, _ in pids if p != os.getpid()), timeout_s)
    for pid, start, _what in pids:
        if pid != os.getpid() and _alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # 2. read the journal again now that nothing can add to it, then anything running inside
    names, _pids = run.journal()
    inside = processes_in(names)
    for pid in inside:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    wait_for(lambda: not processes_in(names), 2.0)
    hosts = run.dir / "hosts"  # a run over several hosts (emu.multihost): each host's own journal
    for sub in sorted(hosts.iterdir()) if hosts.is_dir() else []:
        r = teardown(Run(sub.name, hosts), timeout_s)
        removed_hosts += r["namespaces_removed"]
        killed += r["processes_killed"]
    t_procs = time.perf_counter() - t0
    # 3. the namespaces
    removed = netns.delete_many(names) + removed_hosts
    try:  # the last run gone: the neighbour-table limits `up` raised go back (emu.dataplane.hostlimits)
        hostlimits.release(run.dir)
    except OSError as exc:
        log.warning("teardown %s: host limits not restored: %s", run.run_id, exc)
    log.info("teardown %s: processes %.2f s, namespaces %.2f s", run.run_id, t_procs, time.perf_counter() - t0 - t_procs)
    ray_tmp = str(run.read_json("run.json").get("ray_temp_dir") or "")
    if ray_tmp.startswith("/tmp/lr-"):  # the multihost engine's session files (emu.multihost.engine.temp_dir)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    shutil.rmtree(run.dir, ignore_errors=True)
    return {"run": run.run_id, "namespaces_removed": removed, "processes_killed": killed,
            "teardown_s": round(time.perf_counter() - t0, 3)}
