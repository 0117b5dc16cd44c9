"""BGP overlay started by `leo-emu up` on the default constellation (root, real namespaces and BIRD daemons).

spec: bgp-mobile-routing-atn §3 (c-ASBRs in the cores hold every active MNP,
s-ASBRs only the default route), §4 (at a GS change the MNP follows the
user). The run starts two slices before the plan's first GS -> GS change
and plays a few slices on an accelerated clock (3 s per slice).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from emu.control.bgp import wiring

from .test_dataplane import ROOT, leo

# GS changes need coverage gaps: the 6 x 8 scenario (topologies/sparse.yaml); default.yaml keeps every
# terminal on its nearest GS all orbit long.
DEFAULT = ROOT / "topologies" / "sparse.yaml"

pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="bird (Debian bird2) not installed")

SPEED = 5.0  # default.yaml: 15 s slices -> 3 s
N_PLAN = 60


def kernel_bird_routes(netns_name: str) -> dict[str, str | None]:
    """dst -> gateway of the BIRD routes in a namespace's main IPv6 table (netlink dump by `ip -j`)."""
    p = subprocess.run(["ip", "-n", netns_name, "-6", "-j", "route", "show", "proto", "bird"], capture_output=True,
                       text=True, timeout=30)
    return {r["dst"]: r.get("gateway") for r in json.loads(p.stdout or "[]")}


def bird_pids(run_dir: Path) -> dict[str, int]:
    """Router dir name -> pid of its running bird daemon (by its config path; ``bird -f``, never the
    short-lived ``bird -p`` config check that runs before every start)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"bird") and b"-c" in argv and b"-f" in argv and b"-p" not in argv:
            conf = argv[argv.index(b"-c") + 1].decode()
            if conf.startswith(str(run_dir)):
                out[Path(conf).parent.name] = int(d.name)
    return out


@pytest.fixture(scope="module")
def bgp_run(leo_env, tmp_path_factory):
    from emu.cli.plan_cmds import build_plan
    from emu.plan.db import PlanDB

    tmp = tmp_path_factory.mktemp("bgpup")
    sc = yaml.safe_load(DEFAULT.read_text())
    sc["bgp"] = {"enabled": True, "timers": "aggressive"}
    scen = tmp / "default-bgp.yaml"
    scen.write_text(yaml.safe_dump(sc))
    plan = tmp / "plan.db"
    build_plan(str(scen), plan, N_PLAN, fmt="json")
    db = PlanDB(plan)
    k_move = next(k for k in range(1, N_PLAN) for a, b in zip(db.gs_choice(k - 1)[:, 0], db.gs_choice(k)[:, 0])
                  if a >= 0 and b >= 0 and a != b)
    k0 = max(0, k_move - 2)
    res = leo(leo_env, "up", str(scen), "--plan", str(plan), "--speed", str(SPEED), "--start-slice", str(k0),
              "--slices", "5", "--detach", "--format", "json")
    run_id = json.loads(res.stdout)["run"]
    run_dir = Path(leo_env["LEOEMU_RUN_DIR"]) / run_id
    overlay = json.loads((run_dir / "bgp" / "overlay.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    yield {"env": leo_env, "id": run_id, "dir": run_dir, "overlay": overlay, "db": db, "k_move": k_move,
           "nodes": {n["name"]: n for n in run["nodes"]}}
    leo(leo_env, "down", "--run", run_id, check=False)


def expected(r: dict, k: int) -> dict[str, dict[str, str]]:
    """c-ASBR -> {MNP: next hop} for every UT with a GS in slice k (from the plan, not from the run)."""
    db, ov = r["db"], r["overlay"]
    gs_name = {g.idx: g.name for g in db.ground if g.kind == "gs"}
    uts = [g for g in db.ground if g.kind == "ut"]
    ch = db.gs_choice(k)
    out: dict[str, dict[str, str]] = {c: {} for c, x in ov["routers"].items() if x["role"] == "core"}
    for row, u in enumerate(uts):
        gs = int(ch[row, 0])
        if gs >= 0:
            for core, via in ov["expected_via"][gs_name[gs]].items():
                out[core][ov["mnps"][u.name]] = via
    return out


def slice_now(r: dict) -> int:
    return json.loads((r["dir"] / "status.json").read_text())["slice"]


def cores_match(r: dict, k: int) -> tuple[bool, dict]:
    ov = r["overlay"]
    got = {c: kernel_bird_routes(ov["routers"][c]["netns"]) for c in expected(r, k)}
    want = expected(r, k)
    ok = all(got[c].get(p) == v for c in want for p, v in want[c].items())
    # and no MNP of an inactive UT
    active = {p for c in want for p in want[c]}
    stray = {c: [p for p in got[c] if p.endswith("/56") and p not in active] for c in got}
    return ok and not any(stray.values()), {"got": got, "want": want, "stray": stray}


def wait_match(r: dict, timeout_s: float = 20.0, min_slice: int | None = None) -> int:
    """Poll until every c-ASBR's kernel table agrees with the slice in force (same slice before and after)."""
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        k = slice_now(r)
        if min_slice is None or k >= min_slice:
            ok, last = cores_match(r, k)
            if ok and slice_now(r) == k:
                return k
        time.sleep(0.1)
    raise AssertionError(f"c-ASBR kernel tables never matched the plan: {last}")


