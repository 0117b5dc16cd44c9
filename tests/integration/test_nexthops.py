"""Nexthop objects against the real kernel: what emu.dataplane.nexthops assumes the kernel does.

One namespace, three veth pairs (ends 10, 11, 12 up). Routes of both families
name single objects and a weighted group; the kernel must show them with
their paths (compat mode: what ``ip route`` and the FIB check read); an
interface going down must take its single objects and their routes and
shrink (not delete) the group, whose routes keep the surviving path; after
``forget``, the shrunk group stays while a table names it, and once deleted
takes its routes with it; the set asked again gets a new id.
"""

from __future__ import annotations

import socket

import pytest

from emu.dataplane import nexthops as N
from emu.dataplane import nlroute
from emu.dataplane.netlink import NetlinkBatch

BASE6 = 0xFD00_6772_6300 << 80


@pytest.fixture
def box(make_ns):
    (ns,) = make_ns("nh", sysctls={"net.ipv6.conf.all.forwarding": "1"})
    with NetlinkBatch(ns) as nl:
        for i in range(3):
            nl.veth(f"e{i}", f"p{i}", index=10 + i, peer_index=20 + i)
        nl.send()
        for idx in (10, 11, 12, 20, 21, 22):
            nl.link_set(idx, up=True)
        nl.send()
    return ns


def routes(nl: NetlinkBatch, fam: int) -> dict[str, list]:
    out = {}
    for r in nl.routes(fam, 1001):
        hops = [(h[0], h[1], h[2]) for h in r["nexthops"]] or [(r["oif"], r["via"] or r["gateway"], 1)]
        out[r["dst"]] = sorted(hops)
    return out


def test_kernel_keeps_the_rules_the_table_assumes(box) -> None:
    t = N.NexthopTable()
    a, c, e = nlroute.Hop(10, "fe80::a", 1), nlroute.Hop(11, "fe80::c", 3), nlroute.Hop(12, "fe80::e", 1)
    items = [(0x11000000, 11, 1, nlroute.RTN_UNICAST, (a,)), (0x11200000, 11, 1, nlroute.RTN_UNICAST, (a, c)),
             (0x11400000, 11, 1, nlroute.RTN_UNICAST, (e,))]
    with NetlinkBatch(box) as nl:
        nlroute.route4_many(nl, "replace", 1001, items, nexthops=t)
        nlroute.route6_many(nl, "replace", 1001, items, BASE6, nexthops=t)
        nl.send()
        v4, v6 = routes(nl, socket.AF_INET), routes(nl, socket.AF_INET6)
        assert v4 == {"17.0.0.0/11": [(10, "fe80::a", 1)], "17.32.0.0/11": [(10, "fe80::a", 1), (11, "fe80::c", 3)],
                      "17.64.0.0/11": [(12, "fe80::e", 1)]}
        assert sorted(v6.values()) == sorted(v4.values()) and len(v6) == 3
        group = t.id_of((a, c), nl)
        assert len(nl) == 0  # nothing new to write
        assert t.table_names(1001, [(rtype, hops) for *_key, rtype, hops in items], nl) == 0

        nl.link_set(10, up=False)  # e0 down: its object and the route naming it go; the group shrinks
        nl.send()
        v4 = routes(nl, socket.AF_INET)
        assert v4 == {"17.32.0.0/11": [(11, "fe80::c", 1)], "17.64.0.0/11": [(12, "fe80::e", 1)]}
        t.forget({10})
        nl.link_set(10, up=True)
        nl.send()
        nlroute.route4_many(nl, "replace", 1001, items[:1], nexthops=t)  # a again: a new object
        nl.send()
        assert routes(nl, socket.AF_INET)["17.0.0.0/11"] == [(10, "fe80::a", 1)]
        assert t.table_names(1002, [], nl) == 0  # table 1001 still names the shrunk group: kept
        assert routes(nl, socket.AF_INET)["17.32.0.0/11"] == [(11, "fe80::c", 1)]

        # table 1001 said to name it no more (the test leaves its route in the kernel: the delete takes it)
        unicast = nlroute.RTN_UNICAST
        assert t.table_names(1001, [(unicast, (a,)), (unicast, (e,))], nl) == 1
        nl.send(ok={2})
        v4 = routes(nl, socket.AF_INET)
        assert "17.32.0.0/11" not in v4 and set(v4) == {"17.0.0.0/11", "17.64.0.0/11"}
        assert "17.32.0.0/11" not in {d.split("/")[0] for d in routes(nl, socket.AF_INET6)}
        assert t.id_of((a, c), nl) != group  # asked again: a new group
