"""The mission's packets: the cores' NAT, ECMP spreading flows in the kernel, the retained previous table.

Root only. The default scenario is built once in-process (no clock: the
tests step the slices themselves, like test_fib_vs_plan) under this module's
unique prefix and torn down whatever happens.

spec: grc-based-routing §Data Forwarding Process step 5 (the PoP performs
NAT), §Routing Table Structure (ECMP), §Time Slice Transition (the old table
retained for one more slice).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import subprocess
import sys

import pytest

from emu.addressing.grc import to_ipv4
from emu.dataplane import cleanup, fibcheck, netns
from emu.dataplane.controller import Controller
from emu.dataplane.desired import table_id
from emu.dataplane.slicestate import Desired
from emu.dataplane.state import Run
from emu.orbit.constellation import DOWN
from emu.plan import actions

from .test_dataplane import ROOT, in_ns

SLICES = 24


@pytest.fixture(scope="module")
def ctl(tmp_path_factory, module_ns_prefix):
    from emu.cli.plan_cmds import build_plan

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("nat")
    mp.setenv("LEOEMU_RUN_DIR", str(tmp / "runs"))
    mp.setenv("LEOEMU_RUN_ID_PREFIX", module_ns_prefix.rstrip("-"))
    plan = tmp / "p.db"
    build_plan(str(ROOT / "topologies" / "default.yaml"), plan, SLICES, fmt="json")
    run = Run.create()
    c = None
    try:
        c = Controller(run, plan, 1.0, SLICES)
        c.build()
        c.k = 0  # the slice the tests have stepped the kernel to
        yield c
    finally:
        if c is not None:
            c.close()
        cleanup.teardown(run)
        mp.undo()


def netns_of(ctl, name: str) -> str:
    return ctl.model.by_name[name].netns


def step_to(ctl, k: int) -> None:
    a = ctl.applier
    while ctl.k < k:
        ctl.k += 1
        a.prepare(ctl.k)
        a.switch(ctl.k)
        a.cleanup(ctl.k)
    ctl.write_status(slice=ctl.k)  # what `leo-emu status --fib` reads as the current slice


def tx_packets(netns: str) -> dict[int, int]:
    p = subprocess.run(["ip", "-n", netns, "-j", "-s", "link"], capture_output=True, text=True, check=True)
    return {item["ifindex"]: item["stats64"]["tx"]["packets"] for item in json.loads(p.stdout)}


def udp_flow(netns: str, dst: str, sport: int, n: int, dport: int = 9) -> str:
    """n datagrams of one flow (fixed 5-tuple) from inside ``netns``; returns "" or the send error's errno name."""
    code = ("import socket,sys,errno\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('0.0.0.0',{sport}))\n"
            "try:\n"
            f"    [s.sendto(b'x'*64,('{dst}',{dport})) for _ in range({n})]\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno])\n")
    p = in_ns(netns, sys.executable, "-c", code)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


