#!/usr/bin/env python3
"""Benchmark: Starlink Phase I (4,408 satellites, 5 shells) planned, brought up, pinged and torn down.

Drives the real CLI as a user would (``leo-emu plan``, ``up --detach``,
``ping``, ``down``, each a child process) and measures:

- plan: wall time and peak RSS of the planner for ``--slices`` slices;
- up: wall time of ``up --detach`` and the controller's own ``build_s``,
  the controller's RSS (sampled every second, and its VmHWM);
- kernel memory: /proc/meminfo (Slab, SUnreclaim, SReclaimable, Percpu,
  MemAvailable) before ``up``, after the build, after the slices ran, and
  after ``down`` once the kernel has freed the namespaces;
- the boundaries the controller applied (apply p50/p99/max, prep, late);
- ping from user devices to ``inet`` right after the build and after the
  last boundary; the global neighbour-cache entries (ndisc/arp) meanwhile;
- down: wall time, and that the host's namespace count is back where it was.

Then, in the same run, its baseline: a bare bulk-netlink build of the same
number of namespaces and the same veth pairs (``bench_up.baseline``: same
sysctls, hand-packed requests, ends up, nothing else), so ``build_ratio`` =
build_s / baseline_build_s compares like with like on a shared machine.

The host's kernel limits that ``up`` raises for a run of this size
(:mod:`emu.dataplane.hostlimits`) are reported as found before and after.

Prints one JSON object. Root required. Namespaces carry the run prefix
``ph1`` + 4 hex digits (``LEOEMU_RUN_ID_PREFIX``); everything is removed even
on failure (``down --run``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_up import baseline  # noqa: E402
from emu.dataplane.state import run_root  # noqa: E402

MEMKEYS = ("MemAvailable", "Slab", "SReclaimable", "SUnreclaim", "Percpu")
CLI = [sys.executable, "-m", "emu.cli.main"]


def meminfo_mb() -> dict:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        if k in MEMKEYS:
            out[k] = round(int(v.split()[0]) / 1024, 1)
    return out


def neigh_entries() -> dict:
    """Entries of the kernel's neighbour tables (one table per family for all namespaces together)."""
    out = {}
    for fam in ("arp_cache", "ndisc_cache"):
        try:
            out[fam] = int(Path(f"/proc/net/stat/{fam}").read_text().splitlines()[1].split()[0], 16)
        except (OSError, IndexError, ValueError):
            pass
    return out


def netns_count() -> int:
    try:
        return len(os.listdir("/run/netns"))
    except OSError:
        return 0


def cli(args: list[str], env=None, timeout=None) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI from the repository root; return the result and its wall seconds."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(CLI + args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        p = subprocess.CompletedProcess(exc.cmd, -9, exc.stdout or "", f"timed out after {timeout} s")
    return p, time.perf_counter() - t0


def child_maxrss_mb() -> float:
    """Peak RSS of the largest child waited for so far (the planner: it runs first)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


class RssSampler(threading.Thread):
    """Samples a pid's VmRSS every second; keeps the peak and the last VmHWM."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_mb, self.hwm_mb, self.last_mb = pid, 0.0, 0.0, 0.0
        self.stop = threading.Event()

    def read(self) -> None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.last_mb = int(line.split()[1]) / 1024
                    self.peak_mb = max(self.peak_mb, self.last_mb)
                elif line.startswith("VmHWM:"):
                    self.hwm_mb = int(line.split()[1]) / 1024
        except OSError:
            pass

    def run(self) -> None:
        while not self.stop.is_set():
            self.read()
            self.stop.wait(1.0)


def ping(run_id: str, dev: str, count: int) -> dict:
    p, _wall = cli(["ping", "--run", run_id, dev, "inet", "-c", str(count), "-i", "0.2", "--format", "json"],
                     timeout=120)
    try:
        r = json.loads(p.stdout)
    except ValueError:
        return {"src": dev, "error": (p.stderr or p.stdout).strip()[-300:]}
    return {k: r.get(k) for k in ("src", "slice", "transmitted", "received", "loss_pct", "rtt_min_ms", "rtt_avg_ms",
                                  "rtt_max_ms", "error")}


