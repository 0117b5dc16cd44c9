"""The cores' NAT as pure values: what the Internet node may route to, and each core's nftables batch.

spec: grc-based-routing §Data Forwarding Process step 5 (the PoP performs NAT);
inter-sno-mobility §5.1 (a visitor's traffic leaves by its home core).
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from emu.dataplane import ifnames
from emu.dataplane.build import core_links, masquerade_ruleset
from emu.dataplane.model import Model
from emu.dataplane.terrestrial import terrestrial_addrs, terrestrial_routes
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan

from .helpers import load_default


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("nat") / "p.db"
    write_plan(make_plan(load_default(), n_slices=2), p)
    return Model.from_plan(PlanDB(p), "zz01")


def _inet_dsts(m: Model) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(r.dst) for r in terrestrial_routes(m) if r.node == m.cfg.inet_name]


def test_the_internet_knows_only_the_cores_public_addresses(model):
    assert model.cfg.nat
    pools = [ipaddress.ip_network(p) for *_x, p in model.db.operators]
    assert _inet_dsts(model) == []  # no route of its own: only its connected links to the cores
    inet_addrs = [ipaddress.ip_interface(f"{a.addr}/{a.plen}") for a in terrestrial_addrs(model)
                  if a.node == model.cfg.inet_name]
    reach = [a.network for a in inet_addrs]
    for idx, *_ in model.db.operators:
        assert any(ipaddress.ip_address(model.core_public(idx)) in n for n in reach)
    for pool in pools:  # no user address is reachable from the Internet without the cores' NAT
        assert not any(n.overlaps(pool) for n in reach)


def test_without_nft_nat_the_internet_routes_the_pools_back(model):
    m = dataclasses.replace(model, cfg=dataclasses.replace(model.cfg, nat=False))
    pools = [ipaddress.ip_network(p) for *_x, p in model.db.operators]
    pools += [ipaddress.ip_network(p) for p in model.cfg.pools6]
    assert sorted(_inet_dsts(m), key=str) == sorted(pools, key=str)


def test_each_core_masquerades_only_its_own_pool():
    rules = masquerade_ruleset("1.2.0.0/16")
    assert 'oifname "inet" ip saddr 1.2.0.0/16 masquerade' in rules
    assert rules.count("masquerade") == 1 and "type nat hook postrouting" in rules
    both = masquerade_ruleset("1.2.0.0/16", "fd75:7365:7201::/48")
    assert 'oifname "inet" ip6 saddr fd75:7365:7201::/48 masquerade' in both and both.count("masquerade") == 2


def test_without_a_flowtable_the_ruleset_has_no_fast_path():
    assert "flowtable" not in masquerade_ruleset("1.2.0.0/16", "fd75:7365:7201::/48")
    assert "flow add" not in masquerade_ruleset("1.2.0.0/16", "fd75:7365:7201::/48", flowtable_devices=())


def test_the_fast_path_carries_exactly_the_translated_flows():
    rules = masquerade_ruleset("1.2.0.0/16", "fd75:7365:7201::/48", flowtable_devices=("g0", "g3", "inet"))
    assert rules.count('devices = { "g0", "g3", "inet" }') == 2  # one flowtable per family's table
    assert 'oifname "inet" ip saddr 1.2.0.0/16 meta l4proto { tcp, udp } flow add @ft' in rules
    assert 'oifname "inet" ip6 saddr fd75:7365:7201::/48 meta l4proto { tcp, udp } flow add @ft' in rules
    assert rules.count("type filter hook forward priority 0") == 2 and rules.count("masquerade") == 2
    # The bench's plain chain gets the same text on its own link name.
    assert 'oifname "r" ip saddr 10.99.0.0/30 masquerade' in masquerade_ruleset("10.99.0.0/30", oifname="r")


def test_a_cores_fast_path_spans_its_own_links(model):
    for idx, core, _c, _p in model.db.operators:
        links = core_links(model, core)
        gss = [i for i, g in enumerate(model.gss) if g.operator == idx]
        assert links == [ifnames.core_gs(i) for i in gss] + [ifnames.CORE_INET]
