"""The desired kernel state of each slice and the transitions between slices (pure, no root).

The routes are checked against the plan's reference lookup
(``SliceTables.reference``, segmented longest match); the make-before-break
order and the three-table rotation are checked by replaying every
transition of a 40-slice plan on a small model of the kernel.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from emu.addressing.slm import SegmentedTable
from emu.dataplane import desired as D
from emu.dataplane import nlroute, slicemark
from emu.dataplane.fibcheck import allowed_ifindexes
from emu.dataplane.model import IDX_DIR, IDX_GROUND_SLOT, IDX_LO, IDX_TUN6, Model
from emu.dataplane.slicestate import Desired
from emu.dataplane.terrestrial import TunnelConfig, fixed_links, tunnel_config
from emu.orbit.constellation import DOWN, OPPOSITE
from emu.plan import actions
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan

from .helpers import load_default

N_SLICES = 40


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("d") / "p.db"
    write_plan(make_plan(load_default(), n_slices=N_SLICES), p)
    return Model.from_plan(PlanDB(p), "zz00")


@pytest.fixture(scope="module")
def states(model):
    d = Desired(model)
    return [d.state(k) for k in range(model.n_slices)]


# ---------------------------------------------------------------------------- the rotation's rules
def test_three_tables_in_rotation_and_newer_rules_win() -> None:
    for k in range(1, 50):
        assert len({D.table_id(k - 1), D.table_id(k), D.table_id(k + 1)}) == 3
        assert D.table_id(k + 1) == D.table_id(k - 2)  # refilled only once slice k-2 is gone
        assert D.rule_pref(k) < D.rule_pref(k - 1)  # a smaller priority number is looked up first
        assert D.rule_pref(k) > 32767  # after main and default


def test_route_diff_deletes_first_and_sends_only_changes() -> None:
    have = {(1, 24, 1): (1, ("a",)), (2, 24, 1): (1, ("b",)), (3, 24, 1): (1, None)}
    want = {(1, 24, 1): (1, ("a",)), (2, 24, 1): (1, ("c",)), (3, 24, 1): (1, ()), (4, 24, 1): (7, ())}
    dels, reps = D.route_diff(have, want)
    assert dels == []
    assert dict(reps) == {(2, 24, 1): (1, ("c",)), (3, 24, 1): (1, ()), (4, 24, 1): (7, ())}
    dels, reps = D.route_diff(want, {})
    assert sorted(dels) == sorted(want) and reps == []


# ---------------------------------------------------------------------------- routes vs the plan's reference
def _as_table(routes) -> SegmentedTable:
    t = SegmentedTable()
    for (prefix, plen, metric), val in routes.items():
        if metric == 1:
            t.insert(prefix, plen, val)
    return t


@pytest.mark.parametrize("k", [0, 7, N_SLICES - 1])
def test_routes_agree_with_the_plans_reference_lookup(model, states, k) -> None:
    tables = model.db.tables(k)
    rng = random.Random(k)
    d = Desired(model)
    for s in range(len(model.satellites)):
        ref = tables.reference(s)
        mine = _as_table(states[k].routes[s])
        region = d.region(s, k)
        assert states[k].routes[s][(region[0], region[1], 1)][0] in (nlroute.RTN_LOCAL, nlroute.RTN_UNICAST,
                                                                     nlroute.RTN_UNREACHABLE)
        probes = [p for p, _l, _a in ref] + [rng.getrandbits(32) for _ in range(200)]
        for addr in probes:
            want, got = ref.lookup(addr), mine.lookup(addr)
            if got is not None and (got[0], got[1]) == region and (want is None or want[:2] != region):
                assert want is None or want[1] < region[1]  # the bound region is local, more specific
                assert got[2][0] == nlroute.RTN_LOCAL
                continue
            assert (want is None) == (got is None), (s, addr)
            if want is None:
                continue
            assert want[:2] == got[:2]
            rtype, hops = got[2]
            allowed = allowed_ifindexes(model, s, k, want[2])
            if rtype == nlroute.RTN_LOCAL:
                assert allowed == {IDX_LO}
            elif rtype == nlroute.RTN_UNREACHABLE:
                assert not allowed
            else:
                act = actions.decode(want[2])
                oifs = {h.oif for h in hops}
                assert oifs <= allowed
                if act.kind != actions.STANDBY:
                    assert oifs == allowed  # every egress of the entry, one multipath route


def test_routes_asked_in_any_slice_order_are_each_slice_s_own(model, states) -> None:
    """Asking slices out of order gives each slice's routes as asking them in order does. (On this plan no next
    hop changes between slices, so a memo leaking across slices is caught by the next test, not this one.)"""
    d = Desired(model)
    order = [5, 6, 5, 30, 0, 6, N_SLICES - 1, 5]
    for k in order:
        for s in range(0, len(model.satellites), 3):
            assert d.routes(s, k) == states[k].routes[s], (s, k)
    assert any(states[5].routes[s] != states[30].routes[s] for s in range(len(model.satellites)))  # slices differ


def test_next_hops_are_remembered_for_one_slice_only(model) -> None:
    """The memo behind the above: a next hop is the model's answer for the slice asked, never another's."""
    d = Desired(model)
    asked = []

    class Links:
        def nexthop_of(self, sat, direction, k, target):
            asked.append((sat, direction, k, target))
            return (k, f"fe80::{sat}:{direction}:{target}")
    d.m = Links()
    assert d._nexthop(1, 0, 5, None) == (5, "fe80::1:0:None")
    assert d._nexthop(1, 0, 5, None) == (5, "fe80::1:0:None") and len(asked) == 1  # remembered in slice 5
    assert d._nexthop(1, 0, 6, None)[0] == 6
    assert d._nexthop(1, 0, 5, None)[0] == 5 and len(asked) == 3  # slice 6 asked in between: asked again
    assert d._nexthop(1, DOWN, 5, 7) == (5, f"fe80::1:{DOWN}:7")


def test_standby_entries_keep_their_metric_2_routes_beside_multipath_ones(model) -> None:
    """An active-standby entry is two routes (metric 1 and 2), so a table that has one is built entry by entry,
    and a table of one-route entries alone the fast way (Desired.routes): either way every entry gets the
    routes of its action, the standby at metric 2."""
    import numpy as np

    s, k = 0, 0
    dirs = [d for d in range(4) if model.nexthop_of(s, d, k, None) is not None]
    assert len(dirs) >= 3
    ecmp = actions.encode(actions.MULTIPATH, {dirs[0]: 1, dirs[1]: 1})
    standby = actions.encode(actions.STANDBY, {dirs[1]: 1, dirs[2]: 2})

    class Tables:
        def __init__(self, codes):
            self.codes = codes

        def of(self, sat):
            n = len(self.codes)
            return (np.array([0x0A000000 + (i << 16) for i in range(n)], dtype=np.uint32),
                    np.full(n, 16, dtype=np.uint8), np.array(self.codes, dtype=np.int64))

    for codes in ([ecmp, standby, ecmp], [ecmp, ecmp]):
        d = Desired(model)
        d._cache[("tables", k)] = Tables(codes)
        region = d.region(s, k)
        want = {(region[0], region[1], 1): (nlroute.RTN_LOCAL, ())}
        for i, code in enumerate(codes):
            for metric, rtype, hops in d.routes_for_action(s, k, code):
                want[(0x0A000000 + (i << 16), 16, metric)] = (rtype, hops)
        assert d.routes(s, k) == want, codes
    # the standby entry (10.1/16): its active hop at metric 1, its standby at metric 2
    d = Desired(model)
    d._cache[("tables", k)] = Tables([ecmp, standby, ecmp])
    got = d.routes(s, k)
    assert [h.oif for h in got[(0x0A010000, 16, 1)][1]] == [IDX_DIR[dirs[1]]]
    assert [h.oif for h in got[(0x0A010000, 16, 2)][1]] == [IDX_DIR[dirs[2]]]
    assert len(got[(0x0A000000, 16, 1)][1]) == 2 and (0x0A000000, 16, 2) not in got


def test_grc_addresses_follow_the_binding_with_one_slice_retained(model, states) -> None:
    from emu.addressing.grc import to_ipv4

    for k in (0, 5):
        for s in range(len(model.satellites)):
            now = {to_ipv4(int(model.db.bound_grc(k)[s]) | d) for d in range(6)}
            before = {to_ipv4(int(model.db.bound_grc(k - 1)[s]) | d) for d in range(6)} if k else set()
            assert set(states[k].grc_addrs[s]) == now | before
            for a, idx in states[k].grc_addrs[s].items():
                d = int(a.split(".")[3]) & 7
                assert idx == (IDX_DIR[d] if (s, d) in model.steady_interfaces else IDX_LO)


def test_ground_side_follows_the_plan(model, states) -> None:
    for k in (0, 9):
        st = states[k]
        at = model.ground_link_at(k)
        for g in model.db.ground:
            gd = st.ground[g.idx]
            if g.idx in at:
                gl = at[g.idx]
                assert gd.via == (IDX_GROUND_SLOT + gl.ground_slot, model.sat_ll(gl.sat, DOWN))
                assert any(v.kind == "ground" and v.node_a == model.satellites[gl.sat].name and v.node_b == g.name
                           for v in st.links)
            else:
                assert gd.via is None
        choice = model.db.gs_choice(k)
        for row, u in enumerate(model.uts):
            gs = int(choice[row, 0])
            assert st.cores[u.idx].gs == gs
            if gs >= 0:
                assert st.tunnels[u.idx].gs == gs and st.cores[u.idx].gateway == model.gs_core_link(gs)[0]
            else:
                assert u.idx not in st.tunnels


# ---------------------------------------------------------------------------- replay on a model kernel
class FakeKernel:
    """What matters for make-before-break: links, ISLs up, tables, rules (and the mark switch's fixed rules
    and mark), and each ground node's default routes, tables and rules; checks every operation."""

    def __init__(self, model: Model, states):
        self.m = model
        self.states = {st.table: st for st in states}
        self.sat_of = {s.name: s.index for s in model.satellites}
        self.links: set[tuple[int, int]] = set()  # (sat, ifindex) of dynamic links that exist
        self.grid: set[tuple[int, int, int]] = set()
        self.tables: dict[int, dict[int, dict]] = {}
        self.rules: set[D.Rule] = set()
        self.mark_rules: set[slicemark.MarkRule] = set()
        self.mark: int | None = None  # what the nftables rule sets
        self.local_out: int | None = None
        self.addrs: dict[int, set[str]] = {}
        self.log: list[str] = []
        self.ground_links: set[tuple[str, int]] = set()  # (ground node, ifindex) of dynamic links that exist
        self.ground_rules: set[slicemark.MarkRule] = set()  # a ground node's fixed rules (mark switch)
        self.ground_tables: dict[tuple[str, int], tuple] = {}  # (node, table) -> (via, dst6) of its defaults
        self.phase = ""

    def ground_chain(self, node: str, family: int, marked: bool = True) -> list[int]:
        """The tables a ground node's lookup of a GRC destination (``family``) meets, in order: its fixed rules
        whose mark matches (IPv6: ``to`` the GRC /96 only) and main (priority 32766)."""
        mark = self.mark if marked else None
        chain = [(r.priority, r.table) for r in self.ground_rules if r.family == family and r.mark == mark]
        return [t for _p, t in sorted(chain + [(32766, D.RT_TABLE_MAIN)])]

    def ground_lookup(self, node: str, family: int, marked: bool = True) -> tuple[int, object] | None:
        """(table, via) of the default route a ground node's lookup finds first (via None: unreachable);
        None: no route at all."""
        for t in self.ground_chain(node, family, marked):
            hit = self.ground_tables.get((node, t))
            if hit is not None and (family == 4 or hit[1] is not None):
                return t, hit[0]
        return None

    def ground_view(self) -> dict:
        return {g.name: tuple(self.ground_lookup(g.name, f, mk) for f in (4, 6) for mk in (True, False))
                for g in self.m.db.ground}

    def check_ground(self, k: int, marked: bool = True) -> None:
        """Every UT and GS reaches the satellite serving it in slice k (the plan's ground link, which exists),
        or has no route (unreachable), in both families."""
        at = self.m.ground_link_at(k)
        for g in self.m.db.ground:
            gl = at.get(g.idx)
            want = (IDX_GROUND_SLOT + gl.ground_slot, self.m.sat_ll(gl.sat, DOWN)) if gl else None
            for family in (4, 6):
                got = self.ground_lookup(g.name, family, marked)
                assert got is not None, f"slice {k}: {g.name} has no IPv{family} default"
                assert got[1] == want, f"slice {k}: {g.name} IPv{family} (marked {marked}) via {got[1]}, not {want}"
            if want is not None:
                assert (g.name, want[0]) in self.ground_links, f"slice {k}: {g.name}'s link {want[0]} missing"

    def lookup(self, family: int, marked: bool = True) -> list[int]:
        """The tables a forwarded packet of ``family`` (``marked``: else an unmarked local lookup) meets, in
        order, as the kernel walks the rules: every rule whose selector matches, by priority (a lookup that
        misses goes on to the next one)."""
        mark = self.mark if marked else None
        chain = [(r.priority, r.table) for r in self.mark_rules if r.family == family and r.mark == mark]
        chain += [(r.priority, r.table) for r in self.rules if r.family == family and not (r.unmarked and mark)]
        return [t for _p, t in sorted(chain)]

    def up(self, sat: int, oif: int) -> bool:
        if oif == IDX_LO:
            return True
        if oif in IDX_DIR.values():
            d = oif - 10
            return any((a == sat and dd == d) or (b == sat and OPPOSITE[dd] == d) for a, b, dd in self.grid)
        return (sat, oif) in self.links

    def apply(self, op: D.Op, st: D.SliceState) -> None:
        o = op.obj
        self.phase = op.phase
        if op.verb == "create":
            for node, idx in ((o.node_a, o.index_a), (o.node_b, o.index_b)):
                if node in self.sat_of:
                    assert (self.sat_of[node], idx) not in self.links, f"{op}: slot still taken"
                    self.links.add((self.sat_of[node], idx))
                else:
                    self.ground_links.add((node, idx))
        elif op.verb == "retire":
            for node, idx in ((o.node_a, o.index_a), (o.node_b, o.index_b)):
                if node in self.sat_of:
                    self.links.discard((self.sat_of[node], idx))
                else:
                    self.ground_links.discard((node, idx))
        elif op.verb == "replace" and isinstance(o, D.GroundDefault):
            if op.phase == "prepare" and self.mark is not None:  # (the first slice: nothing runs yet)
                reached = {t for f in (4, 6) for mk in (True, False) for t in self.ground_chain(o.node, f, mk)}
                assert o.table not in reached, f"{o.node}: table {o.table} written while a lookup reaches it"
            if op.phase == "switch":
                assert o.table == D.RT_TABLE_MAIN and self.mark is None, "only rules write the ground at the boundary"
            self.ground_tables[(o.node, o.table)] = (o.via, o.dst6)
        elif op.verb == "up":
            self.grid.add(o)
        elif op.verb == "down":
            self.grid.discard(o)
        elif op.verb == "fill":
            reached = self.lookup(4) + self.lookup(6) + self.lookup(4, marked=False) + self.lookup(6, marked=False)
            assert o not in reached, f"table {o} filled while a lookup reaches it"
            self.tables[o] = {s: dict(r) for s, r in st.routes.items()}
        elif op.verb == "add" and isinstance(o, slicemark.MarkRule):
            assert self.mark is None, "fixed rules are made before the first mark"
            if o.ground:
                assert (o.dst is None) == (o.family == 4), "a ground IPv6 rule is for the GRC /96 only"
                assert o.dst is None or o.dst == next(iter(st.ground.values())).dst6
                assert (o.priority > 32766) == (o.family == 4)  # IPv4 after main; IPv6 (to the /96) before it
                self.ground_rules.add(o)
            else:
                self.mark_rules.add(o)
        elif op.verb == "add" and isinstance(o, D.LocalOut6):
            self.local_out = o.table
        elif op.verb == "add":
            self.rules.add(o)
        elif op.verb == "del":
            self.rules.remove(o)
        elif op.verb == "set":
            assert o.setup == (self.mark is None), "the nftables table is made once, at the first slice"
            self.mark = o.mark
        elif op.verb == "bind":
            self.addrs.setdefault(o[0], set()).add(o[1])
        elif op.verb == "unbind":
            self.addrs[o[0]].remove(o[1])
        self.log.append(f"{op.phase} {op.verb}")

    def check_routes_usable(self, only_winner: bool = False) -> None:
        """Every route of a table some lookup reaches goes through a link that exists (and, for the winning
        table, is up)."""
        for family in (4, 6):
            chain = self.lookup(family)
            if not chain:
                continue
            for t in (chain[:1] if only_winner else chain):
                for s, routes in self.tables.get(t, {}).items():  # never filled: empty
                    for (_p, _l, _m), (rtype, hops) in routes.items():
                        for h in hops:
                            if h.oif in IDX_DIR.values() and t != chain[0]:
                                continue  # a retained table may point at an ISL that went down: the kernel skips it
                            assert self.up(s, h.oif), f"table {t} sat {s}: oif {h.oif} missing"


