"""Hand-packed link and address requests: the benchmarks' "ours" reference, not used by the data plane.

The data plane encodes links and addresses with pyroute2's message classes
(:mod:`emu.dataplane.netlink`). These ``struct`` packers are what it used
before, kept only so ``bench_netlink.py`` can print pyroute2 against them
side by side and ``bench_up.py`` can take its bare bulk-netlink baseline
(namespaces + veth pairs + links up) at the fastest known speed. They queue
on the same transport (``emu.dataplane.netlink.NetlinkBatch.queue``); attribute numbers come from
pyroute2's message classes.
"""

from __future__ import annotations

import socket
import struct

from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg

from emu.dataplane.rtpack import VETH_QUEUES



def nla_id(cls, name: str) -> int:
    """An attribute's number from a pyroute2 message class's ``nla_map``."""
    return next(i for i, item in enumerate(cls.nla_map) if item[0] == name)


_IFI = struct.Struct("=BxHiII")
_IFA = struct.Struct("=BBBBi")
_RTA = struct.Struct("=HH")
IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_FD = (nla_id(ifinfmsg, n) for n in ("IFLA_IFNAME", "IFLA_LINKINFO",
                                                                           "IFLA_NET_NS_FD"))
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1     # linux/if_link.h, veth.h
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = (nla_id(ifaddrmsg, n) for n in ("IFA_ADDRESS", "IFA_LOCAL", "IFA_FLAGS"))


def attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return _RTA.pack(n, kind) + payload + b"\0" * (-n & 3)


def veth(b, name: str, peer_name: str, peer_fd: int, index: int, peer_index: int, queues: bool = True) -> int:
    """``queues``: one TX and one RX queue each, as the data plane asks (emu.dataplane.rtpack.VETH_QUEUES: no
    RCU wait); False: the kernel's default queue count, as ``ip link add ... type veth`` makes them."""
    q = VETH_QUEUES if queues else b""
    peer = _IFI.pack(0, 0, peer_index, 0, 0) + attr(IFLA_IFNAME, peer_name.encode() + b"\0") + q \
        + attr(IFLA_NET_NS_FD, struct.pack("=I", peer_fd))
    info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
    body = _IFI.pack(0, 0, index, 0, 0) + attr(IFLA_IFNAME, name.encode() + b"\0") + q + attr(IFLA_LINKINFO, info)
    return b.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, "veth add", f"{name}<->{peer_name}")


def link_up(b, index: int) -> int:
    return b.queue(RTM_NEWLINK, 0, _IFI.pack(0, 0, index, IFF_UP, IFF_UP), "link up", f"ifindex {index}")


def addr(b, index: int, packed: bytes, plen: int) -> int:
    fam = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    fl = IFA_F_NODAD if fam == socket.AF_INET6 else 0
    body = _IFA.pack(fam, plen, fl, 0, index) + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    return b.queue(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, "addr add", f"dev {index}")
