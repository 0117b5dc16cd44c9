"""Slice k's desired kernel state read from the plan: :class:`Desired` (pure: no kernel, no root).

spec: grc-based-routing §Time-Varying Routing Module (the routing database's
per-slice tables), §Dynamic GRC Binding, §Time Slice Transition ("the local
GRC bindings are updated"); satellite-semantic-addressing §5.4 (link-local
next hops are semantic interface IDs). DESIGN.md: the data plane reads a
plan, it never recomputes one.

:meth:`Desired.state` turns the plan's slice k (route tables, GRC bindings,
GS choices, link delays) and the run's model into a
:class:`emu.dataplane.desired.SliceState`; the values, and the operations
between two slices' states, are :mod:`emu.dataplane.desired`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import repeat

import numpy as np

from emu.addressing.grc import ipv6_base, to_ipv4, to_ipv6
from emu.dataplane import nlroute, slicemark
from emu.dataplane.desired import (N_TABLES, RT_TABLE_MAIN, CoreRoute, Delay, GroundDefault, RouteKey, RouteVal, Rule,
                                   SliceState, TunnelTarget, Veth, ground_veth, rule_pref, shell_veth, table_id)
from emu.dataplane.model import IDX_DIR, IDX_GROUND_SLOT, IDX_LO, Model
from emu.dataplane.terrestrial import CORE_GS_BASE
from emu.orbit.constellation import DOWN
from emu.plan import actions

log = logging.getLogger(__name__)

_LOCAL: RouteVal = (nlroute.RTN_LOCAL, ())


def _dotted(grc: int) -> str:
    """Dotted-quad text of a 32-bit GRC (to_ipv4 without its range check: the plan's values are u32)."""
    return f"{grc >> 24}.{grc >> 16 & 255}.{grc >> 8 & 255}.{grc & 255}"


class Desired:
    """Slice states of one run (model + start slice), with small caches of the plan's per-slice arrays."""

    def __init__(self, model: Model, k0: int = 0):
        self.m = model
        self.k0 = k0
        self.base6 = ipv6_base(model.cfg.grc_ipv6_prefix)  # the GRC /96: every table's IPv6 twin (routes6)
        self._cache: dict[tuple[str, int], object] = {}
        self._values: dict[RouteVal, RouteVal] = {}
        self._decoded: dict[int, actions.Action] = {}  # plan action code -> its decoding (codes repeat a lot)
        self._nh: dict[tuple[int, int, int | None], tuple[int, str] | None] = {}  # Model.nexthop_of in slice _nh_k
        self._nh_k: int | None = None

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
        pre, pl, act = (a.tolist() for a in self.tables(k).of(s))
        # each distinct action resolved once, in order of first use
        items = {code: [(metric, intern((rtype, hops), (rtype, hops)))
                        for metric, rtype, hops in self.routes_for_action(s, k, code, count)]
                 for code in dict.fromkeys(act)}
        if all(len(v) == 1 and v[0][0] == 1 for v in items.values()):
            # one route at metric 1 per entry (every multipath mode but active-standby): built without a
            # Python-level loop (the preparation of each slice builds ~145k of these on Starlink shell 1)
            one = {code: v[0][1] for code, v in items.items()}
            out.update(zip(zip(pre, pl, repeat(1)), map(one.__getitem__, act)))
            return out
        for prefix, plen, code in zip(pre, pl, act):
            for metric, val in items[code]:
                out[(prefix, plen, metric)] = val
        return out

    def routes_for_action(self, s: int, k: int, code: int, count: list[int] | None = None
                          ) -> list[tuple[int, int, tuple]]:
        """(metric, type, hops) routes of one plan action at satellite s (ECMP/UCMP: one multipath route;
        active-standby: the active at metric 1, standbys at metric 2)."""
        act = self._decoded.get(code)
        if act is None:
            if len(self._decoded) > 100_000:
                self._decoded.clear()
            act = self._decoded[code] = actions.decode(code)
        if act.kind == actions.LOCAL:
            return [(1, *_LOCAL)]
        hops = []
        for e in act.egress:
            nh = self._nexthop(s, e.direction, k, act.down_target if e.direction == DOWN else None)
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

    def _nexthop(self, s: int, direction: int, k: int, target: int | None) -> tuple[int, str] | None:
        """:meth:`Model.nexthop_of`, remembered for the slice last asked (a satellite's actions share their
        directions: each is resolved once per slice)."""
        if self._nh_k != k:
            self._nh.clear()
            self._nh_k = k
        key = (s, direction, target)
        try:
            return self._nh[key]
        except KeyError:
            nh = self._nh[key] = self.m.nexthop_of(s, direction, k, target)
            return nh

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
