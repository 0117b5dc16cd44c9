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
from emu.plan import association as assocmod
from emu.plan.attach import (Attachments, Bindings, MappingRow, attachments, bindings, candidate_order, ground_grcs,
                             mapping_table, select_gs)
from emu.plan.routing import Destinations, SliceTables, aggregate, down_code, graph_distances, next_hop_codes
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


@dataclass
class Plan:
    loaded: LoadedScenario
    series: SnapshotSeries
    attach: Attachments
    bind: Bindings
    ground_grc: np.ndarray
    ground_plen: np.ndarray
    mapping: list[MappingRow]
    gs_order: dict[int, list[int]]
    slices: list[SlicePlan] = field(default_factory=list)
    wall_s: float = 0.0
    association: dict[str, np.ndarray] = field(default_factory=dict)  # policy -> core[k, s] (association.py)

    @property
    def destinations_count(self) -> int:
        n = self.series.ground.size
        if self.loaded.scenario.routing.satellite_destinations:
            n += self.series.constellation.size
        return n


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
    sc = plan.loaded.scenario
    G = plan.series.ground.size
    addr = [plan.ground_grc]
    plen = [plan.ground_plen]
    term = [plan.attach.serving[k].astype(np.int32)]
    tcode = [np.array([down_code(g) for g in range(G)], dtype=np.int64)]
    if sc.routing.satellite_destinations:
        N = plan.series.constellation.size
        addr.append(plan.bind.grc[k])
        plen.append(np.full(N, 11 + 3 * plan.bind.level, dtype=np.uint8))
        term.append(np.arange(N, dtype=np.int32))
        tcode.append(np.full(N, actions.local(), dtype=np.int64))
    return Destinations(np.concatenate(addr).astype(np.uint32), np.concatenate(plen).astype(np.uint8),
                        np.concatenate(term), np.concatenate(tcode))


def make_plan(loaded: LoadedScenario, n_slices: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> Plan:
    t0 = time.perf_counter()
    sc = loaded.scenario
    series = SnapshotSeries(loaded, n_slices)
    shell_map = sc.grc.shell_codes
    att = attachments(series, sc.routing.attach_policy)
    g_grc, g_plen = ground_grcs(series, shell_map)
    from emu.addressing.grc import decode

    ground_cells = {int(__import__("h3").str_to_int(decode(int(x)).cell)) for x in g_grc}
    bind = bindings(series, shell_map, ground_cells)
    mapping = mapping_table(series, g_grc)
    plan = Plan(loaded, series, att, bind, g_grc, g_plen, mapping, candidate_order(series, mapping))
    plan.association = plan_association(plan)
    if bind.moved:
        log.info("%d satellite bindings moved to a neighbouring cell to stay unique", bind.moved)
    n = len(series)
    workers = min(os.cpu_count() or 1, 4) if n >= 32 else 1
    if workers > 1:
        # slices are independent: fork workers that share the snapshots copy-on-write
        global _FORK_PLAN
        _FORK_PLAN = plan
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            for k, sp in enumerate(pool.imap(_plan_slice_forked, range(n), chunksize=4)):
                plan.slices.append(sp)
                if progress:
                    progress(k + 1, n)
        _FORK_PLAN = None
    else:
        for k in range(n):
            plan.slices.append(plan_slice(plan, k))
            if progress:
                progress(k + 1, n)
    plan.wall_s = time.perf_counter() - t0
    return plan


_FORK_PLAN: Plan | None = None


def plan_association(plan: Plan) -> dict[str, np.ndarray]:
    """Satellite -> SNO core per slice under every policy (spec: inter-sno-mobility §4.3, §5)."""
    _cols, ut_serving, home = assocmod.user_view(plan.attach.serving, plan.series.ground.kind,
                                                 plan.series.ground.operator)
    n_ops = len(plan.loaded.scenario.operators)
    slice_s = plan.loaded.scenario.time.slice_s
    return {p: assocmod.associate(p, ut_serving, home, plan.series.constellation.owner, n_ops, slice_s)
            for p in assocmod.POLICIES}


def _plan_slice_forked(k: int) -> SlicePlan:
    return plan_slice(_FORK_PLAN, k)


def plan_slice(plan: Plan, k: int) -> SlicePlan:
    sc = plan.loaded.scenario
    snap = plan.series[k]
    N = snap.constellation.size
    L = snap.links
    dest = destinations_for(plan, k)
    terms, term_index = np.unique(np.where(dest.term_sat >= 0, dest.term_sat, 0), return_inverse=True)
    dist = graph_distances(N, L.a, L.b, L.delay_ms, terms)
    codes = next_hop_codes(snap.neighbours, snap.neighbour_delay_ms, dist, dest, term_index,
                           sc.routing.multipath, sc.routing.ucmp_tolerance)
    tables = aggregate(codes, dest.addr, dest.plen, sc.routing.aggregate)
    raw = np.count_nonzero(codes, axis=1)
    # multi-source selection: a UT reaches a GS when both are attached and their satellites are connected
    serving = plan.attach.serving[k].astype(np.int64)
    row_of = np.full(N, -1, dtype=np.int64)
    row_of[terms] = np.arange(len(terms))
    # reach[g_node, u_node]: the satellite segment connects ground node g's satellite with u's (one numpy gather)
    rows = np.where(serving >= 0, row_of[np.maximum(serving, 0)], -1)
    reach = (rows[:, None] >= 0) & (serving[None, :] >= 0)
    reach &= np.isfinite(dist[np.maximum(rows, 0)][:, np.maximum(serving, 0)]) if len(terms) else False

    def reachable(u: int, g: int) -> bool:
        return bool(reach[g, u])

    choice = select_gs(sc.routing.gs_selection, plan.gs_order, reachable)
    links = np.zeros(len(L), dtype=LINK_DTYPE)
    links["a"], links["b"], links["dir_a"], links["dir_b"] = L.a, L.b, L.dir_a, L.dir_b
    links["delay_ms"] = L.delay_ms
    disconnected = int(np.count_nonzero(codes == 0))  # includes destinations not attached this slice
    return SlicePlan(k, float(snap.time_s), tables, raw, links, choice, disconnected)