def test_every_core_fib_holds_each_active_mnp_via_its_gs(bgp_run):
    r = bgp_run
    assert r["overlay"]["established_s"] is not None
    wait_match(r)
    for c in expected(r, slice_now(r)):  # the MSP black hole of the core's own operator
        routes = subprocess.run(["ip", "-n", r["overlay"]["routers"][c]["netns"], "-6", "route", "show", "type",
                                 "unreachable"], capture_output=True, text=True).stdout
        assert r["overlay"]["msps"][c][0] in routes


def test_stubs_hold_only_the_default_route(bgp_run):
    r = bgp_run
    for name, x in r["overlay"]["routers"].items():
        if x["role"] != "stub":
            continue
        core = next(p for p in x["peerings"] if p["kind"] == "core")
        assert kernel_bird_routes(x["netns"]) == {"default": core["peer_addr"]}
        out = leo(r["env"], "exec", "--run", r["id"], name, "--", "birdc", "show", "route", "protocol",
                  core["peer"].replace("-", "_")).stdout
        learnt = [ln.split()[0] for ln in out.splitlines() if ln and not ln[0].isspace() and ":" in ln.split()[0]]
        assert learnt == ["::/0"], out


def test_birdc_through_exec_reaches_the_core(bgp_run):
    r = bgp_run
    p = leo(r["env"], "exec", "--run", r["id"], "sno-a", "--", "birdc", "show", "protocols")
    assert "gs_london" in p.stdout and "sno_b" in p.stdout and "Established" in p.stdout


def test_mnp_follows_the_gs_change(bgp_run):
    r = bgp_run
    k = wait_match(r, timeout_s=60.0, min_slice=r["k_move"])
    assert k >= r["k_move"]
    moves = [json.loads(x) for x in (r["dir"] / "bgp" / "moves.jsonl").read_text().splitlines()]
    assert any(m["slice"] == r["k_move"] and m["old"] and m["new"] for m in moves), moves


def vx_tx(netns_name: str) -> int:
    p = subprocess.run(["ip", "-n", netns_name, "-s", "-j", "link", "show", "dev", "vx0"], capture_output=True,
                       text=True, timeout=30)
    return json.loads(p.stdout)[0]["stats64"]["tx"]["packets"]


def test_probe_from_inet_follows_bgp_to_the_right_gs(bgp_run):
    """ping6 from the Internet to MNP::1 of every active UT: the reply comes back, and only the GS whose
    s-ASBR announces the MNP sends the probes into its tunnel; an inactive MNP is answered unreachable."""
    r = bgp_run
    if json.loads((r["dir"] / "status.json").read_text()).get("tunnel") != "vxlan":
        pytest.skip("IPv6 to the MNPs rides the UT's VXLAN tunnel (ipip carries IPv4 only)")
    ov, db = r["overlay"], r["db"]
    gss = {g.idx: g.name for g in db.ground if g.kind == "gs"}
    uts = [g for g in db.ground if g.kind == "ut"]
    inet = r["nodes"]["inet"]["netns"]
    for attempt in range(5):
        k = wait_match(r)
        ch = db.gs_choice(k)
        before = {g: vx_tx(r["nodes"][g]["netns"]) for g in gss.values()}
        results = {}
        for row, u in enumerate(uts):
            host = wiring.mnp_host(ov["mnps"][u.name])
            p = subprocess.run(["ip", "netns", "exec", inet, "ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2",
                                host], capture_output=True, text=True, timeout=30)
            results[u.name] = (int(ch[row, 0]), p.returncode, p.stdout)
        after = {g: vx_tx(r["nodes"][g]["netns"]) for g in gss.values()}
        if slice_now(r) != k:
            continue  # a boundary in between: measure again
        sent_by = {g: after[g] - before[g] for g in gss.values()}
        for name, (gs, rc, out) in results.items():
            if gs >= 0:
                assert rc == 0 and " 0% packet loss" in out, (name, out)
            else:
                assert "Destination unreachable" in out, (name, out)
        serving = {gss[gs] for gs, _rc, _o in results.values() if gs >= 0}
        assert all(sent_by[g] >= 3 for g in serving), sent_by
        assert all(sent_by[g] == 0 for g in gss.values() if g not in serving), sent_by
        return
    pytest.fail("a slice boundary fell into every attempt")


