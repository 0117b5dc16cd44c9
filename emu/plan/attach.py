"""Attachments, handovers, GRC bindings and the multi-source mapping table.

spec: grc-based-routing §Dynamic GRC Binding (satellites re-bind the GRC of
the region under them), §Data Forwarding Process step 2 (multi-source
mapping table, UT's choice of GS GRC), §Routing Database.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from h3.api import basic_int as h3i

from emu.addressing import grc as grcmod
from emu.snapshot.series import SnapshotSeries


@dataclass(frozen=True)
class Attachments:
    """Who links to whom, per slice.

    ``links[k, g, j]``: the j-th satellite ground node g has a ground link to in
    slice k (-1: antenna idle); a ground station has up to ``antennas`` of them,
    a user terminal one. ``serving[k, g] = links[k, g, 0]`` is the primary one
    (the ground node's own uplink, and the one a user terminal tunnels through).
    ``link_range_km`` is aligned with ``links``.
    """

    links: np.ndarray
    link_range_km: np.ndarray
    link_elevation_deg: np.ndarray

    @property
    def serving(self) -> np.ndarray:
        return self.links[:, :, 0]

    @property
    def elevation_deg(self) -> np.ndarray:
        return self.link_elevation_deg[:, :, 0]

    @property
    def range_km(self) -> np.ndarray:
        return self.link_range_km[:, :, 0]

    def handovers(self) -> list[tuple[int, int, int, int]]:
        """(slice, node, from_sat, to_sat) for every change of serving satellite (including to/from -1)."""
        s = self.serving
        k, g = np.nonzero(s[1:] != s[:-1])
        return [(int(kk) + 1, int(gg), int(s[kk, gg]), int(s[kk + 1, gg])) for kk, gg in zip(k, g)]

    def with_serving(self, k: int, node: int, sat: int, range_km: float, elevation_deg: float) -> None:
        """Set a single-antenna node's link in slice k (the planner's shortest-path pass)."""
        self.links[k, node, :] = -1
        self.link_range_km[k, node, :] = np.nan
        self.link_elevation_deg[k, node, :] = np.nan
        self.links[k, node, 0] = sat
        self.link_range_km[k, node, 0] = range_km
        self.link_elevation_deg[k, node, 0] = elevation_deg


def antennas_of(series: SnapshotSeries) -> np.ndarray:
    """Antennas per ground node: the scenario's ``antennas`` for ground stations, 1 for user terminals."""
    sc = series.loaded.scenario
    ant = {g.name: g.antennas for g in sc.ground_stations}
    return np.array([ant.get(n, 1) for n in series.ground.names], dtype=np.int32)


def prefer_home_score(v, home: np.ndarray, owner: np.ndarray, n_nodes: int, margin_deg: float) -> np.ndarray:
    """Attach policy ``prefer-home`` (spec: inter-sno-mobility §3.3 Figure 2: users of SNO A prefer SNO A's
    satellites): per visibility row, its elevation, plus 1000 when the satellite's owner (its core under the
    ``owner`` association) is the ground node's home operator and its elevation is within ``margin_deg`` of
    the best visible one in that slice. So a user takes the highest home-operator satellite inside the
    margin, else the highest overall (pure)."""
    key = v.slice.astype(np.int64) * n_nodes + v.node
    best = np.full(int(key.max()) + 1 if len(key) else 0, -np.inf)
    np.maximum.at(best, key, v.elevation_deg)
    at_home = (owner[v.sat] == home[v.node]) & (v.elevation_deg >= best[key] - margin_deg)
    return v.elevation_deg.astype(float) + np.where(at_home, 1000.0, 0.0)


