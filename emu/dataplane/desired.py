"""The kernel objects every namespace should hold, computed purely from the plan (no kernel, no root).

spec: grc-based-routing §Time-Varying Routing Module, §Time Slice Transition
(slice k's table is installed at the boundary, slice k-1's kept one more
slice for packets in flight); satellite-semantic-addressing §5.4 (link-local
next hops are semantic interface IDs). DESIGN.md: the data plane reads a
plan, it never recomputes one; make-before-break.

Two layers:

- :meth:`Desired.state` -- slice k as plain frozen values: the dynamic links
  alive (ground, inter-shell), the grid ISLs up, every satellite's route
  table for slice k, the policy rules in force, the GRC addresses bound,
  ground nodes' default routes, cores' routes toward the chosen GS, UT
  tunnel targets and per-link delays.
- :func:`transition` -- the ordered operations that take the kernel from
  slice k's state to slice k+1's, in three phases: ``prepare`` (off the
  critical path, nothing looks at it yet), ``switch`` (the boundary) and
  ``cleanup`` (after it). :func:`route_diff` does the same for one table.

Both families (spec: grc-based-routing §GRC encoding, the 128-bit form): the
satellites' tables, rules and GRC bindings are computed once, keyed by the
IPv4 GRC, and every one of them has an IPv6 twin under the scenario's GRC
/96 (:func:`grc_twin6`, :func:`routes6`: the one rule is
:func:`emu.addressing.grc.prefix6_of`), with the same next hops (link-local,
over the same veths). The ground side carries its IPv6 values explicitly
(ground defaults for the GRC /96, cores' routes to the user /64s, UT tunnel
targets over the IPv6 GRCs); the vx6 tunnels and the terrestrial IPv6 plan,
created once, are in :mod:`emu.dataplane.desired6`.

The kernel side (:mod:`emu.dataplane.slices`, :mod:`emu.dataplane.build`)
only executes these; the rules of make-before-break and of the three-table
rotation live here and are unit-tested on the values.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from emu.addressing.grc import ipv6_base, prefix6_of, to_ipv4, to_ipv6
from emu.dataplane import ifnames, nlroute, slicemark
from emu.dataplane.model import (IDX_DIR, IDX_DN_SLOT, IDX_GROUND_SLOT, IDX_LO, IDX_TERR, IDX_TUN, IDX_UP_SLOT,
                                 MTU_SPACE, MTU_TERRESTRIAL, MTU_TUNNEL, TUNNEL_GS_ADDR, TUNNEL_MAC, TUNNEL_PLEN,
                                 GroundLink, Model, ShellLink)
from emu.orbit.constellation import DOWN, OPPOSITE, UP
from emu.plan import actions

log = logging.getLogger(__name__)

RT_TABLE_MAIN = 254  # a ground node's default routes where rules switch the slices (GroundDefault)
RT_TABLE_LOCAL = 255  # the kernel's local table: where a bound GRC's IPv6 twin is a local /128 route (grc_twin6)
N_TABLES = 3  # slice k's table, k-1's kept for packets in flight, k+1's being filled
TABLE_BASE = 1000
GROUP_BASE = 10  # IFLA_GROUP of a dynamic link = GROUP_BASE + the slice at whose cleanup it is deleted
CORE_GS_BASE = 100  # ifindex of a core's link to its i-th ground station (g<i>)
INET_CORE_BASE = 100  # ifindex of the Internet's link to operator i's core (c<i>)

RouteKey = tuple[int, int, int]  # prefix, plen, metric
RouteVal = tuple[int, tuple]  # route type, next hops (nlroute.Hop)
_LOCAL: RouteVal = (nlroute.RTN_LOCAL, ())


def _dotted(grc: int) -> str:
    """Dotted-quad text of a 32-bit GRC (to_ipv4 without its range check: the plan's values are u32)."""
    return f"{grc >> 24}.{grc >> 16 & 255}.{grc >> 8 & 255}.{grc & 255}"


# ============================================================================ rules of the rotation
def table_id(k: int) -> int:
    """Slice k's route table on every satellite: three in rotation (k, k-1 retained, k+1 being filled)."""
    return TABLE_BASE + (k % N_TABLES)


def rule_pref(k: int) -> int:
    """Slice k's table is looked up at this priority: a newer slice gets a smaller number and wins.

    Above 32767 (after main and default, which hold no IPv4 routes on a
    satellite) and counting down from 2e9, so it never wraps in any run.
    """
    return 2_000_000_000 - k


# ============================================================================ the values
@dataclass(frozen=True, order=True)
class Veth:
    """One veth pair: end ``a`` in node_a's namespace, end ``b`` in node_b's (node names, not namespaces)."""

    kind: str  # isl | ground | shell | lan | core | inet
    node_a: str
    ifname_a: str
    index_a: int
    node_b: str
    ifname_b: str
    index_b: int
    mac_a: str | None = None
    mac_b: str | None = None
    mtu: int = MTU_TERRESTRIAL
    rate_bps: int | None = None  # shaped both ends (tbf) when set
    delay_us: int = 0  # initial netem delay of both ends (dynamic links: the boundary sets the real one)
    retire: int | None = None  # dynamic links: deleted, by interface group, at this slice's cleanup
    ll_a: str | None = None  # IPv6 link-local of end a (/64), set on creation (dynamic links)
    ll_b: str | None = None

    @property
    def group(self) -> int | None:
        """IFLA_GROUP of a dynamic link (deleted with its group); None for links created once."""
        return None if self.retire is None else GROUP_BASE + self.retire


@dataclass(frozen=True, order=True)
class Rule:
    """A policy rule of the rotation on every satellite, in ``family`` (4 or 6: the GRC lookups of each):
    look ``table`` up at ``priority``. Under the mark switch (:mod:`emu.dataplane.slicemark`) only IPv4 has
    them, ``unmarked`` (``fwmark 0/0xffffffff``: a marked packet that neither of its tables routes must not
    fall through to them), and they change in the cleanup instead of at the boundary."""

    table: int
    priority: int
    family: int
    unmarked: bool = False

    def selector(self) -> dict:
        """The rule's match, as :meth:`emu.dataplane.netlink.NetlinkBatch.rule` takes it."""
        return {"family": socket.AF_INET6 if self.family == 6 else socket.AF_INET,
                "mark": 0 if self.unmarked else None}


@dataclass(frozen=True)
class SliceMark:
    """The slice switch by mark (:mod:`emu.dataplane.slicemark`): every satellite's packets get ``mark``;
    ``setup`` makes the nftables table first (the run's first slice). A clock that knows the boundary's time
    arms it during the preparation instead (:meth:`emu.dataplane.slices.SliceApplier.prepare`)."""

    mark: int
    setup: bool = False


@dataclass(frozen=True)
class LocalOut6:
    """The one route of the mark switch's table for unmarked local lookups, on every satellite: ``::/0 dev lo``
    (:data:`emu.dataplane.slicemark.LOCAL_OUT_TABLE`)."""

    table: int


@dataclass(frozen=True, order=True)
class Addr:
    node: str
    index: int
    addr: str
    plen: int


@dataclass(frozen=True)
class GroundDefault:
    """A UT's or GS's default route: via its serving satellite's link-local, or unreachable (``via`` None), in
    ``table``: main where rules switch the slices, else slice k's table of the rotation, looked up under slice
    k's mark (or :data:`emu.dataplane.slicemark.GROUND_UNMARKED_TABLE`, for unmarked lookups)."""

    ground: int
    node: str
    via: tuple[int, str] | None  # (oif, IPv6 link-local gateway)
    dst6: str | None = None  # the GRC /96, routed the same way (IPv6 GRC traffic: the vx6 tunnels)
    table: int = RT_TABLE_MAIN


@dataclass(frozen=True)
class CoreRoute:
    """An operator core's route to one UT's device LAN: toward the chosen GS, or unreachable (``gs`` -1)."""

    ut: int
    node: str
    subnet: str
    gs: int
    oif: int | None = None
    gateway: str | None = None
    subnet6: str | None = None  # the UT's IPv6 /64, routed the same way
    gateway6: str | None = None


@dataclass(frozen=True)
class TunnelTarget:
    """Where a UT's tunnel (vxlan FDB entry, or ipip encap route) sends: the chosen GS's GRC."""

    ut: int
    node: str
    gs: int
    remote: str
    local: str
    remote6: str | None = None  # the vx6 tunnel's target: the GS's IPv6 GRC


@dataclass(frozen=True)
class Delay:
    """netem delay of one link end; ``link`` tells a re-created dynamic link from the one before it."""

    node: str
    index: int
    delay_us: int
    link: Veth | None = None


@dataclass(frozen=True)
class SliceState:
    """What the kernel holds while slice k is in force (after its boundary, before k+1's preparation)."""

    k: int
    table: int
    rules: frozenset[Rule]  # slice k's rule and, retained, slice k-1's (IPv4; IPv6 too without the mark switch)
    links: frozenset[Veth]  # dynamic links in use or retained: first <= k < retire
    grid: frozenset[tuple[int, int, int]]  # grid ISLs up: (a, b, direction from a)
    grc_addrs: Mapping[int, Mapping[str, int]]  # sat -> {GRC address: ifindex}, slices k and k-1
    routes: Mapping[int, Mapping[RouteKey, RouteVal]]  # sat -> content of table(k)
    ground: Mapping[int, GroundDefault]
    cores: Mapping[int, CoreRoute]
    tunnels: Mapping[int, TunnelTarget]
    delays: Mapping[tuple[str, int], Delay]
    unresolved: int = 0  # plan egresses without a link in this slice (logged)
    mark: int | None = None  # slice k's packet mark (slicemark); None: the kernel lacks it, both families rotate rules


@dataclass(frozen=True)
class Op:
    """One kernel operation of a transition: ``phase`` prepare | switch | cleanup."""

    phase: str
    verb: str  # create | up | fill | add | replace | del | down | retire | bind | unbind
    obj: object


# ============================================================================ links
def ground_veth(m: Model, gl: GroundLink) -> Veth:
    """A satellite's g<slot> <-> a ground node's up<slot>."""
    netem = m.cfg.netem
    return Veth("ground", m.satellites[gl.sat].name, ifnames.sat_ground(gl.sat_slot), IDX_GROUND_SLOT + gl.sat_slot,
                m.db.ground[gl.ground].name, ifnames.ground_up(gl.ground_slot), IDX_GROUND_SLOT + gl.ground_slot,
                mac_a=m.sat_mac(gl.sat, DOWN), mac_b=m.ground_mac(gl.ground, gl.ground_slot), mtu=MTU_SPACE,
                rate_bps=int(m.cfg.ground_rate_mbit * 1e6), delay_us=1 if netem else 0, retire=gl.retire,
                ll_a=m.sat_ll(gl.sat, DOWN), ll_b=m.ground_ll(gl.ground))


def shell_veth(m: Model, sl: ShellLink) -> Veth:
    """The lower shell's up<slot> <-> the upper shell's dn<slot>."""
    return Veth("shell", m.satellites[sl.lower].name, ifnames.sat_shell(UP, sl.lower_slot), IDX_UP_SLOT + sl.lower_slot,
                m.satellites[sl.upper].name, ifnames.sat_shell(DOWN, sl.upper_slot), IDX_DN_SLOT + sl.upper_slot,
                mac_a=m.sat_mac(sl.lower, UP), mac_b=m.sat_mac(sl.upper, DOWN), mtu=MTU_SPACE,
                rate_bps=int(m.cfg.isl_rate_mbit * 1e6), delay_us=1 if m.cfg.netem else 0, retire=sl.retire,
                ll_a=m.sat_ll(sl.lower, UP), ll_b=m.sat_ll(sl.upper, DOWN))


def grid_veth(m: Model, a: int, b: int, d: int) -> Veth:
    """A grid ISL (created once, brought up and down per slice): a's n/s/e/w <-> b's opposite."""
    return Veth("isl", m.satellites[a].name, ifnames.grid(d), IDX_DIR[d],
                m.satellites[b].name, ifnames.grid_peer(d), IDX_DIR[OPPOSITE[d]],
                mac_a=m.sat_mac(a, d), mac_b=m.sat_mac(b, OPPOSITE[d]), mtu=MTU_SPACE,
                rate_bps=int(m.cfg.isl_rate_mbit * 1e6), delay_us=1 if m.cfg.netem else 0)


@dataclass(frozen=True)
class IslEnd:
    """One end of a grid ISL while it is up: semantic link-local (/64) and global (/128) IPv6 addresses and a
    host route to the peer's global address (satellite-semantic-addressing §5.4). Both vanish when the
    interface goes admin-down, so they are set again every time the ISL comes up."""

    sat: int
    index: int
    ll: str
    addr6: str
    peer_addr6: str


def isl_ends(m: Model, edge: tuple[int, int, int]) -> tuple[IslEnd, IslEnd]:
    a, b, d = edge
    return (IslEnd(a, IDX_DIR[d], m.sat_ll(a, d), m.sat_ipv6(a, d), m.sat_ipv6(b, OPPOSITE[d])),
            IslEnd(b, IDX_DIR[OPPOSITE[d]], m.sat_ll(b, OPPOSITE[d]), m.sat_ipv6(b, OPPOSITE[d]), m.sat_ipv6(a, d)))


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


@dataclass(frozen=True, order=True)
class StaticRoute:
    """A route in a terrestrial node's main table, set once at build."""

    node: str
    dst: str
    oif: int
    gateway: str


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
    from emu.dataplane.desired6 import terrestrial_addrs6

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
    from emu.dataplane.desired6 import terrestrial_routes6

    return out + bgp_inet_routes(m) + terrestrial_routes6(m)




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
    """Everything the tunnels need that is set once; the per-slice target is :class:`TunnelTarget`."""

    devices: tuple[TunnelDevice, ...]
    addrs: tuple[Addr, ...]
    neighs: tuple[Neigh, ...]
    fdbs: tuple[Fdb, ...]
    routes: tuple[StaticRoute, ...]
    encap_routes: tuple[EncapRoute, ...]


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
    from emu.dataplane.desired6 import tunnel6_config

    d6, a6, n6, f6, r6 = tunnel6_config(m)
    devs, addrs, neighs, fdbs, routes = devs + d6, addrs + a6, neighs + n6, fdbs + f6, routes + r6
    if m.cfg.bgp and mode == "vxlan":
        a6, n6, r6 = bgp_mnp_delivery(m)
        addrs, neighs, routes = addrs + a6, neighs + n6, routes + r6
    return TunnelConfig(tuple(devs), tuple(addrs), tuple(neighs), tuple(fdbs), tuple(routes), tuple(encap))




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


def fixed_links(m: Model) -> list[Veth]:
    """Every link created once at build: the grid ISLs of any slice, then the terrestrial links."""
    return [grid_veth(m, a, b, d) for a, b, d in m.grid_links.tolist()] + terrestrial_veths(m)


# ============================================================================ the state of a slice
class Desired:
    """Slice states of one run (model + start slice), with small caches of the plan's per-slice arrays."""

    def __init__(self, model: Model, k0: int = 0):
        self.m = model
        self.k0 = k0
        self.base6 = ipv6_base(model.cfg.grc_ipv6_prefix)  # the GRC /96: every table's IPv6 twin (routes6)
        self._cache: dict[tuple[str, int], object] = {}
        self._values: dict[RouteVal, RouteVal] = {}

    def _get(self, what: str, k: int, fn):
        key = (what, k)
        if key not in self._cache:
            if len(self._cache) > 24:
                self._cache.clear()
            self._cache[key] = fn(k)
        return self._cache[key]

    def bound(self, k: int) -> np.ndarray:
        return self._get("bound", k, self.m.db.bound_grc)

    def tables(self, k: int):
        return self._get("tables", k, self.m.db.tables)

    def choice(self, k: int) -> np.ndarray:
        return self._get("choice", k, self.m.db.gs_choice)

    # ------------------------------------------------------------------ routes
    def region(self, s: int, k: int) -> tuple[int, int]:
        """The GRC region satellite s binds in slice k, as (prefix, plen) (grc §Dynamic GRC Binding)."""
        plen = 11 + 3 * self.m.grc_level
        mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        return int(self.bound(k)[s]) & mask, plen

    def routes(self, s: int, k: int, count: list[int] | None = None) -> dict[RouteKey, RouteVal]:
        """Slice k's kernel routes for satellite s: key -> (type, hops).

        Besides the plan's entries, the region the satellite binds in slice k is
        a local route of the same table (unless the plan states that prefix
        itself), so the binding changes exactly when the table does (grc §Time
        Slice Transition: "the local GRC bindings are updated"); its interface
        addresses follow right after the boundary. ``count`` collects the
        number of plan egresses without a link.
        """
        out: dict[RouteKey, RouteVal] = {}
        intern = self._values.setdefault  # equal values are one object: the applier's diff compares identities
        if len(self._values) > 1_000_000:
            self._values.clear()
        region = self.region(s, k)
        out[(region[0], region[1], 1)] = _LOCAL
        cache: dict[int, list] = {}
        pre, pl, act = self.tables(k).of(s)
        for prefix, plen, code in zip(pre.tolist(), pl.tolist(), act.tolist()):
            items = cache.get(code)
            if items is None:
                items = cache[code] = [(metric, intern((rtype, hops), (rtype, hops)))
                                       for metric, rtype, hops in self.routes_for_action(s, k, code, count)]
            for metric, val in items:
                out[(prefix, plen, metric)] = val
        return out

    def routes_for_action(self, s: int, k: int, code: int, count: list[int] | None = None
                          ) -> list[tuple[int, int, tuple]]:
        """(metric, type, hops) routes of one plan action at satellite s (ECMP/UCMP: one multipath route;
        active-standby: the active at metric 1, standbys at metric 2)."""
        act = actions.decode(code)
        if act.kind == actions.LOCAL:
            return [(1, *_LOCAL)]
        hops = []
        for e in act.egress:
            nh = self.m.nexthop_of(s, e.direction, k, act.down_target if e.direction == DOWN else None)
            if nh is None:
                if count is not None:
                    count[0] += 1
                log.warning("slice %d: %s has no link for direction %d", k, self.m.satellites[s].name, e.direction)
                continue
            hops.append((nh[0], nh[1], e.attribute))
        if not hops:
            return [(1, nlroute.RTN_UNREACHABLE, ())]
        if act.kind == actions.STANDBY:
            return [(1 if w == 1 else 2, nlroute.RTN_UNICAST, (nlroute.Hop(o, v, 1),)) for o, v, w in hops]
        return [(1, nlroute.RTN_UNICAST, tuple(nlroute.Hop(o, v, w) for o, v, w in hops))]

    # ------------------------------------------------------------------ the other objects
    def grc_addrs(self, k: int) -> dict[int, dict[str, int]]:
        """Per satellite, the six GRC addresses it binds in slice k and, retained, in slice k-1.

        On an ISL up in every slice (``Model.steady_interfaces``), else on ``lo``.
        """
        out: dict[int, dict[str, int]] = {}
        for kk in ([k - 1] if k > self.k0 else []) + [k]:
            for s, pairs in enumerate(self._get("addrs", kk, self._bound_addrs)):
                out.setdefault(s, {}).update(pairs)
        return out

    def _bound_addrs(self, k: int) -> list[list[tuple[str, int]]]:
        steady = self.m.steady_interfaces
        return [[(_dotted(b | d), IDX_DIR[d] if (s, d) in steady else IDX_LO) for d in range(6)]
                for s, b in enumerate(self.bound(k).tolist())]

    def links(self, k: int) -> frozenset[Veth]:
        """Dynamic links in use at slice k or retained after their last use: first <= k < retire."""
        m = self.m
        out = [ground_veth(m, gl) for gl in m.ground_links if gl.first <= k < gl.retire]
        out += [shell_veth(m, sl) for sl in m.shell_links if sl.first <= k < sl.retire]
        return frozenset(out)

    def ground_defaults(self, k: int) -> dict[int, GroundDefault]:
        """Each UT's and GS's default routes in slice k: toward the satellite serving it, or unreachable; in
        main, or under the mark switch in slice k's table (spec: grc-based-routing §Time Slice Transition)."""
        m = self.m
        links = m.ground_link_at(k)
        table = table_id(k) if m.cfg.slice_switch == "mark" else RT_TABLE_MAIN
        out = {}
        for g in m.db.ground:
            gl = links.get(g.idx)
            via = (IDX_GROUND_SLOT + gl.ground_slot, m.sat_ll(gl.sat, DOWN)) if gl else None
            out[g.idx] = GroundDefault(g.idx, g.name, via, m.cfg.grc_ipv6_prefix, table)
        return out

    def cores_and_tunnels(self, k: int) -> tuple[dict[int, CoreRoute], dict[int, TunnelTarget]]:
        """Each UT's operator core routes its LAN toward the GS the plan chose; its tunnel points there."""
        m = self.m
        choice = self.choice(k)
        gs_pos = {g.idx: i for i, g in enumerate(m.gss)}
        cores, tunnels = {}, {}
        for row, u in enumerate(m.uts):
            gs = int(choice[row, 0])
            core = m.db.operators[u.operator][1]
            sub = str(m.user_subnets[u.idx])
            sub6 = str(m.user_subnets6[u.idx])
            if gs >= 0:
                cores[u.idx] = CoreRoute(u.idx, core, sub, gs, CORE_GS_BASE + gs_pos[gs], m.gs_core_link(gs)[0],
                                         sub6, m.gs_core_link6(gs)[0])
                tunnels[u.idx] = TunnelTarget(u.idx, u.name, gs, to_ipv4(m.db.ground[gs].grc), to_ipv4(u.grc),
                                              to_ipv6(m.db.ground[gs].grc, m.cfg.grc_ipv6_prefix))
            else:
                cores[u.idx] = CoreRoute(u.idx, core, sub, -1, subnet6=sub6)
        return cores, tunnels

    def delays(self, k: int, links: frozenset[Veth] | None = None) -> dict[tuple[str, int], Delay]:
        """Propagation delay of every grid ISL end and every ground link end (all antennas) in slice k
        (kernels with netem only)."""
        m = self.m
        if not m.cfg.netem:
            return {}
        out: dict[tuple[str, int], Delay] = {}
        for r in m.db.links(k):
            a, b, da, db_ = int(r["a"]), int(r["b"]), int(r["dir_a"]), int(r["dir_b"])
            if da >= 4:
                continue
            us = int(round(float(r["delay_ms"]) * 1000))
            for sat, d in ((a, da), (b, db_)):
                name = m.satellites[sat].name
                out[(name, IDX_DIR[d])] = Delay(name, IDX_DIR[d], us)
        att = m.db.link_ranges(k)  # (node, sat) -> km, every antenna's link
        for (g, sat), gl in sorted(m.ground_links_at(k).items()):
            us = int(round(att.get((g, sat), 0.0) / 299792.458 * 1e6))
            v = ground_veth(m, gl)
            for name, idx in ((v.node_a, v.index_a), (v.node_b, v.index_b)):
                out[(name, idx)] = Delay(name, idx, us, v)
        return out

    def switch(self, k: int) -> tuple[frozenset[Rule], int | None]:
        """Slice k's rotating rules (slice k's and, retained, k-1's) and its packet mark: by mark where the
        kernel has it (``RunConfig.slice_switch``; IPv4 rules for unmarked lookups only), else rules in both
        families and no mark."""
        marked = self.m.cfg.slice_switch == "mark"
        rules = frozenset(Rule(table_id(kk), rule_pref(kk), f, marked) for kk in ([k - 1] if k > self.k0 else []) + [k]
                          for f in ((4,) if marked else (4, 6)))
        return rules, (slicemark.slice_mark(k, N_TABLES) if marked else None)

    def state(self, k: int, sats: Iterable[int] | None = None) -> SliceState:
        """Everything the kernel should hold while slice k is in force (route tables of ``sats``: default all)."""
        m = self.m
        count = [0]
        routes = {s: self.routes(s, k, count) for s in (range(len(m.satellites)) if sats is None else sats)}
        rules, mark = self.switch(k)
        cores, tunnels = self.cores_and_tunnels(k)
        return SliceState(k=k, table=table_id(k), rules=rules, links=self.links(k),
                          grid=frozenset(m.active_grid(k)), grc_addrs=self.grc_addrs(k), routes=routes,
                          ground=self.ground_defaults(k), cores=cores, tunnels=tunnels, delays=self.delays(k),
                          unresolved=count[0], mark=mark)


# ============================================================================ diffs
def route_diff(have: Mapping[RouteKey, RouteVal], want: Mapping[RouteKey, RouteVal]
               ) -> tuple[list[RouteKey], list[tuple[RouteKey, RouteVal]]]:
    """(keys to delete, (key, value) to replace) that turn table content ``have`` into ``want``.

    Deletions come first: a route that left the plan never lingers.
    """
    dels = [key for key in have if key not in want]
    reps = [(key, val) for key, val in want.items() if have.get(key) != val]
    return dels, reps


def routes6(routes: Mapping[RouteKey, RouteVal], base6: int) -> dict[RouteKey, RouteVal]:
    """The IPv6 twin of a satellite's table: every entry under the GRC /96 (``base6``:
    :func:`emu.addressing.grc.ipv6_base`), lengths + 96, the same type and next hops (link-local)."""
    return {(*prefix6_of(p, plen, base6), metric): val for (p, plen, metric), val in routes.items()}


def grc_twin6(addr: str, base6: int) -> str:
    """The IPv6 form of a bound GRC address (dotted IPv4) under the GRC /96. Bound as a ``local`` /128 route
    in the local table (:data:`RT_TABLE_LOCAL`), not as an address (``slices.SliceApplier._addrs``)."""
    return str(ipaddress.IPv6Address(prefix6_of(int(ipaddress.IPv4Address(addr)), 32, base6)[0]))


def _changed(cur: Mapping, nxt: Mapping) -> list:
    return [v for key, v in nxt.items() if cur.get(key) != v]


def initial(st: SliceState) -> list[Op]:
    """The first slice of a run: its dynamic links, ISLs up, addresses, table, rule and ground side (the
    builder has made the namespaces and the links created once: grid ISLs, still down, and terrestrial)."""
    ops = [Op("prepare", "create", v) for v in sorted(st.links)]
    ops += [Op("prepare", "up", e) for e in sorted(st.grid)]
    ops += [Op("prepare", "bind", (s, a, idx)) for s, addrs in st.grc_addrs.items() for a, idx in addrs.items()]
    if st.mark is not None:  # the mark switch: its fixed rules and route (before the tables are filled: an IPv6
        # rule added walks every IPv6 table of the namespace), the ground nodes' too, then, at the switch, the
        # nftables table (satellites and ground nodes)
        ops += [Op("prepare", "add", r) for r in slicemark.fixed_rules(table_id, N_TABLES)]
        ops += [Op("prepare", "add", r) for r in ground_rules(st)]
        ops.append(Op("prepare", "add", LocalOut6(slicemark.LOCAL_OUT_TABLE)))
    ops.append(Op("prepare", "fill", st.table))
    if st.mark is not None:  # the ground side's defaults in their slice table and for unmarked lookups
        ops += [Op("prepare", "replace", x) for x in st.ground.values()]
        ops += [Op("prepare", "replace", unmarked(x)) for x in st.ground.values()]
    ops += [Op("switch", "add", r) for r in sorted(st.rules, key=lambda r: (-r.priority, r.family))]
    if st.mark is not None:
        ops.append(Op("switch", "set", SliceMark(st.mark, setup=True)))
    else:
        ops += [Op("switch", "replace", x) for x in st.ground.values()]
    ops += [Op("switch", "replace", x) for x in st.cores.values()]
    ops += [Op("switch", "replace", x) for x in st.tunnels.values()]
    ops += [Op("switch", "replace", x) for x in st.delays.values()]
    return ops


def ground_rules(st: SliceState) -> list[slicemark.MarkRule]:
    """The fixed rules of every UT and GS under the mark switch (:func:`emu.dataplane.slicemark.ground_rules`:
    IPv6 only ``to`` the GRC /96 its defaults route)."""
    dst6 = next((x.dst6 for x in st.ground.values()), None)
    return slicemark.ground_rules(table_id, N_TABLES, dst6)


def unmarked(x: GroundDefault) -> GroundDefault:
    """A ground default as unmarked lookups see it (mark switch: ``ip route get``, a locally made packet's
    first lookup): the same route, in :data:`emu.dataplane.slicemark.GROUND_UNMARKED_TABLE`."""
    return GroundDefault(x.ground, x.node, x.via, x.dst6, slicemark.GROUND_UNMARKED_TABLE)


def transition(cur: SliceState, nxt: SliceState) -> list[Op]:
    """The ordered operations from slice k's state to slice k+1's: make before break.

    prepare (during slice k, nothing looks at it): create the links slice k+1
    starts to use, bring up the grid ISLs it gains, fill table(k+1) -- the
    table neither slice k's nor slice k-1's rule points at -- and, under the
    mark switch, every ground node's defaults of slice k+1 in its table(k+1)
    (written whole: it held slice k-2's).
    switch (the boundary): slice k+1's mark, where the kernel has the mark
    switch (:mod:`emu.dataplane.slicemark`: fixed rules look table(k+1) up,
    then the retained table(k), on the ground table(k+1) alone; a clock arms
    it ahead of time), else slice k+1's rule (a smaller priority than k's:
    it wins) and the ground defaults that changed, in main; then cores'
    routes, tunnels and delays that changed.
    cleanup (after it): bind slice k+1's GRC addresses, (mark switch: add
    slice k+1's IPv4 rule for unmarked lookups, and point the ground nodes'
    unmarked lookups at their new satellite), delete slice k-1's rule
    (slice k's stays: the one-slice retention), bring down ISLs slice
    k+1 lost, retire links whose retention ended, unbind addresses no
    longer bound in slice k or k+1.
    """
    if nxt.k != cur.k + 1:
        raise ValueError(f"transition: slices must follow each other (got {cur.k} -> {nxt.k})")
    ops = [Op("prepare", "create", v) for v in sorted(nxt.links - cur.links)]
    ops += [Op("prepare", "up", e) for e in sorted(nxt.grid - cur.grid)]
    ops.append(Op("prepare", "fill", nxt.table))
    new_rules = sorted(nxt.rules - cur.rules, key=lambda r: (-r.priority, r.family))
    marked = nxt.mark is not None
    if marked:
        ops += [Op("prepare", "replace", x) for x in nxt.ground.values()]
        ops.append(Op("switch", "set", SliceMark(nxt.mark)))
    else:
        ops += [Op("switch", "add", r) for r in new_rules]
        ops += [Op("switch", "replace", x) for x in _changed(cur.ground, nxt.ground)]
    ops += [Op("switch", "replace", x) for x in _changed(cur.cores, nxt.cores)]
    ops += [Op("switch", "replace", x) for x in _changed(cur.tunnels, nxt.tunnels)]
    ops += [Op("switch", "replace", x) for x in _changed(cur.delays, nxt.delays)]
    ops += [Op("cleanup", "bind", (s, a, idx)) for s, addrs in nxt.grc_addrs.items() for a, idx in addrs.items()
            if a not in cur.grc_addrs.get(s, {})]
    if marked:  # unmarked lookups only (local packets, ``ip route get``): off the boundary, new before old
        ops += [Op("cleanup", "add", r) for r in new_rules]
        ops += [Op("cleanup", "replace", x) for x in _changed({g: unmarked(x) for g, x in cur.ground.items()},
                                                              {g: unmarked(x) for g, x in nxt.ground.items()})]
    ops += [Op("cleanup", "del", r) for r in sorted(cur.rules - nxt.rules)]
    ops += [Op("cleanup", "down", e) for e in sorted(cur.grid - nxt.grid)]
    ops += [Op("cleanup", "retire", v) for v in sorted(cur.links - nxt.links)]
    ops += [Op("cleanup", "unbind", (s, a, idx)) for s, addrs in cur.grc_addrs.items() for a, idx in addrs.items()
            if a not in nxt.grc_addrs.get(s, {})]
    return ops
