"""pyroute2 as the data plane's encoder and parser: request bodies and reply decoding.

Every rtnetlink request body except the bulk route messages is built here by
pyroute2's message classes (``ifinfmsg``, ``ifaddrmsg``, ``fibmsg``; qdiscs
in :mod:`emu.dataplane.tc`, neighbours and tunnels in
:mod:`emu.dataplane.nlroute`), without the nlmsghdr, which the transport
(:class:`emu.dataplane.netlink.NetlinkBatch`) adds with its sequence number.
Replies are decoded by the same classes. Bodies that depend only on their
arguments are memoised: the same pyroute2 bytes, encoded once per process
(pyroute2 costs ~50-250 us per message) instead of once per namespace.
"""

from __future__ import annotations

import functools
import socket
import struct

from pyroute2.netlink import NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.rtnl import rt_proto, rt_type
from pyroute2.netlink.rtnl.fibmsg import FR_ACT_TO_TBL, fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, IFA_F_NOPREFIXROUTE, ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg

# Not exported by pyroute2 0.9.7 (linux/rtnetlink.h):
RT_TABLE_MAIN, RT_TABLE_COMPAT = 254, 252   # a table id >= 256 travels in RTA_TABLE, the header says COMPAT

RTPROT_STATIC = rt_proto["static"]
RTN_UNICAST, RTN_LOCAL, RTN_UNREACHABLE = rt_type["unicast"], rt_type["local"], rt_type["unreachable"]
ROUTE_TYPES = {name: rt_type[name] for name in ("unicast", "local", "blackhole", "unreachable", "prohibit")}

VERB_FLAGS = {
    "add": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE,
    "append": NLM_F_CREATE | NLM_F_APPEND, "del": 0, "delete": 0,
}
_NLH = struct.Struct("=IHHII")          # nlmsghdr: len, type, flags, seq, pid


def nla_id(cls, name: str) -> int:
    """The attribute number of ``name`` in a pyroute2 message class (its ``nla_map``)."""
    for i, item in enumerate(cls.nla_map):
        if len(item) == 3 and item[1] == name:
            return item[0]
        if item[0] == name:
            return i
    raise KeyError(name)


def ip_text(addr: str | bytes) -> str:
    """Text form of an address given as text or 4/16 packed bytes."""
    if isinstance(addr, bytes):
        return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)
    return addr


def ip_bytes(addr: str | bytes) -> bytes:
    """Packed address from text (``10.0.0.1``, ``fd00::1``) or 4/16 raw bytes."""
    if isinstance(addr, bytes):
        return addr
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


def family_of(packed: bytes) -> int:
    return socket.AF_INET if len(packed) == 4 else socket.AF_INET6


def mac_text(mac: str | bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac) if isinstance(mac, bytes) else mac.replace("-", ":").lower()


def split_prefix(dst: str | bytes, plen: int | None) -> tuple[bytes, int]:
    if isinstance(dst, str) and "/" in dst:
        dst, p = dst.split("/", 1)
        plen = int(p)
    packed = ip_bytes(dst)
    return packed, (len(packed) * 8 if plen is None else plen)


# ============================================================================ pyroute2 encoding
def encode(cls, fields: dict, attrs: list) -> bytes:
    """The body (no nlmsghdr) of a ``cls`` message (a pyroute2 message class), encoded by pyroute2."""
    msg = cls()
    for k, v in fields.items():
        msg[k] = v
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data[16:])


def decode(cls, body: bytes):
    """A reply body (no nlmsghdr) decoded by pyroute2's ``cls`` parser."""
    data = _NLH.pack(16 + len(body), 0, 0, 0, 0) + body
    msg = cls(data)
    msg.decode()
    return msg


def opt_attrs(*items: tuple[str, object]) -> list:
    """pyroute2 attribute list, skipping options not given (None)."""
    return [(k, v) for k, v in items if v is not None]


def _link_attrs(name: str, mac, mtu, group) -> list:
    return opt_attrs(("IFLA_IFNAME", name), ("IFLA_ADDRESS", mac and mac_text(mac)), ("IFLA_MTU", mtu),
                ("IFLA_GROUP", group))


def veth_body(name, peer_name, peer_netns_fd, index, peer_index, mac, peer_mac, mtu, group) -> bytes:
    queues = [("IFLA_NUM_TX_QUEUES", 1), ("IFLA_NUM_RX_QUEUES", 1)]  # why: emu.dataplane.rtpack.VETH_QUEUES
    peer = {"index": peer_index,
            "attrs": _link_attrs(peer_name, peer_mac, mtu, group) + queues
            + opt_attrs(("IFLA_NET_NS_FD", peer_netns_fd))}
    info = {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}
    return encode(ifinfmsg, {"index": index}, _link_attrs(name, mac, mtu, group) + queues + [("IFLA_LINKINFO", info)])


