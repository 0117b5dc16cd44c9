"""Per-slice routing tables for every satellite, from one snapshot.

spec: grc-based-routing §Predictive Routing (tables computed centrally per
time slice from ephemeris), §Routing Table Structure (destination GRC prefix
-> egress directions with priority/weight), §Segmented Longest Match (only
prefix lengths 11, 14, ..., 32).

Shortest paths: many sources at once (:mod:`emu.plan.dijkstra`), once per slice from the
satellites that terminate a destination; next hops, ECMP/UCMP weights and
loop-free standby directions are derived per (satellite, destination) over
the six directions (compiled: :mod:`emu.plan.kernels`). Aggregation folds a region's destinations into one
shorter prefix where they all leave a satellite by the same directions;
terminal entries (Down to a ground node, local delivery) are never folded,
so delivery stays exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix

from emu.addressing.grc import LEGAL_PREFIX_LENGTHS
from emu.addressing.slm import SegmentedTable
from emu.orbit.constellation import DOWN
from emu.plan import actions
from emu.plan.dijkstra import dijkstra_rows

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
    return dijkstra_rows(g, np.atleast_1d(sources), n_sats)


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
    out[live] = dijkstra_rows(g, vid[live], n_sats)
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

    A transposed view of :func:`hop_codes` (destination-major, what :func:`aggregate` works on).
    """
    return hop_codes(nb, nb_delay, dist, dest, policy, ucmp_tolerance, ecmp_tolerance).T


def hop_codes(nb: np.ndarray, nb_delay: np.ndarray, dist: np.ndarray, dest: Destinations,
              policy: str, ucmp_tolerance: float, ecmp_tolerance: float = 0.0) -> np.ndarray:
    """:func:`next_hop_codes` as a C-contiguous (dests, sats) array.

    Per (destination, satellite), over the six directions (compiled: :func:`emu.plan.kernels.hop_codes_rows`):
    the neighbour's distance and the delay through it, the best of those; then the policy's choice.
    ECMP/UCMP: every direction within the tolerance of the best whose neighbour is strictly closer to
    the destination (or that ties the best); ECMP's code comes from a 64-entry table of direction masks,
    UCMP weighs each by round(100 * best / delay), clipped to 1..100. Active-standby: the first direction
    reaching the best is active (priority 1), the best other strictly closer one stands by (priority 2).
    """
    from emu.plan import kernels

    n_sats = nb.shape[0]
    codes = np.zeros((len(dest.addr), n_sats), dtype=np.int64)
    t_dest, t_sat, t_delay = dest.terminals()
    live = np.unique(t_dest)
    if len(live) == 0:
        return codes
    has = nb >= 0
    nbi = np.where(has, nb, n_sats).T.astype(np.int64)  # (6, sats); n_sats: no neighbour
    nbd = np.where(has, nb_delay, 0.0).T.astype(np.float64)
    pid = {"ucmp": kernels.UCMP, "active-standby": kernels.ACTIVE_STANDBY}.get(policy, kernels.ECMP)
    tol = ucmp_tolerance if policy == "ucmp" else ecmp_tolerance
    best = np.empty((len(live), n_sats))
    kernels.hop_codes_rows(nbi, nbd, np.ascontiguousarray(dist, dtype=np.float64), live.astype(np.int64), pid,
                           float(tol), _EPS, _ecmp_lut(nbi.shape[0]), np.int64(actions.STANDBY) << 48, codes, best)
    # terminal satellites: Down to the ground node, or local delivery (unless a neighbour is strictly shorter)
    best_at_term = best[np.searchsorted(live, t_dest), t_sat]
    deliver = t_delay <= best_at_term + _EPS
    codes[t_dest[deliver], t_sat[deliver]] = dest.term_code[t_dest[deliver]]
    return codes


@functools.cache
def _ecmp_lut(n_dir: int) -> np.ndarray:
    """Direction mask -> ECMP action code (every chosen direction at weight 1)."""
    return np.array([sum((1 << d) | (1 << (6 + 7 * d)) for d in range(n_dir) if m >> d & 1)
                     for m in range(1 << n_dir)], dtype=np.int64)


