#!/usr/bin/env python3
"""Benchmark: the check `up` makes before building vs the full `verify`, on one plan.

Plans SCENARIO (default: Starlink shell 1) for --slices slices with a throw-away
ground-control key, then times, on the same file:
- ``check_before_up`` (structure, trusted signer, the seal over every row of
  every table, scenario digest: what `up` waits for),
- ``verify --signatures-only`` (the seal plus every slice's per-satellite digests),
- ``verify`` (all of that plus every table walked to every destination), the baseline.
Prints one JSON object with the times and the ratio check/verify.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/starlink-shell1.yaml")
    ap.add_argument("--slices", type=int, default=20, help="0: the scenario's whole duration")
    ap.add_argument("--no-walk", action="store_true",
                    help="skip the full verify (minutes on a whole orbit): the baseline is verify --signatures-only")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="leoemu-bench-trust-"))
    os.environ.setdefault("LEOEMU_GC_KEY", str(tmp / "gc.key"))
    from emu.cli.plan_cmds import build_plan
    from emu.plan.db import PlanDB
    from emu.plan.trust import check_before_up
    from emu.plan.verify import verify
    from emu.scenario.load import load_scenario

    plan = tmp / "bench.db"
    build_plan(args.scenario, plan, args.slices or None, fmt="json")
    digest = load_scenario(args.scenario).digest
    res = {"scenario": args.scenario, "slices": PlanDB(plan).n_slices, "db_mb": round(plan.stat().st_size / 2**20, 2)}

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return round(time.perf_counter() - t0, 3)

    res["check_before_up_s"] = timed(lambda: check_before_up(plan, (), digest).close())
    res["verify_signatures_s"] = timed(lambda: verify(PlanDB(plan), walk=False))
    if args.no_walk:
        res["ratio_check_vs_verify_signatures"] = round(res["check_before_up_s"] / res["verify_signatures_s"], 4)
    else:
        res["verify_full_s"] = timed(lambda: verify(PlanDB(plan), walk=True))
        res["ratio_check_vs_full_verify"] = round(res["check_before_up_s"] / max(res["verify_full_s"], 1e-9), 4)
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    print(json.dumps(res, sort_keys=True))


if __name__ == "__main__":
    main()
