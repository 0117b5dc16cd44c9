"""Watch many namespaces for one probe's packets: AF_PACKET sockets with classic BPF filters, kernel time stamps.

The capture side of :mod:`emu.dataplane.trace`: one AF_PACKET socket per
watched namespace, opened *inside* it (a socket keeps the namespace it was
created in) from this one thread, with a classic BPF filter so the kernel
only queues ICMP with the probe's echo id, ICMP errors, and tunnelled ICMP
(VXLAN on UDP 4789, or ipip; IPv6: ICMPv6 and VXLAN). Every socket asks for
SO_TIMESTAMPNS, so each frame carries the kernel's stamp of when it entered
the stack or was handed to the device; one epoll loop drains them all.
``sll_pkttype`` tells in (host) from out (outgoing). Only the end hosts run
Python; the kernel forwards (DESIGN.md rule 1; spec: grc-based-routing
§Data Forwarding Process, the path a packet takes).
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import struct
import time

from emu.dataplane import netns
from emu.errors import DataplaneError

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: struct timespec of two longs on 64-bit
PACKET_OUTGOING = 4
VXLAN_PORT = 4789


def bpf_program(icmp_id: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF (code, jt, jf, k) accepting, on Ethernet frames: IPv4 ICMP echo/reply with id ``icmp_id``,
    any ICMP destination-unreachable / time-exceeded, and tunnelled IPv4 ICMP: VXLAN (UDP 4789) or ipip."""
    LDH_ABS, LDB_ABS, LDH_IND, LDB_IND, LDXB_MSH = 0x28, 0x30, 0x48, 0x50, 0xB1
    JEQ, JSET, RET = 0x15, 0x45, 0x06
    prog = [  # (op, k, jump-if-true label, jump-if-false label)
        (LDH_ABS, 12, None, None),
        (JEQ, 0x0800, None, "drop"),
        (LDH_ABS, 20, None, None),  # IPv4 flags + fragment offset
        (JSET, 0x1FFF, "drop", None),  # not the first fragment: cannot see ports
        (LDXB_MSH, 14, None, None),  # X = IPv4 header length
        (LDB_ABS, 23, None, None),  # protocol
        (JEQ, 1, "icmp", None),
        (JEQ, 4, "ipip", None),
        (JEQ, 17, "udp", "drop"),
        ("icmp", LDB_IND, 14, None, None),  # ICMP type
        (JEQ, 3, "accept", None),
        (JEQ, 11, "accept", None),
        (LDH_IND, 18, None, None),  # echo identifier
        (JEQ, icmp_id & 0xFFFF, "accept", "drop"),
        ("udp", LDH_IND, 16, None, None),  # UDP destination port
        (JEQ, VXLAN_PORT, None, "drop"),
        (LDH_IND, 42, None, None),  # inner Ethernet type (UDP 8 + VXLAN 8 + Ethernet 12)
        (JEQ, 0x0800, None, "drop"),
        (LDB_IND, 53, None, None),  # inner IPv4 protocol
        (JEQ, 1, "accept", "drop"),
        ("ipip", LDB_IND, 23, None, None),  # inner IPv4 protocol (outer header + 9)
        (JEQ, 1, "accept", "drop"),
        ("accept", RET, 0x40000, None, None),
        ("drop", RET, 0, None, None),
    ]
    labels = {}
    body = []
    for ins in prog:
        if isinstance(ins[0], str):
            labels[ins[0]] = len(body)
            ins = ins[1:]
        body.append(ins)
    out = []
    for i, (op, k, jt, jf) in enumerate(body):
        off = lambda lab: 0 if lab is None else labels[lab] - i - 1  # noqa: E731
        out.append((op, off(jt), off(jf), k))
    return out


def bpf_program6() -> list[tuple[int, int, int, int]]:
    """Classic BPF accepting, on Ethernet frames, IPv6 with ICMPv6 or VXLAN (UDP 4789) right after the fixed
    header: the IPv6 probe, its reply and errors, and the same inside the vx6 tunnels (IPv6 GRC outer header).
    The token in the payload picks ours out (:func:`emu.dataplane.trace.classify`)."""
    LDH_ABS, LDB_ABS, JEQ, RET = 0x28, 0x30, 0x15, 0x06
    return [(LDH_ABS, 0, 0, 12),
            (JEQ, 0, 6, 0x86DD),      # not IPv6 -> drop
            (LDB_ABS, 0, 0, 20),      # next header
            (JEQ, 3, 0, 58),          # ICMPv6 -> accept
            (JEQ, 0, 3, 17),          # not UDP -> drop
            (LDH_ABS, 0, 0, 56),      # UDP destination port
            (JEQ, 0, 1, VXLAN_PORT),  # not VXLAN -> drop
            (RET, 0, 0, 0x40000),     # accept
            (RET, 0, 0, 0)]           # drop


class Capture:
    """AF_PACKET sockets, one per namespace, each opened inside its namespace; drained by one epoll loop."""

    def __init__(self, names: list[str], icmp_id: int, family: int = 4):
        _raise_fd_limit(len(names) + 256)
        self.socks: dict[int, tuple[socket.socket, str]] = {}
        self.sel = selectors.DefaultSelector()
        prog = bpf_program6() if family == 6 else bpf_program(icmp_id)
        try:
            for name in names:
                with netns.inside(name):
                    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                try:
                    _attach_filter(s, prog)
                    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    s.setblocking(False)
                    _drain_discard(s)  # whatever arrived before the filter was on
                except OSError as exc:
                    s.close()
                    raise DataplaneError("open packet capture", name, exc.errno, exc.strerror or "") from None
                self.socks[s.fileno()] = (s, name)
                self.sel.register(s, selectors.EVENT_READ)
        except BaseException:
            self.close()
            raise
        self.order = 0

    def poll(self, timeout_s: float) -> list[tuple[str, bytes, str, bool, float, int]]:
        """(netns, frame, ifname, outgoing, kernel ts, read order) of everything queued, waiting up to timeout_s."""
        got = []
        for key, _ev in self.sel.select(max(0.0, timeout_s)):
            s, name = self.socks[key.fd]
            while True:
                try:
                    data, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(16))
                except (BlockingIOError, InterruptedError):
                    break
                ts = time.time()
                for level, typ, cdata in anc:
                    if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cdata) >= 16:
                        sec, nsec = struct.unpack("qq", cdata[:16])
                        ts = sec + nsec * 1e-9
                self.order += 1
                got.append((name, data, addr[0], addr[2] == PACKET_OUTGOING, ts, self.order))
        return got

    def close(self) -> None:
        """Close every socket, many at once: each packet socket's release waits for an RCU grace
        period (~12 ms here), so 1,600 closed one by one would take 20 s; in parallel, a fraction of one."""
        from concurrent.futures import ThreadPoolExecutor

        socks = [s for s, _n in self.socks.values()]
        for s in socks:
            with contextlib.suppress(Exception):
                self.sel.unregister(s)
        self.socks.clear()
        self.sel.close()
        if len(socks) > 8:
            with ThreadPoolExecutor(min(64, len(socks))) as pool:
                list(pool.map(socket.socket.close, socks))
        for s in socks:
            s.close()  # no-op for those already closed


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(hard, need)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _attach_filter(s: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    import ctypes

    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))  # struct sock_fprog; the kernel copies it
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _drain_discard(s: socket.socket) -> None:
    for _ in range(10000):
        try:
            s.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
