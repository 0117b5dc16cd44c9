"""Raw rtnetlink, batched: the fast path for links, addresses, routes and rules.

Why raw: MEASURED.md shows pyroute2 waiting for each reply costs ~1.2 ms per
request, and its IPBatch encoder ~250 us per route; packing with ``struct``
and writing thousands of messages per ``send`` installs 100k routes in ~0.2 s.

How it works: a ``NetlinkBatch`` owns one NETLINK_ROUTE socket opened *inside*
one namespace (a socket keeps the namespace it was created in). Builder
methods (``veth``, ``link_set``, ``addr``, ``route``, ``rule`` ...) only pack
bytes and queue them, each with a sequence number. ``send()`` writes the queue
in large chunks. The kernel processes a netlink write synchronously inside
``sendmsg``, so when the write returns every reply for that chunk is already
queued on our socket; a final NLMSG_NOOP carrying NLM_F_ACK marks the end of
the chunk, and we read until its ack. With ``ack_each=True`` (default) every
message also asks for an ack; with ``ack_each=False`` only failures answer
(the kernel always reports an error, asked or not), which skips one
``recv`` per success on the bulk route path. Chunks are sized so all replies
of one chunk fit in the 64 MB receive buffer: a full buffer makes the kernel
drop acks (ENOBUFS), the pitfall MEASURED.md hit with pyroute2's IPBatch.

Errors are collected per sequence number and raised as one DataplaneError
naming the operation, namespace, errno and the kernel's extended-ack text.
"""

from __future__ import annotations

import errno as E
import os
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from emu.dataplane import netns as _netns
from emu.errors import DataplaneError

# --- constants (linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h, fib_rules.h)
NETLINK_ROUTE, SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 0, 270, 10, 11
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLM_F_CAPPED, NLM_F_ACK_TLVS, NLMSGERR_ATTR_MSG = 0x100, 0x200, 1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE = 32, 33
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU = 1, 3, 4
IFLA_LINKINFO, IFLA_GROUP, IFLA_NET_NS_FD = 18, 27, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS, IFA_F_NODAD = 1, 2, 8, 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
FRA_PRIORITY, FRA_TABLE, FR_ACT_TO_TBL = 6, 15, 1
IFLA_VXLAN_ID, IFLA_VXLAN_GROUP, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL = 1, 2, 3, 4
IFLA_VXLAN_TTL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 5, 7, 15
IFLA_VXLAN_GROUP6, IFLA_VXLAN_LOCAL6 = 16, 17
IFLA_IPTUN_LINK, IFLA_IPTUN_LOCAL, IFLA_IPTUN_REMOTE, IFLA_IPTUN_TTL = 1, 2, 3, 4
IFF_UP = 0x1
RTNH_F_ONLINK = 0x4
RTPROT_STATIC = 4
RT_TABLE_MAIN, RT_TABLE_COMPAT = 254, 252
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST, RT_SCOPE_NOWHERE = 0, 253, 254, 255
ROUTE_TYPES = {"unicast": 1, "local": 2, "blackhole": 6, "unreachable": 7, "prohibit": 8}
_TYPE_NAMES = {v: k for k, v in ROUTE_TYPES.items()} | {3: "broadcast", 4: "anycast", 5: "multicast"}

_NLH = struct.Struct("=IHHII")          # nlmsghdr: len, type, flags, seq, pid
_IFI = struct.Struct("=BxHiII")         # ifinfomsg: family, type, index, flags, change
_IFA = struct.Struct("=BBBBi")          # ifaddrmsg: family, prefixlen, flags, scope, index
_RTM = struct.Struct("=BBBBBBBBI")      # rtmsg
_FRH = struct.Struct("=BBBBBBBBI")      # fib_rule_hdr (ends in a u32 flags)
_RTA = struct.Struct("=HH")
_RTA_U32 = struct.Struct("=HHI")
_RTNH = struct.Struct("=HBBi")          # rtnexthop: len, flags, hops, ifindex
_ERR = struct.Struct("=i")

