"""A time slice's kernel state as plain values, and the operations from one to the next (pure: no kernel, no root).

spec: grc-based-routing §Time-Varying Routing Module, §Time Slice Transition
(slice k's table is installed at the boundary, slice k-1's kept one more
slice for packets in flight); satellite-semantic-addressing §5.4 (link-local
next hops are semantic interface IDs). DESIGN.md: the data plane reads a
plan, it never recomputes one; make-before-break.

- The values: :class:`SliceState` -- slice k as plain frozen values: the
  dynamic links alive (ground, inter-shell), the grid ISLs up, every
  satellite's route table for slice k, the policy rules in force, the GRC
  addresses bound, ground nodes' default routes, cores' routes toward the
  chosen GS, UT tunnel targets and per-link delays -- and its parts; the
  satellites' links (:func:`ground_veth`, :func:`shell_veth`,
  :func:`grid_veth`, :func:`isl_ends`); the three-table rotation
  (:func:`table_id`, :func:`rule_pref`). :class:`emu.dataplane.slicestate.Desired`
  computes slice k's state from the plan.
- :func:`transition` -- the ordered operations that take the kernel from
  slice k's state to slice k+1's, in three phases: ``prepare`` (off the
  critical path, nothing looks at it yet), ``switch`` (the boundary) and
  ``cleanup`` (after it). :func:`initial` does the same for a run's first
  slice, :func:`route_diff` for one table.

Both families (spec: grc-based-routing §GRC encoding, the 128-bit form): the
satellites' tables, rules and GRC bindings are computed once, keyed by the
IPv4 GRC, and every one of them has an IPv6 twin under the scenario's GRC
/96 (:func:`grc_twin6`, :func:`routes6`: the one rule is
:func:`emu.addressing.grc.prefix6_of`), with the same next hops (link-local,
over the same veths). The ground side carries its IPv6 values explicitly
(ground defaults for the GRC /96, cores' routes to the user /64s, UT tunnel
targets over the IPv6 GRCs). The network created once (terrestrial links,
addresses, routes, tunnels) is :mod:`emu.dataplane.terrestrial`.

The kernel side (:mod:`emu.dataplane.slices`, :mod:`emu.dataplane.build`)
only executes these; the rules of make-before-break and of the three-table
rotation live here and are unit-tested on the values.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from emu.addressing.grc import prefix6_of
from emu.dataplane import ifnames, slicemark
from emu.dataplane.model import (IDX_DIR, IDX_DN_SLOT, IDX_GROUND_SLOT, IDX_UP_SLOT, MTU_SPACE, MTU_TERRESTRIAL,
                                 GroundLink, Model, ShellLink)
from emu.orbit.constellation import DOWN, OPPOSITE, UP

RT_TABLE_MAIN = 254  # a ground node's default routes where rules switch the slices (GroundDefault)
RT_TABLE_LOCAL = 255  # the kernel's local table: where a bound GRC's IPv6 twin is a local /128 route (grc_twin6)
N_TABLES = 3  # slice k's table, k-1's kept for packets in flight, k+1's being filled
TABLE_BASE = 1000
GROUP_BASE = 10  # IFLA_GROUP of a dynamic link = GROUP_BASE + the slice at whose cleanup it is deleted

RouteKey = tuple[int, int, int]  # prefix, plen, metric
RouteVal = tuple[int, tuple]  # route type, next hops (nlroute.Hop)


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
    """One end of a grid ISL while it is up: semantic link-local (/64) and global (/128) IPv6 addresses, the
    global one point-to-point with the peer's (the kernel routes the peer's /128 through the link;
    satellite-semantic-addressing §5.4). They vanish when the interface goes admin-down, so they are set
    again every time the ISL comes up."""

    sat: int
    index: int
    ll: str
    addr6: str
    peer_addr6: str


def isl_ends(m: Model, edge: tuple[int, int, int]) -> tuple[IslEnd, IslEnd]:
    a, b, d = edge
    return (IslEnd(a, IDX_DIR[d], m.sat_ll(a, d), m.sat_ipv6(a, d), m.sat_ipv6(b, OPPOSITE[d])),
            IslEnd(b, IDX_DIR[OPPOSITE[d]], m.sat_ll(b, OPPOSITE[d]), m.sat_ipv6(b, OPPOSITE[d]), m.sat_ipv6(a, d)))


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
