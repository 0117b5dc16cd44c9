"""The terrestrial network and the UT <-> GS tunnels, created once at build (pure: no kernel, no root).

spec: grc-based-routing §Data Forwarding Process (DEV -> UT -> satellites ->
GS -> PoP -> Internet, "the DEV sends an IPv4/IPv6 packet", the UT and GS
tunnel ends, "the PoP performs NAT"), §Border Gateway, §GRC encoding (the
128-bit form); bgp-mobile-routing-atn §3 (the core of cores, the c-ASBRs
holding the MNPs), §4 (MNPs delivered over the tunnels).

Device <-> UT LANs, GS <-> core and core <-> Internet links with their
addresses and static routes (:func:`terrestrial_veths`,
:func:`terrestrial_addrs`, :func:`terrestrial_routes`), the tunnel devices,
neighbours and FDB entries (:func:`tunnel_config`), each with its IPv6 side
(``*6``) and, with the BGP overlay on, its additions (``bgp_*``);
:func:`fixed_links` lists every link the builder creates once. What changes
per slice (a UT's tunnel target, a core's route toward the chosen GS) is in
:mod:`emu.dataplane.desired`.
"""

from __future__ import annotations

from dataclasses import dataclass

from emu.addressing.grc import to_ipv4, to_ipv6
from emu.dataplane import ifnames
from emu.dataplane.desired import Veth, grid_veth
from emu.dataplane.model import (IDX_LO, IDX_TERR, IDX_TUN, IDX_TUN6, MTU_TUNNEL, MTU_TUNNEL6, TUNNEL6_GS_LL,
                                 TUNNEL6_IFNAME, TUNNEL_GS_ADDR, TUNNEL_MAC, TUNNEL_PLEN, Model)

CORE_GS_BASE = 100  # ifindex of a core's link to its i-th ground station (g<i>)
INET_CORE_BASE = 100  # ifindex of the Internet's link to operator i's core (c<i>)


# ============================================================================ the values
@dataclass(frozen=True, order=True)
class Addr:
    node: str
    index: int
    addr: str
    plen: int


@dataclass(frozen=True, order=True)
class StaticRoute:
    """A route in a terrestrial node's main table, set once at build."""

    node: str
    dst: str
    oif: int
    gateway: str


@dataclass(frozen=True, order=True)
class TunnelDevice:
    """A UT's or GS's tunnel device (grc §Data Forwarding Process steps 2 and 4): VXLAN with the operator's
    VNI, or ipip in collect-metadata mode (the target is in each route)."""

    node: str
    kind: str  # vxlan | ipip
    ifname: str
    index: int
    mtu: int
    vni: int | None = None
    local: str | None = None
    mac: str | None = None


@dataclass(frozen=True, order=True)
class Neigh:
    node: str
    index: int
    addr: str
    mac: str


@dataclass(frozen=True, order=True)
class Fdb:
    """A VXLAN forwarding entry: frames for ``mac`` go to ``remote``."""

    node: str
    index: int
    mac: str
    remote: str


@dataclass(frozen=True, order=True)
class EncapRoute:
    """An ipip route: ``dst`` leaves by the tunnel toward ``remote`` from ``local``."""

    node: str
    dst: str
    index: int
    remote: str
    local: str


@dataclass(frozen=True)
class TunnelConfig:
    """Everything the tunnels need that is set once; the per-slice target is :class:`emu.dataplane.desired.TunnelTarget`."""

    devices: tuple[TunnelDevice, ...]
    addrs: tuple[Addr, ...]
    neighs: tuple[Neigh, ...]
    fdbs: tuple[Fdb, ...]
    routes: tuple[StaticRoute, ...]
    encap_routes: tuple[EncapRoute, ...]


# ============================================================================ links
def terrestrial_veths(m: Model) -> list[Veth]:
    """Device <-> UT LANs, GS <-> its operator's core, core <-> the Internet (created once)."""
    ops = m.db.operators
    terr_rate = int(m.cfg.terrestrial_rate_mbit * 1e6)
    terr_delay = int(m.cfg.terrestrial_delay_ms * 1000) if m.cfg.netem else 0
    out = [Veth("lan", u.name, ifnames.LAN_UT, IDX_TERR, u.device, ifnames.LAN_DEV, IDX_TERR) for u in m.uts]
    out += [Veth("core", ops[g.operator][1], ifnames.core_gs(i), CORE_GS_BASE + i, g.name, ifnames.GS_CORE, IDX_TERR,
                 rate_bps=terr_rate, delay_us=terr_delay) for i, g in enumerate(m.gss)]
    out += [Veth("inet", m.cfg.inet_name, ifnames.inet_core(idx), INET_CORE_BASE + idx, name, ifnames.CORE_INET,
                 IDX_TERR,
                 rate_bps=terr_rate, delay_us=terr_delay) for idx, name, _c, _p in ops]
    return out + bgp_core_veths(m)