@pytest.fixture(scope="module", params=["mark", "rules"])
def switch_states(request, model):
    """(model, states) under each IPv6 switch: the nftables mark (where the kernel has it) or rules."""
    import dataclasses

    from emu.dataplane.runconfig import RunConfig, scenario_of_plan

    m = Model.from_plan(model.db, "zz02", cfg=dataclasses.replace(
        RunConfig.from_scenario(scenario_of_plan(model.db)), slice_switch=request.param))
    d = Desired(m)
    return m, [d.state(k) for k in range(m.n_slices)]


def test_replaying_transitions_keeps_make_before_break(switch_states) -> None:
    model, states = switch_states
    marked = model.cfg.slice_switch == "mark"
    kern = FakeKernel(model, states)
    for op in D.initial(states[0]):
        kern.apply(op, states[0])
    kern.check_routes_usable()
    assert kern.lookup(4) == kern.lookup(6) == [D.table_id(0)] + ([D.table_id(-1)] if marked else [])
    assert kern.lookup(4, marked=False) == [D.table_id(0)]
    if marked:  # the retained table of the first slice is empty: nothing found there
        assert D.table_id(-1) not in kern.tables
        assert kern.local_out == slicemark.LOCAL_OUT_TABLE
    kern.check_ground(0)
    kern.check_ground(0, marked=False)
    main = {kern.ground_lookup(g.name, f)[0] for g in model.db.ground for f in (4, 6)}
    assert main == ({D.table_id(0)} if marked else {D.RT_TABLE_MAIN})  # marked: main holds no default
    for k in range(1, model.n_slices):
        cur, nxt = states[k - 1], states[k]
        ops = D.transition(cur, nxt)
        phases = [o.phase for o in ops]
        assert phases == sorted(phases, key=["prepare", "switch", "cleanup"].index)  # never interleaved
        before = (kern.lookup(4), kern.lookup(6), kern.ground_view())
        for i, op in enumerate(ops):
            kern.apply(op, nxt)
            if op.phase == "prepare":  # nothing looks at what is being prepared, on a satellite or the ground
                assert (kern.lookup(4), kern.lookup(6), kern.ground_view()) == before
            if i + 1 == len(ops) or ops[i + 1].verb != op.verb:  # the applier pushes one kind at a time
                kern.check_routes_usable(only_winner=op.verb == "down")
            if op.phase == "switch" and (i + 1 == len(ops) or ops[i + 1].phase != "switch"):
                kern.check_ground(k)  # from the boundary on: every ground node by its new satellite
        kern.check_ground(k)
        kern.check_ground(k, marked=False)  # after the cleanup, unmarked lookups (ip route get) too
        # after the boundary, in both families: slice k's table wins, k-1's is the fallback, and nothing else
        assert kern.lookup(4) == kern.lookup(6) == [D.table_id(k), D.table_id(k - 1)]
        assert kern.rules == {D.Rule(D.table_id(kk), D.rule_pref(kk), f, marked) for kk in (k, k - 1)
                              for f in ((4,) if marked else (4, 6))}
        assert kern.mark == (slicemark.slice_mark(k, D.N_TABLES) if marked else None)
        assert kern.lookup(4, marked=False) == [D.table_id(k), D.table_id(k - 1)]  # local packets, route get
        if marked:  # IPv6's unmarked local lookups: the placeholder, re-routed once the output chain marks them
            assert kern.lookup(6, marked=False) == [slicemark.LOCAL_OUT_TABLE]
        # kernel links are exactly what the desired state lists
        want = {(kern.sat_of[n], i) for v in nxt.links for n, i in ((v.node_a, v.index_a), (v.node_b, v.index_b))
                if n in kern.sat_of}
        assert kern.links == want
        assert kern.grid == set(nxt.grid)
        assert {s: set(a) for s, a in nxt.grc_addrs.items()} == kern.addrs


