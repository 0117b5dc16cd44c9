"""The SNO control plane of a live run, derived from the plan (pure, no root).

spec: inter-sno-mobility §3.3 (inter-SNO users), §4.2 (a core per SNO, an agent per terminal), §5.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from emu.control.sno import live
from emu.control.sno.config import load_agent
from emu.control.sno.uplink import default_oifs
from emu.dataplane.model import Model
from emu.dataplane.slicestate import Desired
from emu.errors import InputError
from emu.plan.db import PlanDB, write_plan
from emu.plan.handover import events
from emu.plan.association import user_view
from emu.plan.planner import make_plan
from emu.scenario.model import MobilityCfg

from .helpers import load_default

N_SLICES = 120


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("l") / "p.db"
    write_plan(make_plan(load_default(), n_slices=N_SLICES), p)
    return Model.from_plan(PlanDB(p), "zz00")


@pytest.mark.parametrize("policy", ["owner", "dynamic"])
def test_serving_core_is_the_serving_satellites_association(model, policy) -> None:
    core = live.association(model, policy)
    sc = live.serving_cores(model, core)
    for k in range(0, N_SLICES, 7):
        for row, u in enumerate(model.uts):
            sat = int(model.serving[k, u.idx, 0])
            assert sc[k, row] == (-1 if sat < 0 else core[k, sat])


@pytest.mark.parametrize("policy", ["owner", "dynamic"])
def test_inter_sno_handovers_are_the_plans_inter_events(model, policy) -> None:
    core = live.association(model, policy)
    hs = live.inter_sno_handovers(model, core)
    ground = model.db.ground
    _c, uts, _h = user_view(model.serving[:, :, 0], [g.kind for g in ground], np.array([g.operator for g in ground]))
    assert len(hs) == int(events(uts, core)["inter"].sum())
    ops = {name: idx for idx, name, *_ in model.db.operators}
    sc = live.serving_cores(model, core)
    for h in hs:
        row = next(i for i, u in enumerate(model.uts) if u.name == h["ut"])
        assert sc[h["k"], row] == ops[h["to_core"]] != ops[h["from_core"]]
        home = model.uts[row].operator
        assert h["kind"] == ("leave_home" if ops[h["from_core"]] == home else
                             "return_home" if ops[h["to_core"]] == home else "visited_to_visited")


def test_default_scenario_has_inter_sno_handovers_in_its_first_slices(model) -> None:
    """What `experiment handover` relies on: the owner association of default.yaml moves users between cores."""
    assert live.inter_sno_handovers(model, live.association(model, "owner"))


def test_core_serving_uses_the_plans_gs_at_home_and_a_served_gs_of_the_visited_core(model) -> None:
    core = live.association(model, "owner")
    sc = live.serving_cores(model, core)
    d = Desired(model)
    seen_visit = False
    for k in range(N_SLICES):
        choice = d.choice(k)
        home_gs = {u.idx: int(choice[row, 0]) for row, u in enumerate(model.uts)}
        for ut, cs in live.core_serving(model, sc, k, home_gs).items():
            if cs.core < 0:
                assert cs.gs == -1 or sc[k, [u.idx for u in model.uts].index(ut)] >= 0
                continue
            g = model.db.ground[cs.gs]
            assert g.kind == "gs" and g.operator == cs.core
            if cs.visited:
                seen_visit = True
                assert int(model.serving[k, cs.gs, 0]) >= 0
            else:
                assert cs.gs == home_gs[ut]
    assert seen_visit


def test_unknown_policy_is_bad_input(model) -> None:
    with pytest.raises(InputError, match="--association"):
        live.association(model, "nearest")


def test_control_spec_one_core_per_operator_one_agent_per_terminal(model) -> None:
    spec = live.control_spec(model, MobilityCfg(procedure="proactive", latency_ms=30, notice_ms=200))
    assert [c.name for c in spec.cores] == [name for _i, name, *_ in model.db.operators]
    assert [u.name for u in spec.users] == [u.name for u in model.uts]
    assert spec.procedure == "proactive" and spec.latency_ms == 30 and spec.notice_ms == 200
    pools = [ipaddress.ip_network(c.tunnel_pool) for c in spec.cores]
    used = [ipaddress.ip_network("10.254.0.0/16"), ipaddress.ip_network("10.255.0.0/16")]
    assert ipaddress.ip_address(spec.anycast) not in used[1] and ipaddress.ip_address(spec.anycast) not in used[0]
    for p in pools:
        assert not any(p.overlaps(x) for x in used) and p.prefixlen == 24
    for c in spec.cores:
        gss = [g for g in model.gss if g.operator == c.index]
        assert sorted(c.access.values()) == sorted(model.gs_core_link(g.idx)[0] for g in gss)
        assert c.netns == model.ns(c.name) and c.public == model.core_public(c.index)
    for u, ut in zip(spec.users, model.uts):
        assert u.user == f"{ut.name}@{model.db.operators[ut.operator][1]}"
        assert u.prefix == str(model.user_subnets[ut.idx])


def _route_msg(table: int, oif: int) -> bytes:
    import socket
    import struct
    rta = struct.pack("=HHI", 8, 4, oif) + struct.pack("=HHI", 8, 15, table)
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, table, 0, 0, 1, 0) + rta
    return struct.pack("=IHHII", 16 + len(body), 24, 0, 0, 0) + body


def test_the_agent_can_watch_an_access_table() -> None:
    data = _route_msg(254, 3) + _route_msg(live.ACCESS_TABLE, 7)
    assert default_oifs(data) == [3]
    assert default_oifs(data, live.ACCESS_TABLE) == [7]


def test_agent_table_is_checked(tmp_path) -> None:
    import json
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"name": "ut1", "user": "ut1@a", "key": "00" * 32, "table": 900}))
    with pytest.raises(InputError, match="agent.table"):
        load_agent(p)


def _home_gs(model, k):
    choice = Desired(model).choice(k)
    return {u.idx: int(choice[row, 0]) for row, u in enumerate(model.uts)}


def test_avoid_gs_moves_users_to_another_served_gs_of_the_same_core(model) -> None:
    sc = live.serving_cores(model, live.association(model, "owner"))
    moved = unserved = 0
    for k in range(0, N_SLICES, 7):
        serve = live.core_serving(model, sc, k, _home_gs(model, k))
        for gs in {cs.gs for cs in serve.values() if cs.gs >= 0}:
            out = live.avoid_gs(model, k, serve, {gs})
            for ut, cs in out.items():
                before = serve[ut]
                if before.gs != gs:
                    assert cs == before  # users elsewhere are untouched
                elif cs.core < 0:
                    unserved += 1  # the core had no other GS in view
                    assert not [g for g in model.gss if g.operator == before.core and g.idx != gs
                                and int(model.serving[k, g.idx, 0]) >= 0]
                else:
                    moved += 1
                    assert cs.core == before.core and cs.gs != gs
                    assert model.db.ground[cs.gs].operator == before.core and int(model.serving[k, cs.gs, 0]) >= 0
    assert moved > 0
    assert live.avoid_gs(model, 0, {}, set()) == {}


def test_serve_by_is_any_core_through_one_of_its_gss(model) -> None:
    sc = live.serving_cores(model, live.association(model, "owner"))
    k = 20
    hg = _home_gs(model, k)
    for row, u in enumerate(model.uts):
        g = model.db.ground[u.idx]
        for op, *_ in model.db.operators:
            cs = live.serve_by(model, k, g, op, hg)
            if cs.core < 0:
                continue
            assert cs.core == op and model.db.ground[cs.gs].operator == op
            if op == g.operator and hg.get(u.idx, -1) >= 0:
                assert cs.gs == hg[u.idx]
    assert sc.shape[1] == len(model.uts)
