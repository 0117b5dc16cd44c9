"""The engine: a Ray cluster with one node per host, one pinned agent actor per node (issue 13).

On one machine each simulated host's Ray node (``ray start --block``) runs
inside that host's underlay namespace with the host's underlay address as
its node address, so the engine's own control traffic crosses the fabric
bridge like the VXLAN links do, and nothing listens in the machine's own
namespace. Every Ray process is journalled (pid) and lives in one of the
run's namespaces, so ``down`` stops it with the rest (it kills every process
in the run's namespaces). Each node advertises one unit of the custom
resource ``host<h>``: an actor asking for it is pinned to that node.
Docs: docs/multihost.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from emu.multihost import underlay

RAY_PORT = 6379
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; the agents pass only small dicts


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def head_address() -> str:
    return f"{underlay.host_addr(0)}:{RAY_PORT}"


def resource(h: int) -> str:
    return f"host{h}"


def temp_dir(run_id: str) -> str:
    """Ray's session directory (short: its unix socket paths must stay under 108 bytes)."""
    return f"/tmp/lr-{run_id}"


def node_argv(h: int) -> list[str]:
    """``ray start`` for host h's node, in the foreground (``--block``: stopping it stops its processes)."""
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus", "1",
            "--resources", json.dumps({resource(h): 1}), "--node-ip-address", underlay.host_addr(h),
            "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats"]
    if h == 0:
        argv += ["--head", "--port", str(RAY_PORT), "--include-dashboard", "false"]
    else:
        argv += ["--address", head_address()]
    return argv


def engine_env() -> dict:
    """The environment of Ray's processes: this code on the path (workers import emu), no usage reporting."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def start_nodes(run, n_hosts: int, attempts: int = 3) -> list[int]:
    """Start one Ray node per host inside its underlay namespace, one after the other (a node that does not
    register with the GCS within Ray's fixed 30 s gives up: on a loaded machine starting several at once
    fails), retrying a node that gave up; pids journalled as soon as started."""
    from emu.errors import DataplaneError

    env = engine_env()
    env["RAY_TMPDIR"] = temp_dir(run.run_id)
    pids = []
    for h in range(n_hosts):
        for attempt in range(1, attempts + 1):
            p = _start_node(run, h, env, attempt)
            pids.append(p.pid)
            if _wait_node(run, h, p, attempt):
                break
        else:
            raise DataplaneError("ray start", underlay.underlay_ns(run.prefix, h), None,
                                 f"host{h}'s Ray node did not start in {attempts} attempts: "
                                 f"{_log(run, h, attempts)[-300:]}")
    return pids


def _log(run, h: int, attempt: int) -> str:
    try:
        return (run.dir / f"ray-h{h}-{attempt}.log").read_text(errors="replace")
    except OSError:
        return ""


def _start_node(run, h: int, env: dict, attempt: int):
    from emu.dataplane import procs

    argv = node_argv(h) + (["--temp-dir", temp_dir(run.run_id)] if h == 0 else [])
    with open(run.dir / f"ray-h{h}-{attempt}.log", "wb") as log:
        p = procs.popen_in(underlay.underlay_ns(run.prefix, h), argv, stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT, close_fds=True, start_new_session=True, env=env)
    run.record_pid(p.pid, f"ray node host{h}")
    return p


def _wait_node(run, h: int, p, attempt: int, timeout_s: float = 180.0) -> bool:
    """True once the node says it started; False if its ``ray start`` exited (it gave up)."""
    import time

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if "Ray runtime started" in _log(run, h, attempt):
            return True
        if p.poll() is not None:
            return False
        time.sleep(0.2)
    import signal

    from emu.dataplane.procs import stop

    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)  # its own session: this node's processes only
    stop(p)
    return False
