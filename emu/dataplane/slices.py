"""Keep the kernel in step with the plan, slice by slice.

spec: grc-based-routing §Time-Varying Routing Module, §Time Slice Transition
(install the new table at the boundary, keep the previous one one more slice
for packets in flight). DESIGN.md: make-before-break, boundary = a few cheap
switches.

Each satellite keeps three route tables in rotation. Slice k's table
(``Model.table_id(k)``) is filled *before* the boundary, while nothing looks
it up; at the boundary one ``ip rule`` per satellite (priority
``Model.rule_pref(k)``, smaller than slice k-1's) makes it win, so slice
k-1's table is left as the fallback for destinations the new one no longer
matches — the spec's one-slice retention — until its rule is deleted after
the next boundary. New ground and inter-shell links are created and brought
up during the previous slice and retired (deleted by interface group) one
slice after their last use.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from emu.addressing.grc import to_ipv4
from emu.dataplane import nlroute
from emu.dataplane.fabric import Fabric
from emu.dataplane.model import (IDX_DIR, IDX_DN_SLOT, IDX_GROUND_SLOT, IDX_LO, IDX_TUN, IDX_UP_SLOT,
                                 MTU_SPACE, TUNNEL_MAC, Model)
from emu.dataplane.tc import LinkShape, netem, shape_many
from emu.orbit.constellation import DOWN, OPPOSITE, UP
from emu.plan import actions

log = logging.getLogger(__name__)

GROUP_BASE = 10  # IFLA_GROUP of a link = GROUP_BASE + the slice after which it is deleted
RouteKey = tuple[int, int, int]  # prefix, plen, metric


class SliceApplier:
    def __init__(self, model: Model, fabric: Fabric, features):
        self.m = model
        self.f = fabric
        self.features = features
        self.tables: dict[tuple[int, int], dict[RouteKey, tuple]] = defaultdict(dict)  # (sat, table) -> content
        self.addrs: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)  # sat -> addr -> (ifindex, last slice)
        self.ground_default: dict[int, tuple] = {}
        self.core_route: dict[int, int] = {}
        self.ut_target: dict[int, int] = {}
        self.unresolved = 0
        self.k0 = 0
        self._level = int(model.db.meta.get("grc_level", 6))
        self._choice_cache: dict[int, object] = {}

    # ------------------------------------------------------------------ helpers
    def sat_ns(self, s: int) -> str:
        return self.m.satellites[s].netns

    def node_ns(self, name: str) -> str:
        return self.m.by_name[name].netns

    def choice(self, k: int):
        if k not in self._choice_cache:
            if len(self._choice_cache) > 4:
                self._choice_cache.clear()
            self._choice_cache[k] = self.m.db.gs_choice(k)
        return self._choice_cache[k]

    # ------------------------------------------------------------------ routes
    def desired_routes(self, s: int, k: int, tables) -> dict[RouteKey, tuple]:
        """Slice k's kernel routes for satellite s: key -> (type, hops).

        Besides the plan's entries, the region the satellite binds in slice k is
        a local route of the same table (unless the plan states that prefix
        itself), so the binding changes exactly when the table does (grc §Time
        Slice Transition: "the local GRC bindings are updated"); its interface
        addresses follow right after the boundary.
        """
        out: dict[RouteKey, tuple] = {}
        region = self._region(s, k)
        out[(region[0], region[1], 1)] = (nlroute.RTN_LOCAL, ())
        cache: dict[int, list] = {}
        for prefix, plen, code in zip(*tables.of(s)):
            code = int(code)
            items = cache.get(code)
            if items is None:
                items = cache[code] = self._routes_for(s, k, code)
            for metric, rtype, hops in items:
                out[(int(prefix), int(plen), metric)] = (rtype, hops)
        return out

    def _region(self, s: int, k: int) -> tuple[int, int]:
        plen = 11 + 3 * self._level
        mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        return int(self._bound(k)[s]) & mask, plen

    def _bound(self, k: int):
        cache = self.__dict__.setdefault("_bound_cache", {})
        if k not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[k] = self.m.db.bound_grc(k)
        return cache[k]

    def _routes_for(self, s: int, k: int, code: int) -> list[tuple[int, int, tuple]]:
        act = actions.decode(code)
        if act.kind == actions.LOCAL:
            return [(1, nlroute.RTN_LOCAL, ())]
        hops = []
        for e in act.egress:
            nh = self.m.nexthop_of(s, e.direction, k, act.down_target if e.direction == DOWN else None)
            if nh is None:
                self.unresolved += 1
                log.warning("slice %d: %s has no link for direction %d", k, self.m.satellites[s].name, e.direction)
                continue
            hops.append((nh[0], nh[1], e.attribute))
        if not hops:
            return [(1, nlroute.RTN_UNREACHABLE, ())]
        if act.kind == actions.STANDBY:
            return [(1 if w == 1 else 2, nlroute.RTN_UNICAST, (nlroute.Hop(o, v, 1),)) for o, v, w in hops]
        return [(1, nlroute.RTN_UNICAST, tuple(nlroute.Hop(o, v, w) for o, v, w in hops))]

    def fill_tables(self, k: int) -> int:
        """Make table_id(k) hold slice k's routes on every satellite (nothing looks it up yet)."""
        t = self.m.table_id(k)
        tables = self.m.db.tables(k)
        ops = 0
        for s in range(len(self.m.satellites)):
            want = self.desired_routes(s, k, tables)
            have = self.tables[(s, t)]
            nl = self.f.nl[self.sat_ns(s)]
            for key in [x for x in have if x not in want]:
                nlroute.route4(nl, "del", key[0], key[1], table=t, metric=key[2],
                               rtype=have[key][0])
                del have[key]
                ops += 1
            for key, val in want.items():
                if have.get(key) != val:
                    rtype, hops = val
                    nlroute.route4(nl, "replace", key[0], key[1], hops, table=t, metric=key[2], rtype=rtype,
                                   oif=IDX_LO if rtype == nlroute.RTN_LOCAL else None)
                    have[key] = val
                    ops += 1
        self.f.flush([s.netns for s in self.m.satellites], ok={3})  # ESRCH: went with a retired link
        return ops

    def rules(self, k: int, verb: str) -> None:
        for s in self.m.satellites:
            self.f.nl[s.netns].rule(verb, table=self.m.table_id(k), priority=self.m.rule_pref(k))

    # ------------------------------------------------------------------ GRC bindings
    def bind_addresses(self, k: int) -> None:
        """Add slice k's GRC addresses (old ones stay until after the next boundary)."""
        bound = self.m.db.bound_grc(k)
        steady = self.m.steady_interfaces
        for s in range(len(self.m.satellites)):
            nl = self.f.nl[self.sat_ns(s)]
            for d in range(6):
                a = to_ipv4(int(bound[s]) | d)
                idx = IDX_DIR[d] if (s, d) in steady else IDX_LO
                cur = self.addrs[s].get(a)
                if cur is None:
                    nl.addr("add", idx, a, 32)
                self.addrs[s][a] = (idx, k)
        self.f.flush([s.netns for s in self.m.satellites], ok={17})  # EEXIST: re-bound the same cell

    def unbind_old(self, k: int) -> None:
        """Remove GRC addresses last needed before slice k-1."""
        for s, addrs in self.addrs.items():
            nl = self.f.nl[self.sat_ns(s)]
            for a, (idx, last) in list(addrs.items()):
                if last < k - 1:
                    nl.addr("del", idx, a, 32)
                    del addrs[a]
        self.f.flush([s.netns for s in self.m.satellites], ok={99})  # EADDRNOTAVAIL: already gone

    # ------------------------------------------------------------------ dynamic links
    def create_links(self, k: int, initial: bool = False) -> int:
        """Create, address and bring up the ground and inter-shell links slice k+1 needs (prepared at k).

        ``initial``: every link alive at slice k (a run that starts there).
        """
        m, f = self.m, self.f
        if initial:
            gls = [gl for gl in m.ground_links if gl.prepare <= k < gl.retire]
            sls = [sl for sl in m.shell_links if sl.prepare <= k < sl.retire]
        else:
            gls = [gl for gl in m.ground_links if gl.prepare == k]
            sls = [sl for sl in m.shell_links if sl.prepare == k]
        touched = set()
        for gl in gls:
            sns, gns = self.sat_ns(gl.sat), m.by_name[m.db.ground[gl.ground].name].netns
            f.nl[sns].veth(f"g{gl.sat_slot}", f"up{gl.ground_slot}", f.fd[gns], index=IDX_GROUND_SLOT + gl.sat_slot,
                           peer_index=IDX_GROUND_SLOT + gl.ground_slot, mac=m.sat_mac(gl.sat, DOWN),
                           peer_mac=m.ground_mac(gl.ground, gl.ground_slot), mtu=MTU_SPACE,
                           group=GROUP_BASE + gl.retire)
            touched |= {sns, gns}
        for sl in sls:
            lns, uns = self.sat_ns(sl.lower), self.sat_ns(sl.upper)
            f.nl[lns].veth(f"up{sl.lower_slot}", f"dn{sl.upper_slot}", f.fd[uns], index=IDX_UP_SLOT + sl.lower_slot,
                           peer_index=IDX_DN_SLOT + sl.upper_slot, mac=m.sat_mac(sl.lower, UP),
                           peer_mac=m.sat_mac(sl.upper, DOWN), mtu=MTU_SPACE, group=GROUP_BASE + sl.retire)
            touched |= {lns, uns}
        f.flush(touched)
        shapes = []
        for gl in gls:
            sns, gns = self.sat_ns(gl.sat), m.by_name[m.db.ground[gl.ground].name].netns
            si, gi = IDX_GROUND_SLOT + gl.sat_slot, IDX_GROUND_SLOT + gl.ground_slot
            f.nl[sns].link_set(si, up=True)
            f.nl[sns].addr("add", si, m.sat_ll(gl.sat, DOWN), 64)
            f.nl[gns].link_set(gi, up=True)
            f.nl[gns].addr("add", gi, m.ground_ll(gl.ground), 64)
            rate = int(m.rates_mbit["ground"] * 1e6)
            d_us = 1 if self.features.has("netem") else 0  # netem root now, real delay set at the boundary
            shapes += [LinkShape(sns, si, rate, d_us), LinkShape(gns, gi, rate, d_us)]
        for sl in sls:
            lns, uns = self.sat_ns(sl.lower), self.sat_ns(sl.upper)
            li, ui = IDX_UP_SLOT + sl.lower_slot, IDX_DN_SLOT + sl.upper_slot
            f.nl[lns].link_set(li, up=True)
            f.nl[lns].addr("add", li, m.sat_ll(sl.lower, UP), 64)
            f.nl[uns].link_set(ui, up=True)
            f.nl[uns].addr("add", ui, m.sat_ll(sl.upper, DOWN), 64)
            rate = int(m.rates_mbit["isl"] * 1e6)
            d_us = 1 if self.features.has("netem") else 0
            shapes += [LinkShape(lns, li, rate, d_us), LinkShape(uns, ui, rate, d_us)]
        f.flush(touched)
        if shapes and self.features.has("tbf"):
            shape_many(shapes, f.nl)
        return len(gls) + len(sls)

    def retire_links(self, k: int) -> int:
        """Delete, by interface group, every dynamic link whose retention ended at slice k.

        The kernel drops every route through a deleted interface, in every
        table: forget those routes too, so a later slice that reuses the slot
        installs them again.
        """
        gone: dict[int, set[int]] = defaultdict(set)  # sat -> ifindexes deleted
        owners = set()
        for gl in self.m.ground_links:
            if gl.retire == k:
                owners.add(self.sat_ns(gl.sat))
                gone[gl.sat].add(IDX_GROUND_SLOT + gl.sat_slot)
        for sl in self.m.shell_links:
            if sl.retire == k:
                owners.add(self.sat_ns(sl.lower))
                gone[sl.lower].add(IDX_UP_SLOT + sl.lower_slot)
                gone[sl.upper].add(IDX_DN_SLOT + sl.upper_slot)
        for ns in owners:
            self.f.nl[ns].link_del_group(GROUP_BASE + k)
        self.f.flush(owners)
        self._forget_routes_via(gone)
        return len(owners)

    def isl_state(self, k: int, prev: int | None, up: bool) -> int:
        """Bring up (before the boundary) or down (after it) the grid ISLs that change between prev and k."""
        from emu.dataplane.build import address_isl

        now = self.m.active_grid(k)
        before = self.m.active_grid(prev) if prev is not None else set()
        change = (now - before) if up else (before - now)
        touched = set()
        gone: dict[int, set[int]] = defaultdict(set)
        for a, b, d in change:
            for sat, direction, peer in ((a, d, b), (b, OPPOSITE[d], a)):
                nl = self.f.nl[self.sat_ns(sat)]
                if up:
                    address_isl(nl, self.m, sat, direction, peer)
                else:
                    nl.link_set(IDX_DIR[direction], up=False)
                    gone[sat].add(IDX_DIR[direction])
                touched.add(self.sat_ns(sat))
        self.f.flush(touched, ok={17})  # EEXIST: an address that survived
        self._forget_routes_via(gone)  # the kernel deleted every route through a downed interface
        return len(change)

    def _forget_routes_via(self, gone: dict[int, set[int]]) -> None:
        """Mark routes through downed or deleted interfaces as unknown.

        The kernel deletes a route whose every next hop died, but only marks one
        hop dead on a multipath route (and revives it when the link returns), so
        the true state is unknown: the next fill of that table replaces or
        deletes the route (ESRCH tolerated) instead of trusting a stale copy.
        """
        for (sat, _t), content in self.tables.items():
            dead = gone.get(sat)
            if dead:
                for key, (rt, hops) in list(content.items()):
                    if hops and any(h.oif in dead for h in hops):
                        content[key] = (rt, None)

    # ------------------------------------------------------------------ ground-side switches
    def ground_switch(self, k: int) -> int:
        """UT/GS default routes onto their new serving link, cores toward the chosen GS, UT tunnels re-targeted."""
        m, f = self.m, self.f
        touched = set()
        links = m.ground_link_at(k)
        for g in m.db.ground:
            gl = links.get(g.idx)
            want = ("via", gl.sat, gl.ground_slot) if gl else ("unreachable",)
            if self.ground_default.get(g.idx) == want:
                continue
            ns = m.by_name[g.name].netns
            nl = f.nl[ns]
            if gl:
                hop = nlroute.Hop(IDX_GROUND_SLOT + gl.ground_slot, m.sat_ll(gl.sat, DOWN))
                nlroute.route4(nl, "replace", 0, 0, [hop], table=254)
            else:
                nlroute.route4(nl, "replace", 0, 0, table=254, rtype=nlroute.RTN_UNREACHABLE)
            self.ground_default[g.idx] = want
            touched.add(ns)
        choice = self.choice(k)
        for row, u in enumerate(m.uts):
            gs = int(choice[row, 0])
            if self.core_route.get(u.idx) == gs:
                continue
            core = m.db.operators[u.operator][1]
            cns = m.by_name[core].netns
            sub = str(m.user_subnets[u.idx])
            if gs >= 0:
                i = m.gss.index(next(x for x in m.gss if x.idx == gs))
                f.nl[cns].route("replace", sub, oif=100 + i, gateway=m.gs_core_link(gs)[0])
                uns = m.by_name[u.name].netns
                if m.tunnel_mode == "ipip":
                    nlroute.route4_encap(f.nl[uns], "replace", str(m.inet_prefix), IDX_TUN,
                                         to_ipv4(m.db.ground[gs].grc), to_ipv4(u.grc))
                else:
                    nlroute.fdb(f.nl[uns], "replace", IDX_TUN, TUNNEL_MAC, to_ipv4(m.db.ground[gs].grc))
                touched.add(uns)
            else:
                f.nl[cns].route("replace", sub, type="unreachable")
            self.core_route[u.idx] = gs
            touched.add(cns)
        f.flush(touched)
        return len(touched)

    # ------------------------------------------------------------------ delays (kernels with netem)
    def delays(self, k: int) -> int:
        if not self.features.has("netem"):
            return 0
        m, f = self.m, self.f
        L = m.db.links(k)
        touched = set()
        for r in L:
            a, b, da, db_ = int(r["a"]), int(r["b"]), int(r["dir_a"]), int(r["dir_b"])
            if da >= 4:
                continue
            us = int(round(float(r["delay_ms"]) * 1000))
            for sat, d in ((a, da), (b, db_)):
                ns = self.sat_ns(sat)
                netem(f.nl[ns], IDX_DIR[d], us, verb="replace")
                touched.add(ns)
        att = m.db.link_ranges(k)  # (node, sat) -> km, every antenna's link
        for (g, _sat), gl in m.ground_links_at(k).items():
            us = int(round(att.get((g, gl.sat), 0.0) / 299792.458 * 1e6))
            gns = m.by_name[m.db.ground[g].name].netns
            for ns, idx in ((self.sat_ns(gl.sat), IDX_GROUND_SLOT + gl.sat_slot),
                            (gns, IDX_GROUND_SLOT + gl.ground_slot)):
                netem(f.nl[ns], idx, us, verb="replace")
                touched.add(ns)
        f.flush(touched)
        return len(touched)

    # ------------------------------------------------------------------ the boundary
    def initial(self, k0: int = 0) -> None:
        """The first slice (k0): links, addresses, tables and switches, before anything runs."""
        self.k0 = k0
        self.create_links(k0, initial=True)  # includes those prepared at k0 for k0+1
        self.bind_addresses(k0)
        self.fill_tables(k0)
        self.rules(k0, "add")
        self.f.flush([s.netns for s in self.m.satellites])
        self.ground_switch(k0)
        self.delays(k0)

    def prepare(self, k: int) -> float:
        """Off the critical path, during slice k-1: everything slice k needs, not yet in use."""
        t0 = time.perf_counter()
        if k - 1 > self.k0:
            self.create_links(k - 1)
        self.isl_state(k, k - 1, up=True)
        self.fill_tables(k)
        return (time.perf_counter() - t0) * 1e3

    def switch(self, k: int) -> float:
        """The boundary itself: one rule per satellite, then the ground side. Returns milliseconds."""
        t0 = time.perf_counter()
        self.rules(k, "add")  # slice k's table holds the satellite's new region as local: bound from now on
        self.f.flush([s.netns for s in self.m.satellites])
        self.ground_switch(k)
        self.delays(k)
        return (time.perf_counter() - t0) * 1e3

    def cleanup(self, k: int) -> None:
        """After the boundary: drop slice k-2's rule, ISLs that went down, retired links, old bindings."""
        self.bind_addresses(k)
        if k >= 2:
            self.rules(k - 2, "del")
            self.f.flush([s.netns for s in self.m.satellites], ok={2})  # ENOENT: already gone
        self.isl_state(k, k - 1, up=False)
        self.retire_links(k)
        self.unbind_old(k)