def ping_all(run_id: str) -> dict:
    """Two pings from every user device to inet, straight from its namespace (no CLI process per device)."""
    from emu.dataplane.parsers import parse_ping, ping_argv
    from emu.dataplane.procs import run_in

    info = json.loads((run_root() / run_id / "run.json").read_text())
    ok, failed, t0 = 0, [], time.perf_counter()
    for n in info["nodes"]:
        if n["kind"] != "dev":
            continue
        p = run_in(n["netns"], ping_argv(info["inet_addr"], 2, 0.2, 1.0), timeout_s=30)
        r = parse_ping(p.stdout + "\n" + p.stderr)
        if r.get("received"):
            ok += 1
        else:
            failed.append(n["name"])
    return {"devices": ok + len(failed), "reached_inet": ok, "failed": failed,
            "wall_s": round(time.perf_counter() - t0, 1)}


def baseline_pairs(scenario: str, plan: Path, slices: int) -> tuple[int, list[tuple[int, int]]]:
    """The namespaces and veth pairs `up` creates for these slices, from `up --dry-run` (no root)."""
    p, _wall = cli(["up", scenario, "--plan", str(plan), "--slices", str(slices), "--dry-run", "--format", "json"])
    if p.returncode != 0:
        raise SystemExit(f"dry run failed: {p.stderr.strip()[-300:]}")
    rec = json.loads(p.stdout)
    order = {n["name"]: i for i, n in enumerate(rec["namespaces"])}
    links = rec["links"]["fixed"] + rec["links"]["dynamic"]
    return len(order), [(order[x["a"]], order[x["b"]]) for x in links]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/starlink-phase1.yaml")
    ap.add_argument("--slices", type=int, default=12, help="slices to plan and run (default 12)")
    ap.add_argument("--speed", type=float, default=3.0, help="clock speed-up while running (default 3: 5 s slices)")
    ap.add_argument("--plan", default=None, help="reuse this plan instead of planning now")
    ap.add_argument("--devices", default="dv-tokyo,dv-newyork,dv-london,dv-buenosair,dv-sydney",
                    help="user devices that ping inet")
    ap.add_argument("--max-wait", type=float, default=900.0,
                    help="seconds to wait for the slices to run after the build (default 900); the boundaries "
                         "applied by then are reported")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("root required")
    res: dict = {"scenario": args.scenario, "slices": args.slices, "speed": args.speed}
    tmp = Path(tempfile.mkdtemp(prefix="bench-phase1-"))
    plan = Path(args.plan) if args.plan else tmp / "phase1.db"
    if not args.plan:
        p, wall = cli(["plan", args.scenario, "-o", str(plan), "--slices", str(args.slices), "--format", "json"])
        if p.returncode != 0:
            raise SystemExit(f"plan failed: {p.stderr.strip()[-300:]}")
        summary = json.loads(p.stdout)
        res["plan"] = {"wall_s": round(wall, 1), "planner_wall_s": summary.get("wall_s"),
                       "peak_rss_mb": child_maxrss_mb(), "satellites": summary.get("satellites"),
                       "ground_nodes": summary.get("ground_nodes"), "disconnected_pairs": summary.get("disconnected_pairs"),
                       "table_size": summary.get("table_size")}
    n_ns, pairs = baseline_pairs(args.scenario, plan, args.slices)
    res["namespaces"], res["veth_pairs"] = n_ns, len(pairs)
    ns0 = netns_count()
    res["host_netns_before"] = ns0
    res["meminfo_mb"] = {"before": meminfo_mb()}
    res["neigh_entries"] = {"before": neigh_entries()}
    env = dict(os.environ, LEOEMU_RUN_ID_PREFIX="ph1")
    run_id = None
    sampler = None
    try:
        p, wall = cli(["up", args.scenario, "--plan", str(plan), "--slices", str(args.slices), "--speed",
                       str(args.speed), "--detach", "--format", "json"], env=env)
        if p.returncode != 0:  # `up --detach` tore its own run down
            res["up_error"] = (p.stderr or p.stdout).strip()[-500:]
            raise RuntimeError(res["up_error"])
        up = json.loads(p.stdout)
        run_id = up["run"]
        res["up"] = {"wall_s": round(wall, 1), "build_s": up.get("build_s"), "run": run_id}
        st = json.loads((run_root() / run_id / "status.json").read_text())
        sampler = RssSampler(st["controller_pid"])
        sampler.read()
        sampler.start()
        res["meminfo_mb"]["after_build"] = meminfo_mb()
        res["host_limits"] = json.loads((run_root() / run_id / "hostlimits.json").read_text()) \
            if (run_root() / run_id / "hostlimits.json").exists() else None
        devs = [d for d in args.devices.split(",") if d]
        res["ping_after_build"] = [ping(run_id, d, 5) for d in devs]
        deadline = time.monotonic() + args.max_wait
        while time.monotonic() < deadline:
            st = json.loads((run_root() / run_id / "status.json").read_text())
            if st.get("state") in ("finished", "failed"):
                break
            time.sleep(2)
        applied = st.get("applied") or []
        res["run_state"] = st.get("state")
        res["run_error"] = st.get("error")
        if applied:
            import numpy as np

            a = np.array([x["apply_ms"] for x in applied])
            res["boundaries"] = {
                "n": len(applied), "apply_p50_ms": round(float(np.percentile(a, 50)), 1),
                "apply_p99_ms": round(float(np.percentile(a, 99)), 1), "apply_max_ms": round(float(a.max()), 1),
                "prep_max_ms": max(x["prep_ms"] for x in applied), "late_max_ms": max(x["late_ms"] for x in applied)}
        res["unresolved_routes"] = st.get("unresolved_routes")
        res["ping_after_boundaries"] = [ping(run_id, d, 5) for d in devs]
        res["neigh_entries"]["before_ping_all"] = neigh_entries()
        res["ping_all_devices"] = ping_all(run_id)
        res["meminfo_mb"]["after_boundaries"] = meminfo_mb()
        res["neigh_entries"]["running"] = neigh_entries()
        sampler.read()
        res["controller_rss_mb"] = {"peak_sampled": round(sampler.peak_mb, 1), "vm_hwm": round(sampler.hwm_mb, 1),
                                    "last": round(sampler.last_mb, 1)}
    except Exception as exc:  # noqa: BLE001 - reported in the JSON; the run still goes down below
        res["error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        if sampler:
            sampler.stop.set()
        if run_id:
            res["meminfo_mb"]["before_down"] = meminfo_mb()
            p, wall = cli(["down", "--run", run_id, "--format", "json"])
            res["down"] = {"wall_s": round(wall, 1), "exit_code": p.returncode}
            if p.returncode != 0:
                res["down"]["error"] = (p.stderr or p.stdout).strip()[-300:]
    before = res["meminfo_mb"]["before"]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 120 and meminfo_mb()["SUnreclaim"] > before["SUnreclaim"] + 100:
        time.sleep(1)
    res["kernel_freed_after_s"] = round(time.perf_counter() - t0, 1)
    res["meminfo_mb"]["after_down"] = meminfo_mb()
    res["host_netns_after"] = netns_count()
    res["left_behind"] = sorted(n for n in os.listdir("/run/netns") if run_id and n.startswith(run_id))
    built = res["meminfo_mb"].get("after_build")
    if built:  # other users of the machine move these too: the growth at build and the drop at down, both
        res["kernel_mem_mb"] = {k: round(built[k] - before[k], 1) for k in ("Slab", "SUnreclaim", "Percpu")}
        gone, after = res["meminfo_mb"]["before_down"], res["meminfo_mb"]["after_down"]
        res["kernel_freed_at_down_mb"] = {k: round(gone[k] - after[k], 1) for k in ("Slab", "SUnreclaim", "Percpu")}
        res["kernel_mem_per_namespace_kb"] = round(
            (built["Slab"] + built["Percpu"] - before["Slab"] - before["Percpu"]) * 1024 / n_ns, 1)
    if not args.no_baseline and res.get("up", {}).get("build_s"):
        res["baseline"] = baseline(n_ns, pairs)
        res["build_ratio"] = round(res["up"]["build_s"] / res["baseline"]["baseline_build_s"], 3)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
