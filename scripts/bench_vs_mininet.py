#!/usr/bin/env python3
"""Benchmark: build and tear down one slice of a scenario with leo-emu and with Mininet's own path.

The same topology both ways (issue 11):

1. leo-emu: ``leo-emu up SCENARIO --plan PLAN --detach --slices 1`` (the CLI
   verb, wall clock; ``build_s`` is the controller's own figure), then ``leo-emu
   down`` (wall clock). Before the teardown the live run is *read back from
   the kernel*: every namespace, every veth pair, every address, every route
   (all tables, except the kernel's own) and every policy rule.
2. Mininet: ``Mininet(topo=..., controller=None)`` -- every namespace becomes a
   Mininet host acting as a Linux router (``ip_forward`` on), every veth pair a
   host-to-host ``Link`` (no switch) with the same interface names, then the
   same addresses, routes and rules are replayed in each host with one
   ``ip -force -batch`` (the cheapest way Mininet offers to configure a node).
   Build = ``Mininet(...)`` + ``start()`` + that configuration; teardown =
   ``stop()``.

Not replicated on the Mininet side (so its build does *less* work than ours):
VXLAN/ipip tunnels, nftables NAT, tc shaping, the servers in ``inet``, the
sysctls beyond forwarding. Mininet's ``fixLimits()`` (host sysctls) is skipped:
this machine's host settings are not ours to change; per-process rlimits are
raised instead.

Where Mininet is too slow, ``--mininet-max-nodes N`` builds only the first N
nodes (satellites in index order, i.e. whole planes, then ground nodes) and the links among
them, and ``--mininet-budget-s`` stops adding hosts after that long; the JSON
then says so (``mininet.partial``) and gives a linear per-node extrapolation
labelled as such, never as a measurement. Prints one JSON object. Root only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.dataplane.state import find_run  # noqa: E402
from emu.dataplane.procs import run_in  # noqa: E402
from emu.dataplane.runview import RunView  # noqa: E402
from emu.mininet import peers, requirements  # noqa: E402



def leo(env: dict, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "emu.cli.main", *args], capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, p


# ============================================================================ reading a live run back
_NHID = re.compile(r"\bnhid \d+ ")


def _route_lines(netns: str, family: str) -> list[str]:
    """``ip route show table all`` as ``route add`` lines; multipath continuation lines joined."""
    txt = run_in(netns, ["ip", family, "route", "show", "table", "all"], timeout_s=60).stdout
    routes: list[str] = []
    for line in txt.splitlines():
        if line[:1] in (" ", "\t") and routes:
            routes[-1] += " " + line.strip()
        elif line.strip():
            routes.append(line.strip())
    keep = []
    for r in routes:
        if " proto kernel" in r or " table local" in r or r.startswith(("local ", "broadcast ", "multicast ",
                                                                       "anycast ", "ff00::/8", "fe80::/64")):
            continue
        # the satellites' routes name nexthop objects (emu.dataplane.nexthops); `ip route` prints their hops
        # too (compat mode), which is what the replica gets: a route may not give both
        keep.append("route add " + _NHID.sub("", r))  # a batch line takes no -6: ip infers the family
    return keep


def _rule_lines(netns: str) -> list[str]:
    p = run_in(netns, ["ip", "-j", "rule", "show"], timeout_s=30)
    out = []
    for r in json.loads(p.stdout or "[]"):
        if r.get("table") in ("local", "main", "default") and r.get("priority") in (0, 32766, 32767):
            continue
        if int(str(r.get("fwmark", "0")), 0):  # the slice switch's fixed rules by mark (emu.dataplane.slicemark):
            continue  # the replica has no nftables chain to mark packets; its lookups take the rotating rules
        args = [f"pref {r['priority']}"]
        if r.get("src") and r.get("src") != "all":
            args.append(f"from {r['src']}/{r.get('srclen', 32)}")
        if r.get("dst"):
            args.append(f"to {r['dst']}/{r.get('dstlen', 32)}")
        if r.get("iif"):
            args.append(f"iif {r['iif']}")
        args.append(f"lookup {r['table']}")
        out.append("rule add " + " ".join(args))
    return out


def _addr_lines(netns: str) -> list[str]:
    p = run_in(netns, ["ip", "-j", "addr", "show"], timeout_s=30)
    out = []
    for link in json.loads(p.stdout or "[]"):
        for a in link.get("addr_info", []):
            if (link["ifname"] == "lo" and a.get("local") in ("127.0.0.1", "::1")) or not a.get("local"):
                continue
            nodad = " nodad" if a.get("family") == "inet6" else ""
            out.append(f"addr add {a['local']}/{a['prefixlen']} dev {link['ifname']}{nodad}")
    return out


def read_topology(run_id: str) -> dict:
    """The live run as data: nodes (in build order), veth pairs, and per node the ip-batch lines to replay."""
    view = RunView(find_run(run_id))
    # satellites first (plane by plane), so a partial Mininet build holds whole planes and their ISLs
    nodes = sorted(view.nodes, key=lambda n: (n["kind"] != "satellite", n.get("index", 0)))
    intfs = peers.read_interfaces([n["netns"] for n in nodes])
    by_ns = {n["netns"]: n["name"] for n in nodes}
    links = [(by_ns[a.netns], a.name, by_ns[b.netns], b.name) for a, b in peers.pair_veths(intfs)]
    def lines(n: dict) -> list[str]:
        ns = n["netns"]
        up = [f"link set {i.name} up" for i in intfs.get(ns, []) if i.up and i.name != "lo"]
        return _addr_lines(ns) + up + _rule_lines(ns) + _route_lines(ns, "-4") + _route_lines(ns, "-6")

    with ThreadPoolExecutor(max_workers=8) as pool:
        config = dict(zip([n["name"] for n in nodes], pool.map(lines, nodes)))
    return {"nodes": [n["name"] for n in nodes], "links": links, "config": config}


# ============================================================================ Mininet's own path
def mininet_build(topo_data: dict, max_nodes: int | None, budget_s: float) -> dict:
    from mininet.net import Mininet
    from mininet.node import Node
    from mininet.topo import Topo

    class Router(Node):
        """Mininet's examples/linuxrouter.py: a host with IP forwarding on."""

        def config(self, **params):
            super().config(**params)
            self.cmd("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 "
                     "net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0")

    names = topo_data["nodes"][:max_nodes] if max_nodes else topo_data["nodes"]
    keep = set(names)
    links = [lk for lk in topo_data["links"] if lk[0] in keep and lk[2] in keep]

    class SliceTopo(Topo):
        def build(self):
            for name in names:
                self.addHost(name, cls=Router, ip=None)
            for n1, i1, n2, i2 in links:
                self.addLink(n1, n2, intfName1=i1, intfName2=i2)

    Mininet.inited = True  # skip fixLimits(): it retunes the host's own sysctls (see module docstring)
    for res, want in ((resource.RLIMIT_NOFILE, 65536), (resource.RLIMIT_NPROC, 65536)):
        soft, hard = resource.getrlimit(res)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(res, (target, hard))
    t0 = time.perf_counter()
    net = Mininet(topo=SliceTopo(), controller=None, build=False)
    built: set[str] = set()
    n_links = replayed = failed = 0
    samples: list[str] = []
    phases = {"hosts_s": 0.0, "links_s": 0.0, "config_s": 0.0}
    try:
        # Mininet.build() step by step (the calls buildFromTopo makes), timed per phase, within a budget
        topo = net.topo
        for name in topo.hosts():
            net.addHost(name, **topo.nodeInfo(name))
            if time.perf_counter() - t0 > budget_s:
                break
        built = set(net.nameToNode)
        phases["hosts_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        for n1, n2, params in topo.links(sort=True, withInfo=True):
            if n1 in built and n2 in built:
                net.addLink(**params)
                n_links += 1
                if time.perf_counter() - t0 > budget_s:
                    break
        phases["links_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        net.configHosts()
        net.built = True
        net.start()
        batch_dir = tempfile.mkdtemp(prefix="mnbench-")
        for name in built:
            lines = topo_data["config"][name]
            path = os.path.join(batch_dir, name)
            Path(path).write_text("\n".join(lines) + "\n")
            out = net.get(name).cmd(f"ip -force -batch {path} 2>&1")
            failed += out.count("Command failed")
            for err in out.splitlines():
                err = err.strip()
                if err and "Command failed" not in err and len(samples) < 8 and err not in samples:
                    samples.append(err.strip())
            replayed += len(lines)
        phases["config_s"] = time.perf_counter() - t2
        build_s = time.perf_counter() - t0
    finally:
        t3 = time.perf_counter()
        net.stop()
        teardown_s = time.perf_counter() - t3
    total_links = len(topo_data["links"])
    total_lines = sum(len(v) for v in topo_data["config"].values())
    partial = len(built) < len(topo_data["nodes"]) or n_links < total_links
    out = {"nodes": len(built), "links": n_links, "config_lines": replayed, "config_failed": failed,
           "config_errors_seen": samples, "build_s": round(build_s, 3), **{k: round(v, 3) for k, v in phases.items()},
           "teardown_s": round(teardown_s, 3), "partial": partial}
    if partial:  # per-object rates of the part that was built, scaled to the whole: an estimate
        est_build = (phases["hosts_s"] * len(topo_data["nodes"]) / max(len(built), 1)
                     + phases["links_s"] * total_links / max(n_links, 1)
                     + phases["config_s"] * total_lines / max(replayed, 1))
        out["extrapolated"] = {
            "note": (f"LINEAR EXTRAPOLATION, not a measurement: Mininet built {len(built)} of "
                     f"{len(topo_data['nodes'])} nodes and {n_links} of {total_links} links; each phase "
                     "(hosts, links, configuration) scaled by its own object count, teardown by nodes"),
            "build_s": round(est_build, 1),
            "teardown_s": round(teardown_s * len(topo_data["nodes"]) / max(len(built), 1), 1)}
    return out


# ============================================================================ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--plan", help="route database of SCENARIO (default: plan 1 slice now, not timed)")
    ap.add_argument("--mininet-max-nodes", type=int, default=None, help="build at most this many nodes in Mininet")
    ap.add_argument("--mininet-budget-s", type=float, default=300.0, help="stop adding Mininet hosts after this")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "root required"}))
        return 2
    requirements.require()
    env = dict(os.environ)
    env.setdefault("LEOEMU_RUN_ID_PREFIX", "mnb")
    tmp = tempfile.mkdtemp(prefix="mnbench-")
    # the run's record stays where `leo-emu down --all` looks (run_root()): a killed benchmark's run is found
    os.environ.update({k: env[k] for k in ("LEOEMU_RUN_DIR", "LEOEMU_RUN_ID_PREFIX") if k in env})
    plan = args.plan
    if plan is None:
        plan = os.path.join(tmp, "plan.db")
        _t, p = leo(env, "plan", args.scenario, "-o", plan, "--slices", "2", "--format", "json")
        if p.returncode != 0:
            print(json.dumps({"error": p.stderr.strip()[-300:]}))
            return 1

    up_wall, p = leo(env, "up", args.scenario, "--plan", plan, "--detach", "--slices", "1", "--speed", "0.01",
                     "--format", "json")
    if p.returncode != 0:
        print(json.dumps({"error": "leo-emu up: " + p.stderr.strip()[-300:]}))
        return 1
    up = json.loads(p.stdout)
    try:
        topo_data = read_topology(up["run"])
    finally:
        down_wall, pd = leo(env, "down", "--run", up["run"], "--format", "json")
    down = json.loads(pd.stdout)["removed"][0] if pd.returncode == 0 else {}
    ours = {"nodes": len(topo_data["nodes"]), "links": len(topo_data["links"]),
            "config_lines": sum(len(v) for v in topo_data["config"].values()),
            "build_s": round(up_wall, 3), "controller_build_s": up.get("build_s"),
            "teardown_s": round(down_wall, 3), "down_teardown_s": down.get("teardown_s")}

    mn = mininet_build(topo_data, args.mininet_max_nodes, args.mininet_budget_s)
    result = {"bench": "vs_mininet", "scenario": args.scenario, "leo_emu": ours, "mininet": mn,
              "mininet_version": requirements.status()["package"]}
    mn_build = mn["extrapolated"]["build_s"] if mn["partial"] else mn["build_s"]
    mn_down = mn["extrapolated"]["teardown_s"] if mn["partial"] else mn["teardown_s"]
    tag = "_extrapolated" if mn["partial"] else ""
    result[f"build_ratio_mininet_over_ours{tag}"] = round(mn_build / ours["build_s"], 2)
    result[f"build_ratio_mininet_over_our_controller{tag}"] = round(mn_build / ours["controller_build_s"], 2)
    result[f"teardown_ratio_mininet_over_ours{tag}"] = round(mn_down / ours["teardown_s"], 2)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
