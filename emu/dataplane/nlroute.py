"""The data plane's route, tunnel and neighbour requests, on top of :mod:`emu.dataplane.netlink`.

- IPv4 routes whose next hops are IPv6 link-local addresses (``RTA_VIA``,
  the kernel's RFC 5549 support): satellites forward GRC (IPv4) traffic to
  neighbours known only by their semantic link-local address, so no ARP and
  no per-link IPv4 addressing is needed. These go through the one route
  encoder, :meth:`NetlinkBatch.route` (the bulk per-slice path).
- ipip devices in collect-metadata mode and ``encap ip`` routes (a few per
  ground node), neighbour entries (permanent ARP) and VXLAN FDB entries
  (``bridge fdb``): encoded by pyroute2's ``ifinfmsg``, ``rtmsg`` and ``ndmsg``.

All functions only queue requests on a NetlinkBatch.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, nla
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ndmsg import NTF_NAMES, NUD_PERMANENT, ndmsg
from pyroute2.netlink.rtnl.rtmsg import LWTUNNEL_ENCAP_IP, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, rtmsg, rtmsg_base

from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.nexthops import NexthopTable, nh_attr
from emu.dataplane.nlmsg import (RT_TABLE_COMPAT, RTN_LOCAL, RTN_UNICAST, RTN_UNREACHABLE, RTPROT_STATIC, encode,
                                 kind_body, mac_text)
from emu.dataplane.rtpack import RTA_DST, Nexthop, clamp_weight, nexthop_attrs, route_shape

__all__ = ["Hop", "RTN_LOCAL", "RTN_UNICAST", "RTN_UNREACHABLE", "route4", "route4_many", "route6", "route6_many",
           "route4_default_via6",
           "ipip_external",
           "route4_encap", "neigh", "fdb"]

NTF_SELF = NTF_NAMES["NTF_SELF"]
_VERB = {"add": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE, "del": 0}


class Hop(NamedTuple):
    oif: int
    via6: str  # IPv6 (link-local) next hop
    weight: int = 1


def route4(batch: NetlinkBatch, verb: str, prefix: int, plen: int, hops: Sequence[Hop] = (), *, table: int,
           metric: int | None = None, rtype: int = RTN_UNICAST, oif: int | None = None) -> int:
    """An IPv4 route (``prefix`` as an int) in ``table``: unicast via IPv6 next hop(s), local, or unreachable.

    A delete names only destination, table and metric (and the type, so a
    local route is found); weights are clamped to the kernel's 1..256.
    """
    return _route(batch, verb, prefix.to_bytes(4, "big"), plen, hops, table, metric, rtype, oif)


def route6(batch: NetlinkBatch, verb: str, prefix: int, plen: int, hops: Sequence[Hop] = (), *, table: int,
           metric: int | None = None, rtype: int = RTN_UNICAST, oif: int | None = None) -> int:
    """The IPv6 twin of :func:`route4` (``prefix`` a 128-bit int): the same hops, as RTA_GATEWAY (link-local
    next hops of the route's own family), through the same bulk encoder. IPv6 keys a route by destination,
    table and metric too, so a delete names the same three."""
    return _route(batch, verb, prefix.to_bytes(16, "big"), plen, hops, table, metric, rtype, oif)


def _route(batch: NetlinkBatch, verb: str, dst: bytes, plen: int, hops: Sequence[Hop], table: int,
           metric: int | None, rtype: int, oif: int | None) -> int:
    """route4 / route6: the hops' IPv6 next hop is RTA_VIA for an IPv4 route (RFC 5549), RTA_GATEWAY for an
    IPv6 one."""
    nh = "via" if len(dst) == 4 else "gateway"
    if verb == "del":
        return batch.route("del", dst, plen, table=table, metric=metric, type=rtype)
    if rtype == RTN_LOCAL:
        return batch.route(verb, dst, plen, oif=oif, table=table, metric=metric, type=rtype)
    if len(hops) == 1:
        return batch.route(verb, dst, plen, oif=hops[0].oif, table=table, metric=metric, type=rtype,
                           **{nh: hops[0].via6})
    if len(hops) > 1:
        nhs = [Nexthop(h.oif, weight=clamp_weight(h.weight), **{nh: h.via6}) for h in hops]
        return batch.route(verb, dst, plen, nexthops=nhs, table=table, metric=metric, type=rtype)
    return batch.route(verb, dst, plen, table=table, metric=metric, type=rtype, scope=0)


_BASES: dict[tuple, tuple[bytes, bytes, int, int]] = {}   # shapes without next hops (few)
_HOPS: dict[tuple, bytes] = {}                             # (address length, hops) -> next-hop attributes
_DST4 = struct.Struct("=HHI")
_DST6_HEAD = struct.Struct("=HH")
_U32BE = struct.Struct(">I")


def _route4_text(prefix: int, plen: int, table: int, metric: int | None) -> str:
    return f"{socket.inet_ntoa(prefix.to_bytes(4, 'big'))}/{plen} table {table} metric {metric}"


def _route6_text(base6: int, prefix: int, plen: int, table: int, metric: int | None) -> str:
    return f"{socket.inet_ntop(socket.AF_INET6, (base6 | prefix).to_bytes(16, 'big'))}/{plen + 96} table {table} " \
           f"metric {metric}"


def _hop_attrs(dlen: int, hops: Sequence[Hop]) -> bytes:
    """The next-hop attributes of a unicast route through ``hops`` as :func:`route4` (``dlen`` 4: RTA_VIA)
    or :func:`route6` (``dlen`` 16: RTA_GATEWAY) ask them of the route encoder; cached per hop set (every
    satellite has its own link-local neighbours: ~36 sets each, ~57,000 per family on Starlink shell 1)."""
    key = (dlen, hops)
    out = _HOPS.get(key)
    if out is None:
        if len(_HOPS) > 500_000:
            _HOPS.clear()
        nh = "via" if dlen == 4 else "gateway"
        if len(hops) == 1:
            out = nexthop_attrs(hops[0].oif, None, None, None) + \
                nexthop_attrs(None, *((None, hops[0].via6) if dlen == 4 else (hops[0].via6, None)), None)
        else:
            out = nexthop_attrs(None, None, None, tuple(
                Nexthop(h.oif, weight=clamp_weight(h.weight), **{nh: h.via6}) for h in hops))
        _HOPS[key] = out
    return out


def _shape(verb: str, dlen: int, plen: int, metric: int | None, rtype: int, hops: Sequence[Hop], table: int,
           local_oif: int | None, nhid: int | None = None) -> tuple[bytes, bytes, int, int]:
    """Everything of a route message but RTA_DST, exactly as :func:`route4` (``dlen`` 4) or :func:`route6`
    (``dlen`` 16) asks it of the route encoder: the header and RTA_TABLE/RTA_PRIORITY from a few cached bases,
    then the hop set's attributes (:func:`_hop_attrs`), or, given ``nhid``, only the nexthop object's id
    (RTA_NH_ID: :mod:`emu.dataplane.nexthops`)."""
    unicast = verb != "del" and rtype == RTN_UNICAST and hops
    key = (verb, dlen, plen, metric, rtype if not unicast else -1, table, local_oif)
    base = _BASES.get(key)
    if base is None:
        if len(_BASES) > 50_000:
            _BASES.clear()
        if verb == "del":
            base = route_shape("del", dlen, plen, None, None, None, None, table, metric, None, rtype,
                               RTPROT_STATIC, False)
        elif rtype == RTN_LOCAL:
            base = route_shape(verb, dlen, plen, local_oif, None, None, None, table, metric, None, rtype,
                               RTPROT_STATIC, False)
        elif unicast:  # a gatewayed route: scope universe, as route_shape gives any route with next hops
            base = route_shape(verb, dlen, plen, None, None, None, None, table, metric, RT_SCOPE_UNIVERSE, rtype,
                               RTPROT_STATIC, False)
        else:
            base = route_shape(verb, dlen, plen, None, None, None, None, table, metric, 0, rtype, RTPROT_STATIC,
                               False)
        _BASES[key] = base
    if not unicast:
        return base
    head, tail, mtype, flags = base
    return head, tail + (_hop_attrs(dlen, hops) if nhid is None else nh_attr(nhid)), mtype, flags


def route4_many(batch: NetlinkBatch, verb: str, table: int,
                routes: Iterable[tuple[int, int, int | None, int, Sequence[Hop]]], local_oif: int | None = None,
                nexthops: NexthopTable | None = None) -> None:
    """Queue many IPv4 routes of one ``table`` -- (prefix, plen, metric, type, hops) each -- exactly as
    :func:`route4` would, one by one (the table refill of every slice: ~100k routes on Starlink shell 1).

    Messages of equal (verb, plen, metric, type, hops) share one encoded shape (cached for this call; its
    parts across calls, :func:`_shape`); per route only the nlmsghdr and RTA_DST are packed. A local route
    goes out by ``local_oif``. Given the namespace's ``nexthops``, a unicast route names its hop set's
    nexthop object instead of carrying the hops (objects it needs are queued first: :mod:`emu.dataplane.nexthops`).
    """
    shapes: dict[tuple, tuple[bytes, bytes, int, int]] = {}
    dst4, htonl, rta_dst = _DST4.pack, socket.htonl, RTA_DST
    msgs, details = [], []
    for prefix, plen, metric, rtype, hops in routes:
        key = (plen, metric, rtype, hops)
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = _shape(verb, 4, plen, metric, rtype, hops or (), table, local_oif,
                                         _nhid(nexthops, verb, rtype, hops, batch))
        head, tail, mtype, flags = shape
        msgs.append((mtype, flags, head + dst4(8, rta_dst, htonl(prefix)) + tail if plen else head + tail))
        details.append((_route4_text, prefix, plen, table, metric))
    batch.queue_bulk(msgs, f"route {verb}", details)


def _nhid(nexthops: NexthopTable | None, verb: str, rtype: int, hops: Sequence[Hop] | None,
          batch: NetlinkBatch) -> int | None:
    """The nexthop object a unicast route with ``hops`` names (None: the hops go in the route itself)."""
    if nexthops is None or verb == "del" or rtype != RTN_UNICAST or not hops:
        return None
    return nexthops.id_of(hops, batch)


def route6_many(batch: NetlinkBatch, verb: str, table: int,
                routes: Iterable[tuple[int, int, int | None, int, Sequence[Hop]]], base6: int,
                local_oif: int | None = None, nexthops: NexthopTable | None = None,
                oifs: Sequence[int] | None = None) -> None:
    """The IPv6 twins of :func:`route4_many`'s routes, in bulk: the same (prefix, plen, metric, type, hops) of
    an IPv4 GRC region, sent as its IPv6 form under the GRC /96 ``base6`` (:func:`emu.addressing.grc.ipv6_base`;
    the one rule is :func:`emu.addressing.grc.prefix6_of`: ``base6 | prefix``, length + 96), the hops as
    RTA_GATEWAY. Byte for byte what :func:`route6` writes for ``prefix6_of(prefix, plen, base6)``, one by one
    (``tests/unit/test_nl_encoder.py``); per route only the nlmsghdr and the last 4 bytes of RTA_DST are packed.
    ``nexthops``: as :func:`route4_many` (the same objects serve both families). ``oifs``: each route's own
    ``local_oif`` (the bound GRCs' twins, one per interface), as one call per interface would send them.
    """
    shapes: dict[tuple, tuple[bytes, bytes, int, int]] = {}
    u32 = _U32BE.pack
    dst_head = _DST6_HEAD.pack(20, RTA_DST) + (base6 >> 32).to_bytes(12, "big")
    msgs, details = [], []
    for i, (prefix, plen, metric, rtype, hops) in enumerate(routes):
        oif = local_oif if oifs is None else oifs[i]
        key = (plen, metric, rtype, hops, oif)
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = _shape(verb, 16, plen + 96, metric, rtype, hops or (), table, oif,
                                         _nhid(nexthops, verb, rtype, hops, batch))
        head, tail, mtype, flags = shape
        msgs.append((mtype, flags, head + dst_head + u32(prefix) + tail))
        details.append((_route6_text, base6, prefix, plen, table, metric))
    batch.queue_bulk(msgs, f"route {verb}", details)


def route4_default_via6(batch: NetlinkBatch, verb: str, dst: str, hop: Hop, table: int = 254,
                        metric: int | None = None) -> int:
    """A terrestrial-side IPv4 route (e.g. ``0.0.0.0/0``) via an IPv6 link-local next hop."""
    net, plen = dst.split("/")
    return route4(batch, verb, int.from_bytes(socket.inet_aton(net), "big"), int(plen), [hop], table=table,
                  metric=metric)


# ---------------------------------------------------------------- ipip + encap ip (pyroute2)
class _ip_encap_info(nla):
    """``RTA_ENCAP`` of LWTUNNEL_ENCAP_IP (linux/lwtunnel.h LWTUNNEL_IP_*): pyroute2 0.9.7 maps
    MPLS, SEG6 and BPF encaps only, so the IP one is registered with it here."""

    prefix = "LWTUNNEL_IP_"
    nla_map = (
        ("LWTUNNEL_IP_UNSPEC", "none"),
        ("LWTUNNEL_IP_ID", "be64"),
        ("LWTUNNEL_IP_DST", "ip4addr"),
        ("LWTUNNEL_IP_SRC", "ip4addr"),
        ("LWTUNNEL_IP_TTL", "uint8"),
        ("LWTUNNEL_IP_TOS", "uint8"),
        ("LWTUNNEL_IP_FLAGS", "be16"),
    )


rtmsg_base.encaps.setdefault(LWTUNNEL_ENCAP_IP, _ip_encap_info)


def ipip_external(batch: NetlinkBatch, name: str, index: int, mtu: int) -> int:
    """An ipip device in collect-metadata ("external") mode: it receives from any remote, and routes
    with an ``encap ip`` say where each packet goes (used on kernels that have ipip)."""
    body = kind_body(name, "ipip", [("IFLA_IPIP_COLLECT_METADATA", True)], index, None, mtu)
    return batch.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, "ipip add", name)


def route4_encap(batch: NetlinkBatch, verb: str, dst: str, oif: int, remote: str, local: str,
                 table: int = 254) -> int:
    """``ip route <verb> DST encap ip dst REMOTE src LOCAL ttl 64 dev OIF``: the tunnel target is in the route."""
    return batch.queue(RTM_NEWROUTE, _VERB[verb], encap_body(dst, oif, remote, local, table), f"route {verb} encap",
                       f"{dst} -> {remote}")


@functools.lru_cache(maxsize=65536)
def encap_body(dst: str, oif: int, remote: str, local: str, table: int) -> bytes:
    net, plen = dst.split("/")
    return encode(rtmsg, {"family": socket.AF_INET, "dst_len": int(plen),
                          "table": table if table < 256 else RT_TABLE_COMPAT, "proto": RTPROT_STATIC,
                          "scope": RT_SCOPE_LINK, "type": RTN_UNICAST},  # scope link: no gateway
                  [("RTA_DST", net), ("RTA_TABLE", table), ("RTA_OIF", oif), ("RTA_ENCAP_TYPE", LWTUNNEL_ENCAP_IP),
                   ("RTA_ENCAP", {"attrs": [("LWTUNNEL_IP_DST", remote), ("LWTUNNEL_IP_SRC", local),
                                            ("LWTUNNEL_IP_TTL", 64)]})])


# ---------------------------------------------------------------- neighbours (pyroute2 ndmsg)
# Memoised by arguments: every ground station of an operator holds the same entry for each of its
# user terminals (10k neighbour + 10k FDB entries for 100 GS x 100 UT, ~200 distinct bodies).
@functools.lru_cache(maxsize=65536)
def neigh_body(ifindex: int, dst: str, lladdr: str) -> bytes:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    return encode(ndmsg, {"family": fam, "ifindex": ifindex, "state": NUD_PERMANENT},
                  [("NDA_DST", dst), ("NDA_LLADDR", mac_text(lladdr))])


@functools.lru_cache(maxsize=65536)
def fdb_body(ifindex: int, lladdr: str, remote: str) -> bytes:
    return encode(ndmsg, {"family": socket.AF_BRIDGE, "ifindex": ifindex, "state": NUD_PERMANENT,
                          "flags": NTF_SELF},
                  [("NDA_LLADDR", mac_text(lladdr)), ("NDA_DST", remote)])


def neigh(batch: NetlinkBatch, verb: str, ifindex: int, dst: str, lladdr: str) -> int:
    """A permanent ARP/ND entry ``dst`` -> ``lladdr`` on ``ifindex``."""
    body = neigh_body(ifindex, dst, lladdr)
    mtype = RTM_DELNEIGH if verb == "del" else RTM_NEWNEIGH
    return batch.queue(mtype, _VERB[verb], body, f"neigh {verb}", f"{dst} dev {ifindex}")


def fdb(batch: NetlinkBatch, verb: str, ifindex: int, lladdr: str, remote: str) -> int:
    """A VXLAN forwarding entry: frames for ``lladdr`` go to ``remote`` (``bridge fdb replace ... dst``)."""
    body = fdb_body(ifindex, lladdr, remote)
    mtype = RTM_DELNEIGH if verb == "del" else RTM_NEWNEIGH
    return batch.queue(mtype, _VERB[verb], body, f"fdb {verb}", f"{lladdr} dst {remote} dev {ifindex}")
