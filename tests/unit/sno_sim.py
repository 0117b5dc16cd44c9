"""A message bus for the pure SNO state machines: two cores and one user, no sockets, no kernel.

Delivers every action in order, with a virtual clock: inter-core messages
take ``latency_ns`` one way, user<->core messages ``access_ns``. Kernel
actions are collected per core. Used by the procedure tests.
"""

from __future__ import annotations

import heapq
import itertools
import secrets

from emu.control.sno.agent_logic import AgentLogic
from emu.control.sno.config import CoreConf, HomeUser, Peer
from emu.control.sno.actions import Kernel, Step, Timer, ToCore, ToPeer, ToUser
from emu.control.sno.logic import CoreLogic
from emu.control.sno.wire import decode, encode

USER = "ut1@sno-a"
PREFIX = "10.77.1.0/24"
PREFIX6 = "fd75:7365:7201:1::/64"   # with ``Sim(v6=True)``: the user's IPv6 home prefix
POOLS6 = ["fd75:7365:7201::/48", "fd75:7365:7202::/48"]
ACCESS6 = {"gA": "fd74:6572:7200:1::1", "gB": "fd74:6572:7200:2::1"}


def core_conf(name, index, realm, public, pool, access, peer, procedure="baseline", users=None, v6=False):
    return CoreConf(name=name, index=index, realm=realm, public=public, tunnel_pool=pool, access=access,
                    peers={peer.name: peer}, users=users or {}, procedure=procedure, notice_ms=20.0,
                    prepare_wait_ms=500.0, access6={i: ACCESS6[i] for i in access} if v6 else {},
                    guard6=list(POOLS6) if v6 else [])


class Sim:
    def __init__(self, procedure="baseline", latency_ms=20.0, access_ms=1.0, agent_key=None, key=None, v6=False):
        self.key = key or secrets.token_bytes(32)
        self.now = 0
        self.latency_ns = int(latency_ms * 1e6)
        self.access_ns = int(access_ms * 1e6)
        pa = Peer("core-a", 1, "sno-a", "10.0.1.2")
        pb = Peer("core-b", 2, "sno-b", "10.0.2.2")
        self.cores = {
            "core-a": CoreLogic(core_conf("core-a", 1, "sno-a", "10.0.1.2", "10.79.1.0/24", {"gA": "10.1.1.2"}, pb,
                                          procedure, {USER: HomeUser(PREFIX, self.key, PREFIX6 if v6 else "")}, v6),
                                self.clock),
            "core-b": CoreLogic(core_conf("core-b", 2, "sno-b", "10.0.2.2", "10.79.2.0/24", {"gB": "10.1.2.2"}, pa,
                                          procedure, v6=v6), self.clock),
        }
        self.agent = AgentLogic(USER, agent_key or self.key, 300.0, self.clock)
        self.attached = None  # core the user's link reaches
        self.iface = {"core-a": "gA", "core-b": "gB"}
        self.queue = []
        self.seq = itertools.count()
        self.steps: list[tuple[int, str, Step]] = []
        self.kernel: dict[str, list[Kernel]] = {"core-a": [], "core-b": []}
        self.wire_log: list[tuple[str, bytes]] = []  # (to, bytes) of user<->core messages
        self.lose: dict = {}  # inter-core message type -> how many of the next ones are lost

    def clock(self):
        return self.now

    def push(self, delay, fn):
        heapq.heappush(self.queue, (self.now + delay, next(self.seq), fn))

    def run(self, until_ns):
        while self.queue and self.queue[0][0] <= until_ns:
            t, _, fn = heapq.heappop(self.queue)
            self.now = max(self.now, t)
            fn()
        self.now = max(self.now, until_ns)

    # actions -> events
    def do(self, who, acts):
        for a in acts:
            if isinstance(a, Step):
                self.steps.append((self.now, who, a))
            elif isinstance(a, Kernel):
                self.kernel[who].append(a)
            elif isinstance(a, Timer):
                target = self.agent if who == "agent" else self.cores[who]
                self.push(a.at_ns - self.now, lambda tk=a.token, w=who, t=target: self.do(w, t.on_timer(tk, self.now)))
            elif isinstance(a, ToPeer):
                if self.lose.get(a.msg.type, 0):  # a message the test makes the network lose
                    self.lose[a.msg.type] -= 1
                    continue
                data = encode(a.msg)
                self.push(self.latency_ns, lambda d=data, src=who, dst=a.peer:
                          self.do(dst, self.cores[dst].on_peer(src, decode(d), self.now)))
            elif isinstance(a, ToUser):
                data = encode(a.msg, a.key)
                self.wire_log.append(("agent", data))
                if self.attached == who:
                    self.push(self.access_ns, lambda d=data: self.do("agent", self.agent.on_msg(decode(d), self.now)))
            elif isinstance(a, ToCore):
                data = encode(a.msg)
                self.wire_log.append(("core", data))
                core = self.attached
                if core is not None:
                    self.push(self.access_ns, lambda d=data, c=core: self.user_to_core(c, d))

    def user_to_core(self, core, data):
        if self.attached == core:
            self.do(core, self.cores[core].on_user(decode(data), "10.2.9.2", self.iface[core], self.now))

    def link(self, core):
        self.attached = core
        self.do("agent", self.agent.on_link(self.iface[core] if core else None, self.now))

    def switch(self, to, switch_ms):
        self.link(None)
        self.push(int(switch_ms * 1e6), lambda: self.link(to))

    def step_names(self, who=None):
        return [s.step for _, w, s in self.steps if who is None or w == who]

    def first(self, who, step, after=0):
        return next(t for t, w, s in self.steps if w == who and s.step == step and t >= after)
