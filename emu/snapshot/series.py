"""Per-slice snapshots of the constellation: positions, ISLs, ground links, GRC bindings.

Everything is computed for all slices at once with numpy (:class:`SnapshotSeries`);
``series[k]`` gives the frozen :class:`Snapshot` of slice k. No I/O.

ISL rules (spec: satellite-semantic-addressing §4.3, §5.5; DESIGN.md "seam and
polar links"): intra-plane North/South links always exist; inter-plane
East/West links exist unless either end is above the polar latitude or the
link crosses the seam between counter-rotating planes (Walker star); inter-shell
Up/Down links pair each satellite with the nearest free satellite of the next
shell up (among its 16 nearest), within ``INTER_SHELL_MAX_KM``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
from h3.api import basic_int as h3i

from emu.orbit.constellation import DOWN, E, N, S, UP, W, Constellation, build_constellation, slice_times
from emu.orbit.propagate import Ephemeris, propagate
from emu.scenario.load import LoadedScenario
from emu.snapshot import split
from emu.snapshot.ground import C_KM_S, GroundNodes, Visibility, ground_nodes, visibility

INTER_SHELL_MAX_KM = 1500.0
INTER_SHELL_CANDIDATES = 16


@dataclass(frozen=True)
class Links:
    """The ISLs of one slice. Link i joins ``a[i]`` (leaving by direction ``dir_a[i]``) and ``b[i]``."""

    a: np.ndarray
    b: np.ndarray
    dir_a: np.ndarray
    dir_b: np.ndarray
    length_km: np.ndarray
    steady: np.ndarray

    @property
    def delay_ms(self) -> np.ndarray:
        return self.length_km / C_KM_S * 1e3

    def __len__(self) -> int:
        return len(self.a)


@dataclass(frozen=True)
class Snapshot:
    """The constellation at the start of one slice (frozen data)."""

    index: int
    time_s: float
    constellation: Constellation
    ground: GroundNodes
    ecef: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    links: Links
    ground_links: Visibility  # rows of this slice only
    bound_cell: np.ndarray  # (sats,) H3 index (int) of the sub-satellite cell at the binding level

    @cached_property
    def neighbours(self) -> np.ndarray:
        """(sats, 6) neighbour index by direction (N, S, E, W, Down, Up) or -1."""
        nb = np.full((self.constellation.size, 6), -1, dtype=np.int32)
        nb[self.links.a, self.links.dir_a] = self.links.b
        nb[self.links.b, self.links.dir_b] = self.links.a
        return nb

    @cached_property
    def neighbour_delay_ms(self) -> np.ndarray:
        d = np.full((self.constellation.size, 6), np.inf)
        dl = self.links.delay_ms
        d[self.links.a, self.links.dir_a] = dl
        d[self.links.b, self.links.dir_b] = dl
        return d

    def footprint_cells(self, sat: int, level: int, min_elevation_deg: float = 25.0) -> list[int]:
        """H3 cells (ints) at ``level`` whose centres see ``sat`` above ``min_elevation_deg`` (a coverage
        view; what a satellite binds and is routed to is ``bound_cell``)."""
        lam = _central_angle(float(self.alt[sat]), min_elevation_deg)
        center = h3i.latlng_to_cell(float(self.lat[sat]), float(self.lon[sat]), level)
        edge_km = h3i.average_hexagon_edge_length(level, unit="km")
        k = int(math.ceil(lam * 6371.0 / (1.5 * edge_km))) + 1
        cells = h3i.grid_disk(center, k)
        out = []
        lat0, lon0 = math.radians(self.lat[sat]), math.radians(self.lon[sat])
        for c in cells:
            la, lo = h3i.cell_to_latlng(c)
            la, lo = math.radians(la), math.radians(lo)
            ang = math.acos(min(1.0, math.sin(lat0) * math.sin(la) + math.cos(lat0) * math.cos(la) * math.cos(lo - lon0)))
            if ang <= lam:
                out.append(c)
        return sorted(out)


def _central_angle(alt_km: float, elev_deg: float, r: float = 6378.137) -> float:
    e = math.radians(elev_deg)
    return math.acos(r * math.cos(e) / (r + alt_km)) - e


class SnapshotSeries:
    """All slices of a scenario, computed together."""

    def __init__(self, loaded: LoadedScenario, n_slices: int | None = None,
                 constellation: Constellation | None = None, times_s: np.ndarray | None = None,
                 first_index: int = 0, workers: int = 1, started: Callable[[], None] | None = None):
        """``workers`` > 1: the visibility and the bound cells (most of the work) are computed by up to that
        many forked processes (:mod:`emu.snapshot.split`; the same arrays). Then nothing else may run in a
        thread of this process while it is made; ``started()``, if given, is called once threads may start
        (with or without forked processes, after the orbit is propagated)."""
        self.loaded = loaded
        sc = loaded.scenario
        self.constellation = constellation or build_constellation(loaded)
        self.first_index = first_index
        if times_s is None:
            times_s = slice_times(loaded, self.constellation, n_slices)
        self.times_s = np.asarray(times_s, dtype=float)
        self.ephemeris: Ephemeris = propagate(list(self.constellation.satrecs), sc.time.epoch, self.times_s)
        self.ground = ground_nodes(sc)
        workers = split.workers_for(len(self.times_s), workers)
        if workers > 1:
            self.visibility, self.bound_cells = split.per_slice_parts(self, sc.grc.level, workers, started,
                                                                      self._grid_edges)
        else:
            if started:
                started()
            self.visibility = visibility(self.ground, self.ephemeris.ecef)
            self._grid_edges()
            self.bound_cells = self._bindings(sc.grc.level)
        self._vis_bounds = np.searchsorted(self.visibility.slice, np.arange(len(self.times_s) + 1))

    def __len__(self) -> int:
        return len(self.times_s)

    def __getitem__(self, k: int) -> Snapshot:
        if not 0 <= k < len(self):
            raise IndexError(f"slice {k} out of range 0..{len(self) - 1}")
        eph = self.ephemeris
        v = self.visibility
        lo, hi = self._vis_bounds[k], self._vis_bounds[k + 1]
        rows = Visibility(v.slice[lo:hi], v.node[lo:hi], v.sat[lo:hi], v.elevation_deg[lo:hi], v.range_km[lo:hi])
        return Snapshot(self.first_index + k, float(self.times_s[k]), self.constellation, self.ground, eph.ecef[k], eph.lat[k],
                        eph.lon[k], eph.alt[k], self.links(k), rows, self.bound_cells[k])

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    # --- ISLs ---------------------------------------------------------------
    def _grid_edges(self) -> None:
        c = self.constellation
        a_n = np.nonzero(c.grid_nb[:, N] >= 0)[0]
        a_e = np.nonzero(c.grid_nb[:, E] >= 0)[0]
        # intra-plane: one edge per (k, front); skip 2-satellite planes' duplicate
        b_n = c.grid_nb[a_n, N]
        keep = ~((c.grid_nb[b_n, N] == a_n) & (b_n < a_n))
        a_n, b_n = a_n[keep], b_n[keep]
        b_e = c.grid_nb[a_e, E]
        self._edge_a = np.concatenate([a_n, a_e]).astype(np.int32)
        self._edge_b = np.concatenate([b_n, b_e]).astype(np.int32)
        self._edge_da = np.concatenate([np.full(len(a_n), N), np.full(len(a_e), E)]).astype(np.int8)
        self._edge_db = np.concatenate([np.full(len(a_n), S), np.full(len(a_e), W)]).astype(np.int8)
        self._edge_inter = np.concatenate([np.zeros(len(a_n), bool), np.ones(len(a_e), bool)])
        polar = self.loaded.scenario.links.polar_lat_deg
        lat = np.abs(self.ephemeris.lat)
        self._edge_up = ~(self._edge_inter[None, :] & ((lat[:, self._edge_a] > polar) | (lat[:, self._edge_b] > polar)))
        d = self.ephemeris.ecef[:, self._edge_a] - self.ephemeris.ecef[:, self._edge_b]
        self._edge_len = np.linalg.norm(d, axis=-1)

    def links(self, k: int) -> Links:
        up = self._edge_up[k]
        a, b = self._edge_a[up], self._edge_b[up]
        da, db = self._edge_da[up], self._edge_db[up]
        length = self._edge_len[k][up]
        steady = ~self._edge_inter[up]  # intra-plane always steady
        # inter-plane links are steady outside the polar region unless they cross the seam (they are up, so not polar)
        steady = steady | (self._edge_inter[up] & ~self.constellation.seam_edge[a, E])
        if self.loaded.scenario.links.inter_shell and len(self.loaded.scenario.shells) > 1:
            ia, ib, il = self._inter_shell(k)
            a, b = np.concatenate([a, ia]), np.concatenate([b, ib])
            da = np.concatenate([da, np.full(len(ia), UP, np.int8)])
            db = np.concatenate([db, np.full(len(ia), DOWN, np.int8)])
            length = np.concatenate([length, il])
            steady = np.concatenate([steady, np.zeros(len(ia), bool)])
        return Links(a, b, da, db, length, steady)

    def _inter_shell(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy nearest pairing of each shell's satellites with the next shell up (unsteady links).

        Candidates are each satellite's ``INTER_SHELL_CANDIDATES`` nearest upper
        satellites within ``INTER_SHELL_MAX_KM`` (a k-d tree query, so large
        shells stay cheap); pairs are taken shortest first, each satellite at
        most once.
        """
        from scipy.spatial import cKDTree

        c = self.constellation
        pos = self.ephemeris.ecef[k]
        out_a, out_b, out_l = [], [], []
        for s in range(int(c.shell.max())):
            lower = np.nonzero(c.shell == s)[0]
            upper = np.nonzero(c.shell == s + 1)[0]
            kk = min(INTER_SHELL_CANDIDATES, len(upper))
            dist, j = cKDTree(pos[upper]).query(pos[lower], k=kk, distance_upper_bound=INTER_SHELL_MAX_KM)
            dist, j = dist.reshape(len(lower), kk), j.reshape(len(lower), kk)
            i = np.repeat(np.arange(len(lower)), kk)
            dist, j = dist.ravel(), j.ravel()
            ok = np.isfinite(dist)
            i, j, dist = i[ok], j[ok], dist[ok]
            order = np.lexsort((j, i, dist))
            used_l, used_u = set(), set()
            for n in order.tolist():
                a, b = int(i[n]), int(j[n])
                if a in used_l or b in used_u:
                    continue
                used_l.add(a)
                used_u.add(b)
                out_a.append(lower[a])
                out_b.append(upper[b])
                out_l.append(float(dist[n]))
        return (np.array(out_a, dtype=np.int32), np.array(out_b, dtype=np.int32), np.array(out_l, dtype=float))

    # --- GRC bindings ---------------------------------------------------------
    def _bindings(self, level: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """(slices lo..hi-1, sats) H3 cell under every satellite at ``level``."""
        part = self.ephemeris.lat[lo:hi]
        lat = part.ravel().tolist()
        lon = self.ephemeris.lon[lo:hi].ravel().tolist()
        cells = np.fromiter((h3i.latlng_to_cell(a, b, level) for a, b in zip(lat, lon)), dtype=np.uint64, count=len(lat))
        return cells.reshape(part.shape)


def compute_series(loaded: LoadedScenario, n_slices: int | None = None) -> SnapshotSeries:
    return SnapshotSeries(loaded, n_slices)
