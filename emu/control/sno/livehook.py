"""The SNO control plane in a live run, kernel side: the access layer the agents watch, the daemons, the plan feed.

spec: inter-sno-mobility §4.2 (a core per SNO, an agent per terminal), §5.1
(the user keeps its home address; uplink user -> visited core -> tunnel ->
home core -> destination), §5 Figure 5 (the home core knows the next
association from the plan).

How the data plane's terminal tunnels meet the agents (the mismatch of
docs/sno-protocol.md "Hooking into leo-emu up"):

- each UT keeps its data-plane VXLAN device (``vx0``, its home operator's
  VNI) and gets one more per other operator (``sv<op>``, that operator's
  VNI, same tunnel address as a /32, same MAC): its uplink toward each core;
- a UT's *access table* (:data:`live.ACCESS_TABLE`) holds one default route
  naming the uplink of the core serving it now; the device's traffic (``iif
  lan``) and the control traffic (discovery anycast, cores' access
  addresses) look it up. The agent watches that table, not the main one
  (whose default is the satellite link);
- every GS can terminate every UT (neighbour, FDB entry, route of the UT's
  home prefix), so a visited core's GS carries the visitor's traffic;
- per slice, :func:`live.core_serving` says which core and GS serve each
  user: at the boundary this hook points the uplink's FDB entry at that GS,
  gives that core a route to the UT's tunnel address through it (the
  agent's control address), and replaces the access-table default. A new
  core is a new uplink for the agent (it discovers, registers; the cores
  do the rest); a new GS behind the same core is a new link on the same
  uplink (the agent is told ``relink``);
- IPv6 user traffic the same way (grc §Data Forwarding Process, "IPv4/IPv6";
  spec §5.1: the user's addresses never change): each UT's IPv6 uplink per
  operator (the data plane's ``vx6``, ``s6v<op>`` toward the others: VXLAN
  over the IPv6 GRCs), an IPv6 default in the access table naming the
  serving core's one, every GS able to end every UT's ``vx6`` tunnel; the
  cores route the user's IPv6 prefix as they route its IPv4 one
  (:mod:`emu.control.sno.kernel`);
- with this on, the data plane's per-user core route and UT tunnel target
  (:class:`desired.CoreRoute`, :class:`desired.TunnelTarget`) are handed
  to this hook and the core daemons (the per-user route belongs to them);
  NAT stays at the home core (the builder NATs each core's own pool only).

Kernel changes go over netlink in bulk (:mod:`emu.control.sno.nlhook`): per
boundary every namespace's requests are queued, then the cores' queues are
sent (one write each) before the terminals' (the route to the terminal
exists before its uplink moves). ``mobility.jsonl`` records the hook's own
time per boundary (``hook_ms``).

Experiment events (:mod:`emu.experiment.events`) change the same desired
state between boundaries, under the hook's lock: :meth:`MobilityHook.force`
moves a user to another core now (a forced inter-SNO handover, through the
run's procedure: proactive tells the home core first); :meth:`gs_down` /
:meth:`gs_up` take a ground station out of the choice (its users move to
another served GS of the same core, :func:`live.avoid_gs`).

Proactive: right after slice k is prepared (a slice ahead), each home core
is told (admin ``plan``) of its users whose serving core changes at the
boundary of slice k, with the boundary's CLOCK_MONOTONIC time.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import socket

from emu.addressing.grc import to_ipv4, to_ipv6
from emu.control.sno import launch, live
from emu.control.sno.nlhook import HookNetlink
from emu.dataplane import ifnames
from emu.dataplane.model import (MTU_TUNNEL, MTU_TUNNEL6, TUNNEL6_GS_LL, TUNNEL6_IFNAME, TUNNEL_GS_ADDR, TUNNEL_MAC,
                                 VXLAN_PORT)
from emu.errors import InputError

log = logging.getLogger(__name__)

RULES = ((900, "lan", None), (901, None, "10.253.0.0/16"), (902, None, "10.255.0.0/16"))  # (pref, iif, to)


class MobilityHook:
    """Made by the controller when the scenario has a ``mobility`` block; four calls: build, start, prepare,
    switch; and the experiment events' force, gs_down, gs_up (any thread: one lock)."""

    def __init__(self, model, run, features, mobility, policy: str):
        if model.cfg.tunnel_mode != "vxlan":
            raise InputError(f"mobility: the SNO control plane needs the vxlan tunnel mode (got "
                             f"{model.cfg.tunnel_mode!r})")
        self.m, self.run, self.features, self.mob, self.policy = model, run, features, mobility, policy
        self.core = live.association(model, policy)
        self.sc = live.serving_cores(model, self.core)
        self.cur: dict[int, live.CoreServe] = {}
        self.planned: dict[int, live.CoreServe] = {}  # the plan's choice in the slice in force
        self.forced: dict[int, tuple[live.CoreServe, int]] = {}  # ut -> (plan's choice when forced, core)
        self.down: set[int] = set()  # ground stations out (experiment events)
        self.k = -1
        self.home_gs: dict[int, int] = {}
        self.info: dict = {}
        self.lock = threading.RLock()
        self.nl = HookNetlink(lambda node: self.m.by_name[node].netns)
        self._log = open(run.dir / "mobility.jsonl", "a")
        self.ops = {idx: name for idx, name, *_ in model.db.operators}

    # ------------------------------------------------------------------ helpers
    def _flush(self, nodes) -> None:
        for node, op, err in self.nl.flush(nodes):
            log.warning("mobility: %s: %s: %s", node, op, err)

    def uplink(self, ut, op: int) -> str:
        return live.uplink_ifname(ut.operator, op)

    def grc6(self, g) -> str:
        """A ground node's IPv6 GRC (the outer address of the IPv6 tunnels)."""
        return to_ipv6(g.grc, self.m.cfg.grc_ipv6_prefix)

    def _write(self, rec: dict) -> None:
        self._log.write(json.dumps(rec) + "\n")
        self._log.flush()

    # ------------------------------------------------------------------ build (once)
    def build(self, k0: int, home_gs: dict[int, int]) -> None:
        """Uplinks per operator on each UT, its access table's rules, every GS able to end every UT's tunnel;
        then slice k0's serving cores."""
        m, nl = self.m, self.nl
        t0 = time.perf_counter()
        with self.lock:
            for u in m.uts:
                for idx, *_ in m.db.operators:
                    if idx != u.operator:
                        nl.vxlan(u.name, live.access_ifname(idx), m.vni_of_operator(idx), to_ipv4(u.grc), VXLAN_PORT,
                                 m.ut_tunnel_mac(u.idx), MTU_TUNNEL)
                        nl.vxlan(u.name, live.access6_ifname(idx), m.vni_of_operator(idx), self.grc6(u), VXLAN_PORT,
                                 m.ut_tunnel_mac(u.idx), MTU_TUNNEL6)
            self._flush([u.name for u in m.uts])
            for u in m.uts:
                addr, ll6 = m.ut_tunnel_addr(u.idx), m.ut_tunnel6_ll(u.idx)
                for idx, *_ in m.db.operators:
                    if idx == u.operator:
                        continue
                    dev, dev6 = live.access_ifname(idx), live.access6_ifname(idx)
                    nl.link_up(u.name, dev)
                    nl.addr(u.name, dev, addr, 32)
                    nl.neigh(u.name, dev, TUNNEL_GS_ADDR, TUNNEL_MAC)
                    nl.link_up(u.name, dev6)
                    nl.addr(u.name, dev6, ll6, 64)
                    nl.neigh(u.name, dev6, TUNNEL6_GS_LL, TUNNEL_MAC)
                for pref, iif, to in RULES:
                    nl.rule_replace(u.name, pref, live.ACCESS_TABLE, iif=iif, to=to)
                pref, iif, _to = RULES[0]  # IPv6: the device's traffic looks the access table up too
                nl.rule_replace(u.name, pref, live.ACCESS_TABLE, iif=iif, family=socket.AF_INET6)
            vx = ifnames.TUNNEL_IFNAME["vxlan"]
            for g in m.gss:
                for u in m.uts:
                    if u.operator == g.operator:
                        continue  # the data plane's tunnel config has these
                    addr, mac, ll6 = m.ut_tunnel_addr(u.idx), m.ut_tunnel_mac(u.idx), m.ut_tunnel6_ll(u.idx)
                    nl.neigh(g.name, vx, addr, mac)
                    nl.fdb(g.name, "append", vx, mac, to_ipv4(u.grc))
                    nl.route(g.name, "replace", str(m.user_subnets[u.idx]), vx, gateway=addr)
                    nl.neigh(g.name, TUNNEL6_IFNAME, ll6, mac)
                    nl.fdb(g.name, "append", TUNNEL6_IFNAME, mac, self.grc6(u))
                    nl.route(g.name, "replace", str(m.user_subnets6[u.idx]), TUNNEL6_IFNAME, gateway=ll6)
            for u in m.uts:  # the per-user route at a core is the daemons': the data plane's slice-k0 IPv6 one
                # (CoreRoute.subnet6, metric 1) would outrank theirs for good (IPv4's is replaced: same metric)
                nl.route(self.ops[u.operator], "del", str(m.user_subnets6[u.idx]))
            self._flush([u.name for u in m.uts] + [g.name for g in m.gss] + list(self.ops.values()))
            self._write({"build_ms": round((time.perf_counter() - t0) * 1e3, 3), "requests": nl.sent})
            self.switch(k0, home_gs)

    # ------------------------------------------------------------------ daemons
    def start(self, wait_s: float = 20.0) -> dict:
        spec = live.control_spec(self.m, self.mob)
        self.info = launch.start(self.run, spec, self.features)
        self.info["association"] = self.policy
        self.info["ready"] = launch.wait_ready(self.info, wait_s)
        (self.run.dir / "sno" / "control.json").write_text(json.dumps(self.info, indent=1))
        return self.info

    # ------------------------------------------------------------------ per slice
    def prepare(self, k: int, boundary_mono_ns: int) -> None:
        """Proactive: tell each home core of its users whose serving core changes at slice k's boundary."""
        if self.mob.procedure != "proactive" or not self.info or k >= self.sc.shape[0]:
            return
        for row, u in enumerate(self.m.uts):
            a, b = int(self.sc[k - 1, row]), int(self.sc[k, row])
            if a < 0 or b < 0 or a == b:
                continue
            self._plan(u, b, boundary_mono_ns, k)

    def _plan(self, u, target: int, at_ns: int, k: int) -> bool:
        home = self.ops[u.operator]
        res = launch.try_admin(self.info["cores"][home]["admin"],
                               {"op": "plan", "user": f"{u.name}@{home}", "target": self.ops[target], "at_ns": at_ns})
        self._write({"k": k, "ut": u.name, "plan": self.ops[target], "at_ns": at_ns, "ok": bool(res)})
        return bool(res)

    def _effective(self, k: int) -> dict[int, live.CoreServe]:
        """The plan's choice with the events applied: forced users stay where they were sent while the plan's
        own choice for them does not change; no user goes through a GS that is down."""
        out = dict(self.planned)
        for ut, (was, core) in list(self.forced.items()):
            if self.planned.get(ut) != was:
                del self.forced[ut]  # the plan moved the user: the forced choice ends
                continue
            u = self.m.db.ground[ut]
            out[ut] = live.serve_by(self.m, k, u, core, self.home_gs)
        return live.avoid_gs(self.m, k, out, self.down)

    def switch(self, k: int, home_gs: dict[int, int]) -> list[dict]:
        """At slice k's boundary: the plan's serving cores (with the events' changes) into the kernel."""
        with self.lock:
            self.k, self.home_gs = k, home_gs
            self.planned = live.core_serving(self.m, self.sc, k, home_gs)
            return self._apply(k, self._effective(k), "boundary")

    def _apply(self, k: int, nxt: dict[int, live.CoreServe], why: str) -> list[dict]:
        """Uplink FDB, the serving core's route to the UT's control address, the access table's default;
        ``relink`` for a new GS behind the same core. Returns what changed."""
        m, nl = self.m, self.nl
        changed, relink = [], []
        gs_pos = {g.idx: i for i, g in enumerate(m.gss)}
        t, t_ns = time.time(), time.monotonic_ns()  # t_ns: the daemons' step-log clock
        t0 = time.perf_counter()
        for ut_idx, cs in nxt.items():
            old = self.cur.get(ut_idx)
            if old == cs:
                continue
            u = m.db.ground[ut_idx]
            if cs.core < 0:
                nl.route(u.name, "del", "0.0.0.0/0", table=live.ACCESS_TABLE)
                nl.route(u.name, "del", "::/0", table=live.ACCESS_TABLE)
            else:
                dev, dev6 = self.uplink(u, cs.core), live.uplink6_ifname(u.operator, cs.core)
                gs = m.db.ground[cs.gs]
                nl.route(self.ops[cs.core], "replace", f"{m.ut_tunnel_addr(ut_idx)}/32",
                         ifnames.core_gs(gs_pos[cs.gs]), gateway=m.gs_core_link(cs.gs)[0])
                nl.fdb(u.name, "replace", dev, TUNNEL_MAC, to_ipv4(gs.grc))  # first: the uplink points at the GS
                nl.route(u.name, "replace", "0.0.0.0/0", dev, gateway=TUNNEL_GS_ADDR, onlink=True,
                         table=live.ACCESS_TABLE)
                nl.fdb(u.name, "replace", dev6, TUNNEL_MAC, self.grc6(gs))  # IPv6: the same GS, the same core
                nl.route(u.name, "replace", "::/0", dev6, gateway=TUNNEL6_GS_LL, table=live.ACCESS_TABLE)
                if old is not None and old.core == cs.core and old.gs != cs.gs:
                    relink.append(u.name)
            changed.append({"k": k, "at": t, "t_ns": t_ns, "ut": u.name, "core": self.ops.get(cs.core),
                            "gs": m.db.ground[cs.gs].name if cs.gs >= 0 else None,
                            "from_core": self.ops.get(old.core) if old else None, "visited": cs.visited,
                            **({} if why == "boundary" else {"why": why})})
        self._flush(list(self.ops.values()) + [m.db.ground[x].name for x in nxt])
        hook_ms = (time.perf_counter() - t0) * 1e3
        self.cur = {**self.cur, **nxt}
        if self.info:
            for name in relink:
                launch.try_admin(self.info["agents"][name]["admin"], {"op": "relink"})
        for rec in changed:
            self._write(rec)
        if changed:  # the hook's own cost here (kernel work for every changed UT)
            self._write({"k": k, "hook_ms": round(hook_ms, 3), "changes": len(changed), "why": why})
        return changed

    # ------------------------------------------------------------------ experiment events (any thread)
    def force(self, ut_name: str, core: int, notice_s: float = 0.0) -> dict | None:
        """Forced inter-SNO handover: ``ut_name`` is served by operator ``core`` from now on (until the plan's
        own choice for it changes). Proactive: its home core is told first and ``notice_s`` later the link
        moves. Returns the switch record (None: the user is unserved, or already there)."""
        u = self.m.by_name[ut_name]
        g = self.m.db.ground[u.index]
        with self.lock:
            cur = self.cur.get(g.idx)
            if cur is None or cur.core < 0 or cur.core == core:
                return None
            k = self.k
        if self.mob.procedure == "proactive" and self.info and notice_s > 0:
            at_ns = time.monotonic_ns() + int(notice_s * 1e9)
            self._plan(g, core, at_ns, k)
            time.sleep(max(0.0, (at_ns - time.monotonic_ns()) / 1e9))  # switch when the home core was told
        with self.lock:
            if self.planned.get(g.idx) is None or self.planned[g.idx].core < 0:
                return None
            self.forced[g.idx] = (self.planned[g.idx], core)
            recs = self._apply(self.k, self._effective(self.k), "forced_handover")
        return next((r for r in recs if r["ut"] == ut_name), None)

    def gs_down(self, gs_name: str) -> list[dict]:
        with self.lock:
            self.down.add(self.m.by_name[gs_name].index)
            return self._apply(self.k, self._effective(self.k), "gs_outage")

    def gs_up(self, gs_name: str) -> list[dict]:
        with self.lock:
            self.down.discard(self.m.by_name[gs_name].index)
            return self._apply(self.k, self._effective(self.k), "gs_outage_end")

    def close(self) -> None:
        self.nl.close()
        try:
            self._log.close()
        except OSError:
            pass
