"""The strict kernel-vs-plan rule (emu.dataplane.fibcheck.expect/accepts) on known answers, no kernel.

spec: grc-based-routing §Forwarding Algorithm (no match: drop, ICMP unreachable),
§Time Slice Transition (the previous table retained one slice).
"""

from __future__ import annotations

import errno

import pytest

from emu.addressing.slm import SegmentedTable
from emu.dataplane import fibcheck as F
from emu.dataplane.model import IDX_DIR, IDX_LO, Model
from emu.dataplane.nlroute import RTN_LOCAL, RTN_UNICAST
from emu.orbit.constellation import N, S
from emu.plan import actions
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan

from .helpers import load_default

DST = 0x40A00000  # inside 64.160.0.0/11
NORTH = actions.encode(actions.MULTIPATH, {N: 1})
SOUTH = actions.encode(actions.MULTIPATH, {S: 1})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("fib") / "p.db"
    write_plan(make_plan(load_default(), n_slices=3), p)
    return Model.from_plan(PlanDB(p), "zz02")


def table(*entries) -> SegmentedTable:
    t = SegmentedTable()
    for prefix, plen, code in entries:
        t.insert(prefix, plen, code)
    return t


def test_a_bound_address_is_local_and_only_local(model):
    e = F.expect(model, 0, 1, DST, {DST}, table((DST, 32, NORTH)), None)
    assert e.what == F.LOCAL
    assert F.accepts(e, 0, RTN_LOCAL, IDX_LO)
    assert not F.accepts(e, 0, RTN_UNICAST, IDX_DIR[N]) and not F.accepts(e, errno.ENETUNREACH, None, None)


def test_a_forwarded_entry_refuses_local_and_unreachable(model):
    e = F.expect(model, 0, 1, DST, set(), table((DST & 0xFFE00000, 11, NORTH)), None)
    assert e.what == F.FORWARD and e.oifs == {IDX_DIR[N]} and e.slice == 1
    assert F.accepts(e, 0, RTN_UNICAST, IDX_DIR[N])
    assert not F.accepts(e, 0, RTN_UNICAST, IDX_DIR[S])  # another egress
    assert not F.accepts(e, 0, RTN_LOCAL, IDX_LO)  # the lax check took any local answer
    assert not F.accepts(e, errno.ENETUNREACH, None, None)


def test_unreachable_only_where_no_table_has_an_entry(model):
    e = F.expect(model, 0, 1, DST, set(), table(), table())
    assert e.what == F.UNREACHABLE
    assert F.accepts(e, errno.ENETUNREACH, None, None) and F.accepts(e, errno.EHOSTUNREACH, None, None)
    assert not F.accepts(e, 0, RTN_UNICAST, IDX_DIR[N]) and not F.accepts(e, 0, RTN_LOCAL, IDX_LO)


def test_the_retained_table_answers_where_slice_k_has_no_entry(model):
    e = F.expect(model, 0, 1, DST, set(), table(), table((DST, 29, SOUTH)))
    assert e.what == F.FORWARD and e.slice == 0 and e.oifs == {IDX_DIR[S]}
    assert F.accepts(e, 0, RTN_UNICAST, IDX_DIR[S])
    assert not e.or_unreachable and not F.accepts(e, errno.ENETUNREACH, None, None)  # the South ISL is still up
    # slice k's entry wins over the retained one, whatever the lengths
    e = F.expect(model, 0, 1, DST, set(), table((DST & 0xFFE00000, 11, NORTH)), table((DST, 29, SOUTH)))
    assert e.slice == 1 and e.oifs == {IDX_DIR[N]}


def test_the_kernels_table_holds_the_bound_region_as_local(model):
    from emu.dataplane.slicestate import Desired

    d = Desired(model)
    prefix, plen = d.region(0, 1)
    t = F.slice_table(d, 0, 1)
    hit = t.lookup(prefix | 0x5)
    assert hit is not None and hit[1] >= plen
    if hit[:2] == (prefix, plen):
        assert actions.decode(hit[2]).kind == actions.LOCAL or (prefix, plen) in d.tables(1).reference(0)


def test_compare_builds_the_plan_side_once_for_both_families(model, monkeypatch):
    """``status --fib`` asks IPv4 and IPv6: one Desired, one expectation per (satellite, destination), every
    question asked in both families, each IPv6 mismatch marked ``family: 6``."""
    built, asked = [], []
    real = F.Desired

    class Counting(real):
        def __init__(self, *a, **kw):
            built.append(a)
            super().__init__(*a, **kw)

    def fake_get_many(nl, dsts, base6=None, mark=None):
        asked.append((nl, base6))
        assert mark == 0x1E2  # asked with the mark the kernel gives packets
        return [(errno.ENETUNREACH, None, None)] * len(dsts)  # "unreachable" everywhere: plan-routed ones differ

    monkeypatch.setattr(F, "Desired", Counting)
    monkeypatch.setattr(F, "route_get_many", fake_get_many)
    marks = type("Marks", (), {"marks": lambda self, names: {n: 0x1E2 for n in names}})()
    fabric = type("Fab", (), {"nl": {s.netns: s.netns for s in model.satellites}, "nft": lambda self: marks})()
    dsts = [int(g.grc) for g in model.db.ground[:3]] + [F.UNASSIGNED_GRC]
    r = F.compare(model, fabric, 1, dsts, 0, families=(4, 6))
    assert len(built) == 1
    assert r["checked"] == 2 * len(dsts) * len(model.satellites)
    assert len(asked) == 2 * len(model.satellites) and {b is None for _n, b in asked} == {True, False}
    four = [x for x in r["mismatches"] if "family" not in x]
    six = [x for x in r["mismatches"] if x.get("family") == 6]
    assert four and six and ":" in six[0]["dst"] and ":" not in four[0]["dst"]
    built.clear()
    d = real(model, 0)
    F.compare(model, fabric, 1, dsts, 0, families=(4, 6), desired=d)
    assert not built  # a caller's Desired is used as it is (check_run keeps one across attempts)