def fixed_links(m: Model) -> list[Veth]:
    """Every link created once at build: the grid ISLs of any slice, then the terrestrial links."""
    return [grid_veth(m, a, b, d) for a, b, d in m.grid_links.tolist()] + terrestrial_veths(m)


# ============================================================================ IPv4 addresses and routes
def terrestrial_addrs(m: Model) -> list[Addr]:
    """Addresses of the terrestrial side (grc §Data Forwarding Process, §Border Gateway): UT LAN and GRC,
    device, GS <-> core /30 and GS GRC, core <-> Internet /30, the Internet's server prefix."""
    out = []
    for u in m.uts:
        sub = m.user_subnets[u.idx]
        out += [Addr(u.name, IDX_TERR, m.ut_lan_addr(u.idx), sub.prefixlen), Addr(u.name, IDX_LO, to_ipv4(u.grc), 32),
                Addr(u.device, IDX_TERR, m.dev_addr(u.idx), sub.prefixlen)]
    for i, g in enumerate(m.gss):
        gs_end, core_end = m.gs_core_link(g.idx)
        out += [Addr(g.name, IDX_TERR, gs_end, 30), Addr(g.name, IDX_LO, to_ipv4(g.grc), 32),
                Addr(m.db.operators[g.operator][1], CORE_GS_BASE + i, core_end, 30)]
    out.append(Addr(m.cfg.inet_name, IDX_LO, m.cfg.inet_addr, m.cfg.inet_prefix.prefixlen))
    for idx, name, _c, _p in m.db.operators:
        out += [Addr(name, IDX_TERR, m.core_public(idx), 30),
                Addr(m.cfg.inet_name, INET_CORE_BASE + idx, m.inet_core_addr(idx), 30)]
    return out + bgp_addrs(m) + terrestrial_addrs6(m)


def terrestrial_routes(m: Model) -> list[StaticRoute]:
    """Device -> its UT; GS: the terrestrial space (0/4) -> its core; core -> the Internet.

    The Internet knows only the cores' public addresses (its connected /30s): each core masquerades its own
    users (grc §Data Forwarding Process step 5, "the PoP performs NAT"; :meth:`Builder.nat`). Only on a kernel
    without nftables NAT (``RunConfig.nat`` false, a degradation ``up`` reports) does the Internet route each
    operator's pool back to its core.
    """
    out = [StaticRoute(u.device, "0.0.0.0/0", IDX_TERR, m.ut_lan_addr(u.idx)) for u in m.uts]
    out += [StaticRoute(g.name, "0.0.0.0/4", IDX_TERR, m.gs_core_link(g.idx)[1]) for g in m.gss]
    for idx, name, _c, pool in m.db.operators:
        out.append(StaticRoute(name, "0.0.0.0/0", IDX_TERR, m.inet_core_addr(idx)))
        if not m.cfg.nat:  # no nftables NAT: the Internet routes the pools back (a reported degradation)
            out.append(StaticRoute(m.cfg.inet_name, pool, INET_CORE_BASE + idx, m.core_public(idx)))
    return out + bgp_inet_routes(m) + terrestrial_routes6(m)


