#!/usr/bin/env python3
"""Benchmark the raw-netlink data-plane layer on a 2D torus of namespaces.

Builds ROWS x COLS namespaces (40 x 40 for --nodes 1600), each with a veth
to its east and south neighbour (so every node has n/s/e/w), a /31 per end,
forwarding on; installs --routes routes in one namespace (add, then
replace), toggles one link, puts tbf on every interface, tears everything
down, and prints ONE JSON object on stdout. Progress goes to stderr.

Everything it makes carries the prefix ``b<pid>-`` and is removed in a
``finally`` (also on Ctrl-C, SIGTERM, SIGHUP). After a ``kill -9``:
``scripts/bench_netlink.py --cleanup b<pid>-``.

Run as root: ``python3 scripts/bench_netlink.py --nodes 1600``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import signal
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emu.dataplane import netns, tc  # noqa: E402
from emu.dataplane.netlink import NetlinkBatch  # noqa: E402
from emu.errors import DataplaneError  # noqa: E402

log = logging.getLogger("bench_netlink")
# Fixed interface indexes per node (index 1 is lo): the builder knows every
# index in advance, so no message ever waits for a reply to learn one.
IDX = {"e": 2, "s": 3, "w": 4, "n": 5}


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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


def build(names: list[str], links: list, socks: dict[int, NetlinkBatch], fds: dict[int, int]) -> None:
    """Namespaces, veth pairs, links up, /31 addresses: one write per namespace per phase."""
    netns.create_many(names, netns.ROUTER_SYSCTLS)
    log.info("namespaces created")
    for i, name in enumerate(names):
        socks[i] = NetlinkBatch(name)
        fds[i] = netns.open_fd(name)
    # Phase 1: every pair is created from its "a" end's socket, peer placed by fd.
    for a, b, ia, ib in links:
        socks[a].veth(ia, ib, fds[b], index=IDX[ia], peer_index=IDX[ib])
    for s in socks.values():
        s.send()
    log.info("veth pairs created")
    # Phase 2: lo + every end up, one /31 per end (link k: 10.0.0.0 + 2k, +1).
    base = 10 << 24
    for k, (a, b, ia, ib) in enumerate(links):
        socks[a].addr("add", IDX[ia], _ip(base + 2 * k), 31)
        socks[b].addr("add", IDX[ib], _ip(base + 2 * k + 1), 31)
    for s in socks.values():
        s.link_set(1, up=True)
    for a, b, ia, ib in links:
        socks[a].link_set(IDX[ia], up=True)
        socks[b].link_set(IDX[ib], up=True)
    for s in socks.values():
        s.send()
    log.info("links up, addresses set")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1600)
    ap.add_argument("--routes", type=int, default=100_000)
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
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.nodes + 256                      # a socket and an fd per namespace
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))

    prefix = f"b{os.getpid()}-"
    rows, cols, links = torus(args.nodes)
    names = [f"{prefix}{r}-{c}" for r in range(rows) for c in range(cols)]
    log.info("torus %dx%d: %d namespaces, %d links, prefix %s", rows, cols, len(names), len(links), prefix)
    out: dict = {"nodes": len(names), "links": len(links)}
    errors: list[str] = []
    socks: dict[int, NetlinkBatch] = {}
    fds: dict[int, int] = {}
    try:
        t = time.perf_counter()
        build(names, links, socks, fds)
        out["build_s"] = round(time.perf_counter() - t, 3)
        with netns.inside(names[0]):   # one real packet across the first link
            ok = os.system("ping -c1 -W1 -q 10.0.0.1 >/dev/null 2>&1") == 0
        if not ok:
            errors.append("ping across link 0 failed")
        out.update(routes_bench(socks[0], args.routes))
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
        t = time.perf_counter()
        for s in socks.values():
            s.close()
        for fd in fds.values():
            os.close(fd)
        netns.delete_many(netns.list_names(prefix))
        out["teardown_s"] = round(time.perf_counter() - t, 3)
        out["errors"] = len(errors)
        if errors:
            out["first_error"] = errors[0]
        print(json.dumps(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
