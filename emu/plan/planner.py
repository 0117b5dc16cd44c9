"""The ground control unit: turn a scenario's snapshots into a plan for every slice.

spec: grc-based-routing §Predictive Routing, §Routing Table Structure,
§Data Forwarding Process (multi-source selection), §Routing Database.
Pure Python + numpy/scipy, deterministic, no root. The data plane installs
what this computes and never recomputes it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emu.plan import actions
from emu.plan.attach import (Attachments, Bindings, MappingRow, attachments, bindings, candidate_order, ground_grcs,
                             mapping_table, select_gs, shortest_path_serving)
from emu.plan.routing import Destinations, SliceTables, aggregate, destination_distances, down_code, next_hop_codes
from emu.snapshot.ground import C_KM_S
from emu.scenario.load import LoadedScenario
from emu.snapshot.series import SnapshotSeries

log = logging.getLogger(__name__)


@dataclass
class SlicePlan:
    index: int
    time_s: float
    tables: SliceTables
    raw_entries: np.ndarray  # per satellite, entries before aggregation
    links: np.ndarray  # structured: a, b, dir_a, dir_b, delay_ms
    gs_choice: np.ndarray  # (uts, 2) ground-node index [chosen, backup]
    disconnected: int  # (satellite, destination) pairs with no path
    pairs: np.ndarray | None = None  # PAIR_DTYPE: planned vs free-choice delay per (UT, target) this slice


@dataclass
class Plan:
    loaded: LoadedScenario
    series: SnapshotSeries
    attach: Attachments | None
    bind: Bindings
    ground_grc: np.ndarray
    ground_plen: np.ndarray
    mapping: list[MappingRow]
    gs_order: dict[int, list[int]]
    slices: list[SlicePlan] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def destinations_count(self) -> int:
        n = self.series.ground.size
        if self.loaded.scenario.routing.satellite_destinations:
            n += self.series.constellation.size
        return n


PAIR_DTYPE = np.dtype([("src", "<i4"), ("dst", "<i4"), ("planned_ms", "<f8"), ("optimum_ms", "<f8")])
"""Satellite-segment one-way delay of a user terminal to its chosen GS and to its ``destination`` (if any):
planned (its serving satellite, then the tables' shortest path to any satellite the target links to) and the
free-choice optimum (both ends free among the satellites they see, no relaying through the ground)."""

LINK_DTYPE = np.dtype([("a", "<i4"), ("b", "<i4"), ("dir_a", "i1"), ("dir_b", "i1"), ("delay_ms", "<f4")])


def neighbour_matrix(links: np.ndarray, n_sats: int) -> tuple[np.ndarray, np.ndarray]:
    """From a slice's LINK_DTYPE links: (sats, 6) neighbour index by direction (-1: none) and link delay (NaN)."""
    nb = np.full((n_sats, 6), -1, dtype=np.int64)
    dl = np.full((n_sats, 6), np.nan)
    nb[links["a"], links["dir_a"]] = links["b"]
    nb[links["b"], links["dir_b"]] = links["a"]
    dl[links["a"], links["dir_a"]] = links["delay_ms"]
    dl[links["b"], links["dir_b"]] = links["delay_ms"]
    return nb, dl


def destinations_for(plan: Plan, k: int) -> Destinations:
    """Ground nodes (a Down entry on every satellite each links to) and, if configured, satellites' own GRCs."""
    sc = plan.loaded.scenario
    G = plan.series.ground.size
    addr = [plan.ground_grc]
    plen = [plan.ground_plen]
    term = [plan.attach.serving[k].astype(np.int32)]
    tcode = [np.array([down_code(g) for g in range(G)], dtype=np.int64)]
    g_idx, j = np.nonzero(plan.attach.links[k] >= 0)
    t_dest = [g_idx]
    t_sat = [plan.attach.links[k][g_idx, j].astype(np.int64)]
    t_delay = [plan.attach.link_range_km[k][g_idx, j] / C_KM_S * 1e3]
    if sc.routing.satellite_destinations:
        N = plan.series.constellation.size
        addr.append(plan.bind.grc[k])
        plen.append(np.full(N, 11 + 3 * plan.bind.level, dtype=np.uint8))
        term.append(np.arange(N, dtype=np.int32))
        tcode.append(np.full(N, actions.local(), dtype=np.int64))
        t_dest.append(G + np.arange(N))
        t_sat.append(np.arange(N, dtype=np.int64))
        t_delay.append(np.zeros(N))
    return Destinations(np.concatenate(addr).astype(np.uint32), np.concatenate(plen).astype(np.uint8),
                        np.concatenate(term), np.concatenate(tcode),
                        (np.concatenate(t_dest), np.concatenate(t_sat), np.concatenate(t_delay)))


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


def _gs_choice(plan: Plan, dist_to: dict[int, np.ndarray], from_sats: dict[int, np.ndarray]) -> np.ndarray:
    """select_gs with reachability 'some satellite the UT uses/sees reaches the GS through the links'."""
    def reachable(u: int, g: int) -> bool:
        sats = from_sats.get(u)
        return sats is not None and len(sats) > 0 and g in dist_to and bool(np.isfinite(dist_to[g][sats]).any())

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


def _antennas_scarce(plan: Plan) -> bool:
    """Whether some ground station ever sees more satellites than it has antennas (else demand changes nothing)."""
    from emu.plan.attach import antennas_of

    v = plan.series.visibility
    if len(v.node) == 0:
        return False
    G = plan.series.ground.size
    seen = np.bincount(v.slice.astype(np.int64) * G + v.node, minlength=len(plan.series) * G).reshape(-1, G)
    return bool((seen.max(axis=0) > antennas_of(plan.series)).any())


def antenna_demand(plan: Plan, k: int) -> dict[int, list[int]]:
    """Where the planned traffic needs a ground station's antennas in slice k: GS node -> satellites, most used first.

    Every user terminal's targets (its ``destination`` if that is a ground
    station, and the nearest GS of its operator it could use, i.e. the first
    in its candidate order that sees a satellite) each name one satellite: the
    egress of the free-choice shortest path (UT free among the satellites it
    sees, GS free among the satellites it sees, no ground relaying). Ties: the
    lower satellite index.
    """
    sc = plan.loaded.scenario
    snap = plan.series[k]
    L = snap.links
    N = snap.constellation.size
    vis = _visible(snap)
    g = plan.series.ground
    names = g.names
    dest = {u.name: u.destination for u in sc.user_terminals}
    uts = [u for u in plan.gs_order if u in vis]
    if not uts:
        return {}
    D = destination_distances(N, L.a, L.b, L.delay_ms, _terminals_of(uts, vis), len(uts))
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
    return {t: sorted(c, key=lambda s: (-c[s], s)) for t, c in count.items()}


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
    choice = _gs_choice(plan, dist_to, {u: vis[u][0] for u in vis})
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


def make_plan(loaded: LoadedScenario, n_slices: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> Plan:
    t0 = time.perf_counter()
    sc = loaded.scenario
    series = SnapshotSeries(loaded, n_slices)
    shell_map = sc.grc.shell_codes
    g_grc, g_plen = ground_grcs(series, shell_map)
    from emu.addressing.grc import decode

    ground_cells = {int(__import__("h3").str_to_int(decode(int(x)).cell)) for x in g_grc}
    bind = bindings(series, shell_map, ground_cells)
    mapping = mapping_table(series, g_grc)
    plan = Plan(loaded, series, None, bind, g_grc, g_plen, mapping, candidate_order(series, mapping))
    n = len(series)
    demand = list(_per_slice(plan, antenna_demand, n)) if _antennas_scarce(plan) else None
    plan.attach = attachments(series, sc.routing.attach_policy, demand)
    if bind.moved:
        log.info("%d satellite bindings moved to a neighbouring cell to stay unique", bind.moved)
    if sc.routing.attach_policy == "shortest-path":
        costs = list(_per_slice(plan, shortest_path_costs, n))
        _apply_shortest_path(plan, costs)
    for k, sp in enumerate(_per_slice(plan, plan_slice, n)):
        plan.slices.append(sp)
        if progress:
            progress(k + 1, n)
    plan.wall_s = time.perf_counter() - t0
    return plan


def _apply_shortest_path(plan: Plan, costs: list[dict[int, dict[int, float]]]) -> None:
    """Sequential over slices (hysteresis needs the previous choice): set every UT's serving satellite."""
    series = plan.series
    hyst = plan.loaded.scenario.routing.attach_hysteresis
    v = series.visibility
    for u in plan.gs_order:
        chosen = shortest_path_serving([c.get(u, {}) for c in costs], hyst)
        for k, s in enumerate(chosen):
            if s < 0:
                plan.attach.with_serving(k, u, -1, np.nan, np.nan)
                continue
            lo, hi = series._vis_bounds[k], series._vis_bounds[k + 1]
            r = lo + np.nonzero((v.node[lo:hi] == u) & (v.sat[lo:hi] == s))[0][0]
            plan.attach.with_serving(k, u, s, float(v.range_km[r]), float(v.elevation_deg[r]))


_FORK_PLAN: Plan | None = None
_FORK_FN = None


def _per_slice(plan: Plan, fn, n: int):
    """fn(plan, k) for k in 0..n-1, in order; slices are independent: forked workers share the snapshots copy-on-write."""
    workers = min(os.cpu_count() or 1, 4) if n >= 32 else 1
    if workers == 1:
        for k in range(n):
            yield fn(plan, k)
        return
    global _FORK_PLAN, _FORK_FN
    _FORK_PLAN, _FORK_FN = plan, fn
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            yield from pool.imap(_forked, range(n), chunksize=4)
    finally:
        _FORK_PLAN, _FORK_FN = None, None


def _forked(k: int):
    return _FORK_FN(_FORK_PLAN, k)


def plan_slice(plan: Plan, k: int) -> SlicePlan:
    sc = plan.loaded.scenario
    snap = plan.series[k]
    N = snap.constellation.size
    L = snap.links
    dest = destinations_for(plan, k)
    dist = destination_distances(N, L.a, L.b, L.delay_ms, dest.terminals(), len(dest.addr))
    codes = next_hop_codes(snap.neighbours, snap.neighbour_delay_ms, dist, dest,
                           sc.routing.multipath, sc.routing.ucmp_tolerance)
    tables = aggregate(codes, dest.addr, dest.plen, sc.routing.aggregate)
    raw = np.count_nonzero(codes, axis=1)
    # multi-source selection: a UT reaches a GS when its serving satellite has a path to one the GS links to
    G = plan.series.ground.size
    serving = plan.attach.serving[k].astype(np.int64)
    dist_to = {g: dist[g] for g in range(G)}
    choice = _gs_choice(plan, dist_to, {u: serving[u:u + 1] for u in plan.gs_order if serving[u] >= 0})
    links = np.zeros(len(L), dtype=LINK_DTYPE)
    links["a"], links["b"], links["dir_a"], links["dir_b"] = L.a, L.b, L.dir_a, L.dir_b
    links["delay_ms"] = L.delay_ms
    disconnected = int(np.count_nonzero(codes == 0))  # includes destinations not attached this slice
    pairs = pair_delays(plan, snap, dist, choice)
    return SlicePlan(k, float(snap.time_s), tables, raw, links, choice, disconnected, pairs)


def pair_delays(plan: Plan, snap, dist: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """Planned and free-choice one-way delay (satellite segment, propagation only) of every (UT, target) pair.

    planned: the UT's up link to its serving satellite plus the plan's
    shortest path from there to any satellite the target links to, plus that
    down link (``dist``: :func:`destination_distances` of this slice's
    destinations). optimum: the least up + ISL path + down over every pair of
    satellites the two ends see (both free, no relaying through the ground).
    NaN where there is no path.
    """
    k = snap.index - plan.series.first_index
    L = snap.links
    N = snap.constellation.size
    pairs = _targets(plan, choice)
    out = np.zeros(len(pairs), dtype=PAIR_DTYPE)
    if not pairs:
        return out
    vis = _visible(snap)
    targets = sorted({t for _, t in pairs})
    free = destination_distances(N, L.a, L.b, L.delay_ms, _terminals_of(targets, vis), len(targets))
    row = {t: i for i, t in enumerate(targets)}
    for i, (u, t) in enumerate(pairs):
        s = int(plan.attach.serving[k, u])
        planned = np.nan
        if s >= 0:
            planned = plan.attach.range_km[k, u] / C_KM_S * 1e3 + dist[t, s]
        sats, up = vis.get(u, (np.zeros(0, np.int64), np.zeros(0)))
        opt = float(np.min(up + free[row[t], sats])) if len(sats) else np.nan
        out[i] = (u, t, planned if np.isfinite(planned) else np.nan, opt if np.isfinite(opt) else np.nan)
    return out
