"""IPv6 user traffic follows registration and an inter-SNO handover in the live emulator (real packets).

spec: inter-sno-mobility §5.1 (the user keeps its address; user -> visited core -> tunnel -> home core ->
destination and back), §5.2 / Figure 5 (proactive); grc §Data Forwarding Process ("an IPv4/IPv6 packet").

topologies/sparse.yaml with a `mobility` block, brought up a slice before the plan's first inter-SNO handover
away from home (computed from the plan, not assumed): a `ping -6` from the handing-over user's device runs
across the boundary; after it the user's IPv6 prefix is routed by its home core into the inter-core tunnel,
toward the link-local twin of the care-of address its agent registered, and `leo-emu ping DEV inet -6` works
with the packets counted in the tunnel. Before this, the cores re-anchored IPv4 only and the data plane's
slice-k0 IPv6 route kept every user's IPv6 prefix at its first ground station.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from emu.control.sno import kernel, launch

from .test_dataplane import in_ns, leo

ROOT = Path(__file__).resolve().parents[2]
SPEED = 2.0  # 7.5 s slices: the boundary falls well inside the probe
SLICES = 26


def _first_leave_home(plan: Path) -> dict:
    from emu.control.sno import live
    from emu.dataplane.model import Model
    from emu.plan.db import PlanDB

    db = PlanDB(plan)
    try:
        m = Model.from_plan(db, "probe", SLICES)
        hs = live.inter_sno_handovers(m, live.association(m, "owner"))
    finally:
        db.close()
    return next(h for h in hs if h["kind"] == "leave_home" and not h["after_outage"] and h["k"] >= 1)


@pytest.fixture(scope="module")
def v6run(leo_env, tmp_path_factory):
    from emu.cli.plan_cmds import build_plan

    tmp = tmp_path_factory.mktemp("sno6")
    sc = yaml.safe_load((ROOT / "topologies" / "sparse.yaml").read_text())
    sc["mobility"] = {"procedure": "proactive", "latency_ms": 10}
    sc.setdefault("routing", {})["association"] = "owner"
    scen = tmp / "mob6.yaml"
    scen.write_text(yaml.safe_dump(sc))
    plan = tmp / "plan.db"
    build_plan(str(scen), plan, SLICES, fmt="json")
    h = _first_leave_home(plan)
    res = leo(leo_env, "up", str(scen), "--plan", str(plan), "--start-slice", str(h["k"] - 1), "--slices", "5",
              "--speed", str(SPEED), "--detach", "--format", "json", timeout=600)
    run = json.loads(res.stdout)["run"]
    rundir = Path(leo_env["LEOEMU_RUN_DIR"]) / run
    try:
        info = json.loads((rundir / "sno" / "control.json").read_text())
        nodes = {n["name"]: n for n in json.loads((rundir / "run.json").read_text())["nodes"]}
        yield {"env": leo_env, "run": run, "dir": rundir, "h": h, "info": info, "nodes": nodes}
    finally:
        leo(leo_env, "down", "--run", run, check=False)


def _slice(r) -> int:
    return json.loads((r["dir"] / "status.json").read_text()).get("slice", -1)


def _agent(r, ut: str) -> dict:
    return launch.try_admin(r["info"]["agents"][ut]["admin"], {"op": "status"}) or {}


def _route6(ns: str, dst: str) -> dict:
    p = subprocess.run(["ip", "-n", ns, "-6", "-j", "route", "get", dst], capture_output=True, text=True, timeout=10)
    return (json.loads(p.stdout or "[]") or [{}])[0]


def _tunnel_counts(ns: str) -> dict[str, tuple[int, int]]:
    p = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", "type", "vxlan"], capture_output=True,
                       text=True, timeout=10)
    return {x["ifname"]: (x["stats64"]["rx"]["packets"], x["stats64"]["tx"]["packets"])
            for x in json.loads(p.stdout or "[]") if x["ifname"].startswith("sno")}


def _dev_addr6(ns: str) -> list[str]:
    p = in_ns(ns, "ip", "-j", "-6", "addr", "show", "scope", "global")
    return [a["local"] for link in json.loads(p.stdout or "[]") for a in link.get("addr_info", []) if "local" in a]


def test_ipv6_follows_an_inter_sno_handover(v6run) -> None:
    r, h = v6run, v6run["h"]
    ut, home, visited = h["ut"], h["from_core"], h["to_core"]
    dev = r["nodes"][f"dev{ut[2:]}"]
    home_ns, visited_ns = r["nodes"][home]["netns"], r["nodes"][visited]["netns"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _agent(r, ut).get("registered_at"):
        time.sleep(0.2)
    st = _agent(r, ut)
    assert st.get("registered_at") == home, st  # at home before the boundary
    prefix6 = ipaddress.ip_network(st["prefix6"])
    before = _dev_addr6(dev["netns"])
    assert dev["addr6"] in before and ipaddress.ip_address(dev["addr6"]) in prefix6
    assert _slice(r) == h["k"] - 1, "the run should still be in the slice before the handover"
    # a ping -6 across the boundary (timestamps: -D)
    ping = subprocess.Popen(["ip", "netns", "exec", dev["netns"], "ping", "-6", "-n", "-D", "-i", "0.02",
                             "-W", "1", "-w", str(int(2 * 15 / SPEED) + 4), r["nodes"]["inet"]["addr6"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = ping.communicate(timeout=120)[0]
    rec = [json.loads(x) for x in (r["dir"] / "mobility.jsonl").read_text().splitlines()]
    switch = next(x for x in rec if x.get("k") == h["k"] and x.get("ut") == ut and "at" in x)
    assert switch["core"] == visited and switch["from_core"] == home
    replies = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
    after = [t for t in replies if t > switch["at"]]
    assert [t for t in replies if t < switch["at"]], out[-500:]
    assert len(after) >= 20, f"IPv6 replies after the handover: {len(after)}\n{out[-800:]}"
    gap_ms = max(b - a for a, b in zip(replies, replies[1:])) * 1e3
    # registered at the visited core with the same addresses; the home core routes the IPv6 prefix into the
    # tunnel toward the care-of address's link-local twin, the visited core to its ground station
    st = _agent(r, ut)
    assert st["registered_at"] == visited and st["coa"] and st["prefix6"] == str(prefix6), st
    assert _dev_addr6(dev["netns"]) == before
    at_home = _route6(home_ns, dev["addr6"])
    assert at_home.get("dev", "").startswith("sno") and at_home.get("gateway") == kernel.ll6(st["coa"]), at_home
    assert not _route6(visited_ns, dev["addr6"]).get("dev", "").startswith("sno")
    # and the CLI's ping -6 goes through that tunnel both ways
    t0 = _tunnel_counts(visited_ns)
    p = leo(r["env"], "ping", "--run", r["run"], dev["name"], "inet", "-6", "--format", "json", timeout=60)
    d = json.loads(p.stdout)
    assert d["family"] == 6 and d["loss_pct"] == 0 and d["received"] >= 3, d
    t1 = _tunnel_counts(visited_ns)
    moved = {k: (t1[k][0] - t0.get(k, (0, 0))[0], t1[k][1] - t0.get(k, (0, 0))[1]) for k in t1}
    assert any(rx >= d["received"] and tx >= d["received"] for rx, tx in moved.values()), (moved, gap_ms)
