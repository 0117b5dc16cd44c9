"""The compiled kernel of :mod:`emu.plan.dijkstra` (numba; imported only where many sources are searched).

spec: grc-based-routing §Predictive Routing (paths computed centrally per time slice).
"""

from __future__ import annotations

from numba import njit


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
