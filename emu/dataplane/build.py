"""Build a run's data plane for its first slice: namespaces, links, addresses, tunnels, NAT, servers.

spec: grc-based-routing §Data Forwarding Process (DEV -> UT -> satellites ->
GS -> PoP -> Internet), §Border Gateway (NAT at the PoP, return traffic to
the UT's GRC); satellite-semantic-addressing §5.4 (semantic IPv6 addresses
and MACs on every ISL). The per-slice parts (tables, ground links, GRC
bindings) live in :mod:`emu.dataplane.slices`.
"""

from __future__ import annotations

import logging
import subprocess

from emu.addressing.grc import to_ipv4
from emu.dataplane import desired, ifnames, netns, nlroute, procs, servers
from emu.dataplane.fabric import Fabric
from emu.dataplane.model import (IDX_LO, IDX_TUN, MTU_TUNNEL, TUNNEL_GS_ADDR, TUNNEL_MAC,
                                 TUNNEL_PLEN, VXLAN_PORT, Model)
from emu.dataplane.state import Run
from emu.dataplane.tc import LinkShape, shape_many
from emu.errors import DataplaneError

log = logging.getLogger(__name__)

SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.conf.all.ignore_routes_with_linkdown": 1,
    "net.ipv4.conf.default.ignore_routes_with_linkdown": 1,
    "net.ipv4.icmp_ratelimit": 0,
    "net.ipv6.conf.all.forwarding": 1,
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.default.addr_gen_mode": 1,  # no automatic link-local: we assign semantic ones
    "net.ipv6.icmp.ratelimit": 0,
}


