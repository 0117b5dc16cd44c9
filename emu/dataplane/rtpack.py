"""Our own encoders for the measured hot paths: bulk routes, and the bulk links and addresses of a build.

spec: issue 8 -- the bulk per-slice route add/replace/append/del messages
are the measured hot path (``scripts/bench_netlink.py``: pyroute2's fastest
mode ~0.1-0.5 ms per route message, 100k routes in tens of seconds, against
~0.2-1 s here, budget 1.5 s), so they are packed with ``struct`` while that
stays true. The same holds for the ~3,400 veth pairs and ~22,000 addresses
of a Starlink shell 1 build (issue 16, docs/netlink.md: pyroute2 spends
60-300 us per message there, ~2 us here, and the build budget is 1.2x a bare
bulk-netlink build), so :func:`veth_body` and :func:`addr_body` are packed
here too, byte for byte what pyroute2 writes. Everything else goes through
pyroute2 (:mod:`emu.dataplane.nlmsg`). Attribute numbers come from
pyroute2's message classes; ``tests/unit/test_nl_encoder.py`` decodes every
kind of message written here with pyroute2's parser (and compares the link
and address bodies with pyroute2's own encoding, byte for byte).

A route message is split into a *shape* (rtmsg header and every attribute
but RTA_DST), cached by the caller per batch, and the destination: the hot
path in :meth:`emu.dataplane.netlink.NetlinkBatch.route` packs only the
nlmsghdr and RTA_DST per route.
"""

from __future__ import annotations

import errno as E
import socket
import struct
from typing import NamedTuple

from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, IFA_F_NOPREFIXROUTE, ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import (RT_SCOPE_HOST, RT_SCOPE_LINK, RT_SCOPE_NOWHERE, RT_SCOPE_UNIVERSE,
                                         RTNH_F_ONLINK, rtmsg)

from emu.dataplane.nlmsg import (ROUTE_TYPES, RT_TABLE_COMPAT, RTN_LOCAL, RTN_UNICAST, VERB_FLAGS, family_of,
                                 ip_bytes, nla_id)
from emu.errors import DataplaneError

RTM = struct.Struct("=BBBBBBBBI")       # rtmsg
RTA = struct.Struct("=HH")
_RTA_U32 = struct.Struct("=HHI")
_RTNH = struct.Struct("=HBBi")          # rtnexthop: len, flags, hops, ifindex
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE, RTA_VIA = (
    nla_id(rtmsg, f"RTA_{n}") for n in ("DST", "OIF", "GATEWAY", "PRIORITY", "MULTIPATH", "TABLE", "VIA"))


class Nexthop(NamedTuple):
    """One path of a route: ``oif`` and either an IPv4/IPv6 ``gateway`` of the
    route's own family or ``via`` (an IPv6 next hop of an IPv4 route: RTA_VIA,
    the kernel's RFC 5549 support). ``weight`` 1..256 becomes rtnh_hops = weight - 1."""

    oif: int
    gateway: str | bytes | None = None
    weight: int = 1
    onlink: bool = False
    via: str | bytes | None = None


def clamp_weight(w: int) -> int:
    """A plan weight in the kernel's range for a path's weight, 1..256 (a multipath route's rtnh_hops + 1, a
    nexthop group member's weight): the one clamp both route forms use."""
    return max(1, min(256, w))


