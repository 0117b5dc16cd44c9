"""Ask the kernel's FIB, in bulk, where a satellite sends each destination, and compare with the plan.

DESIGN.md: "a pure-Python reference lookup must agree with the kernel's
FIB". For every satellite and destination GRC, an RTM_GETROUTE lookup (the
same as ``ip route get``, through the satellite's policy rules and slice
tables) gives the egress interface; the plan's reference segmented longest
match (:class:`emu.addressing.slm.SegmentedTable`) gives the allowed egress
directions. Retention is honoured: where slice k's table has no entry, the
kernel may still answer from slice k-1's table (grc §Time Slice Transition).

The lookups are pyroute2 ``rtmsg`` requests (encoded once per destination)
and their answers are decoded by pyroute2's parser; all of one satellite's
lookups are in flight at once on its namespace's ``NetlinkBatch``.
"""

from __future__ import annotations

import errno
import functools
import socket

from pyroute2.netlink.rtnl import RTM_GETROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from emu.dataplane.model import IDX_LO, Model
from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.nlmsg import decode, encode
from emu.orbit.constellation import DOWN
from emu.plan import actions


@functools.lru_cache(maxsize=65536)
def _get_body(dst: int) -> bytes:
    """``ip route get DST`` as a pyroute2 rtmsg (the same for every satellite, so encoded once)."""
    return encode(rtmsg, {"family": socket.AF_INET, "dst_len": 32}, [("RTA_DST", socket.inet_ntoa(dst.to_bytes(4, "big")))])


def route_get_many(nl: NetlinkBatch, dsts: list[int]) -> list[tuple[int, int | None, int | None]]:
    """For each IPv4 destination: (errno or 0, route type, egress ifindex), one request each, all in flight at once."""
    out = []
    for code, replies in nl.request_many(RTM_GETROUTE, [_get_body(d) for d in dsts], op="route get"):
        route = next((decode(rtmsg, body) for mtype, body in replies if mtype == RTM_NEWROUTE), None)
        if code or route is None:
            out.append((code or errno.ENODATA, None, None))
        else:
            out.append((0, route["type"], route.get("RTA_OIF")))
    return out


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


def _with_region(hit, d: int, bound: int, level: int):
    """The plan's entry, or the local route of the region the satellite binds (grc §Dynamic GRC Binding;
    emu.dataplane.desired.Desired.routes installs it beside the plan's entries, unless the plan states
    that prefix itself), whichever is the longer match for ``d``."""
    plen = 11 + 3 * level
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    if d & mask == bound & mask and (hit is None or hit[1] < plen):
        return d & mask, plen, actions.local()
    return hit


def compare(m: Model, fabric, k: int, dsts: list[int]) -> dict:
    """Check every satellite's FIB answer for ``dsts`` in slice k; return counts and the first mismatches."""
    tables = {kk: m.db.tables(kk) for kk in (k, k - 1) if kk >= 0}
    bound = {kk: m.db.bound_grc(kk) for kk in tables}
    checked, mismatches = 0, []
    for s, node in enumerate(m.satellites):
        ref = {kk: t.reference(s) for kk, t in tables.items()}
        answers = route_get_many(fabric.nl[node.netns], dsts)
        for d, (err, rtype, oif) in zip(dsts, answers):
            checked += 1
            hit = _with_region(ref[k].lookup(d), d, int(bound[k][s]), m.grc_level)
            if hit is not None:
                ok = err == 0 and oif in allowed_ifindexes(m, s, k, hit[2]) | ({IDX_LO} if rtype == 2 else set())
                want = hit
            else:
                prev = _with_region(ref[k - 1].lookup(d), d, int(bound[k - 1][s]), m.grc_level) if (k - 1) in ref \
                    else None
                ok = err in (errno.ENETUNREACH, errno.EHOSTUNREACH) or (
                    prev is not None and err == 0 and oif in allowed_ifindexes(m, s, k - 1, prev[2]))
                want = prev
            if not ok and len(mismatches) < 20:
                mismatches.append({"sat": node.name, "dst": socket.inet_ntoa(d.to_bytes(4, "big")), "errno": err,
                                   "oif": oif, "plan": actions.describe(want[2]) if want else None})
    return {"slice": k, "checked": checked, "mismatches": mismatches}

