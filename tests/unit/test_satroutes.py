"""Satellites as destinations on the semantic structure: the address layout and, exhaustively on small
constellations, that forwarding from any satellite to any satellite's address ends there without a loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.addressing import grc as grcmod
from emu.addressing import satgrc
from emu.errors import AddressingError
from emu.orbit.constellation import E, N, S, W
from emu.plan import actions
from emu.plan.satroutes import satellite_routes
from emu.plan.verify import lookup_all

LEGAL_CODES = sorted(set(range(16)) - grcmod.FORBIDDEN_SHELL_CODES)


def test_address_layout_is_known() -> None:
    # shell code 1 | 127 | plane 7 (9 bits) | sat 13 (9 bits) | interface 0
    want = (1 << 28) | (127 << 21) | (7 << 12) | (13 << 3)
    assert satgrc.address(1, 7, 13) == want
    assert grcmod.to_ipv4(want) == "31.224.112.104"
    assert satgrc.parse(want) == (1, 7, 13, 0)
    assert satgrc.parse(satgrc.address(1, 7, 13, 5)) == (1, 7, 13, 5)
    assert satgrc.plane_prefix(np.array([want]))[0] == want & 0xFFFFF000


@given(st.sampled_from(LEGAL_CODES), st.integers(0, satgrc.INDEX_MAX), st.integers(0, satgrc.INDEX_MAX),
       st.integers(0, satgrc.INTERFACE_MAX))
def test_address_round_trips_and_stays_out_of_special_space(code, plane, sat, intf) -> None:
    a = satgrc.address(code, plane, sat, intf)
    assert satgrc.parse(a) == (code, plane, sat, intf)
    first = a >> 24
    assert first not in (0, 127) and first < 224  # never this-network, loopback, multicast or class E
    # the /20 holds exactly one plane, the /29 exactly one satellite
    assert a >> 12 == satgrc.address(code, plane, 0) >> 12 and a >> 3 == satgrc.address(code, plane, sat) >> 3


@given(st.floats(-89, 89), st.floats(-179, 179), st.integers(0, 6), st.sampled_from(LEGAL_CODES))
def test_no_ground_grc_is_a_satellite_address(lat, lon, level, code) -> None:
    g = grcmod.encode_latlon(lat, lon, level, code)
    assert not satgrc.is_satellite(np.array([g]))[0] and satgrc.parse(g) is None


@pytest.mark.parametrize("bad", [dict(shell_code=0), dict(shell_code=7), dict(plane=512), dict(sat=-1), dict(intf=6)])
def test_bad_indexes_are_refused(bad) -> None:
    args = dict(shell_code=1, plane=0, sat=0, intf=0) | bad
    with pytest.raises(AddressingError):
        satgrc.address(args["shell_code"], args["plane"], args["sat"], args["intf"])


def grid(planes: int, per_plane: int, cut: list[bool], delays: list[float]):
    """A planes x per_plane torus: N/S rings in every plane (always linked), E/W links where ``cut`` is False."""
    n = planes * per_plane
    sid = lambda p, s: (p % planes) * per_plane + s % per_plane  # noqa: E731
    nb = np.full((n, 6), -1)
    dl = np.full((n, 6), np.nan)
    a, b, d = [], [], []

    def link(x, dx, y, dy, w):
        nb[x, dx], nb[y, dy] = y, x
        dl[x, dx] = dl[y, dy] = w
        a.append(x), b.append(y), d.append(w)

    i = 0
    for p in range(planes):
        for s in range(per_plane):
            if per_plane > 2 or s == 0:
                link(sid(p, s), N, sid(p, s + 1), S, 1.0 + delays[i % len(delays)])
            i += 1
            if planes > 2 or p == 0:
                if not cut[i % len(cut)]:
                    link(sid(p, s), E, sid(p + 1, s), W, 1.0 + delays[(3 * i) % len(delays)])
    addr = satgrc.addresses(np.full(n, 2), np.repeat(np.arange(planes), per_plane), np.tile(np.arange(per_plane), planes))
    return nb, dl, np.array(a), np.array(b), np.array(d), addr


def walk_all(nb, tables, addr) -> np.ndarray:
    """For every (source, destination satellite), following every ECMP/UCMP branch
    (active-standby: the active one). delivered[s, t]: every branch from s ends with local delivery at t."""
    n = len(addr)
    A = lookup_all(tables, addr)
    memo = {}

    def ok(s, t, depth):
        if (s, t) in memo:
            return memo[(s, t)]
        if depth > n:
            return False  # a loop
        code = int(A[s, t])
        act = actions.decode(code) if code else None
        if act is None:
            res = False
        elif act.kind == actions.LOCAL:
            res = s == t
        else:
            hops = [e.direction for e in act.egress if act.kind != actions.STANDBY or e.attribute == 1]
            res = bool(hops) and all(nb[s, d] >= 0 and ok(int(nb[s, d]), t, depth + 1) for d in hops)
        memo[(s, t)] = res
        return res

    return np.array([[ok(s, t, 0) for t in range(n)] for s in range(n)])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.lists(st.booleans(), min_size=1, max_size=9),
       st.lists(st.floats(0, 0.5), min_size=1, max_size=7), st.sampled_from(["ecmp", "ucmp", "active-standby"]),
       st.booleans())
def test_every_satellite_reaches_every_satellite(planes, per_plane, cut, delays, policy, agg) -> None:
    nb, dl, a, b, d, addr = grid(planes, per_plane, cut, delays)
    sr = satellite_routes(nb, dl, a, b, d, addr, policy, 0.2, agg)
    good = walk_all(nb, sr.tables, addr)
    # connected pairs (the in-plane rings always are; other planes through the E/W links left)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(addr)
    comp = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)[1] \
        if len(a) else np.arange(n)
    connected = comp[:, None] == comp[None, :]
    assert (good == connected).all()
    assert (sr.routed == connected.sum(axis=1)).all()


def test_tables_stay_small_on_a_shell_sized_grid() -> None:
    """72 x 22 with every link up: per satellite, about one entry per /17 block of planes plus a handful
    along the own plane, instead of 1,584."""
    nb, dl, a, b, d, addr = grid(72, 22, [False], [0.0, 0.01, 0.02])
    sr = satellite_routes(nb, dl, a, b, d, addr, "ecmp", 0.0)
    sizes = np.diff(sr.tables.offsets)
    assert sizes.max() <= 60, sizes.max()
    assert (sr.routed == 72 * 22).all()
    own = sr.tables.of(0)
    local = [(p, l) for p, l, c in zip(*own) if actions.kind_of(np.array([c]))[0] == actions.LOCAL]
    assert local == [(int(addr[0]), satgrc.SAT_PLEN)]


def test_plan_verify_and_path_agree_on_satellite_addresses(tmp_path) -> None:
    """A planned Walker star (seam, polar-region links off): verify walks every satellite address, path
    follows the tables to the satellite."""
    from emu.cli.plan_cmds import build_plan
    from emu.plan.db import PlanDB
    from emu.plan.path import PathFinder
    from emu.plan.verify import verify

    from .helpers import ROOT

    out = tmp_path / "p.db"
    build_plan(str(ROOT / "topologies" / "polar.yaml"), out, 3, fmt="json")
    db = PlanDB(out)
    assert json.loads(db.meta["routing"])["satellite_destinations"]
    rep = verify(db)
    assert rep.ok, rep.failures[:5]
    n = len(db.sat_names)
    assert rep.pairs_checked + rep.disconnected == 3 * n * (n + len(db.ground))
    pf = PathFinder(db)
    for k in range(3):
        for src, dst in (("sat0-0-0", "sat0-7-13"), ("sat0-11-19", "sat0-0-3"), ("sat0-5-5", "sat0-5-15")):
            p = pf.path(src, dst, k)
            assert p["reachable"] and p["hops"][-1]["node"] == dst
            assert p["grc_dst"] == grcmod.to_ipv4(int(db.sat_addresses[db.sat_names.index(dst)]))
