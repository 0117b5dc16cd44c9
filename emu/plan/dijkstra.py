"""Shortest delays from many sources at once over one slice's graph.

spec: grc-based-routing §Predictive Routing (paths computed centrally per time slice).

The planner runs a few hundred single-source searches per slice over the same graph (one per ground
destination, orbit plane, satellite index and user terminal). One search at a time (scipy's
``csgraph.dijkstra``, ~150 us each over shell 1's ~1,800 nodes) is bound by its heap's unpredictable
branches. Here the sources of a block advance together (:func:`emu.plan.kernels.sweeps`, numba):
label-correcting sweeps over the nodes, alternately in index order and backwards, each relaxing every
edge into a node for every source in one contiguous, vectorised loop, until a sweep changes nothing.
Satellites are numbered plane by plane, so one sweep carries a path along a monotone run; a shell-1
slice settles in ~11 sweeps: ~3 ms for its 200 ground destinations, against ~27 ms one Dijkstra at a
time. A block that has not settled after :data:`MAX_SWEEPS` sweeps, and a search from fewer than
:data:`FEW` sources (``leo-emu path``: not worth loading numba), go to scipy.

Same answers, bit for bit, as scipy: with non-negative weights and monotone rounding, a state in which
no edge can lower a label holds at every node the least left-to-right float sum over all paths from the
source (by induction along an optimal path), every label being such a sum; the sweeps stop only in that
state. ``tests/unit/test_plan_dijkstra.py`` compares them element for element.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import dijkstra

MAX_SWEEPS = 64  # then scipy finishes the block (never reached on the scenarios measured)
BLOCK = 256  # sources per block: (nodes, BLOCK) float64 labels, a few MB at most
FEW = 16


def _scipy(graph, sources: np.ndarray, n_keep: int) -> np.ndarray:
    return np.atleast_2d(dijkstra(graph, directed=True, indices=sources))[:, :n_keep]


def dijkstra_rows(graph, sources: np.ndarray, n_keep: int, max_sweeps: int = MAX_SWEEPS,
                  few: int = FEW) -> np.ndarray:
    """(len(sources), n_keep): least delay from each source (a node index of the scipy sparse ``graph``,
    directed, non-negative weights, a stored 0 an edge of weight 0) to nodes 0..n_keep-1, ``inf`` where
    unreachable: what ``scipy.sparse.csgraph.dijkstra(graph, directed=True, indices=sources)[:, :n_keep]``
    gives."""
    sources = np.asarray(sources, dtype=np.int64)
    out = np.empty((len(sources), n_keep))
    if len(sources) == 0:
        return out
    graph = graph.tocsr()
    if len(sources) < few:
        return _scipy(graph, sources, n_keep)
    from emu.plan.kernels import sweeps

    into = graph.T.tocsr()
    into = (into.indptr.astype(np.int64), into.indices.astype(np.int64), into.data.astype(np.float64))
    for lo in range(0, len(sources), BLOCK):
        block = sources[lo:lo + BLOCK]
        D = np.full((graph.shape[0], len(block)), np.inf)
        D[block, np.arange(len(block))] = 0.0
        done = sweeps(*into, D, max_sweeps)
        out[lo:lo + len(block)] = D[:n_keep].T if done else _scipy(graph, block, n_keep)
    return out