def route_shape(verb: str, dlen: int, plen: int, oif: int | None, gateway: str | bytes | None,
                via: str | bytes | None, nexthops: tuple[Nexthop, ...] | None, table: int,
                metric: int | None, scope: int | None, rtype: str | int, protocol: int, onlink: bool
                ) -> tuple[bytes, bytes, int, int]:
    """Everything of a route message except the destination: (rtmsg, attributes
    after RTA_DST, message type, flags). Cached per batch: routes of one slice
    share a few dozen shapes, so the hot path packs only header and RTA_DST."""
    fam = socket.AF_INET if dlen == 4 else socket.AF_INET6
    delete = verb in ("del", "delete")
    rt = ROUTE_TYPES[rtype] if isinstance(rtype, str) else rtype
    if delete and rt == RTN_UNICAST:
        rt = 0                                    # matches any type
    if scope is None:
        if delete:
            scope = RT_SCOPE_NOWHERE
        elif rt == RTN_LOCAL:
            scope = RT_SCOPE_HOST
        elif rt == RTN_UNICAST and gateway is None and via is None and not nexthops:
            scope = RT_SCOPE_LINK
        else:
            scope = RT_SCOPE_UNIVERSE
    head = RTM.pack(fam, plen, 0, 0, table if table < 256 else RT_TABLE_COMPAT,
                     0 if delete else protocol, scope, rt, RTNH_F_ONLINK if onlink else 0)
    tail = _RTA_U32.pack(8, RTA_TABLE, table)
    if metric is not None:
        tail += _RTA_U32.pack(8, RTA_PRIORITY, metric)
    tail += nexthop_attrs(oif, gateway, via, nexthops)
    return head, tail, RTM_DELROUTE if delete else RTM_NEWROUTE, VERB_FLAGS[verb] | NLM_F_REQUEST


def nexthop_attrs(oif: int | None, gateway: str | bytes | None, via: str | bytes | None,
                  nexthops: tuple[Nexthop, ...] | None) -> bytes:
    """The attributes that say where a route goes, in this order: RTA_OIF, RTA_GATEWAY, RTA_VIA,
    RTA_MULTIPATH -- the last part of every route message :func:`route_shape` writes (the bulk table path
    caches it per next-hop set: :func:`emu.dataplane.nlroute.route4_many`)."""
    out = b""
    if oif is not None:
        out += _RTA_U32.pack(8, RTA_OIF, oif)
    if gateway is not None:
        out += _attr(RTA_GATEWAY, ip_bytes(gateway))
    if via is not None:
        out += _via(via)
    if nexthops:
        out += _attr(RTA_MULTIPATH, b"".join(_rtnh(nh) for nh in nexthops))
    return out


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return RTA.pack(n, kind) + payload + b"\0" * (-n & 3)


def _via(addr: str | bytes) -> bytes:
    a = ip_bytes(addr)
    return _attr(RTA_VIA, struct.pack("=H", family_of(a)) + a)


def _rtnh(nh: Nexthop) -> bytes:
    if not 1 <= nh.weight <= 256:
        raise DataplaneError("route nexthop", None, E.EINVAL, f"weight {nh.weight} not in 1..256")
    gw = _attr(RTA_GATEWAY, ip_bytes(nh.gateway)) if nh.gateway is not None else b""
    if nh.via is not None:
        gw += _via(nh.via)
    return _RTNH.pack(8 + len(gw), RTNH_F_ONLINK if nh.onlink else 0, nh.weight - 1, nh.oif) + gw


# ============================================================================ links and addresses (bulk build)
IFI = struct.Struct("=BxHiII")          # ifinfomsg: family, type, index, flags, change
IFA = struct.Struct("=BBBBi")           # ifaddrmsg: family, prefixlen, flags, scope, index
_U32 = struct.Struct("=I")
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_GROUP, IFLA_NET_NS_FD = (
    nla_id(ifinfmsg, n) for n in ("IFLA_ADDRESS", "IFLA_IFNAME", "IFLA_MTU", "IFLA_LINKINFO", "IFLA_GROUP",
                                  "IFLA_NET_NS_FD"))
IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = (nla_id(ifinfmsg, n) for n in ("IFLA_NUM_TX_QUEUES", "IFLA_NUM_RX_QUEUES"))
IFLA_INFO_KIND, IFLA_INFO_DATA = (nla_id(ifinfmsg.ifinfo, n) for n in ("IFLA_INFO_KIND", "IFLA_INFO_DATA"))
VETH_INFO_PEER = 1                      # linux/veth.h (pyroute2's veth_data nla_map)
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = (nla_id(ifaddrmsg, n) for n in ("IFA_ADDRESS", "IFA_LOCAL", "IFA_FLAGS"))
_VETH_KIND = _attr(IFLA_INFO_KIND, b"veth\0")
# One TX and one RX queue, asked for at creation (``ip link add ... numtxqueues 1 numrxqueues 1``): a veth uses
# one of each anyway, but one made with the default (a queue per CPU) is cut down to one right after it is
# registered, and that waits for an expedited RCU grace period under the rtnl lock (netif_set_real_num_tx_queues
# -> synchronize_net), twice per pair: most of a veth's creation time on a 2-CPU machine (perf, sched_switch).
VETH_QUEUES = _RTA_U32.pack(8, IFLA_NUM_TX_QUEUES, 1) + _RTA_U32.pack(8, IFLA_NUM_RX_QUEUES, 1)


