#!/usr/bin/env python3
"""pyroute2's fastest mode against our hand-packed netlink, side by side, on a 2D torus of namespaces.

(a) Builds ROWS x COLS namespaces (40 x 40 for --nodes 1600), each with a
veth to its east and south neighbour (so every node has n/s/e/w), a /31 per
end, forwarding on -- twice, torn down in between:

- ``ours``: namespaces by ``emu.dataplane.netns.create_many`` (unshare +
  bind mount in-process, sysctls set inside), veth pairs and addresses by
  the data plane's own encoders (``NetlinkBatch.veth``/``addr``,
  ``emu.dataplane.rtpack``; links up with ``scripts/_rawnl.py``), one write
  per namespace per phase;
- ``pyroute2``: namespaces by ``pyroute2.netns.create`` (it forks a child
  per namespace; forwarding sysctls set afterwards, pyroute2 has no sysctl
  API), links and addresses encoded by pyroute2's message classes
  (``ifinfmsg``/``ifaddrmsg``, ``emu.dataplane.nlmsg``), the same bulk
  transport.

(c) Encoding alone, no kernel (``encode_us``): microseconds per veth and
per address message, pyroute2's message classes against ours.

(b) In one namespace, --routes /32 routes in a table, add then replace:
``ours`` (``NetlinkBatch.route``, the data plane's one route encoder),
``pyroute2`` message classes (``rtmsg`` encoded per route, the same bulk
transport) and pyroute2's ``AsyncIPRoute`` with --async-sample requests in
flight at once (per-request cost measured on the sample, extrapolated).
Then, with ``ours``: one link toggle and tbf on every interface.

Prints ONE JSON object on stdout: both modes side by side, which pyroute2
mode was fastest, the ratios pyroute2-best / ours, and whether pyroute2
meets the route budget (--route-budget-s per 100k routes: a 15 s slice at
--speed 10). Progress goes to stderr.

Everything it makes carries the prefix ``b<pid>-``, is journalled in a run
record (``emu.dataplane.state.Run``) before it exists, and is removed in a
``finally`` (also on Ctrl-C, SIGTERM, SIGHUP). After a ``kill -9``:
``leo-emu down --all`` (or ``scripts/bench_netlink.py --cleanup b<pid>-``).

Run as root: ``python3 scripts/bench_netlink.py --nodes 1600``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _rawnl  # noqa: E402
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL  # noqa: E402
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK  # noqa: E402

from emu.dataplane import cleanup, netns, nlmsg, tc  # noqa: E402
from emu.dataplane.netlink import NetlinkBatch, encode  # noqa: E402
from emu.dataplane.procs import interrupt_on  # noqa: E402
from emu.dataplane.state import Run  # noqa: E402
from emu.errors import DataplaneError  # noqa: E402

log = logging.getLogger("bench_netlink")
# Fixed interface indexes per node (index 1 is lo): the builder knows every
# index in advance, so no message ever waits for a reply to learn one.
IDX = {"e": 2, "s": 3, "w": 4, "n": 5}


def _ip(n: int) -> bytes:
    return struct.pack("!I", n)


def torus(nodes: int) -> tuple[int, int, list[tuple[int, int, str, str]]]:
    """rows, cols and links (a, b, a's interface, b's interface) of a 2D torus."""
    cols = max(1, int(math.isqrt(nodes)))
    rows = max(1, nodes // cols)
    links = []
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if cols > 2 or c + 1 < cols:
                links.append((i, r * cols + (c + 1) % cols, "e", "w"))
            if rows > 2 or r + 1 < rows:
                links.append((i, ((r + 1) % rows) * cols + c, "s", "n"))
    return rows, cols, links


def build(names: list[str], links: list, socks: dict[int, NetlinkBatch], fds: dict[int, int],
          mode: str = "ours") -> dict:
    """Namespaces, veth pairs, links up, /31 addresses: one write per namespace per phase. Returns timings."""
    t0 = time.perf_counter()
    if mode == "ours":
        netns.create_many(names, netns.ROUTER_SYSCTLS)
    else:
        import pyroute2.netns as prns

        for name in names:
            prns.create(name)
        netns.set_sysctls_many(names, netns.ROUTER_SYSCTLS)
    t1 = time.perf_counter()
    log.info("%s: namespaces created", mode)
    for i, name in enumerate(names):
        socks[i] = NetlinkBatch(name)
        fds[i] = netns.open_fd(name)
    # Phase 1: every pair is created from its "a" end's socket, peer placed by fd.
    for a, b, ia, ib in links:
        if mode == "ours":
            socks[a].veth(ia, ib, fds[b], index=IDX[ia], peer_index=IDX[ib])
        else:
            socks[a].queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                           nlmsg.veth_body(ia, ib, fds[b], IDX[ia], IDX[ib], None, None, None, None), "veth add")
    for s in socks.values():
        s.send()
    log.info("%s: veth pairs created", mode)
    # Phase 2: lo + every end up, one /31 per end (link k: 10.0.0.0 + 2k, +1).
    base = 10 << 24
    addr = (lambda s, i, a: s.addr("add", i, a, 31)) if mode == "ours" else \
        (lambda s, i, a: s.queue(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
                                 nlmsg.addr_body.__wrapped__(socket.inet_ntoa(a), 31, i, 0, True), "addr add"))
    up = (lambda s, i: _rawnl.link_up(s, i)) if mode == "ours" else (lambda s, i: s.link_set(i, up=True))
    for k, (a, b, ia, ib) in enumerate(links):
        addr(socks[a], IDX[ia], _ip(base + 2 * k))
        addr(socks[b], IDX[ib], _ip(base + 2 * k + 1))
    for s in socks.values():
        up(s, 1)
    for a, b, ia, ib in links:
        up(socks[a], IDX[ia])
        up(socks[b], IDX[ib])
    for s in socks.values():
        s.send()
    t2 = time.perf_counter()
    log.info("%s: links up, addresses set", mode)
    return {"namespaces_s": round(t1 - t0, 3), "links_addrs_s": round(t2 - t1, 3), "build_s": round(t2 - t0, 3)}


def _pyroute2_route_body(verb: str, dst: bytes, gw: str, oif: int) -> bytes:
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    return encode(rtmsg, {"family": 2, "dst_len": 32, "table": 100, "proto": 4, "type": 1},
                  [("RTA_DST", socket.inet_ntoa(dst)), ("RTA_TABLE", 100), ("RTA_OIF", oif), ("RTA_GATEWAY", gw)])


def routes_pyroute2(s: NetlinkBatch, count: int) -> dict:
    """pyroute2 message classes: every route encoded by ``rtmsg``, sent in bulk on the same transport."""
    from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
    from pyroute2.netlink.rtnl import RTM_NEWROUTE

    dsts = [_ip((30 << 24) + i) for i in range(count)]
    s.ack_each = False
    t0 = time.perf_counter()
    for d in dsts:
        s.queue(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, _pyroute2_route_body("add", d, "10.0.0.1", IDX["e"]),
                "route add")
    s.send()
    t1 = time.perf_counter()
    for d in dsts:
        s.queue(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, _pyroute2_route_body("replace", d, "10.0.0.3", IDX["s"]),
                "route replace")
    s.send()
    t2 = time.perf_counter()
    s.ack_each = True
    return {"add_s": round(t1 - t0, 3), "replace_s": round(t2 - t1, 3)}


def routes_async(name: str, sample: int, count: int) -> dict:
    """pyroute2's AsyncIPRoute, ``sample`` route adds then replaces all in flight at once (asyncio.gather)."""
    import asyncio

    from pyroute2 import AsyncIPRoute

    async def run() -> dict:
        with netns.inside(name):   # a socket opened here belongs to the namespace (no fork)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)   # SO_RCVBUFFORCE: thousands of acks in flight
        ipr = AsyncIPRoute(use_socket=sock)
        await ipr.setup_endpoint()
        try:
            dsts = [socket.inet_ntoa(_ip((40 << 24) + i)) for i in range(sample)]
            t0 = time.perf_counter()
            await asyncio.gather(*[ipr.route("add", dst=f"{d}/32", oif=IDX["e"], gateway="10.0.0.1", table=100)
                                   for d in dsts])
            t1 = time.perf_counter()
            await asyncio.gather(*[ipr.route("replace", dst=f"{d}/32", oif=IDX["s"], gateway="10.0.0.3",
                                             table=100) for d in dsts])
            t2 = time.perf_counter()
        finally:
            ipr.close()
        per_add, per_rep = (t1 - t0) / sample, (t2 - t1) / sample
        return {"sample": sample, "add_us_per_route": round(per_add * 1e6, 1),
                "replace_us_per_route": round(per_rep * 1e6, 1),
                "add_s": round(per_add * count, 3), "replace_s": round(per_rep * count, 3), "extrapolated": True}

    return asyncio.run(run())


