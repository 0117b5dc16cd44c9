#!/usr/bin/env python3
"""Benchmark: plan one full orbit of a scenario (default: Starlink shell 1 with 100 GS + 100 UT), in one run:

- the snapshots of the same orbit alone (the baseline of the planning budget),
- the plan with satellites as destinations (``routing.satellite_destinations: true``) and without,
- ``verify`` of the plan with them (signatures, then every table walked to every destination).

Each plan runs the same code as `leo-emu plan` (snapshots, attachments, routing tables, aggregation,
signatures, SQLite). Prints one JSON object with the times, entries and the ratios the budgets are
stated in (issue 16): plan <= 2.5x snapshots, satellites as destinations <= 1.5x the time and entries
without them, verify <= the plan's own time, peak RSS <= 4 GB. The machine is shared and noisy: the
ratios come from the same run, in wall time and (under "cpu") in CPU seconds of the process and its
forked workers, which another tenant's load does not inflate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.cli.plan_cmds import build_plan  # noqa: E402
from emu.plan.db import PlanDB  # noqa: E402
from emu.plan.verify import verify  # noqa: E402
from emu.scenario.load import load_scenario  # noqa: E402
from emu.snapshot.series import SnapshotSeries  # noqa: E402


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (the planner's forked workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args):
    """(result, wall s, CPU s) of fn(*args)."""
    t0, c0 = time.perf_counter(), cpu_s()
    out = fn(*args)
    return out, time.perf_counter() - t0, cpu_s() - c0


def snapshots(scenario: str, slices: int | None) -> None:
    series = SnapshotSeries(load_scenario(scenario), slices)
    for k in range(len(series)):  # materialise every slice's links, as bench_snapshots.py does
        series.links(k)


def variant(scenario: Path, satellite_destinations: bool, folder: Path) -> Path:
    """The scenario with routing.satellite_destinations set, written into ``folder`` (a shell's relative
    tle_file made absolute, so it still resolves)."""
    data = yaml.safe_load(scenario.read_text())
    data.setdefault("routing", {})["satellite_destinations"] = satellite_destinations
    for shell in data.get("shells") or []:
        if isinstance(shell, dict) and shell.get("tle_file") and not Path(shell["tle_file"]).is_absolute():
            shell["tle_file"] = str(scenario.parent / shell["tle_file"])
    out = folder / f"{scenario.stem}-{'sd' if satellite_destinations else 'no-sd'}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def plan_once(scenario: Path, sd: bool, out: Path, slices: int | None) -> dict:
    v = variant(scenario, sd, out.parent)
    try:
        return build_plan(str(v), out, slices, fmt="json")
    finally:
        v.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/starlink-shell1.yaml")
    ap.add_argument("--slices", type=int, default=None, help="default: the scenario's duration (one orbit)")
    ap.add_argument("-o", "--output", default=None, help="keep the plan with satellite destinations here")
    args = ap.parse_args()
    scenario = Path(args.scenario).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        _, snap, snap_cpu = timed(snapshots, str(scenario), args.slices)
        s_no, t_no, c_no = timed(plan_once, scenario, False, Path(tmp) / "no-sd.plan.db", args.slices)
        out = Path(args.output) if args.output else Path(tmp) / "sd.plan.db"
        s_sd, t_sd, c_sd = timed(plan_once, scenario, True, out, args.slices)
        rep, t_ver, c_ver = timed(lambda: verify(PlanDB(out)))
        r = lambda x: round(x, 3)  # noqa: E731
        print(json.dumps({
            "bench": "plan",
            "scenario": s_sd["scenario"],
            "slices": s_sd["slices"],
            "satellites": s_sd["satellites"],
            "destinations": s_sd["destinations"],
            "snapshot_s": r(snap),
            "plan_s": r(t_sd),
            "plan_no_satdest_s": r(t_no),
            "plan_over_snapshot": r(t_sd / snap),
            "plan_no_satdest_over_snapshot": r(t_no / snap),
            "satdest_time_ratio": r(t_sd / t_no),
            "cpu": {"snapshot_s": r(snap_cpu), "plan_s": r(c_sd), "plan_no_satdest_s": r(c_no), "verify_s": r(c_ver),
                    "plan_over_snapshot": r(c_sd / snap_cpu), "satdest_time_ratio": r(c_sd / c_no),
                    "verify_over_plan": r(c_ver / c_sd)},
            "table_entries_total": s_sd["table_entries_total"],
            "table_entries_no_satdest_total": s_no["table_entries_total"],
            "satdest_entries_ratio": r(s_sd["table_entries_total"] / s_no["table_entries_total"]),
            "table_entries_unaggregated_total": s_sd["table_entries_unaggregated_total"],
            "table_size": s_sd["table_size"],
            "table_size_no_satdest": s_no["table_size"],
            "verify_s": r(t_ver),
            "verify_over_plan": r(t_ver / t_sd),
            "verify_ok": rep.ok,
            "verify_pairs_checked": rep.pairs_checked,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "handovers": s_sd["handovers"],
            "db_mb": round(os.path.getsize(out) / 2**20, 1),
            "cpu_count": os.cpu_count(),
        }))


if __name__ == "__main__":
    main()
