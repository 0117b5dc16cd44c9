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
from emu.dataplane import netns, nlroute, tools
from emu.dataplane.fabric import Fabric
from emu.dataplane.model import (IDX_DIR, IDX_LO, IDX_TERR, IDX_TUN, MTU_SPACE, MTU_TERRESTRIAL, MTU_TUNNEL,
                                 TUNNEL_GS_ADDR, TUNNEL_MAC, TUNNEL_PLEN, VXLAN_PORT, Model, ifname)
from emu.dataplane.state import Run
from emu.dataplane.tc import LinkShape, shape_many
from emu.errors import DataplaneError
from emu.orbit.constellation import OPPOSITE

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


def address_isl(nl, m: Model, sat: int, direction: int, peer: int) -> None:
    """Bring one ISL end up with its semantic link-local and global IPv6 addresses and a host route to the peer.

    IPv6 addresses and every route through an interface vanish when it goes
    admin-down, so this runs again whenever the applier brings the ISL back.
    """
    idx = IDX_DIR[direction]
    nl.link_set(idx, up=True)
    nl.addr("add", idx, m.sat_ll(sat, direction), 64)
    nl.addr("add", idx, m.sat_ipv6(sat, direction), 128)
    nl.route("replace", m.sat_ipv6(peer, OPPOSITE[direction]), 128, oif=idx)