def routes_bench(s: NetlinkBatch, count: int) -> dict:
    """``count`` /32 routes in table 100: add, then replace with another gateway."""
    dsts = [_ip((20 << 24) + i) for i in range(count)]
    gw_e, gw_s = "10.0.0.1", "10.0.0.3"   # link 0 = node 0 east, link 1 = node 0 south
    s.ack_each = False                     # hot path: hear only about failures
    t0 = time.perf_counter()
    for d in dsts:
        s.route("add", d, 32, oif=IDX["e"], gateway=gw_e, table=100)
    s.send()
    t1 = time.perf_counter()
    for d in dsts:
        s.route("replace", d, 32, oif=IDX["s"], gateway=gw_s, table=100)
    s.send()
    t2 = time.perf_counter()
    s.ack_each = True                      # the same replace with one ack per route, for comparison
    for d in dsts:
        s.route("replace", d, 32, oif=IDX["e"], gateway=gw_e, table=100)
    s.send()
    t3 = time.perf_counter()
    installed = [r for r in s.routes(table=100) if r["dst"].startswith("20.")]
    via_e = sum(1 for r in installed if r["gateway"] == gw_e)
    return {"routes_100k_add_s": round(t1 - t0, 3), "routes_100k_replace_s": round(t2 - t1, 3),
            "routes_100k_replace_acked_s": round(t3 - t2, 3), "routes_installed": len(installed),
            "routes_on_final_gateway": via_e}


