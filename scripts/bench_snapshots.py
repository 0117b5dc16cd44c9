#!/usr/bin/env python3
"""Benchmark: snapshots of one full orbit of a scenario (default: Starlink shell 1).

Prints one JSON object: wall_s (load + constellation + propagation + ISLs +
ground visibility + GRC bindings for every slice), slices, satellites,
isls_per_slice, ground_links_total, peak_rss_mb.
Budget (issue #2): <= 20 s for starlink-shell1 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.scenario.load import load_scenario  # noqa: E402
from emu.snapshot.series import SnapshotSeries  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/starlink-shell1.yaml")
    args = ap.parse_args()
    t0 = time.perf_counter()
    loaded = load_scenario(args.scenario)
    series = SnapshotSeries(loaded)
    isls = [len(series.links(k)) for k in range(len(series))]  # materialise every slice's links
    wall = time.perf_counter() - t0
    print(json.dumps({
        "scenario": loaded.scenario.name,
        "wall_s": round(wall, 3),
        "slices": len(series),
        "satellites": series.constellation.size,
        "isls_per_slice_min": min(isls),
        "isls_per_slice_max": max(isls),
        "ground_links_total": int(len(series.visibility.node)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
