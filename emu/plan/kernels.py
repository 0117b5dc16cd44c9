"""The planner's compiled kernels (numba); imported only where a plan is computed, not where one is read.

spec: grc-based-routing §Predictive Routing (paths computed centrally per time slice), §Routing Table
Structure (egress directions with priority/weight), §Data Forwarding Process.

- :func:`sweeps`: shortest delays from many sources at once (:mod:`emu.plan.dijkstra` says why).
- :func:`hop_codes_rows`: every (destination, satellite)'s next-hop action code from those delays, one
  cell at a time over the six directions (:func:`emu.plan.routing.hop_codes` states the rule).

Both do IEEE double arithmetic in the order the numpy versions did (no fast-math), so their answers are
bit for bit the same; ``tests/unit/test_plan_dijkstra.py`` and ``tests/unit/test_plan_kernels.py``
compare them with scipy and with the reference kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ECMP, UCMP, ACTIVE_STANDBY = 0, 1, 2  # policy ids of hop_codes_rows


@njit(cache=True, nogil=True)
def sweeps(indptr, indices, data, D, max_sweeps):  # pragma: no cover - compiled
    """Relax every edge into every node for all sources (the columns of ``D``: labels, inf where none),
    sweeping the nodes forward then backward, until a sweep changes nothing: True; False after
    ``max_sweeps`` sweeps (``D`` then holds upper bounds). ``indptr``/``indices``/``data``: the graph's
    in-edges (the CSR of its transpose)."""
    n, S = D.shape
    for it in range(max_sweeps):
        changed = False
        for i in range(n):
            v = i if it % 2 == 0 else n - 1 - i
            row = D[v]
            for e in range(indptr[v], indptr[v + 1]):
                src = D[indices[e]]
                w = data[e]
                c = False
                for r in range(S):  # branch-free, so it vectorises
                    x = src[r] + w
                    y = row[r]
                    m = x < y
                    row[r] = x if m else y
                    c |= m
                changed |= c
        if not changed:
            return True
    return False


@njit(cache=True, nogil=True)
def hop_codes_rows(nbi, nbd, dist, rows, policy, tol, eps, lut, standby_kind, codes, best):  # pragma: no cover
    """For each destination ``rows[i]`` and satellite s: ``codes[rows[i], s]`` (0 where unreachable) and
    ``best[i, s]``, the least delay through a neighbour. ``nbi``/``nbd``: (directions, sats) neighbour
    (``n_sats``: none) and link delay (0 where none); ``lut``: ECMP code by direction mask; ``tol``: the
    policy's tolerance; ``standby_kind``: the STANDBY kind bits of an action."""
    n_dir, n = nbi.shape
    C = np.empty(n_dir)
    Dn = np.empty(n_dir)
    inf = np.inf
    for i in range(len(rows)):
        drow = dist[rows[i]]
        for s in range(n):
            for d in range(n_dir):
                j = nbi[d, s]
                x = inf if j == n else drow[j]
                Dn[d] = x
                C[d] = x + nbd[d, s]
            b = C[0]
            for d in range(1, n_dir):
                if C[d] < b:
                    b = C[d]
            best[i, s] = b
            if not np.isfinite(b):
                codes[rows[i], s] = 0
                continue
            lim = drow[s] - eps
            if policy == ACTIVE_STANDBY:
                primary = 0
                for d in range(n_dir - 1, -1, -1):  # the first direction reaching the minimum
                    if C[d] == b:
                        primary = d
                alt_best = inf
                standby = 0
                for d in range(n_dir):
                    alt = C[d] if (Dn[d] < lim and primary != d) else inf
                    if alt < alt_best:
                        standby = d
                        alt_best = alt
                code = standby_kind | (np.int64(1) << primary) | (np.int64(1) << (6 + 7 * primary))
                if np.isfinite(alt_best):
                    code |= (np.int64(1) << standby) | (np.int64(2) << (6 + 7 * standby))
            else:
                near = b * (1.0 + tol) + eps
                tie = b + eps
                if policy == UCMP:
                    code = np.int64(0)
                    scaled = 100.0 * b
                    for d in range(n_dir):
                        if C[d] <= near and (Dn[d] < lim or C[d] <= tie):
                            w = np.rint(scaled / C[d])
                            w = 1.0 if w < 1.0 else (100.0 if w > 100.0 else w)
                            code |= (np.int64(1) << d) | (np.int64(w) << (6 + 7 * d))
                else:
                    mask = 0
                    for d in range(n_dir):
                        if C[d] <= near and (Dn[d] < lim or C[d] <= tie):
                            mask |= 1 << d
                    code = lut[mask]
            codes[rows[i], s] = code


