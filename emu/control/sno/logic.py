"""A core's side of the registration protocol as a state machine: events in, actions out (pure).

spec: inter-sno-mobility §5.1 (baseline: after the new link is up, core
discovery -> core B forwards the identifier to core A -> authentication ->
CoA and tunnel -> registration done) and §5.2 / Figure 5 (proactive: the
home core knows the next association from the plan and, as the user
detaches, sends the user's identifier and an authentication vector to the
target core, which allocates the CoA and sets the tunnel up while the link
switches; after the new link is up only the final registration remains).

No sockets, clocks or kernel calls here: every handler takes ``now`` (ns)
and returns a list of actions (:class:`ToUser`, :class:`ToPeer`,
:class:`Kernel`, :class:`Timer`, :class:`Step`) that the daemon
(:mod:`emu.control.sno.core`) carries out in order. A kernel action comes
before the message that announces it, so a peer is never told of a tunnel
that does not exist yet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emu.control.sno import kernel as K
from emu.control.sno.actions import Kernel, Step, Timer, ToPeer, ToUser
from emu.control.sno.auth import HomeKeys, IdSource, ReplayWindow, Vector, VectorStore
from emu.control.sno.config import CoreConf
from emu.control.sno.userlines import UserLines
from emu.control.sno.wire import Attr as A
from emu.control.sno.wire import Message, Msg


# ------------------------------------------------------------------------------------------- state
@dataclass
class OwnUser:
    """One of this core's users: where it is now."""

    prefix: str
    where: str = ""          # "" unknown, "local" (on one of our GS), or a peer core's name
    iface: str = ""          # local: the access link
    ut_addr: str = ""        # local: the terminal's control address
    coa: str = ""            # away: its care-of address at the peer
    prefix6: str = ""        # its IPv6 home prefix ("" none): routed like ``prefix``


@dataclass
class Visit:
    """A user of another SNO being registered or served here."""

    home: str
    state: str               # await-prepare, await-vector, await-response, prepared, registered
    iface: str = ""
    ut_addr: str = ""
    prefix: str = ""
    coa: str = ""
    inner: str = ""
    peer_mac: str = ""
    rand: bytes = b""
    ks: bytes = b""
    verified: bool = False
    tunnel_requested: bool = False
    tunnel_ready: bool = False
    early: tuple[bytes, bytes] | None = None  # a proactive DISCOVER's (RAND, RES) that came before PREPARE
    served_iface: str = ""   # the access link whose rules are installed (registered)
    prefix6: str = ""        # the user's IPv6 home prefix, from its home core ("" none)


