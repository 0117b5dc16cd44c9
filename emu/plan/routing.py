"""Per-slice routing tables for every satellite, from one snapshot.

spec: grc-based-routing §Predictive Routing (tables computed centrally per
time slice from ephemeris), §Routing Table Structure (destination GRC prefix
-> egress directions with priority/weight), §Segmented Longest Match (only
prefix lengths 11, 14, ..., 32).

Shortest paths: many sources at once (:mod:`emu.plan.dijkstra`), once per slice from the
satellites that terminate a destination; next hops, ECMP/UCMP weights and
loop-free standby directions are derived per (satellite, destination) over
the six directions (compiled: :mod:`emu.plan.kernels`). Aggregation
(:mod:`emu.plan.fold`) states a region's most common next hop once at the
region's prefix and the destinations that differ below it; terminal entries
(Down to a ground node, local delivery) are never folded, so delivery stays
exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix

from emu.addressing.slm import SegmentedTable
from emu.orbit.constellation import DOWN
from emu.plan import actions
from emu.plan.dijkstra import dijkstra_rows

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

    Aggregated: a default per region and exceptions below it (:mod:`emu.plan.fold`, which states the rule);
    the longest match of every destination's address is its own code. Not aggregated: every destination's
    code > 0 at its own prefix. A code <= 0 (no route) is never stated.
    """
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    if enabled:
        from emu.plan.fold import fold_entries

        return fold_entries(codes, addr, plen, coarsest)
    r, s = np.nonzero(codes > 0)
    p = np.ascontiguousarray(plen, dtype=np.uint8)
    return entry_key(s, (np.asarray(addr, np.uint32) & _mask(p))[r], p[r]), codes[r, s]


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