def test_inactive_mnp_is_unreachable_from_its_c_asbr(bgp_run):
    """An MNP no s-ASBR announces (here: the last /56 of each MSP, beyond every UT's) matches only its c-ASBR's
    `unreachable` MSP route: ICMPv6 no route from that c-ASBR, never a less specific route (spec §3)."""
    import ipaddress

    r = bgp_run
    inet = r["nodes"]["inet"]["netns"]
    for op, (msp,) in r["overlay"]["msps"].items():
        last = list(ipaddress.IPv6Network(msp).subnets(new_prefix=wiring.MNP_PLEN))[-1]
        assert str(last) not in r["overlay"]["mnps"].values()
        p = subprocess.run(["ip", "netns", "exec", inet, "ping", "-6", "-n", "-c", "1", "-W", "2",
                            wiring.mnp_host(str(last))], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "Destination unreachable: No route" in p.stdout, p.stdout
        # from the operator's own c-ASBR: one of its core namespace's addresses (its BGP peering end, or its
        # end of the data plane's IPv6 core <-> Internet link, whichever the Internet's ping left from)
        a = subprocess.run(["ip", "netns", "exec", r["nodes"][op]["netns"], "ip", "-j", "-6", "addr", "show"],
                           capture_output=True, text=True, timeout=30)
        mine = {x["local"] for link in json.loads(a.stdout) for x in link.get("addr_info", [])}
        assert wiring.inet_link_addrs(next(i for i, name in enumerate(r["overlay"]["msps"]) if name == op))[0] in mine
        sender = p.stdout.split("From ", 1)[1].split()[0]
        assert sender in mine, (op, sender, sorted(mine), p.stdout)


def test_overlay_numbering_matches_the_kernel(bgp_run):
    """The GS <-> core peering addresses are where wiring says (the data plane set them)."""
    r = bgp_run
    gss = [g for g in r["db"].ground if g.kind == "gs"]
    p = subprocess.run(["ip", "-n", r["nodes"][gss[0].name]["netns"], "-6", "-j", "addr"], capture_output=True,
                       text=True)
    assert wiring.gs_link_addrs(0)[1] in p.stdout


def test_killed_bird_is_restarted_and_its_routes_return(bgp_run):
    r = bgp_run
    wait_match(r, timeout_s=60.0)
    pid = bird_pids(r["dir"])["sno_a"]
    os.kill(pid, signal.SIGKILL)
    ns = r["overlay"]["routers"]["sno-a"]["netns"]
    end = time.monotonic() + 30
    while time.monotonic() < end:
        new = bird_pids(r["dir"]).get("sno_a")
        if new and new != pid:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("bird of sno-a was not restarted")
    wait_match(r, timeout_s=30.0)
    assert kernel_bird_routes(ns)
    assert f"pid {new} " in (r["dir"] / "journal").read_text()  # down finds the new daemon too


def test_down_leaves_no_bird(bgp_run):
    r = bgp_run
    assert bird_pids(r["dir"])
    leo(r["env"], "down", "--run", r["id"])
    time.sleep(0.5)
    assert bird_pids(r["dir"]) == {}
    assert not any(n["netns"] in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
                   for n in r["nodes"].values())


BROKEN_STUB = """
import sys
from emu.control.bgp import launch
_orig = launch.render_stub
launch.render_stub = lambda *a, **k: _orig(*a, **k) + "\\nprotocol bgp broken { this is not bird; }\\n"
from emu.cli.main import cli
sys.argv = ["leo-emu", *sys.argv[1:]]
cli()
"""


def test_bad_bird_config_is_a_clear_error_from_up_and_nothing_runs(leo_env, tmp_path):
    """A configuration BIRD refuses (here: an s-ASBR's, broken on purpose) stops `up` with one error line
    (exit 2) before any daemon starts; the run is torn down."""
    from emu.cli.plan_cmds import build_plan

    sc = yaml.safe_load(DEFAULT.read_text())
    sc["bgp"] = {"enabled": True, "c_asbrs": {"sno-a": 2}}  # also the extra c-ASBR's namespace goes
    scen = tmp_path / "bgp.yaml"
    scen.write_text(yaml.safe_dump(sc))
    plan = tmp_path / "plan.db"
    build_plan(str(scen), plan, 3, fmt="json")
    runs = Path(leo_env["LEOEMU_RUN_DIR"])
    before = set(runs.iterdir()) if runs.exists() else set()
    p = subprocess.run([os.sys.executable, "-c", BROKEN_STUB, "up", str(scen), "--plan", str(plan), "--slices", "3"],
                       env=leo_env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("leo-emu: error:")]
    assert len(err) == 1 and "bird refused it" in err[0] and "Traceback" not in p.stderr, p.stderr
    assert bird_pids(runs) == {}  # no BIRD of any run of this module's directory
    prefix = leo_env["LEOEMU_RUN_ID_PREFIX"]
    old = {d.name for d in before}
    ns = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
          if n.startswith(prefix) and n.split("-", 1)[0] not in old]
    assert ns == [], ns
