"""Ask the kernel's FIB, in bulk, where a satellite sends each destination, and compare with the plan.

DESIGN.md: "a pure-Python reference lookup must agree with the kernel's
FIB". For every satellite and destination GRC, an RTM_GETROUTE lookup (the
same as ``ip route get``, through the satellite's policy rules and slice
tables) gives the egress interface; the plan's reference segmented longest
match (:class:`emu.addressing.slm.SegmentedTable`) gives the allowed egress
directions. Retention is honoured: where slice k's table has no entry, the
kernel may still answer from slice k-1's table (grc §Time Slice Transition).
"""

from __future__ import annotations

import errno
import socket
import struct

from emu.dataplane.model import IDX_LO, Model
from emu.dataplane.netlink import NetlinkBatch, parse_attrs
from emu.orbit.constellation import DOWN
from emu.plan import actions

RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLMSG_ERROR = 2
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15
_NLH = struct.Struct("=IHHII")
_RTM = struct.Struct("=BBBBBBBBI")


def route_get_many(nl: NetlinkBatch, dsts: list[int]) -> list[tuple[int, int | None, int | None]]:
    """For each IPv4 destination: (errno or 0, route type, egress ifindex), one request each, all sent at once."""
    base = 0x40000000
    msgs = []
    for i, d in enumerate(dsts):
        body = _RTM.pack(socket.AF_INET, 32, 0, 0, 0, 0, 0, 0, 0) + struct.pack("=HH", 8, RTA_DST) + d.to_bytes(4, "big")
        msgs.append(_NLH.pack(16 + len(body), RTM_GETROUTE, 1, base + i, 0) + body)  # NLM_F_REQUEST
    nl.sock.send(b"".join(msgs))
    out: dict[int, tuple[int, int | None, int | None]] = {}
    buf = bytearray(1 << 16)
    while len(out) < len(dsts):
        n = nl.sock.recv_into(buf)
        off = 0
        while off + 16 <= n:
            mlen, mtype, _fl, seq, _pid = _NLH.unpack_from(buf, off)
            i = seq - base
            if 0 <= i < len(dsts):
                if mtype == NLMSG_ERROR:
                    out[i] = (-struct.unpack_from("=i", buf, off + 16)[0], None, None)
                elif mtype == RTM_NEWROUTE:
                    p = bytes(buf[off + 16:off + mlen])
                    rtype = p[7]
                    oif = parse_attrs(p, 12).get(RTA_OIF)
                    out[i] = (0, rtype, struct.unpack("=I", oif[:4])[0] if oif else None)
            off += (mlen + 3) & ~3
    return [out[i] for i in range(len(dsts))]


def allowed_ifindexes(m: Model, sat: int, k: int, code: int) -> set[int]:
    act = actions.decode(code)
    if act.kind == actions.LOCAL:
        return {IDX_LO}
    out = set()
    for e in act.egress:
        nh = m.nexthop_of(sat, e.direction, k, act.down_target if e.direction == DOWN else None)
        if nh:
            out.add(nh[0])
    return out


def compare(m: Model, fabric, k: int, dsts: list[int]) -> dict:
    """Check every satellite's FIB answer for ``dsts`` in slice k; return counts and the first mismatches."""
    tables = {kk: m.db.tables(kk) for kk in (k, k - 1) if kk >= 0}
    checked, mismatches = 0, []
    for s, node in enumerate(m.satellites):
        ref = {kk: t.reference(s) for kk, t in tables.items()}
        answers = route_get_many(fabric.nl[node.netns], dsts)
        for d, (err, rtype, oif) in zip(dsts, answers):
            checked += 1
            hit = ref[k].lookup(d)
            if hit is not None:
                ok = err == 0 and oif in allowed_ifindexes(m, s, k, hit[2]) | ({IDX_LO} if rtype == 2 else set())
                want = hit
            else:
                prev = ref.get(k - 1).lookup(d) if (k - 1) in ref else None
                ok = err in (errno.ENETUNREACH, errno.EHOSTUNREACH) or (
                    prev is not None and err == 0 and oif in allowed_ifindexes(m, s, k - 1, prev[2]))
                want = prev
            if not ok and len(mismatches) < 20:
                mismatches.append({"sat": node.name, "dst": socket.inet_ntoa(d.to_bytes(4, "big")), "errno": err,
                                   "oif": oif, "plan": actions.describe(want[2]) if want else None})
    return {"slice": k, "checked": checked, "mismatches": mismatches}

