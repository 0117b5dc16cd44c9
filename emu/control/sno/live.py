"""The SNO control plane in a live run, derived from the plan and the data plane's model (pure: no kernel).

spec: inter-sno-mobility §3.3 (a user served by a satellite associated with
another operator's core is an inter-SNO user), §4.2 (one core per SNO, an
agent per terminal), §5.1 / §5 Figure 5 (the procedures a change of
serving core triggers).

What the cores should hold per slice is a desired-state value like the data
plane's (:class:`CoreServe`): for each user terminal, the core serving it
in slice k under the run's association policy (``routing.association``,
stored and signed in the plan: :meth:`PlanDB.association`) and the ground
station of that core its access goes through. A change of ``core`` between
two served slices is an inter-SNO handover (:func:`inter_sno_handovers`,
the same rule as :func:`emu.plan.handover.events`).

:func:`control_spec` turns the model into the launcher's
:class:`~emu.control.sno.launch.ControlSpec`: one core daemon per operator
core namespace, one agent per user terminal (``name@operator``), each
core's access links (``c<i>`` toward its GSs) and public address
(``m.core_public``), a tunnel pool per core in 10.253/16 (which the data
plane does not use: it numbers UT tunnels in 10.254/16 and GS-core links in
10.255/16, so the discovery anycast moves to 10.253.255.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emu.dataplane import ifnames
from emu.plan.association import POLICIES, serving_core, user_view
from emu.plan.handover import events

ANYCAST = "10.253.255.1"
ACCESS_TABLE = 90  # a UT's access table: its default route names the uplink (the core) in use
ACCESS_RULE_PREF = 900
TUNNEL_POOL = "10.253.{op}.0/24"


@dataclass(frozen=True)
class CoreServe:
    """Which core serves one user terminal in a slice, and through which of its ground stations (-1: none)."""

    ut: int        # ground-node index
    node: str      # UT name
    home: int      # operator index of the user's home core
    core: int      # operator index of the serving core (-1: unserved)
    gs: int        # ground-node index of the serving core's GS carrying the user's traffic (-1: none)

    @property
    def visited(self) -> bool:
        return self.core >= 0 and self.core != self.home


def association(m, policy: str) -> np.ndarray:
    """core[k, s] for the model's slices under ``policy`` (as stored in the plan)."""
    if policy not in POLICIES:
        from emu.errors import InputError
        raise InputError(f"--association: must be one of {', '.join(POLICIES)} (got {policy!r})")
    return m.db.association(policy)[: m.n_slices]


def _primary(m) -> np.ndarray:
    """(T, G) primary serving satellite per ground node: column 0 of the model's (T, G, antennas) links."""
    s = np.asarray(m.serving)
    return s[:, :, 0] if s.ndim == 3 else s


def serving_cores(m, core: np.ndarray) -> np.ndarray:
    """(T, U) operator index serving each UT (columns in ``m.uts`` order) in each slice, -1 when unserved."""
    ground = m.db.ground
    _cols, ut_serving, _home = user_view(_primary(m), [g.kind for g in ground], np.array([g.operator for g in ground]))
    return serving_core(core, ut_serving)


def _dist(a, b) -> float:
    """Great-circle angle between two ground rows (radians): orders GSs by distance to a UT."""
    la, lb = math.radians(a.lat), math.radians(b.lat)
    d = math.radians(b.lon - a.lon)
    c = math.sin(la) * math.sin(lb) + math.cos(la) * math.cos(lb) * math.cos(d)
    return math.acos(max(-1.0, min(1.0, c)))


def visited_gs(m, k: int, ut, op: int, exclude: frozenset[int] | set[int] = frozenset()) -> int:
    """The GS of operator ``op`` a visiting UT's traffic uses in slice k: the nearest one the plan serves
    in that slice (its GRC is reachable through the satellites) and not in ``exclude``; -1 if none."""
    served = [g for g in m.gss if g.operator == op and g.idx not in exclude and int(_primary(m)[k, g.idx]) >= 0]
    return min(served, key=lambda g: (_dist(ut, g), g.idx)).idx if served else -1


def core_serving(m, sc: np.ndarray, k: int, home_gs: dict[int, int]) -> dict[int, CoreServe]:
    """ut index -> :class:`CoreServe` for slice k. ``sc`` is :func:`serving_cores`; ``home_gs`` the plan's GS
    choice per UT (the data plane's ``Desired.choice``), used while the user is served by its home core."""
    out = {}
    for row, u in enumerate(m.uts):
        c = int(sc[k, row])
        if c < 0:
            gs = -1
        elif c == u.operator:
            gs = home_gs.get(u.idx, -1)
        else:
            gs = visited_gs(m, k, u, c)
        out[u.idx] = CoreServe(u.idx, u.name, u.operator, c if gs >= 0 else -1, gs)
    return out


