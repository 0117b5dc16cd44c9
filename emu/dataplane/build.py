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
from collections.abc import Callable

from emu.dataplane import desired, ifnames, netns, nlroute, procs, servers
from emu.dataplane.fabric import Fabric
from emu.dataplane.model import IDX_LO, VXLAN_PORT, Model
from emu.dataplane.state import Run
from emu.dataplane.tc import LinkShape, queue_shapes
from emu.dataplane.terrestrial import terrestrial_addrs, terrestrial_routes, terrestrial_veths, tunnel_config
from emu.errors import DataplaneError

log = logging.getLogger(__name__)

SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.conf.all.ignore_routes_with_linkdown": 1,
    "net.ipv4.conf.default.ignore_routes_with_linkdown": 1,
    "net.ipv4.icmp_ratelimit": 0,
    "net.ipv4.fib_multipath_hash_policy": 1,  # ECMP/UCMP spread flows by their L4 5-tuple (a VXLAN tunnel's
    # source port carries the inner flow's hash), each flow staying on one path (grc §Data Forwarding Module)
    "net.ipv6.conf.all.forwarding": 1,
    "net.ipv4.fwmark_reflect": 1,  # replies and ICMP errors carry the slice mark of what they answer (slicemark)
    "net.ipv6.fwmark_reflect": 1,
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
    def create_namespaces(self, meanwhile: Callable[[], None] | None = None) -> None:
        """Every node's namespace, made by a forked child (:func:`netns.create_behind`) while ``meanwhile``
        runs here: work that needs no namespace (the whole first slice encoded: :mod:`emu.dataplane.ahead`) is
        done on the other core instead of after."""
        names = [n.netns for n in self.m.nodes]
        taken = [n for n in names if netns.exists(n)]
        if taken:  # never journal (and so never let down remove) a namespace that is not ours
            raise DataplaneError("create namespaces", taken[0], 17, f"{len(taken)} namespace(s) of this name exist "
                                 "already; not touching them")
        self.run.record_netns(names)  # recorded before they exist: down can always find them
        self.progress("namespaces", 0, len(names))
        job = netns.create_behind(names, SYSCTLS)
        try:
            if meanwhile is not None:
                meanwhile()
        except BaseException:  # the child is stopped (what it made is journalled) and this error goes on
            job.abort()
            raise
        job.wait(lambda done, total: self.progress("namespaces", done, total))
        # one nftables socket more per satellite and ground node (the slice switch's: slicemark)
        self.fabric = Fabric(names, switched=len(self.m.satellites) + len(self.m.db.ground))

    def create_links(self, k0: int = 0) -> None:
        """Everything created once, in order, on ``self.fabric`` (or a recorder of it, while the namespaces are
        being made: :mod:`emu.dataplane.ahead`): inter-satellite links (down), terrestrial links, tunnels, the
        links' queues."""
        self.satellite_links(k0)
        self.terrestrial()
        self.tunnels()
        self.shape_isls()
        self.shape_terrestrial()

    # ------------------------------------------------------------------ satellites
    def satellite_links(self, k0: int = 0) -> None:
        m, f = self.m, self.fabric
        grid = [desired.grid_veth(m, a, b, d) for a, b, d in m.grid_links.tolist()]
        self._veths(grid)
        f.flush([s.netns for s in m.satellites])
        for s in m.satellites:
            f.nl[s.netns].link_set(IDX_LO, up=True)
        f.flush([s.netns for s in m.satellites])  # the applier brings slice k0's ISLs up (desired.initial)

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
        veths = terrestrial_veths(m)  # device <-> UT LAN, GS <-> core, core <-> Internet
        self._veths(veths)
        f.flush(terr)
        for v in veths:  # per namespace, in order: links up, then addresses, then routes through them
            f.nl[ns(v.node_a)].link_set(v.index_a, up=True)
            f.nl[ns(v.node_b)].link_set(v.index_b, up=True)
        for a in terrestrial_addrs(m):
            f.nl[ns(a.node)].addr("add", a.index, a.addr, a.plen)
        for r in terrestrial_routes(m):
            f.nl[ns(r.node)].route("add", r.dst, oif=r.oif, gateway=r.gateway)
        f.flush(terr)

    # ------------------------------------------------------------------ tunnels
    def tunnels(self) -> None:
        """UT <-> GS tunnels of the kind the run config chose, as the desired state lists them (~60,000 messages
        on Starlink shell 1's 100 GS x 100 UT): devices, then everything on them (addresses, neighbours, FDB
        entries, routes). Where each UT's tunnel points is a per-slice target the applier sets
        (desired.TunnelTarget)."""
        m, f = self.m, self.fabric
        ns = lambda name: m.by_name[name].netns  # noqa: E731
        cfg = tunnel_config(m)
        for d in cfg.devices:
            if d.kind == "ipip":
                nlroute.ipip_external(f.nl[ns(d.node)], d.ifname, d.index, d.mtu)
            else:
                f.nl[ns(d.node)].vxlan(d.ifname, d.vni, local=d.local, dstport=VXLAN_PORT, learning=False,
                                       index=d.index, mac=d.mac, mtu=d.mtu)
        f.flush(sorted({ns(d.node) for d in cfg.devices}))
        for d in cfg.devices:
            f.nl[ns(d.node)].link_set(d.index, up=True)
        for a in cfg.addrs:
            f.nl[ns(a.node)].addr("add", a.index, a.addr, a.plen)
        for n in cfg.neighs:
            nlroute.neigh(f.nl[ns(n.node)], "add", n.index, n.addr, n.mac)
        for x in cfg.fdbs:
            nlroute.fdb(f.nl[ns(x.node)], "add", x.index, x.mac, x.remote)
        for r in cfg.routes:
            f.nl[ns(r.node)].route("add", r.dst, oif=r.oif, gateway=r.gateway)
        for r in cfg.encap_routes:
            nlroute.route4_encap(f.nl[ns(r.node)], "add", r.dst, r.index, r.remote, r.local)
        f.flush(sorted({ns(x.node) for part in (cfg.devices, cfg.addrs, cfg.neighs, cfg.fdbs, cfg.routes,
                                                cfg.encap_routes) for x in part}))

    # ------------------------------------------------------------------ NAT, shaping, servers
    def nat(self) -> None:
        """Source NAT at each operator's core toward the Internet (grc §Data Forwarding Process step 5, PoP NAT):
        one ``nft -f`` batch per core namespace. Without nftables NAT (``RunConfig.nat``) the Internet routes
        the pools back instead (:func:`terrestrial_routes`), reported as a degradation. Where the kernel
        has nf_flow_table (``RunConfig.nat_flowtable``) established flows take the flowtable fast path over the
        core's links (:func:`masquerade_ruleset`)."""
        if not self.m.cfg.nat:
            self.degradations.append("nftables NAT unavailable: the Internet routes user pools back directly "
                                     "and sees users' addresses")
            return
        for idx, name, _c, pool in self.nat_operators():
            devices = core_links(self.m, name) if self.m.cfg.nat_flowtable else ()
            _run_in(self.m.by_name[name].netns, ["nft", "-f", "-"],
                    stdin=masquerade_ruleset(pool, self.m.cfg.pools6[idx] if self.m.cfg.pools6 else None,
                                             flowtable_devices=devices))

    def nat_operators(self) -> list[tuple]:
        """The operators whose core gets NAT here (all on one host; emu.multihost: the local cores)."""
        return self.m.db.operators

    def shape_terrestrial(self) -> None:
        if not self.m.cfg.tbf:
            self.degradations.append("tbf unavailable: link rates are not limited")
            return
        self._shape([v for v in terrestrial_veths(self.m) if v.rate_bps])

    def shape_isls(self) -> None:
        if not self.m.cfg.tbf:
            return
        m = self.m
        grid = [desired.grid_veth(m, a, b, d) for a, b, d in m.grid_links.tolist()]
        self._shape(grid)  # netem root where the kernel has it; the applier sets each slice's delay

    def _shape(self, veths: list[desired.Veth]) -> None:
        ns = lambda node: self.m.by_name[node].netns  # noqa: E731
        shapes = [LinkShape(ns(node), idx, v.rate_bps, v.delay_us)
                  for v in veths for node, idx in ((v.node_a, v.index_a), (v.node_b, v.index_b))]
        self.fabric.flush(queue_shapes(shapes, self.fabric.nl))

    def servers(self) -> None:
        inet = self.m.by_name[self.m.cfg.inet_name].netns
        for argv, what in servers.internet_servers(self.m.cfg.inet_addr, self.m.cfg.inet_addr6):
            try:
                p = procs.spawn_in(inet, argv)
            except procs.CommandNotFound:
                self.degradations.append(f"{argv[0]} not installed: no {what} server in {self.m.cfg.inet_name}")
                continue
            self.run.record_pid(p.pid, f"{what} in {inet}")
            self.procs.append(p)