# ============================================================================ tunnels
def tunnel_config(m: Model) -> TunnelConfig:
    """Each GS terminates its operator's UTs: it reaches each UT's LAN through the tunnel; each UT sends the
    Internet prefix into it (VXLAN: through the GS's shared tunnel address and MAC, anycast-like)."""
    mode = m.cfg.tunnel_mode
    name = ifnames.TUNNEL_IFNAME[mode]
    devs, addrs, neighs, fdbs, routes, encap = [], [], [], [], [], []
    by_operator: dict[int, list] = {}
    for u in m.uts:
        by_operator.setdefault(u.operator, []).append(u)
    for g in m.gss:
        mine = by_operator.get(g.operator, [])
        if mode == "vxlan":
            devs.append(TunnelDevice(g.name, mode, name, IDX_TUN, MTU_TUNNEL, m.vni_of_operator(g.operator),
                                     to_ipv4(g.grc), TUNNEL_MAC))
            addrs.append(Addr(g.name, IDX_TUN, TUNNEL_GS_ADDR, TUNNEL_PLEN))
            for u in mine:
                neighs.append(Neigh(g.name, IDX_TUN, m.ut_tunnel_addr(u.idx), m.ut_tunnel_mac(u.idx)))
                fdbs.append(Fdb(g.name, IDX_TUN, m.ut_tunnel_mac(u.idx), to_ipv4(u.grc)))
                routes.append(StaticRoute(g.name, str(m.user_subnets[u.idx]), IDX_TUN, m.ut_tunnel_addr(u.idx)))
        else:
            devs.append(TunnelDevice(g.name, mode, name, IDX_TUN, MTU_TUNNEL))
            encap += [EncapRoute(g.name, str(m.user_subnets[u.idx]), IDX_TUN, to_ipv4(u.grc), to_ipv4(g.grc))
                      for u in mine]
    for u in m.uts:
        if mode == "vxlan":
            devs.append(TunnelDevice(u.name, mode, name, IDX_TUN, MTU_TUNNEL, m.vni_of_operator(u.operator),
                                     to_ipv4(u.grc), m.ut_tunnel_mac(u.idx)))
            addrs.append(Addr(u.name, IDX_TUN, m.ut_tunnel_addr(u.idx), TUNNEL_PLEN))
            neighs.append(Neigh(u.name, IDX_TUN, TUNNEL_GS_ADDR, TUNNEL_MAC))
            routes.append(StaticRoute(u.name, str(m.cfg.inet_prefix), IDX_TUN, TUNNEL_GS_ADDR))
        else:
            devs.append(TunnelDevice(u.name, mode, name, IDX_TUN, MTU_TUNNEL))
    d6, a6, n6, f6, r6 = tunnel6_config(m)
    devs, addrs, neighs, fdbs, routes = devs + d6, addrs + a6, neighs + n6, fdbs + f6, routes + r6
    if m.cfg.bgp and mode == "vxlan":
        a6, n6, r6 = bgp_mnp_delivery(m)
        addrs, neighs, routes = addrs + a6, neighs + n6, routes + r6
    return TunnelConfig(tuple(devs), tuple(addrs), tuple(neighs), tuple(fdbs), tuple(routes), tuple(encap))


# ============================================================================ IPv6
def terrestrial_addrs6(m: Model) -> list[Addr]:
    """The IPv6 twins (grc §Data Forwarding Process: "an IPv4/IPv6 packet"): UT LAN ::1/64 and the UT's IPv6
    GRC, device ::2/64 from its operator's IPv6 pool, GS <-> core /64 and the GS's IPv6 GRC, core <->
    Internet /64, the Internet's IPv6 server prefix."""
    v6 = m.cfg.grc_ipv6_prefix
    out = []
    for u in m.uts:
        out += [Addr(u.name, IDX_TERR, m.ut_lan_addr6(u.idx), 64), Addr(u.name, IDX_LO, to_ipv6(u.grc, v6), 128),
                Addr(u.device, IDX_TERR, m.dev_addr6(u.idx), 64)]
    for i, g in enumerate(m.gss):
        gs_end, core_end = m.gs_core_link6(g.idx)
        out += [Addr(g.name, IDX_TERR, gs_end, 64), Addr(g.name, IDX_LO, to_ipv6(g.grc, v6), 128),
                Addr(m.db.operators[g.operator][1], CORE_GS_BASE + i, core_end, 64)]
    out.append(Addr(m.cfg.inet_name, IDX_LO, m.cfg.inet_addr6, m.cfg.inet_prefix6.prefixlen))
    for idx, name, _c, _p in m.db.operators:
        core_end, inet_end = m.core_inet6(idx)
        out += [Addr(name, IDX_TERR, core_end, 64), Addr(m.cfg.inet_name, INET_CORE_BASE + idx, inet_end, 64)]
    # a link-local on both ends of every terrestrial link: the kernel sends a neighbour solicitation for a
    # *forwarded* packet only from a link-local address (namespaces get none automatically: addr_gen_mode 1)
    for v in terrestrial_veths(m):
        if v.kind in ("lan", "core", "inet"):
            out += [Addr(v.node_a, v.index_a, "fe80::1", 64), Addr(v.node_b, v.index_b, "fe80::2", 64)]
    return out


