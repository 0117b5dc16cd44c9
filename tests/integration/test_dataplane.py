"""The live constellation, real packets: the default scenario built in namespaces.

Root only. Every run uses a private run directory (LEOEMU_RUN_DIR) and a
unique run-id prefix, and is torn down (and swept) whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from emu.addressing import semantic
from emu.dataplane import netns
from emu.dataplane.prober import ping_series

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"


def leo(env, *args, check=True, timeout=180, **kw):
    p = subprocess.run([sys.executable, "-m", "emu.cli.main", *args], env=env, capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"leo-emu {' '.join(args)} failed ({p.returncode}): {p.stderr}\n{p.stdout}")
    return p


def in_ns(name, *argv, timeout=60):
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=timeout)


def host_state() -> dict:
    out = {}
    for key, argv in {"link": ["ip", "-j", "link"], "addr": ["ip", "-j", "addr"],
                      "route": ["ip", "-j", "route", "show", "table", "all"],
                      "route6": ["ip", "-j", "-6", "route", "show", "table", "all"], "rule": ["ip", "-j", "rule"]}.items():
        data = json.loads(subprocess.run(argv, capture_output=True, text=True).stdout or "[]")
        for item in data if isinstance(data, list) else []:
            for volatile in ("stats", "stats64", "valid_life_time", "preferred_life_time", "expires"):
                item.pop(volatile, None)
            for a in item.get("addr_info", []):
                a.pop("valid_life_time", None)
                a.pop("preferred_life_time", None)
        out[key] = data
    return out


@pytest.fixture(scope="module")
def env(leo_env):
    return leo_env


def sweep(prefix: str) -> None:
    from emu.dataplane.cleanup import processes_in

    names = netns.list_names(prefix)
    for pid in processes_in(names):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    netns.delete_many(names)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    p = tmp_path_factory.mktemp("plan") / "default.db"
    from emu.cli.plan_cmds import build_plan

    build_plan(str(DEFAULT), p, 130, fmt="json")
    return p


@pytest.fixture(scope="module")
def live(env, plan):
    """The default scenario, up at normal speed (slice 0 stays for 15 s: long enough for these checks)."""
    before = host_state()
    res = leo(env, "up", str(DEFAULT), "--plan", str(plan), "--detach", "--format", "json")
    info = json.loads(res.stdout)
    run_dir = Path(env["LEOEMU_RUN_DIR"]) / info["run"]
    run = json.loads((run_dir / "run.json").read_text())
    yield {"run": info["run"], "nodes": {n["name"]: n for n in run["nodes"]}, "dir": run_dir, "host_before": before}
    leo(env, "down", "--run", info["run"])


def ns(live, node):
    return live["nodes"][node]["netns"]


def test_dev1_reaches_inet_by_ping(live):
    r = ping_series(ns(live, "dev1"), "12.0.0.1", 20, 0.02)
    assert r.received == 20, r.lost_seqs()


def test_dev1_reaches_inet_by_iperf3(live):
    p = in_ns(ns(live, "dev1"), "iperf3", "-c", "12.0.0.1", "-t", "2", "-J")
    d = json.loads(p.stdout)
    bps = d["end"]["sum_received"]["bits_per_second"]
    assert bps > 50e6, bps  # the ground links are shaped to 500 Mbit/s


def test_unassigned_grc_gets_icmp_unreachable(live):
    # 208.1.2.3 has shell code 13: no satellite table has a prefix for it
    p = in_ns(ns(live, "ut1"), "ping", "-c", "1", "-W", "2", "208.1.2.3")
    assert re.search(r"Destination (Net|Host) Unreachable", p.stdout), p.stdout + p.stderr


def test_ttl_decrements_per_satellite(live):
    gs = live["nodes"]["gs-london"]["grc"]
    p = in_ns(ns(live, "ut1"), "ping", "-c", "1", "-W", "2", "-t", "1", gs)
    assert "Time to live exceeded" in p.stdout, p.stdout + p.stderr


def test_ping6_between_neighbouring_satellites(live):
    # sat0-0-0's North neighbour is sat0-0-1; its interface facing back (South) has the semantic address
    # owner 1 (sno-a owns even planes), shell 0, orbit 0, sat 1, interface 1 (S)
    addr = semantic.ipv6_address(1, 0, 0, 1, 1, prefix="fd00:5a7::/64")
    p = in_ns(ns(live, "sat0-0-0"), "ping", "-6", "-c", "2", "-W", "2", addr)
    assert " 0% packet loss" in p.stdout, p.stdout + p.stderr


def test_macs_are_semantic(live):
    p = in_ns(ns(live, "sat0-3-5"), "ip", "-j", "link")
    links = {item["ifname"]: item["address"] for item in json.loads(p.stdout)}
    for d, name in enumerate(["n", "s", "e", "w"]):
        assert links[name] == semantic.mac_address(0, 3, 5, d, oui="02:00:5a")


def test_grc_addresses_are_bound_and_local(live, plan):
    from emu.addressing.grc import to_ipv4
    from emu.plan.db import PlanDB

    db = PlanDB(plan)
    st = json.loads((live["dir"] / "status.json").read_text())
    k = st["slice"]
    sat = db.sat_names.index("sat0-1-1")
    mine = int(db.bound_grc(k)[sat])
    p = in_ns(ns(live, "sat0-1-1"), "ip", "-j", "addr")
    addrs = {a["local"] for item in json.loads(p.stdout) for a in item.get("addr_info", [])}
    assert {to_ipv4(mine | d) for d in range(6)} <= addrs


def test_status_json(live, env):
    d = json.loads(leo(env, "status", "--format", "json").stdout)
    assert d["state"] == "running" and d["slice"] is not None
    kinds = {n["kind"] for n in d["nodes"]}
    assert kinds == {"satellite", "gs", "ut", "dev", "core", "inet"}


def test_status_kernel_reads_the_namespaces_back(live, env):
    d = json.loads(leo(env, "status", "--kernel", "--format", "json").stdout)
    k = d["kernel"]
    assert k["namespaces"] == len(d["nodes"]) and k["namespaces_missing"] == 0
    n_sats = sum(1 for n in d["nodes"] if n["kind"] == "satellite")
    assert k["links_up"] > 2 * n_sats                  # lo + at least two ISL ends each
    assert k["rules"] >= n_sats and k["ipv4_routes"] > n_sats


def test_exec_runs_in_the_node(live, env):
    p = leo(env, "exec", "dev1", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert live["nodes"]["dev1"]["addr"] in p.stdout


def test_host_untouched_while_running(live):
    assert host_state() == live["host_before"]


def test_altered_plan_is_refused(env, plan, tmp_path):
    bad = tmp_path / "bad.db"
    shutil.copy(plan, bad)
    con = sqlite3.connect(bad)
    (blob,) = con.execute("SELECT tables FROM slices WHERE k = 0").fetchone()
    raw = bytearray(zlib.decompress(blob))
    raw[-1] ^= 1
    con.execute("UPDATE slices SET tables = ? WHERE k = 0", (zlib.compress(bytes(raw)),))
    con.commit()
    con.close()
    before = set(netns.list_names(env["LEOEMU_RUN_ID_PREFIX"]))
    p = leo(env, "up", str(DEFAULT), "--plan", str(bad), "--detach", check=False)
    assert p.returncode != 0 and "refused" in p.stderr
    assert set(netns.list_names(env["LEOEMU_RUN_ID_PREFIX"])) == before
    assert len(list(Path(env["LEOEMU_RUN_DIR"]).iterdir())) == 1  # only the live run: no record left behind


def test_bad_scenario_builds_nothing(env, tmp_path):
    bad = tmp_path / "bad.yaml"
    import re

    text, n = re.subn(r"altitude_km: \d+", "altitude_km: 55000", DEFAULT.read_text())
    assert n == 1
    bad.write_text(text)
    before = set(netns.list_names(env["LEOEMU_RUN_ID_PREFIX"]))
    p = leo(env, "up", str(bad), check=False)
    assert p.returncode == 2 and "shells.0.altitude_km" in p.stderr
    assert set(netns.list_names(env["LEOEMU_RUN_ID_PREFIX"])) == before


def test_trace_equals_the_plans_path(live, env):
    d = json.loads(leo(env, "trace", "dev1", "inet", "--format", "json").stdout)
    assert d["reply_received"], d
    assert d["matches_plan"], (d["observed"], d["planned"])
    sats = [h for h in d["observed"] if h["node"].startswith("sat")]
    assert sats and all(h["direction"] for h in sats)


def test_ping_and_iperf_commands(live, env):
    p = json.loads(leo(env, "ping", "dev1", "inet", "-c", "3", "-i", "0.2", "--format", "json").stdout)
    assert p["received"] == 3 and p["dst_addr"] == "12.0.0.1"
    i = json.loads(leo(env, "iperf", "dev1", "inet", "--time", "1", "--format", "json").stdout)
    assert i["bits_per_second"] > 50e6


def test_plan_of_another_scenario_is_refused(env, plan):
    before = set(netns.list_names(env["LEOEMU_RUN_ID_PREFIX"]))
    p = leo(env, "up", str(ROOT / "topologies" / "polar.yaml"), "--plan", str(plan), "--detach", check=False)
    assert p.returncode == 2 and "--plan" in p.stderr and "different scenario" in p.stderr
    assert set(netns.list_names(env["LEOEMU_RUN_ID_PREFIX"])) == before


def test_dry_run_lists_what_up_created(live, env, plan):
    """``up --dry-run`` and ``up`` come from one desired state: every interface and table it lists for the
    current slice is in the kernel (the controller may have prepared the next slice's new links: those may be
    extra). Retried if a slice boundary falls in the middle of the comparison."""
    def slice_now():
        return json.loads((live["dir"] / "status.json").read_text())["slice"]

    for _attempt in range(3):
        k = slice_now()
        rec = json.loads(leo(env, "up", str(DEFAULT), "--plan", str(plan), "--dry-run", "--start-slice", str(k),
                             "--format", "json").stdout)
        assert set(rec["nodes"]) == set(live["nodes"])
        seen = {}
        for name in rec["nodes"]:
            seen[name] = {item["ifname"] for item in json.loads(in_ns(ns(live, name), "ip", "-j", "link").stdout)}
        table = rec["satellite_tables"]["table"]
        routes = {name: len(json.loads(in_ns(ns(live, name), "ip", "-j", "route", "show", "table",
                                             str(table)).stdout))
                  for name in ("sat0-0-0", "sat0-3-5", "sat0-5-7")}
        if slice_now() == k:
            break
    else:
        pytest.skip("the slice changed during every attempt (machine too loaded)")
    for name, want in rec["nodes"].items():
        assert set(want["interfaces"]) <= seen[name], name
        extra = seen[name] - set(want["interfaces"])
        assert all(re.fullmatch(r"(g|up|dn)\d+", x) for x in extra), (name, extra)
    for name, n in routes.items():
        assert n == rec["nodes"][name]["tables"][str(table)], name
