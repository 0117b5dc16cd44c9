"""The planner's many-source shortest delays (emu.plan.dijkstra) are scipy's Dijkstra, bit for bit (issue 16).

Float sums over real geometry never tie by accident, and the stored pair delays are these sums, so the
comparison is exact equality, on random directed graphs (sweeps in any node order, the fallback to
scipy forced), on graphs with unreachable nodes and stored zeros, and on a real shell-1 slice.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from emu.plan import dijkstra as dj
from emu.plan.dijkstra import dijkstra_rows
from emu.plan.planner import destinations_for, make_plan
from emu.plan.routing import destination_distances
from emu.scenario.load import load_scenario

from .helpers import ROOT


def reference(g, sources, n_keep):
    return np.atleast_2d(dijkstra(g, directed=True, indices=sources))[:, :n_keep]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), m=st.integers(0, 300), n_src=st.integers(1, 12), zeros=st.booleans(),
       max_sweeps=st.sampled_from([0, 1, 2, dj.MAX_SWEEPS]), seed=st.integers(0, 2**31 - 1))
def test_matches_scipy_on_random_graphs(n, m, n_src, zeros, max_sweeps, seed) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    w = rng.uniform(0.0, 20.0, m) * rng.choice([1e-9, 1.0, 1e6], m)  # sums at very different scales
    if zeros:
        w[rng.random(m) < 0.2] = 0.0  # a stored zero is an edge of weight 0 to csgraph
    g = coo_matrix((w, (a, b)), shape=(n, n)).tocsr()  # duplicates summed, as the planner's graphs are
    sources = rng.integers(0, n, n_src)
    n_keep = int(rng.integers(0, n + 1))
    got = dijkstra_rows(g, sources, n_keep, max_sweeps=max_sweeps, few=0)
    np.testing.assert_array_equal(got, reference(g, sources, n_keep))


def test_blocks_and_fallback_on_a_long_path(monkeypatch) -> None:
    """A path numbered against the sweep order needs many sweeps: the block falls back to scipy."""
    n = 200
    order = np.random.default_rng(1).permutation(n)
    g = coo_matrix((np.full(n - 1, 0.7), (order[:-1], order[1:])), shape=(n, n)).tocsr()
    sources = np.arange(n)
    monkeypatch.setattr(dj, "BLOCK", 7)
    for sweeps in (0, 3, dj.MAX_SWEEPS, n + 1):
        np.testing.assert_array_equal(dijkstra_rows(g, sources, n, max_sweeps=sweeps, few=0), reference(g, sources, n))
    assert dijkstra_rows(g, np.zeros(0, np.int64), n).shape == (0, n)


@pytest.mark.parametrize("scenario", ["starlink-shell1.yaml", "two-shell.yaml"])
def test_matches_scipy_on_a_planned_slice(scenario) -> None:
    plan = make_plan(load_scenario(str(ROOT / "topologies" / scenario)), 2)
    snap, L = plan.series[1], plan.series[1].links
    N = snap.constellation.size
    dest = destinations_for(plan, 1)
    got = destination_distances(N, L.a, L.b, L.delay_ms, dest.terminals(), len(dest.addr))
    t_dest, t_sat, t_delay = dest.terminals()
    live = np.unique(t_dest)
    vid = np.full(len(dest.addr), -1)
    vid[live] = N + np.arange(len(live))
    w = np.maximum(t_delay, 1e-12)
    g = coo_matrix((np.concatenate([L.delay_ms, L.delay_ms, w]),
                    (np.concatenate([L.a, L.b, vid[t_dest]]), np.concatenate([L.b, L.a, t_sat]))),
                   shape=(N + len(live), N + len(live))).tocsr()
    assert len(live) > 0
    np.testing.assert_array_equal(got[live], reference(g, vid[live], N))
    assert np.isinf(got[np.setdiff1d(np.arange(len(dest.addr)), live)]).all()