# ============================================================================ NAT
def inet_peer(inet_ns: str, inet_addr: str, src_ns: str, port: int = 7071) -> tuple[str, str]:
    """(the source address ``src_ns`` connects from, the peer address a TCP server in ``inet_ns`` sees)."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", inet_ns, sys.executable, "-c",
         "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
         f"s.bind(('{inet_addr}',{port}))\ns.listen(1)\ns.settimeout(20)\nprint('ready',flush=True)\n"
         "c,a=s.accept()\nprint(a[0],flush=True)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        p = in_ns(src_ns, sys.executable, "-c", "import socket\n"
                  f"s=socket.create_connection(('{inet_addr}',{port}),timeout=10)\nprint(s.getsockname()[0])")
        assert p.returncode == 0, p.stderr
        return p.stdout.strip(), server.stdout.readline().strip()
    finally:
        server.kill()
        server.wait()


def test_inet_sees_the_cores_address_not_the_users(ctl):
    m = ctl.model
    ut = m.uts[0]
    dev_ns, inet_ns = netns_of(ctl, ut.device), netns_of(ctl, m.cfg.inet_name)
    user, peer = inet_peer(inet_ns, m.cfg.inet_addr, dev_ns)
    assert user == m.dev_addr(ut.idx)
    assert peer == m.core_public(ut.operator), (peer, user)  # the home core's masquerade
    # the Internet cannot reach a user at all: no route of its own toward any pool
    for *_x, pool in m.db.operators:
        q = in_ns(inet_ns, "ip", "-j", "route", "get", str(next(ipaddress.ip_network(pool).hosts())))
        assert q.returncode != 0 and "unreachable" in q.stderr.lower(), q.stdout + q.stderr


def test_dev_reaches_inet_through_nat_by_ping_and_iperf3(ctl):
    m = ctl.model
    dev_ns = netns_of(ctl, m.uts[0].device)
    p = in_ns(dev_ns, "ping", "-c", "5", "-i", "0.2", "-W", "2", m.cfg.inet_addr)
    assert " 0% packet loss" in p.stdout, p.stdout + p.stderr
    p = in_ns(dev_ns, "iperf3", "-c", m.cfg.inet_addr, "-t", "2", "-J", timeout=60)
    assert json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] > 10e6


# ============================================================================ ECMP
def _multipath_case(ctl, k: int):
    """(ground node, its serving satellite, destination GRC, the two egress ifindexes) of a multipath entry."""
    m = ctl.model
    d = Desired(m)
    links = m.ground_link_at(k)
    dsts = [int(g.grc) for g in m.db.ground] + [int(x) | 1 for x in m.db.bound_grc(k)]
    for g in m.db.ground:
        gl = links.get(g.idx)
        if gl is None:
            continue
        ref = d.tables(k).reference(gl.sat)
        for dst in dsts:
            hit = ref.lookup(dst)
            if hit is None:
                continue
            act = actions.decode(hit[2])
            if act.kind != actions.MULTIPATH or len(act.egress) < 2 or any(e.direction == DOWN for e in act.egress):
                continue
            oifs = sorted(fibcheck.allowed_ifindexes(m, gl.sat, k, hit[2]))
            if len(oifs) >= 2 and len({e.attribute for e in act.egress}) == 1:
                return g, gl.sat, dst, oifs
    return None


def test_a_multipath_route_carries_flows_on_both_paths(ctl):
    m = ctl.model
    case = _multipath_case(ctl, ctl.k)
    assert case, "the default scenario with the default ecmp_tolerance should have a multipath entry"
    g, sat, dst, oifs = case
    g_ns, s_ns = netns_of(ctl, g.name), m.satellites[sat].netns
    assert netns.get_sysctl(s_ns, "net.ipv4.fib_multipath_hash_policy") == "1"  # L4 hash: flows spread
    route = in_ns(s_ns, "ip", "-j", "route", "show", "table", str(table_id(ctl.k)))
    assert "nexthops" in route.stdout  # one kernel route, several next hops
    per_flow, n = {}, 40
    for sport in range(41000, 41016):
        before = tx_packets(s_ns)
        assert udp_flow(g_ns, to_ipv4(dst), sport, n) == ""
        after = tx_packets(s_ns)
        delta = {o: after[o] - before[o] for o in oifs}
        took = [o for o, x in delta.items() if x >= n]
        assert len(took) == 1, (sport, delta)  # a flow stays on one path (no reordering within it)
        assert sum(delta.values()) < n + 10, delta
        per_flow[sport] = took[0]
    assert len(set(per_flow.values())) >= 2, per_flow  # 16 flows, 2+ equal paths: all on one has p <= 2^-15


# ============================================================================ retention
def _retained_case(ctl, start: int):
    """(k, satellite, destination) where only table(k) routes the destination (not k+1's, not k+2's) over a
    link that stays up in slice k+1."""
    m = ctl.model
    d = Desired(m)
    for k in range(start, m.n_slices - 2):
        bound = {kk: {int(x) | b for x in m.db.bound_grc(kk) for b in range(6)} for kk in (k, k + 1, k + 2)}
        cands = sorted({int(x) | 1 for x in m.db.bound_grc(k)})
        for s in range(len(m.satellites)):
            t0, t1, t2 = (fibcheck.slice_table(d, s, kk) for kk in (k, k + 1, k + 2))
            for dst in cands:
                if dst in bound[k + 1] or dst in bound[k + 2]:
                    continue
                hit = t0.lookup(dst)
                if hit is None or t1.lookup(dst) is not None or t2.lookup(dst) is not None:
                    continue
                if actions.decode(hit[2]).kind == actions.LOCAL:
                    continue
                oifs = fibcheck.allowed_ifindexes(m, s, k, hit[2])
                if oifs and oifs <= fibcheck.allowed_ifindexes(m, s, k + 1, hit[2]):
                    return k, s, dst, oifs
    return None


def test_the_previous_table_forwards_for_one_slice_then_is_gone(ctl):
    m = ctl.model
    case = _retained_case(ctl, ctl.k)
    assert case, "no destination only one slice's table knows in this plan"
    k, s, dst, oifs = case
    step_to(ctl, k)
    sat_ns, addr = m.satellites[s].netns, to_ipv4(dst)
    fabric = ctl.builder.fabric
    assert fibcheck.route_get_many(fabric.nl[sat_ns], [dst])[0][2] in oifs  # slice k: its own table
    step_to(ctl, k + 1)
    err, _t, oif = fibcheck.route_get_many(fabric.nl[sat_ns], [dst])[0]
    assert err == 0 and oif in oifs, (err, oif, oifs)  # slice k+1: only the retained table(k) knows it
    before = tx_packets(sat_ns)
    assert udp_flow(sat_ns, addr, 42000, 20) == ""
    after = tx_packets(sat_ns)
    assert sum(after[o] - before[o] for o in oifs) >= 20  # real packets left by table(k)'s egress
    r = fibcheck.compare(m, fabric, k + 1, [dst] + [int(g.grc) for g in m.db.ground])
    assert not r["mismatches"] and r["expected"]["retained"] >= 1, r
    step_to(ctl, k + 2)
    err, _t, _o = fibcheck.route_get_many(fabric.nl[sat_ns], [dst])[0]
    assert err in (errno.ENETUNREACH, errno.EHOSTUNREACH), err  # slice k+2: table(k)'s rule is gone
    assert udp_flow(sat_ns, addr, 42001, 1) in ("ENETUNREACH", "EHOSTUNREACH")
    r = fibcheck.compare(m, fabric, k + 2, [dst] + [int(g.grc) for g in m.db.ground])
    assert not r["mismatches"], r


# ============================================================================ `leo-emu status --fib`
def test_status_fib_is_strict_and_can_fail(ctl):
    from .test_dataplane import leo

    env = dict(os.environ)
    rid = ctl.run.run_id
    p = leo(env, "status", "--run", rid, "--fib", "--format", "json", check=False)
    assert p.returncode == 0, p.stderr
    fib = json.loads(p.stdout)["fib"]
    n = len(ctl.model.satellites)
    assert fib["slice"] == ctl.k and not fib["mismatches"] and fib["checked"] > n
    assert fib["expected"]["forward"] > n and fib["expected"]["unreachable"] >= n  # 208.1.2.3 everywhere
    assert fib["expected"]["local"] >= 1  # each sampled satellite's own GRC
    # a route the plan does not have: the unassigned GRC forwarded North on one satellite
    sat = ctl.model.satellites[0]
    add = ["ip", "-n", sat.netns, "route", "add", "208.1.2.3/32", "dev", "n", "table", str(table_id(ctl.k))]
    subprocess.run(add, check=True)
    try:
        p = leo(env, "status", "--run", rid, "--fib", check=False)
        assert p.returncode == 1 and "208.1.2.3" in p.stderr and sat.name in p.stderr, p.stderr
    finally:
        subprocess.run(["ip", "-n", sat.netns, "route", "del", "208.1.2.3/32", "table", str(table_id(ctl.k))])
