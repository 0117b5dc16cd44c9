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
- with this on, the data plane's per-user core route and UT tunnel target
  (:class:`desired.CoreRoute`, :class:`desired.TunnelTarget`) are handed
  to this hook and the core daemons (the per-user route belongs to them);
  NAT stays at the home core (the builder NATs each core's own pool only).

Proactive: right after slice k is prepared (a slice ahead), each home core
is told (admin ``plan``) of its users whose serving core changes at the
boundary of slice k, with the boundary's CLOCK_MONOTONIC time.
"""

from __future__ import annotations

import json
import logging
import time

from emu.addressing.grc import to_ipv4
from emu.control.sno import launch, live
from emu.control.sno.kernel import apply as ip_apply
from emu.dataplane import ifnames
from emu.dataplane.model import MTU_TUNNEL, TUNNEL_GS_ADDR, TUNNEL_MAC, VXLAN_PORT
from emu.errors import InputError

log = logging.getLogger(__name__)

RULES = ((900, "iif lan"), (901, "to 10.253.0.0/16"), (902, "to 10.255.0.0/16"))


class MobilityHook:
    """Made by the controller when the scenario has a ``mobility`` block; four calls: build, start, prepare, switch."""

    def __init__(self, model, run, features, mobility, policy: str):
        if model.cfg.tunnel_mode != "vxlan":
            raise InputError(f"mobility: the SNO control plane needs the vxlan tunnel mode (got "
                             f"{model.cfg.tunnel_mode!r})")
        self.m, self.run, self.features, self.mob, self.policy = model, run, features, mobility, policy
        self.core = live.association(model, policy)
        self.sc = live.serving_cores(model, self.core)
        self.cur: dict[int, live.CoreServe] = {}
        self.info: dict = {}
        self.events: list[dict] = []  # what the hook did at each boundary (mobility.jsonl)
        self._log = open(run.dir / "mobility.jsonl", "a")

    # ------------------------------------------------------------------ helpers
    def _ip(self, node: str, lines: list[str]) -> None:
        """``ip -batch`` in the node's namespace; ``fdb`` lines go to ``bridge -batch``."""
        ns = self.m.by_name[node].netns
        fdb = [ln for ln in lines if ln.startswith("fdb ")]
        rest = [ln for ln in lines if not ln.startswith("fdb ")]
        errs = ip_apply(fdb, argv=("bridge", "-n", ns))  # first: the uplink points at the GS before it is used
        errs += ip_apply(rest, argv=("ip", "-n", ns))
        for line, err in errs:
            log.warning("mobility: %s: %s: %s", node, line, err)

    def uplink(self, ut, op: int) -> str:
        return live.uplink_ifname(ut.operator, op)

    def _write(self, rec: dict) -> None:
        self._log.write(json.dumps(rec) + "\n")
        self._log.flush()

    # ------------------------------------------------------------------ build (once)
    def build(self, k0: int, home_gs: dict[int, int]) -> None:
        """Uplinks per operator on each UT, its access table's rules, every GS able to end every UT's tunnel;
        then slice k0's serving cores."""
        m = self.m
        for u in m.uts:
            addr, mac, grc = m.ut_tunnel_addr(u.idx), m.ut_tunnel_mac(u.idx), to_ipv4(u.grc)
            lines = []
            for idx, *_ in m.db.operators:
                if idx == u.operator:
                    continue
                dev = live.access_ifname(idx)
                lines += [f"link add name {dev} address {mac} mtu {MTU_TUNNEL} type vxlan id {m.vni_of_operator(idx)} "
                          f"local {grc} dstport {VXLAN_PORT} nolearning",
                          f"link set {dev} up", f"addr replace {addr}/32 dev {dev}",
                          f"neigh replace {TUNNEL_GS_ADDR} lladdr {TUNNEL_MAC} dev {dev} nud permanent"]
            for pref, match in RULES:
                lines += [f"rule del pref {pref}", f"rule add pref {pref} {match} lookup {live.ACCESS_TABLE}"]
            self._ip(u.name, lines)
        vx = ifnames.TUNNEL_IFNAME["vxlan"]
        for g in m.gss:
            lines = []
            for u in m.uts:
                if u.operator == g.operator:
                    continue  # the data plane's tunnel config has these
                addr, mac = m.ut_tunnel_addr(u.idx), m.ut_tunnel_mac(u.idx)
                lines += [f"neigh replace {addr} lladdr {mac} dev {vx} nud permanent",
                          f"fdb append {mac} dev {vx} dst {to_ipv4(u.grc)}",
                          f"route replace {m.user_subnets[u.idx]} via {addr} dev {vx}"]
            if lines:
                self._ip(g.name, lines)
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
        ops = {idx: name for idx, name, *_ in self.m.db.operators}
        for row, u in enumerate(self.m.uts):
            a, b = int(self.sc[k - 1, row]), int(self.sc[k, row])
            if a < 0 or b < 0 or a == b:
                continue
            home = ops[u.operator]
            user = f"{u.name}@{home}"
            res = launch.try_admin(self.info["cores"][home]["admin"],
                                   {"op": "plan", "user": user, "target": ops[b], "at_ns": boundary_mono_ns})
            self._write({"k": k, "ut": u.name, "plan": ops[b], "at_ns": boundary_mono_ns, "ok": bool(res)})

    def switch(self, k: int, home_gs: dict[int, int]) -> list[dict]:
        """At slice k's boundary: uplink FDB, the serving core's route to the UT's control address, the access
        table's default; ``relink`` for a new GS behind the same core. Returns what changed."""
        m = self.m
        nxt = live.core_serving(m, self.sc, k, home_gs)
        changed = []
        gs_pos = {g.idx: i for i, g in enumerate(m.gss)}
        ops = {idx: name for idx, name, *_ in m.db.operators}
        t, t_ns = time.time(), time.monotonic_ns()  # t_ns: the daemons' step-log clock
        for ut_idx, cs in nxt.items():
            old = self.cur.get(ut_idx)
            if old == cs:
                continue
            u = m.db.ground[ut_idx]
            addr = m.ut_tunnel_addr(ut_idx)
            if cs.core < 0:
                self._ip(u.name, [f"route del default table {live.ACCESS_TABLE}"])
            else:
                dev = self.uplink(u, cs.core)
                gs = m.db.ground[cs.gs]
                gs_end = m.gs_core_link(cs.gs)[0]
                self._ip(ops[cs.core], [f"route replace {addr}/32 via {gs_end} dev {ifnames.core_gs(gs_pos[cs.gs])}"])
                self._ip(u.name, [f"fdb replace {TUNNEL_MAC} dev {dev} dst {to_ipv4(gs.grc)}",
                                  f"route replace default via {TUNNEL_GS_ADDR} dev {dev} onlink "
                                  f"table {live.ACCESS_TABLE}"])
                if old is not None and old.core == cs.core and old.gs != cs.gs and self.info:
                    launch.try_admin(self.info["agents"][u.name]["admin"], {"op": "relink"})
            rec = {"k": k, "at": t, "t_ns": t_ns, "ut": u.name, "core": ops.get(cs.core), "gs": m.db.ground[cs.gs].name
                   if cs.gs >= 0 else None, "from_core": ops.get(old.core) if old else None,
                   "visited": cs.visited}
            changed.append(rec)
            self._write(rec)
        self.cur = nxt
        return changed

    def close(self) -> None:
        try:
            self._log.close()
        except OSError:
            pass