def test_switch_phase_is_the_rule_then_the_ground_side(switch_states) -> None:
    model, states = switch_states
    ops = D.transition(states[3], states[4])
    switch = [o for o in ops if o.phase == "switch"]
    marked = model.cfg.slice_switch == "mark"
    families = (4,) if marked else (4, 6)
    new = [D.Rule(D.table_id(4), D.rule_pref(4), f, marked) for f in families]
    if marked:  # one write per satellite, or none when armed; the unmarked lookups' rule after the boundary
        assert switch[0] == D.Op("switch", "set", D.SliceMark(slicemark.slice_mark(4, D.N_TABLES)))
        n = 1
    else:
        assert switch[:len(new)] == [D.Op("switch", "add", r) for r in new]
        n = len(new)
    assert all(o.verb == "replace" for o in switch[n:])
    cleanup = [o for o in ops if o.phase == "cleanup"]
    assert [o.obj for o in cleanup if o.verb == "add"] == (new if marked else [])
    assert [o.obj for o in cleanup if o.verb == "del"] == [D.Rule(D.table_id(2), D.rule_pref(2), f, marked)
                                                           for f in families]
    verbs = [o.verb for o in cleanup]
    if marked:
        assert verbs.index("add") < verbs.index("del")  # never without a rule for unmarked lookups
    verbs = [o.verb for o in cleanup]
    if "retire" in verbs:
        assert verbs.index("del") < verbs.index("retire")  # the old table's rule goes before its links


