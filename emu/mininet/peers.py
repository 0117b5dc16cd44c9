"""The interfaces of a run's namespaces and which veth is whose peer, read from the kernel.

Nothing here is taken from the plan: ``links`` in Mininet's CLI should show
what the kernel has *now* (ground links come and go with the slices).

- :func:`read_interfaces`: one ``ip -j -d addr show`` per namespace (in a
  thread pool): name, ifindex, MAC, state, IPv4 addresses, and for a veth its
  peer's ifindex and the ``link_netnsid`` under which this namespace knows
  the peer's namespace.
- :func:`pair_veths`: a netnsid is local to the namespace that holds it, so
  to name the peer namespace we ask the kernel (``RTM_GETNSID`` with
  ``NETNSA_FD``) which id *this* namespace gives each candidate namespace; a
  candidate is a namespace of the run with a veth whose ifindex / peer ifindex
  mirror ours. Requests are pipelined on one netlink socket per namespace.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from emu.dataplane import netns
from emu.dataplane.procs import run_in

RTM_NEWNSID, RTM_GETNSID = 88, 90
NETNSA_NSID, NETNSA_FD = 1, 3
NLM_F_REQUEST = 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid


@dataclass
class IntfInfo:
    """One interface of one namespace, as ``ip -j -d addr show`` reports it."""

    netns: str
    name: str
    ifindex: int
    mac: str | None = None
    up: bool = False
    kind: str | None = None
    ipv4: list[tuple[str, int]] = field(default_factory=list)  # (address, prefix length), global scope
    peer_ifindex: int | None = None  # veth: IFLA_LINK
    peer_nsid: int | None = None  # veth: IFLA_LINK_NETNSID (None: the peer is in the same namespace)


def parse_ip_addr(netns_name: str, text: str) -> list[IntfInfo]:
    """Pure: ``ip -j -d addr show`` output of one namespace -> its interfaces."""
    out = []
    for link in json.loads(text or "[]"):
        kind = (link.get("linkinfo") or {}).get("info_kind")
        ipv4 = [(a["local"], int(a.get("prefixlen", 32))) for a in link.get("addr_info", [])
                if a.get("family") == "inet" and a.get("local")]
        out.append(IntfInfo(netns_name, link["ifname"], int(link["ifindex"]), link.get("address"),
                            "UP" in link.get("flags", []), kind, ipv4,
                            link.get("link_index") if kind == "veth" else None,
                            link.get("link_netnsid") if kind == "veth" else None))
    return out


def read_interfaces(names: list[str], workers: int = 8) -> dict[str, list[IntfInfo]]:
    """Every interface of every namespace in ``names`` (a namespace that is gone has none)."""
    def one(name: str) -> list[IntfInfo]:
        p = run_in(name, ["ip", "-j", "-d", "addr", "show"], timeout_s=30)
        return parse_ip_addr(name, p.stdout) if p.returncode == 0 else []

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names)))) as pool:
        return dict(zip(names, pool.map(one, names)))


def candidate_pairs(intfs: dict[str, list[IntfInfo]]) -> dict[str, set[str]]:
    """Pure: for each namespace, the namespaces that could hold one of its veth peers (mirrored ifindexes)."""
    by_ends: dict[tuple[int, int], set[str]] = {}
    for ns, lst in intfs.items():
        for i in lst:
            if i.peer_ifindex is not None and i.peer_nsid is not None:
                by_ends.setdefault((i.ifindex, i.peer_ifindex), set()).add(ns)
    out: dict[str, set[str]] = {}
    for ns, lst in intfs.items():
        cands: set[str] = set()
        for i in lst:
            if i.peer_ifindex is not None and i.peer_nsid is not None:
                cands |= by_ends.get((i.peer_ifindex, i.ifindex), set())
        cands.discard(ns)
        out[ns] = cands
    return out


def _nsid_request(seq: int, fd: int) -> bytes:
    attr = struct.pack("=HHI", 8, NETNSA_FD, fd)
    body = struct.pack("=B3x", socket.AF_UNSPEC) + attr  # struct rtgenmsg, padded
    return _HDR.pack(_HDR.size + len(body), RTM_GETNSID, NLM_F_REQUEST, seq, 0) + body


def _parse_nsid_replies(data: bytes, out: dict[int, int]) -> None:
    off = 0
    while off + _HDR.size <= len(data):
        length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            break
        if mtype == RTM_NEWNSID:
            a = off + _HDR.size + 4
            while a + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if atype == NETNSA_NSID:
                    out[seq] = struct.unpack_from("=i", data, a + 4)[0]
                a += (alen + 3) & ~3
        elif mtype == NLMSG_ERROR:
            out.setdefault(seq, -1)
        off += (length + 3) & ~3


def nsids_seen_from(name: str, targets: list[str], fds: dict[str, int]) -> dict[int, str]:
    """The ids namespace ``name`` gives the ``targets`` it has one for: ``{nsid: target}``."""
    if not targets:
        return {}
    with netns.inside(name):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    replies: dict[int, int] = {}
    try:
        sock.bind((0, 0))
        sock.settimeout(5.0)
        chunk = 256
        for start in range(0, len(targets), chunk):
            part = targets[start:start + chunk]
            sock.sendall(b"".join(_nsid_request(start + j + 1, fds[t]) for j, t in enumerate(part)))
            while sum(1 for s in replies if s > start) < len(part):
                _parse_nsid_replies(sock.recv(1 << 16), replies)
    finally:
        sock.close()
    return {nsid: targets[seq - 1] for seq, nsid in replies.items() if nsid >= 0}


def pair_veths(intfs: dict[str, list[IntfInfo]]) -> list[tuple[IntfInfo, IntfInfo]]:
    """Every veth pair whose two ends are both in ``intfs``' namespaces, each pair once."""
    cands = candidate_pairs(intfs)
    fds: dict[str, int] = {}
    try:
        for ns in intfs:
            try:
                fds[ns] = netns.open_fd(ns)
            except Exception:
                continue
        index = {(i.netns, i.ifindex): i for lst in intfs.values() for i in lst}
        pairs, seen = [], set()
        for ns, lst in intfs.items():
            if ns not in fds:
                continue
            ids = nsids_seen_from(ns, sorted(c for c in cands[ns] if c in fds), fds)
            for i in lst:
                if i.peer_ifindex is None:
                    continue
                peer_ns = ids.get(i.peer_nsid) if i.peer_nsid is not None else ns
                peer = index.get((peer_ns, i.peer_ifindex)) if peer_ns else None
                if peer is None:
                    continue
                key = frozenset([(i.netns, i.ifindex), (peer.netns, peer.ifindex)])
                if key not in seen:
                    seen.add(key)
                    pairs.append((i, peer))
        return pairs
    finally:
        for fd in fds.values():
            os.close(fd)