def kind_body(name: str, kind: str, data: list, index: int = 0, mac=None, mtu=None) -> bytes:
    """An RTM_NEWLINK body creating a ``kind`` device with IFLA_INFO_DATA ``data`` (pyroute2 attribute list)."""
    info = {"attrs": [("IFLA_INFO_KIND", kind), ("IFLA_INFO_DATA", {"attrs": data})]}
    return encode(ifinfmsg, {"index": index}, _link_attrs(name, mac, mtu, None) + [("IFLA_LINKINFO", info)])


@functools.lru_cache(maxsize=4096)
def link_set_body(index: int, up: bool | None, mac, mtu, group) -> bytes:
    return encode(ifinfmsg, {"index": index, "flags": IFF_UP if up else 0, "change": IFF_UP if up is not None else 0},
                  opt_attrs(("IFLA_ADDRESS", mac and mac_text(mac)), ("IFLA_MTU", mtu), ("IFLA_GROUP", group)))


@functools.lru_cache(maxsize=4096)
def link_del_body(index: int, group: int | None) -> bytes:
    return encode(ifinfmsg, {"index": index}, opt_attrs(("IFLA_GROUP", group)))


@functools.lru_cache(maxsize=65536)
def addr_body(address: str, plen: int, index: int, scope: int, nodad: bool, peer: str | None = None) -> bytes:
    """pyroute2's encoding of an address (``peer``: a point-to-point address without prefix route)."""
    fam = socket.AF_INET6 if ":" in address else socket.AF_INET
    six = fam == socket.AF_INET6
    fl = (IFA_F_NODAD if (nodad and six) else 0) | (IFA_F_NOPREFIXROUTE if peer and six else 0)
    return encode(ifaddrmsg, {"family": fam, "prefixlen": plen, "flags": fl & 0xFF, "scope": scope, "index": index},
                  [("IFA_LOCAL", address), ("IFA_ADDRESS", peer or address)] + ([("IFA_FLAGS", fl)] if fl else []))


@functools.lru_cache(maxsize=1024)
def rule_body(verb: str, table: int, priority: int, family: int, mark: int | None = None,
              iif: str | None = None, dst: str | None = None) -> bytes:
    """``ip rule [iif IIF] [to DST] [fwmark MARK/0xffffffff] pref PRIORITY lookup TABLE`` (a mark of 0 matches
    only unmarked lookups: the mask is always sent, the kernel's default mask for mark 0 is 0; ``dst`` a
    prefix, ``"fd00::/96"``)."""
    attrs = [("FRA_PRIORITY", priority), ("FRA_TABLE", table)]
    if mark is not None:
        attrs += [("FRA_FWMARK", mark), ("FRA_FWMASK", 0xFFFFFFFF)]
    if iif is not None:
        attrs.append(("FRA_IIFNAME", iif))
    dst_len = 0
    if dst is not None:
        addr, dst_len = split_prefix(dst, None)
        attrs.append(("FRA_DST", socket.inet_ntop(family, addr)))
    return encode(fibmsg, {"family": family, "dst_len": dst_len, "table": table if table < 256 else RT_TABLE_COMPAT,
                           "action": FR_ACT_TO_TBL}, attrs)


def route_dict(m) -> dict:
    """A decoded pyroute2 ``rtmsg`` as the plain dict ``NetlinkBatch.routes`` returns."""
    fam = m["family"]
    via = m.get("RTA_VIA")
    nhs = []
    for nh in m.get("RTA_MULTIPATH") or ():
        hop_via = nh.get("RTA_VIA")
        nhs.append((nh["oif"], nh.get("RTA_GATEWAY") or (hop_via and hop_via["addr"]), nh["hops"] + 1, nh["flags"]))
    dst = m.get("RTA_DST") or ("0.0.0.0" if fam == socket.AF_INET else "::")
    return {"dst": f"{dst}/{m['dst_len']}", "table": m.get("RTA_TABLE") or m["table"],
            "type": rt_type.get(m["type"], m["type"]), "scope": m["scope"], "protocol": m["proto"],
            "metric": m.get("RTA_PRIORITY"), "oif": m.get("RTA_OIF"), "gateway": m.get("RTA_GATEWAY"),
            "via": via and via["addr"], "flags": m["flags"], "nexthops": nhs}
