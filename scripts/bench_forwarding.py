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

A second baseline runs beside them: the same plain chain with the core's own
masquerade ruleset (and flowtable, where the kernel has nf_flow_table) at the
core's hop. ``ratio_vs_plain_nat`` is what the emulator costs beyond the NAT
it models, ``plain_nat_ratio`` what that NAT alone costs; ``ratio`` (against
the chain without NAT) stays the budget. A third: the plain chain with a
VXLAN tunnel from its second namespace to its fourth, as the emulated UT ->
GS tunnel (grc-based-routing §Data Forwarding Process steps 2 and 4) over one satellite:
``plain_tunnel_ratio`` is what the tunnel alone costs, ``ratio_vs_plain_tunnel``
the emulator beyond it. A fourth has both the tunnel and the NAT, everything
the emulated path models: ``ratio_vs_plain_modelled`` is what the emulator
itself costs (slice tables, marks, next hops, rules). Root required.

Everything it makes is in one run record (:class:`emu.dataplane.state.Run`): the emulated path's namespaces,
the plain chains' namespaces (journalled before they exist), this process and every iperf3 it starts (which
also die with it, PR_SET_PDEATHSIG). Ctrl-C, SIGTERM and SIGHUP tear everything down in the ``finally``;
after a kill -9, ``leo-emu down --all`` (or ``--run RUN``) does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emu.cli.plan_cmds import build_plan  # noqa: E402
from emu.dataplane import cleanup, features, netns  # noqa: E402
from emu.dataplane.build import masquerade_ruleset  # noqa: E402
from emu.dataplane.procs import interrupt_on, popen_in, run_in, spawn_in, stop  # noqa: E402
from emu.dataplane.controller import Controller  # noqa: E402
from emu.dataplane.netlink import NetlinkBatch  # noqa: E402
from emu.dataplane.state import Run  # noqa: E402
from emu.dataplane.tc import LinkShape, shape_many  # noqa: E402
from emu.plan.db import PlanDB  # noqa: E402
from emu.plan.path import PathFinder  # noqa: E402

RATE_MBIT = 32000.0  # tbf rates are 32-bit bytes/s (~34 Gbit/s at most): above any forwarding rate here


