"""The planner's fast routing kernels give exactly what the straightforward ones gave (issue 16).

``routing_reference`` holds the kernels as they were before the vectorised rewrite, verbatim: next hops on
(satellites, destinations, 6) arrays, aggregation with a per-level sort, merging with a lexsort. Here the
codes must be identical, element for element, on random graphs under every multipath policy and on real
scenarios' slices (ground and satellite destinations), and so must the tables' answers: the segmented
longest match of every destination's address on every satellite. The tables themselves differ since the
aggregation states a default per region and exceptions below it (emu.plan.fold, docs/route-churn.md); with
aggregation off they are identical.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.addressing import grc as grcmod
from emu.plan import actions
from emu.plan.planner import make_plan
from emu.plan.routing import (
    Destinations,
    aggregate,
    destination_distances,
    down_code,
    next_hop_codes,
)
from emu.plan.satroutes import satellite_routes
from emu.plan.verify import lookup_all
from emu.scenario.load import load_scenario

from . import routing_reference as ref
from .helpers import ROOT
from .test_satroutes import grid


def same_tables(a, b) -> None:
    for f in ("offsets", "prefix", "plen", "action"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype, f
        np.testing.assert_array_equal(x, y, err_msg=f)


def same_answers(a, b, addrs, plen=None, codes=None) -> None:
    """The same longest-match answer for every address on every satellite (``a`` never larger than ``b``).
    With ``plen`` and ``codes`` (dests, sats): ``a`` answers every address with the code of the most specific
    destination prefix holding it (of destinations sharing a prefix, the first one), which
    the straightforward aggregation ``b`` missed where destinations nest; where that destination has no
    route (code 0, which no entry can state), no route or a coarser destination's code."""
    got = lookup_all(a, addrs)
    if codes is None:
        np.testing.assert_array_equal(got, lookup_all(b, addrs))
        return
    addrs, plen = np.asarray(addrs, np.int64), np.asarray(plen, np.int64)
    m = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    for i, x in enumerate(addrs.tolist()):
        holds = np.nonzero((x & m) == (addrs & m))[0]
        first = {}
        for j in holds.tolist():
            first.setdefault((int(addrs[j] & m[j]), int(plen[j])), j)
        holds = np.array(sorted(first.values(), key=lambda j: -plen[j]))
        want = codes[holds[0]]
        ok = got[:, i] == want
        coarser = (got[:, i][None, :] == codes[holds[1:]]).any(axis=0) if len(holds) > 1 else False
        ok |= (want == 0) & ((got[:, i] == 0) | coarser)
        assert ok.all(), (i, got[:, i], want)


