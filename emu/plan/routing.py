"""Per-slice routing tables for every satellite, from one snapshot.

spec: grc-based-routing §Predictive Routing (tables computed centrally per
time slice from ephemeris), §Routing Table Structure (destination GRC prefix
-> egress directions with priority/weight), §Segmented Longest Match (only
prefix lengths 11, 14, ..., 32).

Shortest paths go through scipy's compiled Dijkstra, once per slice from the
satellites that terminate a destination; next hops, ECMP/UCMP weights and
loop-free standby directions are derived with numpy over (satellite,
destination, direction). Aggregation folds a region's destinations into one
shorter prefix where they all leave a satellite by the same directions;
terminal entries (Down to a ground node, local delivery) are never folded,
so delivery stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from emu.addressing.grc import LEGAL_PREFIX_LENGTHS
from emu.addressing.slm import SegmentedTable
from emu.orbit.constellation import DOWN
from emu.plan import actions

MIX = -2
_EPS = 1e-9


@dataclass(frozen=True)
class Destinations:
    """The destinations of one slice: address, prefix length, terminal satellites and terminal action.

    A destination ends at one or more terminal satellites: ``term_sat`` is the
    primary one (-1: not attached this slice); ``links``, when given, lists
    every terminal as parallel arrays (destination, satellite, last-hop delay
    in ms): a ground station with several antennas has a Down entry on each
    satellite it links to, and the shortest paths choose among them.
    """

    addr: np.ndarray  # uint32 GRC
    plen: np.ndarray  # uint8
    term_sat: np.ndarray  # int32, -1: not attached this slice
    term_code: np.ndarray  # int64 action at the terminal satellite
    links: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def terminals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(destination, satellite, last-hop delay ms) of every terminal."""
        if self.links is not None:
            return self.links
        d = np.nonzero(self.term_sat >= 0)[0]
        return d, self.term_sat[d].astype(np.int64), np.zeros(len(d))


