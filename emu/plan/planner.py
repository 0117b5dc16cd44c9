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
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from emu.addressing import satgrc
from emu.addressing.grc import shell_code as grc_shell_code
from emu.plan import association as assocmod
from emu.plan.attach import (Attachments, Bindings, MappingRow, attachments, bindings, candidate_order, ground_grcs,
                             mapping_table, shortest_path_serving)
from emu.plan.routing import (Destinations, SliceTables, aggregate_entries, destination_distances, down_code, hop_codes,
                              tables_from_entries)
from emu.plan.satroutes import satellite_entries
from emu.plan.shortest import FreeSlice, antennas_scarce, free_pass, gs_choice, pair_delays, shortest_path_costs
from emu.snapshot.ground import C_KM_S
from emu.snapshot.split import keep_freed_memory
from emu.scenario.load import LoadedScenario
from emu.snapshot.series import SnapshotSeries

log = logging.getLogger(__name__)


@dataclass
class SlicePlan:
    index: int
    time_s: float
    _tables: SliceTables | None  # None: only in ``packed`` (see ``tables``)
    raw_entries: np.ndarray  # per satellite, entries before aggregation
    links: np.ndarray  # structured: a, b, dir_a, dir_b, delay_ms
    gs_choice: np.ndarray  # (uts, 2) ground-node index [chosen, backup]
    disconnected: int  # (satellite, destination) pairs with no path
    pairs: np.ndarray | None = None  # shortest.PAIR_DTYPE: planned vs free-choice delay per (UT, target) this slice
    packed: object | None = None  # emu.plan.db.PackedSlice of exactly these arrays, made by the worker that planned it
    _from_packed: bool = False  # ``_tables`` was decoded from ``packed`` (so ``packed`` still holds them)

    @property
    def tables(self) -> SliceTables:
        """Every satellite's table. A worker hands a slice back with its tables only packed (a tenth of the
        bytes through the pipe and in memory); they are decoded here when asked for."""
        if self._tables is None:
            from emu.plan.db import unpack_tables

            self._tables, self._from_packed = unpack_tables(self.packed.blobs["tables"]), True
        return self._tables

    @tables.setter
    def tables(self, value: SliceTables) -> None:
        self._tables, self._from_packed = value, False

    @property
    def sizes(self) -> np.ndarray:
        """Entries per satellite."""
        return self._tables.sizes if self._tables is not None else self.packed.sizes


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
    association: dict[str, np.ndarray] = field(default_factory=dict)  # policy -> core[k, s] (association.py)
    free: list[FreeSlice] | None = None  # per slice, both ends free (emu.plan.shortest.free_pass)

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
    """Ground nodes: a Down entry on every satellite each links to (satellites' own addresses: satroutes)."""
    G = plan.series.ground.size
    g_idx, j = np.nonzero(plan.attach.links[k] >= 0)
    t_sat = plan.attach.links[k][g_idx, j].astype(np.int64)
    t_delay = plan.attach.link_range_km[k][g_idx, j] / C_KM_S * 1e3
    return Destinations(plan.ground_grc.astype(np.uint32), plan.ground_plen.astype(np.uint8),
                        plan.attach.serving[k].astype(np.int32),
                        np.array([down_code(g) for g in range(G)], dtype=np.int64), (g_idx, t_sat, t_delay))


def satellite_addresses(loaded: LoadedScenario, constellation) -> np.ndarray:
    """Every satellite's own address (emu.addressing.satgrc): shell code, plane, index."""
    codes = np.array([grc_shell_code(i, loaded.scenario.grc.shell_codes) for i in range(len(loaded.scenario.shells))],
                     dtype=np.int64)
    return satgrc.addresses(codes[constellation.shell], constellation.plane, constellation.sat)


def make_plan(loaded: LoadedScenario, n_slices: int | None = None,
              progress: Callable[[int, int], None] | None = None,
              before_slices: Callable[[Plan, int], None] | None = None,
              head: Callable[[Plan, int], None] | None = None) -> Plan:
    """Plan every slice. ``before_slices(plan, n)``, if given, is called once everything but the slices'
    tables is final (attachments, association), before the n slices are planned: the CLI starts writing
    the route database there (:class:`emu.plan.db.PlanWriter`). ``head(plan, n)``, if given, is called
    earlier, once the scenario's tables and the bindings are final, while no other thread of this process
    runs and before any worker is forked (the CLI forks the writer of the first tables there:
    :meth:`emu.plan.db.PlanWriter.start_early`)."""
    t0 = time.perf_counter()
    sc = loaded.scenario
    warming: list[_Warm] = []
    # most of the snapshots is computed by forked processes (both cores; the same arrays); the compiled
    # kernels load meanwhile, in a thread started once those processes exist
    series = SnapshotSeries(loaded, n_slices, workers=os.cpu_count() or 1, started=lambda: warming.append(_Warm()))
    shell_map = sc.grc.shell_codes
    g_grc, g_plen = ground_grcs(series, shell_map)
    from emu.addressing.grc import decode

    ground_cells = {int(__import__("h3").str_to_int(decode(int(x)).cell)) for x in g_grc}
    bind = bindings(series, shell_map, ground_cells)
    mapping = mapping_table(series, g_grc)
    plan = Plan(loaded, series, None, bind, g_grc, g_plen, mapping, candidate_order(series, mapping))
    n = len(series)
    warming[0].join()  # before the first fork: no thread of ours may run while workers are forked
    if head:
        head(plan, n)
    plan.free = list(_per_slice(plan, free_pass, n))  # both ends free: the optimum, and where antennas are needed
    demand = [f.demand for f in plan.free] if antennas_scarce(plan) else None
    plan.attach = attachments(series, sc.routing.attach_policy, demand, sc.routing.attach_home_margin_deg)
    if bind.moved:
        log.info("%d satellite bindings moved to a neighbouring cell to stay unique", bind.moved)
    if sc.routing.attach_policy == "shortest-path":
        costs = list(_per_slice(plan, shortest_path_costs, n))
        _apply_shortest_path(plan, costs)
    plan.association = plan_association(plan)  # after the attachments are final: UTs' serving satellites
    # before_slices starts a writer thread: only once the workers are forked (a child forked while another
    # thread holds a lock can hang on it), so _per_slice calls it after creating its pool
    started = (lambda: before_slices(plan, n)) if before_slices else None
    for k, sp in enumerate(_per_slice(plan, plan_and_pack_slice, n, started)):
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


