"""IPv6 GRC forwarding and IPv6 user traffic, the pure parts (no root).

spec: grc-based-routing §GRC encoding (the 128-bit form of the same
regions), §Segmented Longest Match, §Data Forwarding Process ("an IPv4/IPv6
packet"). The one rule IPv4 GRC prefix -> IPv6 GRC prefix
(``grc.prefix6_of``); every satellite table's IPv6 twin agrees with the
plan's reference lookup; the ground side's IPv6 values; scenario validation
of the IPv6 spaces; the IPv6 trace filter and classifier.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
import sys

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.addressing import grc
from emu.dataplane import desired as D
from emu.dataplane import capture, trace
from emu.dataplane.model import IDX_TUN6, TUNNEL6_GS_LL, Model
from emu.dataplane.slicestate import Desired
from emu.dataplane.terrestrial import terrestrial_routes, tunnel_config
from emu.errors import AddressingError
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan

from .helpers import load_default, scenario_dict
from .test_tools import _run_bpf

N_SLICES = 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("v6") / "p.db"
    write_plan(make_plan(load_default(), n_slices=N_SLICES), p)
    return Model.from_plan(PlanDB(p), "zz06")


# ---------------------------------------------------------------------------- the one rule
def test_prefix6_of_known_answers_and_segmented_lengths() -> None:
    assert grc.prefix6_of(0x11B00000, 14) == (int(ipaddress.IPv6Address("fd00:6772:6300::11b0:0")), 110)
    assert [grc.prefix6_of(0x10000000, p)[1] for p in grc.LEGAL_PREFIX_LENGTHS] == [107, 110, 113, 116, 119,
                                                                                    122, 125, 128]
    base = grc.ipv6_base("2001:db8:1::/96")
    assert grc.prefix6_of(0x11B00000, 14, base) == grc.prefix6_of(0x11B00000, 14, "2001:db8:1::/96")
    with pytest.raises(AddressingError):
        grc.prefix6_of(0x11B00001, 14)  # host bits


@settings(max_examples=200, deadline=None)
@given(addr=st.integers(0, 2**32 - 1), plen=st.sampled_from(grc.LEGAL_PREFIX_LENGTHS))
def test_ipv6_form_of_a_region_holds_exactly_the_ipv6_forms_of_its_addresses(addr, plen) -> None:
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    net6 = ipaddress.IPv6Network(grc.prefix6_of(addr & mask, plen))
    assert ipaddress.IPv6Address(grc.to_ipv6(addr)) in net6
    assert ipaddress.IPv6Address(grc.to_ipv6(addr ^ (1 << (32 - plen)))) not in net6  # last bit of the prefix


@pytest.mark.parametrize("prefix", ["fe80::/96", "ff02::/96", "::/96", "::ffff:0:0/96", "fec0::/96"])
def test_special_ipv6_space_is_refused_as_grc_prefix(prefix) -> None:
    with pytest.raises(AddressingError, match="ipv6_prefix"):
        grc.ipv6_base(prefix)


# ---------------------------------------------------------------------------- satellites: both families
def _lookup6(table6: dict, addr6: int):
    """A segmented longest match over IPv6 keys: lengths 128, 125, ..., 107 (the GRC lengths + 96)."""
    for plen in sorted({k[1] for k in table6}, reverse=True):
        assert plen - 96 in grc.LEGAL_PREFIX_LENGTHS
        net = addr6 & ~((1 << (128 - plen)) - 1)
        vals = [v for (p, pl, _m), v in table6.items() if (p, pl) == (net, plen)]
        if vals:
            return vals
    return None


def test_every_satellite_table_has_an_ipv6_twin_that_routes_alike(model) -> None:
    d = Desired(model)
    rng = random.Random(6)
    for k in (0, 7):
        st_ = d.state(k)
        dsts = [g.grc for g in model.db.ground] + rng.sample(range(0x10000000, 0xD0000000), 20)
        for s in rng.sample(range(len(model.satellites)), 12):
            v4, v6 = st_.routes[s], D.routes6(st_.routes[s], d.base6)
            assert len(v6) == len(v4) and set(v6.values()) == set(v4.values())
            for (p, plen, metric), val in v4.items():
                assert v6[(*grc.prefix6_of(p, plen), metric)] == val  # same type, same link-local next hops
            for dst in dsts:
                best = max((pl for (p, pl, _m) in v4 if (dst >> (32 - pl) << (32 - pl)) == p), default=None)
                want = [v for (p, pl, _m), v in v4.items() if pl == best and (dst >> (32 - pl) << (32 - pl)) == p]
                assert _lookup6(v6, int(ipaddress.IPv6Address(grc.to_ipv6(dst)))) == (want or None)


def test_grc_bindings_have_their_ipv6_form(model) -> None:
    d = Desired(model)
    st_ = d.state(3)
    for s, addrs in list(st_.grc_addrs.items())[:10]:
        for a in addrs:
            assert D.grc_twin6(a, d.base6) == grc.to_ipv6(int(ipaddress.IPv4Address(a)))


# ---------------------------------------------------------------------------- the ground side
def test_ground_side_ipv6_follows_the_plans_choices(model) -> None:
    d = Desired(model)
    v6 = model.cfg.grc_ipv6_prefix
    for k in (0, 5, 11):
        st_ = d.state(k)
        assert all(g.dst6 == v6 for g in st_.ground.values())
        choice = model.db.gs_choice(k)
        for row, u in enumerate(model.uts):
            gs = int(choice[row, 0])
            c = st_.cores[u.idx]
            assert c.subnet6 == str(model.user_subnets6[u.idx])
            if gs >= 0:
                assert c.gateway6 == model.gs_core_link6(gs)[0]
                assert st_.tunnels[u.idx].remote6 == grc.to_ipv6(model.db.ground[gs].grc, v6)


def test_ipv6_user_pools_lans_and_the_vx6_tunnels(model) -> None:
    ops = {idx: ipaddress.IPv6Network(model.cfg.pools6[idx]) for idx, *_ in model.db.operators}
    subs = list(model.user_subnets6.values())
    assert len(set(subs)) == len(model.uts)
    for u in model.uts:
        sub = model.user_subnets6[u.idx]
        assert sub.prefixlen == 64 and sub.subnet_of(ops[u.operator])
        assert sub.network_address != ops[u.operator].network_address  # the first /64 is the operator's
        assert ipaddress.IPv6Address(model.dev_addr6(u.idx)) in sub
    cfg = tunnel_config(model)
    vx6 = [x for x in cfg.devices if x.index == IDX_TUN6]
    assert {x.node for x in vx6} == {u.name for u in model.uts} | {g.name for g in model.gss}
    assert all(x.kind == "vxlan" and ":" in x.local for x in vx6)  # VXLAN over the IPv6 GRCs
    pairs = [(g, u) for g in model.gss for u in model.uts if g.operator == u.operator]
    fdb6 = {(f.node, f.remote) for f in cfg.fdbs if f.index == IDX_TUN6}
    assert fdb6 == {(g.name, grc.to_ipv6(u.grc, model.cfg.grc_ipv6_prefix)) for g, u in pairs}
    r6 = {(r.node, r.dst, r.gateway) for r in cfg.routes if r.oif == IDX_TUN6}
    assert {(u.name, str(model.cfg.inet_prefix6), TUNNEL6_GS_LL) for u in model.uts} <= r6
    assert {(g.name, str(model.user_subnets6[u.idx]), model.ut_tunnel6_ll(u.idx)) for g, u in pairs} <= r6
    routes = {(r.node, r.dst) for r in terrestrial_routes(model)}
    inet6 = {(model.cfg.inet_name, model.cfg.pools6[idx]) for idx, *_ in model.db.operators}
    assert not inet6 & routes if model.cfg.nat else inet6 <= routes  # NAT66 at the cores (emu.dataplane.build)
    assert {(u.device, "::/0") for u in model.uts} <= routes


# ---------------------------------------------------------------------------- scenario validation
@pytest.mark.parametrize("edit, words", [
    (lambda d: d.setdefault("grc", {}).update(ipv6_prefix="fe80::/96"), ["grc.ipv6_prefix", "link-local"]),
    (lambda d: d.setdefault("grc", {}).update(ipv6_prefix="fd00:5a7::/96"), ["overlaps", "semantic_prefix"]),
    (lambda d: d["operators"][0].update(user_pool6="fd00::/60"), ["operators.0.user_pool6", "/56"]),
    (lambda d: d["operators"][0].update(user_pool6="ff00::/48"), ["operators.0.user_pool6", "multicast"]),
    (lambda d: d["operators"][1].update(user_pool6=d["operators"][0].get("user_pool6", "fd75:7365:7201::/48")),
     ["user_pool6", "overlaps"]),
    (lambda d: d["operators"][0].update(user_pool6="fd74:6572:7200::/48"), ["operators.0.user_pool6", "reserved"]),
    (lambda d: d.setdefault("internet", {}).update(prefix6="nonsense"), ["internet.prefix6", "nonsense"]),
])
def test_bad_ipv6_spaces_are_refused_by_validate(tmp_path, edit, words) -> None:
    d = scenario_dict()
    if len(d["operators"]) < 2:
        d["operators"].append(dict(d["operators"][0], name="opb", owner_code=d["operators"][0]["owner_code"] + 1,
                                   user_pool="10.9.0.0/16", owns=[]))
    edit(d)
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    p = subprocess.run([sys.executable, "-m", "emu.cli.main", "validate", str(f)], capture_output=True, text=True)
    assert p.returncode == 2, p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], lines[0]


# ---------------------------------------------------------------------------- trace: the IPv6 probe
def test_ipv6_trace_filter_and_classifier() -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    tok = b"leo-emu-trace 0123456789abcdef"
    req = Ether() / IPv6(src="fd75:7365:7201:1::2", dst="fd69:6e65:7400::1") / ICMPv6EchoRequest(id=77) / Raw(tok)
    tun = (Ether() / IPv6(src=grc.to_ipv6(0x11FB4660), dst=grc.to_ipv6(0x1195DA48)) / UDP(dport=4789)
           / VXLAN(vni=1000) / req)
    rep = Ether() / IPv6() / ICMPv6EchoReply(id=77) / Raw(tok)
    err = Ether() / IPv6() / ICMPv6DestUnreach(code=3) / bytes(req[IPv6])
    prog = capture.bpf_program6()
    assert [_run_bpf(prog, bytes(p)) > 0 for p in (req, tun, rep, err)] == [True] * 4
    assert [_run_bpf(prog, bytes(p)) for p in (Ether() / IP() / UDP(dport=4789), Ether() / IPv6() / TCP(),
                                                 Ether() / IPv6() / UDP(dport=53))] == [0, 0, 0]
    assert trace.classify(bytes(req), tok, 77)[:2] == ("request", False)
    assert trace.classify(bytes(tun), tok, 77)[:2] == ("request", True)
    assert trace.classify(bytes(rep), tok, 77)[0] == "reply"
    assert trace.classify(bytes(err), tok, 77)[0] == "error"
    assert trace.classify(bytes(req), tok, 78) is None
