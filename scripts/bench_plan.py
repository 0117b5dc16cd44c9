#!/usr/bin/env python3
"""Benchmark: plan one full orbit of a scenario (default: Starlink shell 1 with 100 GS + 100 UT).

Runs the same code as `leo-emu plan` (snapshots, attachments, routing tables,
aggregation, signatures, SQLite) and prints one JSON object with wall_s,
peak_rss_mb, table_entries_total, slices, satellites, destinations, db_mb.
Budget (issue #3): <= 60 s and <= 4 GB on a 2-core machine.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.cli.plan_cmds import build_plan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/starlink-shell1.yaml")
    ap.add_argument("--slices", type=int, default=None)
    ap.add_argument("-o", "--output", default=None, help="keep the plan here (default: a temporary file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output) if args.output else Path(tmp) / "bench.plan.db"
        t0 = time.perf_counter()
        summary = build_plan(args.scenario, out, args.slices, fmt="json")
        wall = time.perf_counter() - t0
        print(json.dumps({
            "scenario": summary["scenario"],
            "wall_s": round(wall, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "slices": summary["slices"],
            "satellites": summary["satellites"],
            "destinations": summary["destinations"],
            "table_entries_total": summary["table_entries_total"],
            "table_entries_unaggregated_total": summary["table_entries_unaggregated_total"],
            "table_size": summary["table_size"],
            "table_size_unaggregated": summary["table_size_unaggregated"],
            "handovers": summary["handovers"],
            "db_mb": round(os.path.getsize(out) / 2**20, 1),
            "cpu_count": os.cpu_count(),
        }))


if __name__ == "__main__":
    main()
