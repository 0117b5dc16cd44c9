"""Netlink messages the data plane needs beyond :mod:`emu.dataplane.netlink`'s builders.

- IPv4 routes whose next hops are IPv6 link-local addresses (``RTA_VIA``,
  the kernel's RFC 5549 support): satellites forward GRC (IPv4) traffic to
  neighbours known only by their semantic link-local address, so no ARP and
  no per-link IPv4 addressing is needed.
- Neighbour entries: permanent ARP entries and VXLAN FDB entries (``bridge
  fdb``) used by the user-terminal tunnels.

All functions only pack bytes and queue them on a NetlinkBatch.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import NamedTuple

from emu.dataplane.netlink import (NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, RT_TABLE_COMPAT, RTA_MULTIPATH,
                                   RTA_OIF, RTA_PRIORITY, RTA_TABLE, RTM_DELROUTE, RTM_NEWROUTE, RTPROT_STATIC,
                                   NetlinkBatch, attr, ip_bytes, mac_bytes, u32_attr)

RTA_DST, RTA_VIA = 1, 18
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7
RTN_UNICAST, RTN_LOCAL, RTN_UNREACHABLE = 1, 2, 7
RT_SCOPE_UNIVERSE, RT_SCOPE_HOST = 0, 254

_RTM = struct.Struct("=BBBBBBBBI")
_RTNH = struct.Struct("=HBBi")
_NDM = struct.Struct("=BxxxiHBB")
_VERB = {"add": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE, "del": 0}


class Hop(NamedTuple):
    oif: int
    via6: str  # IPv6 (link-local) next hop
    weight: int = 1


def _via(addr: str) -> bytes:
    return attr(RTA_VIA, struct.pack("=H", socket.AF_INET6) + ip_bytes(addr))


def route4(batch: NetlinkBatch, verb: str, prefix: int, plen: int, hops: Sequence[Hop] = (), *, table: int,
           metric: int | None = None, rtype: int = RTN_UNICAST, oif: int | None = None) -> int:
    """An IPv4 route (``prefix`` as an int) in ``table``: unicast via IPv6 next hop(s), local, or unreachable."""
    delete = verb == "del"
    scope = RT_SCOPE_HOST if rtype == RTN_LOCAL else RT_SCOPE_UNIVERSE
    head = _RTM.pack(socket.AF_INET, plen, 0, 0, table if table < 256 else RT_TABLE_COMPAT,
                     0 if delete else RTPROT_STATIC, scope, rtype, 0)
    body = head + attr(RTA_DST, prefix.to_bytes(4, "big")) + u32_attr(RTA_TABLE, table)
    if metric is not None:
        body += u32_attr(RTA_PRIORITY, metric)
    if not delete:
        if rtype == RTN_LOCAL and oif is not None:
            body += u32_attr(RTA_OIF, oif)
        elif len(hops) == 1:
            body += u32_attr(RTA_OIF, hops[0].oif) + _via(hops[0].via6)
        elif len(hops) > 1:
            mp = b""
            for h in hops:
                v = _via(h.via6)
                mp += _RTNH.pack(8 + len(v), 0, max(1, min(256, h.weight)) - 1, h.oif) + v
            body += attr(RTA_MULTIPATH, mp)
    mtype = RTM_DELROUTE if delete else RTM_NEWROUTE
    return batch.queue(mtype, _VERB[verb], body, f"route {verb}", f"{_dotted(prefix)}/{plen} table {table}")


def route4_default_via6(batch: NetlinkBatch, verb: str, dst: str, hop: Hop, table: int = 254,
                        metric: int | None = None) -> int:
    """A terrestrial-side IPv4 route (e.g. ``0.0.0.0/0``) via an IPv6 link-local next hop."""
    net, plen = dst.split("/")
    return route4(batch, verb, int.from_bytes(socket.inet_aton(net), "big"), int(plen), [hop], table=table,
                  metric=metric)


RTA_ENCAP_TYPE, RTA_ENCAP = 21, 22
LWTUNNEL_ENCAP_IP = 2
LWTUNNEL_IP_DST, LWTUNNEL_IP_SRC, LWTUNNEL_IP_TTL = 2, 3, 4
IFLA_LINKINFO, IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_IFNAME, IFLA_MTU = 18, 1, 2, 3, 4
IFLA_IPTUN_COLLECT_METADATA = 19
RTM_NEWLINK = 16
_IFI = struct.Struct("=BxHiII")


def ipip_external(batch: NetlinkBatch, name: str, index: int, mtu: int) -> int:
    """An ipip device in collect-metadata ("external") mode: it receives from any remote, and routes
    with an ``encap ip`` say where each packet goes (used on kernels that have ipip)."""
    data = attr(IFLA_IPTUN_COLLECT_METADATA, b"")
    info = attr(IFLA_INFO_KIND, b"ipip") + attr(IFLA_INFO_DATA, data)
    body = _IFI.pack(0, 0, index, 0, 0) + attr(IFLA_IFNAME, name.encode() + b"\0") + u32_attr(IFLA_MTU, mtu) \
        + attr(IFLA_LINKINFO, info)
    return batch.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, "ipip add", name)


def route4_encap(batch: NetlinkBatch, verb: str, dst: str, oif: int, remote: str, local: str,
                 table: int = 254) -> int:
    """``ip route <verb> DST encap ip dst REMOTE src LOCAL ttl 64 dev OIF``: the tunnel target is in the route."""
    net, plen = dst.split("/")
    head = _RTM.pack(socket.AF_INET, int(plen), 0, 0, table if table < 256 else RT_TABLE_COMPAT,
                     RTPROT_STATIC, 253, RTN_UNICAST, 0)  # scope link: no gateway
    enc = attr(LWTUNNEL_IP_DST, ip_bytes(remote)) + attr(LWTUNNEL_IP_SRC, ip_bytes(local)) \
        + attr(LWTUNNEL_IP_TTL, bytes([64]))
    body = head + attr(RTA_DST, ip_bytes(net)) + u32_attr(RTA_TABLE, table) + u32_attr(RTA_OIF, oif) \
        + attr(RTA_ENCAP_TYPE, struct.pack("=H", LWTUNNEL_ENCAP_IP)) + attr(RTA_ENCAP | 0x8000, enc)
    return batch.queue(RTM_NEWROUTE, _VERB[verb], body, f"route {verb} encap", f"{dst} -> {remote}")


def neigh(batch: NetlinkBatch, verb: str, ifindex: int, dst: str, lladdr: str) -> int:
    """A permanent ARP/ND entry ``dst`` -> ``lladdr`` on ``ifindex``."""
    a = ip_bytes(dst)
    fam = socket.AF_INET if len(a) == 4 else socket.AF_INET6
    body = _NDM.pack(fam, ifindex, NUD_PERMANENT, 0, 0) + attr(NDA_DST, a) + attr(NDA_LLADDR, mac_bytes(lladdr))
    mtype = RTM_DELNEIGH if verb == "del" else RTM_NEWNEIGH
    return batch.queue(mtype, _VERB[verb], body, f"neigh {verb}", f"{dst} dev {ifindex}")


def fdb(batch: NetlinkBatch, verb: str, ifindex: int, lladdr: str, remote: str) -> int:
    """A VXLAN forwarding entry: frames for ``lladdr`` go to ``remote`` (``bridge fdb replace ... dst``)."""
    body = _NDM.pack(AF_BRIDGE, ifindex, NUD_PERMANENT, NTF_SELF, 0) + attr(NDA_LLADDR, mac_bytes(lladdr)) \
        + attr(NDA_DST, ip_bytes(remote))
    mtype = RTM_DELNEIGH if verb == "del" else RTM_NEWNEIGH
    return batch.queue(mtype, _VERB[verb], body, f"fdb {verb}", f"{lladdr} dst {remote} dev {ifindex}")


def _dotted(v: int) -> str:
    return socket.inet_ntoa(v.to_bytes(4, "big"))