def attachments(series: SnapshotSeries, policy: str, demand: list[dict[int, list[int]]] | None = None,
                home_margin_deg: float = 10.0) -> Attachments:
    """Ground links of every slice.

    User terminals (one antenna) follow the attach ``policy``
    (``shortest-path`` starts from highest-elevation here; the planner then
    re-chooses with :func:`shortest_path_serving`). Ground stations link to up
    to ``antennas`` visible satellites: an antenna keeps tracking its
    satellite while it stays visible (a parabolic antenna follows one
    satellite across the sky), free antennas take the highest-elevation
    satellites farthest apart on the sky from those already linked (so the
    links span every direction a shortest path may leave in); the primary
    (column 0) is the highest-elevation linked satellite.
    """
    v = series.visibility
    T, G = len(series), series.ground.size
    ant = antennas_of(series)
    A = int(ant.max()) if G else 1
    links = np.full((T, G, A), -1, dtype=np.int32)
    rng = np.full((T, G, A), np.nan)
    elev = np.full((T, G, A), np.nan)
    out = Attachments(links, rng, elev)
    if len(v.node) == 0:
        return out
    if policy == "longest-visibility":
        score = _remaining_visibility(series) * 1000.0 + v.elevation_deg  # ties: higher elevation
    elif policy == "nearest":
        score = -v.range_km
    elif policy == "prefer-home":
        score = prefer_home_score(v, np.asarray(series.ground.operator), np.asarray(series.constellation.owner), G,
                                  home_margin_deg)
    else:  # highest-elevation (and the starting point of shortest-path)
        score = v.elevation_deg.astype(float)
    is_gs = np.array([k == "gs" for k in series.ground.kind], dtype=bool)
    score = np.where(is_gs[v.node], v.elevation_deg, score)  # ground stations: by elevation
    key = v.slice.astype(np.int64) * G + v.node
    order = np.lexsort((-score, key))  # within each (slice, node), best score first
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    best = order[first]
    ut_best = best[~is_gs[v.node[best]]]
    links[v.slice[ut_best], v.node[ut_best], 0] = v.sat[ut_best]
    elev[v.slice[ut_best], v.node[ut_best], 0] = v.elevation_deg[ut_best]
    rng[v.slice[ut_best], v.node[ut_best], 0] = v.range_km[ut_best]
    _track_gs_antennas(series, out, order, key[order], np.nonzero(is_gs)[0], ant, demand)
    return out


def _track_gs_antennas(series: SnapshotSeries, out: Attachments, order: np.ndarray, keys: np.ndarray,
                       gs_nodes: np.ndarray, ant: np.ndarray, demand: list[dict[int, list[int]]] | None) -> None:
    """Demand-first, sticky, sky-spread antenna assignment per ground station, slice by slice (see :func:`attachments`)."""
    T, G = len(series), series.ground.size
    starts = np.searchsorted(keys, np.arange(T * G, dtype=np.int64))
    ends = np.searchsorted(keys, np.arange(T * G, dtype=np.int64), side="right")
    args = (series, order, starts, ends, ant, demand)
    workers = min(os.cpu_count() or 1, 4) if T >= 32 and len(gs_nodes) >= 8 else 1
    if workers == 1:
        parts = [_gs_antennas(*args, gs_nodes.tolist())]
    else:  # stations are independent: share them among forked workers
        import multiprocessing

        global _FORK_ARGS
        _FORK_ARGS = args
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_forked_gs, [c.tolist() for c in np.array_split(gs_nodes, workers)])
        finally:
            _FORK_ARGS = None
    for nodes, links, rng, elev in parts:
        out.links[:, nodes] = links
        out.link_range_km[:, nodes] = rng
        out.link_elevation_deg[:, nodes] = elev


_FORK_ARGS: tuple | None = None


def _forked_gs(nodes: list[int]):
    return _gs_antennas(*_FORK_ARGS, nodes)


def _gs_antennas(series: SnapshotSeries, order: np.ndarray, starts: np.ndarray, ends: np.ndarray, ant: np.ndarray,
                 demand: list[dict[int, list[int]]] | None, nodes: list[int]):
    """:func:`_track_gs_antennas` for the stations ``nodes``: (nodes, links, range, elevation) of their columns."""
    v = series.visibility
    T, G = len(series), series.ground.size
    A = int(ant.max()) if len(ant) else 1
    out = Attachments(np.full((T, G, A), -1, dtype=np.int32), np.full((T, G, A), np.nan), np.full((T, G, A), np.nan))
    ecef = series.ephemeris.ecef
    for g in nodes:
        held: list[int] = []
        here = series.ground.ecef[g]
        for k in range(T):
            rows = order[starts[k * G + g]:ends[k * G + g]]  # this slice's visible satellites, best first
            sats = v.sat[rows].tolist()
            pos = {s: i for i, s in enumerate(sats)}
            held = [s for s in held if s in pos]
            if demand is not None:
                want = [s for s in demand[k].get(g, []) if s in pos][:ant[g]]
                held = want + [s for s in held if s not in want][:max(0, ant[g] - len(want))]
            if len(held) < ant[g] and len(held) < len(sats):
                held = _spread(held, sats, ecef[k] - here, int(ant[g]))
            mine = sorted(held, key=lambda s: pos[s])  # primary first: highest elevation among the linked
            for j, s in enumerate(mine):
                r = rows[pos[s]]
                out.links[k, g, j] = s
                out.link_range_km[k, g, j] = v.range_km[r]
                out.link_elevation_deg[k, g, j] = v.elevation_deg[r]
    return nodes, out.links[:, nodes], out.link_range_km[:, nodes], out.link_elevation_deg[:, nodes]