def test_mark_switch_rules_are_fixed_and_follow_the_rotation() -> None:
    """Mark M(k) looks up table(k) then table(k-1), for every k: so the rules never change, only the mark."""
    rules = slicemark.fixed_rules(D.table_id, D.N_TABLES)
    by_mark: dict = {}
    for r in sorted(rules):
        by_mark.setdefault((r.family, r.mark), []).append(r.table)
    for k in range(0, 12):
        for family in (4, 6):
            assert by_mark[(family, slicemark.slice_mark(k, D.N_TABLES))] == [D.table_id(k), D.table_id(k - 1)]
    assert by_mark[(6, None)] == [slicemark.LOCAL_OUT_TABLE]  # unmarked local IPv6 lookups: after every mark rule
    assert (4, None) not in by_mark  # IPv4's unmarked lookups keep the rotating rules
    assert max(r.priority for r in rules if r.mark) < min(r.priority for r in rules if r.mark is None)
    assert min(r.priority for r in rules) > 32767  # after main and default, as the IPv4 rotation's
    assert len({slicemark.slice_mark(k, D.N_TABLES) for k in range(9)}) == D.N_TABLES
    assert 0 not in {slicemark.slice_mark(k, D.N_TABLES) for k in range(9)}  # 0 is "not marked yet"


