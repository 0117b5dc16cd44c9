"""``up --dry-run`` and ``graph``: the desired state listed and exported, without root and without a kernel."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from emu.cli.main import cli
from emu.dataplane import desired as D
from emu.dataplane.dryrun import describe
from emu.dataplane.graph import slice_graph, to_dot, to_graphml
from emu.dataplane.model import Model
from emu.dataplane.slicestate import Desired
from emu.dataplane.terrestrial import fixed_links
from emu.plan.db import PlanDB, write_plan
from emu.plan.trust import ground_control_key
from emu.plan.planner import make_plan

from .helpers import ROOT, load_default

DEFAULT = ROOT / "topologies" / "default.yaml"


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("g") / "p.db"
    write_plan(make_plan(load_default(), n_slices=6), p, key=ground_control_key())
    return p


@pytest.fixture(scope="module")
def model(plan_path):
    return Model.from_plan(PlanDB(plan_path), "RUN")


def test_describe_lists_what_the_desired_state_holds(model) -> None:
    rec = describe(model, 2)
    st = Desired(model, 2).state(2)
    assert len(rec["namespaces"]) == len(model.nodes) and rec["namespace_prefix"] == "RUN-"
    assert {n["netns"] for n in rec["namespaces"]} == {n.netns for n in model.nodes}
    assert len(rec["links"]["fixed"]) == len(fixed_links(model))
    assert len(rec["links"]["dynamic"]) == len(st.links)
    assert rec["satellite_tables"]["routes_total"] == sum(len(r) for r in st.routes.values())
    assert rec["satellite_tables"]["rules"] == [{"table": D.table_id(2), "priority": D.rule_pref(2), "families": [4]}]
    sw = rec["satellite_tables"]["switch"]  # the dry run shows what a kernel with nftables gets
    assert sw["by"] == "mark" and sw["mark"] == hex(st.mark) and len(sw["fixed_rules"]) == 13
    s0 = model.satellites[0].name
    assert rec["nodes"][s0]["tables"] == {str(D.table_id(2)): len(st.routes[0])}
    ends = [(v.node_a, v.ifname_a) for v in fixed_links(model) + sorted(st.links)]
    ends += [(v.node_b, v.ifname_b) for v in fixed_links(model) + sorted(st.links)]
    assert sorted(rec["nodes"][s0]["interfaces"]) == sorted(["lo"] + [i for n, i in ends if n == s0])
    assert {p["what"] for p in rec["processes"]} >= {"iperf3", "http"}
    for u in model.uts:
        assert rec["nodes"][u.name]["interfaces"].count("vx0") == 1  # the tunnel, named once
    json.dumps(rec)  # plain values only


def test_graph_of_a_slice_has_its_links(model) -> None:
    k = 3
    nodes, edges = slice_graph(model, k)
    assert {n["id"] for n in nodes} == {n.name for n in model.nodes}
    grid = [e for e in edges if e["kind"] == "isl"]
    assert len(grid) == len(model.active_grid(k))
    assert all(e["delay_ms"] > 0 for e in grid)
    ground = [e for e in edges if e["kind"] == "ground"]
    # one edge per ground link, every antenna's: each (ground node, satellite) pair the plan links in slice k
    gl = model.db.ground_links(k)
    assert len(ground) == len(model.ground_links_at(k)) == len({(g, int(s)) for g, row in enumerate(gl)
                                                                for s in row if s >= 0})
    assert len(ground) > len(model.ground_link_at(k))  # default.yaml's stations have several antennas
    for e in ground:
        assert e["ifname_a"].startswith("g") and e["ifname_b"].startswith("up")
    with pytest.raises(ValueError):
        slice_graph(model, model.n_slices)


def test_graphml_and_dot_are_well_formed(model) -> None:
    nodes, edges = slice_graph(model, 1)
    root = ET.fromstring(to_graphml(nodes, edges, 'a "quoted" <name>'))
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    assert len(root.findall(".//g:node", ns)) == len(nodes)
    assert len(root.findall(".//g:edge", ns)) == len(edges)
    nx = pytest.importorskip("networkx")
    import io

    g = nx.read_graphml(io.BytesIO(to_graphml(nodes, edges).encode()))
    assert g.number_of_nodes() == len(nodes)
    dot = to_dot(nodes, edges)
    assert dot.startswith('graph "slice" {') and dot.count(" -- ") == len(edges)


def test_cli_graph(plan_path, tmp_path) -> None:
    r = CliRunner().invoke(cli, ["graph", str(plan_path), "--slice", "2", "--format", "dot"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith('graph "default slice 2"')
    out = tmp_path / "g.graphml"
    r = CliRunner().invoke(cli, ["graph", str(plan_path), "--slice", "2", "-o", str(out)])
    assert r.exit_code == 0 and ET.parse(out).getroot().tag.endswith("graphml")
    r = CliRunner().invoke(cli, ["graph", str(plan_path), "--slice", "99"])
    assert r.exit_code == 2 and "--slice" in r.output


def test_cli_dry_run_creates_nothing_and_needs_no_root(plan_path, tmp_path, monkeypatch) -> None:
    import emu.dataplane.netns as netns_mod

    def boom(*a, **k):
        raise AssertionError("the dry run touched the kernel")

    for name in ("create_many", "create", "delete_many", "open_fd"):
        monkeypatch.setattr(netns_mod, name, boom)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("LEOEMU_RUN_DIR", str(tmp_path / "runs"))
    r = CliRunner().invoke(cli, ["up", str(DEFAULT), "--plan", str(plan_path), "--dry-run", "--start-slice", "1",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["dry_run"] and rec["start_slice"] == 1 and rec["namespace_counts"]["satellite"] == 12 * 10
    assert not (tmp_path / "runs").exists()  # no run record either
    r = CliRunner().invoke(cli, ["up", str(DEFAULT), "--plan", str(plan_path), "--dry-run"])
    assert r.exit_code == 0 and "nothing created" in r.output
    r = CliRunner().invoke(cli, ["up", str(DEFAULT), "--plan", str(plan_path), "--dry-run", "--start-slice", "50"])
    assert r.exit_code == 2 and "--start-slice" in r.output