def _mask(plen: np.ndarray) -> np.ndarray:
    p = plen.astype(np.uint64)
    return ((np.uint64(0xFFFFFFFF) << (np.uint64(32) - p)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)



@dataclass(frozen=True)
class _Level:
    """One aggregation step: the rows (destinations, or groups of them) before it and how they group.

    Rows are taken in ``order`` (None: as they are); group g is rows ``order[starts[g]:starts[g+1]]``.
    Only groups of several rows need comparing: ``pairs`` are the positions i (in that order) whose row
    and the next are in one group, ``pair_group`` that group, ``members`` the positions in such groups
    and ``size`` each group's row count.
    """

    prefix: np.ndarray  # uint32, per row
    plen: np.ndarray  # uint8, per row
    identity: np.ndarray | None = None  # bool per row: its own length is this level's (its terminal entries fold)
    order: np.ndarray | None = None
    starts: np.ndarray | None = None
    inv: np.ndarray | None = None  # group of each row
    pairs: np.ndarray | None = None
    pair_group: np.ndarray | None = None
    members: np.ndarray | None = None
    size: np.ndarray | None = None


_LEVELS: dict[tuple, list[_Level]] = {}


def _levels(addr: np.ndarray, plen: np.ndarray, enabled: bool, coarsest: int) -> list[_Level]:
    """The grouping of :func:`aggregate`, which depends on the destinations only: computed once per set of
    destinations (they are the same in every slice of a plan) and kept."""
    addr = np.ascontiguousarray(addr, dtype=np.uint32)
    plen = np.ascontiguousarray(plen, dtype=np.uint8)
    key = (addr.tobytes(), plen.tobytes(), bool(enabled), int(coarsest))
    got = _LEVELS.get(key)
    if got is not None:
        return got
    cur_p, cur_l = (addr & _mask(plen)).astype(np.uint32), plen
    out = []
    if enabled:
        for P in sorted((x for x in LEGAL_PREFIX_LENGTHS if coarsest <= x < 32), reverse=True):
            if len(cur_p) == 0:
                break
            k = cur_p.astype(np.uint64) >> np.uint64(32 - P)
            pk, inv = np.unique(k, return_inverse=True)
            order = np.argsort(inv, kind="stable")
            starts = np.searchsorted(inv[order], np.arange(len(pk)))
            same = np.nonzero(inv[order][1:] == inv[order][:-1])[0]
            out.append(_Level(cur_p, cur_l, cur_l == P, None if (order == np.arange(len(order))).all() else order,
                              starts, inv, same, inv[order][same], np.unique(np.concatenate([same, same + 1])),
                              np.diff(np.append(starts, len(inv)))))
            # a group is the region at length P, unless a member is coarser already (a satellite's level-k
            # region holding a ground cell): then the group keeps that member's shorter prefix
            gl = np.minimum(np.minimum.reduceat(cur_l[order], starts), P).astype(np.uint8)
            cur_p = ((pk << np.uint64(32 - P)).astype(np.uint32) & _mask(gl)).astype(np.uint32)
            cur_l = gl
    out.append(_Level(cur_p, cur_l))
    if len(_LEVELS) > 64:
        _LEVELS.clear()
    _LEVELS[key] = out
    return out


def _terminal_positive(c: np.ndarray) -> np.ndarray:
    """:func:`emu.plan.actions.is_terminal` for codes > 0 (anything for the others): local delivery, or a
    ground target (bits 50.. nonzero, so c >= 2**50) with the Down bit."""
    return (((c >> 48) & 3) == actions.LOCAL) | ((c >= (1 << 50)) & ((c & (1 << DOWN)) != 0))


def aggregate(codes: np.ndarray, addr: np.ndarray, plen: np.ndarray, enabled: bool = True,
              coarsest: int = 11) -> SliceTables:
    """Fold destinations along the GRC hierarchy, up to prefixes of length ``coarsest``; see the module docstring.

    ``codes``: (sats, dests) as :func:`next_hop_codes` gives them (a transposed :func:`hop_codes` result).
    """
    return aggregate_rows(codes.T, addr, plen, enabled, coarsest)


def aggregate_rows(codes: np.ndarray, addr: np.ndarray, plen: np.ndarray, enabled: bool = True,
                   coarsest: int = 11) -> SliceTables:
    """:func:`aggregate` of (dests, sats) codes."""
    return tables_from_entries(*aggregate_entries(codes, addr, plen, enabled, coarsest), codes.shape[1])


def aggregate_entries(codes: np.ndarray, addr: np.ndarray, plen: np.ndarray, enabled: bool = True,
                      coarsest: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """The entries of :func:`aggregate_rows`, unsorted: (:func:`entry_key`, action).

    Per level, a group's code is its members' common code, MIX where they differ; an entry is stated at
    the level whose group is mixed (or at the last level). A code <= 0 (no route, or mixed) never folds
    and is never stated, so those are kept as they come (comparisons treat them alike). Terminal entries
    are few (one per destination and terminal satellite): they are found once and followed through the
    levels as positions; only the rows of groups with several members are compared, so a level costs a
    gather of its groups' first rows plus its real groups. Entries come level by level, row-major within
    a level (the order the straightforward version stated them in, which breaks ties between duplicates).
    """
    n_sats = codes.shape[1]
    levels = _levels(addr, plen, enabled, coarsest)
    c = np.ascontiguousarray(codes, dtype=np.int64)  # the current level's codes
    cand = np.flatnonzero(c >= (1 << 48))  # kind or ground-target bits set: the only codes that may be terminal
    term = cand[_terminal_positive(c.ravel()[cand])]  # flat positions of this level's terminal codes
    keys, acts = [], []

    def state(lv: _Level, rows: np.ndarray, sats: np.ndarray) -> None:
        keys.append(entry_key(sats, lv.prefix[rows], lv.plen[rows]))
        acts.append(c[rows, sats])

    for lv in levels[:-1]:
        t_row, t_sat = np.divmod(term, n_sats)
        fold = lv.identity[t_row]  # a terminal entry folds only into a group at its own length
        g = c[lv.starts if lv.order is None else lv.order[lv.starts]]  # the group's code where members agree
        if len(lv.pairs):
            pos = lv.pairs if lv.order is None else lv.order[lv.pairs]
            nxt = lv.pairs + 1 if lv.order is None else lv.order[lv.pairs + 1]
            r, s = np.nonzero(c[pos] != c[nxt])
            g[lv.pair_group[r], s] = MIX
        g[lv.inv[t_row[~fold]], t_sat[~fold]] = MIX  # a terminal entry that does not fold: its group is mixed
        # stated here: positive entries of a mixed group; in single-row groups those are the unfolded terminals
        single = ~fold & (lv.size[lv.inv[t_row]] == 1)
        rows = lv.members if lv.order is None else lv.order[lv.members]
        r, s = np.nonzero((c[rows] > 0) & (g[lv.inv[rows]] <= 0))
        state(lv, np.concatenate([t_row[single], rows[r]]), np.concatenate([t_sat[single], s]))
        # terminal entries that folded: their group holds the same (terminal) code where it is positive
        gpos = np.unique(lv.inv[t_row[fold]] * n_sats + t_sat[fold])
        term = gpos[g.ravel()[gpos] > 0]
        c = g
    rows, sats = np.nonzero(c > 0)
    state(levels[-1], rows, sats)
    return np.concatenate(keys), np.concatenate(acts).astype(np.int64)


def entry_key(sat: np.ndarray, prefix: np.ndarray, plen: np.ndarray) -> np.ndarray:
    """The table order of entries: satellite, then prefix, then length (uint64 sat << 40 | prefix << 8 | plen)."""
    return (np.asarray(sat).astype(np.uint64) << np.uint64(40)) | (np.asarray(prefix).astype(np.uint64) << np.uint64(8)) \
        | np.asarray(plen).astype(np.uint64)


def tables_from_entries(key: np.ndarray, act: np.ndarray, n_sats: int) -> SliceTables:
    """SliceTables of entries (:func:`entry_key`, action) in key order; equal keys (duplicate destinations)
    keep the order they come in."""
    from emu.plan.kernels import table_columns  # compiled: only where a plan is computed

    key = np.asarray(key, dtype=np.uint64)
    order = np.argsort(key, kind="stable")  # without duplicates the one order there is; faster than quicksort here
    return SliceTables(*table_columns(key, np.asarray(act, dtype=np.int64), order, n_sats))


def table_entries(t: SliceTables) -> tuple[np.ndarray, np.ndarray]:
    """SliceTables back to (:func:`entry_key`, action)."""
    sat = np.repeat(np.arange(len(t.offsets) - 1, dtype=np.uint64), np.diff(t.offsets))
    return entry_key(sat, t.prefix, t.plen), t.action


def merge_tables(*parts: SliceTables) -> SliceTables:
    """One SliceTables from several with disjoint prefixes (rows per satellite ordered as aggregate orders them)."""
    ent = [table_entries(t) for t in parts]
    return tables_from_entries(np.concatenate([k for k, _ in ent]), np.concatenate([a for _, a in ent]),
                               len(parts[0].offsets) - 1)



def down_code(ground_index: int) -> int:
    return actions.encode(actions.MULTIPATH, {DOWN: 1}, ground_index)