@njit(cache=True, nogil=True)
def walk_words(ids, term, n_ground, right, local, to_ground, hop_bits, missing):  # pragma: no cover
    """The per-pair facts of :func:`emu.plan.verify._walk_slice`, 64 destinations to a machine word.

    ``ids`` (sats, dests): each pair's action id; per action id: ``right`` (the ground node a Down
    delivers to, -1: none), ``local`` (local delivery), ``to_ground`` (names a ground target),
    ``hop_bits`` (the directions it forwards to); ``term`` (sats, dests): the satellite may deliver the
    destination; ``missing`` per satellite: directions without a link. Destination columns below
    ``n_ground`` are ground nodes, the others satellites.

    Returns ``good`` (sats + 1, words; row ``sats``: no neighbour, never good): delivered right here;
    ``moving`` (sats, words): forwards somewhere; ``used`` (6, sats, words): forwards by direction e;
    ``why`` (sats, dests): 1 an egress has no link, 2 delivered to the wrong node (neither forwards)."""
    n, D = ids.shape
    words = (D + 63) // 64
    good = np.zeros((n + 1, words), dtype=np.uint64)
    moving = np.zeros((n, words), dtype=np.uint64)
    used = np.zeros((6, n, words), dtype=np.uint64)
    why = np.zeros((n, D), dtype=np.uint8)
    one = np.uint64(1)
    for s in range(n):
        miss = missing[s]
        for d in range(D):
            a = ids[s, d]
            t = term[s, d]
            if d < n_ground:
                g = t and right[a] == d
                wrong = (local[a] or to_ground[a]) and not g
            else:
                g = t and local[a]
                wrong = (local[a] and not t) or to_ground[a]
            b = hop_bits[a]
            dangling = (b & miss) != 0
            if dangling:
                why[s, d] = 1
            elif wrong:
                why[s, d] = 2
            bit = one << np.uint64(d & 63)
            w = d >> 6
            if g:
                good[s, w] |= bit
            if dangling or wrong or b == 0:
                continue
            moving[s, w] |= bit
            for e in range(6):
                if (b >> e) & 1:
                    used[e, s, w] |= bit
    return good, moving, used, why


@njit(cache=True, nogil=True)
def settle(good, moving, used, nbz):  # pragma: no cover - compiled
    """Grow ``good`` (in place) to the pairs that forward somewhere and whose every used direction leads
    to a good pair (the neighbour ``nbz[s, e]``, ``sats``: none), until nothing changes: the least such
    set, whichever order it is grown in (the rule is monotone). Sweeps alternate in direction."""
    n, words = moving.shape
    n_dir = used.shape[0]
    changed = True
    it = 0
    while changed:
        changed = False
        for i in range(n):
            s = i if it % 2 == 0 else n - 1 - i
            for w in range(words):
                ok = moving[s, w] & ~good[s, w]
                if ok == 0:
                    continue
                for e in range(n_dir):
                    u = used[e, s, w]
                    if u != 0:
                        ok &= ~u | good[nbz[s, e], w]
                if ok != 0:
                    good[s, w] |= ok
                    changed = True
        it += 1


@njit(cache=True, nogil=True)
def bad_pairs(good, reach, comp, D, limit):  # pragma: no cover - compiled
    """The first ``limit`` (satellite, destination) pairs, row-major, that are connected (``reach[comp[s]]``:
    the words of the destinations with a terminal in s's component) and not good."""
    n = len(comp)
    words = good.shape[1]
    out_s = np.empty(limit, dtype=np.int64)
    out_d = np.empty(limit, dtype=np.int64)
    k = 0
    for s in range(n):
        for w in range(words):
            x = reach[comp[s], w] & ~good[s, w]
            while x != 0 and k < limit:
                b = 0
                while (x >> np.uint64(b)) & np.uint64(1) == 0:
                    b += 1
                d = w * 64 + b
                if d < D:
                    out_s[k] = s
                    out_d[k] = d
                    k += 1
                x &= ~(np.uint64(1) << np.uint64(b))
            if k >= limit:
                return out_s[:k], out_d[:k]
    return out_s[:k], out_d[:k]


@njit(cache=True, nogil=True)
def pack_words(x):  # pragma: no cover - compiled
    """(rows, cols) bool as (rows, words) uint64, column c at bit c % 64 of word c // 64."""
    n, D = x.shape
    out = np.zeros((n, (D + 63) // 64), dtype=np.uint64)
    one = np.uint64(1)
    for s in range(n):
        for d in range(D):
            if x[s, d]:
                out[s, d >> 6] |= one << np.uint64(d & 63)
    return out