class Builder:
    def __init__(self, model: Model, run: Run, features, progress=None):
        self.m = model
        self.run = run
        self.features = features
        self.progress = progress or (lambda stage, done, total: None)
        self.fabric: Fabric | None = None
        self.degradations: list[str] = []
        self.procs: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ namespaces
    def create_namespaces(self) -> None:
        names = [n.netns for n in self.m.nodes]
        taken = [n for n in names if netns.exists(n)]
        if taken:  # never journal (and so never let down remove) a namespace that is not ours
            raise DataplaneError("create namespaces", taken[0], 17, f"{len(taken)} namespace(s) of this name exist "
                                 "already; not touching them")
        self.run.record_netns(names)  # recorded before they exist: down can always find them
        self.progress("namespaces", 0, len(names))
        chunk = 200
        for i in range(0, len(names), chunk):
            netns.create_many(names[i:i + chunk], SYSCTLS)
            self.progress("namespaces", min(i + chunk, len(names)), len(names))
        self.fabric = Fabric(names)

    # ------------------------------------------------------------------ satellites
    def satellite_links(self, k0: int = 0) -> None:
        m, f = self.m, self.fabric
        grid = [desired.grid_veth(m, a, b, d) for a, b, d in m.grid_links.tolist()]
        self.progress("inter-satellite links", 0, len(grid))
        self._veths(grid)
        f.flush([s.netns for s in m.satellites])
        for s in m.satellites:
            f.nl[s.netns].link_set(IDX_LO, up=True)
        f.flush([s.netns for s in m.satellites])  # the applier brings slice k0's ISLs up (desired.initial)
        self.progress("inter-satellite links", len(grid), len(grid))

    def _veths(self, veths: list[desired.Veth]) -> None:
        """Create veth pairs as the desired state lists them (not yet up)."""
        f = self.fabric
        for v in veths:
            f.nl[self.m.by_name[v.node_a].netns].veth(
                v.ifname_a, v.ifname_b, f.fd[self.m.by_name[v.node_b].netns], index=v.index_a,
                peer_index=v.index_b, mac=v.mac_a, peer_mac=v.mac_b, mtu=v.mtu, group=v.group)

    # ------------------------------------------------------------------ terrestrial
    def terrestrial(self) -> None:
        """Terrestrial links, addresses and routes as the desired state lists them (created once)."""
        m, f = self.m, self.fabric
        ns = lambda name: m.by_name[name].netns  # noqa: E731
        terr = [n.netns for n in m.nodes if n.kind != "satellite"]
        for n in terr:
            f.nl[n].link_set(IDX_LO, up=True)
        veths = desired.terrestrial_veths(m)  # device <-> UT LAN, GS <-> core, core <-> Internet
        self._veths(veths)
        f.flush(terr)
        for v in veths:  # per namespace, in order: links up, then addresses, then routes through them
            f.nl[ns(v.node_a)].link_set(v.index_a, up=True)
            f.nl[ns(v.node_b)].link_set(v.index_b, up=True)
        for a in desired.terrestrial_addrs(m):
            f.nl[ns(a.node)].addr("add", a.index, a.addr, a.plen)
        for r in desired.terrestrial_routes(m):
            f.nl[ns(r.node)].route("add", r.dst, oif=r.oif, gateway=r.gateway)
        f.flush(terr)

    # ------------------------------------------------------------------ tunnels
    def tunnels(self, choice0) -> None:
        """UT -> GS tunnels (grc §Data Forwarding Process steps 2 and 4), of the kind the run config chose."""
        if self.m.cfg.tunnel_mode == "ipip":
            self._ipip_tunnels(choice0)
        else:
            self._vxlan_tunnels(choice0)

    def _ipip_tunnels(self, choice0) -> None:
        m, f = self.m, self.fabric
        ns = lambda name: m.by_name[name].netns  # noqa: E731
        nodes = [ns(x.name) for x in m.gss + m.uts]
        for x in m.gss + m.uts:
            nlroute.ipip_external(f.nl[ns(x.name)], ifnames.TUNNEL_IFNAME["ipip"], IDX_TUN, MTU_TUNNEL)
        f.flush(nodes)
        for g in m.gss:
            nl = f.nl[ns(g.name)]
            nl.link_set(IDX_TUN, up=True)
            for u in m.uts:
                if u.operator == g.operator:
                    nlroute.route4_encap(nl, "add", str(m.user_subnets[u.idx]), IDX_TUN, to_ipv4(u.grc),
                                         to_ipv4(g.grc))
        for row, u in enumerate(m.uts):
            nl = f.nl[ns(u.name)]
            nl.link_set(IDX_TUN, up=True)
            gs = int(choice0[row, 0])
            if gs >= 0:
                nlroute.route4_encap(nl, "replace", str(m.cfg.inet_prefix), IDX_TUN, to_ipv4(m.db.ground[gs].grc),
                                     to_ipv4(u.grc))
        f.flush(nodes)

    def _vxlan_tunnels(self, choice0) -> None:
        m, f = self.m, self.fabric
        ns = lambda name: m.by_name[name].netns  # noqa: E731
        for g in m.gss:
            nl = f.nl[ns(g.name)]
            nl.vxlan(ifnames.TUNNEL_IFNAME["vxlan"], m.vni_of_operator(g.operator), local=to_ipv4(g.grc),
                     dstport=VXLAN_PORT, learning=False, index=IDX_TUN, mac=TUNNEL_MAC, mtu=MTU_TUNNEL)
        for u in m.uts:
            nl = f.nl[ns(u.name)]
            nl.vxlan(ifnames.TUNNEL_IFNAME["vxlan"], m.vni_of_operator(u.operator), local=to_ipv4(u.grc),
                     dstport=VXLAN_PORT, learning=False, index=IDX_TUN, mac=m.ut_tunnel_mac(u.idx),
                     mtu=MTU_TUNNEL)
        f.flush([ns(g.name) for g in m.gss + m.uts])
        for g in m.gss:
            nl = f.nl[ns(g.name)]
            nl.link_set(IDX_TUN, up=True)
            nl.addr("add", IDX_TUN, TUNNEL_GS_ADDR, TUNNEL_PLEN)
            for u in m.uts:
                if u.operator != g.operator:
                    continue
                nlroute.neigh(nl, "add", IDX_TUN, m.ut_tunnel_addr(u.idx), m.ut_tunnel_mac(u.idx))
                nlroute.fdb(nl, "add", IDX_TUN, m.ut_tunnel_mac(u.idx), to_ipv4(u.grc))
                nl.route("add", str(m.user_subnets[u.idx]), oif=IDX_TUN, gateway=m.ut_tunnel_addr(u.idx))
        for row, u in enumerate(m.uts):
            nl = f.nl[ns(u.name)]
            nl.link_set(IDX_TUN, up=True)
            nl.addr("add", IDX_TUN, m.ut_tunnel_addr(u.idx), TUNNEL_PLEN)
            nlroute.neigh(nl, "add", IDX_TUN, TUNNEL_GS_ADDR, TUNNEL_MAC)
            nl.route("add", str(m.cfg.inet_prefix), oif=IDX_TUN, gateway=TUNNEL_GS_ADDR)
            gs = int(choice0[row, 0])
            if gs >= 0:
                nlroute.fdb(nl, "replace", IDX_TUN, TUNNEL_MAC, to_ipv4(m.db.ground[gs].grc))
        f.flush([ns(g.name) for g in m.gss + m.uts])

    # ------------------------------------------------------------------ NAT, shaping, servers
    def nat(self) -> None:
        """Source NAT at each operator's core toward the Internet (grc §Border Gateway, PoP NAT)."""
        if not self.features.has("nft_nat"):
            self.degradations.append("nftables NAT unavailable: the Internet routes user pools back directly")
            return
        for idx, name, _c, pool in self.m.db.operators:
            rules = (f"table ip leoemu {{\n chain post {{\n  type nat hook postrouting priority 100;\n"
                     f"  oifname \"inet\" ip saddr {pool} masquerade\n }}\n}}\n")
            _run_in(self.m.by_name[name].netns, ["nft", "-f", "-"], stdin=rules)

    def shape_terrestrial(self) -> None:
        if not self.m.cfg.tbf:
            self.degradations.append("tbf unavailable: link rates are not limited")
            return
        self._shape([v for v in desired.terrestrial_veths(self.m) if v.rate_bps])

    def shape_isls(self) -> None:
        if not self.m.cfg.tbf:
            return
        m = self.m
        grid = [desired.grid_veth(m, a, b, d) for a, b, d in m.grid_links.tolist()]
        self.progress("link shaping", 0, 2 * len(grid))
        self._shape(grid)  # netem root where the kernel has it; the applier sets each slice's delay
        self.progress("link shaping", 2 * len(grid), 2 * len(grid))

    def _shape(self, veths: list[desired.Veth]) -> None:
        ns = lambda node: self.m.by_name[node].netns  # noqa: E731
        shapes = [LinkShape(ns(node), idx, v.rate_bps, v.delay_us)
                  for v in veths for node, idx in ((v.node_a, v.index_a), (v.node_b, v.index_b))]
        shape_many(shapes, self.fabric.nl)

    def servers(self) -> None:
        inet = self.m.by_name[self.m.cfg.inet_name].netns
        for argv, what in servers.internet_servers(self.m.cfg.inet_addr):
            try:
                p = procs.spawn_in(inet, argv)
            except procs.CommandNotFound:
                self.degradations.append(f"{argv[0]} not installed: no {what} server in {self.m.cfg.inet_name}")
                continue
            self.run.record_pid(p.pid, f"{what} in {inet}")
            self.procs.append(p)


def _run_in(netns_name: str, argv: list[str], stdin: str = "") -> None:
    p = procs.run_in(netns_name, argv, timeout_s=30, stdin=stdin)
    if p.returncode != 0:
        raise DataplaneError(" ".join(argv), netns_name, None, (p.stderr or p.stdout).strip()[:300])
