"""Nexthop objects (emu.dataplane.nexthops): the messages decoded by pyroute2's parser, and the table's rules.

pyroute2 0.9.7 has no nexthop message class and its ``rtmsg`` stops before
RTA_NH_ID, so both are declared here on pyroute2's own ``nlmsg`` machinery
(field layouts from linux/nexthop.h and linux/rtnetlink.h) and every
message is read back by it, field by field. The group array (``struct
nexthop_grp``) is read from NHA_GROUP's raw bytes. No root needed.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, nlmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from emu.dataplane import nexthops as N
from emu.dataplane import nlroute
from emu.dataplane.netlink import NetlinkBatch


class nhmsg(nlmsg):
    """struct nhmsg and the NHA_* attributes this project writes (linux/nexthop.h)."""

    fields = (("family", "B"), ("scope", "B"), ("protocol", "B"), ("resvd", "B"), ("flags", "I"))
    nla_map = (("NHA_UNSPEC", "none"), ("NHA_ID", "uint32"), ("NHA_GROUP", "cdata"), ("NHA_GROUP_TYPE", "uint16"),
               ("NHA_BLACKHOLE", "flag"), ("NHA_OIF", "uint32"), ("NHA_GATEWAY", "ip6addr"))


class rtmsg_nh(rtmsg):
    """pyroute2's rtmsg with the attributes after RTA_EXPIRES up to RTA_NH_ID (linux/rtnetlink.h)."""

    nla_map = rtmsg.nla_map + (("RTA_PAD", "hex"), ("RTA_UID", "uint32"), ("RTA_TTL_PROPAGATE", "uint8"),
                               ("RTA_IP_PROTO", "uint8"), ("RTA_SPORT", "be16"), ("RTA_DPORT", "be16"),
                               ("RTA_NH_ID", "uint32"))


def decoded(batch: NetlinkBatch) -> list:
    out = []
    for data in batch.messages():
        mtype = struct.unpack_from("=H", data, 4)[0]
        m = (nhmsg if mtype in (N.RTM_NEWNEXTHOP, N.RTM_DELNEXTHOP) else rtmsg_nh)(data)
        m.decode()
        assert m["header"]["length"] == len(data)
        out.append(m)
    return out


def group_of(m) -> list[tuple[int, int]]:
    raw = m.get("NHA_GROUP")
    return [(i, w + 1) for i, w, _hi, _r in struct.iter_unpack("=IBBH", raw)]


def ll(x: int) -> str:
    return str(ipaddress.IPv6Address((0xFE80 << 112) | x))


_hop = st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**64 - 1), st.integers(-3, 300))


@settings(max_examples=200, deadline=None)
@given(sets=st.lists(st.lists(_hop, min_size=1, max_size=4), min_size=1, max_size=8))
def test_every_object_decodes_to_what_the_route_names(sets) -> None:
    """For any hop sets: each single object says its interface and neighbour, each group its members with
    the clamped weights, every id is new, and each group is queued after its members."""
    t, b = N.NexthopTable(), NetlinkBatch.unbound(ack_each=False)
    asked = []
    for hs in sets:
        hops = tuple(nlroute.Hop(o, ll(x), w) for o, x, w in hs)
        asked.append((hops, t.id_of(hops, b)))
    objs = {}
    for m in decoded(b):
        assert m["header"]["type"] == N.RTM_NEWNEXTHOP
        assert m["header"]["flags"] == NLM_F_CREATE | NLM_F_EXCL | NLM_F_REQUEST
        assert m["protocol"] == N.RTPROT_STATIC
        i = m.get("NHA_ID")
        assert i not in objs
        if m.get("NHA_GROUP") is not None:
            assert m["family"] == socket.AF_UNSPEC
            members = group_of(m)
            assert all(j in objs for j, _w in members)  # members first
            objs[i] = ("group", tuple(members))
        else:
            assert m["family"] == socket.AF_INET6
            objs[i] = ("single", (m.get("NHA_OIF"), m.get("NHA_GATEWAY")))
    for hops, i in asked:
        if len(hops) == 1:
            assert objs[i] == ("single", (hops[0].oif, hops[0].via6))
        else:
            kind, members = objs[i]
            assert kind == "group"
            assert [(objs[j][1], w) for j, w in members] == [((h.oif, h.via6), max(1, min(256, h.weight)))
                                                              for h in hops]


def test_a_set_is_written_once_and_a_single_hop_ignores_its_weight() -> None:
    t, b = N.NexthopTable(), NetlinkBatch.unbound()
    a, c = nlroute.Hop(5, "fe80::1", 1), nlroute.Hop(6, "fe80::2", 3)
    first = t.id_of((a, c), b)
    n = len(b)
    assert t.id_of((a, c), b) == first and len(b) == n
    assert t.id_of((nlroute.Hop(5, "fe80::1", 7),), b) == t.id_of((a,), b)  # the group's member, no new message
    assert len(b) == n == 3 and len(t) == 3
    assert t.id_of((c, a), b) != first  # another order is another hash layout: its own group