def test_links_are_created_before_first_use_and_retired_after_retention(model, states) -> None:
    for k in range(1, model.n_slices):
        ops = D.transition(states[k - 1], states[k])
        for op in ops:
            if op.verb == "create":
                assert op.phase == "prepare"
                gl = next(g for g in model.ground_links + model.shell_links if D.GROUP_BASE + g.retire == op.obj.group
                          and g.first == k)
                assert gl.first == k
            if op.verb == "retire":
                assert op.phase == "cleanup" and op.obj.retire == k


def test_transition_refuses_non_consecutive_slices(states) -> None:
    with pytest.raises(ValueError, match="follow each other"):
        D.transition(states[1], states[3])


def test_unchanged_ground_side_sends_nothing(states) -> None:
    """Nothing at the boundary but the mark: the ground defaults of the next slice go into its table in the
    preparation (whole: that table held an older slice's), and unmarked lookups' table is left alone."""
    st = states[5]
    assert st.mark is not None  # the default: the mark switch (dry runs and pure tests assume the kernel has it)
    nxt_ground = {g: dataclasses.replace(x, table=D.table_id(st.k + 1)) for g, x in st.ground.items()}
    same = D.SliceState(**{**st.__dict__, "k": st.k + 1, "table": D.table_id(st.k + 1),
                           "rules": frozenset({D.Rule(D.table_id(st.k + 1), D.rule_pref(st.k + 1), 4, True),
                                               D.Rule(D.table_id(st.k), D.rule_pref(st.k), 4, True)}),
                           "ground": nxt_ground, "mark": slicemark.slice_mark(st.k + 1, D.N_TABLES)})
    ops = D.transition(st, same)
    assert [(o.phase, o.verb) for o in ops] == ([("prepare", "fill")] + [("prepare", "replace")] * len(st.ground)
                                                + [("switch", "set"), ("cleanup", "add"), ("cleanup", "del")])
    assert {o.obj for o in ops if o.verb == "replace"} == set(nxt_ground.values())


