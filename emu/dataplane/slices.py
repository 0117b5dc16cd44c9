"""Keep the kernel in step with the plan, slice by slice: execute the desired-state operations.

spec: grc-based-routing §Time-Varying Routing Module, §Time Slice Transition.
What the kernel should hold (:mod:`emu.dataplane.slicestate`, read from the plan) and in which order it
changes (make-before-break, three-table rotation: :mod:`emu.dataplane.desired`) is computed purely;
this module only pushes those operations over each namespace's netlink
socket, and remembers what it wrote to each satellite's tables so a refill
sends only the difference.

The one kernel behaviour it has to mirror: an interface that goes down or is
deleted takes every route through it with it, in every table, so routes
through such an interface are marked unknown (:meth:`_forget_routes_via`).
"""

from __future__ import annotations

import errno as E
import gc
import logging
import socket
import time
from collections import defaultdict
from collections.abc import Iterable

from emu.dataplane import desired as D
from emu.dataplane import nlroute, slicemark
from emu.dataplane.fabric import Fabric
from emu.dataplane.model import IDX_LO, IDX_TUN, IDX_TUN6, TUNNEL_MAC, Model
from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.nexthops import NexthopTable
from emu.dataplane.slicestate import Desired
from emu.dataplane.tc import LinkShape, netem, queue_shapes
from emu.errors import DataplaneError

log = logging.getLogger(__name__)

ARM_SLACK_NS = 5_000_000  # a switch called up to 5 ms before its armed time trusts the kernel to make it


