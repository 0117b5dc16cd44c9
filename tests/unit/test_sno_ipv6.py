"""IPv6 user traffic follows registration and handover like IPv4 (pure, no root).

spec: inter-sno-mobility §5.1 (the user keeps its addresses; user -> visited core -> tunnel -> home core and
back), §5.2 / Figure 5. The class of defect: a kernel change the procedures make for the user's IPv4 prefix
without the same change for its IPv6 prefix. Every kernel action of both cores, in every procedure, restart
and stop, is checked: its IPv6 lines, read back into IPv4 (:func:`twin`), are exactly its IPv4 lines.
"""

from __future__ import annotations

import ipaddress
import re

import pytest

from emu.control.sno import kernel as K
from emu.control.sno.logic import CoreLogic
from emu.control.sno.recovery import restore, snapshot, teardown

from .sno_sim import ACCESS6, PREFIX, PREFIX6, USER, Sim

MS = 1_000_000
GS4 = {"gA": "10.1.1.2", "gB": "10.1.2.2"}


def twin(line: str) -> str:
    """An IPv6 line read as the IPv4 line it must mirror: the prefixes, GS addresses and tunnel-inside
    link-locals swapped for their IPv4 counterparts."""
    line = line.replace(PREFIX6, PREFIX).replace("::/0", "default").replace("/128", "/32").replace(" nodad", "")
    for i, a in ACCESS6.items():
        line = line.replace(a, GS4[i])
    return re.sub(r"fe80::[0-9a-f:]+",
                  lambda m: str(ipaddress.IPv4Address(int(ipaddress.IPv6Address(m[0])) & 0xFFFFFFFF)), line)


def split(lines) -> tuple[list[str], list[str]]:
    v4, v6 = K.split_families(list(lines))
    return [ln for ln in v4 if not ln.startswith("link ")], v6


def assert_mirrored(acts, what: str) -> int:
    """Every kernel action's IPv4 lines have their IPv6 twins, in the same order. Returns the IPv6 lines seen."""
    n = 0
    for a in acts:
        if a.what in ("base", "teardown"):
            continue  # the blackhole guard: IPv4 on the whole link, IPv6 on the user pools (test below)
        v4, v6 = split(a.lines)
        assert [twin(x) for x in v6] == v4, (what, a.what, v4, v6)
        n += len(v6)
    return n


def run(procedure: str) -> Sim:
    sim = Sim(procedure, latency_ms=20, v6=True)
    sim.link("core-a")
    sim.run(sim.now + 100 * MS)
    t0 = sim.now + 80 * MS
    sim.do("core-a", sim.cores["core-a"].on_plan(USER, "core-b", t0, sim.now))
    sim.run(t0)
    sim.switch("core-b", 10)
    sim.run(sim.now + 1000 * MS)
    assert sim.agent.registered_at == "core-b"
    assert sim.agent.prefix == PREFIX and sim.agent.prefix6 == PREFIX6  # both addresses kept
    return sim


@pytest.mark.parametrize("procedure", ["baseline", "proactive"])
def test_every_ipv4_change_for_the_user_has_its_ipv6_twin(procedure):
    sim = run(procedure)
    n = sum(assert_mirrored(sim.kernel[c], f"{procedure} away {c}") for c in sim.cores)
    a_lines = [ln for k in sim.kernel["core-a"] for ln in k.lines]
    b_lines = [ln for k in sim.kernel["core-b"] for ln in k.lines]
    # home core: the IPv6 prefix goes into the tunnel toward the CoA's link-local twin; the visited core
    # sends the user's IPv6 uplink into the tunnel (table 101) and its downlink to its GS
    assert f"-6 route replace {PREFIX6} via fe80::a4f:202 dev sno2 onlink" in a_lines
    assert f"-6 rule add pref 1000 from {PREFIX6} iif gB lookup 101" in b_lines
    assert "-6 route replace ::/0 via fe80::a4f:101 dev sno1 onlink table 101" in b_lines
    assert f"-6 route replace {PREFIX6} via {ACCESS6['gB']} dev gB" in b_lines
    sim.switch("core-a", 10)  # home again: both families back at the home GS, tunnels gone
    sim.run(sim.now + 1000 * MS)
    assert sim.agent.registered_at == "core-a" and sim.agent.prefix6 == PREFIX6
    n += sum(assert_mirrored(sim.kernel[c], f"{procedure} home {c}") for c in sim.cores)
    a_lines = [ln for k in sim.kernel["core-a"] for ln in k.lines]
    assert a_lines.count(f"-6 route replace {PREFIX6} via {ACCESS6['gA']} dev gA") >= 2
    assert n > 20
    for c, core in sim.cores.items():  # a restart restores, a stop removes, both families alike
        fresh = CoreLogic(core.c, sim.clock)
        assert_mirrored(restore(fresh, snapshot(core)), f"restore {c}")
        v4, v6 = split(teardown(core)[0].lines)
        assert [twin(x) for x in v6 if "blackhole" not in x] == [x for x in v4 if "blackhole" not in x
                                                                and not x.endswith(" dev lo")]


def test_the_ipv6_guard_drops_unregistered_user_pools_only():
    sim = Sim(v6=True)
    base = [ln for a in sim.cores["core-b"].start() for ln in a.lines]
    assert "rule add pref 32000 iif gB blackhole" in base
    assert base.count("-6 rule add pref 32000 from fd75:7365:7201::/48 iif gB blackhole") == 1
    assert not [ln for ln in base if ln.startswith("-6 ") and "from" not in ln]  # other IPv6 (BGP) passes


def test_without_ipv6_nothing_ipv6_is_made():
    sim = Sim("proactive")
    sim.link("core-a")
    sim.run(100 * MS)
    sim.switch("core-b", 10)
    sim.run(sim.now + 1000 * MS)
    assert sim.agent.registered_at == "core-b" and sim.agent.prefix6 is None
    assert not [ln for c in sim.kernel for k in sim.kernel[c] for ln in k.lines if ln.startswith(K.V6)]


def test_the_tunnel_inside_twin_is_one_rule():
    assert K.ll6("10.253.1.2") == "fe80::afd:102" and K.ll6("10.79.2.1") == "fe80::a4f:201"
    assert K.split_families(["route flush table 101", "-6 route flush table 101"]) == \
        (["route flush table 101"], ["route flush table 101"])