class CoreLogic:
    def __init__(self, conf: CoreConf, clock_ns=None):
        self.c = conf
        self.lines = UserLines(conf)  # the kernel lines of each role (emu.control.sno.userlines)
        self.home = HomeKeys({u: x.key for u, x in conf.users.items()})
        self.own = {u: OwnUser(x.prefix, prefix6=x.prefix6) for u, x in conf.users.items()}
        self.store = VectorStore()
        self.visitors: dict[str, Visit] = {}
        self.tunnels: dict[str, set[str]] = {}       # peer -> users using the tunnel (either role)
        self.coas: dict[str, str] = {}               # care-of address -> user
        self.issued: dict[str, tuple[str, int]] = {}  # own user -> (peer given a vector, expiry)
        self.plan: dict[str, tuple[str, int]] = {}
        self.pending_local: dict[str, tuple[str, str]] = {}
        self.win_user: dict[str, ReplayWindow] = {}
        self.win_peer: dict[str, ReplayWindow] = {}
        self.next_id = IdSource(clock_ns or (lambda: 0))

    @property
    def name(self) -> str:
        return self.c.name

    def _m(self, t: Msg, **attrs) -> Message:
        return Message(t, self.next_id(), {A[k.upper()]: v for k, v in attrs.items()})

    # --------------------------------------------------------------------------------- start / restart
    def start(self) -> list:
        return [Kernel("base", tuple(self.lines.base()))]

    # snapshot, restore and teardown: emu.control.sno.recovery

    # --------------------------------------------------------------------------------- helpers
    @staticmethod
    def _p6(prefix6: str) -> dict:
        """The PREFIX6 attribute of a message, where the user has an IPv6 prefix."""
        return {"prefix6": ipaddress.IPv6Network(prefix6)} if prefix6 else {}

    def _reject(self, user: str, addr: str, reason: str) -> list:
        return [ToUser(addr, self._m(Msg.REJECT, user=user, core=self.name, reason=reason)),
                Step(user, "rejected", {"reason": reason})]

    def _tunnel_use(self, peer: str, user: str) -> list:
        """Make the tunnel to ``peer`` if nobody uses it yet, and count ``user`` on it."""
        users = self.tunnels.setdefault(peer, set())
        acts = []
        if not users:
            acts.append(Kernel("tunnel up", tuple(self.lines.tunnel_up(peer))))
        users.add(user)
        return acts

    def _tunnel_release(self, peer: str, user: str) -> list:
        users = self.tunnels.get(peer)
        if users is None:
            return []
        users.discard(user)
        if users:
            return []
        del self.tunnels[peer]
        return [Kernel("tunnel down", tuple(self.lines.tunnel_down(peer)))]

    def _alloc_coa(self, user: str) -> str | None:
        net = ipaddress.IPv4Network(self.c.tunnel_pool)
        for h in list(net.hosts())[1:]:  # .1 is our inner address
            a = str(h)
            if a not in self.coas:
                self.coas[a] = user
                return a
        return None

    def _drop_visitor(self, user: str) -> list:
        v = self.visitors.pop(user, None)
        self.store.drop(user)
        if v is None:
            return []
        acts: list = []
        lines: list[str] = []
        if v.served_iface:
            lines += self.lines.unvisitor(v, v.served_iface)
        if v.coa:
            self.coas.pop(v.coa, None)
            lines += self.lines.coa(v, "del")
        if lines:
            acts.append(Kernel("visitor removed", tuple(lines)))
        if v.tunnel_requested:
            acts += self._tunnel_release(v.home, user)
        return acts

    # --------------------------------------------------------------------------------- from users
    def on_user(self, msg: Message, src: str, iface: str, now: int) -> list:
        user = msg.user
        if iface not in self.c.access:
            return [Step(user, "ignored", {"reason": f"not an access link: {iface}"})]
        why = self.win_user.setdefault(user, ReplayWindow()).check(msg.msg_id)
        if why:
            return self._reject(user, src, f"replay ({why})")
        if msg.type == Msg.DISCOVER:
            return self._discover(msg, src, iface, now)
        if msg.type == Msg.RESPONSE:
            return self._response(msg, src, iface, now)
        if msg.type == Msg.DISCONNECT_ACK:
            return [Step(user, "disconnect_ack_rx", {"target": msg[A.TARGET]})]
        return [Step(user, "ignored", {"reason": f"{msg.type.name} is not for a core"})]

    def _discover(self, msg: Message, src: str, iface: str, now: int) -> list:
        user = msg.user
        realm = user.rpartition("@")[2]
        acts: list = [Step(user, "discover_rx", {"iface": iface, "ut": src, "proactive": A.RES in msg.attrs})]
        if realm == self.c.realm:
            if not self.home.knows(user):
                return acts + self._reject(user, src, "unknown user")
            v = self.store.pending(user)
            if user in self.pending_local and v is not None and v.serving == self.name and v.expires_ns > now:
                self.pending_local[user] = (iface, src)  # a retransmission: the same challenge again
                return acts + [ToUser(src, self._m(Msg.CHALLENGE, user=user, core=self.name, rand=v.rand)),
                               Step(user, "challenge_retx", {"by": "home"})]
            v = self.home.issue(user, self.name, now)
            self.store.put(v)
            self.pending_local[user] = (iface, src)
            return acts + [ToUser(src, self._m(Msg.CHALLENGE, user=user, core=self.name, rand=v.rand)),
                           Step(user, "challenge_tx", {"by": "home"})]
        peer = self.c.peer_by_realm(realm)
        if peer is None:
            return acts + self._reject(user, src, f"unknown realm {realm}")
        v = self.visitors.get(user)
        rand, res = msg.get(A.RAND), msg.get(A.RES)
        if rand is not None and res is not None:  # proactive: the answer to HANDOVER_START's challenge
            if v is not None and v.rand == rand and (v.verified or v.state == "registered"):
                if (v.iface, v.ut_addr) != (iface, src):
                    return acts + self._reject(user, src, "replay")
                if v.state == "registered":  # REGISTERED was lost: say it again
                    return acts + [self._registered_msg(user, v), Step(user, "registered_retx")]
                return acts + [Step(user, "discover_dup", {"state": "verified, tunnel pending"})]
            if v is None or v.rand != rand:
                if v is None or v.home != peer.name:
                    acts += self._drop_visitor(user)
                    v = self.visitors[user] = Visit(peer.name, "await-prepare")
                v.state, v.iface, v.ut_addr, v.early = "await-prepare", iface, src, (rand, res)
                return acts + [Timer(now + int(self.c.prepare_wait_ms * 1e6), ("prepare-wait", user, rand)),
                               Step(user, "await_prepare")]
            v.iface, v.ut_addr = iface, src
            return acts + self._check_visitor(user, v, rand, res, now)
        if v is not None and v.verified and v.state != "registered" and (v.iface, v.ut_addr) == (iface, src):
            return acts + [Step(user, "discover_dup", {"state": "verified, tunnel pending"})]
        if v is not None and v.state in ("await-vector", "await-response"):
            v.iface, v.ut_addr = iface, src  # a retransmission: the procedure is under way
            acts.append(Step(user, "discover_dup", {"state": v.state}))
            pending = self.store.pending(user)
            if v.state == "await-response" and pending is not None:  # the challenge may have been lost
                acts.append(ToUser(src, self._m(Msg.CHALLENGE, user=user, core=self.name, rand=pending.rand)))
            if v.state == "await-vector":  # AUTH_REQ or its AUTH_VECTOR may have been lost (a home core restarting):
                # ask again; a second vector that crosses the first is ignored (no longer await-vector)
                acts += [ToPeer(peer.name, self._m(Msg.AUTH_REQ, user=user, core=self.name)),
                         Step(user, "auth_req_retx", {"home": peer.name})]
            return acts
        if v is None or v.home != peer.name:
            acts += self._drop_visitor(user)
            v = self.visitors[user] = Visit(peer.name, "await-vector")
        else:
            v.state, v.verified = "await-vector", False
        v.iface, v.ut_addr = iface, src
        return acts + [ToPeer(peer.name, self._m(Msg.AUTH_REQ, user=user, core=self.name)),
                       Step(user, "auth_req_tx", {"home": peer.name})]

    def _response(self, msg: Message, src: str, iface: str, now: int) -> list:
        user = msg.user
        verdict, v = self.store.check(user, msg[A.RAND], msg[A.RES], now)
        if verdict == "no-vector":  # an answer to a challenge superseded or never made: not an attempt
            return [Step(user, "ignored", {"reason": "response to no pending challenge"})]
        if user in self.own:
            self.pending_local.pop(user, None)
            if verdict != "ok":
                return self._reject(user, src, verdict)
            return [Step(user, "auth_ok", {"by": "home"})] + self._register_local(user, iface, src, v)
        vis = self.visitors.get(user)
        if vis is None or vis.state != "await-response":
            return self._reject(user, src, verdict if verdict != "ok" else "no challenge pending")
        vis.iface, vis.ut_addr = iface, src
        return self._verify_visitor(user, vis, verdict, v)

    def _register_local(self, user: str, iface: str, src: str, v: Vector) -> list:
        o = self.own[user]
        acts: list = []
        lines: list[str] = []
        if o.where == "local" and o.iface != iface:
            lines += self.lines.unlocal(o, o.iface)
        old_peer = o.where if o.where in self.c.peers else ""
        if old_peer:
            lines += self.lines.unlocal(o, K.tunnel_name(self.lines.peer(old_peer).index))
        o.where, o.iface, o.ut_addr, o.coa = "local", iface, src, ""
        lines = self.lines.local(o) + lines  # the route via the GS replaces the one into the tunnel
        acts.append(Kernel("user at home", tuple(lines)))
        if old_peer:
            acts.append(ToPeer(old_peer, self._m(Msg.RELEASE, user=user, core=self.name)))
            acts += self._tunnel_release(old_peer, user)
        acts += [ToUser(src, self._m(Msg.REGISTERED, user=user, core=self.name, rand=v.rand,
                                     prefix=ipaddress.IPv4Network(o.prefix), **self._p6(o.prefix6)), key=v.ks),
                 Step(user, "registered", {"at": "home", "iface": iface})]
        return acts

    def _check_visitor(self, user: str, vis: Visit, rand: bytes, res: bytes, now: int) -> list:
        return self._verify_visitor(user, vis, *self.store.check(user, rand, res, now))

    def _verify_visitor(self, user: str, vis: Visit, verdict: str, v: Vector | None) -> list:
        if verdict != "ok":
            acts = self._reject(user, vis.ut_addr, verdict)
            acts.append(ToPeer(vis.home, self._m(Msg.AUTH_RESULT, user=user, core=self.name, ok=0, reason=verdict)))
            return acts + self._drop_visitor(user)
        vis.verified, vis.ks, vis.rand = True, v.ks, v.rand
        acts = [Step(user, "auth_ok", {"by": "vector from " + vis.home}),
                ToPeer(vis.home, self._m(Msg.AUTH_RESULT, user=user, core=self.name, ok=1))]
        if vis.tunnel_ready:
            return acts + self._finalize_visitor(user, vis)
        if not vis.tunnel_requested:
            acts += self._request_tunnel(user, vis)
        return acts

    def _request_tunnel(self, user: str, vis: Visit) -> list:
        p = self.lines.peer(vis.home)
        if not vis.coa:
            coa = self._alloc_coa(user)
            if coa is None:
                return self._reject(user, vis.ut_addr, "care-of address pool exhausted") + self._drop_visitor(user)
            vis.coa = coa
        acts = self._tunnel_use(vis.home, user)
        vis.tunnel_requested = True
        acts.append(Kernel("care-of address", tuple(self.lines.coa(vis, "replace"))))
        acts += [ToPeer(vis.home, self._m(Msg.TUNNEL_REQ, user=user, core=self.name,
                                          coa=ipaddress.IPv4Address(vis.coa),
                                          endpoint=ipaddress.IPv4Address(self.c.public),
                                          vni=K.vni_for(self.c.index, p.index),
                                          lladdr=bytes.fromhex(K.tunnel_mac(self.c.index, p.index).replace(":", "")))),
                 Step(user, "tunnel_req_tx", {"coa": vis.coa})]
        return acts

    def _finalize_visitor(self, user: str, vis: Visit) -> list:
        lines = self.lines.visitor(vis)
        if vis.served_iface and vis.served_iface != vis.iface:
            lines += self.lines.visitor_moved(vis, vis.served_iface)
        vis.served_iface, vis.state = vis.iface, "registered"
        return [Kernel("user registered", tuple(lines)), self._registered_msg(user, vis),
                Step(user, "registered", {"at": "visited", "home": vis.home, "coa": vis.coa})]

    def _registered_msg(self, user: str, vis: Visit) -> ToUser:
        return ToUser(vis.ut_addr, self._m(Msg.REGISTERED, user=user, core=self.name, rand=vis.rand,
                                           prefix=ipaddress.IPv4Network(vis.prefix), **self._p6(vis.prefix6),
                                           coa=ipaddress.IPv4Address(vis.coa)), key=vis.ks)

    # --------------------------------------------------------------------------------- from peer cores
    def on_peer(self, peer: str, msg: Message, now: int) -> list:
        user = msg.get(A.USER, "?")
        if peer not in self.c.peers:
            return [Step(user, "peer_dropped", {"peer": peer, "reason": "not a configured peer"})]
        if msg.get(A.CORE) != peer:
            return [Step(user, "peer_dropped", {"peer": peer, "reason": f"claims to be {msg.get(A.CORE)}"})]
        why = self.win_peer.setdefault(peer, ReplayWindow()).check(msg.msg_id)
        if why:
            return [Step(user, "peer_dropped", {"peer": peer, "reason": f"replay ({why})"})]
        handler = {Msg.AUTH_REQ: self._auth_req, Msg.AUTH_VECTOR: self._auth_vector,
                   Msg.AUTH_FAIL: self._auth_fail, Msg.PREPARE: self._prepare, Msg.TUNNEL_REQ: self._tunnel_req,
                   Msg.TUNNEL_ACK: self._tunnel_ack, Msg.RELEASE: self._release,
                   Msg.AUTH_RESULT: self._auth_result}.get(msg.type)
        if handler is None:
            return [Step(user, "peer_dropped", {"peer": peer, "reason": f"{msg.type.name} is not for a core"})]
        return handler(peer, msg, now)

    def _vector_msg(self, t: Msg, v: Vector, **extra) -> Message:
        return self._m(t, user=v.user, core=self.name, rand=v.rand, xres=v.xres, ks=v.ks,
                       prefix=ipaddress.IPv4Network(self.own[v.user].prefix), **self._p6(self.own[v.user].prefix6),
                       expires=v.expires_ns, **extra)

    def _auth_req(self, peer: str, msg: Message, now: int) -> list:
        user = msg.user
        if not self.home.knows(user):
            return [ToPeer(peer, self._m(Msg.AUTH_FAIL, user=user, core=self.name, reason="unknown user")),
                    Step(user, "auth_fail_tx", {"peer": peer})]
        v = self.home.issue(user, peer, now)
        self.issued[user] = (peer, v.expires_ns)
        return [Step(user, "auth_req_rx", {"peer": peer}), ToPeer(peer, self._vector_msg(Msg.AUTH_VECTOR, v)),
                Step(user, "auth_vector_tx", {"peer": peer})]

    def _auth_vector(self, peer: str, msg: Message, now: int) -> list:
        user = msg.user
        vis = self.visitors.get(user)
        if vis is None or vis.home != peer or vis.state != "await-vector":
            return [Step(user, "ignored", {"reason": "unexpected AUTH_VECTOR"})]
        vis.prefix, vis.prefix6 = str(msg[A.PREFIX]), str(msg.get(A.PREFIX6) or "")
        self.store.put(Vector(user, self.name, msg[A.RAND], msg[A.XRES], msg[A.KS], msg[A.EXPIRES]))
        vis.state = "await-response"
        return [Step(user, "auth_vector_rx", {"peer": peer}),
                ToUser(vis.ut_addr, self._m(Msg.CHALLENGE, user=user, core=self.name, rand=msg[A.RAND])),
                Step(user, "challenge_tx", {"by": "vector from " + peer})]

    def _auth_fail(self, peer: str, msg: Message, now: int) -> list:
        vis = self.visitors.get(msg.user)
        addr = vis.ut_addr if vis else ""
        return (self._reject(msg.user, addr, "home core: " + msg[A.REASON]) if addr else []) \
            + self._drop_visitor(msg.user)

    def _prepare(self, peer: str, msg: Message, now: int) -> list:
        """Figure 5 "proactive auth(ID)": take the vector, allocate the CoA and ask for the tunnel now."""
        user = msg.user
        vis = self.visitors.get(user)
        acts: list = [Step(user, "prepare_rx", {"peer": peer, "switch_at_ns": msg[A.AT]})]
        if vis is not None and vis.home == peer and vis.state in ("await-vector", "await-response"):
            # the user came first and is being authenticated the baseline way: keep that vector, prepare the tunnel
            return acts + ([] if vis.tunnel_requested else self._request_tunnel(user, vis))
        if vis is None or vis.home != peer:
            acts += self._drop_visitor(user)
            vis = self.visitors[user] = Visit(peer, "prepared")
        vis.state, vis.prefix, vis.rand, vis.verified = "prepared", str(msg[A.PREFIX]), msg[A.RAND], False
        vis.prefix6 = str(msg.get(A.PREFIX6) or "")
        self.store.put(Vector(user, self.name, msg[A.RAND], msg[A.XRES], msg[A.KS], msg[A.EXPIRES]))
        if not vis.tunnel_requested:
            acts += self._request_tunnel(user, vis)
        early, vis.early = vis.early, None
        if early is not None and early[0] == vis.rand:  # the user's DISCOVER was quicker than PREPARE
            acts += self._check_visitor(user, vis, *early, now)
        return acts

    def _tunnel_req(self, peer: str, msg: Message, now: int) -> list:
        """Home side of "CoA, Tunnel Req": point the user's prefix into the tunnel, answer "Tunnel ACK"."""
        user = msg.user
        o = self.own.get(user)
        given = self.issued.get(user)
        if o is None or given is None or given[0] != peer or given[1] < now:
            return [Step(user, "tunnel_req_refused", {"peer": peer, "reason": "no vector issued to this peer"})]
        p = self.lines.peer(peer)
        coa = str(msg[A.COA])
        acts: list = [Step(user, "tunnel_req_rx", {"peer": peer, "coa": coa})]
        acts += self._tunnel_use(peer, user)
        mac = ":".join(f"{b:02x}" for b in msg[A.LLADDR])
        planned = self.plan.get(user)
        if planned and planned[0] == peer and now < planned[1] and o.where == "local":
            # prepared ahead of the switch: the tunnel end now, the route at the planned switch; until
            # then the user is still here and its downlink must not leave through the tunnel
            acts.append(Kernel("tunnel ready for the user", tuple(self.lines.prepared(o, peer, coa, mac))))
            acts.append(Timer(planned[1], ("reroute", user, peer, coa)))
        else:
            acts += self._move_away(user, peer, coa, mac)
        acts += [ToPeer(peer, self._m(Msg.TUNNEL_ACK, user=user, core=self.name,
                                      inner=ipaddress.IPv4Address(self.c.inner),
                                      endpoint=ipaddress.IPv4Address(self.c.public),
                                      vni=K.vni_for(self.c.index, p.index),
                                      lladdr=bytes.fromhex(K.tunnel_mac(self.c.index, p.index).replace(":", "")))),
                 Step(user, "tunnel_ack_tx", {"peer": peer})]
        return acts

    def _move_away(self, user: str, peer: str, coa: str, mac: str = "") -> list:
        """The user's prefix now goes into the tunnel to ``peer``; the old serving core is released."""
        o = self.own[user]
        old_where, old_iface = o.where, o.iface
        o.where, o.coa, o.iface, o.ut_addr = peer, coa, "", ""
        lines = (self.lines.tunnel_neigh(o, peer, coa, mac) if mac else []) + self.lines.away(o)
        if old_where == "local":
            lines += self.lines.unlocal(o, old_iface)
        acts: list = [Kernel("user away: route into the tunnel", tuple(lines))]
        if old_where in self.c.peers and old_where != peer:
            acts.append(ToPeer(old_where, self._m(Msg.RELEASE, user=user, core=self.name)))
            acts += self._tunnel_release(old_where, user)
        return acts

    def _tunnel_ack(self, peer: str, msg: Message, now: int) -> list:
        user = msg.user
        vis = self.visitors.get(user)
        if vis is None or vis.home != peer or not vis.tunnel_requested:
            return [Step(user, "ignored", {"reason": "unexpected TUNNEL_ACK"})]
        vis.inner = str(msg[A.INNER])
        vis.peer_mac = ":".join(f"{b:02x}" for b in msg[A.LLADDR])
        vis.tunnel_ready = True
        acts = [Step(user, "tunnel_ack_rx", {"peer": peer}),
                Kernel("tunnel to the home core", tuple(self.lines.visitor_tunnel(vis)))]
        if vis.verified:
            acts += self._finalize_visitor(user, vis)
        return acts

    def _release(self, peer: str, msg: Message, now: int) -> list:
        vis = self.visitors.get(msg.user)
        if vis is None or vis.home != peer:
            return [Step(msg.user, "ignored", {"reason": "RELEASE for a user not here"})]
        return [Step(msg.user, "released", {"peer": peer})] + self._drop_visitor(msg.user)

    def _auth_result(self, peer: str, msg: Message, now: int) -> list:
        """The serving core's verdict; a failure withdraws what was prepared for the user there."""
        user = msg.user
        acts: list = [Step(user, "auth_result_rx", {"peer": peer, "ok": bool(msg[A.OK]),
                                                    "reason": msg.get(A.REASON, "")})]
        o = self.own.get(user)
        if msg[A.OK] or o is None:
            return acts
        self.issued.pop(user, None)
        if o.where == peer:
            o.where, o.coa = "", ""
            acts.append(Kernel("user refused: no route", tuple(self.lines.refused(o, peer))))
            acts += self._tunnel_release(peer, user)
        return acts

    # --------------------------------------------------------------------------------- plan and timers
    def on_plan(self, user: str, target: str, at_ns: int, now: int) -> list:
        """The association plan says ``user`` moves to ``target``'s access at ``at_ns`` (spec §5: known ahead)."""
        if user not in self.own or target not in self.c.peers:
            return [Step(user, "plan_refused", {"target": target})]
        self.plan[user] = (target, at_ns)
        start = max(now, at_ns - int(self.c.notice_ms * 1e6))
        return [Step(user, "plan", {"target": target, "switch_at_ns": at_ns, "procedure": self.c.procedure}),
                Timer(start, ("handover", user, at_ns))]

    def on_timer(self, token: tuple, now: int) -> list:
        kind, user = token[0], token[1]
        if kind == "handover":
            return self._handover_start(user, token[2], now)
        if kind == "reroute":  # the planned switch: the prepared route takes over (if nothing else happened)
            o, peer, coa = self.own.get(user), token[2], token[3]
            if o is None or o.where != "local" or user not in self.tunnels.get(peer, set()):
                return []
            return [Step(user, "rerouted", {"peer": peer, "coa": coa})] + self._move_away(user, peer, coa)
        if kind == "prepare-wait":
            vis = self.visitors.get(user)
            if vis is None or vis.state != "await-prepare" or vis.early is None or vis.early[0] != token[2]:
                return []
            vis.early, vis.state = None, "await-vector"  # no PREPARE came: do it the baseline way
            return [Step(user, "prepare_timeout"), ToPeer(vis.home, self._m(Msg.AUTH_REQ, user=user, core=self.name)),
                    Step(user, "auth_req_tx", {"home": vis.home})]
        return []

    def _handover_start(self, user: str, at_ns: int, now: int) -> list:
        planned = self.plan.get(user)
        if planned is None or planned[1] != at_ns:
            return []
        target = planned[0]
        if self.c.procedure != "proactive":
            return [Step(user, "planned_switch", {"target": target, "procedure": self.c.procedure})]
        o = self.own[user]
        if o.where != "local":
            return [Step(user, "handover_skipped", {"reason": f"user not at home (where={o.where or 'unknown'})"})]
        v = self.home.issue(user, target, now)
        self.issued[user] = (target, v.expires_ns)
        return [ToUser(o.ut_addr, self._m(Msg.HANDOVER_START, user=user, core=self.name, target=target,
                                          rand=v.rand, at=at_ns), key=self.home.user_key(user)),
                Step(user, "handover_start_tx", {"target": target}),
                ToPeer(target, self._vector_msg(Msg.PREPARE, v, at=at_ns)),
                Step(user, "prepare_tx", {"target": target})]
