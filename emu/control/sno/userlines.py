"""The kernel lines a core holds for its users, by role: what registration installs and withdraws (pure).

spec: inter-sno-mobility §5.1 (the home core routes its user's prefix via
the GS while the user is at home, into the tunnel to the serving core at
the user's care-of address while it is away; the serving core lets the
visitor in from its access link, sends its uplink through the visited
table into the tunnel home and its downlink to the GS), §4.2 (the cores'
tunnels).

Every line is for ``ip -batch`` (:mod:`emu.control.sno.kernel`); a user
gets them for each family it has here: IPv4, and IPv6 where it has an
IPv6 prefix and the core IPv6 access (its addresses never change, so both
follow registration and handover alike). The registration state machine
(:class:`emu.control.sno.logic.CoreLogic`) decides *when*; restart and
teardown (:mod:`emu.control.sno.recovery`) re-apply or remove the same
lines. No state here besides the core's configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu.control.sno import kernel as K
from emu.control.sno.config import CoreConf, Peer

if TYPE_CHECKING:
    from emu.control.sno.logic import OwnUser, Visit


class UserLines:
    """The kernel lines of core ``conf`` for a user record (:class:`OwnUser`, :class:`Visit`)."""

    def __init__(self, conf: CoreConf):
        self.c = conf

    def peer(self, name: str) -> Peer:
        return self.c.peers[name]

    @property
    def v6(self) -> bool:
        """This core routes IPv6 user prefixes too (its access links have IPv6 addresses)."""
        return bool(self.c.access6)

    def each(self, prefix: str, prefix6: str, lines_of) -> list[str]:
        """``lines_of(prefix, six)`` for each family the user has here: IPv4, and IPv6 where the user has an
        IPv6 prefix and this core IPv6 access; IPv6 lines marked for ``ip -6`` (:func:`kernel.six`)."""
        out = list(lines_of(prefix, False))
        if prefix6 and self.v6:
            out += K.six(lines_of(prefix6, True))
        return out

    def gs(self, iface: str, six: bool) -> str:
        """The GS's address on an access link, in the family asked for."""
        return (self.c.access6 if six else self.c.access)[iface]

    @staticmethod
    def inside(addr: str, six: bool) -> str:
        """A tunnel-inside address (inner, CoA) in the family asked for: IPv6 is its :func:`kernel.ll6` twin."""
        return K.ll6(addr) if six else addr

    # ------------------------------------------------------------------ the core itself
    def base(self) -> list[str]:
        """What the core holds before any user: its anycast address, access links, IPv6 guard."""
        return K.base(self.c.anycast, list(self.c.access), self.c.guard6 if self.v6 else [])

    def unbase(self) -> list[str]:
        return K.unbase(self.c.anycast, list(self.c.access), self.c.guard6 if self.v6 else [])

    def tunnel_up(self, peer: str) -> list[str]:
        """The tunnel to ``peer`` and our inner address on it (and its IPv6 twin)."""
        p = self.peer(peer)
        return (K.tunnel_up(self.c.index, p.index, self.c.public, p.public, self.v6)
                + K.tunnel_addr(p.index, self.c.inner)
                + (K.six(K.tunnel_addr(p.index, K.ll6(self.c.inner))) if self.v6 else []))

    def tunnel_down(self, peer: str) -> list[str]:
        return K.tunnel_down(self.peer(peer).index, self.v6)

    # ------------------------------------------------------------------ own users (home role)
    def local(self, o: OwnUser) -> list[str]:
        """At home: allowed in from its access link, routed to it via the GS."""
        return self.each(o.prefix, o.prefix6, lambda pfx, six: K.allow(pfx, o.iface)
                         + K.route_via_gs(pfx, o.iface, self.gs(o.iface, six)))

    def unlocal(self, o: OwnUser, iface: str) -> list[str]:
        """The user's forwarding from ``iface`` (an access link or a tunnel) withdrawn (it moved)."""
        return self.each(o.prefix, o.prefix6, lambda pfx, six: K.disallow(pfx, iface))

    def away(self, o: OwnUser) -> list[str]:
        """Away at ``o.where``: routed into the tunnel to its CoA, allowed in from the tunnel."""
        p = self.peer(o.where)
        return self.each(o.prefix, o.prefix6,
                         lambda pfx, six: K.route_via_tunnel(pfx, p.index, self.inside(o.coa, six))
                         + K.allow(pfx, K.tunnel_name(p.index)))

    def tunnel_neigh(self, o: OwnUser, peer: str, coa: str, mac: str) -> list[str]:
        """The serving core's tunnel end (MAC ``mac``) for the user's CoA at ``peer``."""
        p = self.peer(peer)
        return self.each(o.prefix, o.prefix6, lambda _pfx, six: K.tunnel_neigh(p.index, self.inside(coa, six), mac))

    def prepared(self, o: OwnUser, peer: str, coa: str, mac: str) -> list[str]:
        """Proactive, before the planned switch: the tunnel end and the user allowed in from the tunnel, its
        downlink still via the GS (the route moves at the switch: :meth:`away`)."""
        p = self.peer(peer)
        return self.each(o.prefix, o.prefix6, lambda pfx, six: K.tunnel_neigh(p.index, self.inside(coa, six), mac)
                         + K.allow(pfx, K.tunnel_name(p.index)))

    def refused(self, o: OwnUser, peer: str) -> list[str]:
        """The serving core ``peer`` refused the user: no route, nothing in from the tunnel."""
        tun = K.tunnel_name(self.peer(peer).index)
        return self.each(o.prefix, o.prefix6, lambda pfx, six: K.route_del(pfx) + K.disallow(pfx, tun))

    def route_del(self, o: OwnUser) -> list[str]:
        return self.each(o.prefix, o.prefix6, lambda pfx, _six: K.route_del(pfx))

    # ------------------------------------------------------------------ visitors (serving role)
    def coa(self, v: Visit, verb: str) -> list[str]:
        """The visitor's care-of address (and its IPv6 twin) on our end of the tunnel (``replace``/``del``)."""
        p = self.peer(v.home)
        return self.each(v.prefix, v.prefix6, lambda _pfx, six: K.tunnel_addr(p.index, self.inside(v.coa, six), verb))

    def visitor_tunnel(self, v: Visit) -> list[str]:
        """The home core's tunnel end and the visited table whose default is the tunnel home."""
        p = self.peer(v.home)
        return self.each(v.prefix, v.prefix6, lambda _pfx, six: K.tunnel_neigh(p.index, self.inside(v.inner, six),
                                                                               v.peer_mac)
                         + K.visited_table(p.index, self.inside(v.inner, six)))

    def visitor(self, v: Visit) -> list[str]:
        """Registered here: in from its access link into the visited table, downlink via the GS, in from the
        tunnel toward it."""
        p = self.peer(v.home)
        return self.each(v.prefix, v.prefix6, lambda pfx, six: K.allow(pfx, v.iface, K.table_for(p.index))
                         + K.route_via_gs(pfx, v.iface, self.gs(v.iface, six))
                         + K.allow(pfx, K.tunnel_name(p.index), "main", "to"))

    def visitor_moved(self, v: Visit, old_iface: str) -> list[str]:
        """A visitor that moved to another of our access links: nothing more in from ``old_iface``."""
        p = self.peer(v.home)
        return self.each(v.prefix, v.prefix6, lambda pfx, six: K.disallow(pfx, old_iface, K.table_for(p.index)))

    def unvisitor(self, v: Visit, iface: str) -> list[str]:
        """A visitor's forwarding from access link ``iface`` and its downlink withdrawn."""
        p = self.peer(v.home)
        return self.each(v.prefix, v.prefix6, lambda pfx, six: K.disallow(pfx, iface, K.table_for(p.index))
                         + K.disallow(pfx, K.tunnel_name(p.index), "main", "to") + K.route_del(pfx))