def random_destinations(rng: np.random.Generator, n_sats: int, n_dest: int) -> Destinations:
    """Ground-like destinations: GRCs of nearby cells at mixed lengths (so they fold), a few unattached,
    some with several terminals (a GS's antennas) at different last-hop delays; one local delivery."""
    base = [grcmod.encode_latlon(float(rng.uniform(-50, 50)), float(rng.uniform(-170, 170)), 6, 1) for _ in range(3)]
    addr = np.array([base[i % 3] ^ int(rng.integers(0, 1 << 12)) for i in range(n_dest)], dtype=np.uint32)
    plen = rng.choice(np.array([14, 20, 26, 29, 32], np.uint8), n_dest)
    term_sat = rng.integers(-1, n_sats, n_dest).astype(np.int32)
    code = np.array([down_code(i) for i in range(n_dest)], dtype=np.int64)
    code[0] = actions.local()
    d, s, w = [], [], []
    for i in range(n_dest):
        if term_sat[i] < 0:
            continue
        for t in {int(term_sat[i]), *rng.integers(0, n_sats, int(rng.integers(0, 3))).tolist()}:
            d.append(i), s.append(t), w.append(float(rng.uniform(0, 2)) if i else 0.0)
    return Destinations(addr, plen, term_sat, code, (np.array(d, np.int64), np.array(s, np.int64), np.array(w)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.lists(st.booleans(), min_size=1, max_size=9),
       st.lists(st.floats(0, 0.5), min_size=1, max_size=7), st.sampled_from(["ecmp", "ucmp", "active-standby"]),
       st.floats(0, 0.3), st.booleans(), st.integers(0, 2**32 - 1), st.sampled_from([1, 7, 1 << 14]))
def test_kernels_match_the_reference_on_random_graphs(planes, per_plane, cut, delays, policy, tol, agg, seed,
                                                      block) -> None:
    """``block``: (destination, satellite) cells per block of hop_codes, small ones to cross block edges."""
    from emu.plan import routing

    routing._BLOCK_CELLS = block
    try:
        _check_kernels(planes, per_plane, cut, delays, policy, tol, agg, seed)
    finally:
        routing._BLOCK_CELLS = 1 << 14


def _check_kernels(planes, per_plane, cut, delays, policy, tol, agg, seed) -> None:
    nb, dl, a, b, d, addr = grid(planes, per_plane, cut, delays)
    dl = np.where(nb >= 0, dl, np.inf)  # as Snapshot.neighbour_delay_ms gives them
    rng = np.random.default_rng(seed)
    dest = random_destinations(rng, len(nb), int(rng.integers(1, 12)))
    dist = destination_distances(len(nb), a, b, d, dest.terminals(), len(dest.addr))
    want = ref.next_hop_codes(nb, dl, dist, dest, policy, tol, tol / 2)
    got = next_hop_codes(nb, dl, dist, dest, policy, tol, tol / 2)
    np.testing.assert_array_equal(got, want)
    t_new, t_ref = aggregate(got, dest.addr, dest.plen, agg), ref.aggregate(want, dest.addr, dest.plen, agg)
    if agg:
        same_answers(t_new, t_ref, dest.addr, dest.plen, got.T)
    else:
        same_tables(t_new, t_ref)
    sr = satellite_routes(nb, dl, a, b, d, addr, policy, tol, agg)
    tables, routed = ref.satellite_routes(nb, dl, a, b, d, addr, policy, tol, agg)
    if agg:
        same_answers(sr.tables, tables, addr)
    else:
        same_tables(sr.tables, tables)
    np.testing.assert_array_equal(sr.routed, routed)


def _variant(path, **routing):
    import yaml

    from .helpers import loaded

    data = yaml.safe_load(path.read_text())
    data.setdefault("routing", {}).update(routing)
    for shell in data.get("shells") or []:
        if shell.get("tle_file"):
            shell["tle_file"] = str(path.parent / shell["tle_file"])
    return loaded(data, path)


@pytest.mark.parametrize("scenario,routing", [
    ("default.yaml", {}),
    ("default.yaml", {"multipath": "ucmp", "satellite_destinations": True}),
    ("polar.yaml", {"multipath": "active-standby", "satellite_destinations": True}),
    ("two-shell.yaml", {"satellite_destinations": True}),
])
def test_planned_slices_match_the_reference(scenario, routing) -> None:
    lo = _variant(ROOT / "topologies" / scenario, **routing) if routing else load_scenario(ROOT / "topologies" / scenario)
    plan = make_plan(lo, 4)
    addrs = plan.ground_grc.astype(np.int64)
    if lo.scenario.routing.satellite_destinations:
        from emu.plan.planner import satellite_addresses

        addrs = np.concatenate([addrs, satellite_addresses(lo, plan.series.constellation).astype(np.int64)])
    for sp in plan.slices:
        tables, raw = ref.slice_tables(plan, sp.index)
        same_answers(sp.tables, tables, addrs)
        np.testing.assert_array_equal(sp.raw_entries, raw)


def _tamper(sp, rng: np.random.Generator, how: str):
    """A copy of slice plan ``sp`` with some entries damaged (the walk must name the same pairs)."""
    import copy

    from emu.orbit.constellation import DOWN, N, S
    from emu.plan.routing import SliceTables

    t = sp.tables
    act = t.action.copy()
    rows = rng.choice(len(act), size=min(len(act), 40), replace=False)
    keep = np.ones(len(act), dtype=bool)
    for i in rows:
        if how == "flip":  # forward backwards: loops
            act[i] = actions.encode(actions.MULTIPATH, {S: 1} if int(act[i]) & (1 << N) else {N: 1})
        elif how == "down":  # Down to the wrong ground node
            act[i] = actions.encode(actions.MULTIPATH, {DOWN: 1}, int(rng.integers(0, 3)))
        elif how == "local":  # delivered here
            act[i] = actions.local()
        elif how == "hole":
            keep[i] = False
    sizes = np.bincount(np.repeat(np.arange(len(t.offsets) - 1), np.diff(t.offsets))[keep], minlength=len(t.offsets) - 1)
    off = np.concatenate([[0], np.cumsum(sizes)])
    bad = copy.copy(sp)
    bad.tables = SliceTables(off, t.prefix[keep], t.plen[keep], act[keep])
    return bad


@pytest.mark.parametrize("scenario,routing,how", [
    ("default.yaml", {}, None),
    ("default.yaml", {"multipath": "ucmp", "satellite_destinations": True}, "flip"),
    ("polar.yaml", {"multipath": "active-standby", "satellite_destinations": True}, "down"),
    ("polar.yaml", {"satellite_destinations": True}, "local"),
    ("two-shell.yaml", {"satellite_destinations": True}, "hole"),
])
def test_walk_matches_the_reference(scenario, routing, how, tmp_path) -> None:
    """The bit-parallel walk counts and names exactly the pairs the per-pair walk did, on sound plans and
    on plans with loops, black holes and wrong deliveries (signed, so only the walk can find them)."""
    import copy

    from emu.plan import verify as fast
    from emu.plan.db import PlanDB, write_plan

    from . import verify_reference as slow

    plan = make_plan(_variant(ROOT / "topologies" / scenario, **routing), 3)
    if how:
        plan = copy.copy(plan)
        rng = np.random.default_rng(7)
        plan.slices = [_tamper(sp, rng, how) for sp in plan.slices]
    p = tmp_path / "p.db"
    write_plan(plan, p)
    db = PlanDB(p)
    for k in range(db.n_slices):
        got = fast._verify_slice(db, k, True, 20, 0)
        want = slow._verify_slice(db, k, True, 20, 0)
        assert (got.pairs_checked, got.disconnected) == (want.pairs_checked, want.disconnected)
        assert got.failures == want.failures
        assert bool(got.failures) == bool(how), got.failures[:3]