def terrestrial_routes6(m: Model) -> list[StaticRoute]:
    """IPv6: device ``::/0`` -> its UT; GS and core: the Internet's IPv6 prefix -> core -> Internet; the
    Internet -> each operator's IPv6 pool via its core only without nftables NAT (``RunConfig.nat``): with it,
    each core masquerades its IPv6 pool too (:func:`emu.dataplane.build.masquerade_ruleset`), so the Internet
    knows only the cores' addresses. The per-slice core -> GS routes of the user /64s are CoreRoute.subnet6."""
    inet6 = str(m.cfg.inet_prefix6)
    out = [StaticRoute(u.device, "::/0", IDX_TERR, m.ut_lan_addr6(u.idx)) for u in m.uts]
    out += [StaticRoute(g.name, inet6, IDX_TERR, m.gs_core_link6(g.idx)[1]) for g in m.gss]
    for idx, name, _c, _p in m.db.operators:
        core_end, inet_end = m.core_inet6(idx)
        out.append(StaticRoute(name, inet6, IDX_TERR, inet_end))
        if not m.cfg.nat:
            out.append(StaticRoute(m.cfg.inet_name, m.cfg.pools6[idx], INET_CORE_BASE + idx, core_end))
    return out


def tunnel6_config(m: Model) -> tuple[list[TunnelDevice], list[Addr], list[Neigh], list[Fdb], list[StaticRoute]]:
    """IPv6 user traffic (grc §Data Forwarding Process steps 2-4, "IPv4/IPv6"): a second VXLAN device, ``vx6``,
    whose outer header is IPv6 GRC to IPv6 GRC, so the satellites forward it by their IPv6 tables. The same in
    both tunnel modes: VXLAN is on every kernel the emulator supports; ipip cannot carry IPv6 and this kernel has
    no ip6tnl. Inside, link-local addresses (GS ``fe80::1``, UT ``fe80::(2 + position)``) with static neighbours;
    the UT sends the Internet's IPv6 prefix into it, the GS each of its operator's UTs' /64 (the FDB, set per
    slice, says where: TunnelTarget.remote6)."""
    v6 = m.cfg.grc_ipv6_prefix
    devs, addrs, neighs, fdbs, routes = [], [], [], [], []
    # each UT's values once (every GS of its operator lists them: GS x UT entries)
    ut = {u.idx: (m.ut_tunnel6_ll(u.idx), m.ut_tunnel_mac(u.idx), to_ipv6(u.grc, v6), str(m.user_subnets6[u.idx]))
          for u in m.uts}
    by_operator: dict[int, list[int]] = {}
    for u in m.uts:
        by_operator.setdefault(u.operator, []).append(u.idx)
    for g in m.gss:
        devs.append(TunnelDevice(g.name, "vxlan", TUNNEL6_IFNAME, IDX_TUN6, MTU_TUNNEL6,
                                 m.vni_of_operator(g.operator), to_ipv6(g.grc, v6), TUNNEL_MAC))
        addrs.append(Addr(g.name, IDX_TUN6, TUNNEL6_GS_LL, 64))
        for u in by_operator.get(g.operator, ()):
            ll, mac, grc6, subnet6 = ut[u]
            neighs.append(Neigh(g.name, IDX_TUN6, ll, mac))
            fdbs.append(Fdb(g.name, IDX_TUN6, mac, grc6))
            routes.append(StaticRoute(g.name, subnet6, IDX_TUN6, ll))
    for u in m.uts:
        ll, mac, grc6, _subnet6 = ut[u.idx]
        devs.append(TunnelDevice(u.name, "vxlan", TUNNEL6_IFNAME, IDX_TUN6, MTU_TUNNEL6,
                                 m.vni_of_operator(u.operator), grc6, mac))
        addrs.append(Addr(u.name, IDX_TUN6, ll, 64))
        neighs.append(Neigh(u.name, IDX_TUN6, TUNNEL6_GS_LL, TUNNEL_MAC))
        routes.append(StaticRoute(u.name, str(m.cfg.inet_prefix6), IDX_TUN6, TUNNEL6_GS_LL))
    return devs, addrs, neighs, fdbs, routes