def test_ground_defaults_rotate_through_the_slice_tables_under_the_mark(switch_states) -> None:
    """Mark switch: slice k's ground defaults are in table(k), main holds none; unmarked lookups' table follows
    in the cleanup, only where the serving satellite changed. Rules: main, replaced at the boundary."""
    model, states = switch_states
    marked = model.cfg.slice_switch == "mark"
    changes = 0
    for k in range(1, model.n_slices):
        ops = D.transition(states[k - 1], states[k])
        ground = [o for o in ops if isinstance(o.obj, D.GroundDefault)]
        moved = {g for g, x in states[k].ground.items() if x.via != states[k - 1].ground[g].via}
        changes += len(moved)
        if marked:
            assert {x.table for x in states[k].ground.values()} == {D.table_id(k)}
            assert [o.obj for o in ground if o.phase == "prepare"] == list(states[k].ground.values())
            assert not [o for o in ground if o.phase == "switch"]
            assert {o.obj.ground for o in ground if o.phase == "cleanup"} == moved
            assert {o.obj.table for o in ground if o.phase == "cleanup"} <= {slicemark.GROUND_UNMARKED_TABLE}
        else:
            assert {o.phase for o in ground} <= {"switch"} and {o.obj.ground for o in ground} == moved
            assert {o.obj.table for o in ground} <= {D.RT_TABLE_MAIN}
    assert changes > 0  # the plan moves some ground node to another satellite