@dataclass(frozen=True)
class SliceTables:
    """All satellites' tables of one slice, columnar: rows of satellite s are offsets[s]:offsets[s+1]."""

    offsets: np.ndarray
    prefix: np.ndarray
    plen: np.ndarray
    action: np.ndarray

    def of(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.offsets[s], self.offsets[s + 1]
        return self.prefix[a:b], self.plen[a:b], self.action[a:b]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def reference(self, s: int) -> SegmentedTable:
        """Satellite s's table in the pure-Python reference structure (segmented longest match)."""
        t = SegmentedTable()
        for p, l, a in zip(*self.of(s)):
            t.insert(int(p), int(l), int(a))
        return t


def graph_distances(n_sats: int, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Shortest one-way delay (ms) from each source satellite to every satellite."""
    if len(sources) == 0:
        return np.zeros((0, n_sats))
    g = coo_matrix((np.concatenate([delay_ms, delay_ms]), (np.concatenate([a, b]), np.concatenate([b, a]))),
                   shape=(n_sats, n_sats)).tocsr()
    return np.atleast_2d(dijkstra(g, directed=True, indices=sources))


def destination_distances(n_sats: int, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray,
                          terminals: tuple[np.ndarray, np.ndarray, np.ndarray], n_dest: int) -> np.ndarray:
    """(n_dest, sats): least delay (ms) from every satellite to every destination through any of its terminals.

    Each destination is a virtual node with one edge *out* to each of its
    terminal satellites, weighted by the last hop's delay (0 for a
    satellite's own address); with no edge into a virtual node, no path
    relays through a ground node. One Dijkstra per destination that has a
    terminal; ``inf`` elsewhere.
    """
    t_dest, t_sat, t_delay = terminals
    out = np.full((n_dest, n_sats), np.inf)
    live = np.unique(t_dest)
    if len(live) == 0:
        return out
    vid = np.full(n_dest, -1, dtype=np.int64)
    vid[live] = n_sats + np.arange(len(live))
    n = n_sats + len(live)
    # a tiny positive weight stands for 0 (scipy drops explicit zeros from sparse graphs)
    w = np.maximum(np.asarray(t_delay, dtype=float), 1e-12)
    rows = np.concatenate([a, b, vid[t_dest]])
    cols = np.concatenate([b, a, t_sat])
    g = coo_matrix((np.concatenate([delay_ms, delay_ms, w]), (rows, cols)), shape=(n, n)).tocsr()
    out[live] = np.atleast_2d(dijkstra(g, directed=True, indices=vid[live]))[:, :n_sats]
    return out


def next_hop_codes(nb: np.ndarray, nb_delay: np.ndarray, dist: np.ndarray, dest: Destinations,
                   policy: str, ucmp_tolerance: float, ecmp_tolerance: float = 0.0) -> np.ndarray:
    """(sats, dests) action codes; 0 where the destination is unreachable from the satellite.

    ECMP and UCMP take every neighbour whose path is within a relative
    tolerance of the best (``ecmp_tolerance``, ``ucmp_tolerance``; the
    scenario's ``routing`` block defines both): float delays over real
    geometry never tie exactly, so a zero tolerance would never split.
    ECMP gives the chosen egresses equal weights, UCMP weights them by
    best / delay. Near-equal neighbours must be strictly closer to the
    destination, so every hop still lowers the remaining delay (no loops).

    ``dist[d, s]``: least delay from satellite s to destination d
    (:func:`destination_distances`). A terminal satellite delivers (Down or
    local) unless its neighbours offer a strictly shorter way to another
    terminal of the same destination (a ground station with several
    antennas); every other satellite forwards to the neighbours on a shortest
    path, so each hop strictly lowers the remaining delay: no loops.
    """
    n_sats = nb.shape[0]
    n_dest = len(dest.addr)
    codes = np.zeros((n_sats, n_dest), dtype=np.int64)
    t_dest, t_sat, t_delay = dest.terminals()
    live = np.unique(t_dest)
    if len(live) == 0:
        return codes
    D = dist[live]  # (L, sats): distance to the destination
    has = nb >= 0
    nbi = np.where(has, nb, 0)
    C = np.where(has[None], nb_delay[None] + D[:, nbi], np.inf)  # (L, sats, 6)
    best = C.min(axis=-1)
    ok = np.isfinite(best)
    if policy == "active-standby":
        primary = np.argmin(C, axis=-1)
        Dn = np.where(has[None], D[:, nbi], np.inf)
        downstream = Dn < D[:, :, None] - _EPS
        alt = np.where(downstream, C, np.inf)
        np.put_along_axis(alt, primary[..., None], np.inf, axis=-1)
        standby = np.argmin(alt, axis=-1)
        has_standby = np.isfinite(np.take_along_axis(alt, standby[..., None], axis=-1)[..., 0])
        code = (np.int64(actions.STANDBY) << 48) | (np.int64(1) << primary) | (np.int64(1) << (6 + 7 * primary))
        code |= np.where(has_standby, (np.int64(1) << standby) | (np.int64(2) << (6 + 7 * standby)), 0)
    else:
        tol = ucmp_tolerance if policy == "ucmp" else ecmp_tolerance
        sel = C <= best[..., None] * (1.0 + tol) + _EPS
        # only neighbours strictly closer to the destination: near-equal paths must not loop
        Dn = np.where(has[None], D[:, nbi], np.inf)
        sel &= (Dn < D[:, :, None] - _EPS) | (C <= best[..., None] + _EPS)
        if policy == "ucmp":
            with np.errstate(invalid="ignore"):  # unreachable (best inf): masked by ``ok`` below
                w = np.clip(np.round(100.0 * best[..., None] / np.where(sel, C, np.inf)), 1, 100).astype(np.int64)
        else:
            w = np.ones_like(C, dtype=np.int64)
        code = np.zeros(best.shape, dtype=np.int64)
        for d in range(6):
            code |= np.where(sel[..., d], (np.int64(1) << d) | (w[..., d] << (6 + 7 * d)), 0)
    code = np.where(ok, code, 0)
    # terminal satellites: Down to the ground node, or local delivery (unless a neighbour is strictly shorter)
    row = np.searchsorted(live, t_dest)
    deliver = t_delay <= best[row, t_sat] + _EPS
    code[row[deliver], t_sat[deliver]] = dest.term_code[t_dest[deliver]]
    codes[:, live] = code.T
    return codes


def _mask(plen: np.ndarray) -> np.ndarray:
    p = plen.astype(np.uint64)
    return ((np.uint64(0xFFFFFFFF) << (np.uint64(32) - p)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def aggregate(codes: np.ndarray, addr: np.ndarray, plen: np.ndarray, enabled: bool = True,
              coarsest: int = 11) -> SliceTables:
    """Fold destinations along the GRC hierarchy, up to prefixes of length ``coarsest``; see the module docstring.

    Works on (destination-group, satellite) arrays so every reduction runs
    over contiguous rows.
    """
    n_sats, n_dest = codes.shape
    prefix = (addr & _mask(plen)).astype(np.uint32)
    levels = []  # (prefix, plen, code (groups, sats), parent_of_group)
    cur_p, cur_l, cur_c = prefix, plen.astype(np.uint8), np.ascontiguousarray(codes.T)
    if enabled:
        for P in sorted((x for x in LEGAL_PREFIX_LENGTHS if coarsest <= x < 32), reverse=True):
            if len(cur_p) == 0:
                break
            key = cur_p.astype(np.uint64) >> np.uint64(32 - P)
            pk, inv = np.unique(key, return_inverse=True)
            identity = (cur_l == P)[:, None]
            terminal = actions.is_terminal(cur_c)
            val = np.where((cur_c > 0) & (~terminal | identity), cur_c, MIX)
            order = np.argsort(inv, kind="stable")
            starts = np.searchsorted(inv[order], np.arange(len(pk)))
            vs = val[order]
            vmin = np.minimum.reduceat(vs, starts, axis=0)
            vmax = np.maximum.reduceat(vs, starts, axis=0)
            gcode = np.where(vmin == vmax, vmin, MIX)
            levels.append((cur_p, cur_l, cur_c, inv))
            # a group is the region at length P, unless a member is coarser already (a satellite's level-k
            # region holding a ground cell): then the group keeps that member's shorter prefix
            gl = np.minimum(np.minimum.reduceat(cur_l[order], starts), P).astype(np.uint8)
            cur_p = ((pk << np.uint64(32 - P)).astype(np.uint32) & _mask(gl)).astype(np.uint32)
            cur_l = gl
            cur_c = gcode
    levels.append((cur_p, cur_l, cur_c, None))
    sats, pre, pl, act = [], [], [], []
    for i, (p, l, c, inv) in enumerate(levels):
        emit = c > 0
        if inv is not None:
            emit &= levels[i + 1][2][inv] <= 0  # parent MIXED (or nothing): this level states it
        u_idx, s_idx = np.nonzero(emit)
        sats.append(s_idx)
        pre.append(p[u_idx])
        pl.append(l[u_idx])
        act.append(c[u_idx, s_idx])
    s_all = np.concatenate(sats)
    p_all = np.concatenate(pre).astype(np.uint32)
    l_all = np.concatenate(pl).astype(np.uint8)
    a_all = np.concatenate(act).astype(np.int64)
    order = np.lexsort((l_all, p_all, s_all))
    offsets = np.zeros(n_sats + 1, dtype=np.int64)
    np.cumsum(np.bincount(s_all, minlength=n_sats), out=offsets[1:])
    return SliceTables(offsets, p_all[order], l_all[order], a_all[order])


def down_code(ground_index: int) -> int:
    return actions.encode(actions.MULTIPATH, {DOWN: 1}, ground_index)