def test_bulk_routes_name_their_objects_in_both_families() -> None:
    """route4_many / route6_many with a table: objects first, then each unicast route with RTA_NH_ID and no
    hops of its own; local and unreachable routes and deletes as without it."""
    t, b = N.NexthopTable(), NetlinkBatch.unbound(ack_each=False)
    a, c = nlroute.Hop(5, "fe80::1", 1), nlroute.Hop(6, "fe80::2", 2)
    items = [(0x11000000, 11, 1, nlroute.RTN_UNICAST, (a,)), (0x11200000, 11, 1, nlroute.RTN_UNICAST, (a, c)),
             (0x11400000, 11, 2, nlroute.RTN_UNICAST, (c,)), (0x11600000, 11, 1, nlroute.RTN_LOCAL, ()),
             (0x11800000, 11, 1, nlroute.RTN_UNREACHABLE, ())]
    nlroute.route4_many(b, "replace", 1001, items, local_oif=1, nexthops=t)
    nlroute.route6_many(b, "replace", 1001, items, 0xFD00_6772_6300 << 80, local_oif=1, nexthops=t)
    nlroute.route4_many(b, "del", 1001, items[:1], nexthops=t)
    ms = decoded(b)
    objs = [m for m in ms if isinstance(m, nhmsg)]
    routes = [m for m in ms if not isinstance(m, nhmsg)]
    assert len(objs) == 3 and ms[:3] == objs  # a, c, group(a, c): before any route
    ids = {"a": objs[0].get("NHA_ID"), "c": objs[1].get("NHA_ID"), "ac": objs[2].get("NHA_ID")}
    assert group_of(objs[2]) == [(ids["a"], 1), (ids["c"], 2)]
    for fam, rs in ((socket.AF_INET, routes[:5]), (socket.AF_INET6, routes[5:10])):
        assert [r["family"] for r in rs] == [fam] * 5
        assert [r.get("RTA_NH_ID") for r in rs] == [ids["a"], ids["ac"], ids["c"], None, None]
        for r in rs[:3]:
            assert (r.get("RTA_OIF"), r.get("RTA_GATEWAY"), r.get("RTA_VIA"), r.get("RTA_MULTIPATH")) == (
                None, None, None, None)
            assert r["scope"] == 0 and r.get("RTA_TABLE") == 1001
        assert rs[3].get("RTA_OIF") == 1 and rs[4]["type"] == nlroute.RTN_UNREACHABLE
    (d,) = routes[10:]
    assert d["header"]["type"] == 25 and d.get("RTA_NH_ID") is None  # RTM_DELROUTE names destination only


def test_interfaces_going_forget_their_objects_and_shrunk_groups_go_when_no_table_names_them() -> None:
    """The kernel drops objects through a downed interface (and shrinks groups): forget them (the next use
    writes a new id, never a reused one) and delete a shrunk group once no table names it any more (every
    table that named it was refilled)."""
    t, b = N.NexthopTable(), NetlinkBatch.unbound()
    a, c, e = nlroute.Hop(5, "fe80::1", 1), nlroute.Hop(6, "fe80::2", 1), nlroute.Hop(7, "fe80::3", 1)
    ac, ce = t.id_of((a, c), b), t.id_of((c, e), b)
    old_a = t.id_of((a,), b)
    unicast = nlroute.RTN_UNICAST
    assert t.table_names(1000, [(unicast, (a, c)), (unicast, (c, e))], b) == 0
    assert t.table_names(1001, [(unicast, (a, c))], b) == 0
    t.forget({5})
    assert t.id_of((c, e), b) == ce  # untouched
    n = len(b)
    new_a = t.id_of((a,), b)
    assert new_a not in (old_a, ac, ce) and new_a > max(ac, ce) and len(b) == n + 1
    assert t.table_names(1000, [(unicast, (c, e)), (unicast, (a,))], b) == 0  # table 1001 still names it
    n = len(b)
    assert t.table_names(1001, [(unicast, (a,)), (unicast, None)], b) == 1
    (m,) = decoded(b)[n:]
    assert (m["header"]["type"], m.get("NHA_ID")) == (N.RTM_DELNEXTHOP, ac)
    assert t.table_names(1002, [], b) == 0  # once


def test_a_group_asked_again_after_its_member_went_is_a_new_group() -> None:
    t, b = N.NexthopTable(), NetlinkBatch.unbound()
    a, c = nlroute.Hop(5, "fe80::1", 1), nlroute.Hop(6, "fe80::2", 1)
    g = t.id_of((a, c), b)
    t.forget({6})
    n = len(b)
    g2 = t.id_of((a, c), b)
    assert g2 != g
    new = decoded(b)[n:]
    assert [m.get("NHA_OIF") for m in new] == [6, None]  # c again (a survived), then the group
    assert group_of(new[-1])[0][0] == t.id_of((a,), b)


def test_a_group_no_table_names_is_deleted_and_a_named_one_kept() -> None:
    """Each table's fill says what its routes name now; a group named by no table of the rotation is deleted
    (after the routes queued before it), one still named by another table stays, and asking for a deleted set
    again writes a new group."""
    t, b = N.NexthopTable(), NetlinkBatch.unbound()
    a, c, e = nlroute.Hop(5, "fe80::1", 1), nlroute.Hop(6, "fe80::2", 2), nlroute.Hop(7, "fe80::3", 1)
    ac, ce = (a, c), (c, e)
    g_ac, g_ce = t.id_of(ac, b), t.id_of(ce, b)
    unicast = nlroute.RTN_UNICAST
    assert t.table_names(1000, [(unicast, ac), (unicast, ce), (unicast, (a,))], b) == 0
    assert t.table_names(1001, [(unicast, ce), (unicast, ce), (nlroute.RTN_UNREACHABLE, ())], b) == 0
    n = len(b)
    assert t.table_names(1000, [(unicast, (a,)), (unicast, None)], b) == 1  # ac named nowhere now; ce by 1001
    (m,) = decoded(b)[n:]
    assert (m["header"]["type"], m.get("NHA_ID")) == (N.RTM_DELNEXTHOP, g_ac)
    assert t.id_of(ce, b) == g_ce and t.id_of((a,), b) < g_ac  # kept, singles untouched
    assert t.id_of(ac, b) > g_ce  # asked again: a new group
