#!/usr/bin/env python3
"""10^6 MNP routes into one c-ASBR: BIRD 2 RIB and kernel FIB convergence, memory, churn rate.

spec: bgp-mobile-routing-atn §3 (scaling: one c-ASBR, 100 s-ASBR eBGP peers
x 10K MNPs = O(10^6) routes; worst case 10^7 updates/hour = 2,778 updates/s).

The rig: one c-ASBR namespace, --peers s-ASBR namespaces each with its own
veth and /64 to the core (BIRD opens one session per remote address), all
configured by emu.control.bgp (the same renderer and daemon code as the
overlay). Phases, each timed from the first ``birdc configure`` of the
s-ASBRs until the c-ASBR's counters (``show protocols all``: the BGP
channels' imported routes = RIB, the kernel protocol's exported routes = FIB)
reach the target:

0. RIB only: the load below with the c-ASBR's kernel protocol disabled
   (BIRD's own share), then withdrawn;
1. load: every s-ASBR announces its --mnps MNPs (BIRD packs many per UPDATE);
2. withdraw: every s-ASBR withdraws them all;
3. announce, one prefix per UPDATE: every MNP with its own MED, so no two
   share an UPDATE (checked: wire bytes per prefix on one session from ``ss``);
4. replace all 10^6 held routes, one prefix per UPDATE (a new MED each): churn
   with the full table in place, timed by the update counters (RIB: the BGP
   channels' accepted import updates; FIB: the kernel protocol's export updates).

The c-ASBR runs what ``up`` runs (``--core-layout stub-tables``: each s-ASBR
session on a table of its own, piped into master6; ``shared`` for the
earlier layout, every session on master6). The feeding s-ASBRs run no
kernel protocol (theirs would subscribe to route notifications, and each
route the c-ASBR installs would be broadcast past 100 more sockets: a cost
of the rig, not of the c-ASBR); their CPU is reported (``stubs_cpu_s``).

Baseline from the same run: the same number of routes installed into a
namespace's kernel table by ``ip -batch`` (no BGP). Prints ONE JSON object
(--format json) or a table; progress on stderr. Everything it creates carries
the prefix ``bbgp<pid>-`` and is removed in a ``finally`` (also on Ctrl-C,
SIGTERM, SIGHUP). Never reads /proc/net/ipv6_route (it spins for minutes on a
table this size): counts come from BIRD and from a netlink dump (``ip``).

Run as root: ``python3 scripts/bench_bgp_scale.py --format json``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emu.control.bgp import birdc, launch  # noqa: E402
from emu.control.bgp.model import TIMER_PROFILES, Link, Operator, Speaker, build_network  # noqa: E402
from emu.control.bgp.render import render_mnps  # noqa: E402
from emu.dataplane import netns  # noqa: E402

log = logging.getLogger("bench_bgp_scale")
SPEC_WORST_UPDATES_PER_S = 2778  # spec §3: 10^7 updates per hour
BUDGET_CONVERGE_S = 15.0
MSP = "fd00:a::/32"
CORE_ASN = 65001


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sh(*argv: str, stdin: str | None = None) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, input=stdin)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}: {p.stderr.strip()[:300]}")
    return p.stdout


def mnps_of(peer: int, count: int) -> list[str]:
    """Peer ``peer``'s MNPs: consecutive /56s of the MSP."""
    base = int(ipaddress.IPv6Network(MSP).network_address)
    first = peer * count
    return [f"{ipaddress.IPv6Address(base + ((first + j) << 72))}/56" for j in range(count)]


def bird_version() -> str:
    p = subprocess.run(["bird", "--version"], capture_output=True, text=True)
    return (p.stdout + p.stderr).strip()


