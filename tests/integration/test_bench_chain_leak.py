"""The benchmark's plain chains are journalled like the emulator's own namespaces: nothing leaks after kill -9.

``scripts/bench_forwarding.py`` builds plain veth chains (``PlainChain``) beside the emulated path and runs
iperf3 in them. A process builds one exactly as the benchmark does (a ``Run``, the chain, an iperf3 client
as ``iperf()`` starts it) and is killed with SIGKILL mid-measurement: its iperf3 processes die with it
(PR_SET_PDEATHSIG), its namespaces stay until ``leo-emu down --all``, which removes them and every process
still inside (here a ``sleep`` this test put there, which nothing else would stop); the host's own
namespace is unchanged. Root only; a private run directory and the test's unique prefix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from emu.dataplane import netns, procs
from emu.dataplane.cleanup import processes_in
from emu.dataplane.state import Run, proc_starttime, wait_for

from .test_dataplane import ROOT, host_state, leo, sweep

HOPS = 5

# The owner: builds the chain as bench_forwarding's bench() does, says what it made, then measures until killed.
OWNER = r"""
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("bench_forwarding", "scripts/bench_forwarding.py")
bf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bf)
from emu.dataplane.state import Run
run = Run.create()
run.record_pid(os.getpid(), "bench_forwarding")
chain = bf.PlainChain(run, sys.argv[1], int(sys.argv[2]))
print(json.dumps({"run": run.run_id, "names": chain.names, "server": chain.server.pid}), flush=True)
bf.iperf(run, chain.names[0], chain.server_addr, 120)
"""


def _iperf3_in(names: list[str]) -> list[int]:
    out = []
    for pid in processes_in(names):
        try:
            if os.readlink(f"/proc/{pid}/exe").endswith("/iperf3"):
                out.append(pid)
        except OSError:
            continue
    return out


def test_bench_chain_removed_by_down_after_kill9(ns_prefix, tmp_path):
    env = dict(os.environ, LEOEMU_RUN_DIR=str(tmp_path / "runs"), LEOEMU_RUN_ID_PREFIX=ns_prefix.rstrip("-"),
               PYTHONPATH=str(ROOT))
    before = host_state()
    owner = subprocess.Popen([sys.executable, "-c", OWNER, ns_prefix + "bf", str(HOPS)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    squatter = None
    try:
        made = json.loads(owner.stdout.readline() or "null") or {}
        assert made, f"the owner did not build its chain: {owner.stderr.read() if owner.poll() is not None else ''}"
        names = made["names"]
        assert names == [f"{ns_prefix}bf-c{i}" for i in range(HOPS)]
        run = Run(made["run"], tmp_path / "runs")
        journalled, pids = run.journal()
        assert set(names) <= set(journalled)
        assert made["server"] in [p for p, _s, _w in pids]
        # measuring: the server and the client both run inside the chain
        assert wait_for(lambda: len(_iperf3_in(names)) == 2, 10.0), _iperf3_in(names)
        client = [p for p in _iperf3_in(names) if p != made["server"]][0]
        assert wait_for(lambda: client in [p for p, _s, _w in run.journal()[1]], 5.0)
        # a process nothing else would stop: only `down` (every process inside a journalled namespace) does
        squatter = procs.spawn_in(names[2], ["sleep", "300"])

        owner.kill()
        owner.wait(10)
        # iperf3 dies with its owner (PR_SET_PDEATHSIG); the namespaces stay, named in the journal
        assert wait_for(lambda: not _iperf3_in(names), 5.0), _iperf3_in(names)
        assert proc_starttime(made["server"]) is None and proc_starttime(client) is None
        assert all(netns.exists(n) for n in names)
        assert squatter.poll() is None

        p = leo(env, "down", "--all", "--format", "json", cwd=ROOT)
        removed = json.loads(p.stdout)["removed"]
        assert [r["run"] for r in removed] == [run.run_id]
        assert removed[0]["namespaces_removed"] == HOPS
        assert not netns.list_names(ns_prefix)
        assert squatter.wait(5) == -signal.SIGKILL
        assert not run.dir.exists()
        time.sleep(0.5)  # the kernel frees the chain's veths asynchronously; the host never had them
        assert host_state() == before
        # idempotent: nothing left to find
        again = json.loads(leo(env, "down", "--all", "--format", "json", cwd=ROOT).stdout)
        assert again["removed"] == []
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait(10)
        owner.stdout.close()
        owner.stderr.close()
        leo(env, "down", "--all", check=False, cwd=ROOT)
        if squatter is not None:
            procs.stop(squatter)
        sweep(ns_prefix)