def _freeze() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight (``gc.freeze``).

    The applier keeps millions of small long-lived objects (three tables of
    ~175k routes each on Starlink shell 1, the slice states); a full
    collection walks all of them (0.5-3 s measured) and lands in whichever
    slice's preparation happens to trigger it. Frozen objects are still
    freed by reference counting when the next slice drops them; only cyclic
    garbage among them would stay, and these values hold no cycles.
    """
    gc.freeze()


def _grc_int(addr: str) -> int:
    """A bound GRC address (dotted quad) as its 32-bit value."""
    return int.from_bytes(socket.inet_aton(addr), "big")


def ground_default(nl, x: D.GroundDefault) -> None:
    """Queue a UT's or GS's default routes on its batch ``nl``, in the table ``x`` names: IPv4 ``0/0`` (via the
    satellite's IPv6 link-local, RFC 5549) and the GRC /96 at metric 1, or both unreachable."""
    if x.via:
        nlroute.route4(nl, "replace", 0, 0, [nlroute.Hop(x.via[0], x.via[1])], table=x.table)
    else:
        nlroute.route4(nl, "replace", 0, 0, table=x.table, rtype=nlroute.RTN_UNREACHABLE)
    if x.dst6:
        if x.via:
            nl.route("replace", x.dst6, oif=x.via[0], gateway=x.via[1], metric=1, table=x.table)
        else:
            nl.route("replace", x.dst6, type="unreachable", metric=1, table=x.table)


class _NoCollect:
    """The cyclic garbage collector off while a phase allocates its ~10^5-10^6 message tuples and bytes:
    each generation-2 pass would walk every long-lived object of the run (values hold no cycles; reference
    counting frees them). The previous state is restored on exit."""

    def __enter__(self):
        self._was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self._was:
            gc.enable()


class SliceApplier:
    """Executes :func:`desired.initial` once, then :func:`desired.transition` in three calls per boundary."""

    def __init__(self, model: Model, fabric: Fabric | None):
        """``fabric`` may come later (``self.f``), before :meth:`initial` (a recorder of it, while the namespaces
        are being made: :mod:`emu.dataplane.ahead`)."""
        self.m = model
        self.f = fabric
        self.tables: dict[tuple[int, int], dict[D.RouteKey, tuple]] = defaultdict(dict)  # (sat, table) -> content
        self.unresolved = 0
        self.k0 = 0
        self.desired = Desired(model)
        self.cur: D.SliceState | None = None  # the slice in force
        self.nxt: D.SliceState | None = None  # the slice being prepared
        self._pending: dict[str, list[D.Op]] = {}  # the prepared slice's switch and cleanup operations
        self.handed_off: tuple[type, ...] = ()  # kinds of value another part owns (the SNO control plane's hook)
        self._retiring: set[tuple[str, int | str]] = set()  # link ends whose deletion is still being written
        self._armed: tuple[int, int] | None = None  # (slice, wall-clock ns) the kernel switches by itself
        # each satellite's nexthop objects, where the kernel has them (the routes name them: emu.dataplane.nexthops)
        self.nexthops: dict[int, NexthopTable] | None = defaultdict(NexthopTable) if model.cfg.nexthops else None

    # ------------------------------------------------------------------ helpers
    def ns(self, node: str) -> str:
        return self.m.by_name[node].netns

    def sat_ns(self, s: int) -> str:
        return self.m.satellites[s].netns

    @property
    def _sat_names(self) -> list[str]:
        return [s.netns for s in self.m.satellites]

    @property
    def _sat_of_ns(self) -> dict[str, int]:
        return {s.netns: s.index for s in self.m.satellites}

    @property
    def _ground_names(self) -> list[str]:
        """The UTs' and GSs' namespaces this applier writes (every one; a multihost agent: its own)."""
        return [n for n in (self.ns(g.name) for g in self.m.db.ground) if n in self.f.fd]

    @property
    def _mark_names(self) -> list[str]:
        """Where the mark switch's nftables table lives: every satellite and ground node (slicemark)."""
        return self._sat_names + self._ground_names

    # ------------------------------------------------------------------ the slice clock's four calls
    def new_desired(self, k0: int) -> Desired:
        """The desired state this applier writes (a multihost agent: its own part)."""
        return Desired(self.m, k0)

    def initial(self, k0: int = 0) -> None:
        """The first slice (k0): links, addresses, tables and switches, before anything runs (on the fabric, or
        on a recorder of it while the namespaces are being made: :mod:`emu.dataplane.ahead`)."""
        self.k0 = k0
        self.desired = self.new_desired(k0)
        with _NoCollect():
            st = self.desired.state(k0)
            self.unresolved += st.unresolved
            self.execute(D.initial(st), st)
        self.cur = st
        _freeze()

    def warm(self, until: int) -> float:
        """Before the slice clock starts: the tables that slices k0+1 and k0+2 will be filled into get slice
        k0's routes now, so their first preparations send only what changed since k0 instead of whole tables (a
        ~1 s write on Starlink shell 1, which made the second boundary of a run of 1 s slices late). No lookup
        reaches table(k0+1) yet; table(k0+2) is table(k0-1) of the rotation, which the mark switch's fixed rules
        look up after table(k0) for slice k0's mark: it now holds a copy of table(k0), so a miss there is a miss
        in it too, as in the empty table before. Only tables of slices before ``until`` (the run's slice count).
        Milliseconds."""
        t0 = time.perf_counter()
        with _NoCollect():
            for k in range(self.k0 + 1, min(self.k0 + D.N_TABLES, until)):
                self._fill(D.table_id(k), self.cur)
        _freeze()
        return (time.perf_counter() - t0) * 1e3

    def prepare(self, k: int, at_ns: int | None = None) -> float:
        """Off the critical path, during slice k-1: everything slice k needs, not yet in use. Milliseconds.

        ``at_ns``: the boundary's wall-clock time (``time.time_ns()``, the clock of nftables' ``meta time``).
        Under the mark switch, once everything is in place (the satellites' table k, the ground nodes' default
        routes of slice k in theirs) the switch is armed for that instant (:func:`slicemark.arm_messages`, one
        transaction per satellite and ground node): the kernel moves them all to slice k at once, and
        :meth:`switch` writes only the cores' routes, tunnels and delays that change. A time already past (a
        late preparation) switches at once.
        """
        t0 = time.perf_counter()
        with _NoCollect():
            self.nxt = self.desired.state(k)
            self.unresolved += self.nxt.unresolved
            ops = D.transition(self.cur, self.nxt)
            self.execute([o for o in ops if o.phase == "prepare"], self.nxt)
            # sorted by phase now: the switch must not walk the cleanup's ~20,000 operations (cold in memory
            # after the wait for the boundary: 27 ms measured on Starlink shell 1)
            self._pending = {"switch": [o for o in ops if o.phase == "switch"],
                             "cleanup": [o for o in ops if o.phase == "cleanup"]}
            if at_ns is not None and self.nxt.mark is not None and self.cur.mark is not None:
                self.f.nft().transact(self._mark_names, slicemark.arm_messages(self.cur.mark, self.nxt.mark, at_ns),
                                      "nftables slice mark (armed)")
                self._armed = (k, at_ns)
        # Out of the collector's sight now: with collection off, everything prepare allocated is still in the
        # youngest generation, and the first allocation of the boundary would pay for traversing all of it.
        _freeze()
        return (time.perf_counter() - t0) * 1e3

    def switch(self, k: int) -> float:
        """The boundary itself: the slice switch (nothing, when the kernel makes it at the armed time; else one
        mark per satellite and ground node, or one rule per family per satellite and the ground defaults), then
        cores, tunnels and delays that change. Returns milliseconds."""
        t0 = time.perf_counter()
        self._check(k)
        with _NoCollect():
            self.execute(self._pending["switch"], self.nxt)
        return (time.perf_counter() - t0) * 1e3

    def cleanup(self, k: int) -> None:
        """After the boundary: new bindings, (mark switch: slice k's IPv4 rule for unmarked lookups, the ground
        nodes' table for unmarked lookups where their satellite changed), slice k-2's rule, ISLs that went down,
        retired links, old bindings."""
        self._check(k)
        with _NoCollect():
            self.execute(self._pending["cleanup"], self.nxt)
        self.cur, self.nxt, self._pending = self.nxt, None, {}
        _freeze()

    def _check(self, k: int) -> None:
        if self.nxt is None or self.nxt.k != k:
            raise RuntimeError(f"slice {k} was not prepared")

    # ------------------------------------------------------------------ execution
    def execute(self, ops: Iterable[D.Op], st: D.SliceState) -> None:
        """Push ``ops`` in order; consecutive operations of one kind go out together (one write per namespace)."""
        run: list[D.Op] = []
        for op in ops:
            if self.handed_off and isinstance(op.obj, self.handed_off):
                continue
            if run and (op.verb, type(op.obj)) != (run[0].verb, type(run[0].obj)):
                self._push(run, st)
                run = []
            run.append(op)
        if run:
            self._push(run, st)

    def _push(self, ops: list[D.Op], st: D.SliceState) -> None:
        verb, obj = ops[0].verb, ops[0].obj
        objs = [o.obj for o in ops]
        if verb == "create":
            self._create(objs)
        elif verb in ("up", "down"):
            self._grid(objs, verb == "up")
        elif verb == "fill":
            for t in objs:
                self._fill(t, st)
        elif verb == "add" and isinstance(obj, D.Rule):
            self._rules(objs, "add", ok=())
        elif verb == "del" and isinstance(obj, D.Rule):
            self._rules(objs, "del", ok={2})  # ENOENT: already gone
        elif verb == "add" and isinstance(obj, slicemark.MarkRule):
            self._rules(objs, "add", ok={17})  # EEXIST: a rule of a restarted applier
        elif verb == "add" and isinstance(obj, D.LocalOut6):
            for name in self._sat_names:
                self.f.nl[name].route("replace", "::", 0, oif=IDX_LO, table=obj.table)
            self.f.flush(self._sat_names)
        elif verb == "set" and isinstance(obj, D.SliceMark):
            if obj.setup or not self._armed_for(st.k):
                msgs = slicemark.setup_messages(obj.mark) if obj.setup else slicemark.switch_messages(obj.mark)
                self.f.nft().transact(self._mark_names, msgs, "nftables slice mark")
        elif verb == "replace":
            self._replace(objs)
        elif verb == "bind":
            self._addrs(objs, "add", ok={17})  # EEXIST: re-bound the same cell
        elif verb == "unbind":
            self._addrs(objs, "del", ok={99})  # EADDRNOTAVAIL: already gone
        elif verb == "retire":
            self._retire(objs)
        else:
            raise ValueError(f"unknown operation {verb} {type(obj).__name__}")

    def _create(self, links: list[D.Veth]) -> None:
        """Create, address and bring up dynamic links (both ends), shaped where the kernel can."""
        f = self.f
        if self._retiring & {end for v in links for end in self._ends(v)}:
            f.settle()  # a slot retired at the last cleanup is reused now: its old link must be gone first
            self._retiring = set()
        touched = set()
        for v in links:
            na, nb = self.ns(v.node_a), self.ns(v.node_b)
            f.nl[na].veth(v.ifname_a, v.ifname_b, f.fd[nb], index=v.index_a, peer_index=v.index_b, mac=v.mac_a,
                          peer_mac=v.mac_b, mtu=v.mtu, group=v.group)
            touched |= {na, nb}
        f.flush(touched)
        shapes = []
        for v in links:
            for node, idx, ll in ((v.node_a, v.index_a, v.ll_a), (v.node_b, v.index_b, v.ll_b)):
                nl = f.nl[self.ns(node)]
                nl.link_set(idx, up=True)
                if ll:
                    nl.addr("add", idx, ll, 64)
                if v.rate_bps:
                    shapes.append(LinkShape(self.ns(node), idx, v.rate_bps, v.delay_us))
        f.flush(touched)
        if shapes and self.m.cfg.tbf:
            f.flush(queue_shapes(shapes, f.nl))

    def _grid(self, edges: list[tuple[int, int, int]], up: bool) -> None:
        """Bring up (before the boundary) or down (after it) grid ISLs, both ends: link, link-local and semantic
        address with its peer (up), or link (down)."""
        touched = set()
        gone: dict[int, set[int]] = defaultdict(set)
        for edge in edges:
            for end in D.isl_ends(self.m, edge):
                nl = self.f.nl[self.sat_ns(end.sat)]
                if up:
                    nl.link_set(end.index, up=True)
                    nl.addr("add", end.index, end.ll, 64)
                    nl.addr("add", end.index, end.addr6, 128, peer=end.peer_addr6)  # the kernel routes the peer
                else:
                    nl.link_set(end.index, up=False)
                    gone[end.sat].add(end.index)
                touched.add(self.sat_ns(end.sat))
        self.f.flush(touched, ok={17})  # EEXIST: an address that survived
        self._forget_routes_via(gone)  # the kernel deleted every route through a downed interface

    def _fill(self, t: int, st: D.SliceState) -> int:
        """Make table ``t`` hold ``st``'s routes on every satellite: only the difference is sent.

        Each satellite's messages go to the fabric's sender thread as soon as they are encoded, so the
        kernel inserts one satellite's routes while the next one's are encoded (:meth:`Fabric.pipeline`).
        Where the kernel has nexthop objects, the routes name them (:mod:`emu.dataplane.nexthops`): groups
        that lost a member are deleted here once no table names them any more. An object the kernel removed
        behind the applier's back (an interface lost its carrier: someone set the peer end down by hand)
        makes the routes naming it fail with EINVAL; that satellite's objects and routes are then
        forgotten and written again, and the satellites whose writes were held back are sent after it.
        """
        sats = list(st.routes)
        for _ in range(len(sats) + 1):
            try:
                return self._fill_some(t, st, sats)
            except DataplaneError as exc:
                bad = self._sat_of_ns.get(exc.netns) if self.nexthops is not None and exc.errno == E.EINVAL else None
                if bad is None:
                    raise
                log.warning("slice %d: %s: a nexthop object is gone (an interface lost its carrier?): writing "
                            "its objects and routes again", st.k, self.sat_ns(bad))
                self.nexthops[bad].reset()
                self._mark_unknown({bad: None})
                # the satellites after it were encoded but not sent (the sender stops at a failure): send them
                held = [self.sat_ns(x) for x in sats if len(self.f.nl[self.sat_ns(x)])]
                self.f.flush(held, ok={2, 3})
                sats = [bad]
        raise DataplaneError("route table fill", None, E.EINVAL, "nexthop objects keep disappearing")

    def _fill_some(self, t: int, st: D.SliceState, sats: list[int]) -> int:
        """:meth:`_fill` for the satellites ``sats``."""
        ops = 0
        with self.f.pipeline(ok={2, 3}) as send:  # ESRCH: went with a retired link; ENOENT: a shrunk group whose
            # every member died (the kernel removed it)
            for s in sats:
                name = self.sat_ns(s)
                nl = self.f.nl[name]
                ops += self._encode_fill(s, t, st, nl)
                if len(nl):
                    send(name)
        return ops

    def _encode_fill(self, s: int, t: int, st: D.SliceState, nl: NetlinkBatch) -> int:
        """Queue on ``nl`` what turns satellite ``s``'s table ``t`` into ``st``'s routes (and note it as its
        content); returns the number of operations."""
        want = st.routes[s]
        have = self.tables[(s, t)]
        base6 = self.desired.base6
        nh = self.nexthops[s] if self.nexthops is not None else None
        ops = 0
        dels, reps = D.route_diff(have, want)
        if dels:  # both families: the IPv6 twin under the GRC /96 (D.routes6)
            gone = [(p, plen, metric, have.pop((p, plen, metric))[0], ()) for p, plen, metric in dels]
            nlroute.route4_many(nl, "del", t, gone)
            nlroute.route6_many(nl, "del", t, gone, base6)
        if reps:
            items = [(p, plen, metric, rtype, hops) for (p, plen, metric), (rtype, hops) in reps]
            nlroute.route4_many(nl, "replace", t, items, IDX_LO, nh)
            nlroute.route6_many(nl, "replace", t, items, base6, IDX_LO, nh)
            have.update(reps)
        if nh is not None and (dels or reps):  # groups no table names any more: deleted
            ops += nh.table_names(t, have.values(), nl)
        return ops + 2 * (len(dels) + len(reps))

    def _rules(self, rules: list[D.Rule] | list[slicemark.MarkRule], verb: str, ok) -> None:
        """The rotation's rules, or the mark switch's fixed ones, on every satellite or (a ground rule) every
        UT and GS (each says its match)."""
        touched: set[str] = set()
        for r in rules:
            names = self._ground_names if getattr(r, "ground", False) else self._sat_names
            for name in names:
                self.f.nl[name].rule(verb, table=r.table, priority=r.priority, **r.selector())
            touched.update(names)
        self.f.flush(touched, ok=ok)

    def _armed_for(self, k: int) -> bool:
        """Has the kernel switched to slice k by itself (armed by :meth:`prepare`, and the armed time reached)?
        If the wall clock was stepped back after arming, the time is still ahead although the boundary has
        come: the switch is written now, as without arming."""
        if self._armed is None or self._armed[0] != k:
            return False
        late = self._armed[1] - time.time_ns()
        if late > ARM_SLACK_NS:
            log.warning("slice %d: the armed switch is still %.1f ms ahead (wall clock stepped?): switching now",
                        k, late / 1e6)
            return False
        return True

    def _addrs(self, items: list[tuple[int, str, int]], verb: str, ok) -> None:
        """Bind (``add``) or unbind (``del``) GRC addresses: the IPv4 address /32 on its interface, and its
        IPv6 twin (:func:`desired.grc_twin6`) as a ``local`` /128 route in the local table on the same
        interface -- the route the kernel itself installs for an address, so lookups, local delivery and
        echo replies from it are the same (``fibcheck``: "local"), without an IPv6 address object: deleting
        one makes the kernel walk the namespace's whole IPv6 FIB (``rt_genid_bump_ipv6``), ~9,500 times a
        slice on Starlink shell 1. A route of the local table never does."""
        touched = set()
        base6 = self.desired.base6
        six: dict[str, tuple[list, list]] = {}  # namespace -> its twins, and the interface of each
        for s, a, idx in items:
            ns = self.sat_ns(s)
            self.f.nl[ns].addr(verb, idx, a, 32)
            routes, oifs = six.get(ns) or six.setdefault(ns, ([], []))
            routes.append((_grc_int(a), 32, None, nlroute.RTN_LOCAL, ()))
            oifs.append(idx)
            touched.add(ns)
        for ns, (routes, oifs) in six.items():
            nlroute.route6_many(self.f.nl[ns], verb, D.RT_TABLE_LOCAL, routes, base6, oifs=oifs)
        # EEXIST / EADDRNOTAVAIL as before; ESRCH: a twin already gone (its interface went down)
        self.f.flush(touched, ok=set(ok) | {3})

    def _ends(self, v: D.Veth) -> tuple[tuple[str, int | str], ...]:
        """A link's ends as (namespace, ifindex) and (namespace, name): what a new link may not reuse while
        the old one is being deleted."""
        na, nb = self.ns(v.node_a), self.ns(v.node_b)
        return (na, v.index_a), (na, v.ifname_a), (nb, v.index_b), (nb, v.ifname_b)

    def _retire(self, links: list[D.Veth]) -> None:
        """Delete, by interface group, every dynamic link whose retention ended (deleting one end deletes both).

        The kernel drops every route through a deleted interface, in every
        table: forget those routes too, so a later slice that reuses the slot
        installs them again. The deletes are written from a background thread
        on second sockets (:meth:`Fabric.send_behind`): a link delete is
        mostly waiting (``rcu_barrier``), and nothing of this slice uses a
        retired link; :meth:`_create` waits for them only where a new link
        reuses a retiring slot, the next retirement always.
        """
        gone: dict[int, set[int]] = defaultdict(set)
        owners: set[tuple[str, int]] = set()
        sat_index = {s.name: s.index for s in self.m.satellites}
        for v in links:
            owners.add((self.ns(v.node_a), v.group))
            for node, idx in ((v.node_a, v.index_a), (v.node_b, v.index_b)):
                if node in sat_index:
                    gone[sat_index[node]].add(idx)
        self.f.settle()
        for ns, group in owners:
            self.f.aux(ns).link_del_group(group)
        # ENODEV: nothing of the group is left here, because a peer's group delete took it along (a middle-shell
        # satellite is the upper end of one inter-shell link and the lower end of another; three shells or more)
        self.f.send_behind(sorted({ns for ns, _g in owners}), ok={19})
        self._retiring = {end for v in links for end in self._ends(v)}
        self._forget_routes_via(gone)

    def _replace(self, objs: list) -> None:
        """Ground-side switches and delays: UT/GS defaults (in the table each names), core routes, UT tunnels,
        netem delays."""
        m, f = self.m, self.f
        touched = set()
        for x in objs:
            if isinstance(x, D.GroundDefault):
                ns = self.ns(x.node)
                ground_default(f.nl[ns], x)
            elif isinstance(x, D.CoreRoute):
                ns = self.ns(x.node)
                if x.gs >= 0:
                    f.nl[ns].route("replace", x.subnet, oif=x.oif, gateway=x.gateway)
                else:
                    f.nl[ns].route("replace", x.subnet, type="unreachable")
                if x.subnet6 and x.gs >= 0:
                    f.nl[ns].route("replace", x.subnet6, oif=x.oif, gateway=x.gateway6, metric=1)
                elif x.subnet6:
                    f.nl[ns].route("replace", x.subnet6, type="unreachable", metric=1)
            elif isinstance(x, D.TunnelTarget):
                ns = self.ns(x.node)
                if m.cfg.tunnel_mode == "ipip":
                    nlroute.route4_encap(f.nl[ns], "replace", str(m.cfg.inet_prefix), IDX_TUN, x.remote, x.local)
                else:
                    nlroute.fdb(f.nl[ns], "replace", IDX_TUN, TUNNEL_MAC, x.remote)
                if x.remote6:
                    nlroute.fdb(f.nl[ns], "replace", IDX_TUN6, TUNNEL_MAC, x.remote6)
            elif isinstance(x, D.Delay):
                ns = self.ns(x.node)
                netem(f.nl[ns], x.index, x.delay_us, verb="replace")
            else:
                raise ValueError(f"cannot replace a {type(x).__name__}")
            touched.add(ns)
        f.flush(touched)

    def _forget_routes_via(self, gone: dict[int, set[int]]) -> None:
        """Mark routes through downed or deleted interfaces as unknown.

        The kernel deletes a route whose every next hop died, but only marks one
        hop dead on a multipath route (and revives it when the link returns), so
        the true state is unknown: the next fill of that table replaces or
        deletes the route (ESRCH tolerated) instead of trusting a stale copy.
        With nexthop objects the same holds (an object dies with its interface and
        takes its routes; a group loses the member and keeps them): the objects
        through those interfaces are forgotten too (:meth:`NexthopTable.forget`).
        """
        if self.nexthops is not None:
            for sat, dead in gone.items():
                if dead:
                    self.nexthops[sat].forget(dead)
        self._mark_unknown({sat: dead for sat, dead in gone.items() if dead})

    def _mark_unknown(self, dead: dict[int, set[int] | None]) -> None:
        """Per satellite, mark as unknown its routes through the interfaces ``dead`` names (None: every route),
        in every table: the next fill of the table replaces or deletes them."""
        for (sat, _t), content in self.tables.items():
            if sat not in dead:
                continue
            oifs = dead[sat]
            for key, (rt, hops) in list(content.items()):
                if oifs is None or (hops and any(h.oif in oifs for h in hops)):
                    content[key] = (rt, None)