def _spread(held: list[int], sats: list[int], rel: np.ndarray, n: int) -> list[int]:
    """Fill free antennas: start from the highest satellite, then repeatedly the visible satellite farthest
    (in angle, as seen from the station) from every satellite already linked, so the links cover the whole
    sky and a shortest path toward any direction finds an egress near its best one."""
    held = list(held)
    if not held:
        held.append(sats[0])
    cand = [s for s in sats if s not in held]
    if not cand or len(held) >= n:
        return held
    d = rel[np.array(sats)]
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    idx = {s: i for i, s in enumerate(sats)}
    ci = np.array([idx[s] for s in cand])
    best_cos = np.max(d[ci] @ d[[idx[s] for s in held]].T, axis=1)  # closeness to the nearest linked one
    while len(held) < n and len(ci):
        j = int(np.argmin(best_cos))  # ties: the first, i.e. the higher elevation
        held.append(sats[ci[j]])
        best_cos = np.maximum(best_cos, d[ci] @ d[ci[j]])
        ci = np.delete(ci, j)
        best_cos = np.delete(best_cos, j)
    return held


def shortest_path_serving(cost: list[dict[int, float]], hysteresis: float) -> list[int]:
    """One user terminal's serving satellite over the slices, from ``cost[k] = {sat: delay_ms to its target}``.

    Rule (documented in docs/fidelity.md): in each slice take the visible
    satellite with the least delay to the target; but keep the previous
    slice's satellite while it is still visible, still reaches the target,
    and its delay is at most ``(1 + hysteresis)`` times the least one. Ties go
    to the lower satellite index. A slice with no finite cost gives -1.
    """
    out = []
    cur = -1
    for c in cost:
        finite = {s: d for s, d in c.items() if np.isfinite(d)}
        if not finite:
            cur = -1
            out.append(cur)
            continue
        best = min(finite, key=lambda s: (finite[s], s))
        if cur not in finite or finite[cur] > finite[best] * (1.0 + hysteresis):
            cur = best
        out.append(cur)
    return out


def _remaining_visibility(series: SnapshotSeries) -> np.ndarray:
    """For every visibility row, how many consecutive slices (from this one) the pair stays visible."""
    v = series.visibility
    N = series.constellation.size
    pair = v.node.astype(np.int64) * N + v.sat
    order = np.lexsort((-v.slice, pair))  # per pair, latest slice first
    out = np.zeros(len(pair), dtype=np.int32)
    prev_pair, prev_slice, run = -1, -10, 0
    for i in order.tolist():  # one pass; rows are ~1e6 at most
        p, s = int(pair[i]), int(v.slice[i])
        run = run + 1 if (p == prev_pair and s == prev_slice - 1) else 1
        out[i] = run
        prev_pair, prev_slice = p, s
    return out


@dataclass(frozen=True)
class Bindings:
    """cell[k, s]: H3 cell bound by satellite s in slice k; grc[k, s] its GRC (interface 0)."""

    level: int
    cell: np.ndarray
    grc: np.ndarray
    moved: int  # bindings moved to a neighbouring cell to stay unique


def ground_grcs(series: SnapshotSeries, shell_map) -> tuple[np.ndarray, np.ndarray]:
    """Fixed GRC (interface 0, or the node's ordinal when cells are shared) and destination prefix length per ground node.

    Ground nodes get level-6 cells under shell 0's code. Two ground nodes in one
    level-6 cell are told apart by the interface field and routed as /32.
    """
    code = grcmod.shell_code(0, shell_map)
    g = series.ground
    cells = [h3i.latlng_to_cell(float(la), float(lo), 6) for la, lo in zip(g.lat, g.lon)]
    grcs = np.zeros(g.size, dtype=np.uint32)
    plen = np.full(g.size, 29, dtype=np.uint8)
    seen: dict[int, list[int]] = {}
    for i, c in enumerate(cells):
        seen.setdefault(c, []).append(i)
    for c, members in seen.items():
        if len(members) > grcmod.INTERFACE_MAX + 1:
            raise ValueError(f"more than {grcmod.INTERFACE_MAX + 1} ground nodes in one level-6 cell {h3i.int_to_str(c)}")
        for ordinal, i in enumerate(members):
            grcs[i] = grcmod.encode_cell(c, code, ordinal if len(members) > 1 else 0)
            if len(members) > 1:
                plen[i] = 32
    return grcs, plen