def plan_association(plan: Plan) -> dict[str, np.ndarray]:
    """Satellite -> SNO core per slice under every policy (spec: inter-sno-mobility §4.3, §5)."""
    _cols, ut_serving, home = assocmod.user_view(plan.attach.serving, plan.series.ground.kind,
                                                 plan.series.ground.operator)
    n_ops = len(plan.loaded.scenario.operators)
    slice_s = plan.loaded.scenario.time.slice_s
    return {p: assocmod.associate(p, ut_serving, home, plan.series.constellation.owner, n_ops, slice_s)
            for p in assocmod.POLICIES}


class _Warm(threading.Thread):
    """:func:`emu.plan.kernels.warm` in a thread: numba's first calls and loading the kernels' cached code
    cost every process that uses them ~0.3 s before its first slice (measured: a shell-1 worker's first
    slice 370 ms cold, 103 ms warm, 43 ms after). Done once in the parent while it computes the snapshots,
    the four forked workers (free pass, slices) inherit them; the snapshots take ~0.25 s longer for the
    GIL the thread takes from them (7.51 -> 7.78 s, three runs each), against ~1.1 s of workers' CPU."""

    def __init__(self):
        super().__init__(name="plan-warm-kernels", daemon=True)
        self.start()

    def run(self) -> None:
        try:
            from emu.plan import kernels

            kernels.warm()
        except Exception:  # noqa: BLE001 - only a head start: a broken kernel fails where it is used
            log.debug("warming the planner's kernels failed", exc_info=True)


_FORK_PLAN: Plan | None = None
_FORK_FN = None


def _workers(n: int) -> int:
    """Forked worker processes for n slices (none below 32: forking costs more than it saves)."""
    return min(os.cpu_count() or 1, 4) if n >= 32 else 1


def _per_slice(plan: Plan, fn, n: int, started: Callable[[], None] | None = None):
    """fn(plan, k) for k in 0..n-1, in order; slices are independent: forked workers share the snapshots copy-on-write.
    ``started`` is called once the workers exist (before the first slice): where threads may start."""
    workers = _workers(n)
    if workers == 1:
        if started:
            started()
        for k in range(n):
            yield fn(plan, k)
        return
    global _FORK_PLAN, _FORK_FN
    _FORK_PLAN, _FORK_FN = plan, fn
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers, initializer=keep_freed_memory) as pool:  # forked here, before our threads start
            if started:
                started()
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
    codes = hop_codes(snap.neighbours, snap.neighbour_delay_ms, dist, dest,
                      sc.routing.multipath, sc.routing.ucmp_tolerance, sc.routing.ecmp_tolerance)  # (dests, sats)
    key, act = aggregate_entries(codes, dest.addr, dest.plen, sc.routing.aggregate)
    raw = np.count_nonzero(codes, axis=0)
    disconnected = int(codes.size - np.count_nonzero(codes))  # includes destinations not attached this slice
    if sc.routing.satellite_destinations:
        s_key, s_act, routed = satellite_entries(snap.neighbours, snap.neighbour_delay_ms, L.a, L.b, L.delay_ms,
                                                 satellite_addresses(plan.loaded, snap.constellation),
                                                 sc.routing.multipath, sc.routing.ucmp_tolerance, sc.routing.aggregate)
        key, act = np.concatenate([key, s_key]), np.concatenate([act, s_act])
        raw = raw + routed
        disconnected += int(N * N - routed.sum())
    tables = tables_from_entries(key, act, N)
    # multi-source selection: a UT reaches a GS when its serving satellite has a path to one the GS links to
    G = plan.series.ground.size
    serving = plan.attach.serving[k].astype(np.int64)
    dist_to = {g: dist[g] for g in range(G)}
    choice = gs_choice(plan, dist_to, {u: serving[u:u + 1] for u in plan.gs_order if serving[u] >= 0})
    pairs = pair_delays(plan, snap, dist, choice, plan.free[k] if plan.free else free_pass(plan, k))
    return SlicePlan(k, float(snap.time_s), tables, raw, slice_links(L), choice, disconnected, pairs)


def slice_links(L) -> np.ndarray:
    """A slice's ISLs (emu.snapshot.series.Links) as LINK_DTYPE rows (what the route database stores)."""
    links = np.zeros(len(L), dtype=LINK_DTYPE)
    links["a"], links["b"], links["dir_a"], links["dir_b"] = L.a, L.b, L.dir_a, L.dir_b
    links["delay_ms"] = L.delay_ms
    return links


def plan_and_pack_slice(plan: Plan, k: int) -> SlicePlan:
    """:func:`plan_slice`, with its route-database row packed and digested where it is computed (in the
    forked workers), so writing the plan is only inserting rows (:func:`emu.plan.db.pack_slice`)."""
    from emu.plan.db import pack_slice

    sp = plan_slice(plan, k)
    sp.packed = pack_slice(plan, sp, slice_links(plan.series.links(k - 1)) if k > 0 else None, keep_tables=False)
    sp._tables = None  # travels packed
    return sp
