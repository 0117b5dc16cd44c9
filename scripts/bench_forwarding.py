#!/usr/bin/env python3
"""Benchmark: iperf3 dev1 -> inet across the emulated path vs a plain veth chain of the same hop count.

Both are built in the same run, with the same tbf rate on every hop (the
scenario's rates raised to 100 Gbit/s so shaping does not decide the
result): the ratio measures what the emulation itself costs (VXLAN tunnel,
policy-routed slice tables, IPv4 routes via IPv6 next hops, NAT) against
plain kernel forwarding. The run starts at the slice (among the first
--search slices) whose dev1 -> inet path crosses the most satellites.
Prints one JSON object; budget (issue #4): ratio >= 0.8. Root required.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.cli.plan_cmds import build_plan  # noqa: E402
from emu.dataplane import cleanup, netns  # noqa: E402
from emu.dataplane.procs import spawn_in  # noqa: E402
from emu.dataplane.controller import Controller  # noqa: E402
from emu.dataplane.netlink import NetlinkBatch  # noqa: E402
from emu.dataplane.state import Run, new_run_id  # noqa: E402
from emu.dataplane.tc import LinkShape, shape_many  # noqa: E402
from emu.plan.db import PlanDB  # noqa: E402
from emu.plan.path import PathFinder  # noqa: E402

RATE_MBIT = 100000.0


def iperf(netns_name: str, server: str, seconds: float) -> float:
    p = subprocess.run(["ip", "netns", "exec", netns_name, "iperf3", "-c", server, "-t", str(seconds), "-J"],
                       capture_output=True, text=True, timeout=seconds + 30)
    return float(json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"])


def plain_chain(prefix: str, hops: int, seconds: float) -> tuple[float, list[str]]:
    names = [f"{prefix}-c{i}" for i in range(hops)]
    netns.create_many(names, {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                              "net.ipv4.conf.default.rp_filter": 0})
    fds = {n: netns.open_fd(n) for n in names}
    b = {n: NetlinkBatch(n) for n in names}
    try:
        for i in range(hops - 1):
            b[names[i]].veth("r", "l", fds[names[i + 1]], index=10, peer_index=11, mtu=1500)
            b[names[i]].send()
        shapes = []
        for i, n in enumerate(names):
            b[n].link_set(1, up=True)
            if i < hops - 1:
                b[n].link_set(10, up=True)
                b[n].addr("add", 10, f"10.99.{i}.1", 30)
                shapes.append(LinkShape(n, 10, int(RATE_MBIT * 1e6)))
            if i > 0:
                b[n].link_set(11, up=True)
                b[n].addr("add", 11, f"10.99.{i - 1}.2", 30)
                shapes.append(LinkShape(n, 11, int(RATE_MBIT * 1e6)))
            b[n].send()
        for i, n in enumerate(names):
            if i < hops - 1:
                b[n].route("add", f"10.99.{hops - 2}.0/30" if i < hops - 2 else "10.99.250.0/30", oif=10,
                           gateway=f"10.99.{i}.2") if i < hops - 2 else None
            if i > 0:
                b[n].route("add", "10.99.0.0/30", oif=11, gateway=f"10.99.{i - 1}.1") if i > 1 else None
            b[n].send()
        shape_many(shapes, b)
        server = spawn_in(names[-1], ["iperf3", "-s", "-1", "-B", f"10.99.{hops - 2}.2"])
        time.sleep(0.3)
        try:
            bps = iperf(names[0], f"10.99.{hops - 2}.2", seconds)
        finally:
            server.kill()
            server.wait()
        return bps, names
    finally:
        for x in b.values():
            x.close()
        for fd in fds.values():
            import os

            os.close(fd)
        netns.delete_many(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/default.yaml")
    ap.add_argument("--time", type=float, default=5.0)
    ap.add_argument("--search", type=int, default=383)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    sc = yaml.safe_load(Path(args.scenario).read_text())
    sc.setdefault("links", {}).update(isl_rate_mbit=RATE_MBIT, ground_rate_mbit=RATE_MBIT,
                                      terrestrial_rate_mbit=RATE_MBIT)
    scen = tmp / "fast.yaml"
    scen.write_text(yaml.safe_dump(sc))
    plan = tmp / "fast.db"
    build_plan(str(scen), plan, args.search, fmt="json")
    pf = PathFinder(PlanDB(plan))
    best = max((pf.path("dev1", "inet", k) for k in range(args.search)),
               key=lambda r: (r["reachable"], r.get("satellite_hops", 0)))
    k0 = best["slice"]
    hops = len(best["hops"])
    run = Run.create()
    res = {"scenario": args.scenario, "slice": k0, "path": [h["node"] for h in best["hops"]], "hop_count": hops,
           "satellite_hops": best.get("satellite_hops"), "rate_mbit_per_hop": RATE_MBIT}
    try:
        ctl = Controller(run, plan, speed=0.001, n_slices=1, start_slice=k0)
        ctl.build()
        time.sleep(0.3)
        res["emulated_bps"] = iperf(ctl.model.by_name["dev1"].netns, ctl.model.cfg.inet_addr, args.time)
        ctl.close()
    finally:
        cleanup.teardown(run)
    res["plain_bps"], _ = plain_chain("bf" + new_run_id()[2:], hops, args.time)
    res["ratio"] = round(res["emulated_bps"] / res["plain_bps"], 3)
    res["emulated_gbps"] = round(res["emulated_bps"] / 1e9, 2)
    res["plain_gbps"] = round(res["plain_bps"] / 1e9, 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
