"""The IPv6 side of the terrestrial network and the UT <-> GS tunnels, created once (pure: no kernel, no root).

spec: grc-based-routing §Data Forwarding Process ("the DEV sends an IPv4/IPv6
packet", DEV -> UT -> satellites -> GS -> PoP -> Internet), §GRC encoding (the
128-bit form). Companion of :mod:`emu.dataplane.desired`, whose
``terrestrial_addrs``, ``terrestrial_routes`` and ``tunnel_config`` include
these; the satellites' IPv6 tables and bindings are the IPv6 twins of the
IPv4 ones (``desired.routes6``, ``desired.grc_twin6``).
"""

from __future__ import annotations

from emu.addressing.grc import to_ipv6
from emu.dataplane.desired import (CORE_GS_BASE, INET_CORE_BASE, Addr, Fdb, Neigh, StaticRoute, TunnelDevice,
                                   terrestrial_veths)
from emu.dataplane.model import (IDX_LO, IDX_TERR, IDX_TUN6, MTU_TUNNEL6, TUNNEL6_GS_LL, TUNNEL6_IFNAME, TUNNEL_MAC,
                                 Model)


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
