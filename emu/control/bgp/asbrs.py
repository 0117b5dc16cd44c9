"""Extra c-ASBRs of an operator (scenario ``bgp.c_asbrs``): their namespaces, links and default routes.

spec: bgp-mobile-routing-atn §3 (an operator's several c-ASBRs share its core
AS and hold the full table, synchronised over iBGP; a route reflector where
it pays). The first c-ASBR is the operator's core node (the data plane's);
each further one gets a namespace of the run (journaled before it exists,
so ``down`` removes it), an iBGP link per session (:func:`.wiring.ibgp_pairs`),
a link to each GS whose s-ASBR peers with it (:func:`.wiring.gs_rank`), and a
default route toward the core node (the return path of the traffic it
forwards). What to make comes from :func:`.wiring.plumbing` (pure); this
module only makes it.
"""

from __future__ import annotations

import subprocess

from emu.dataplane import netns
from emu.errors import DataplaneError

from .wiring import PEER_PLEN, Plumbing


def _ip(ns: str, *argv: str) -> None:
    p = subprocess.run(["ip", "-n", ns, *argv], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise DataplaneError(f"ip {' '.join(argv)}", ns, p.returncode, p.stderr.strip()[:200])


def build(run, plan: Plumbing) -> None:
    """Make the namespaces (journaled first), links, addresses and default routes of ``plan``."""
    if not plan.namespaces and not plan.veths:
        return
    if run is not None:
        run.record_netns(list(plan.namespaces))
    netns.create_many(list(plan.namespaces), netns.ROUTER_SYSCTLS)
    for ns in plan.namespaces:
        _ip(ns, "link", "set", "lo", "up")
    for v in plan.veths:
        p = subprocess.run(["ip", "link", "add", "bgpx0", "netns", v.a_ns, "type", "veth", "peer", "name", "bgpx1",
                            "netns", v.b_ns], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise DataplaneError("ip link add veth", f"{v.a_ns} <-> {v.b_ns}", p.returncode, p.stderr.strip()[:200])
        for ns, tmp, name, addr in ((v.a_ns, "bgpx0", v.a_if, v.a_addr), (v.b_ns, "bgpx1", v.b_if, v.b_addr)):
            _ip(ns, "link", "set", tmp, "name", name)
            _ip(ns, "addr", "add", f"{addr}/{PEER_PLEN}", "dev", name, "nodad")
            _ip(ns, "link", "set", name, "up")
    for ns, via in plan.default_via:
        _ip(ns, "-6", "route", "add", "default", "via", via)
