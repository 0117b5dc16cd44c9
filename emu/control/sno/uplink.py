"""Which uplink a terminal uses now, read from the kernel: rtnetlink events and a route dump.

spec: inter-sno-mobility §5.1 ("once the new link becomes operational").
The agent does not ask the emulator: a link is usable when the main
table's IPv4 default route goes out of it and the interface is up and
running. Events (RTMGRP_LINK, RTMGRP_IPV4_ROUTE) only wake the agent up;
the truth is read back by a dump each time (the kernel does not announce
the IPv4 routes it flushes when a link goes down). The parser is pure.
"""

from __future__ import annotations

import fcntl
import socket
import struct

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
RTA_OIF, RTA_TABLE = 4, 15
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
IFF_UP, IFF_RUNNING = 0x1, 0x40
SIOCGIFFLAGS = 0x8913

_NLMSG = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def default_oifs(data: bytes, want_table: int = RT_TABLE_MAIN) -> list[int]:
    """Output interfaces of IPv4 unicast default routes in table ``want_table`` (main unless a live run gives
    its terminals an access table), from RTM_NEWROUTE messages (pure)."""
    out = []
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > len(data):
            break
        if mtype == RTM_NEWROUTE and length >= _NLMSG.size + _RTMSG.size:
            family, dst_len, _sl, _tos, table, _proto, _scope, rtype, _f = _RTMSG.unpack_from(data, off + _NLMSG.size)
            oif = None
            a = off + _NLMSG.size + _RTMSG.size
            end = off + length
            while a + _RTA.size <= end:
                alen, atype = _RTA.unpack_from(data, a)
                if alen < _RTA.size:
                    break
                if atype == RTA_OIF and alen >= 8:
                    oif = struct.unpack_from("=I", data, a + 4)[0]
                elif atype == RTA_TABLE and alen >= 8:
                    table = struct.unpack_from("=I", data, a + 4)[0]
                a += _align(alen)
            if family == socket.AF_INET and dst_len == 0 and table == want_table and rtype == RTN_UNICAST \
                    and oif is not None:
                out.append(oif)
        off += _align(length)
    return out


def if_flags(sock: socket.socket, name: str) -> int:
    """An interface's flags (SIOCGIFFLAGS) in the namespace ``sock`` was made in; 0 if there is none.

    IFF_RUNNING means operstate UP: the kernel's linkwatch has run for the
    carrier change and activated the device's queue.
    """
    try:
        res = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, struct.pack("16sh", name.encode(), 0))
    except OSError:
        return 0
    return struct.unpack_from("16sh", res)[1] & 0xFFFF


def oper_up(sock: socket.socket, name: str) -> bool:
    return if_flags(sock, name) & (IFF_UP | IFF_RUNNING) == (IFF_UP | IFF_RUNNING)


def _dump_request(seq: int) -> bytes:
    body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
    return _NLMSG.pack(_NLMSG.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class UplinkWatch:
    """The usable uplink now (:meth:`current`) and a file descriptor that wakes up on changes (:attr:`fd`)."""

    def __init__(self, uplinks: list[str], table: int = RT_TABLE_MAIN):
        self.uplinks = list(uplinks)
        self.table = table
        self.events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
        self.events.bind((0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE))
        self.events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._ioctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._seq = 0

    @property
    def fd(self) -> int:
        return self.events.fileno()

    def drain(self) -> None:
        while True:
            try:
                self.events.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ENOBUFS: events were lost; the dump tells the truth anyway
                return

    def _flags(self, name: str) -> int:
        return if_flags(self._ioctl, name)

    def _dump(self) -> list[int]:
        self._seq += 1
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
            s.bind((0, 0))
            s.send(_dump_request(self._seq))
            oifs: list[int] = []
            while True:
                data = s.recv(1 << 16)
                oifs += default_oifs(data, self.table)
                done = False
                off = 0
                while off + _NLMSG.size <= len(data):
                    length, mtype = _NLMSG.unpack_from(data, off)[:2]
                    if mtype in (NLMSG_DONE, NLMSG_ERROR):
                        done = True
                    if length < _NLMSG.size:
                        break
                    off += _align(length)
                if done:
                    return oifs

    def current(self) -> str | None:
        for oif in self._dump():
            try:
                name = socket.if_indextoname(oif)
            except OSError:
                continue
            if self.uplinks and name not in self.uplinks:
                continue
            if oper_up(self._ioctl, name):
                return name
        return None

    def close(self) -> None:
        for s in (self.events, self._ioctl):
            try:
                s.close()
            except OSError:
                pass