def test_ground_rules_keep_main_in_front_and_the_ipv6_rules_to_the_grc_space() -> None:
    rules = slicemark.ground_rules(D.table_id, D.N_TABLES, "fd00:6772:6300::/96")
    for family in (4, 6):
        mine = sorted(r for r in rules if r.family == family)
        assert all(r.ground and r.iif is None for r in mine)
        want = [(slicemark.slice_mark(t, D.N_TABLES), D.table_id(t)) for t in range(D.N_TABLES)]
        assert [(r.mark, r.table) for r in mine] == want + [(None, slicemark.GROUND_UNMARKED_TABLE)]
        if family == 4:  # a default: after main, never in front of its specific routes
            assert min(r.priority for r in mine) > 32766 and {r.dst for r in mine} == {None}
        else:  # before main (which may hold a ::/0, the BGP overlay's), but only to the GRC space
            assert max(r.priority for r in mine) < 32766 and {r.dst for r in mine} == {"fd00:6772:6300::/96"}
    assert {r.family for r in slicemark.ground_rules(D.table_id, D.N_TABLES, None)} == {4}


def test_fixed_links_are_named_by_direction(model) -> None:
    grid = [v for v in fixed_links(model) if v.kind == "isl"]
    assert len(grid) == len(model.grid_links)
    for v in grid:
        assert v.ifname_a in "nsew" and v.index_a == IDX_DIR["nsew".index(v.ifname_a)]
        assert v.group is None and v.retire is None
    kinds = {v.kind for v in fixed_links(model)}
    assert kinds == {"isl", "lan", "core", "inet"}


def test_every_interface_name_maps_back_to_its_direction(model, states) -> None:
    """The names the desired state gives and the names trace reads are one definition (emu.dataplane.ifnames)."""
    from emu.dataplane.ifnames import direction_of
    from emu.orbit.constellation import DIRECTIONS

    kind = {n.name: n.kind for n in model.nodes}
    seen = set()
    for v in fixed_links(model) + sorted(set().union(*(st.links for st in states))):
        for node, ifname, idx in ((v.node_a, v.ifname_a, v.index_a), (v.node_b, v.ifname_b, v.index_b)):
            got = direction_of(kind[node], ifname)
            if v.kind == "isl":
                assert got == DIRECTIONS[idx - 10]
            elif v.kind == "ground":
                assert got == ("Down" if kind[node] == "satellite" else "Up")
            elif v.kind == "shell":
                assert got in ("Up", "Down") and (got == "Up") == (node == v.node_a)
            elif v.kind == "lan":
                assert got == "lan"
            else:
                assert got == "terrestrial"
            seen.add(v.kind)
    assert {"isl", "ground", "lan", "core", "inet"} <= seen