def serve_by(m, k: int, ut, core: int, home_gs: dict[int, int]) -> CoreServe:
    """``ut`` (a ground row) served by operator ``core`` in slice k whatever the association says (a forced
    handover): through the plan's GS at home, the nearest served GS of a visited core; unserved if none."""
    gs = home_gs.get(ut.idx, -1) if core == ut.operator else -1
    if gs < 0:
        gs = visited_gs(m, k, ut, core)
    return CoreServe(ut.idx, ut.name, ut.operator, core if gs >= 0 else -1, gs)


def avoid_gs(m, k: int, serve: dict[int, CoreServe], down: set[int]) -> dict[int, CoreServe]:
    """``serve`` with no user through a GS in ``down`` (a GS outage): such a user moves to the nearest other
    served GS of the same core, or is unserved if the core has none (pure)."""
    if not down:
        return serve
    out = {}
    for ut, cs in serve.items():
        if cs.gs in down:
            gs = visited_gs(m, k, m.db.ground[ut], cs.core, down)
            cs = CoreServe(cs.ut, cs.node, cs.home, cs.core if gs >= 0 else -1, gs)
        out[ut] = cs
    return out


def inter_sno_handovers(m, core: np.ndarray) -> list[dict]:
    """Every change of serving core between two served slices (spec §3.3), in slice order:
    ``{"k", "ut", "from_core", "to_core", "kind", "after_outage"}`` with operator names; kind leave_home |
    return_home | visited_to_visited; ``after_outage``: the user was unserved in slice k-1 (a re-attachment,
    not a switch between two links)."""
    ground = m.db.ground
    _cols, ut_serving, home = user_view(_primary(m), [g.kind for g in ground], np.array([g.operator for g in ground]))
    ops = {idx: name for idx, name, *_ in m.db.operators}
    out = []
    for e in events(ut_serving, core):
        if not e["inter"]:
            continue
        u = m.uts[int(e["ut"])]
        a, b = int(e["from_core"]), int(e["to_core"])
        kind = "leave_home" if a == home[e["ut"]] else "return_home" if b == home[e["ut"]] else "visited_to_visited"
        after = int(e["k"]) > 0 and int(ut_serving[int(e["k"]) - 1, int(e["ut"])]) < 0
        out.append({"k": int(e["k"]), "ut": u.name, "from_core": ops[a], "to_core": ops[b], "kind": kind,
                    "after_outage": after})
    return out


def access_ifname(op: int) -> str:
    """A UT's access device toward operator ``op``'s ground stations (VXLAN with that operator's VNI)."""
    return f"sv{op}"


def uplink_ifname(home: int, op: int) -> str:
    """A UT's uplink toward operator ``op``'s core: the data plane's own tunnel toward its home operator's
    ground stations, :func:`access_ifname` toward the others'."""
    return ifnames.TUNNEL_IFNAME["vxlan"] if op == home else access_ifname(op)


def access6_ifname(op: int) -> str:
    """The IPv6 twin of :func:`access_ifname`: VXLAN over the IPv6 GRCs with operator ``op``'s VNI."""
    return f"s6v{op}"


def uplink6_ifname(home: int, op: int) -> str:
    """A UT's IPv6 uplink toward operator ``op``'s core: the data plane's ``vx6`` toward its home operator's
    ground stations, :func:`access6_ifname` toward the others' (grc §Data Forwarding Process, "IPv4/IPv6")."""
    from emu.dataplane.model import TUNNEL6_IFNAME

    return TUNNEL6_IFNAME if op == home else access6_ifname(op)


def control_spec(m, mobility, features=None):
    """The launcher's ControlSpec for a run: every operator core and every user terminal of the model."""
    from emu.control.sno.launch import ControlSpec, CoreSpec, UserSpec

    ops = m.db.operators
    cores = []
    for idx, name, _code, _pool in ops:
        mine = [(i, g) for i, g in enumerate(m.gss) if g.operator == idx]
        access = {ifnames.core_gs(i): m.gs_core_link(g.idx)[0] for i, g in mine}
        access6 = {ifnames.core_gs(i): m.gs_core_link6(g.idx)[0] for i, g in mine}  # IPv6 user traffic too
        cores.append(CoreSpec(name=name, netns=m.ns(name), index=idx, realm=name, public=m.core_public(idx),
                              tunnel_pool=TUNNEL_POOL.format(op=idx), access=access, access6=access6))
    users = [UserSpec(name=u.name, netns=m.ns(u.name), user=f"{u.name}@{ops[u.operator][1]}",
                      prefix=str(m.user_subnets[u.idx]), uplinks=[uplink_ifname(u.operator, idx) for idx, *_ in ops],
                      prefix6=str(m.user_subnets6[u.idx]))
             for u in m.uts]
    return ControlSpec(cores=cores, users=users, procedure=mobility.procedure, latency_ms=mobility.latency_ms,
                       notice_ms=mobility.notice_ms, anycast=ANYCAST, access_table=ACCESS_TABLE,
                       guard6=[str(p) for p in m.cfg.pools6])
