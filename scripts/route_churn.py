#!/usr/bin/env python3
"""Where the route churn between slices comes from (issue 16; docs/route-churn.md). Prints one JSON object.

Plans the first N + gap slices of a scenario in memory (default Starlink shell 1), then for k = 0..N-1 and
each gap (1: the next slice; 3: what a kernel table of the data plane's three-table rotation is rewritten
from) compares the plan tables of slice k and k + gap:

- ``messages``: deleted + added + changed entries (one kernel message each, per address family);
- ``entries``: the same split by destination kind (ground regions / satellite addresses) and by meaning
  (the segmented longest match answers differently for some destination under the entry) vs
  representation only (every destination under it keeps its answer);
- ``pairs``: the (satellite, ground destination) answers that changed, by cause (``emu.plan.churn
  .pair_causes``: terminal set, ISL set, geometry), and the geometry ones by how the direction set moved;
- ``bindings_changed``: satellites whose bound region (a local route the data plane adds) changed;
  ``uts_serving_changed`` / ``gs_antenna_sets_changed``: user terminals whose serving satellite and ground
  stations whose set of linked satellites differ between the two slices.

``--satellite-destinations on|off`` overrides the scenario's setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.plan import churn  # noqa: E402
from emu.plan.planner import destinations_for, make_plan, satellite_addresses  # noqa: E402
from emu.plan.verify import lookup_all  # noqa: E402
from emu.scenario.load import load_scenario  # noqa: E402

TIE_NAMES = ("nested_sets", "disjoint", "overlapping", "terminal_or_unreachable", "weights_only")


def _stats(xs: list[float]) -> dict:
    a = np.asarray(xs, dtype=float)
    return {"mean": round(float(a.mean()), 1), "min": int(a.min()), "max": int(a.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/starlink-shell1.yaml")
    ap.add_argument("--slices", type=int, default=10, help="slices k compared (k = 0..N-1)")
    ap.add_argument("--gaps", default="1,3")
    ap.add_argument("--satellite-destinations", choices=("on", "off"), default=None)
    ap.add_argument("--attach-policy", default=None, help="override routing.attach_policy (how UTs pick a satellite)")
    ap.add_argument("--causes", action=argparse.BooleanOptionalAction, default=True,
                    help="attribute changed ground answers to terminal / ISL set / geometry (replans 3x)")
    args = ap.parse_args()
    gaps = [int(g) for g in args.gaps.split(",")]
    loaded = load_scenario(args.scenario)
    update = {}
    if args.satellite_destinations is not None:
        update["satellite_destinations"] = args.satellite_destinations == "on"
    if args.attach_policy is not None:
        update["attach_policy"] = args.attach_policy
    if update:
        sc = loaded.scenario
        loaded = dataclasses.replace(loaded, scenario=sc.model_copy(update={"routing": sc.routing.model_copy(update=update)}))
    routing = loaded.scenario.routing
    n = args.slices + max(gaps)
    t0 = time.perf_counter()
    plan = make_plan(loaded, n)
    plan_s = time.perf_counter() - t0
    G = plan.series.ground.size
    tables = [sp.tables for sp in plan.slices]
    addrs = plan.ground_grc.astype(np.int64)
    if routing.satellite_destinations:
        addrs = np.concatenate([addrs, satellite_addresses(loaded, plan.series.constellation).astype(np.int64)])
    is_ground = np.arange(len(addrs)) < G
    answers = [lookup_all(t, addrs) for t in tables]  # (sats, dests)
    N = answers[0].shape[0]
    slinks = [churn.links_of(plan.series.links(k)) for k in range(n)]
    dests = [destinations_for(plan, k) for k in range(n)]
    # the planner's codes are the answers: the lookup of every ground destination gives its code back
    out = {"scenario": loaded.scenario.name, "satellites": N, "ground_destinations": G,
           "satellite_destinations": bool(routing.satellite_destinations), "multipath": routing.multipath,
           "attach_policy": routing.attach_policy, "slices_compared": args.slices, "plan_s": round(plan_s, 2),
           "entries_per_slice": _stats([len(t.prefix) for t in tables[:args.slices]])}
    out["bindings_changed"] = _stats([int((plan.bind.grc[k] != plan.bind.grc[k + 1]).sum()) for k in range(args.slices)])
    for gap in gaps:
        per = {"messages": [], "gone": [], "new": [], "changed": []}
        cls_sum: dict = {}
        pairs = {"answers_changed": [], "ground_answers_changed": []}
        cause_sum = {c: 0 for c in churn.CAUSES}
        kind_sum = {}
        tie_sum = {t: 0 for t in TIE_NAMES}
        link_changes = []
        ut_moves, gs_moves = [], []
        node_kind = np.asarray(plan.series.ground.kind)
        for k in range(args.slices):
            kk = k + gap
            d = churn.entry_diff(tables[k], tables[kk])
            for w in ("gone", "new", "changed"):
                per[w].append(len(d[w]))
            per["messages"].append(churn.messages(d))
            moved = answers[k] != answers[kk]
            pairs["answers_changed"].append(int(moved.sum()))
            pairs["ground_answers_changed"].append(int(moved[:, :G].sum()))
            c = churn.classify(d, addrs, is_ground, moved)
            for w, row in c.items():
                for name, v in row.items():
                    cls_sum.setdefault(w, {}).setdefault(name, 0)
                    cls_sum[w][name] += v
            link_changes.append(len(np.setxor1d(churn._link_id(slinks[k]), churn._link_id(slinks[kk]))))
            serving = plan.attach.serving
            ut_moves.append(int(((serving[k] != serving[kk]) & (node_kind == "ut")).sum()))
            lk, lkk = (np.sort(np.where(plan.attach.links[x] >= 0, plan.attach.links[x], -1), axis=1) for x in (k, kk))
            gs_moves.append(int(((lk != lkk).any(axis=1) & (node_kind == "gs")).sum()))
            if args.causes:
                t_k, t_kk = dests[k].terminals(), dests[kk].terminals()
                r = churn.pair_causes(N, (slinks[k], slinks[kk]), (t_k, t_kk), dests[k].term_code,
                                      dests[k].addr, dests[k].plen, routing)
                assert (r["c0"].T == answers[k][:, :G]).all() and (r["c3"].T == answers[kk][:, :G]).all(), \
                    "replanned codes differ from the plan's answers"
                for i, name in enumerate(churn.CAUSES):
                    cause_sum[name] += int((r["cause"] == i).sum())
                    for kind in ("gs", "ut"):
                        rows = np.asarray(plan.series.ground.kind) == kind
                        kind_sum.setdefault(kind, {c: 0 for c in churn.CAUSES})
                        kind_sum[kind][name] += int((r["cause"][rows] == i).sum())
                geo = r["cause"] == 2
                kinds = churn.tie_kind(r["c2"][geo], r["c3"][geo])
                for i, name in enumerate(TIE_NAMES):
                    tie_sum[name] += int((kinds == i).sum())
        S = args.slices
        block = {w: _stats(v) for w, v in per.items()}
        block["entries"] = {w: {name: round(v / S, 1) for name, v in row.items()} for w, row in cls_sum.items()}
        block["entries"]["note"] = "per slice pair, mean over the slices compared"
        block["answers_changed"] = _stats(pairs["answers_changed"])
        block["ground_answers_changed"] = _stats(pairs["ground_answers_changed"])
        block["isl_set_changes"] = _stats(link_changes)
        block["uts_serving_changed"] = _stats(ut_moves)
        block["gs_antenna_sets_changed"] = _stats(gs_moves)
        if args.causes:
            block["ground_answer_causes"] = {name: round(v / S, 1) for name, v in cause_sum.items()}
            block["ground_answer_causes_by_kind"] = {kind: {name: round(v / S, 1) for name, v in row.items()}
                                                     for kind, row in kind_sum.items()}
            block["geometry_direction_sets"] = {name: round(v / S, 1) for name, v in tie_sum.items()}
        out[f"gap_{gap}"] = block
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
