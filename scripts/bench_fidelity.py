#!/usr/bin/env python3
"""Benchmark: path stretch (planned delay over the free-choice optimum) per attach policy, issue 14.

Scenario: Starlink shell 1 with the 100 cities of scripts/make_city_scenario.py
in the Hypatia-like variant (TLEs at 15.19 rev/day, ground links up to a slant
range of 1,089.686 km, 1 s slices); every user terminal has a destination
(the ground station of another city). For each attach policy and each
antenna count per ground station, the real planner (make_plan) plans the
slices, and for every (user terminal, target) pair and slice the planned
one-way delay of the satellite segment is divided by the free-choice optimum
(both ends free among the satellites they see, no relaying through the
ground; propagation only, as the reference simulators compute it).

Groups: ``destination`` (UT -> the destination GS: the measure the goal is
about) and ``gateway`` (UT -> the GS multi-source selection chose for its
Internet traffic; with a destination set, shortest-path optimises the UT's
satellite for the destination, not for this pair).

Goal (issue 14): shortest-path with multi-antenna ground stations, destination
pairs: median <= 1.02, p99 <= 1.10. Baseline: highest-elevation with one
antenna per ground station (each end on its own nearest/highest satellite).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from make_city_scenario import scenario_text  # noqa: E402

from emu.plan.planner import make_plan  # noqa: E402
from emu.plan.stretch import stretch_of  # noqa: E402
from emu.scenario.load import load_scenario  # noqa: E402
from emu.scenario.model import DEFAULT_GS_ANTENNAS  # noqa: E402

POLICIES = ("highest-elevation", "nearest", "longest-visibility", "shortest-path")


def _stats(st: np.ndarray) -> dict:
    if len(st) == 0:
        return {"samples": 0}
    return {"samples": int(len(st)), "median": round(float(np.median(st)), 4),
            "p99": round(float(np.percentile(st, 99)), 4), "max": round(float(st.max()), 4)}


def run(policy: str, antennas: int, slices: int, tmp: Path) -> dict:
    p = tmp / f"{policy}-{antennas}.yaml"
    p.write_text(scenario_text(tmp / "hypatia", destinations=True, attach_policy=policy, antennas=antennas,
                               slices=slices))
    loaded = load_scenario(p)
    t0 = time.perf_counter()
    plan = make_plan(loaded)
    wall = time.perf_counter() - t0
    names = plan.series.ground.names
    dest = {u.name: u.destination for u in loaded.scenario.user_terminals}
    rows = np.concatenate([s.pairs for s in plan.slices])
    is_dest = np.array([dest[names[a]] == names[b] for a, b in zip(rows["src"], rows["dst"])], dtype=bool)
    st_d, st_g = stretch_of(rows[is_dest]), stretch_of(rows[~is_dest])
    return {"destination": _stats(st_d), "gateway": _stats(st_g),
            "unreachable_samples": int(np.count_nonzero(~np.isfinite(rows["planned_ms"]))),
            "handovers_ut": int(sum(1 for _k, n, _a, _b in plan.attach.handovers() if plan.series.ground.kind[n] == "ut")),
            "plan_wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=100, help="1 s slices to plan (default 100)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--antennas", default=f"1,{DEFAULT_GS_ANTENNAS}", help="antenna counts per GS to compare")
    a = ap.parse_args()
    out = {"scenario": "starlink-shell1 (100 cities), Hypatia-like: 15.19 rev/day, GSL <= 1089.686 km, 1 s slices",
           "slices": a.slices, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for pol in a.policies.split(","):
            for n in (int(x) for x in a.antennas.split(",")):
                out["results"][f"{pol}/antennas={n}"] = run(pol, n, a.slices, Path(tmp))
    base = out["results"].get("highest-elevation/antennas=1")
    best = out["results"].get(f"shortest-path/antennas={DEFAULT_GS_ANTENNAS}")
    if base and best and base["destination"]["samples"] and best["destination"]["samples"]:
        out["baseline"] = "highest-elevation/antennas=1"
        out["ratio_median"] = round(best["destination"]["median"] / base["destination"]["median"], 4)
        out["ratio_p99"] = round(best["destination"]["p99"] / base["destination"]["p99"], 4)
        out["goal"] = {"median_le": 1.02, "p99_le": 1.10,
                       "met": best["destination"]["median"] <= 1.02 and best["destination"]["p99"] <= 1.10}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