def slab_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def settled_slab_kb(timeout_s: float = 90.0) -> int:
    """Slab once it stops moving (a deleted namespace frees its routes asynchronously, for many seconds)."""
    end = time.monotonic() + timeout_s
    prev = slab_kb()
    while time.monotonic() < end:
        time.sleep(2)
        now = slab_kb()
        if abs(now - prev) < 5 * 1024:
            return now
        prev = now
    return prev


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (load-independent, unlike wall time on a shared machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def kernel_route_count(netns_name: str, *selector: str) -> int:
    """Routes in the namespace's main IPv6 table through a netlink dump (never /proc/net/ipv6_route)."""
    p = subprocess.Popen(["ip", "-n", netns_name, "-6", "route", "show", *selector], stdout=subprocess.PIPE)
    n = sum(1 for _ in p.stdout)
    p.wait()
    return n


# ---------------------------------------------------------------------------- baseline
def baseline_ip_batch(prefix: str, routes: list[str]) -> dict:
    """The same routes into a kernel table without BGP: ``ip -batch`` in one namespace."""
    name = prefix + "base"
    netns.create_many([name], netns.ROUTER_SYSCTLS)
    try:
        sh("ip", "-n", name, "link", "add", "name", "base0", "type", "veth", "peer", "name", "base1")
        sh("ip", "-n", name, "addr", "add", "fd30::1/64", "dev", "base0", "nodad")
        sh("ip", "-n", name, "link", "set", "dev", "base0", "up")
        sh("ip", "-n", name, "link", "set", "dev", "base1", "up")
        with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
            f.writelines(f"route add {r} via fd30::2 dev base0\n" for r in routes)
        slab0 = settled_slab_kb()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        sh("ip", "-n", name, "-6", "-batch", f.name)
        took = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        slab1 = slab_kb()
        held = kernel_route_count(name, "via", "fd30::2")
        os.unlink(f.name)
        cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime  # ip's own time + the kernel's for it
        return {"routes": held, "install_s": round(took, 2), "cpu_s": round(cpu, 2),
                "slab_delta_mb": round((slab1 - slab0) / 1024)}
    finally:
        netns.delete_many([name])


# ---------------------------------------------------------------------------- rig
def build_rig(prefix: str, peers: int) -> tuple[dict, list[str]]:
    core = prefix + "core"
    stubs = [f"{prefix}s{i:03d}" for i in range(peers)]
    netns.create_many([core, *stubs], netns.ROUTER_SYSCTLS)
    lines = [f"link add p{i} type veth peer name core netns {s}" for i, s in enumerate(stubs)]
    lines += [f"addr add fd20:{i:x}::1/64 dev p{i} nodad" for i in range(peers)]
    lines += [f"link set p{i} up" for i in range(peers)] + ["link set lo up"]
    sh("ip", "-n", core, "-batch", "-", stdin="\n".join(lines) + "\n")
    for i, s in enumerate(stubs):
        sh("ip", "-n", s, "-batch", "-",
           stdin=f"addr add fd20:{i:x}::2/64 dev core nodad\nlink set core up\nlink set lo up\n")
    ops = [Operator("opa", CORE_ASN, (MSP,))]
    speakers = [Speaker("core", core, "10.254.255.1", operator="opa")]
    speakers += [Speaker(f"s{i:03d}", s, f"10.254.{i // 250}.{i % 250 + 1}", asn=4200000000 + i)
                 for i, s in enumerate(stubs)]
    links = [Link("core", f"fd20:{i:x}::1", f"s{i:03d}", f"fd20:{i:x}::2") for i in range(peers)]
    return build_network(ops, speakers, links), [core, *stubs]


def core_counters(ov) -> tuple[int, int]:
    """(RIB: routes the BGP channels imported, FIB: routes the kernel protocol exported)."""
    routes = birdc.protocols_routes(ov.socket("core"))
    rib = sum(r.imported for name, r in routes.items() if name.startswith("s"))
    kernel = routes.get("kernel6")  # no channel counters while the kernel protocol is disabled
    return rib, kernel.exported if kernel else 0


def wall_clock() -> str:
    """Now as BIRD prints a protocol's "Since" today (local time, ms)."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


def sessions_reset(ov, phase_start: str) -> list[str]:
    """The c-ASBR's BGP sessions that are down now or changed state since ``phase_start`` (went down and up)."""
    out = []
    for n, s in birdc.protocols(ov.socket("core")).items():
        if s.proto == "BGP" and (not s.established or (":" in s.since and s.since >= phase_start)):
            out.append(n)
    return sorted(out)


def push(ov, texts: dict[str, str], pool: ThreadPoolExecutor) -> float:
    """Write every s-ASBR's MNP file (checked), then reload them all at once; return the reload start."""
    list(pool.map(lambda kv: ov.daemons[kv[0]].write_mnps(kv[1]), texts.items()))
    t0 = time.monotonic()
    list(pool.map(lambda name: birdc.configure(ov.socket(name)), texts))
    return t0


def wait_counters(ov, t0: float, rib_target: int, fib_target: int | None, timeout_s: float) -> dict:
    """Poll the c-ASBR's counters until RIB (and FIB, unless ``fib_target`` is None) reach their targets."""
    stubs = [d.pid for name, d in ov.daemons.items() if name != "core"]
    cpu0, stub_cpu0 = cpu_s(ov.daemons["core"].pid), sum(cpu_s(p) for p in stubs)
    start = wall_clock()
    rib_at = fib_at = None
    rib = fib = -1
    while time.monotonic() - t0 < timeout_s:
        rib, fib = core_counters(ov)
        now = time.monotonic() - t0
        if rib_at is None and rib == rib_target:
            rib_at = now
        if fib_at is None and fib == fib_target:
            fib_at = now
        if rib_at is not None and (fib_at is not None or fib_target is None):
            break
        time.sleep(0.05)
    return {"rib_s": rib_at and round(rib_at, 2), "fib_s": fib_at and round(fib_at, 2),
            "rib_routes": rib, "fib_routes": fib, "core_cpu_s": round(cpu_s(ov.daemons["core"].pid) - cpu0, 2),
            "stubs_cpu_s": round(sum(cpu_s(p) for p in stubs) - stub_cpu0, 2),
            "sessions_reset": sessions_reset(ov, start),
            "converged": rib_at is not None and (fib_at is not None or fib_target is None)}


def update_counters(ov) -> tuple[int, int]:
    """(route updates the c-ASBR accepted from its s-ASBRs, route updates its kernel protocol sent) so far."""
    routes = birdc.protocols_routes(ov.socket("core"))
    kernel = routes.get("kernel6")
    return (sum(r.import_updates for name, r in routes.items() if name.startswith("s")),
            kernel.export_updates if kernel else 0)


def wait_updates(ov, t0: float, before: tuple[int, int], n: int, timeout_s: float) -> dict:
    """Poll until ``n`` more updates came into the RIB and went out to the kernel (replacements: counts stay)."""
    rib_at = fib_at = None
    rib = fib = 0
    start = wall_clock()
    cpu0 = cpu_s(ov.daemons["core"].pid)
    while time.monotonic() - t0 < timeout_s:
        now_rib, now_fib = update_counters(ov)
        rib, fib = now_rib - before[0], now_fib - before[1]
        now = time.monotonic() - t0
        if rib_at is None and rib >= n:
            rib_at = now
        if fib_at is None and fib >= n:
            fib_at = now
        if rib_at is not None and fib_at is not None:
            break
        time.sleep(0.05)
    return {"rib_s": rib_at and round(rib_at, 2), "fib_s": fib_at and round(fib_at, 2), "rib_updates": rib,
            "fib_updates": fib, "core_cpu_s": round(cpu_s(ov.daemons["core"].pid) - cpu0, 2),
            "sessions_reset": sessions_reset(ov, start),
            "converged": rib_at is not None and fib_at is not None}


def wire_bytes(ov, stub_ns: str) -> tuple[int, str]:
    """Bytes the s-ASBR's BGP socket has had acknowledged (``ss -ti``), to tell packed from one-per-UPDATE,
    and the session's last state change (the count restarts with a new session)."""
    out = sh("ip", "netns", "exec", stub_ns, "ss", "-tinH", "state", "established", "( dport = :179 or sport = :179 )")
    since = birdc.protocols(ov.socket("core"))["s000"].since
    return sum(int(m) for m in re.findall(r"bytes_acked:(\d+)", out)), since


def bytes_per_prefix(before: tuple[int, str], after: tuple[int, str], prefixes: int) -> float | None:
    return round((after[0] - before[0]) / prefixes, 1) if before[1] == after[1] else None


def run(args) -> dict:
    prefix = f"bbgp{os.getpid()}-"
    total = args.peers * args.mnps
    per_peer = [mnps_of(i, args.mnps) for i in range(args.peers)]
    result: dict = {"loadavg_start": loadavg(), "peers": args.peers, "mnps_per_peer": args.mnps, "routes_target": total,
                    "timers": args.timers, "bird": bird_version(), "core_layout": args.core_layout,
                    "budget": {"converge_s": BUDGET_CONVERGE_S, "updates_per_s": SPEC_WORST_UPDATES_PER_S}}
    log.info("baseline: %d routes by ip -batch", total)
    result["baseline_ip_batch"] = baseline_ip_batch(prefix, [m for ms in per_peer for m in ms])
    log.info("baseline: %s", result["baseline_ip_batch"])

    names: list[str] = []
    ov = None
    work = Path(tempfile.mkdtemp(prefix="bbgp-"))
    pool = ThreadPoolExecutor(8)
    try:
        net, names = build_rig(prefix, args.peers)
        # the feeding s-ASBRs run no kernel protocol: each would subscribe to the kernel's route notifications,
        # and every route the c-ASBR installs would be broadcast past 100 more sockets (the rig's cost)
        ov = launch.start(None, net, TIMER_PROFILES[args.timers], workdir=work, keep=False, stub_kernel=False,
                          stub_tables=args.core_layout == "stub-tables")
        core_pid = ov.daemons["core"].pid
        t = time.monotonic()
        if not ov.wait_established(120):
            raise RuntimeError("not every BGP session came up within 120 s")
        result["sessions_up_s"] = round(time.monotonic() - t, 2)
        _, fib_base = core_counters(ov)  # the MSP's unreachable route
        rss0 = rss_mb(core_pid)
        stub_names = [f"s{i:03d}" for i in range(args.peers)]
        probe_ns = names[1]

        log.info("phase 0: load %d routes into the RIB only (kernel protocol disabled)", total)
        birdc.birdc(ov.socket("core"), "disable", "kernel6")
        t0 = push(ov, {s: render_mnps(per_peer[i]) for i, s in enumerate(stub_names)}, pool)
        result["rib_only"] = wait_counters(ov, t0, total, None, args.timeout)
        result["core_rss_mb_rib_only"] = round(rss_mb(core_pid))
        log.info("rib only: %s", result["rib_only"])
        t0 = push(ov, {s: "" for s in stub_names}, pool)
        wait_counters(ov, t0, 0, None, args.timeout)
        birdc.birdc(ov.socket("core"), "enable", "kernel6")
        time.sleep(1)

        slab0 = settled_slab_kb()
        log.info("phase 1: load %d routes (packed UPDATEs)", total)
        w0 = wire_bytes(ov, probe_ns)
        t0 = push(ov, {s: render_mnps(per_peer[i]) for i, s in enumerate(stub_names)}, pool)
        load = wait_counters(ov, t0, total, total + fib_base, args.timeout)
        load["wire_bytes_per_prefix"] = bytes_per_prefix(w0, wire_bytes(ov, probe_ns), args.mnps)
        result["routes"] = birdc.bgp_route_count(ov.socket("core"), timeout_s=300)
        result["routes_all_sources"] = birdc.route_count(ov.socket("core"), timeout_s=300)  # + MSP and ::/0
        result["kernel_routes"] = kernel_route_count(names[0], "proto", "bird")
        result["core_rss_mb"] = round(rss_mb(core_pid))
        result["core_rss_mb_before_load"] = round(rss0)
        result["kernel_slab_delta_mb"] = round((slab_kb() - slab0) / 1024)
        result["load"] = load
        result["converge_s"] = {"rib": load["rib_s"], "fib": load["fib_s"]}
        # CPU seconds the c-ASBR spent (its kernel route installs included): what wall time approaches on an
        # idle machine; on a shared one wall time is this divided by the CPU share the daemon got
        result["converge_core_cpu_s"] = load["core_cpu_s"]
        log.info("load: %s", load)

        log.info("phase 2: withdraw all")
        t0 = push(ov, {s: "" for s in stub_names}, pool)
        wd = wait_counters(ov, t0, 0, fib_base, args.timeout)
        wd["prefixes_per_s"] = wd["fib_s"] and round(total / wd["fib_s"])
        result["withdraw"] = wd
        log.info("withdraw: %s", wd)

        log.info("phase 3: announce all, one prefix per UPDATE")
        w0 = wire_bytes(ov, probe_ns)
        t0 = push(ov, {s: render_mnps(per_peer[i], distinct_attributes=True) for i, s in enumerate(stub_names)},
                  pool)
        one = wait_counters(ov, t0, total, total + fib_base, args.timeout)
        one["wire_bytes_per_prefix"] = bytes_per_prefix(w0, wire_bytes(ov, probe_ns), args.mnps)
        one["updates_per_s"] = one["fib_s"] and round(total / one["fib_s"])
        one["updates_per_s_rib"] = one["rib_s"] and round(total / one["rib_s"])
        # not done within --timeout (a loaded machine): what did go through, over the whole timeout
        one["updates_per_s_at_least"] = one["updates_per_s"] or round(one["fib_routes"] / args.timeout)
        result["one_prefix_per_update"] = one
        log.info("one prefix per UPDATE: %s", one)

        log.info("phase 4: replace all %d held routes, one prefix per UPDATE (new MED each)", total)
        before = update_counters(ov)
        t0 = push(ov, {s: render_mnps(per_peer[i], distinct_attributes=True, med_base=total + 1)
                       for i, s in enumerate(stub_names)}, pool)
        held = wait_updates(ov, t0, before, total, args.timeout)
        held["updates_per_s"] = held["fib_s"] and round(total / held["fib_s"])
        held["updates_per_s_at_least"] = held["updates_per_s"] or round(held["fib_updates"] / args.timeout)
        held["routes_after"] = core_counters(ov)[0]
        result["replace_held_one_prefix_per_update"] = held
        log.info("replace while held: %s", held)
    finally:
        pool.shutdown()
        if ov is not None:
            ov.daemons["core"].kill()  # the namespace's deletion frees its 10^6 kernel routes at once
            ov.stop()
        netns.delete_many(names)
        subprocess.run(["rm", "-rf", str(work)])

    result["loadavg_end"] = loadavg()
    base = result["baseline_ip_batch"]["install_s"]
    fib = result["converge_s"]["fib"]
    rates = [result[k]["updates_per_s_at_least"]
             for k in ("one_prefix_per_update", "replace_held_one_prefix_per_update")]
    rate = min(rates) if all(rates) else None  # a lower bound where a phase ran out of time
    result["ratio_fib_converge_vs_ip_batch"] = fib and base and round(fib / base, 2)
    result["within_budget"] = {
        "converge": bool(fib is not None and fib <= BUDGET_CONVERGE_S and result["routes"] == total),
        "churn": bool(rate and rate >= SPEC_WORST_UPDATES_PER_S)}
    result["ratio_churn_vs_spec_worst"] = rate and round(rate / SPEC_WORST_UPDATES_PER_S, 1)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=100)
    ap.add_argument("--mnps", type=int, default=10_000, help="MNPs per s-ASBR")
    ap.add_argument("--timers", choices=sorted(TIMER_PROFILES), default="default",
                    help="default: capacity without timer effects; aggressive (hold 3 s, BFD) resets sessions of a"
                         " c-ASBR busy installing 10^6 routes on a loaded machine")
    ap.add_argument("--timeout", type=float, default=180.0, help="per phase, seconds")
    ap.add_argument("--core-layout", choices=["stub-tables", "shared"], default="stub-tables",
                    help="stub-tables: each s-ASBR session on its own table piped into master6 (what up runs); "
                         "shared: every session on master6 (each route meets every session's export filter)")
    ap.add_argument("--format", choices=["json", "table"], default="json")
    args = ap.parse_args()
    for name, value, lo, hi in (("--peers", args.peers, 1, 4000), ("--mnps", args.mnps, 1, 100_000)):
        if not lo <= value <= hi:
            print(f"bench_bgp_scale: {name}: out of range {lo}..{hi} (got {value})", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("bench_bgp_scale: needs root (network namespaces)", file=sys.stderr)
        return 77
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _interrupt)
    result = run(args)
    if args.format == "json":
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        for k, v in sorted(result.items()):
            print(f"{k:34s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