# ============================================================================ the BGP overlay's additions
def bgp_core_veths(m: Model) -> list[Veth]:
    """With the BGP overlay on: one link between every pair of operators' cores (the core of cores,
    spec: bgp-mobile-routing-atn §3), core a's end ``p<b>``, b's end ``p<a>``."""
    if not m.cfg.bgp:
        return []
    from emu.control.bgp.wiring import CORE_PEER_BASE, core_pairs

    ops = m.db.operators
    return [Veth("peer", ops[a][1], ifnames.core_peer(b), CORE_PEER_BASE + b, ops[b][1], ifnames.core_peer(a),
                 CORE_PEER_BASE + a) for a, b in core_pairs(len(ops))]


def bgp_addrs(m: Model) -> list[Addr]:
    """With the BGP overlay on: the IPv6 peering addresses on the GS <-> core and core <-> core links
    (numbering: emu.control.bgp.wiring)."""
    if not m.cfg.bgp:
        return []
    from emu.control.bgp.wiring import (CORE_PEER_BASE, PEER_PLEN, core_link_addrs, core_pairs, gs_link_addrs,
                                        inet_link_addrs)

    ops = m.db.operators
    out = []
    for i, g in enumerate(m.gss):
        core_end, gs_end = gs_link_addrs(i)
        out += [Addr(g.name, IDX_TERR, gs_end, PEER_PLEN), Addr(ops[g.operator][1], CORE_GS_BASE + i, core_end, PEER_PLEN)]
    for a, b in core_pairs(len(ops)):
        a_end, b_end = core_link_addrs(a, b)
        out += [Addr(ops[a][1], CORE_PEER_BASE + b, a_end, PEER_PLEN), Addr(ops[b][1], CORE_PEER_BASE + a, b_end, PEER_PLEN)]
    for idx, name, _c, _p in ops:
        core_end, inet_end = inet_link_addrs(idx)
        out += [Addr(name, IDX_TERR, core_end, PEER_PLEN), Addr(m.cfg.inet_name, INET_CORE_BASE + idx, inet_end, PEER_PLEN)]
    return out


def bgp_inet_routes(m: Model) -> list[StaticRoute]:
    """With the BGP overlay on: the Internet reaches each operator's MSP through that operator's core (whose
    c-ASBR holds the MNPs, or black-holes an inactive one: spec §3)."""
    if not m.cfg.bgp:
        return []
    from emu.control.bgp.wiring import inet_link_addrs, operator_msps

    msps = operator_msps(m)
    return [StaticRoute(m.cfg.inet_name, msps[idx], INET_CORE_BASE + idx, inet_link_addrs(idx)[0])
            for idx, _n, _c, _p in m.db.operators]


def bgp_mnp_delivery(m: Model) -> tuple[list[Addr], list[Neigh], list[StaticRoute]]:
    """With the BGP overlay on (VXLAN tunnels): IPv6 to each UT's MNP over the tunnel it already has.

    Each GS routes every MNP of its operator's UTs into the tunnel (the FDB, set per slice, sends it to the UT
    wherever it is; the c-ASBRs send an MNP only to the GS whose s-ASBR announces it, spec: bgp-mobile-routing-atn
    §4); each UT holds ``MNP::1`` and sends IPv6 back through its tunnel (to the GS the plan chose)."""
    from emu.control.bgp.wiring import GS_TUNNEL_LL, mnp_host, ut_mnps, ut_tunnel_ll

    mnps = ut_mnps(m)
    addrs, neighs, routes = [], [], []
    for g in m.gss:
        addrs.append(Addr(g.name, IDX_TUN, GS_TUNNEL_LL, 64))
        for pos, u in enumerate(m.uts):
            if u.operator == g.operator:
                neighs.append(Neigh(g.name, IDX_TUN, ut_tunnel_ll(pos), m.ut_tunnel_mac(u.idx)))
                routes.append(StaticRoute(g.name, mnps[u.idx], IDX_TUN, ut_tunnel_ll(pos)))
    for pos, u in enumerate(m.uts):
        addrs += [Addr(u.name, IDX_TUN, ut_tunnel_ll(pos), 64), Addr(u.name, IDX_LO, mnp_host(mnps[u.idx]), 128)]
        neighs.append(Neigh(u.name, IDX_TUN, GS_TUNNEL_LL, TUNNEL_MAC))
        routes.append(StaticRoute(u.name, "::/0", IDX_TUN, GS_TUNNEL_LL))
    return addrs, neighs, routes
