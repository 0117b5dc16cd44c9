#!/usr/bin/env python3
"""Benchmark: the slice applier's own Python work, netlink replaced by batches that send nothing. No root.

Builds the applier of a plan (default: a Starlink shell 1 plan you give with
--plan) over a fabric of unbound ``NetlinkBatch`` objects -- every message is
encoded and queued exactly as in a real run, then dropped -- and runs
``initial``, ``warm`` (as the controller before its clock starts) and
--boundaries boundaries back to back. Per phase it reports wall-clock and
process CPU milliseconds (CPU time is far less sensitive to a loaded shared
machine than wall-clock) and the messages queued. The kernel's
share of a real boundary is then ``bench_up.py``'s time minus this.
Prints one JSON object; --profile adds the top functions of the last
boundary (cProfile, by own time) on stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.dataplane.model import Model  # noqa: E402
from emu.dataplane.dropfabric import DropFabric  # noqa: E402
from emu.dataplane.slices import SliceApplier  # noqa: E402
from emu.plan.db import PlanDB  # noqa: E402


def timed(fn, f: DropFabric) -> tuple[float, float, int]:
    m0, w0, c0 = f.msgs, time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3, f.msgs - m0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", required=True)
    ap.add_argument("--boundaries", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    db = PlanDB(args.plan)
    m = Model.from_plan(db, "zz", args.boundaries + 1)
    f = DropFabric([x.netns for x in m.nodes])
    a = SliceApplier(m, f)
    iw, ic, im = timed(lambda: a.initial(0), f)
    ww, wc, wm = timed(lambda: a.warm(m.n_slices), f)  # as the controller's loop, before its clock starts
    rows = {"prep": [], "switch": [], "cleanup": []}
    pr = cProfile.Profile()
    for k in range(1, args.boundaries + 1):
        if args.profile and k == args.boundaries:
            pr.enable()
        rows["prep"].append(timed(lambda: a.prepare(k), f))
        rows["switch"].append(timed(lambda: a.switch(k), f))
        rows["cleanup"].append(timed(lambda: a.cleanup(k), f))
        pr.disable()
    res = {"plan": args.plan, "satellites": len(m.satellites), "boundaries": args.boundaries,
           "initial_wall_s": round(iw / 1e3, 2), "initial_cpu_s": round(ic / 1e3, 2), "initial_msgs": im,
           "warm_cpu_s": round(wc / 1e3, 2), "warm_msgs": wm}
    for phase, vals in rows.items():
        w, c, n = (np.array(x) for x in zip(*vals))
        res[f"{phase}_wall_p50_ms"] = round(float(np.median(w)), 1)
        res[f"{phase}_cpu_p50_ms"] = round(float(np.median(c)), 1)
        res[f"{phase}_cpu_max_ms"] = round(float(c.max()), 1)
        res[f"{phase}_msgs_p50"] = int(np.median(n))
    if args.profile:
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(20)
        print(s.getvalue(), file=sys.stderr)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