def iperf(run: Run, netns_name: str, server: str, seconds: float) -> tuple[float, float]:
    """(bits/s received, CPU seconds per GB): the second is iperf3's own CPU figure for sender and receiver
    (their system time includes the forwarding their softirqs did), steadier than bits/s under load.
    The client is recorded in ``run`` and dies with this process."""
    p = popen_in(netns_name, ["iperf3", "-c", server, "-t", str(seconds), "-J"], die_with_parent=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run.record_pid(p.pid, f"iperf3 client in {netns_name}")
        out, err = p.communicate(timeout=seconds + 30)
    finally:
        stop(p)
    if p.returncode != 0:
        raise SystemExit(f"iperf3 -c {server} in {netns_name}: exit {p.returncode}: {(out + err).strip()[-300:]}")
    end = json.loads(out)["end"]
    rx, cpu = end["sum_received"], end["cpu_utilization_percent"]
    cpu_s = (cpu["host_total"] + cpu["remote_total"]) / 100 * rx["seconds"]
    return float(rx["bits_per_second"]), cpu_s / (rx["bytes"] / 1e9)


class PlainChain:
    """``hops`` namespaces in a line, one veth and a /30 per hop, tbf at RATE_MBIT on every end, an iperf3
    server at the far end: plain kernel forwarding, the baseline. ``nat``: the second-last namespace (where
    the emulated path's operator core sits) also masquerades the sender's traffic toward the last, with the
    core's own ruleset (:func:`build.masquerade_ruleset`): the baseline that includes the modelled NAT.

    Recorded in ``run`` as the emulator records its own: the namespaces before they exist, the server with its
    start time; the server dies with the creating thread (PR_SET_PDEATHSIG). So ``cleanup.teardown(run)`` --
    ``leo-emu down`` -- removes the chain after any end of this process, kill -9 included."""

    def __init__(self, run: Run, prefix: str, hops: int, nat: bool = False, flowtable: bool = False,
                 tunnel: bool = False):
        self.names = names = [f"{prefix}-c{i}" for i in range(hops)]
        self.server_addr = f"10.99.{hops - 2}.2"
        self.fds: dict[str, int] = {}
        self.b: dict[str, NetlinkBatch] = {}
        self.server = None
        run.record_netns(names)
        try:
            self._build(run, hops, nat, flowtable, tunnel)
        except BaseException:
            self.close()
            raise

    def _build(self, run: Run, hops: int, nat: bool, flowtable: bool, tunnel: bool) -> None:
        names = self.names
        netns.create_many(names, {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                                  "net.ipv4.conf.default.rp_filter": 0})
        self.fds.update({n: netns.open_fd(n) for n in names})
        self.b.update({n: NetlinkBatch(n) for n in names})
        b = self.b
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
        if tunnel:
            self._tunnel(names)
        if nat:  # the core's ruleset; with ``flowtable``, its fast path over this namespace's two links
            ft = ("l", "r") if flowtable else ()
            p = run_in(names[-2], ["nft", "-f", "-"], die_with_parent=True,
                       stdin=masquerade_ruleset("10.99.0.0/30", oifname="r", flowtable_devices=ft))
            if p.returncode != 0:
                raise SystemExit(f"nft in {names[-2]}: {p.stderr.strip()}")
        self.server = spawn_in(names[-1], ["iperf3", "-s", "-B", self.server_addr], die_with_parent=True)
        run.record_pid(self.server.pid, f"iperf3 server in {names[-1]}")
        time.sleep(0.3)

    @staticmethod
    def _tunnel(names: list[str]) -> None:
        """A VXLAN tunnel from the second namespace to the fourth, as the emulated path's UT -> GS tunnel over
        one satellite (the links it crosses 1600 bytes, so 1500-byte packets fit in it, as MTU_SPACE does)."""
        a, mid, z = names[1], names[2], names[3]
        cmds = [(a, "link set dev r mtu 1600"), (mid, "link set dev l mtu 1600"), (mid, "link set dev r mtu 1600"),
                (z, "link set dev l mtu 1600"),
                (a, "link add vx type vxlan id 7 local 10.99.1.1 remote 10.99.2.2 dstport 4789"),
                (z, "link add vx type vxlan id 7 local 10.99.2.2 remote 10.99.1.1 dstport 4789"),
                (a, "link set dev vx mtu 1500 up"), (z, "link set dev vx mtu 1500 up"),
                (a, "addr add 10.200.0.1/30 dev vx"), (z, "addr add 10.200.0.2/30 dev vx"),
                (a, f"route replace 10.99.{len(names) - 2}.0/30 via 10.200.0.2 dev vx"),
                (z, "route replace 10.99.0.0/30 via 10.200.0.1 dev vx"),
                (a, "route replace 10.99.2.0/30 via 10.99.1.2 dev r"),
                (z, "route replace 10.99.1.0/30 via 10.99.2.1 dev l")]
        for ns, cmd in cmds:
            p = run_in(ns, ["ip", *cmd.split()], die_with_parent=True)
            if p.returncode != 0:
                raise SystemExit(f"ip {cmd} in {ns}: {p.stderr.strip()}")

    def close(self) -> None:
        """Stop the server, close the sockets and fds, remove the namespaces (idempotent)."""
        if self.server is not None:
            self.server.kill()
            self.server.wait()
            self.server = None
        for x in self.b.values():
            x.close()
        for fd in self.fds.values():
            os.close(fd)
        self.b.clear()
        self.fds.clear()
        netns.delete_many(self.names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="topologies/default.yaml")
    ap.add_argument("--time", type=float, default=5.0)
    ap.add_argument("--search", type=int, default=383)
    ap.add_argument("--rounds", type=int, default=5, help="emulated and plain measured alternately, this many times")
    args = ap.parse_args()
    interrupt_on()  # SIGTERM, SIGHUP as Ctrl-C: the finally blocks tear down what exists
    tmp = Path(tempfile.mkdtemp(prefix="bench-fwd-"))
    try:
        bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(args: argparse.Namespace, tmp: Path) -> None:
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
    run.record_pid(os.getpid(), "bench_forwarding")  # `leo-emu down` stops it first, its finally cleans up
    res = {"run": run.run_id,"scenario": args.scenario, "slice": k0, "path": [h["node"] for h in best["hops"]], "hop_count": hops,
           "satellite_hops": best.get("satellite_hops"), "rate_mbit_per_hop": RATE_MBIT,
           "kernel": features.detect().kernel}
    has_ft = features.detect().has("nft_flowtable")
    res["nat_flowtable"] = has_ft  # the emulated cores and the NAT chain use the fast path
    res["netem_delays"] = features.detect().has("netem")  # True: the emulated path also has its propagation
    # delays (the chains have none), so "ratio" then includes what the delays cost TCP, not only forwarding
    ctl = None
    chains: dict[str, PlainChain] = {}
    bps: dict[str, list[float]] = {"emulated": [], "plain": [], "plain_nat": []}
    if has_ft:  # the flowtable's own gain, measured: the NAT chain once more without it
        bps["plain_nat_noflowtable"] = []
    if features.detect().has("vxlan") and hops >= 5:  # the tunnel the emulated path models, alone and with NAT
        bps["plain_tunnel"] = []
        bps["plain_modelled"] = []
    cpu: dict[str, list[float]] = {name: [] for name in bps}
    try:
        ctl = Controller(run, plan, speed=0.001, n_slices=1, start_slice=k0)
        ctl.build()
        for name, prefix in (("plain", "bf"), ("plain_nat", "bn"), ("plain_nat_noflowtable", "bs"),
                             ("plain_tunnel", "bt"), ("plain_modelled", "bm")):
            if name in bps:
                chains[name] = PlainChain(run, prefix + run.run_id[2:], hops,
                                          nat=name.startswith("plain_nat") or name == "plain_modelled",
                                          flowtable=name in ("plain_nat", "plain_modelled") and has_ft,
                                          tunnel=name in ("plain_tunnel", "plain_modelled"))
        time.sleep(0.3)
        nets = {"emulated": (ctl.model.by_name["dev1"].netns, ctl.model.cfg.inet_addr)}
        nets.update({name: (c.names[0], c.server_addr) for name, c in chains.items()})
        # Alternate them, all built: this machine's load moves any one by more than the difference.
        for _ in range(args.rounds):
            for name, (ns, addr) in nets.items():
                b, c = iperf(run, ns, addr, args.time)
                bps[name].append(b)
                cpu[name].append(c)
    finally:  # not cut short by a second Ctrl-C; a kill -9 here leaves it to `leo-emu down`
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if ctl is not None:
            ctl.close()
        for c in chains.values():
            c.close()
        cleanup.teardown(run)
    med = {name: statistics.median(x) for name, x in bps.items()}
    res["rounds"] = args.rounds
    for name, x in bps.items():
        res[f"{name}_gbps_each"] = [round(v / 1e9, 2) for v in x]
    res["emulated_bps"] = med["emulated"]
    res["plain_bps"] = med["plain"]
    res["ratio"] = round(med["emulated"] / med["plain"], 3)  # of the medians: the budget
    res["ratio_each"] = [round(e / p, 3) for e, p in zip(bps["emulated"], bps["plain"])]
    for name in bps:
        res[f"{name}_gbps"] = round(med[name] / 1e9, 2)
    for name in bps:  # what a byte costs: less moved by the machine's load than bits/s
        res[f"{name}_cpu_s_per_gb"] = round(statistics.median(cpu[name]), 3)
    # The second baseline: the same chain with the core's NAT at the core's hop. Its ratio shows what the
    # emulator costs beyond the NAT it models; the budget stays on "ratio" (against the chain without NAT).
    res["ratio_vs_plain_nat"] = round(med["emulated"] / med["plain_nat"], 3)
    res["plain_nat_ratio"] = round(med["plain_nat"] / med["plain"], 3)  # what the NAT alone costs
    if "plain_tunnel" in med:  # what the UT -> GS tunnel alone costs, and the emulator beyond it
        res["plain_tunnel_ratio"] = round(med["plain_tunnel"] / med["plain"], 3)
        res["ratio_vs_plain_tunnel"] = round(med["emulated"] / med["plain_tunnel"], 3)
        res["plain_modelled_ratio"] = round(med["plain_modelled"] / med["plain"], 3)
        res["ratio_vs_plain_modelled"] = round(med["emulated"] / med["plain_modelled"], 3)
    if has_ft:
        res["flowtable_gain"] = round(med["plain_nat"] / med["plain_nat_noflowtable"], 3)
        res["flowtable_cpu_ratio"] = round(statistics.median(cpu["plain_nat"])
                                           / statistics.median(cpu["plain_nat_noflowtable"]), 3)
    print(json.dumps(res))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as exc:
        print(f"bench_forwarding: interrupted ({str(exc) or 'SIGINT'}); everything it made is removed", file=sys.stderr)
        sys.exit(130)
