"""What a core keeps across a restart, and what it removes when it stops (pure).

spec: inter-sno-mobility §4.2 (the core anchors its users' mobility: a
restarted core must go on anchoring them). A snapshot holds the registered
state only (where the core's own users are, the visitors it serves);
restoring it yields the same kernel lines registration made, which are
idempotent, so re-applying them to a namespace that kept its routes changes
nothing and forwarding never stops.
"""

from __future__ import annotations

from emu.control.sno import kernel as K
from emu.control.sno.actions import Kernel
from emu.control.sno.logic import CoreLogic, OwnUser, Visit



def snapshot(core: CoreLogic) -> dict:
    """What survives a restart: where our users are and the visitors we serve (registered only)."""
    return {"own": {u: vars(o) for u, o in core.own.items() if o.where},
            "visitors": {u: {**{k: v for k, v in vars(x).items() if k not in ("rand", "ks", "early")},
                             "rand": x.rand.hex(), "ks": x.ks.hex()}
                         for u, x in core.visitors.items() if x.state == "registered"}}


def restore(core: CoreLogic, snap: dict) -> list:
    """Take a snapshot back after a restart and re-apply its kernel state (idempotent lines)."""
    acts: list = []
    for u, d in snap.get("own", {}).items():
        if u not in core.own:
            continue
        o = core.own[u] = OwnUser(**d)
        if o.where == "local":
            acts.append(Kernel("restore local user", tuple(core.lines.local(o))))
        elif o.where in core.c.peers:
            acts += core._tunnel_use(o.where, u)
            acts.append(Kernel("restore user away", tuple(core.lines.away(o))))
    for u, d in snap.get("visitors", {}).items():
        if d.get("home") not in core.c.peers:
            continue
        v = Visit(**{**d, "rand": bytes.fromhex(d["rand"]), "ks": bytes.fromhex(d["ks"]), "early": None})
        core.visitors[u] = v
        core.coas[v.coa] = u
        acts += core._tunnel_use(v.home, u)
        acts.append(Kernel("restore visitor", tuple(core.lines.coa(v, "replace")
                                                     + core.lines.visitor_tunnel(v) + core.lines.visitor(v))))
    return acts


def teardown(core: CoreLogic) -> list:
    """An orderly stop: remove every route, rule, address and tunnel this core made."""
    lines: list[str] = []
    for o in core.own.values():
        if o.where == "local":
            iface = o.iface
        elif o.where in core.c.peers:
            iface = K.tunnel_name(core.lines.peer(o.where).index)
        else:
            continue
        lines += core.lines.unlocal(o, iface) + core.lines.route_del(o)
    for v in core.visitors.values():
        if v.served_iface:
            lines += core.lines.unvisitor(v, v.served_iface)
    for peer in core.tunnels:
        lines += core.lines.tunnel_down(peer)
    lines += core.lines.unbase()
    return [Kernel("teardown", tuple(lines))]
