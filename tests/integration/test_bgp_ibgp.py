"""Several c-ASBRs of one operator in `leo-emu up` (scenario `bgp.c_asbrs`): iBGP carries every MNP between
them into each one's kernel FIB, and traffic from the Internet follows (spec: bgp-mobile-routing-atn §3).

topologies/sparse.yaml with `bgp.c_asbrs: {sno-a: 2}`: sno-a's first GS (gs-london) peers with the core
node sno-a, its second (gs-madrid) with the extra c-ASBR sno-a-c2; in slice 0 ut1 is at gs-london and ut3 at
gs-madrid, so each c-ASBR learns one MNP from its own s-ASBR and the other over iBGP.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from emu.control.bgp import wiring

from .test_dataplane import ROOT, leo

pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="bird (Debian bird2) not installed")


def bird_routes(netns_name: str) -> dict[str, str | None]:
    p = subprocess.run(["ip", "-n", netns_name, "-6", "-j", "route", "show", "proto", "bird"], capture_output=True,
                       text=True, timeout=30)
    return {r["dst"]: r.get("gateway") for r in json.loads(p.stdout or "[]")}


@pytest.fixture(scope="module")
def ibgp_run(leo_env, tmp_path_factory):
    from emu.cli.plan_cmds import build_plan
    from emu.plan.db import PlanDB

    tmp = tmp_path_factory.mktemp("ibgp")
    sc = yaml.safe_load((ROOT / "topologies" / "sparse.yaml").read_text())
    sc["bgp"] = {"enabled": True, "timers": "aggressive", "c_asbrs": {"sno-a": 2}}
    scen = tmp / "ibgp.yaml"
    scen.write_text(yaml.safe_dump(sc))
    plan = tmp / "plan.db"
    build_plan(str(scen), plan, 3, fmt="json")
    db = PlanDB(plan)
    gs = {g.idx: g.name for g in db.ground}
    at0 = {u.name: gs.get(int(c)) for u, c in zip([g for g in db.ground if g.kind == "ut"], db.gs_choice(0)[:, 0])}
    db.close()
    assert at0["ut1"] == "gs-london" and at0["ut3"] == "gs-madrid", at0  # what the test is written for
    res = leo(leo_env, "up", str(scen), "--plan", str(plan), "--speed", "0.5", "--slices", "2", "--detach",
              "--format", "json", timeout=600)
    run_id = json.loads(res.stdout)["run"]
    run_dir = Path(leo_env["LEOEMU_RUN_DIR"]) / run_id
    yield {"env": leo_env, "id": run_id, "dir": run_dir,
           "overlay": json.loads((run_dir / "bgp" / "overlay.json").read_text()),
           "run": json.loads((run_dir / "run.json").read_text())}
    leo(leo_env, "down", "--run", run_id, check=False)


def test_ibgp_sessions_and_roles(ibgp_run):
    ov = ibgp_run["overlay"]
    assert ov["established_s"] is not None
    kinds = {n: sorted((p["peer"], p["kind"]) for p in r["peerings"]) for n, r in ov["routers"].items()
             if r["role"] == "core"}
    assert kinds["sno-a"] == [("gs-london", "stub"), ("sno-a-c2", "ibgp"), ("sno-b", "ebgp")]
    assert kinds["sno-a-c2"] == [("gs-madrid", "stub"), ("sno-a", "ibgp")]
    assert ("sno-a-c2", "ibgp") not in kinds["sno-b"] and ov["routers"]["sno-a-c2"]["asn"] == ov["routers"]["sno-a"]["asn"]


def test_a_route_learnt_at_one_c_asbr_reaches_the_other_via_ibgp(ibgp_run):
    ov = ibgp_run["overlay"]
    ns = {n: r["netns"] for n, r in ov["routers"].items()}
    ut1, ut3 = ov["mnps"]["ut1"], ov["mnps"]["ut3"]
    a, c2, b = bird_routes(ns["sno-a"]), bird_routes(ns["sno-a-c2"]), bird_routes(ns["sno-b"])
    link = wiring.ibgp_link_addrs(0, 0, 1)  # sno-a (rank 0) <-> sno-a-c2 (rank 1): next hop self on iBGP
    assert a[ut3] == link[1] and c2[ut3] == wiring.gs_asbr_link_addrs(1)[1]  # ut3: learnt at sno-a-c2 from gs-madrid
    assert c2[ut1] == link[0] and a[ut1] == wiring.gs_link_addrs(0)[1]  # ut1: learnt at sno-a from gs-london
    assert b[ut3] == b[ut1] == wiring.core_link_addrs(0, 1)[0]  # the other operator: eBGP from sno-a only
    for mnp_, gs in ((ut1, "gs-london"), (ut3, "gs-madrid")):
        want = ov["expected_via"][gs]
        assert {c: bird_routes(ns[c]).get(mnp_) for c in want} == want


def test_traffic_from_the_internet_follows_ibgp_to_the_extra_c_asbr(ibgp_run):
    r = ibgp_run
    if json.loads((r["dir"] / "status.json").read_text()).get("tunnel") != "vxlan":
        pytest.skip("IPv6 to the MNPs rides the UT's VXLAN tunnel")
    inet = next(n["netns"] for n in r["run"]["nodes"] if n["name"] == "inet")
    c2 = r["overlay"]["routers"]["sno-a-c2"]["netns"]

    def fwd() -> int:
        p = subprocess.run(["ip", "-n", c2, "-s", "-j", "link", "show", "dev", "g1"], capture_output=True, text=True)
        return json.loads(p.stdout)[0]["stats64"]["tx"]["packets"]

    before = fwd()
    p = subprocess.run(["ip", "netns", "exec", inet, "ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2",
                        wiring.mnp_host(r["overlay"]["mnps"]["ut3"])], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout
    assert fwd() - before >= 3  # sno-a -> sno-a-c2 -> gs-madrid: the extra c-ASBR forwarded the echoes


def test_exec_reaches_the_extra_c_asbr_and_its_bird(ibgp_run):
    """`leo-emu exec sno-a-c2 -- birdc show route`: the extra c-ASBR is a node of the run only in the BGP
    overlay's record; exec finds its namespace and plain `birdc` its BIRD's socket."""
    r = ibgp_run
    p = leo(r["env"], "exec", "--run", r["id"], "sno-a-c2", "--", "birdc", "show", "route")
    assert p.returncode == 0, p.stderr
    assert r["overlay"]["mnps"]["ut3"] in p.stdout and r["overlay"]["mnps"]["ut1"] in p.stdout, p.stdout
    p = leo(r["env"], "exec", "--run", r["id"], "sno-a-c2", "--", "ip", "-6", "-br", "addr", "show", "dev", "g1")
    assert p.returncode == 0 and "g1" in p.stdout, p.stderr  # its own namespace (its link to gs-madrid)
    p = leo(r["env"], "exec", "--run", r["id"], "sno-a-c9", "--", "true", check=False)
    assert p.returncode == 2 and "sno-a-c9" in p.stderr and "Traceback" not in p.stderr


def test_down_removes_the_extra_c_asbr(ibgp_run):
    r = ibgp_run
    ns = r["overlay"]["routers"]["sno-a-c2"]["netns"]
    leo(r["env"], "down", "--run", r["id"])
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