def toggle_ms(s: NetlinkBatch, idx: int, repeat: int = 20) -> float:
    """Median ms of one link down + up, each waited for (two round trips)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        s.link_set(idx, up=False)
        s.send()
        s.link_set(idx, up=True)
        s.send()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


def teardown(prefix: str, socks: dict, fds: dict) -> float:
    t = time.perf_counter()
    for s in socks.values():
        s.close()
    for fd in fds.values():
        os.close(fd)
    socks.clear()
    fds.clear()
    netns.delete_many(netns.list_names(prefix))
    return round(time.perf_counter() - t, 3)


def settle(timeout_s: float = 30.0) -> float:
    """Wait until the kernel has finished freeing torn-down namespaces (slab stops shrinking)."""
    def slab() -> int:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Slab:"):
                return int(line.split()[1])
        return 0
    t0 = time.perf_counter()
    prev = slab()
    while time.perf_counter() - t0 < timeout_s:
        time.sleep(1.0)
        cur = slab()
        if prev - cur < 0.01 * prev:
            break
        prev = cur
    return round(time.perf_counter() - t0, 1)


def encode_us(n: int = 300) -> dict:
    """Per-message encoding cost of a veth pair and an address: pyroute2's message classes vs ours."""
    from emu.dataplane import rtpack

    veth = ("n", "s", 7, 10, 11, "02:00:00:00:00:01", "02:00:00:00:00:02", 1600, 15)
    out = {}
    for label, fn in (("veth", lambda i: (nlmsg.veth_body, rtpack.veth_body, veth)),
                      ("addr", lambda i: (nlmsg.addr_body.__wrapped__, rtpack.addr_body,
                                          (f"fe80::1:{i:x}", 64, 10, 0, True)))):
        for who, pick in (("pyroute2", 0), ("ours", 1)):
            t = time.perf_counter()
            for i in range(n):
                f = fn(i)
                f[pick](*f[2])
            out[f"{label}_{who}"] = round((time.perf_counter() - t) / n * 1e6, 1)
    return out


