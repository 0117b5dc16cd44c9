"""Partition of a plan over hosts (pure, no root): whole planes, balance, the cut, determinism (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from emu.dataplane import desired as D
from emu.dataplane.model import Model
from emu.dataplane.terrestrial import terrestrial_veths
from emu.multihost import underlay
from emu.multihost.partition import cut_at, cut_fixed, is_intra_plane, partition, summary
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan
from emu.plan.trust import ground_control_key

from .helpers import load_default

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("mh") / "p.db"
    write_plan(make_plan(load_default(), n_slices=12), p, key=ground_control_key())
    return p


@pytest.fixture(scope="module")
def model(plan_path):
    return Model.from_plan(PlanDB(plan_path), "zz02")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_whole_planes_balanced(model, n):
    p = partition(model, n)
    assert sorted(p.host_of) == sorted(x.name for x in model.nodes)
    plane_hosts: dict[tuple[int, int], set[int]] = {}
    for _i, name, sh, pl, _s, _o in model.db.sat_rows:
        plane_hosts.setdefault((sh, pl), set()).add(p.host_of[name])
    assert all(len(h) == 1 for h in plane_hosts.values())  # a plane never spans hosts
    load = p.load()
    assert sum(load) == len(model.nodes) and min(load) > 0
    # within one plane of the perfect share (12 planes x 10 sats + 15 ground nodes on this scenario)
    assert max(load) - min(load) <= 10, load
    for u in model.uts:
        assert p.host_of[u.name] == p.host_of[u.device]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_intra_plane_isls_never_cut(model, n):
    p = partition(model, n)
    sats = model.satellites
    cut = [(a, b) for a, b, _d in model.grid_links.tolist() if p.crosses(sats[a].name, sats[b].name)]
    assert cut, "12 planes over several hosts must cut some inter-plane ISLs"
    assert not any(is_intra_plane(model, a, b) for a, b in cut)
    # contiguous blocks on a ring of planes: each host boundary cuts one plane's worth of E/W links
    assert len(cut) == n * 10


def test_deterministic_and_json_matches(model, plan_path):
    a, b = partition(model, 3), partition(model, 3)
    assert a == b
    s = summary(model, a)
    assert [c["total"] for c in s["per_slice"]] == [cut_at(model, a, k)["total"] for k in range(model.n_slices)]
    p = subprocess.run([sys.executable, "-m", "emu.cli.main", "partition", str(plan_path), "--hosts", "3",
                        "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["load"] == a.load() and out["per_slice"] == s["per_slice"]


def test_cut_counts_links_in_use(model):
    p = partition(model, 2)
    k = 3
    sats = model.satellites
    want_isl = sum(1 for x, y, _d in model.active_grid(k) if p.crosses(sats[x].name, sats[y].name))
    want_gnd = sum(1 for (g, s) in model.ground_links_at(k) if p.crosses(model.db.ground[g].name, sats[s].name))
    terr = [v for v in terrestrial_veths(model) if p.crosses(v.node_a, v.node_b)]
    c = cut_at(model, p, k)
    assert (c["isl"], c["ground"], c["terrestrial"]) == (want_isl, want_gnd, len(terr))
    assert c["total"] == want_isl + want_gnd + len(terr)
    assert "lan" not in cut_fixed(model, p)
    assert cut_at(model, partition(model, 1), k)["total"] == 0


def test_bad_host_count_is_one_line(plan_path):
    p = subprocess.run([sys.executable, "-m", "emu.cli.main", "partition", str(plan_path), "--hosts", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip() == "leo-emu: error: --hosts: must be 1..64 (got 0)"


def test_vni_unique_per_link(model):
    p = partition(model, 3)
    vn = underlay.VniMap(model)
    fixed = [v for vs in cut_fixed(model, p).values() for v in vs]
    dyn = [D.ground_veth(model, gl) for gl in model.ground_links] + [D.shell_veth(model, s) for s in model.shell_links]
    vnis = [vn.of(v) for v in fixed + dyn]
    assert len(set(vnis)) == len(vnis)
    assert all(0 < x < 1 << 24 for x in vnis)
    assert underlay.VniMap(model).of(fixed[0]) == vnis[0]  # the same on every host


def test_underlay_addresses():
    assert underlay.host_addr(0) == "198.18.0.1" and underlay.host_addr(3) == "198.18.0.4"
    assert Counter(underlay.host_addr(h) for h in range(64)).most_common(1)[0][1] == 1


def test_sizing_bounds():
    from emu.multihost.sizing import hosts_needed

    # 1,000 sats x 2 ms = 2 s of work per slice; half of a 15 s slice at 10x speed is 0.75 s -> 3 hosts
    r = hosts_needed(1000, 0, build_ms_per_ns=1, slice_work_ms_per_sat=2, kernel_kb_per_ns=500, agent_mb=500,
                     slice_s=15, speed=10)
    assert r["by"]["slice_work"] == 3 and r["hosts"] == 3
    # build: 1,000 namespaces x 600 ms in a 300 s budget -> 2 hosts
    assert hosts_needed(1000, 0, build_ms_per_ns=600, slice_work_ms_per_sat=0, kernel_kb_per_ns=0,
                        agent_mb=0)["by"]["build"] == 2
    # memory: 10,000 x 1 MiB over (0.5 x 2 GiB - 24 MiB = 1,000 MiB) -> 10 hosts; one more namespace -> 11
    assert hosts_needed(10000, 0, build_ms_per_ns=0, slice_work_ms_per_sat=0, kernel_kb_per_ns=1024, agent_mb=24,
                        host_mem_gb=2)["hosts"] == 10
    assert hosts_needed(10001, 0, build_ms_per_ns=0, slice_work_ms_per_sat=0, kernel_kb_per_ns=1024, agent_mb=24,
                        host_mem_gb=2)["hosts"] == 11
    with pytest.raises(ValueError):
        hosts_needed(1, 0, build_ms_per_ns=0, slice_work_ms_per_sat=0, kernel_kb_per_ns=0, agent_mb=0, speed=0)


def test_vxlan_half_keeps_the_veth_end(model):
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    p = partition(model, 2)
    v = next(v for v in cut_fixed(model, p)["isl"])
    vni = underlay.VniMap(model).of(v)
    a, b = underlay.half(v, "a", p.host_of, vni), underlay.half(v, "b", p.host_of, vni)
    assert (a.node, a.ifname, a.index, a.mac, a.mtu) == (v.node_a, v.ifname_a, v.index_a, v.mac_a, v.mtu)
    assert (b.node, b.ifname, b.index, b.mac) == (v.node_b, v.ifname_b, v.index_b, v.mac_b)
    assert (a.local, a.remote) == (b.remote, b.local) == (underlay.host_addr(p.host_of[v.node_a]),
                                                          underlay.host_addr(p.host_of[v.node_b]))
    g = D.ground_veth(model, model.ground_links[0])
    gh = underlay.half(g, "b", {**p.host_of, g.node_a: 0, g.node_b: 1}, 7)
    assert gh.group == g.group and gh.ifname == g.ifname_b
    from emu.dataplane.netlink import NetlinkBatch

    batch = NetlinkBatch.unbound()
    underlay.queue_vxlan(batch, gh, 42)
    (data,) = batch.messages()
    msg = ifinfmsg(data)
    msg.decode()
    assert msg["index"] == g.index_b and msg.get_attr("IFLA_NET_NS_FD") == 42 and msg.get_attr("IFLA_GROUP") == g.group
    data = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert data.get_attr("IFLA_VXLAN_ID") == 7 and data.get_attr("IFLA_VXLAN_GROUP") == underlay.host_addr(0)
    assert data.get_attr("IFLA_VXLAN_LOCAL") == underlay.host_addr(1)