def test_isl_ends_carry_the_semantic_addresses(model) -> None:
    from emu.orbit.constellation import N, S

    L = model.db.links(0)
    r = L[L["dir_a"] == N][0]
    a, b = int(r["a"]), int(r["b"])
    ea, eb = D.isl_ends(model, (a, b, N))
    assert (ea.sat, ea.index, eb.sat, eb.index) == (a, IDX_DIR[N], b, IDX_DIR[S])
    assert ea.ll == model.sat_ll(a, N) and ea.addr6 == model.sat_ipv6(a, N) == eb.peer_addr6
    assert eb.addr6 == model.sat_ipv6(b, S) == ea.peer_addr6


@pytest.mark.parametrize("mode", ["vxlan", "ipip"])
def test_tunnel_config_terminates_each_operators_terminals(model, mode) -> None:
    from dataclasses import replace

    m = Model.from_plan(model.db, "zz01", model.n_slices, replace(model.cfg, tunnel_mode=mode))
    full = tunnel_config(m)
    v4 = lambda xs: tuple(x for x in xs if getattr(x, "index", getattr(x, "oif", None)) != IDX_TUN6)  # noqa: E731
    cfg = TunnelConfig(*(v4(getattr(full, f)) for f in TunnelConfig.__dataclass_fields__))  # vx6: test_ipv6
    names = {u.name for u in m.uts} | {g.name for g in m.gss}
    assert {d.node for d in cfg.devices} == names and {d.ifname for d in cfg.devices} == {
        {"vxlan": "vx0", "ipip": "tun0"}[mode]}
    pairs = [(g, u) for g in m.gss for u in m.uts if g.operator == u.operator]
    if mode == "vxlan":
        assert all(d.vni == m.vni_of_operator(next(x for x in m.gss + m.uts if x.name == d.node).operator)
                   for d in cfg.devices)
        assert len(cfg.fdbs) == len(pairs) and not cfg.encap_routes
        assert {(r.node, r.dst) for r in cfg.routes} >= {(g.name, str(m.user_subnets[u.idx])) for g, u in pairs}
        assert {(r.node, r.dst) for r in cfg.routes} >= {(u.name, str(m.cfg.inet_prefix)) for u in m.uts}
    else:
        assert not cfg.fdbs and not cfg.neighs and not cfg.routes
        assert {(r.node, r.dst) for r in cfg.encap_routes} == {(g.name, str(m.user_subnets[u.idx])) for g, u in pairs}


def test_every_antenna_link_exists_and_gets_its_delay(model) -> None:
    """A ground station with several antennas: a link per (station, satellite) it links to, each delayed by
    its own slant range (kernels with netem). spec: docs/fidelity.md (antennas)."""
    import dataclasses

    from emu.dataplane.runconfig import RunConfig, scenario_of_plan

    m = Model.from_plan(model.db, "zz01", cfg=dataclasses.replace(
        RunConfig.from_scenario(scenario_of_plan(model.db)), netem=True))
    d = Desired(m)
    several = 0
    for k in (0, 9):
        st = d.state(k)
        gl = m.db.ground_links(k)
        ranges = m.db.link_ranges(k)
        want = {(g, int(s)) for g, row in enumerate(gl) for s in row if s >= 0}
        several += sum(1 for g in range(len(gl)) if (gl[g] >= 0).sum() > 1)
        assert set(m.ground_links_at(k)) == want
        for (g, s) in want:
            link = m.ground_links_at(k)[(g, s)]
            v = D.ground_veth(m, link)
            assert v in st.links
            us = int(round(ranges[(g, s)] / 299792.458 * 1e6))
            assert st.delays[(v.node_a, v.index_a)].delay_us == us
            assert st.delays[(v.node_b, v.index_b)].delay_us == us
    assert several > 0  # default.yaml's stations do track several satellites