def core_links(m: Model, core: str) -> list[str]:
    """The interface names of a core's own veth ends (to its GSs, the Internet, BGP peers), in build order."""
    return [v.ifname_a if v.node_a == core else v.ifname_b
            for v in terrestrial_veths(m) if core in (v.node_a, v.node_b)]


def masquerade_ruleset(pool: str, pool6: str | None = None, oifname: str = ifnames.CORE_INET,
                       flowtable_devices: tuple[str, ...] | list[str] = ()) -> str:
    """A core's nftables batch: its own users' pool leaving toward the Internet takes the core's public address.

    Only the core's own pool: a visiting user's traffic (another operator's pool) is not translated here but
    tunnelled to its home core, whose NAT it leaves by (spec: inter-sno-mobility §5.1, user -> visited core ->
    tunnel -> home core -> destination). ``oifname``: the link toward the Internet (``bench_forwarding.py``
    puts the same rule on its plain chain's link).

    ``flowtable_devices`` (only where ``features`` found nf_flow_table): the same translated flows, once
    established, are added to a software flowtable over these links, so their later packets skip conntrack's
    per-packet work and the forward path, translated from the flow entry. What is emulated stays: the entry
    decrements the TTL, leaves by the same qdisc, hands packets over the MTU back to the slow path, and is
    torn down when a route changes (the cached route fails its check), so slice boundaries re-route as before.
    """
    def table(family: str, name: str, match: str) -> str:
        out = f"table {family} {name} {{\n"
        if flowtable_devices:
            devs = ", ".join(f'"{d}"' for d in flowtable_devices)
            out += (f" flowtable ft {{\n  hook ingress priority 0; devices = {{ {devs} }};\n }}\n"
                    f" chain fast {{\n  type filter hook forward priority 0;\n"
                    f"  oifname \"{oifname}\" {match} meta l4proto {{ tcp, udp }} flow add @ft\n }}\n")
        return out + (f" chain post {{\n  type nat hook postrouting priority 100;\n"
                      f"  oifname \"{oifname}\" {match} masquerade\n }}\n}}\n")

    out = table("ip", "leoemu", f"ip saddr {pool}")
    if pool6:  # IPv6 the same way: the Internet knows the core's IPv6 address only (NAT66, masquerade)
        out += table("ip6", "leoemu6", f"ip6 saddr {pool6}")
    return out


def _run_in(netns_name: str, argv: list[str], stdin: str = "") -> None:
    p = procs.run_in(netns_name, argv, timeout_s=30, stdin=stdin)
    if p.returncode != 0:
        raise DataplaneError(" ".join(argv), netns_name, None, (p.stderr or p.stdout).strip()[:300])