def _mac_bytes(mac: str | bytes) -> bytes:
    return mac if isinstance(mac, bytes) else bytes.fromhex(mac.replace(":", "").replace("-", ""))


def _link_attrs(name: str, mac, mtu: int | None, group: int | None) -> bytes:
    out = _attr(IFLA_IFNAME, name.encode() + b"\0")
    if mac:
        out += _attr(IFLA_ADDRESS, _mac_bytes(mac))
    if mtu is not None:
        out += _RTA_U32.pack(8, IFLA_MTU, mtu)
    if group is not None:
        out += _RTA_U32.pack(8, IFLA_GROUP, group)
    return out


def veth_body(name: str, peer_name: str, peer_netns_fd: int | None, index: int, peer_index: int,
              mac: str | bytes | None, peer_mac: str | bytes | None, mtu: int | None, group: int | None) -> bytes:
    """The RTM_NEWLINK body creating a veth pair (the same bytes as :func:`emu.dataplane.nlmsg.veth_body`)."""
    peer = IFI.pack(0, 0, peer_index, 0, 0) + _link_attrs(peer_name, peer_mac, mtu, group) + VETH_QUEUES
    if peer_netns_fd is not None:
        peer += peer_fd_attr(peer_netns_fd)  # the last attribute of the request (peer_fd_of)
    info = _VETH_KIND + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
    return IFI.pack(0, 0, index, 0, 0) + _link_attrs(name, mac, mtu, group) + VETH_QUEUES + _attr(IFLA_LINKINFO, info)


def peer_fd_attr(fd: int) -> bytes:
    """A veth request's IFLA_NET_NS_FD (its peer's namespace), the last 8 bytes of :func:`veth_body`."""
    return _RTA_U32.pack(8, IFLA_NET_NS_FD, fd)


def peer_fd_of(msg: bytes) -> int:
    """The peer namespace fd a veth request (:func:`veth_body`, with its netlink header) names."""
    size, kind, fd = _RTA_U32.unpack_from(msg, len(msg) - 8)
    if (size, kind) != (8, IFLA_NET_NS_FD):
        raise ValueError("not a veth request naming its peer's namespace")
    return fd


def addr_body(address: str | bytes, plen: int, index: int, scope: int = 0, nodad: bool = True,
              peer: str | bytes | None = None) -> bytes:
    """The RTM_NEWADDR/RTM_DELADDR body of one address (the same bytes as :func:`emu.dataplane.nlmsg.addr_body`):
    IFA_LOCAL and IFA_ADDRESS (``peer``, else the address itself), and IFA_F_NODAD for IPv6 unless ``nodad`` is
    False. With an IPv6 ``peer`` (a point-to-point address, ``ip addr add A peer P noprefixroute``) the kernel
    routes the peer's /128 through the interface by itself and adds no prefix route of the address's own. (An
    IPv4 peer's route *is* the prefix route: no IFA_F_NOPREFIXROUTE there.)"""
    a = ip_bytes(address)
    p = a if peer is None else ip_bytes(peer)
    six = len(a) == 16
    fl = (IFA_F_NODAD if nodad and six else 0) | (IFA_F_NOPREFIXROUTE if peer is not None and six else 0)
    body = IFA.pack(socket.AF_INET6 if six else socket.AF_INET, plen, fl & 0xFF, scope, index) + \
        RTA.pack(4 + len(a), IFA_LOCAL) + a + RTA.pack(4 + len(p), IFA_ADDRESS) + p
    return body + _RTA_U32.pack(8, IFA_FLAGS, fl) if fl else body
