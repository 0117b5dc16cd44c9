#!/usr/bin/env python3
"""Benchmark: bring a scenario up (default: Starlink shell 1), run slice boundaries, tear down.

Plans the first N+1 slices (not timed), then measures, with the same code as
`leo-emu up`: build_s (namespaces, links, addresses, tunnels, NAT, shaping,
slice-0 tables), the boundary apply time of N slices (apply_p50_ms,
apply_p99_ms; the boundary = rule switch + ground-side switches), the
preparation time of each slice (prep_p50_ms, off the critical path), kernel
memory (Slab and Percpu growth from /proc/meminfo), and teardown_s. Prints one
JSON object. Budgets (issue #4): build <= 10 s, apply p99 <= 500 ms,
teardown <= 5 s. Root required.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.cli.plan_cmds import build_plan  # noqa: E402
from emu.dataplane import cleanup  # noqa: E402
from emu.dataplane.controller import Controller  # noqa: E402
from emu.dataplane.state import Run  # noqa: E402


def meminfo_kb(keys=("Slab", "Percpu")) -> int:
    total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        if k in keys:
            total += int(v.split()[0])
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/starlink-shell1.yaml")
    ap.add_argument("--boundaries", type=int, default=20)
    ap.add_argument("--plan", default=None, help="reuse a plan instead of planning now")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    plan = Path(args.plan) if args.plan else Path(tmp) / "bench.plan.db"
    if not args.plan:
        build_plan(args.scenario, plan, args.boundaries + 1, keep_key=False, fmt="json")
    run = Run.create()
    mem0 = meminfo_kb()
    res: dict = {"scenario": args.scenario, "run": run.run_id}
    try:
        ctl = Controller(run, plan, speed=1.0, n_slices=args.boundaries + 1)
        t0 = time.perf_counter()
        ctl.build()
        res["build_s"] = round(time.perf_counter() - t0, 3)
        res["namespaces"] = len(ctl.model.nodes)
        res["kernel_mem_mb"] = round((meminfo_kb() - mem0) / 1024, 1)
        applies, preps, cleans = [], [], []
        for k in range(1, args.boundaries + 1):
            preps.append(ctl.applier.prepare(k))
            applies.append(ctl.applier.switch(k))
            t1 = time.perf_counter()
            ctl.applier.cleanup(k)
            cleans.append((time.perf_counter() - t1) * 1e3)
        res.update({
            "boundaries": len(applies),
            "apply_p50_ms": round(float(np.percentile(applies, 50)), 3),
            "apply_p99_ms": round(float(np.percentile(applies, 99)), 3),
            "apply_max_ms": round(float(max(applies)), 3),
            "prep_p50_ms": round(float(np.percentile(preps, 50)), 1),
            "prep_max_ms": round(float(max(preps)), 1),
            "cleanup_p50_ms": round(float(np.percentile(cleans, 50)), 1),
            "unresolved_routes": ctl.applier.unresolved,
        })
        ctl.close()
    finally:
        t0 = time.perf_counter()
        cleanup.teardown(run)
        res["teardown_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
