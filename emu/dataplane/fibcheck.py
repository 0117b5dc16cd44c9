"""Ask the kernel's FIB, in bulk, where a satellite sends each destination, and compare with the plan.

DESIGN.md: "a pure-Python reference lookup must agree with the kernel's
FIB". For every satellite and destination GRC, an RTM_GETROUTE lookup (the
same as ``ip route get``, through the satellite's policy rules and slice
tables) gives the egress interface; the plan, as the data plane renders it
(:class:`emu.dataplane.slicestate.Desired`), gives the one answer allowed
(:func:`expect`). The check is strict: a "local" answer is accepted only for
a GRC address the satellite binds, its bound region or a LOCAL entry; an
"unreachable" one only where neither slice k's nor the retained slice k-1's
table has an entry (grc §Forwarding Algorithm step 5), or where the entry's
egress has no link (counted by the applier as unresolved). Retention is
honoured: where slice k's table has no entry, the kernel answers from slice
k-1's table (grc §Time Slice Transition).

The lookups are pyroute2 ``rtmsg`` requests (encoded once per destination)
and their answers are decoded by pyroute2's parser; all of one satellite's
lookups are in flight at once on its namespace's ``NetlinkBatch``.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from dataclasses import dataclass

from pyroute2.netlink.rtnl import RTM_GETROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from emu.addressing.grc import ipv6_base, prefix6_of
from emu.addressing.slm import SegmentedTable
from emu.dataplane.model import IDX_LO, Model
from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.nlmsg import decode, encode
from emu.dataplane.nlroute import RTN_LOCAL, RTN_UNICAST
from emu.dataplane.slicestate import Desired
from emu.orbit.constellation import DOWN
from emu.plan import actions


@functools.lru_cache(maxsize=65536)
def _get_body(dst: int, base6: int | None = None, mark: int | None = None) -> bytes:
    """``ip route get DST`` as a pyroute2 rtmsg (the same for every satellite, so encoded once); with
    ``base6`` (the GRC /96, emu.addressing.grc.ipv6_base) the GRC's IPv6 form, ``ip -6 route get``, with
    ``mark`` the satellite's slice mark (``... mark M``: what its forwarded packets carry,
    :mod:`emu.dataplane.slicemark`)."""
    marked = [("RTA_MARK", mark)] if mark else []
    if base6 is not None:
        return encode(rtmsg, {"family": socket.AF_INET6, "dst_len": 128}, [("RTA_DST", _text6(dst, base6))] + marked)
    return encode(rtmsg, {"family": socket.AF_INET, "dst_len": 32},
                  [("RTA_DST", socket.inet_ntoa(dst.to_bytes(4, "big")))] + marked)


def _text6(dst: int, base6: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, prefix6_of(dst, 32, base6)[0].to_bytes(16, "big"))


def route_get_many(nl: NetlinkBatch, dsts: list[int], base6: int | None = None, mark: int | None = None
                   ) -> list[tuple[int, int | None, int | None]]:
    """For each GRC destination (IPv4; with ``base6`` its IPv6 form), looked up as a packet with ``mark``
    would be: (errno or 0, route type, egress ifindex), one request each, all in flight at once."""
    out = []
    bodies = [_get_body(d, base6, mark) for d in dsts]
    for code, replies in nl.request_many(RTM_GETROUTE, bodies, op="route get"):
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


LOCAL, FORWARD, UNREACHABLE = "local", "forward", "unreachable"
_UNREACH = (errno.ENETUNREACH, errno.EHOSTUNREACH)
LOCAL_CODE = actions.encode(actions.LOCAL, {})


@dataclass(frozen=True)
class Expected:
    """What the kernel must answer for one (satellite, destination): ``what`` and, to forward, the allowed
    egress ifindexes; ``or_unreachable``: a retained entry whose links slice k took down may also be dead."""

    what: str
    oifs: frozenset[int] = frozenset()
    slice: int | None = None
    code: int | None = None
    or_unreachable: bool = False


def slice_table(d: Desired, s: int, kk: int) -> SegmentedTable:
    """Table(kk) of satellite s as the kernel holds it: the plan's entries plus the bound region as a local
    route unless the plan states that prefix itself (:meth:`Desired.routes`)."""
    t = d.tables(kk).reference(s)
    prefix, plen = d.region(s, kk)
    if (prefix, plen) not in t:
        t.insert(prefix, plen, LOCAL_CODE)
    return t


def expect(m: Model, s: int, k: int, dst: int, local: set[int], table_k: SegmentedTable,
           table_prev: SegmentedTable | None) -> Expected:
    """The one answer the plan allows for ``dst`` at satellite s in slice k, in the kernel's lookup order:
    the local table (bound GRC addresses of slices k and k-1), then table(k), then the retained table(k-1)."""
    if dst in local:
        return Expected(LOCAL)
    hit = table_k.lookup(dst)
    if hit is not None:
        if actions.decode(hit[2]).kind == actions.LOCAL:
            return Expected(LOCAL, slice=k, code=hit[2])
        oifs = allowed_ifindexes(m, s, k, hit[2])
        return Expected(FORWARD if oifs else UNREACHABLE, frozenset(oifs), k, hit[2])
    prev = table_prev.lookup(dst) if table_prev is not None else None
    if prev is None:
        return Expected(UNREACHABLE)
    if actions.decode(prev[2]).kind == actions.LOCAL:
        return Expected(LOCAL, slice=k - 1, code=prev[2])
    oifs = allowed_ifindexes(m, s, k - 1, prev[2])
    alive = oifs & allowed_ifindexes(m, s, k, prev[2])  # the same directions still linked in slice k
    return Expected(FORWARD if oifs else UNREACHABLE, frozenset(oifs), k - 1, prev[2],
                    or_unreachable=bool(oifs) and alive != oifs)


def accepts(e: Expected, err: int, rtype: int | None, oif: int | None) -> bool:
    """Does the kernel's answer (errno, route type, egress ifindex) give what ``e`` allows?"""
    if e.what == LOCAL:
        return err == 0 and rtype == RTN_LOCAL
    if e.what == UNREACHABLE:
        return err in _UNREACH
    if err in _UNREACH:
        return e.or_unreachable
    return err == 0 and rtype == RTN_UNICAST and oif in e.oifs


