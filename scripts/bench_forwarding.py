#!/usr/bin/env python3
"""Benchmark: iperf3 dev1 -> inet across the emulated path vs a plain veth chain of the same hop count.

Both are built in the same run, with the same tbf rate on every hop (the
scenario's rates raised to 32 Gbit/s, tbf's ceiling, so shaping does not decide the
result): the ratio measures what the emulation itself costs (VXLAN tunnel,
policy-routed slice tables, IPv4 routes via IPv6 next hops, NAT) against
plain kernel forwarding. The run starts at the slice (among the first
--search slices) whose dev1 -> inet path crosses the most satellites.
Both stay up while iperf3 runs on each in turn, --rounds times; the ratio
is of the medians. Prints one JSON object; budget (issue #16): ratio >= 0.95.
Root required.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

RATE_MBIT = 32000.0  # tbf rates are 32-bit bytes/s (~34 Gbit/s at most): above any forwarding rate here


def iperf(netns_name: str, server: str, seconds: float) -> float:
    p = subprocess.run(["ip", "netns", "exec", netns_name, "iperf3", "-c", server, "-t", str(seconds), "-J"],
                       capture_output=True, text=True, timeout=seconds + 30)
    return float(json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"])


class PlainChain:
    """``hops`` namespaces in a line, one veth and a /30 per hop, tbf at RATE_MBIT on every end, an iperf3
    server at the far end: plain kernel forwarding, the baseline."""

    def __init__(self, prefix: str, hops: int):
        self.names = names = [f"{prefix}-c{i}" for i in range(hops)]
        self.server_addr = f"10.99.{hops - 2}.2"
        netns.create_many(names, {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                                  "net.ipv4.conf.default.rp_filter": 0})
        self.fds = {n: netns.open_fd(n) for n in names}
        self.b = b = {n: NetlinkBatch(n) for n in names}
        self.server = None
        for i in range(hops - 1):
            b[names[i]].veth("r", "l", self.fds[names[i + 1]], index=10, peer_index=11, mtu=1500)
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
            if i < hops - 2:
                b[n].route("add", f"10.99.{hops - 2}.0/30", oif=10, gateway=f"10.99.{i}.2")
            if i > 1:
                b[n].route("add", "10.99.0.0/30", oif=11, gateway=f"10.99.{i - 1}.1")
            b[n].send()
        shape_many(shapes, b)
        self.server = spawn_in(names[-1], ["iperf3", "-s", "-B", self.server_addr])
        time.sleep(0.3)

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        for x in self.b.values():
            x.close()
        for fd in self.fds.values():
            os.close(fd)
        netns.delete_many(self.names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/default.yaml")
    ap.add_argument("--time", type=float, default=5.0)
    ap.add_argument("--search", type=int, default=383)
    ap.add_argument("--rounds", type=int, default=3, help="emulated and plain measured alternately, this many times")
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
    ctl = chain = None
    emu_bps, plain_bps = [], []
    try:
        ctl = Controller(run, plan, speed=0.001, n_slices=1, start_slice=k0)
        ctl.build()
        chain = PlainChain("bf" + new_run_id()[2:], hops)
        time.sleep(0.3)
        dev = ctl.model.by_name["dev1"].netns
        # Alternate the two, both built: this machine's load moves either by more than the difference.
        for _ in range(args.rounds):
            emu_bps.append(iperf(dev, ctl.model.cfg.inet_addr, args.time))
            plain_bps.append(iperf(chain.names[0], chain.server_addr, args.time))
    finally:
        if ctl is not None:
            ctl.close()
        cleanup.teardown(run)
        if chain is not None:
            chain.close()
    res["rounds"] = args.rounds
    res["emulated_gbps_each"] = [round(x / 1e9, 2) for x in emu_bps]
    res["plain_gbps_each"] = [round(x / 1e9, 2) for x in plain_bps]
    res["emulated_bps"] = statistics.median(emu_bps)
    res["plain_bps"] = statistics.median(plain_bps)
    res["ratio"] = round(res["emulated_bps"] / res["plain_bps"], 3)   # of the medians
    res["ratio_each"] = [round(e / p, 3) for e, p in zip(emu_bps, plain_bps)]
    res["emulated_gbps"] = round(res["emulated_bps"] / 1e9, 2)
    res["plain_gbps"] = round(res["plain_bps"] / 1e9, 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