def mbit(x: float) -> int:
    return int(x * 1e6)


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
        grid = m.grid_links
        self.progress("inter-satellite links", 0, len(grid))
        for a, b, d in grid.tolist():
            na, nb = m.satellites[a].netns, m.satellites[b].netns
            f.nl[na].veth(ifname(d), ifname(OPPOSITE[d]), f.fd[nb], index=IDX_DIR[d], peer_index=IDX_DIR[OPPOSITE[d]],
                          mac=m.sat_mac(a, d), peer_mac=m.sat_mac(b, OPPOSITE[d]), mtu=MTU_SPACE)
        f.flush([s.netns for s in m.satellites])
        active0 = m.active_grid(k0)
        for s in m.satellites:
            f.nl[s.netns].link_set(IDX_LO, up=True)
        for a, b, d in grid.tolist():
            if (a, b, d) not in active0:
                continue  # stays down; addressed when the applier brings it up
            for sat, direction, peer in ((a, d, b), (b, OPPOSITE[d], a)):
                address_isl(f.nl[m.satellites[sat].netns], m, sat, direction, peer)
        f.flush([s.netns for s in m.satellites])
        self.progress("inter-satellite links", len(grid), len(grid))

    # ------------------------------------------------------------------ terrestrial
    def terrestrial(self) -> None:
        m, f = self.m, self.fabric
        ns = lambda name: m.by_name[name].netns  # noqa: E731
        ops = m.db.operators
        core_ns = {idx: ns(name) for idx, name, _c, _p in ops}
        inet_ns = ns(m.cfg.inet_name)
        terr = [n.netns for n in m.nodes if n.kind != "satellite"]
        for n in terr:
            f.nl[n].link_set(IDX_LO, up=True)
        # device <-> user terminal LAN
        for u in m.uts:
            f.nl[ns(u.name)].veth("lan", "eth0", f.fd[ns(u.device)], index=IDX_TERR, peer_index=IDX_TERR,
                                  mtu=MTU_TERRESTRIAL)
        # ground station <-> its operator's core
        for i, g in enumerate(m.gss):
            f.nl[core_ns[g.operator]].veth(f"g{i}", "core", f.fd[ns(g.name)], index=100 + i, peer_index=IDX_TERR,
                                           mtu=MTU_TERRESTRIAL)
        # core <-> Internet
        for idx, _name, _c, _p in ops:
            f.nl[inet_ns].veth(f"c{idx}", "inet", f.fd[core_ns[idx]], index=100 + idx, peer_index=IDX_TERR,
                               mtu=MTU_TERRESTRIAL)
        f.flush(terr)
        for u in m.uts:
            ut, dev = f.nl[ns(u.name)], f.nl[ns(u.device)]
            sub = m.user_subnets[u.idx]
            ut.link_set(IDX_TERR, up=True)
            ut.addr("add", IDX_TERR, m.ut_lan_addr(u.idx), sub.prefixlen)
            ut.addr("add", IDX_LO, to_ipv4(u.grc), 32)
            dev.link_set(IDX_TERR, up=True)
            dev.addr("add", IDX_TERR, m.dev_addr(u.idx), sub.prefixlen)
            dev.route("add", "0.0.0.0/0", oif=IDX_TERR, gateway=m.ut_lan_addr(u.idx))
        for i, g in enumerate(m.gss):
            gs, core = f.nl[ns(g.name)], f.nl[core_ns[g.operator]]
            gs_end, core_end = m.gs_core_link(g.idx)
            gs.link_set(IDX_TERR, up=True)
            gs.addr("add", IDX_TERR, gs_end, 30)
            gs.addr("add", IDX_LO, to_ipv4(g.grc), 32)
            gs.route("add", "0.0.0.0/4", oif=IDX_TERR, gateway=core_end)  # terrestrial space -> PoP/core
            core.link_set(100 + i, up=True)
            core.addr("add", 100 + i, core_end, 30)
        inet = f.nl[inet_ns]
        inet.addr("add", IDX_LO, m.cfg.inet_addr, m.cfg.inet_prefix.prefixlen)
        for idx, _name, _c, pool in ops:
            core = f.nl[core_ns[idx]]
            core.link_set(IDX_TERR, up=True)
            core.addr("add", IDX_TERR, m.core_public(idx), 30)
            core.route("add", "0.0.0.0/0", oif=IDX_TERR, gateway=m.inet_core_addr(idx))
            inet.link_set(100 + idx, up=True)
            inet.addr("add", 100 + idx, m.inet_core_addr(idx), 30)
            # without NAT (no nftables) the Internet still finds the operator's pool
            inet.route("add", pool, oif=100 + idx, gateway=m.core_public(idx))
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
            nlroute.ipip_external(f.nl[ns(x.name)], "tun0", IDX_TUN, MTU_TUNNEL)
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
            nl.vxlan("vx0", m.vni_of_operator(g.operator), local=to_ipv4(g.grc), dstport=VXLAN_PORT,
                     learning=False, index=IDX_TUN, mac=TUNNEL_MAC, mtu=MTU_TUNNEL)
        for u in m.uts:
            nl = f.nl[ns(u.name)]
            nl.vxlan("vx0", m.vni_of_operator(u.operator), local=to_ipv4(u.grc), dstport=VXLAN_PORT,
                     learning=False, index=IDX_TUN, mac=m.ut_tunnel_mac(u.idx), mtu=MTU_TUNNEL)
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
        m, f = self.m, self.fabric
        rate = mbit(m.cfg.rates_mbit["terrestrial"])
        delay = int(m.cfg.terrestrial_delay_ms * 1000) if self.features.has("netem") else 0
        shapes = []
        for g in m.gss:
            i = m.gss.index(g)
            shapes.append(LinkShape(m.by_name[g.name].netns, IDX_TERR, rate, delay))
            shapes.append(LinkShape(m.by_name[m.db.operators[g.operator][1]].netns, 100 + i, rate, delay))
        for idx, name, _c, _p in m.db.operators:
            shapes.append(LinkShape(m.by_name[name].netns, IDX_TERR, rate, delay))
            shapes.append(LinkShape(m.by_name[m.cfg.inet_name].netns, 100 + idx, rate, delay))
        if self.features.has("tbf"):
            shape_many(shapes, f.nl)
        else:
            self.degradations.append("tbf unavailable: link rates are not limited")

    def shape_isls(self) -> None:
        m, f = self.m, self.fabric
        if not self.features.has("tbf"):
            return
        rate = mbit(m.cfg.rates_mbit["isl"])
        d_us = 1 if self.features.has("netem") else 0  # netem root; the applier sets each slice's delay
        shapes = []
        for a, b, d in m.grid_links.tolist():
            shapes.append(LinkShape(m.satellites[a].netns, IDX_DIR[d], rate, d_us))
            shapes.append(LinkShape(m.satellites[b].netns, IDX_DIR[OPPOSITE[d]], rate, d_us))
        self.progress("link shaping", 0, len(shapes))
        shape_many(shapes, f.nl)
        self.progress("link shaping", len(shapes), len(shapes))

    def servers(self) -> None:
        inet = self.m.by_name[self.m.cfg.inet_name].netns
        for argv, what in ((["iperf3", "-s", "-B", self.m.cfg.inet_addr], "iperf3"),
                           (["python3", "-m", "http.server", "80", "--bind", self.m.cfg.inet_addr], "http")):
            try:
                p = spawn_in(inet, argv)
            except tools.CommandNotFound:
                self.degradations.append(f"{argv[0]} not installed: no {what} server in {self.m.cfg.inet_name}")
                continue
            self.run.record_pid(p.pid, f"{what} in {inet}")
            self.procs.append(p)


def spawn_in(netns_name: str, argv: list[str]) -> subprocess.Popen:
    """Start a long-running process inside a namespace (entered in the child only), in its own session."""
    return tools.popen_in(netns_name, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)


def _run_in(netns_name: str, argv: list[str], stdin: str = "") -> None:
    p = tools.run_in(netns_name, argv, timeout_s=30, stdin=stdin)
    if p.returncode != 0:
        raise DataplaneError(" ".join(argv), netns_name, None, (p.stderr or p.stdout).strip()[:300])
