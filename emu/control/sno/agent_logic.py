"""The user terminal's side of the registration protocol: events in, actions out (pure).

spec: inter-sno-mobility §5.1 ("once the new link becomes operational, the
user broadcasts a core discovery message containing its unique
identifier"; "registration has been completed ... without changing its
original IP address") and §5.2 / Figure 5 (handover start and disconnection
ACK on the old link; core discovery on the new one).

The agent holds its own key K (the home core holds the other copy). It
answers a core's CHALLENGE with RES = HMAC(K, RAND, user, core), checks
that REGISTERED carries a tag made with the session key that only a core
trusted by the home core can have, and accepts HANDOVER_START only when
tagged with K itself (only the home core can send one).
"""

from __future__ import annotations

from emu.control.sno import auth
from emu.control.sno.auth import IdSource, ReplayWindow
from emu.control.sno.actions import Step, Timer, ToCore
from emu.control.sno.wire import Attr as A
from emu.control.sno.wire import Message, Msg

PROACTIVE_TRIES = 2  # DISCOVERs carrying the prepared answer before falling back to a plain one


class AgentLogic:
    def __init__(self, user: str, key: bytes, retransmit_ms: float = 300.0, clock_ns=None):
        self.user = user
        self.key = key
        self.retransmit_ns = int(retransmit_ms * 1e6)
        self.uplink: str | None = None
        self.registered_at: str | None = None
        self.coa: str | None = None
        self.prefix: str | None = None
        self.prefix6: str | None = None  # the IPv6 home prefix the core registered, where the user has one
        self.rejected: str | None = None
        self.answered: dict[bytes, str] = {}            # RAND -> core we answered it for
        self.handover: tuple[str, bytes, bytes] | None = None  # (target, RAND, RES) from HANDOVER_START
        self.attempt = 0
        self.generation = 0
        self.win_home = ReplayWindow()
        self.next_id = IdSource(clock_ns or (lambda: 0))

    def _m(self, t: Msg, **attrs) -> Message:
        return Message(t, self.next_id(), {A[k.upper()]: v for k, v in attrs.items()})

    def status(self) -> dict:
        return {"user": self.user, "uplink": self.uplink, "registered_at": self.registered_at, "coa": self.coa,
                "prefix": self.prefix, "prefix6": self.prefix6, "rejected": self.rejected,
                "handover_prepared": self.handover is not None}

    # ------------------------------------------------------------------------------------- link events
    def on_link(self, uplink: str | None, now: int) -> list:
        """The access layer's link changed: ``uplink`` is the interface of the usable link, or None."""
        if uplink == self.uplink:
            return []
        acts: list = []
        if self.uplink is not None:
            acts.append(Step(self.user, "link_down", {"iface": self.uplink}))
        self.uplink, self.registered_at, self.coa, self.rejected = uplink, None, None, None
        self.answered.clear()
        self.generation += 1
        self.attempt = 0
        if uplink is None:
            return acts
        acts.append(Step(self.user, "link_up", {"iface": uplink}))
        return acts + self._discover(now)

    def _discover(self, now: int) -> list:
        self.attempt += 1
        if self.handover is not None and self.attempt <= PROACTIVE_TRIES:
            target, rand, res = self.handover
            msg = self._m(Msg.DISCOVER, user=self.user, rand=rand, res=res, target=target)
        else:
            msg = self._m(Msg.DISCOVER, user=self.user)
        return [ToCore(msg), Step(self.user, "discover_tx", {"attempt": self.attempt, "proactive": A.RES in msg.attrs}),
                Timer(now + self.retransmit_ns, ("retransmit", self.generation))]

    def on_timer(self, token: tuple, now: int) -> list:
        if token[0] != "retransmit" or token[1] != self.generation:
            return []
        if self.uplink is None or self.registered_at is not None or self.rejected is not None:
            return []
        return self._discover(now)

    # ------------------------------------------------------------------------------------- from cores
    def on_msg(self, msg: Message, now: int) -> list:
        if msg.get(A.USER) != self.user:
            return [Step(self.user, "ignored", {"reason": f"{msg.type.name} for {msg.get(A.USER)!r}"})]
        if msg.type == Msg.CHALLENGE:
            core, rand = msg[A.CORE], msg[A.RAND]
            if rand in self.answered:  # the core repeated it for a retransmitted DISCOVER: answered once only
                return [Step(self.user, "challenge_dup", {"core": core})]
            self.answered[rand] = core
            res = auth.response(self.key, rand, self.user, core)
            self.generation += 1  # the core is at work: give it three intervals before discovering again
            return [Step(self.user, "challenge_rx", {"core": core}),
                    ToCore(self._m(Msg.RESPONSE, user=self.user, rand=rand, res=res)),
                    Step(self.user, "response_tx", {"core": core}),
                    Timer(now + 3 * self.retransmit_ns, ("retransmit", self.generation))]
        if msg.type == Msg.REGISTERED:
            return self._registered(msg)
        if msg.type == Msg.REJECT:
            self.rejected = msg[A.REASON]
            return [Step(self.user, "rejected", {"core": msg[A.CORE], "reason": msg[A.REASON]})]
        if msg.type == Msg.HANDOVER_START:
            return self._handover_start(msg)
        return [Step(self.user, "ignored", {"reason": f"{msg.type.name} is not for a user"})]

    def _registered(self, msg: Message) -> list:
        core, rand = msg[A.CORE], msg[A.RAND]
        known = self.answered.get(rand) == core or (self.handover is not None and self.handover[1] == rand
                                                    and self.handover[0] == core)
        if not known or not auth.check_tag(auth.session_key(self.key, rand), msg.signed, msg[A.AUTH]):
            return [Step(self.user, "registered_refused", {"core": core, "reason": "bad tag or unknown challenge"})]
        self.registered_at, self.rejected = core, None
        self.coa = str(msg[A.COA]) if A.COA in msg.attrs else None
        self.prefix = str(msg[A.PREFIX])
        self.prefix6 = str(msg[A.PREFIX6]) if A.PREFIX6 in msg.attrs else None
        self.handover = None
        return [Step(self.user, "registered", {"core": core, "coa": self.coa, "prefix": self.prefix,
                                               **({"prefix6": self.prefix6} if self.prefix6 else {})})]

    def _handover_start(self, msg: Message) -> list:
        if not auth.check_tag(self.key, msg.signed, msg[A.AUTH]):
            return [Step(self.user, "handover_start_refused", {"reason": "bad tag"})]
        why = self.win_home.check(msg.msg_id)
        if why:
            return [Step(self.user, "handover_start_refused", {"reason": f"replay ({why})"})]
        target, rand = msg[A.TARGET], msg[A.RAND]
        self.handover = (target, rand, auth.response(self.key, rand, self.user, target))
        return [Step(self.user, "handover_start_rx", {"target": target, "switch_at_ns": msg[A.AT]}),
                ToCore(self._m(Msg.DISCONNECT_ACK, user=self.user, target=target)),
                Step(self.user, "disconnect_ack_tx", {"target": target})]