def compare(torus_res: dict, routes_res: dict, budget_s: float) -> dict:
    """pyroute2's fastest measured mode per task, and pyroute2-best / ours."""
    out: dict = {"pyroute2_best": {}, "ratio_pyroute2_best_over_ours": {}}
    if "pyroute2" in torus_res:
        out["pyroute2_best"]["torus_build"] = "message classes + bulk transport"
        for k in ("namespaces_s", "links_addrs_s", "build_s"):
            out["ratio_pyroute2_best_over_ours"][f"torus_{k[:-2]}"] = round(
                torus_res["pyroute2"][k] / torus_res["ours"][k], 2)
    modes = {m: v for m, v in routes_res.items() if m != "ours"}
    for phase in ("add_s", "replace_s"):
        best = min(modes, key=lambda m: modes[m][phase])
        out["pyroute2_best"][f"routes_{phase[:-2]}"] = best
        out["ratio_pyroute2_best_over_ours"][f"routes_{phase[:-2]}"] = round(
            modes[best][phase] / routes_res["ours"][phase], 1)
    best_route_s = max(min(v[p] for v in modes.values()) for p in ("add_s", "replace_s"))
    out["route_budget_s"] = round(budget_s, 3)
    out["pyroute2_meets_route_budget"] = best_route_s <= budget_s
    out["ours_meets_route_budget"] = max(routes_res["ours"]["add_s"], routes_res["ours"]["replace_s"]) <= budget_s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1600)
    ap.add_argument("--routes", type=int, default=100_000)
    ap.add_argument("--async-sample", type=int, default=5000, help="AsyncIPRoute requests measured (0: skip)")
    ap.add_argument("--route-budget-s", type=float, default=1.5, help="budget for 100k routes (add or replace)")
    ap.add_argument("--skip-pyroute2-torus", action="store_true", help="build the torus with ours only")
    ap.add_argument("--cleanup", metavar="PREFIX", help="only remove namespaces left by a killed run")
    args = ap.parse_args()
    if args.nodes < 9 and not args.cleanup:
        ap.error("--nodes must be at least 9 (a 3 x 3 torus)")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(relativeCreated)7.0f ms %(message)s")
    if os.geteuid() != 0:
        print("bench_netlink: needs root (creates network namespaces)", file=sys.stderr)
        return 77
    if args.cleanup:
        print(json.dumps({"removed": netns.delete_many(netns.list_names(args.cleanup))}))
        return 0
    interrupt_on()  # SIGTERM, SIGHUP as Ctrl-C: the finally tears down
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.nodes + 256                      # a socket and an fd per namespace
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))

    prefix = f"b{os.getpid()}-"
    rows, cols, links = torus(args.nodes)
    names = [f"{prefix}{r}-{c}" for r in range(rows) for c in range(cols)]
    log.info("torus %dx%d: %d namespaces, %d links, prefix %s", rows, cols, len(names), len(links), prefix)
    out: dict = {"nodes": len(names), "links": len(links), "encode_us": encode_us()}
    errors: list[str] = []
    socks: dict[int, NetlinkBatch] = {}
    fds: dict[int, int] = {}
    run = Run.create()  # as the emulator's runs: `leo-emu down` removes all of it, also after a kill -9
    run.record_pid(os.getpid(), "bench_netlink")
    run.record_netns(names)
    try:
        torus_res: dict = {}
        if not args.skip_pyroute2_torus:
            torus_res["pyroute2"] = build(names, links, socks, fds, "pyroute2")
            teardown(prefix, socks, fds)
            out["settled_s"] = settle()
        torus_res["ours"] = build(names, links, socks, fds, "ours")
        out["torus"] = torus_res
        with netns.inside(names[0]):   # one real packet across the first link
            ok = os.system("ping -c1 -W1 -q 10.0.0.1 >/dev/null 2>&1") == 0
        if not ok:
            errors.append("ping across link 0 failed")
        scale = 100_000 / args.routes
        ours = routes_bench(socks[0], args.routes)
        routes_res = {"ours": {"add_s": ours.pop("routes_100k_add_s"), "replace_s": ours.pop("routes_100k_replace_s"),
                               "replace_acked_s": ours.pop("routes_100k_replace_acked_s")},
                      "pyroute2_msg": routes_pyroute2(socks[0], args.routes)}
        out.update(ours)
        if args.async_sample:
            routes_res["pyroute2_async"] = routes_async(names[0], min(args.async_sample, args.routes), args.routes)
        out["routes"] = routes_res
        out["routes_count"] = args.routes
        out.update(compare(torus_res, routes_res, args.route_budget_s / scale))
        out["link_toggle_ms"] = toggle_ms(socks[0], IDX["e"])
        shapes = [tc.LinkShape(names[i], idx, 100_000_000) for i in socks for idx in IDX.values()]
        t = time.perf_counter()
        tc.shape_many(shapes, {names[i]: s for i, s in socks.items()})
        out["tbf_per_iface_us"] = round((time.perf_counter() - t) / len(shapes) * 1e6, 1)
    except DataplaneError as exc:
        errors.append(str(exc))
    except KeyboardInterrupt as exc:
        errors.append(f"interrupted ({exc})")
    finally:
        out["teardown_s"] = teardown(prefix, socks, fds)
        cleanup.teardown(run)  # nothing left to remove but the record
        out["errors"] = len(errors)
        if errors:
            out["first_error"] = errors[0]
        print(json.dumps(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
