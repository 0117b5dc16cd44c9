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


def start_nodes(run, n_hosts: int) -> list[int]:
    """Start one Ray node per host inside its underlay namespace; pids journalled once started."""
    from emu.dataplane import procs

    env = engine_env()
    env["RAY_TMPDIR"] = temp_dir(run.run_id)
    pids = []
    for h in range(n_hosts):
        argv = node_argv(h) + (["--temp-dir", temp_dir(run.run_id)] if h == 0 else [])
        log = open(run.dir / f"ray-h{h}.log", "wb")
        p = procs.popen_in(underlay.underlay_ns(run.prefix, h), argv, stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT, close_fds=True, start_new_session=True, env=env)
        log.close()
        run.record_pid(p.pid, f"ray node host{h}")
        pids.append(p.pid)
        if h == 0:
            _wait_head(run, p)
    return pids


def _wait_head(run, p, timeout_s: float = 90.0) -> None:
    """The workers join only once the head's GCS answers."""
    import time

    from emu.errors import DataplaneError

    end = time.monotonic() + timeout_s
    log = run.dir / "ray-h0.log"
    while time.monotonic() < end:
        if p.poll() is not None:
            raise DataplaneError("ray start --head", None, None, f"exited {p.returncode}: "
                                 f"{log.read_text(errors='replace')[-300:]}")
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise DataplaneError("ray start --head", None, None, f"not up within {timeout_s:.0f} s")