def bindings(series: SnapshotSeries, shell_map, ground_cells: set[int]) -> Bindings:
    """Each satellite binds the cell under it; a cell already taken (by a ground node or a nearer satellite) moves it to the nearest free neighbour."""
    level = series.loaded.scenario.grc.level
    cells = series.bound_cells.astype(np.int64).copy()
    T, N = cells.shape
    moved = 0
    taken_ground = ground_cells if level == 6 else set()
    for k in range(T):
        row = cells[k]
        uniq, counts = np.unique(row, return_counts=True)
        clash = set(uniq[counts > 1].tolist()) | (set(uniq.tolist()) & taken_ground)
        if not clash:
            continue
        used = set(taken_ground)
        for s in range(N):
            c = int(row[s])
            if c in used:
                ring = 1
                while True:
                    free = sorted(x for x in h3i.grid_ring(c, ring) if x not in used)
                    if free:
                        row[s] = free[0]
                        moved += 1
                        break
                    ring += 1
            used.add(int(row[s]))
    grcs = np.zeros((T, N), dtype=np.uint32)
    shells = series.constellation.shell
    for sh in np.unique(shells):
        cols = np.nonzero(shells == sh)[0]
        grcs[:, cols] = grcmod.encode_cells_array(cells[:, cols].ravel().astype(np.uint64),
                                                  grcmod.shell_code(int(sh), shell_map)).reshape(T, len(cols))
    return Bindings(level, cells.astype(np.uint64), grcs, moved)


@dataclass(frozen=True)
class MappingRow:
    """Terrestrial prefix -> candidate GS GRCs with attributes (grc-based-routing §Routing Database)."""

    prefix: str
    operator: str
    candidates: tuple[dict, ...]


def mapping_table(series: SnapshotSeries, ground_grc: np.ndarray) -> list[MappingRow]:
    sc = series.loaded.scenario
    g = series.ground
    rows = []
    for oi, op in enumerate(sc.operators):
        cands = []
        for i in range(g.size):
            if g.kind[i] == "gs" and g.operator[i] == oi:
                cands.append({"gs": g.names[i], "node": i, "grc": grcmod.to_ipv4(int(ground_grc[i])),
                              "lat": float(g.lat[i]), "lon": float(g.lon[i]), "core": op.name})
        rows.append(MappingRow(sc.internet.prefix, op.name, tuple(cands)))
    return rows


def great_circle_km(lat1, lon1, lat2, lon2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return 6371.0 * math.acos(max(-1.0, min(1.0, c)))


def candidate_order(series: SnapshotSeries, mapping: list[MappingRow]) -> dict[int, list[int]]:
    """For every user terminal (ground-node index), its home operator's GSs nearest first (static)."""
    g = series.ground
    sc = series.loaded.scenario
    by_op = {r.operator: r for r in mapping}
    out = {}
    for u in range(g.size):
        if g.kind[u] != "ut":
            continue
        op = sc.operators[int(g.operator[u])].name
        cands = sorted(by_op[op].candidates,
                       key=lambda c: (great_circle_km(g.lat[u], g.lon[u], c["lat"], c["lon"]), c["gs"]))
        out[u] = [c["node"] for c in cands]
    return out


def select_gs(policy: str, order: dict[int, list[int]], reachable) -> np.ndarray:
    """One slice's choice of GS per user terminal: (ut_count, 2) ground-node indexes [chosen, backup], -1 for none.

    ``order`` comes from :func:`candidate_order`; ``reachable(ut_node, gs_node)``
    says whether the satellite segment connects them in this slice.
    spec: grc-based-routing §Data Forwarding Process step 2 (proximity, load
    balancing, primary/backup).
    """
    out = np.full((len(order), 2), -1, dtype=np.int32)
    load: dict[int, int] = {}
    for row_i, (u, nodes) in enumerate(order.items()):
        ok = [n for n in nodes if reachable(u, n)]
        if policy == "primary-backup":
            primary = nodes[0] if nodes else -1
            backup = nodes[1] if len(nodes) > 1 else -1
            chosen = primary if primary in ok else (backup if backup in ok else -1)
            out[row_i] = (chosen, backup if chosen == primary else primary)
        elif policy == "load-balance":
            if ok:
                chosen = min(ok, key=lambda n: (load.get(n, 0), nodes.index(n)))
                load[chosen] = load.get(chosen, 0) + 1
                rest = [n for n in ok if n != chosen]
                out[row_i] = (chosen, rest[0] if rest else -1)
        else:  # proximity
            if ok:
                out[row_i] = (ok[0], ok[1] if len(ok) > 1 else -1)
    return out
