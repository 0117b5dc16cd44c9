"""The BGP overlay of a run, derived from the plan (pure, no root): numbering, peerings, MNP moves.

spec: bgp-mobile-routing-atn §2 (MNPs from MSPs), §3 (c-ASBRs, s-ASBRs, core of cores), §4 (make-before-break).
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from emu.control.bgp import wiring as W
from emu.control.bgp.birdc import with_socket
from emu.dataplane.model import Model
from emu.dataplane.runconfig import RunConfig, scenario_of_plan
from emu.dataplane.terrestrial import bgp_addrs, bgp_core_veths, terrestrial_addrs
from emu.errors import ScenarioError
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan
from emu.scenario.load import load_scenario, parse_scenario

from .helpers import ROOT

N_SLICES = 40


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    p = tmp_path_factory.mktemp("b") / "p.db"
    # GS changes need coverage gaps: the 6 x 8 scenario (default.yaml keeps every UT on its nearest GS)
    write_plan(make_plan(load_scenario(ROOT / "topologies" / "sparse.yaml"), n_slices=N_SLICES), p)
    return PlanDB(p)


@pytest.fixture(scope="module")
def model(db):
    cfg = dataclasses.replace(RunConfig.from_scenario(scenario_of_plan(db)), bgp=True)
    return Model.from_plan(db, "zz00", None, cfg)


def test_msp_and_mnp_numbering_known_answers() -> None:
    assert W.msp("fd4c:454f::/32", 1) == "fd4c:454f:100::/40"
    assert W.msp("fd4c:454f::/32", 255) == "fd4c:454f:ff00::/40"
    assert W.mnp("fd4c:454f:100::/40", 0) == "fd4c:454f:100::/56"
    assert W.mnp("fd4c:454f:100::/40", 1) == "fd4c:454f:100:100::/56"
    assert W.mnp("fd4c:454f:100::/40", 65535) == "fd4c:454f:1ff:ff00::/56"
    with pytest.raises(ScenarioError):
        W.mnp("fd4c:454f:100::/40", 65536)
    with pytest.raises(ScenarioError):
        W.msp("fd4c:454f::/48", 1)


def test_peering_addresses_known_answers_and_distinct() -> None:
    assert W.gs_link_addrs(0) == ("fd6c:6565::1", "fd6c:6565::2")
    assert W.gs_link_addrs(3) == ("fd6c:6565:0:3::1", "fd6c:6565:0:3::2")
    assert W.core_link_addrs(0, 1) == ("fd6c:6565:1:1::1", "fd6c:6565:1:1::2")
    assert W.core_link_addrs(1, 2) == ("fd6c:6565:1:102::1", "fd6c:6565:1:102::2")
    nets = {ipaddress.IPv6Interface(a + "/64").network for i in range(300) for a in W.gs_link_addrs(i)}
    nets |= {ipaddress.IPv6Interface(a + "/64").network for p in W.core_pairs(16) for a in W.core_link_addrs(*p)}
    assert len(nets) == 300 + len(W.core_pairs(16))
    with pytest.raises(ValueError):
        W.core_link_addrs(1, 1)


def test_scenario_key_is_strict_and_off_by_default() -> None:
    from .helpers import scenario_dict

    assert parse_scenario(scenario_dict()).bgp.enabled is False
    sc = parse_scenario(scenario_dict(bgp={"enabled": True, "timers": "default"}))
    assert (sc.bgp.enabled, sc.bgp.timers) == (True, "default")
    for bad in ({"enabled": True, "timer": "default"}, {"timers": "fast"}, {"msp_base": "fd00::/48"},
                {"msp_base": "10.0.0.0/8"}):
        with pytest.raises(Exception) as e:
            parse_scenario(scenario_dict(bgp=bad))
        assert "bgp" in str(e.value)


def test_overlay_of_the_default_plan(model) -> None:
    ov = W.overlay(model, model.db.gs_choice(0))
    net = ov.network
    assert sorted(r.name for r in net.cores()) == ["sno-a", "sno-b"]
    assert sorted(r.name for r in net.stubs()) == sorted(g.name for g in model.gss)
    assert len({r.asn for r in net.stubs()}) == len(model.gss)
    a = net.routers["sno-a"]
    assert {p.name: p.kind for p in a.peerings} == {"gs-london": "stub", "gs-madrid": "stub", "sno-b": "ebgp"}
    # one MNP per UT, inside its operator's MSP, all distinct
    assert len(set(ov.mnps.values())) == len(model.uts)
    for u in model.uts:
        op = model.db.operators[u.operator][1]
        assert ipaddress.IPv6Network(ov.mnps[u.idx]).subnet_of(ipaddress.IPv6Network(net.operators[op].msps[0]))
    # expected next hops: own core via the GS's link address, the other core via the core-of-cores link
    via = W.expected_via(net, "gs-madrid")
    assert via == {"sno-a": W.gs_link_addrs(1)[1], "sno-b": W.core_link_addrs(0, 1)[0]}


def test_desired_state_carries_the_overlay_links_only_when_on(model, db) -> None:
    off = Model.from_plan(db, "zz00", None, dataclasses.replace(model.cfg, bgp=False))
    assert bgp_addrs(off) == [] and bgp_core_veths(off) == []
    veths = bgp_core_veths(model)
    assert [(v.node_a, v.ifname_a, v.node_b, v.ifname_b) for v in veths] == [("sno-a", "p1", "sno-b", "p0")]
    addrs = {(a.node, a.addr) for a in terrestrial_addrs(model)}
    for i, g in enumerate(model.gss):
        assert (g.name, W.gs_link_addrs(i)[1]) in addrs
    assert ("sno-b", W.core_link_addrs(0, 1)[1]) in addrs
    assert set(terrestrial_addrs(off)) < set(terrestrial_addrs(model))


def test_stub_mnps_follow_the_plans_gs_choice(model) -> None:
    mnps = W.ut_mnps(model)
    names = {g.idx: g.name for g in model.gss}
    n_moves = 0
    prev = None
    for k in range(model.n_slices):
        ch = model.db.gs_choice(k)
        cur = W.stub_mnps(model, ch, mnps)
        for row, u in enumerate(model.uts):
            gs = int(ch[row, 0])
            holders = [s for s, v in cur.items() if mnps[u.idx] in v]
            assert holders == ([names[gs]] if gs >= 0 else [])
        if prev is not None:
            n_moves += sum(1 for _p, old, new in W.moves(prev, cur) if old and new)
        prev = cur
    assert n_moves > 0  # the default plan moves users between GSs within 40 slices


def test_announcements_are_make_before_break() -> None:
    cur = {"g1": ("m1", "m2"), "g2": (), "g3": ("m3",)}
    nxt = {"g1": ("m2",), "g2": ("m1",), "g3": ()}
    steps = W.announcement_steps(cur, nxt)
    assert steps == [("g2", ("m1",)), ("g1", ("m2",)), ("g3", ())]
    assert W.moves(cur, nxt) == [("m1", "g1", "g2"), ("m3", "g3", None)]
    assert W.announcement_steps(cur, cur) == [] and W.moves(cur, cur) == []


def test_birdc_gets_the_routers_socket() -> None:
    assert with_socket(["birdc", "show", "route"], "/r/x.ctl") == ["birdc", "-s", "/r/x.ctl", "show", "route"]
    assert with_socket(["birdc", "-s", "/o", "show"], "/r/x.ctl") == ["birdc", "-s", "/o", "show"]
    assert with_socket(["ping", "-c1", "x"], "/r/x.ctl") == ["ping", "-c1", "x"]
    assert with_socket(["birdc", "show"], None) == ["birdc", "show"]


def test_monitor_lines_and_convergence_known_answers() -> None:
    from datetime import datetime

    from emu.control.bgp import convergence as C

    text = ("[2026-11-30T13:35:17.760371] fd4c::/56 via fd6c::2 dev g0 proto bird metric 32 pref medium\n"
            "[2026-11-30T13:35:17.800000] unreachable fd4c::/40 dev lo proto bird metric 32 pref medium\n"
            "[2026-11-30T13:35:18.000000] Deleted fd4c::/56 via fd6c::2 dev g0 proto bird metric 32\n"
            "[2026-11-30T13:35:18.250000] fd4c::/56 via fd6c:0:0:1::2 dev g1 proto bird metric 32\n"
            "garbage\n")
    ev = C.parse_monitor(text)
    t0 = datetime.fromisoformat("2026-11-30T13:35:17.760371").timestamp()
    assert [(round(e.t - t0, 6), e.dst, e.via, e.deleted) for e in ev] == [
        (0.0, "fd4c::/56", "fd6c::2", False), (0.039629, "fd4c::/40", None, False),
        (0.239629, "fd4c::/56", "fd6c::2", True), (0.489629, "fd4c::/56", "fd6c:0:0:1::2", False)]
    move = {"mnp": "fd4c::/56", "called_at": t0 + 0.1}
    other = [C.RouteEvent(t0 - 5, "fd4c::/56", "fd6c:9::1", False)]
    res = C.move_convergence(move, {"a": ev, "b": other}, {"a": "fd6c:0:0:1::2", "b": "fd6c:9::1"})
    assert res["per_core"] == {"a": pytest.approx(0.389629), "b": "unchanged"}
    assert res["s"] == pytest.approx(0.389629)
    assert C.move_convergence(move, {"a": ev}, {"a": "fd6c::7"})["s"] is None  # never via the new GS
    assert C.move_convergence(move, {"a": ev}, {"a": "fd6c:0:0:1::2"}, until=t0 + 0.3)["s"] is None
    assert C.summary([0.1, 0.2, 0.3]) == {"n": 3, "median_ms": 200.0, "p90_ms": 300.0, "max_ms": 300.0}


def test_probe_interruption_known_answers() -> None:
    from emu.control.bgp import convergence as C

    text = "\n".join(f"[{100 + 0.02 * s:.6f}] 64 bytes from fd4c::1: icmp_seq={s} ttl=60 time=0.3 ms"
                     for s in range(1, 200) if not 60 <= s < 70)
    text += "\n[101.0] From fd6c::1 icmp_seq=3 Destination unreachable: No route\n"
    r = C.parse_ping_replies(text)
    assert len(r) == 189 and r[0] == (pytest.approx(100.02), 1)
    res = C.interruption(r, 101.3, 0.5, 0.5, 0.02)
    assert res == {"gap_ms": pytest.approx(200.0, abs=0.2), "lost": 10}
    assert C.interruption(r, 103.9, 0.5, 0.5, 0.02) is None  # no reply after the window
    assert C.interruption(r, 102.5, 0.5, 0.5, 0.02) == {"gap_ms": 0.0, "lost": 0}


def test_several_c_asbrs_sessions_links_and_next_hops(db) -> None:
    """bgp.c_asbrs: sno-a with 2 (full mesh iBGP), then 5 (a reflector: the core node); GSs split by rank."""
    assert W.ibgp_pairs(1) == [] and W.ibgp_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    assert W.ibgp_pairs(4) == [(0, 1), (0, 2), (0, 3)]
    assert W.ibgp_link_addrs(0, 0, 1) == ("fd6c:6565:3:1::1", "fd6c:6565:3:1::2")
    assert W.ibgp_link_addrs(2, 1, 3) == ("fd6c:6565:3:213::1", "fd6c:6565:3:213::2")
    assert W.gs_asbr_link_addrs(1) == ("fd6c:6565:4:1::1", "fd6c:6565:4:1::2")
    cfg = RunConfig.from_scenario(scenario_of_plan(db))
    m2 = Model.from_plan(db, "zz00", None, dataclasses.replace(cfg, bgp=True, bgp_c_asbrs=(("sno-a", 2),)))
    net = W.overlay(m2, db.gs_choice(0)).network
    assert sorted(r.name for r in net.cores()) == ["sno-a", "sno-a-c2", "sno-b"]
    c2 = net.routers["sno-a-c2"]
    assert c2.asn == net.routers["sno-a"].asn and c2.router_id == "1.0.1.1"
    assert {p.name: p.kind for p in c2.peerings} == {"gs-madrid": "stub", "sno-a": "ibgp"}  # the 2nd GS of sno-a
    assert W.expected_via(net, "gs-madrid") == {"sno-a": "fd6c:6565:3:1::2", "sno-a-c2": "fd6c:6565:4:1::2",
                                                "sno-b": W.core_link_addrs(0, 1)[0]}
    pl = W.plumbing(m2)
    assert pl.namespaces == ("zz00-sno-a-c2",) and pl.default_via == (("zz00-sno-a-c2", "fd6c:6565:3:1::1"),)
    assert [(v.a_ns, v.a_if, v.b_ns, v.b_if) for v in pl.veths] == [
        ("zz00-sno-a", "ib1", "zz00-sno-a-c2", "ib0"), ("zz00-sno-a-c2", "g1", m2.by_name["gs-madrid"].netns, "bgpc")]
    m5 = Model.from_plan(db, "zz00", None, dataclasses.replace(cfg, bgp=True, bgp_c_asbrs=(("sno-a", 5),)))
    net5 = W.overlay(m5, db.gs_choice(0)).network
    assert {p.name for p in net5.routers["sno-a-c3"].peerings} == {"sno-a"}  # a client: the reflector only
    assert sum(p.rr_client for p in net5.routers["sno-a"].peerings) == 4
    assert W.plumbing(model_one := Model.from_plan(db, "zz00", None, dataclasses.replace(cfg, bgp=True))) == \
        W.Plumbing((), (), ()), model_one


def test_c_asbrs_key_is_validated() -> None:
    from .helpers import scenario_dict

    d = scenario_dict(bgp={"enabled": True})
    op = d["operators"][0]["name"]
    assert parse_scenario(scenario_dict(bgp={"enabled": True, "c_asbrs": {op: 3}})).bgp.c_asbrs == {op: 3}
    for bad, what in (({"nope": 2}, "unknown operator"), ({op: 0}, "greater than or equal"), ({op: 9}, "less than")):
        with pytest.raises(Exception) as e:
            parse_scenario(scenario_dict(bgp={"enabled": True, "c_asbrs": bad}))
        assert "bgp.c_asbrs" in str(e.value) and what in str(e.value)
