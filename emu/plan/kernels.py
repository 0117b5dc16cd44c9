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