_VERB_FLAGS = {
    "add": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE,
    "append": NLM_F_CREATE | NLM_F_APPEND, "del": 0, "delete": 0,
}
CHUNK_BYTES = 1 << 20
CHUNK_MSGS = 16384  # x ~1 KB of kernel memory per reply stays well below 2 x 64 MB


_tls = threading.local()


def _recv_buffer() -> bytearray:
    """One receive buffer per thread, not per socket: 1,600 sockets with a
    private 1 MB buffer each cost 1.6 s of page faults in a torus build.
    64 KB holds any single reply (dump skbs are capped at 32 KB)."""
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = bytearray(64 << 10)
    return buf


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    n = 4 + len(payload)
    return _RTA.pack(n, kind) + payload + b"\0" * (-n & 3)


def u32_attr(kind: int, value: int) -> bytes:
    return _RTA_U32.pack(8, kind, value)


def _attrs(*items: tuple[int, bytes | None]) -> bytes:
    """Attributes in order, skipping those whose payload is None (an option not given)."""
    return b"".join(attr(k, v) for k, v in items if v is not None)


def _u32b(v: int | None) -> bytes | None:
    return None if v is None else struct.pack("=I", v)


def _u8b(v: int | None) -> bytes | None:
    return None if v is None else bytes([v])


def ip_bytes(addr: str | bytes) -> bytes:
    """Packed address from text (``10.0.0.1``, ``fd00::1``) or 4/16 raw bytes."""
    if isinstance(addr, bytes):
        return addr
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


def _family(packed: bytes) -> int:
    return socket.AF_INET if len(packed) == 4 else socket.AF_INET6


def mac_bytes(mac: str | bytes) -> bytes:
    return mac if isinstance(mac, bytes) else bytes.fromhex(mac.replace(":", "").replace("-", ""))


def _split_prefix(dst: str | bytes, plen: int | None) -> tuple[bytes, int]:
    if isinstance(dst, str) and "/" in dst:
        dst, p = dst.split("/", 1)
        plen = int(p)
    packed = ip_bytes(dst)
    return packed, (len(packed) * 8 if plen is None else plen)


class Nexthop(NamedTuple):
    """One path of a route. ``weight`` 1..256 becomes rtnh_hops = weight - 1."""

    oif: int
    gateway: str | bytes | None = None
    weight: int = 1
    onlink: bool = False


@dataclass
class BatchResult:
    """What one ``send()`` did: messages written and every failure by sequence number."""

    sent: int = 0
    errors: dict[int, tuple[int, str, str]] = field(default_factory=dict)  # seq -> (errno, op, extack)
    tolerated: int = 0


