"""Planner stages for short paths (issue 14): antenna demand, shortest-path attachment, path stretch.

spec: grc-based-routing §Predictive Routing (paths computed centrally from
ephemeris), §Data Forwarding Process step 2 (the UT's choice of GS). See
docs/fidelity.md. Every function here takes the planner's ``Plan`` and one
slice index or snapshot, so the planner can run them in forked workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from emu.plan.attach import select_gs
from emu.plan.routing import destination_distances
from emu.snapshot.ground import C_KM_S

if TYPE_CHECKING:
    from emu.plan.planner import Plan

PAIR_DTYPE = np.dtype([("src", "<i4"), ("dst", "<i4"), ("planned_ms", "<f8"), ("optimum_ms", "<f8")])
"""Satellite-segment one-way delay of a user terminal to its chosen GS and to its ``destination`` (if any):
planned (its serving satellite, then the tables' shortest path to any satellite the target links to) and the
free-choice optimum (both ends free among the satellites they see, no relaying through the ground)."""


def _visible(snap) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """ground node -> (satellites it sees, up/down delay ms) in one slice's snapshot."""
    v = snap.ground_links
    out = {}
    order = np.argsort(v.node, kind="stable")
    nodes, starts = np.unique(v.node[order], return_index=True)
    ends = list(starts[1:]) + [len(order)]
    for g, a, b in zip(nodes.tolist(), starts.tolist(), ends):
        rows = order[a:b]
        out[g] = (v.sat[rows].astype(np.int64), v.range_km[rows] / C_KM_S * 1e3)
    return out


def _terminals_of(nodes: list[int], sets: dict[int, tuple[np.ndarray, np.ndarray]]):
    d, s, w = [], [], []
    for i, g in enumerate(nodes):
        sats, delay = sets.get(g, (np.zeros(0, np.int64), np.zeros(0)))
        d.append(np.full(len(sats), i, dtype=np.int64))
        s.append(sats)
        w.append(delay)
    return np.concatenate(d), np.concatenate(s), np.concatenate(w)


def _links_as_sets(plan: Plan, k: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    L = plan.attach.links[k]
    out = {}
    for g in range(L.shape[0]):
        j = np.nonzero(L[g] >= 0)[0]
        if len(j):
            out[g] = (L[g, j].astype(np.int64), plan.attach.link_range_km[k][g, j] / C_KM_S * 1e3)
    return out


def gs_choice(plan: Plan, dist_to: dict[int, np.ndarray], from_sats: dict[int, np.ndarray]) -> np.ndarray:
    """select_gs with reachability 'some satellite the UT uses/sees reaches the GS through the links'."""
    gs = sorted(dist_to)
    col = {g: i for i, g in enumerate(gs)}
    finite = np.isfinite(np.stack([dist_to[g] for g in gs])) if gs else np.zeros((0, 0), bool)
    reach = {u: finite[:, sats].any(axis=1) for u, sats in from_sats.items() if len(sats) and gs}

    def reachable(u: int, g: int) -> bool:
        r = reach.get(u)
        return r is not None and g in col and bool(r[col[g]])

    return select_gs(plan.loaded.scenario.routing.gs_selection, plan.gs_order, reachable)


def _targets(plan: Plan, choice: np.ndarray) -> list[tuple[int, int]]:
    """(UT node, target ground node) pairs of one slice: the chosen GS, and the UT's destination if it has one."""
    sc = plan.loaded.scenario
    names = plan.series.ground.names
    dest = {u.name: u.destination for u in sc.user_terminals}
    out = []
    for row, u in enumerate(plan.gs_order):
        if choice[row, 0] >= 0:
            out.append((u, int(choice[row, 0])))
        d = dest.get(names[u])
        if d is not None:
            out.append((u, names.index(d)))
    return out


def antennas_scarce(plan: Plan) -> bool:
    """Whether some ground station ever sees more satellites than it has antennas (else demand changes nothing)."""
    from emu.plan.attach import antennas_of

    v = plan.series.visibility
    if len(v.node) == 0:
        return False
    G = plan.series.ground.size
    seen = np.bincount(v.slice.astype(np.int64) * G + v.node, minlength=len(plan.series) * G).reshape(-1, G)
    return bool((seen.max(axis=0) > antennas_of(plan.series)).any())


@dataclass(frozen=True)
class FreeSlice:
    """One slice seen with both ends free: per UT (rows in ``plan.gs_order`` order) and ground node, the
    free-choice optimum delay (ms, inf: none); and where the planned traffic needs each GS's antennas."""

    optimum: np.ndarray  # (uts, ground nodes) float64
    demand: dict[int, list[int]]


def free_pass(plan: Plan, k: int) -> FreeSlice:
    """Both ends free, slice k: one Dijkstra per UT from the satellites it sees (no relaying through the ground).

    ``optimum[u, t]``: least up + ISL path + down over every satellite pair the
    two ends see. ``demand``: GS node -> satellites, most used first: every
    user terminal's targets (its ``destination`` if that is a ground station,
    and the nearest GS of its operator that sees a satellite, the one
    proximity selection would pick) each name one satellite, the egress of
    the free-choice shortest path. Ties: the lower satellite index.
    """
    sc = plan.loaded.scenario
    snap = plan.series[k]
    L = snap.links
    N = snap.constellation.size
    g = plan.series.ground
    uts = list(plan.gs_order)
    vis = _visible(snap)
    opt = np.full((len(uts), g.size), np.inf)
    if not uts or not vis:
        return FreeSlice(opt, {})
    D = destination_distances(N, L.a, L.b, L.delay_ms, _terminals_of(uts, vis), len(uts))  # (uts, sats)
    v = snap.ground_links
    order = np.argsort(v.node, kind="stable")
    nodes, starts = np.unique(v.node[order], return_index=True)
    M = D[:, v.sat[order]] + (v.range_km[order] / C_KM_S * 1e3)[None, :]  # (uts, visibility rows)
    opt[:, nodes] = np.minimum.reduceat(M, starts, axis=1)
    names = g.names
    dest = {u.name: u.destination for u in sc.user_terminals}
    count: dict[int, dict[int, int]] = {}
    for i, u in enumerate(uts):
        targets = [t for t in plan.gs_order[u] if t in vis][:1]
        d = dest.get(names[u])
        if d is not None and g.kind[names.index(d)] == "gs" and names.index(d) in vis:
            targets.append(names.index(d))
        for t in set(targets):
            sats, down = vis[t]
            cost = D[i][sats] + down
            if not np.isfinite(cost).any():
                continue
            j = int(np.lexsort((sats, cost))[0])
            count.setdefault(t, {})
            count[t][int(sats[j])] = count[t].get(int(sats[j]), 0) + 1
    return FreeSlice(opt, {t: sorted(c, key=lambda s: (-c[s], s)) for t, c in count.items()})


def shortest_path_costs(plan: Plan, k: int) -> dict[int, dict[int, float]]:
    """Attach policy shortest-path, one slice: for every UT, each visible satellite's delay to the UT's target.

    The target is the UT's ``destination`` if it has one, else the GS that
    multi-source selection picks for it. A GS target is reached through the
    satellites it links to (its antennas); a UT target through any satellite
    it sees (both ends free, so two UTs that target each other pick the two
    ends of the same shortest path).
    """
    sc = plan.loaded.scenario
    snap = plan.series[k]
    L = snap.links
    N = snap.constellation.size
    vis = _visible(snap)
    gs_nodes = [g for g in range(plan.series.ground.size) if plan.series.ground.kind[g] == "gs"]
    gs_sets = _links_as_sets(plan, k)
    gdist = destination_distances(N, L.a, L.b, L.delay_ms, _terminals_of(gs_nodes, gs_sets), len(gs_nodes))
    dist_to = {g: gdist[i] for i, g in enumerate(gs_nodes)}
    choice = gs_choice(plan, dist_to, {u: vis[u][0] for u in vis})
    dest = {u.name: u.destination for u in sc.user_terminals}
    names = plan.series.ground.names
    target = {}
    for row, u in enumerate(plan.gs_order):
        d = dest.get(names[u])
        target[u] = names.index(d) if d is not None else int(choice[row, 0])
    ut_targets = sorted({t for t in target.values() if t >= 0 and plan.series.ground.kind[t] == "ut"})
    if ut_targets:
        udist = destination_distances(N, L.a, L.b, L.delay_ms, _terminals_of(ut_targets, vis), len(ut_targets))
        dist_to.update({t: udist[i] for i, t in enumerate(ut_targets)})
    out = {}
    for u, t in target.items():
        sats, up = vis.get(u, (np.zeros(0, np.int64), np.zeros(0)))
        if t < 0 or t not in dist_to:
            out[u] = {}
            continue
        out[u] = {int(s): float(d) for s, d in zip(sats.tolist(), (up + dist_to[t][sats]).tolist())}
    return out


def pair_delays(plan: Plan, snap, dist: np.ndarray, choice: np.ndarray, free: FreeSlice) -> np.ndarray:
    """Planned and free-choice one-way delay (satellite segment, propagation only) of every (UT, target) pair.

    planned: the UT's up link to its serving satellite plus the plan's
    shortest path from there to any satellite the target links to, plus that
    down link (``dist``: :func:`destination_distances` of this slice's
    destinations). optimum: the least up + ISL path + down over every pair of
    satellites the two ends see (both free, no relaying through the ground;
    :func:`free_pass`). NaN where there is no path.
    """
    k = snap.index - plan.series.first_index
    pairs = _targets(plan, choice)
    out = np.zeros(len(pairs), dtype=PAIR_DTYPE)
    row = {u: i for i, u in enumerate(plan.gs_order)}
    for i, (u, t) in enumerate(pairs):
        s = int(plan.attach.serving[k, u])
        planned = np.nan
        if s >= 0:
            planned = plan.attach.range_km[k, u] / C_KM_S * 1e3 + dist[t, s]
        opt = float(free.optimum[row[u], t])
        out[i] = (u, t, planned if np.isfinite(planned) else np.nan, opt if np.isfinite(opt) else np.nan)
    return out
