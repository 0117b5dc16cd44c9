"""The data-plane model (pure): link schedules, slots, next hops and addressing derived from a plan."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from emu.addressing import semantic
from emu.dataplane.model import (IDX_DIR, IDX_GROUND_SLOT, Model, _assign_slots, _intervals, link_local)
from emu.orbit.constellation import DOWN, N, OPPOSITE, S
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan

from .helpers import load_default


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "p.db"
    write_plan(make_plan(load_default(), n_slices=60), p)
    return Model.from_plan(PlanDB(p), "zz00")


def test_intervals_are_runs_of_one_serving_satellite() -> None:
    serving = np.array([[1, -1], [1, 2], [3, 2], [3, -1]])
    assert _intervals(serving) == [(0, 1, 0, 1), (0, 3, 2, 3), (1, 2, 1, 2)]


def test_intervals_of_several_antennas_overlap() -> None:
    # one ground station, two antennas: satellite 5 tracked for slices 0..2 while 7 comes and 8 replaces it
    serving = np.array([[[5, 7]], [[7, 5]], [[5, 8]], [[8, -1]]])
    assert _intervals(serving) == [(0, 5, 0, 2), (0, 7, 0, 1), (0, 8, 2, 3)]


def test_every_antenna_link_has_a_down_next_hop(model) -> None:
    multi = 0
    for k in range(model.n_slices):
        links = model.db.ground_links(k)
        for g, row in enumerate(links):
            sats = [int(s) for s in row if s >= 0]
            multi += len(sats) > 1
            for s in sats:
                gl = model.ground_links_at(k)[(g, s)]
                assert gl.first <= k <= gl.last
                assert model.nexthop_of(s, 4, k, g) == (100 + gl.sat_slot, model.ground_ll(g))
    assert multi > 0  # the default scenario's ground stations do use several antennas


def test_slots_never_overlap_in_time() -> None:
    items = [("a", 0, 5), ("a", 3, 9), ("a", 6, 8), ("a", 10, 12), ("b", 0, 12)]
    slots = _assign_slots(items, lambda x: x[0], lambda x: (x[1], x[2]))
    assert slots[0] != slots[1] and slots[1] != slots[2]
    assert slots[3] == 0 and slots[4] == 0  # free again / another owner


def test_ground_links_cover_every_attachment(model) -> None:
    for k in range(model.n_slices):
        serving = model.db.serving(k)
        at = model.ground_link_at(k)
        for g, s in enumerate(serving):
            if s >= 0:
                assert at[g].sat == s and at[g].first <= k <= at[g].last
            else:
                assert g not in at
    # a link is prepared one slice before it serves and retired one slice after its last use
    for gl in model.ground_links:
        assert gl.prepare == max(0, gl.first - 1) and gl.retire == gl.last + 2


def test_slots_unique_per_satellite_while_alive(model) -> None:
    for k in range(model.n_slices):
        alive = [gl for gl in model.ground_links if gl.prepare <= k < gl.retire]
        per_sat = [(gl.sat, gl.sat_slot) for gl in alive]
        per_gnd = [(gl.ground, gl.ground_slot) for gl in alive]
        assert len(per_sat) == len(set(per_sat)) and len(per_gnd) == len(set(per_gnd))


def test_next_hops_are_the_neighbours_link_locals(model) -> None:
    L = model.db.links(0)
    r = L[L["dir_a"] == N][0]
    a, b = int(r["a"]), int(r["b"])
    oif, via = model.nexthop_of(a, N, 0, None)
    assert oif == IDX_DIR[N] and via == model.sat_ll(b, S)
    # the link-local interface id is the satellite's semantic interface id (Figure 5)
    sem = ipaddress.IPv6Address(model.sat_ipv6(b, S))
    assert int(ipaddress.IPv6Address(via)) & ((1 << 64) - 1) == int(sem) & ((1 << 64) - 1)
    assert via == link_local(int(sem) & ((1 << 64) - 1))


def test_down_next_hop_is_the_ground_link(model) -> None:
    k = 0
    g, gl = next(iter(model.ground_link_at(k).items()))
    oif, via = model.nexthop_of(gl.sat, DOWN, k, g)
    assert oif == IDX_GROUND_SLOT + gl.sat_slot and via == model.ground_ll(g)
    other = next(s for s in range(len(model.satellites)) if s != gl.sat)
    assert model.nexthop_of(other, DOWN, k, g) is None


def test_semantic_addressing_matches_the_spec(model) -> None:
    idx, name, shell, plane, sat, owner = model.db.sat_rows[13]
    code = dict((i, c) for i, _n, c, _p in model.db.operators)[owner]
    assert model.sat_ipv6(13, 2) == semantic.ipv6_address(code, shell, plane, sat, 2, prefix="fd00:5a7::/64")
    assert model.sat_mac(13, 2) == semantic.mac_address(shell, plane, sat, 2, oui="02:00:5a")
    assert OPPOSITE[N] == S


def test_terrestrial_addresses_stay_outside_grc_space(model) -> None:
    grc_free = ipaddress.ip_network("0.0.0.0/4")
    for u in model.uts:
        assert model.user_subnets[u.idx].subnet_of(grc_free)
        assert ipaddress.ip_address(model.dev_addr(u.idx)) in model.user_subnets[u.idx]
    subnets = list(model.user_subnets.values())
    assert len(subnets) == len(set(subnets))
    for g in model.gss:
        a, b = model.gs_core_link(g.idx)
        assert ipaddress.ip_address(a) in grc_free and ipaddress.ip_address(b) in grc_free
