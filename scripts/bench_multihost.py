#!/usr/bin/env python3
"""Build and boundary-apply times over 1, 2, 4 simulated hosts, and the cut size, as one JSON object (root).

    sudo python scripts/bench_multihost.py topologies/default.yaml [--hosts 1,2,4] [--slices 16] [--speed 20]

Per host count: ``leo-emu multihost up`` (fabric, one Ray node and agent per host, partitioned build), then
``--slices`` boundaries on the shared clock, then ``leo-emu down``. Reported: the whole up time, the slowest
host's build, per-host namespaces and VXLAN halves, boundary apply p50/p99 (slowest host per boundary), skew
between hosts p50/p99/max, the partition's cut, kernel slab and available memory per namespace (deltas of
/proc/meminfo: noisy on a shared machine). The baseline is the 1-host run of the same invocation; ratios are
against it. On one machine every "host" shares the 2 cores, so build time does not drop with N here: the
numbers show the engine's overhead and the per-host share of the work (docs/multihost.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def leo(env, *args, timeout=1800):
    p = subprocess.run([sys.executable, "-m", "emu.cli.main", *args], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"leo-emu {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    return p.stdout


def meminfo() -> dict:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0]) * 1024
    return out


def one(env, plan: Path, n: int, slices: int, speed: float) -> dict:
    part = json.loads(leo(env, "partition", str(plan), "--hosts", str(n), "--format", "json"))
    m0 = meminfo()
    t0 = time.perf_counter()
    up = json.loads(leo(env, "multihost", "up", str(plan), "--hosts", str(n), "--speed", str(speed), "--slices",
                        str(slices + 1), "--format", "json"))
    up_s = time.perf_counter() - t0
    m1 = meminfo()
    run = up["run"]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            st = json.loads(leo(env, "multihost", "status", "--run", run, "--format", "json"))
            if st["state"] in ("finished", "degraded", "failed"):
                break
            time.sleep(1)
        full = json.loads((Path(env["LEOEMU_RUN_DIR"]) / run / "status.json").read_text())
        engine_mb = [round(pss_mb(f"{run}-u{h}")) for h in range(n)]
    finally:
        t1 = time.perf_counter()
        leo(env, "down", "--run", run, "--format", "json")
        down_s = time.perf_counter() - t1
    nss = sum(h["namespaces"] for h in up["per_host"])
    return {
        "hosts": n, "state": st["state"], "namespaces": nss,
        "ground_namespaces": sum(len(h["ground"]) + len(h["devices"]) + len(h["cores"]) + int(h["inet"])
                                 for h in part["split"]), "up_s": round(up_s, 3), "build_s": up["build_s"],
        "host_build_s": [h["build_s"] for h in up["per_host"]], "host_namespaces": [h["namespaces"] for h in
                                                                                  up["per_host"]],
        "host_vxlan": [h["vxlan"] for h in up["per_host"]],
        "boundaries": slices, "apply_p50_ms": st["apply_p50_ms"], "apply_p99_ms": st["apply_p99_ms"],
        "skew_p50_ms": st["skew_p50_ms"], "skew_p99_ms": st["skew_p99_ms"], "skew_max_ms": st["skew_max_ms"],
        "cut_per_slice": part["cut"], "load": part["load"], "imbalance": part["imbalance"],
        "slab_per_ns_kb": round((m1["Slab"] - m0["Slab"]) / nss / 1024, 1),
        "mem_available_drop_per_ns_kb": round((m0["MemAvailable"] - m1["MemAvailable"]) / nss / 1024, 1),
        "prep_p50_ms": _p50([a.get("prep_ms") for a in full.get("applied", [])]),
        "cleanup_p50_ms": _p50([a.get("cleanup_ms") for a in full.get("applied", [])]),
        "engine_pss_mb_per_host": engine_mb,
        "down_s": round(down_s, 3),
    }


def pss_mb(ns: str) -> float:
    """Proportional set size of every process in one host's underlay namespace (its Ray node and agent)."""
    from emu.dataplane.cleanup import processes_in

    kb = 0
    for pid in processes_in([ns]):
        try:
            kb += sum(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                      if line.startswith("Pss:"))
        except OSError:
            continue
    return kb / 1024


def _p50(xs) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--hosts", default="1,2,4")
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--speed", type=float, default=20.0)
    ap.add_argument("--plan", default=None, help="A plan of the scenario made before (skips planning).")
    a = ap.parse_args()
    env = dict(os.environ)
    env["LEOEMU_RUN_DIR"] = tempfile.mkdtemp(prefix="bmh-runs-")
    env["LEOEMU_RUN_ID_PREFIX"] = f"bm{os.getpid() % 1000}"
    plan = Path(a.plan) if a.plan else Path(tempfile.mkdtemp(prefix="bmh-")) / "plan.db"
    t0 = time.perf_counter()
    if not a.plan:
        leo(env, "plan", a.scenario, "-o", str(plan), "--format", "json")
    plan_s = time.perf_counter() - t0
    rows = []
    for n in a.hosts.split(","):
        try:
            rows.append(one(env, plan, int(n), a.slices, a.speed))
        except SystemExit as exc:  # one host count failing (e.g. Ray nodes too slow to join) is reported
            rows.append({"hosts": int(n), "error": str(exc)})
            leo(env, "down", "--all", "--format", "json")
    base = rows[0]
    for r in rows:
        if "error" in r or "error" in base:
            continue
        r["build_ratio"] = round(r["build_s"] / base["build_s"], 3)
        r["apply_p99_ratio"] = round(r["apply_p99_ms"] / base["apply_p99_ms"], 3) if base["apply_p99_ms"] else None
    shutil.rmtree(env["LEOEMU_RUN_DIR"], ignore_errors=True)  # every run was brought down: empty
    if not a.plan:
        shutil.rmtree(plan.parent, ignore_errors=True)
    print(json.dumps({"scenario": a.scenario, "plan_s": round(plan_s, 1), "cores": os.cpu_count(),
                      "load_avg": os.getloadavg(), "baseline": "hosts=1 of this run", "runs": rows,
                      "estimate": estimate(base, a.speed) if "error" not in base else None}, indent=1))


def estimate(base: dict, speed: float) -> dict:
    """Hosts for the large constellations from the 1-host run's per-namespace and per-satellite costs."""
    from emu.multihost.sizing import CONSTELLATIONS, hosts_needed

    sats = base["namespaces"] - base["ground_namespaces"]
    work = sum(base[k] or 0 for k in ("prep_p50_ms", "apply_p50_ms", "cleanup_p50_ms")) / sats
    costs = {"build_ms_per_ns": round(max(base["host_build_s"]) * 1000 / base["namespaces"], 2),  # the agent's
             "slice_work_ms_per_sat": round(work, 3), "kernel_kb_per_ns": max(base["slab_per_ns_kb"], 0.0),
             "agent_mb": base["engine_pss_mb_per_host"][0]}
    out = {"costs (1-host run)": costs}
    for name, c in CONSTELLATIONS.items():
        for sp in (1.0, 10.0):
            out[f"{name} speed {sp:g}"] = hosts_needed(c["satellites"], c["ground"], speed=sp, **costs)
    return out
    return 0


if __name__ == "__main__":
    sys.exit(main())