def compare(m: Model, fabric, k: int, dsts: list[int], k0: int = 0, families: tuple[int, ...] = (4,),
            desired: Desired | None = None) -> dict:
    """Check every satellite's FIB answer for ``dsts`` in slice k of a run started at ``k0``, in each of
    ``families``; return counts (per question asked) and the first mismatches (``family`` 6 marked).

    The plan's answer is computed once per (satellite, destination) from one :class:`Desired` (``desired``,
    or one made here) and held against every family: family 6 asks for the GRCs' IPv6 forms (grc §GRC
    encoding), whose tables, rules and bindings are the IPv4 ones' twins
    (:func:`emu.dataplane.desired.routes6`), so the allowed answers are the same."""
    bases = {f: (ipv6_base(m.cfg.grc_ipv6_prefix) if f == 6 else None) for f in families}
    d = desired if desired is not None else Desired(m, k0)
    addrs = d.grc_addrs(k)
    checked, mismatches = 0, []
    counts = {LOCAL: 0, FORWARD: 0, UNREACHABLE: 0, "retained": 0}
    # under the mark switch: asked with the mark each satellite's nftables chain gives a packet now, read back
    # from the kernel (None: no such table, the rules rotate)
    marks = fabric.nft().marks([s.netns for s in m.satellites])
    for s, node in enumerate(m.satellites):
        table_k = slice_table(d, s, k)
        table_prev = slice_table(d, s, k - 1) if k > k0 else None
        local = {int(ipaddress.IPv4Address(a)) for a in addrs.get(s, {})}
        wants = [expect(m, s, k, dst, local, table_k, table_prev) for dst in dsts]
        for family, base6 in bases.items():
            answers = route_get_many(fabric.nl[node.netns], dsts, base6, marks.get(node.netns))
            for dst, e, (err, rtype, oif) in zip(dsts, wants, answers):
                checked += 1
                counts[e.what] += 1
                counts["retained"] += e.slice == k - 1
                if not accepts(e, err, rtype, oif) and len(mismatches) < 20:
                    text = _text6(dst, base6) if base6 is not None else socket.inet_ntoa(dst.to_bytes(4, "big"))
                    mismatches.append({"sat": node.name, "dst": text, "errno": err, "type": rtype, "oif": oif,
                                       "want": e.what, "oifs": sorted(e.oifs), "plan_slice": e.slice,
                                       "plan": actions.describe(e.code) if e.code else None,
                                       **({"family": 6} if family == 6 else {})})
    return {"slice": k, "checked": checked, "expected": counts, "mismatches": mismatches}


def check_run(view, attempts: int = 3, sat_sample: int = 7) -> dict:
    """``leo-emu status --fib``: every satellite of a live run asked (strictly, IPv4 and IPv6) where every ground
    node's GRC, every ``sat_sample``-th satellite's GRC and own address, and one unassigned GRC go in the current
    slice. Retried when a slice boundary falls inside the check; ``slice_changed`` says if every attempt
    straddled one. The plan's side (:class:`Desired`) is built once for every attempt and both families."""
    from emu.dataplane.fabric import Fabric

    info = view.info
    m = Model.from_plan(view.db, info["prefix"], info["n_slices"])  # run.json: the run's last slice + 1
    d = Desired(m, info["start_slice"])
    fabric = Fabric([s.netns for s in m.satellites], switched=len(m.satellites))
    try:
        for _ in range(attempts):
            k = view.current_slice()
            dsts = [int(g.grc) for g in m.db.ground] + [int(x) | 1 for x in m.db.bound_grc(k)[::sat_sample]]
            dsts += [int(x) for x in m.db.sat_addresses[::sat_sample]]  # satellites as destinations (satgrc)
            dsts.append(UNASSIGNED_GRC)
            out = compare(m, fabric, k, dsts, info["start_slice"], families=(4, 6), desired=d)
            out["slice_changed"] = view.current_slice() != k
            if not out["slice_changed"]:
                break
        return out
    finally:
        fabric.close()


UNASSIGNED_GRC = 0xD0010203  # 208.1.2.3: shell code 13, which no scenario uses: no table may route it
