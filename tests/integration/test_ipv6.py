"""IPv6 in the running constellation, real packets (root only).

spec: grc-based-routing §GRC encoding (the 128-bit form of the same
regions), §Data Forwarding Process (DEV -> UT -> satellites -> GS -> PoP ->
Internet, "an IPv4/IPv6 packet"). The default scenario is brought up once;
a device pings and iperfs the Internet over IPv6 (the UT's vx6 tunnel
runs over the IPv6 GRCs, so the satellites forward it by their IPv6
tables), a trace compares an ICMPv6 probe with the plan, ICMPv6 errors come
back for an unassigned IPv6 GRC, and one satellite's IPv6 table in the
kernel equals the plan's (the desired state's IPv6 twin).
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from emu.addressing import grc
from emu.dataplane import desired as D
from emu.dataplane.model import Model
from emu.dataplane.slicestate import Desired
from emu.plan.db import PlanDB

from .test_dataplane import DEFAULT, in_ns, leo

SLICES = 40


@pytest.fixture(scope="module")
def env(leo_env):
    return leo_env


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    from emu.cli.plan_cmds import build_plan

    p = tmp_path_factory.mktemp("plan6") / "default.db"
    build_plan(str(DEFAULT), p, SLICES, fmt="json")
    return p


@pytest.fixture(scope="module")
def live(env, plan):
    res = leo(env, "up", str(DEFAULT), "--plan", str(plan), "--detach", "--format", "json")
    info = json.loads(res.stdout)
    from pathlib import Path

    run_dir = Path(env["LEOEMU_RUN_DIR"]) / info["run"]
    run = json.loads((run_dir / "run.json").read_text())
    yield {"run": info["run"], "nodes": {n["name"]: n for n in run["nodes"]}, "dir": run_dir, "info": run}
    leo(env, "down", "--run", info["run"])


def slice_now(live) -> int:
    return json.loads((live["dir"] / "status.json").read_text())["slice"]


def test_leo_ping_dev1_inet_over_ipv6(live, env):
    d = json.loads(leo(env, "ping", "dev1", "inet", "-6", "-c", "10", "-i", "0.05", "--format", "json").stdout)
    assert d["family"] == 6 and d["dst_addr"] == live["info"]["inet_addr6"]
    assert d["received"] >= 9, d  # one may fall on a slice boundary's ground-link switch
    assert all(r["from"] == d["dst_addr"] for r in d["replies"])


def test_plain_ping6_and_iperf3_inside_the_nodes(live, env):
    inet6 = live["info"]["inet_addr6"]
    p = leo(env, "exec", "dev1", "--", "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", inet6, check=False)
    assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + p.stderr
    d = json.loads(leo(env, "iperf", "dev1", "inet", "-6", "--time", "2", "--format", "json").stdout)
    assert d["family"] == 6 and d["bits_per_second"] > 20e6, d  # ground links shaped to 500 Mbit/s


def test_trace6_follows_the_plan_over_the_ipv6_grc_tables(live, env):
    for _attempt in range(3):
        d = json.loads(leo(env, "trace", "dev1", "inet", "-6", "--format", "json").stdout)
        if not d["slice_changed"]:
            break
    assert d["family"] == 6 and d["reply_received"], d
    assert d["matches_plan"], (d["observed_satellites"], d["planned_satellites"])
    sats = [h for h in d["observed"] if h["kind"] == "satellite"]
    # the capture keeps IPv6 frames only: every satellite sighting is the vx6 tunnel's IPv6 GRC packet
    assert sats and all(h["tunnelled"] for h in sats), d["observed"]


def test_unassigned_ipv6_grc_gets_icmpv6_unreachable(live):
    # shell code 13 holds no satellite's table entries: no match -> ICMPv6 destination unreachable (grc §Forwarding)
    dst = grc.to_ipv6(0xD0010203, live["info"]["grc_ipv6_prefix"])
    p = in_ns(live["nodes"]["ut1"]["netns"], "ping", "-6", "-c", "1", "-W", "2", dst)
    assert "unreachable" in p.stdout.lower(), p.stdout + p.stderr


def test_one_satellites_ipv6_table_equals_the_plan(live, plan):
    m = Model.from_plan(PlanDB(plan), "unused", SLICES)
    d = Desired(m)
    name = "sat0-3-5"
    s = next(n.index for n in m.satellites if n.name == name)
    for _attempt in range(3):
        k = slice_now(live)
        out = in_ns(live["nodes"][name]["netns"], "ip", "-6", "-j", "route", "show", "table", str(D.table_id(k)))
        if slice_now(live) == k:
            break
    else:
        pytest.skip("the slice changed during every attempt (machine too loaded)")
    have = set()
    for r in json.loads(out.stdout):
        net = ipaddress.IPv6Network(r["dst"] if "/" in r["dst"] else r["dst"] + "/128")
        hops = r.get("nexthops") or ([r] if r.get("gateway") else [])
        have.add((int(net.network_address), net.prefixlen, r.get("metric"), r.get("type", "unicast"),
                  frozenset((h["gateway"], h["dev"]) for h in hops)))
    ifname = {i["ifindex"]: i["ifname"] for i in json.loads(in_ns(live["nodes"][name]["netns"], "ip", "-j",
                                                                  "link").stdout)}
    kinds = {1: "unicast", 2: "local", 7: "unreachable"}
    want = {(p6, l6, metric, kinds[rtype], frozenset((h.via6, ifname[h.oif]) for h in hops))
            for (p6, l6, metric), (rtype, hops) in D.routes6(d.routes(s, k), d.base6).items()}
    assert have == want
    assert all(l6 - 96 in grc.LEGAL_PREFIX_LENGTHS for _p, l6, *_ in have)  # segmented lengths, + 96


def test_a_satellites_ipv6_grc_twins_are_local_routes_and_answer_ping(live, plan):
    """A bound GRC's IPv6 twin is a local /128 route of the satellite's local table (no address object: an
    IPv6 address delete walks the whole IPv6 FIB), the kernel's lookup answers "local" for it, and it answers
    a ping from itself (the default scenario routes only ground nodes' GRCs between satellites)."""
    db = PlanDB(plan)
    name = "sat0-1-1"
    s = db.sat_names.index(name)
    netns = live["nodes"][name]["netns"]
    base = live["info"]["grc_ipv6_prefix"]
    for _attempt in range(3):
        k = slice_now(live)
        twins = {grc.to_ipv6(int(db.bound_grc(k)[s]) | d, base) for d in range(6)}
        out = in_ns(netns, "ip", "-6", "-j", "route", "show", "table", "local")
        have = {r["dst"].removesuffix("/128") for r in json.loads(out.stdout) if r.get("type") == "local"}
        addrs = {a["local"] for item in json.loads(in_ns(netns, "ip", "-j", "-6", "addr").stdout)
                 for a in item.get("addr_info", [])}
        twin = sorted(twins)[0]
        got = json.loads(in_ns(netns, "ip", "-6", "-j", "route", "get", twin).stdout)[0]
        p = in_ns(netns, "ping", "-6", "-c", "1", "-W", "2", twin)
        if slice_now(live) == k:
            break
    else:
        pytest.skip("the slice changed during every attempt (machine too loaded)")
    assert twins <= have and not twins & addrs
    assert (got.get("type"), got.get("table")) == ("local", "local"), got
    assert f"from {twin}" in p.stdout and " 0% packet loss" in p.stdout, p.stdout + p.stderr


def test_ipv6_switches_slices_by_mark_with_fixed_rules_and_local_packets_still_route(live, plan):
    """Where the kernel has it (here: nftables), slices switch without touching IPv6 rules: the fixed fwmark
    rules stay, each satellite's nftables chain gives packets slice k's mark, armed ahead for the next boundary
    (emu.dataplane.slicemark). A packet the satellite itself sends (first lookup unmarked: the ``iif lo``
    placeholder, then re-routed with the mark by the output chain) reaches a ground station's IPv6 GRC."""
    import subprocess
    import sys
    import time

    from emu.dataplane import slicemark

    db = PlanDB(plan)
    name = "sat0-3-5"
    netns = live["nodes"][name]["netns"]
    seen = {}
    nft = slicemark.NftSockets([netns])
    try:
        for _attempt in range(4):
            k = slice_now(live)
            rules = json.loads(in_ns(netns, "ip", "-6", "-j", "rule").stdout)
            chain = json.loads(in_ns(netns, "nft", "-j", "list", "chain", "inet", slicemark.TABLE, "pre").stdout)
            mark = nft.marks([netns])[netns]
            if slice_now(live) != k:
                continue
            sets = [e["mangle"]["value"] for item in chain["nftables"] if "rule" in item
                    for e in item["rule"]["expr"] if "mangle" in e]  # nft's own reading of the chain
            seen[k] = (mark, sets, {(r["priority"], r["table"]) for r in rules})
            if len(seen) == 2:
                break
            time.sleep(1.5)  # and once more after a boundary, if one comes
    finally:
        nft.close()
    assert seen, "the slice changed during every attempt (machine too loaded)"
    fixed = {(r.priority, str(r.table)) for r in slicemark.fixed_rules(D.table_id, D.N_TABLES) if r.family == 6}
    def M(k):
        return slicemark.slice_mark(k, D.N_TABLES)

    for k, (mark, sets, rules) in seen.items():
        # the status file says k until the applier's cleanup after the boundary; the kernel switches at the
        # boundary's instant: k+1's mark may already be in force
        assert mark in (M(k), M(k + 1)), (k, mark)
        # slice k-1's mark then k's from its boundary on, or (once slice k+1 is prepared) k's then k+1's
        assert sets in ([M(k - 1), M(k)], [M(k), M(k + 1)], [M(0)]), (k, sets)
        assert {(p, t) for p, t in rules if p >= slicemark.RULE_PREF} == fixed, rules  # no rotating IPv6 rule
    gs = next(g for g in db.ground if g.name.startswith("gs"))
    dst = grc.to_ipv6(int(gs.grc), live["info"]["grc_ipv6_prefix"])
    listen = subprocess.Popen(["ip", "netns", "exec", live["nodes"][gs.name]["netns"], sys.executable, "-c",
                               "import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
                               "s.bind(('::', 33999)); s.settimeout(8); print(s.recvfrom(64)[0].decode())"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        for _ in range(10):
            p = in_ns(netns, sys.executable, "-c", "import socket, sys; s = socket.socket(socket.AF_INET6, "
                      f"socket.SOCK_DGRAM); s.sendto(b'from-{name}', ('{dst}', 33999))")
            assert p.returncode == 0, p.stderr  # the first lookup succeeded (no ENETUNREACH)
            if listen.poll() is not None:
                break
            time.sleep(0.3)
        out, err = listen.communicate(timeout=10)
    finally:
        listen.kill()
    assert out.strip() == f"from-{name}", err