class NetlinkBatch:
    """A NETLINK_ROUTE socket in namespace ``netns`` plus a queue of packed requests.

    There is deliberately no way to open one in the caller's own (host)
    namespace: the emulator must never touch the host's links or routes.
    Not thread-safe; use one per namespace per thread.
    """

    def __init__(self, netns: str, *, ack_each: bool = True, rcvbuf: int = 64 << 20,
                 sndbuf: int = 8 << 20):
        self.netns = netns
        self.ack_each = ack_each
        with _netns.inside(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        s = self.sock
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)
            s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)   # acks without the echoed request
            s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)   # error text from the kernel
            s.bind((0, 0))
        except OSError as exc:
            s.close()
            raise DataplaneError("netlink socket setup", netns, exc.errno, exc.strerror or "") from exc
        s.settimeout(30.0)
        self._seq = 0
        self._first = 1                                  # seq of _ops[0]; queued seqs are contiguous
        self._parts: list[bytes] = []
        self._ops: list[tuple[str, object]] = []         # (op, detail) per queued message
        self._route_shapes: dict[tuple, tuple[bytes, bytes, int, int]] = {}

    # ---------------------------------------------------------------- plumbing
    @property
    def ack_each(self) -> bool:
        """Ask an ack for every message (True) or only hear about failures (False).
        Applies to messages queued after it is set."""
        return bool(self._ackflag)

    @ack_each.setter
    def ack_each(self, value: bool) -> None:
        self._ackflag = NLM_F_ACK if value else 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetlinkBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._ops)

    def queue(self, msg_type: int, flags: int, body: bytes, op: str, detail: object = "") -> int:
        """Queue one request (header added here); return its sequence number."""
        if not self._ops:
            self._first = (self._seq + 1) & 0xFFFFFFFF
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        self._parts.append(_NLH.pack(16 + len(body), msg_type, flags | NLM_F_REQUEST | self._ackflag, seq, 0)
                           + body)
        self._ops.append((op, detail))
        return seq

    def send(self, ok: Iterable[int] = (), *, check: bool = True) -> BatchResult:
        """Write everything queued, then collect the kernel's answers.

        ``ok``: errnos to tolerate (e.g. ``{errno.EEXIST}`` when re-adding).
        ``check``: raise DataplaneError for the first other failure, after the
        whole queue was processed (the kernel keeps going after a failure).
        """
        parts, ops, first = self._parts, self._ops, self._first
        self._parts, self._ops = [], []
        okset = set(ok)
        result = BatchResult(sent=len(parts))
        i = 0
        while i < len(parts):
            j, size = i, 0
            while j < len(parts) and size < CHUNK_BYTES and j - i < CHUNK_MSGS:
                size += len(parts[j])
                j += 1
            self._seq = barrier = (self._seq + 1) & 0xFFFFFFFF
            chunk = parts[i:j]
            chunk.append(_NLH.pack(16, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, barrier, 0))
            try:
                self.sock.send(b"".join(chunk))
            except OSError as exc:
                raise DataplaneError("netlink send", self.netns, exc.errno, exc.strerror or "") from exc
            self._drain(barrier, ops, first, okset, result)
            i = j
        if check and result.errors:
            seq = min(result.errors, key=lambda s: (s - first) & 0xFFFFFFFF)
            code, op, text = result.errors[seq]
            more = f" (+{len(result.errors) - 1} more failures)" if len(result.errors) > 1 else ""
            raise DataplaneError(op, self.netns, code, f"{os.strerror(code)}{': ' + text if text else ''}{more}")
        return result

    def _drain(self, barrier: int, ops: list, first: int, okset: set[int], result: BatchResult) -> None:
        buf = _recv_buffer()
        view = memoryview(buf)
        while True:
            try:
                n = self.sock.recv_into(buf)
            except OSError as exc:
                raise DataplaneError("netlink recv", self.netns, exc.errno,
                                     f"{exc.strerror}; replies were lost, state unknown") from exc
            off = 0
            while off + 16 <= n:
                mlen, mtype, mflags, seq, _ = _NLH.unpack_from(buf, off)
                if mtype == NLMSG_ERROR:
                    code = -_ERR.unpack_from(buf, off + 16)[0]
                    if seq == barrier:
                        return
                    k = (seq - first) & 0xFFFFFFFF
                    if code and k < len(ops):   # k out of range: stale reply of an interrupted send
                        if code in okset:
                            result.tolerated += 1
                        else:
                            op, detail = ops[k]
                            text = _extack(bytes(view[off:off + mlen]), mflags)
                            result.errors[seq] = (code, f"{op} {_fmt(detail)}".strip(), text)
                off += (mlen + 3) & ~3 if mlen else n

    # ---------------------------------------------------------------- links
    def veth(self, name: str, peer_name: str, peer_netns_fd: int | None = None, *, index: int = 0,
             peer_index: int = 0, mac: str | bytes | None = None, peer_mac: str | bytes | None = None,
             mtu: int | None = None, group: int | None = None) -> int:
        """Create veth ``name`` here (ifindex ``index``, 0 = kernel picks) whose peer
        ``peer_name`` lands in the namespace behind ``peer_netns_fd`` with ``peer_index``.

        Both ends come up down: bring them up with ``link_set`` in a later
        message (the peer cannot be brought up in the creating request:
        ENOTCONN). ``group`` (IFLA_GROUP) lets ``link_del_group`` remove many
        at once. The kernel resolves ``peer_netns_fd`` when the message is
        *sent*: keep the fd open until ``send()`` returns (else EBADF).
        """
        def common(nm: str, mc: str | bytes | None) -> bytes:
            return _attrs((IFLA_IFNAME, nm.encode() + b"\0"), (IFLA_ADDRESS, mc and mac_bytes(mc)),
                          (IFLA_MTU, _u32b(mtu)), (IFLA_GROUP, _u32b(group)))
        peer = _IFI.pack(0, 0, peer_index, 0, 0) + common(peer_name, peer_mac)
        peer += _attrs((IFLA_NET_NS_FD, _u32b(peer_netns_fd)))
        info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
        body = _IFI.pack(0, 0, index, 0, 0) + common(name, mac) + attr(IFLA_LINKINFO, info)
        return self.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, "veth add", f"{name}<->{peer_name}")

    def vxlan(self, name: str, vni: int, *, remote: str | None = None, local: str | None = None,
              dstport: int = 4789, dev_index: int | None = None, learning: bool = False,
              ttl: int | None = None, index: int = 0, mac: str | bytes | None = None,
              mtu: int | None = None) -> int:
        """Create a VXLAN device (the user-terminal tunnel on kernels without ipip/gre)."""
        r = ip_bytes(remote) if remote is not None else b""
        lo = ip_bytes(local) if local is not None else b""
        data = _attrs((IFLA_VXLAN_ID, _u32b(vni)), (IFLA_VXLAN_LEARNING, bytes([int(learning)])),
                      (IFLA_VXLAN_PORT, struct.pack("!H", dstport)),
                      (IFLA_VXLAN_GROUP if len(r) == 4 else IFLA_VXLAN_GROUP6, r or None),
                      (IFLA_VXLAN_LOCAL if len(lo) == 4 else IFLA_VXLAN_LOCAL6, lo or None),
                      (IFLA_VXLAN_LINK, _u32b(dev_index)), (IFLA_VXLAN_TTL, _u8b(ttl)))
        return self._new_kind(name, "vxlan", data, index, mac, mtu)

    def ipip(self, name: str, *, remote: str, local: str | None = None, dev_index: int | None = None,
             ttl: int | None = None, index: int = 0, mtu: int | None = None) -> int:
        """Create an ipip tunnel; on kernels without ipip the send fails with EOPNOTSUPP."""
        data = _attrs((IFLA_IPTUN_REMOTE, ip_bytes(remote)), (IFLA_IPTUN_LOCAL, local and ip_bytes(local)),
                      (IFLA_IPTUN_LINK, _u32b(dev_index)), (IFLA_IPTUN_TTL, _u8b(ttl)))
        return self._new_kind(name, "ipip", data, index, None, mtu)

    def _new_kind(self, name: str, kind: str, data: bytes, index: int, mac: str | bytes | None,
                  mtu: int | None) -> int:
        body = _IFI.pack(0, 0, index, 0, 0) + _attrs(
            (IFLA_IFNAME, name.encode() + b"\0"), (IFLA_ADDRESS, mac and mac_bytes(mac)), (IFLA_MTU, _u32b(mtu)),
            (IFLA_LINKINFO, attr(IFLA_INFO_KIND, kind.encode()) + attr(IFLA_INFO_DATA, data)))
        return self.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"{kind} add", name)

    def link_set(self, index: int, *, up: bool | None = None, mac: str | bytes | None = None,
                 mtu: int | None = None, group: int | None = None) -> int:
        """Change an existing link by ifindex: admin state, MAC, MTU, group."""
        body = _IFI.pack(0, 0, index, IFF_UP if up else 0, IFF_UP if up is not None else 0)
        body += _attrs((IFLA_ADDRESS, mac and mac_bytes(mac)), (IFLA_MTU, _u32b(mtu)), (IFLA_GROUP, _u32b(group)))
        what = "up" if up else "down" if up is not None else "set"
        return self.queue(RTM_NEWLINK, 0, body, f"link {what}", f"ifindex {index}")

    def link_del(self, index: int) -> int:
        """Delete a link by ifindex (a veth takes its peer with it)."""
        return self.queue(RTM_DELLINK, 0, _IFI.pack(0, 0, index, 0, 0), "link del", f"ifindex {index}")

    def link_del_group(self, group: int) -> int:
        """Delete every link of IFLA_GROUP ``group`` in this namespace in one request."""
        body = _IFI.pack(0, 0, 0, 0, 0) + u32_attr(IFLA_GROUP, group)
        return self.queue(RTM_DELLINK, 0, body, "link del group", str(group))

    # ---------------------------------------------------------------- addresses
    def addr(self, verb: str, index: int, address: str | bytes, plen: int, *, scope: int = 0,
             nodad: bool = True) -> int:
        """Add (``add``/``replace``) or delete (``del``) an address. IPv6 gets
        IFA_F_NODAD unless ``nodad=False``, so it is usable at once."""
        a = ip_bytes(address)
        fam = _family(a)
        fl = IFA_F_NODAD if (nodad and fam == socket.AF_INET6) else 0
        body = _IFA.pack(fam, plen, fl, scope, index) + attr(IFA_LOCAL, a) + attr(IFA_ADDRESS, a)
        if fl:
            body += u32_attr(IFA_FLAGS, fl)
        mtype = RTM_DELADDR if verb in ("del", "delete") else RTM_NEWADDR
        return self.queue(mtype, _VERB_FLAGS[verb], body, f"addr {verb}", ("{}/{} dev {}", a, plen, index))

    # ---------------------------------------------------------------- routes
    def route(self, verb: str, dst: str | bytes, plen: int | None = None, *, oif: int | None = None,
              gateway: str | bytes | None = None, onlink: bool = False,
              nexthops: Sequence[Nexthop] | None = None, table: int = RT_TABLE_MAIN,
              metric: int | None = None, scope: int | None = None, type: str = "unicast",
              protocol: int = RTPROT_STATIC) -> int:
        """Queue a route ``add`` / ``replace`` / ``append`` / ``del``.

        ``dst`` is ``"10.0.0.0/24"`` or an address with ``plen``; a single
        nexthop is ``oif`` (+ ``gateway``, ``onlink``); ``nexthops`` makes a
        multipath route whose weights the kernel uses for UCMP. ``type`` is
        unicast, unreachable, blackhole, prohibit or local. The scope
        defaults like iproute2's: link for a gateway-less unicast route, host
        for local, universe otherwise; ``del`` matches any scope.
        """
        if isinstance(dst, bytes) and plen is not None:
            d = dst
        else:
            d, plen = _split_prefix(dst, plen)
        nh_key = tuple(nexthops) if nexthops else None
        key = (verb, len(d), plen, oif, gateway, nh_key, table, metric, scope, type, protocol, onlink)
        shape = self._route_shapes.get(key)
        if shape is None:
            if len(self._route_shapes) > 65536:
                self._route_shapes.clear()
            shape = self._route_shapes[key] = _route_shape(*key)
        head, tail, mtype, flags = shape
        body = head + _RTA.pack(4 + len(d), RTA_DST) + d + tail if plen or len(d) == 16 else head + tail
        # queue() inlined: this is the 100k-routes-per-slice path.
        if not self._ops:
            self._first = (self._seq + 1) & 0xFFFFFFFF
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        self._parts.append(_NLH.pack(16 + len(body), mtype, flags | self._ackflag, seq, 0) + body)
        self._ops.append((_ROUTE_OPS[verb], ("{}/{} table {}", d, plen, table)))
        return seq

    def rule(self, verb: str, *, table: int, priority: int, family: int = socket.AF_INET) -> int:
        """An ``ip rule`` that sends every lookup to ``table`` (the shadow-table switch)."""
        body = _FRH.pack(family, 0, 0, 0, table if table < 256 else RT_TABLE_COMPAT, 0, 0,
                         FR_ACT_TO_TBL, 0) + u32_attr(FRA_PRIORITY, priority) + u32_attr(FRA_TABLE, table)
        mtype = RTM_DELRULE if verb in ("del", "delete") else RTM_NEWRULE
        flags = NLM_F_CREATE | NLM_F_EXCL if verb == "add" else 0
        return self.queue(mtype, flags, body, f"rule {verb}", f"pref {priority} table {table}")

    # ---------------------------------------------------------------- queries
    def dump(self, msg_type: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one dump request now; return (type, payload) of every reply."""
        if self._ops:
            raise DataplaneError("netlink dump", self.netns, E.EBUSY, "send() the queued batch first")
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        self.sock.send(_NLH.pack(16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        buf = _recv_buffer()
        while True:
            n = self.sock.recv_into(buf)
            off = 0
            while off + 16 <= n:
                mlen, mtype, _, mseq, _ = _NLH.unpack_from(buf, off)
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        code = -_ERR.unpack_from(buf, off + 16)[0]
                        raise DataplaneError(f"netlink dump type {msg_type}", self.netns, code, os.strerror(code))
                    out.append((mtype, bytes(buf[off + 16:off + mlen])))
                off += (mlen + 3) & ~3

    def links(self) -> list[dict]:
        """Every link: index, name, flags, up, mtu, mac, group, kind."""
        res = []
        for _, p in self.dump(RTM_GETLINK, _IFI.pack(0, 0, 0, 0, 0)):
            _, _, idx, flags, _ = _IFI.unpack_from(p)
            a = parse_attrs(p, 16)
            kind = parse_attrs(a.get(IFLA_LINKINFO, b""), 0).get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
            res.append({"index": idx, "name": a[IFLA_IFNAME].rstrip(b"\0").decode(), "flags": flags,
                        "up": bool(flags & IFF_UP), "mtu": _u32(a.get(IFLA_MTU)),
                        "mac": ":".join(f"{b:02x}" for b in a.get(IFLA_ADDRESS, b"")),
                        "group": _u32(a.get(IFLA_GROUP)), "kind": kind or None})
        return res

    def addresses(self, family: int = socket.AF_UNSPEC) -> list[dict]:
        """Every address: index, address (text), plen, family, flags, scope."""
        res = []
        for _, p in self.dump(RTM_GETADDR, _IFA.pack(family, 0, 0, 0, 0)):
            fam, plen, fl, scope, idx = _IFA.unpack_from(p)
            a = parse_attrs(p, 8)
            res.append({"index": idx, "address": socket.inet_ntop(fam, a.get(IFA_LOCAL) or a[IFA_ADDRESS]),
                        "plen": plen, "family": fam, "flags": _u32(a.get(IFA_FLAGS)) or fl, "scope": scope})
        return res

    def routes(self, family: int = socket.AF_INET, table: int | None = None) -> list[dict]:
        """Routes of ``family`` (all tables, or only ``table``) as plain dicts:
        dst ("a/plen"), table, type, scope, protocol, metric, oif, gateway,
        flags, nexthops [(oif, gateway, weight, flags)]."""
        res = []
        for _, p in self.dump(RTM_GETROUTE, _RTM.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            fam, dlen, _, _, tbl8, proto, scope, rtype, flags = _RTM.unpack_from(p)
            a = parse_attrs(p, 12)
            tbl = _u32(a.get(RTA_TABLE)) or tbl8
            if table is not None and tbl != table:
                continue
            ntop = lambda raw: socket.inet_ntop(fam, raw) if raw else None  # noqa: E731
            nhs, mp, off = [], a.get(RTA_MULTIPATH, b""), 0
            while off + 8 <= len(mp):
                ln, nfl, hops, ifx = _RTNH.unpack_from(mp, off)
                nhs.append((ifx, ntop(parse_attrs(mp[off:off + ln], 8).get(RTA_GATEWAY)), hops + 1, nfl))
                off += (ln + 3) & ~3
            dst = ntop(a.get(RTA_DST)) or ("0.0.0.0" if fam == socket.AF_INET else "::")
            res.append({"dst": f"{dst}/{dlen}", "table": tbl, "type": _TYPE_NAMES.get(rtype, rtype),
                        "scope": scope, "protocol": proto, "metric": _u32(a.get(RTA_PRIORITY)),
                        "oif": _u32(a.get(RTA_OIF)), "gateway": ntop(a.get(RTA_GATEWAY)),
                        "flags": flags, "nexthops": nhs})
        return res


_ROUTE_OPS = {v: f"route {v}" for v in _VERB_FLAGS}


def _route_shape(verb: str, dlen: int, plen: int, oif: int | None, gateway: str | bytes | None,
                 nexthops: tuple[Nexthop, ...] | None, table: int, metric: int | None,
                 scope: int | None, rtype_name: str, protocol: int, onlink: bool
                 ) -> tuple[bytes, bytes, int, int]:
    """Everything of a route message except the destination: (rtmsg, attributes
    after RTA_DST, message type, flags). Cached per batch: routes of one slice
    share a few dozen shapes, so the hot path packs only header and RTA_DST."""
    fam = socket.AF_INET if dlen == 4 else socket.AF_INET6
    delete = verb in ("del", "delete")
    rtype = 0 if delete and rtype_name == "unicast" else ROUTE_TYPES[rtype_name]
    if scope is None:
        if delete:
            scope = RT_SCOPE_NOWHERE
        elif rtype == 2:
            scope = RT_SCOPE_HOST
        elif rtype == 1 and gateway is None and not nexthops:
            scope = RT_SCOPE_LINK
        else:
            scope = RT_SCOPE_UNIVERSE
    head = _RTM.pack(fam, plen, 0, 0, table if table < 256 else RT_TABLE_COMPAT,
                     0 if delete else protocol, scope, rtype, RTNH_F_ONLINK if onlink else 0)
    tail = [_RTA_U32.pack(8, RTA_TABLE, table)]
    if metric is not None:
        tail.append(_RTA_U32.pack(8, RTA_PRIORITY, metric))
    if oif is not None:
        tail.append(_RTA_U32.pack(8, RTA_OIF, oif))
    if gateway is not None:
        tail.append(attr(RTA_GATEWAY, ip_bytes(gateway)))
    if nexthops:
        tail.append(attr(RTA_MULTIPATH, b"".join(_rtnh(nh) for nh in nexthops)))
    return head, b"".join(tail), RTM_DELROUTE if delete else RTM_NEWROUTE, _VERB_FLAGS[verb] | NLM_F_REQUEST


def _rtnh(nh: Nexthop) -> bytes:
    if not 1 <= nh.weight <= 256:
        raise DataplaneError("route nexthop", None, E.EINVAL, f"weight {nh.weight} not in 1..256")
    gw = attr(RTA_GATEWAY, ip_bytes(nh.gateway)) if nh.gateway is not None else b""
    return _RTNH.pack(8 + len(gw), RTNH_F_ONLINK if nh.onlink else 0, nh.weight - 1, nh.oif) + gw


def parse_attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """Top-level attributes from ``offset`` as {type: payload} (nested flag bits masked off)."""
    out: dict[int, bytes] = {}
    n = len(data)
    while offset + 4 <= n:
        ln, kind = _RTA.unpack_from(data, offset)
        if ln < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4:offset + ln]
        offset += (ln + 3) & ~3
    return out


def _fmt(detail: object) -> str:
    """Text for a queued message's detail, built only when that message failed:
    a tuple is ``(format, *args)`` with packed addresses among the args."""
    if isinstance(detail, tuple):
        args = [socket.inet_ntop(_family(a), a) if isinstance(a, bytes) else a for a in detail[1:]]
        return detail[0].format(*args)
    return str(detail)


def _u32(b: bytes | None) -> int | None:
    return struct.unpack("=I", b[:4])[0] if b else None


def _extack(msg: bytes, flags: int) -> str:
    """The kernel's error string (NLMSGERR_ATTR_MSG) from an NLMSG_ERROR, if any."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    inner_len = 16 if flags & NLM_F_CAPPED else _NLH.unpack_from(msg, 20)[0]
    a = parse_attrs(msg, 20 + ((inner_len + 3) & ~3))
    return a.get(NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode(errors="replace")
