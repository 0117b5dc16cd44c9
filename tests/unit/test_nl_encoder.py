"""Every message our own route encoder writes, decoded by pyroute2's parser and checked field by field.

The data plane packs bulk route add/replace/append/del messages itself
(:meth:`emu.dataplane.netlink.NetlinkBatch.route`, the measured hot path);
everything else is encoded by pyroute2. Here pyroute2's ``rtmsg`` is the
independent reader: header type and flags, family, dst_len, table (header
and RTA_TABLE), protocol, scope, type, flags, RTA_DST, RTA_OIF,
RTA_GATEWAY, RTA_VIA, RTA_PRIORITY and every multipath hop with its weight.
The veth pairs and addresses of a bulk build are packed by us too
(:mod:`emu.dataplane.rtpack`): decoded the same way, and compared byte for
byte with pyroute2's own encoding of the same request. The pyroute2-encoded
requests (link changes, rules, neighbours, qdiscs) are decoded too, as a
check of how we drive pyroute2. No root needed.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from emu.dataplane import nlmsg, nlroute, tc
from emu.dataplane.netlink import NetlinkBatch, Nexthop, route_dict
from emu.errors import DataplaneError

FLAGS = {"add": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE,
         "append": NLM_F_CREATE | NLM_F_APPEND, "del": 0}


def decoded(batch: NetlinkBatch, cls=rtmsg) -> list:
    out = []
    for data in batch.messages():
        m = cls(data)
        m.decode()
        assert m["header"]["length"] == len(data)
        out.append(m)
    return out


def one(batch: NetlinkBatch, cls=rtmsg):
    (m,) = decoded(batch, cls)
    return m


def check_header(m, verb: str, ack: bool = True) -> None:
    assert m["header"]["type"] == (RTM_DELROUTE if verb == "del" else RTM_NEWROUTE)
    assert m["header"]["flags"] == FLAGS[verb] | NLM_F_REQUEST | (NLM_F_ACK if ack else 0)


def test_single_hop_ipv4_route_with_gateway_table_metric() -> None:
    b = NetlinkBatch.unbound()
    b.route("add", "10.1.0.0/16", oif=7, gateway="10.0.0.1", table=100, metric=20)
    m = one(b)
    check_header(m, "add")
    assert (m["family"], m["dst_len"], m["src_len"], m["tos"]) == (socket.AF_INET, 16, 0, 0)
    assert (m["table"], m.get("RTA_TABLE")) == (100, 100)
    assert (m["proto"], m["scope"], m["type"], m["flags"]) == (4, 0, 1, 0)  # static, universe, unicast
    assert (m.get("RTA_DST"), m.get("RTA_OIF"), m.get("RTA_GATEWAY"), m.get("RTA_PRIORITY")) == (
        "10.1.0.0", 7, "10.0.0.1", 20)
    assert m.get("RTA_VIA") is None and m.get("RTA_MULTIPATH") is None


def test_device_route_is_scope_link_and_table_above_255_goes_in_rta_table() -> None:
    b = NetlinkBatch.unbound(ack_each=False)
    b.route("replace", "fd00::/64", oif=3, table=1001)
    m = one(b)
    check_header(m, "replace", ack=False)
    assert (m["family"], m["dst_len"], m["table"], m.get("RTA_TABLE")) == (socket.AF_INET6, 64, 252, 1001)
    assert (m["scope"], m["type"], m.get("RTA_DST"), m.get("RTA_OIF")) == (253, 1, "fd00::", 3)
    assert m.get("RTA_GATEWAY") is None


def test_ipv4_route_via_an_ipv6_next_hop() -> None:
    b = NetlinkBatch.unbound()
    nlroute.route4(b, "replace", 0x0A200000, 11, [nlroute.Hop(12, "fe80::1:2")], table=1002, metric=1)
    m = one(b)
    check_header(m, "replace")
    assert (m["family"], m["dst_len"], m["table"], m.get("RTA_TABLE")) == (socket.AF_INET, 11, 252, 1002)
    assert (m["scope"], m["type"], m["proto"]) == (0, 1, 4)
    assert m.get("RTA_DST") == "10.32.0.0" and m.get("RTA_OIF") == 12 and m.get("RTA_PRIORITY") == 1
    assert m.get("RTA_VIA") == {"family": socket.AF_INET6, "addr": "fe80::1:2"}


def test_multipath_via_hops_carry_their_weights() -> None:
    b = NetlinkBatch.unbound()
    hops = [nlroute.Hop(2, "fe80::a", 3), nlroute.Hop(3, "fe80::b", 1), nlroute.Hop(4, "fe80::c", 999)]
    nlroute.route4(b, "replace", 0xC0A80000, 16, hops, table=254, metric=2)
    m = one(b)
    check_header(m, "replace")
    assert (m["table"], m.get("RTA_TABLE"), m.get("RTA_PRIORITY"), m.get("RTA_OIF")) == (254, 254, 2, None)
    got = [(nh["oif"], nh["hops"], nh["flags"], nh.get("RTA_VIA")) for nh in m.get("RTA_MULTIPATH")]
    assert got == [(2, 2, 0, {"family": socket.AF_INET6, "addr": "fe80::a"}),
                   (3, 0, 0, {"family": socket.AF_INET6, "addr": "fe80::b"}),
                   (4, 255, 0, {"family": socket.AF_INET6, "addr": "fe80::c"})]  # weight clamped to 256
    assert route_dict(m)["nexthops"] == [(2, "fe80::a", 3, 0), (3, "fe80::b", 1, 0), (4, "fe80::c", 256, 0)]


def test_multipath_gateways_onlink() -> None:
    b = NetlinkBatch.unbound()
    b.route("append", "0.0.0.0/0", nexthops=[Nexthop(2, "10.0.0.1", 5, onlink=True), Nexthop(3, "10.0.1.1")])
    m = one(b)
    check_header(m, "append")
    assert (m["dst_len"], m.get("RTA_DST"), m["table"]) == (0, None, 254)
    got = [(nh["oif"], nh["hops"], nh["flags"], nh.get("RTA_GATEWAY")) for nh in m.get("RTA_MULTIPATH")]
    assert got == [(2, 4, 4, "10.0.0.1"), (3, 0, 0, "10.0.1.1")]  # RTNH_F_ONLINK = 4


def test_local_and_unreachable_routes() -> None:
    b = NetlinkBatch.unbound()
    nlroute.route4(b, "replace", 0x0A000000, 29, table=1003, metric=1, rtype=nlroute.RTN_LOCAL, oif=1)
    nlroute.route4(b, "replace", 0x0A000008, 29, table=1003, metric=1, rtype=nlroute.RTN_UNREACHABLE)
    b.route("add", "192.0.2.0/24", type="blackhole")
    local, unreach, black = decoded(b)
    assert (local["type"], local["scope"], local.get("RTA_OIF"), local.get("RTA_DST")) == (2, 254, 1, "10.0.0.0")
    assert (unreach["type"], unreach["scope"], unreach.get("RTA_OIF")) == (7, 0, None)
    assert (unreach.get("RTA_DST"), unreach["dst_len"], unreach.get("RTA_TABLE")) == ("10.0.0.8", 29, 1003)
    assert (black["type"], black["scope"]) == (6, 0)


@pytest.mark.parametrize("rtype", [nlroute.RTN_UNICAST, nlroute.RTN_LOCAL, nlroute.RTN_UNREACHABLE])
def test_delete_matches_any_scope_and_protocol(rtype: int) -> None:
    b = NetlinkBatch.unbound(ack_each=False)
    nlroute.route4(b, "del", 0x0A000000, 24, table=1001, metric=2, rtype=rtype)
    m = one(b)
    check_header(m, "del", ack=False)
    assert (m["scope"], m["proto"]) == (255, 0)                        # RT_SCOPE_NOWHERE: any scope
    assert m["type"] == (0 if rtype == nlroute.RTN_UNICAST else rtype)  # unicast: any type
    assert (m.get("RTA_DST"), m["dst_len"], m.get("RTA_TABLE"), m.get("RTA_PRIORITY")) == ("10.0.0.0", 24, 1001, 2)
    assert m.get("RTA_OIF") is None and m.get("RTA_MULTIPATH") is None


def test_bad_weight_is_refused() -> None:
    with pytest.raises(DataplaneError):
        NetlinkBatch.unbound().route("add", "10.0.0.0/8", nexthops=[Nexthop(2, "10.0.0.1", 0)])


def test_sequence_numbers_and_shapes_do_not_leak_between_routes() -> None:
    b = NetlinkBatch.unbound()
    b.route("add", "10.0.0.0/24", oif=2, table=100)
    b.route("add", "10.0.1.0/24", oif=2, table=100)     # same shape, other destination
    b.route("add", "10.0.2.0/24", oif=3, table=100)
    ms = decoded(b)
    assert [m["header"]["sequence_number"] for m in ms] == [1, 2, 3]
    assert [(m.get("RTA_DST"), m.get("RTA_OIF")) for m in ms] == [("10.0.0.0", 2), ("10.0.1.0", 2), ("10.0.2.0", 3)]


_v4 = st.integers(0, 2**32 - 1)
_hop = st.tuples(st.integers(1, 2**31 - 1), st.integers(0, 2**64 - 1), st.integers(1, 256))


@settings(max_examples=300, deadline=None)
@given(verb=st.sampled_from(["add", "replace", "append", "del"]), prefix=_v4, plen=st.integers(0, 32),
       table=st.integers(1, 2**32 - 1), metric=st.none() | st.integers(0, 2**32 - 1),
       hops=st.lists(_hop, min_size=0, max_size=8), ack=st.booleans())
def test_any_route_decodes_to_what_was_asked(verb, prefix, plen, table, metric, hops, ack) -> None:
    b = NetlinkBatch.unbound(ack_each=ack)
    dst = prefix.to_bytes(4, "big")
    via = [str(ipaddress.IPv6Address((0xFE80 << 112) | x)) for _, x, _ in hops]
    nhs = [Nexthop(oif, weight=w, via=v) for (oif, _, w), v in zip(hops, via)]
    if len(nhs) == 1:
        b.route(verb, dst, plen, oif=nhs[0].oif, via=nhs[0].via, table=table, metric=metric)
    else:
        b.route(verb, dst, plen, nexthops=nhs or None, table=table, metric=metric)
    m = one(b)
    check_header(m, verb, ack)
    assert (m["family"], m["dst_len"]) == (socket.AF_INET, plen)
    assert m["table"] == (table if table < 256 else 252) and m.get("RTA_TABLE") == table
    assert m.get("RTA_DST") == (socket.inet_ntoa(dst) if plen else None)
    assert m.get("RTA_PRIORITY") == metric
    if len(nhs) == 1:
        assert (m.get("RTA_OIF"), m.get("RTA_VIA")) == (nhs[0].oif, {"family": socket.AF_INET6, "addr": via[0]})
    else:
        got = [(nh["oif"], nh["hops"] + 1, nh.get("RTA_VIA")["addr"]) for nh in m.get("RTA_MULTIPATH") or ()]
        assert got == [(h.oif, h.weight, v) for h, v in zip(nhs, via)]


# ---------------------------------------------------------------- IPv6 GRC routes (nlroute.route6)
def test_ipv6_grc_route_single_hop_uses_an_inet6_gateway() -> None:
    from emu.addressing import grc

    net, plen = grc.prefix6_of(0x11B00000, 14)  # a level-1 region's IPv6 form: /110
    b = NetlinkBatch.unbound()
    nlroute.route6(b, "replace", net, plen, [nlroute.Hop(12, "fe80::1:2")], table=1002, metric=1)
    m = one(b)
    check_header(m, "replace")
    assert (m["family"], m["dst_len"], m["table"], m.get("RTA_TABLE")) == (socket.AF_INET6, 110, 252, 1002)
    assert (m["scope"], m["type"], m["proto"]) == (0, 1, 4)
    assert (m.get("RTA_DST"), m.get("RTA_OIF"), m.get("RTA_GATEWAY"), m.get("RTA_PRIORITY")) == (
        "fd00:6772:6300::11b0:0", 12, "fe80::1:2", 1)
    assert m.get("RTA_VIA") is None and m.get("RTA_MULTIPATH") is None


def test_ipv6_grc_multipath_local_unreachable_and_delete() -> None:
    b = NetlinkBatch.unbound()
    base = 0xFD00_6772_6300 << 80
    hops = [nlroute.Hop(2, "fe80::a", 3), nlroute.Hop(3, "fe80::b", 999)]
    nlroute.route6(b, "replace", base | 0x11000000, 107, hops, table=1000, metric=2)
    nlroute.route6(b, "replace", base | 0x11000008, 125, table=1000, metric=1, rtype=nlroute.RTN_LOCAL, oif=1)
    nlroute.route6(b, "replace", base | 0x11000010, 125, table=1000, metric=1, rtype=nlroute.RTN_UNREACHABLE)
    nlroute.route6(b, "del", base | 0x11000018, 125, table=1000, metric=1, rtype=nlroute.RTN_LOCAL)
    mp, local, unreach, dele = decoded(b)
    assert (mp["family"], mp["dst_len"], mp.get("RTA_OIF"), mp.get("RTA_PRIORITY")) == (socket.AF_INET6, 107, None, 2)
    got = [(nh["oif"], nh["hops"], nh.get("RTA_GATEWAY"), nh.get("RTA_VIA")) for nh in mp.get("RTA_MULTIPATH")]
    assert got == [(2, 2, "fe80::a", None), (3, 255, "fe80::b", None)]  # weight clamped to 256
    assert (local["type"], local["scope"], local.get("RTA_OIF"), local.get("RTA_DST")) == (
        2, 254, 1, "fd00:6772:6300::1100:8")
    assert (unreach["type"], unreach.get("RTA_OIF"), unreach.get("RTA_GATEWAY"), unreach["dst_len"]) == (7, None, None, 125)
    check_header(dele, "del")
    assert (dele["family"], dele["type"], dele["scope"], dele.get("RTA_DST"), dele.get("RTA_TABLE")) == (
        socket.AF_INET6, 2, 255, "fd00:6772:6300::1100:18", 1000)


@settings(max_examples=300, deadline=None)
@given(verb=st.sampled_from(["add", "replace", "del"]), net=st.integers(0, 2**32 - 1),
       plen=st.sampled_from([11, 14, 17, 20, 23, 26, 29, 32]), table=st.integers(1, 2**32 - 1),
       metric=st.integers(1, 2), hops=st.lists(_hop, min_size=1, max_size=6), ack=st.booleans())
def test_any_ipv6_grc_route_decodes_to_its_ipv4_twin(verb, net, plen, table, metric, hops, ack) -> None:
    """route6 of the IPv6 form of a GRC prefix carries what route4 carries for the IPv4 form: table, metric and
    every hop (IPv6 gateway instead of RTA_VIA), the destination under the /96, length + 96."""
    from emu.addressing import grc

    net &= (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    gw = [str(ipaddress.IPv6Address((0xFE80 << 112) | x)) for _, x, _ in hops]
    hs = [nlroute.Hop(oif, g, w) for (oif, _, w), g in zip(hops, gw)]
    b4, b6 = NetlinkBatch.unbound(ack_each=ack), NetlinkBatch.unbound(ack_each=ack)
    nlroute.route4(b4, verb, net, plen, hs, table=table, metric=metric)
    p6, l6 = grc.prefix6_of(net, plen, grc.DEFAULT_GRC_IPV6_PREFIX)
    nlroute.route6(b6, verb, p6, l6, hs, table=table, metric=metric)
    m4, m6 = one(b4), one(b6)
    check_header(m6, verb, ack)
    assert (m6["family"], m6["dst_len"], m6.get("RTA_DST")) == (socket.AF_INET6, plen + 96, grc.to_ipv6(net))
    for f in ("table", "type", "scope", "proto"):
        assert m6[f] == m4[f], f
    assert (m6.get("RTA_TABLE"), m6.get("RTA_PRIORITY"), m6.get("RTA_OIF")) == (
        m4.get("RTA_TABLE"), m4.get("RTA_PRIORITY"), m4.get("RTA_OIF"))
    if verb == "del":
        return
    if len(hs) == 1:
        assert m6.get("RTA_GATEWAY") == m4.get("RTA_VIA")["addr"] == gw[0]
    else:
        h4 = [(nh["oif"], nh["hops"], nh.get("RTA_VIA")["addr"]) for nh in m4.get("RTA_MULTIPATH")]
        h6 = [(nh["oif"], nh["hops"], nh.get("RTA_GATEWAY")) for nh in m6.get("RTA_MULTIPATH")]
        assert h6 == h4


# ---------------------------------------------------------------- the pyroute2-encoded requests

# ---------------------------------------------------------------- our link and address encoders (bulk build)
_ifname = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=15)
_mac = st.none() | st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@settings(max_examples=300, deadline=None)
@given(name=_ifname, peer=_ifname, fd=st.none() | st.integers(0, 2**31 - 1), index=st.integers(0, 2**31 - 1),
       peer_index=st.integers(0, 2**31 - 1), mac=_mac, peer_mac=_mac, mtu=st.none() | st.integers(68, 65535),
       group=st.none() | st.integers(0, 2**32 - 1), ack=st.booleans())
def test_any_veth_decodes_to_what_was_asked_and_matches_pyroute2(name, peer, fd, index, peer_index, mac, peer_mac,
                                                                  mtu, group, ack) -> None:
    b = NetlinkBatch.unbound(ack_each=ack)
    b.veth(name, peer, fd, index=index, peer_index=peer_index, mac=mac, peer_mac=peer_mac, mtu=mtu, group=group)
    (data,) = b.messages()
    assert data[16:] == nlmsg.veth_body(name, peer, fd, index, peer_index, mac, peer_mac, mtu, group)
    m = one(b, ifinfmsg)
    assert m["header"]["type"] == 16 and m["header"]["flags"] == (
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | (NLM_F_ACK if ack else 0))
    assert (m["family"], m["index"], m["flags"], m["change"]) == (0, index, 0, 0)
    assert (m.get("IFLA_IFNAME"), m.get("IFLA_ADDRESS"), m.get("IFLA_MTU"), m.get("IFLA_GROUP")) == (
        name, mac, mtu, group)
    assert m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
    p = m.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA").get("VETH_INFO_PEER")
    assert (p["index"], p.get("IFLA_IFNAME"), p.get("IFLA_ADDRESS"), p.get("IFLA_MTU"), p.get("IFLA_GROUP"),
            p.get("IFLA_NET_NS_FD")) == (peer_index, peer, peer_mac, mtu, group, fd)


@settings(max_examples=300, deadline=None)
@given(six=st.booleans(), raw=st.integers(0, 2**128 - 1), plen=st.integers(0, 128), index=st.integers(1, 2**31 - 1),
       scope=st.sampled_from([0, 200, 253, 254]), nodad=st.booleans(), verb=st.sampled_from(["add", "replace", "del"]),
       packed=st.booleans(), praw=st.none() | st.integers(0, 2**128 - 1))
def test_any_address_decodes_to_what_was_asked_and_matches_pyroute2(six, raw, plen, index, scope, nodad, verb,
                                                                    packed, praw) -> None:
    addr = str(ipaddress.IPv6Address(raw)) if six else str(ipaddress.IPv4Address(raw >> 96))
    peer = None if praw is None else str(ipaddress.IPv6Address(praw)) if six else str(ipaddress.IPv4Address(praw >> 96))
    plen = plen if six else plen % 33
    b = NetlinkBatch.unbound()
    b.addr(verb, index, socket.inet_pton(socket.AF_INET6 if six else socket.AF_INET, addr) if packed else addr, plen,
           scope=scope, nodad=nodad, peer=peer)
    (data,) = b.messages()
    assert data[16:] == nlmsg.addr_body(addr, plen, index, scope, nodad, peer)
    a = one(b, ifaddrmsg)
    assert a["header"]["type"] == (21 if verb == "del" else 20)
    assert a["header"]["flags"] == FLAGS[verb] | NLM_F_REQUEST | NLM_F_ACK
    fl = (2 if six and nodad else 0) | (0x200 if peer and six else 0)   # IFA_F_NODAD, IFA_F_NOPREFIXROUTE (IPv6)
    assert (a["family"], a["prefixlen"], a["flags"], a["scope"], a["index"]) == (
        socket.AF_INET6 if six else socket.AF_INET, plen, fl & 0xFF, scope, index)
    ip = ipaddress.ip_address
    assert (ip(a.get("IFA_LOCAL")), ip(a.get("IFA_ADDRESS")), a.get("IFA_FLAGS")) == (
        ip(addr), ip(peer or addr), fl or None)


# ---------------------------------------------------------------- pyroute2-encoded requests, link/address basics
def test_pyroute2_encoded_link_address_rule_neighbour_requests() -> None:
    b = NetlinkBatch.unbound()
    b.veth("e", "w", 9, index=2, peer_index=4, mac="02:00:00:00:00:01", peer_mac="02:00:00:00:00:02", mtu=9000,
           group=12)
    b.link_set(2, up=True)
    b.link_del_group(12)
    veth, up, delg = decoded(b, ifinfmsg)
    assert (veth["index"], veth.get("IFLA_IFNAME"), veth.get("IFLA_MTU"), veth.get("IFLA_GROUP")) == (2, "e", 9000, 12)
    assert veth.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "veth"
    assert (up["index"], up["flags"] & 1, up["change"] & 1) == (2, 1, 1)
    assert (delg["index"], delg.get("IFLA_GROUP"), delg["header"]["type"]) == (0, 12, 17)
    b = NetlinkBatch.unbound()
    b.addr("add", 3, "fe80::1", 64)
    a = one(b, ifaddrmsg)
    assert (a["family"], a["prefixlen"], a["index"], a.get("IFA_LOCAL"), a.get("IFA_FLAGS")) == (
        socket.AF_INET6, 64, 3, "fe80::1", 2)   # IFA_F_NODAD
    b = NetlinkBatch.unbound()
    b.rule("add", table=1001, priority=100)
    r = one(b, fibmsg)
    assert (r["table"], r["action"], r.get("FRA_TABLE"), r.get("FRA_PRIORITY")) == (252, 1, 1001, 100)
    b = NetlinkBatch.unbound()
    nlroute.neigh(b, "add", 60, "192.168.0.2", "02:00:00:00:00:05")
    nlroute.fdb(b, "replace", 60, "02:00:00:00:00:05", "10.3.3.3")
    n, f = decoded(b, ndmsg)
    assert (n["family"], n["ifindex"], n["state"], n.get("NDA_DST"), n.get("NDA_LLADDR")) == (
        socket.AF_INET, 60, 0x80, "192.168.0.2", "02:00:00:00:00:05")
    assert (f["family"], f["flags"], f.get("NDA_LLADDR")) == (socket.AF_BRIDGE, 2, "02:00:00:00:00:05")


def test_pyroute2_encoded_qdiscs_and_encap_route() -> None:
    b = NetlinkBatch.unbound()
    tc.tbf(b, 2, 100_000_000)
    tc.netem(b, 3, 1500, parent=tc.handle(1, 1), qdisc_handle=tc.handle(10))
    t, n = decoded(b, tcmsg)
    parms = t.get_nested("TCA_OPTIONS", "TCA_TBF_PARMS")
    assert (t["index"], t.get("TCA_KIND"), parms["rate"], t["parent"]) == (2, "tbf", 12_500_000, 0xFFFFFFFF)
    assert parms["limit"] == 12_500_000 // 20 + tc.default_burst(100_000_000)   # 50 ms of queue + burst
    assert (n["index"], n.get("TCA_KIND"), n["handle"], n["parent"]) == (3, "netem", 10 << 16, (1 << 16) | 1)
    b = NetlinkBatch.unbound()
    nlroute.route4_encap(b, "replace", "12.0.0.0/8", 60, "10.1.1.1", "10.2.2.2")
    e = one(b)
    assert (e.get("RTA_DST"), e["dst_len"], e.get("RTA_OIF"), e.get("RTA_ENCAP_TYPE")) == ("12.0.0.0", 8, 60, 2)
    enc = e.get("RTA_ENCAP")
    assert (enc.get("LWTUNNEL_IP_DST"), enc.get("LWTUNNEL_IP_SRC"), enc.get("LWTUNNEL_IP_TTL")) == (
        "10.1.1.1", "10.2.2.2", 64)


def _table_items(routes) -> list[tuple]:
    """Drawn (prefix, plen, metric, type, hops) as a table refill's items: prefix masked to its length,
    hops as link-local next hops, none unless unicast."""
    items = []
    for prefix, plen, metric, rtype, hops in routes:
        hs = tuple(nlroute.Hop(oif, str(ipaddress.IPv6Address((0xFE80 << 112) | x)), w) for oif, x, w in hops)
        items.append((prefix & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF, plen, metric, rtype,
                      () if rtype != nlroute.RTN_UNICAST else hs))
    return items


@settings(max_examples=200, deadline=None)
@given(verb=st.sampled_from(["replace", "del", "add"]), table=st.integers(1, 2**32 - 1),
       routes=st.lists(st.tuples(_v4, st.integers(0, 32), st.none() | st.integers(0, 2**32 - 1),
                                 st.sampled_from([nlroute.RTN_UNICAST, nlroute.RTN_LOCAL, nlroute.RTN_UNREACHABLE]),
                                 st.lists(_hop, min_size=0, max_size=4)), min_size=1, max_size=12))
def test_bulk_table_routes_are_the_same_messages_as_one_by_one(verb, table, routes) -> None:
    """The refill path (nlroute.route4_many) writes byte for byte what nlroute.route4 writes per route."""
    items = _table_items(routes)
    one_by_one, bulk = NetlinkBatch.unbound(ack_each=False), NetlinkBatch.unbound(ack_each=False)
    for prefix, plen, metric, rtype, hops in items:
        nlroute.route4(one_by_one, verb, prefix, plen, hops, table=table, metric=metric, rtype=rtype,
                       oif=1 if rtype == nlroute.RTN_LOCAL else None)
    nlroute.route4_many(bulk, verb, table, items, local_oif=1)
    assert bulk.messages() == one_by_one.messages()
    for m, (prefix, plen, metric, _rt, _h) in zip(decoded(bulk), items):
        assert (m["dst_len"], m.get("RTA_TABLE"), m.get("RTA_PRIORITY")) == (plen, table, metric)
        assert m.get("RTA_DST") == (socket.inet_ntoa(prefix.to_bytes(4, "big")) if plen else None)


@settings(max_examples=200, deadline=None)
@given(verb=st.sampled_from(["replace", "del", "add"]), table=st.integers(1, 2**32 - 1),
       base=st.sampled_from(["fd00:6772:6300::/96", "2001:db8:1:2:3:4::/96"]),
       routes=st.lists(st.tuples(_v4, st.sampled_from([11, 14, 17, 20, 23, 26, 29, 32, 0]),
                                 st.none() | st.integers(0, 2**32 - 1),
                                 st.sampled_from([nlroute.RTN_UNICAST, nlroute.RTN_LOCAL, nlroute.RTN_UNREACHABLE]),
                                 st.lists(_hop, min_size=0, max_size=4)), min_size=1, max_size=12))
def test_bulk_ipv6_twins_are_the_same_messages_as_route6_one_by_one(verb, table, base, routes) -> None:
    """The IPv6 refill path (nlroute.route6_many) writes byte for byte what nlroute.route6 writes for each
    route's IPv6 form (grc.prefix6_of), and pyroute2's parser reads back the /96 + GRC destination, length + 96,
    table, metric, type and every next hop as RTA_GATEWAY."""
    from emu.addressing import grc

    base6 = grc.ipv6_base(base)
    items = _table_items(routes)
    one_by_one, bulk = NetlinkBatch.unbound(ack_each=False), NetlinkBatch.unbound(ack_each=False)
    for prefix, plen, metric, rtype, hops in items:
        p6, l6 = grc.prefix6_of(prefix, plen, base)
        nlroute.route6(one_by_one, verb, p6, l6, hops, table=table, metric=metric, rtype=rtype,
                       oif=1 if rtype == nlroute.RTN_LOCAL else None)
    nlroute.route6_many(bulk, verb, table, items, base6, local_oif=1)
    assert bulk.messages() == one_by_one.messages()
    for m, (prefix, plen, metric, rtype, hops) in zip(decoded(bulk), items):
        assert (m["family"], m["dst_len"], m.get("RTA_TABLE"), m.get("RTA_PRIORITY")) == (
            socket.AF_INET6, plen + 96, table, metric)
        assert m.get("RTA_DST") == str(ipaddress.IPv6Address(base6 | prefix))
        assert m["type"] == (0 if verb == "del" and rtype == nlroute.RTN_UNICAST else rtype)
        if verb == "del":
            continue
        if rtype == nlroute.RTN_LOCAL:
            assert m.get("RTA_OIF") == 1
        elif len(hops) == 1:
            assert (m.get("RTA_OIF"), m.get("RTA_GATEWAY"), m.get("RTA_VIA")) == (hops[0].oif, hops[0].via6, None)
        elif len(hops) > 1:
            got = [(nh["oif"], nh["hops"] + 1, nh.get("RTA_GATEWAY")) for nh in m.get("RTA_MULTIPATH")]
            assert got == [(h.oif, max(1, min(256, h.weight)), h.via6) for h in hops]


@given(verb=st.sampled_from(["add", "del"]), twins=st.lists(st.tuples(_v4, st.integers(1, 40)), min_size=1,
                                                               max_size=12))
def test_bulk_ipv6_routes_with_an_interface_each_are_one_call_per_interface(verb, twins) -> None:
    """``oifs`` (the bound GRCs' local /128 twins, each on its own interface): the same messages, in the same
    order, as one route6_many call per route with that interface as ``local_oif``."""
    base6 = 0xFD00_6772_6300 << 80
    one, bulk = NetlinkBatch.unbound(ack_each=False), NetlinkBatch.unbound(ack_each=False)
    routes = [(a, 32, None, nlroute.RTN_LOCAL, ()) for a, _oif in twins]
    for r, (_a, oif) in zip(routes, twins):
        nlroute.route6_many(one, verb, 255, [r], base6, oif)
    nlroute.route6_many(bulk, verb, 255, routes, base6, oifs=[oif for _a, oif in twins])
    assert bulk.messages() == one.messages()
    if verb == "add":  # a delete names the route by its destination alone
        assert [m.get("RTA_OIF") for m in decoded(bulk)] == [oif for _a, oif in twins]


def test_a_bulk_ipv6_failure_names_the_ipv6_route() -> None:
    """A failed message of the IPv6 bulk path is reported by its IPv6 form, not its IPv4 key."""
    from emu.dataplane.netlink import _fmt

    b = NetlinkBatch.unbound(ack_each=False)
    nlroute.route6_many(b, "del", 1001, [(0x11B00000, 14, 1, nlroute.RTN_UNICAST, ())], 0xFD00_6772_6300 << 80)
    assert _fmt(b._ops[0][1]) == "fd00:6772:6300::11b0:0/110 table 1001 metric 1"
