"""A scapy probe that follows one packet through the running constellation, namespace by namespace.

How (the capture is :mod:`emu.dataplane.capture`): one AF_PACKET socket per
watched namespace, opened *inside* it (a socket keeps the namespace it was
created in) from this one thread, with a classic BPF filter so the kernel
only queues ICMP with our echo id, ICMP errors, and tunnelled ICMP (VXLAN on
UDP 4789, or ipip). Then the probe, an ICMP echo
request crafted with scapy and carrying a unique payload token, is sent from
a raw socket opened inside SRC's namespace, so SRC's kernel routes it. The
sockets queue what they see meanwhile; afterwards one epoll loop drains them.

Order comes from the kernel: every socket asks for SO_TIMESTAMPNS, which
stamps a received frame when it enters the stack and an outgoing one when it
is handed to the device, so sorting all sightings by stamp gives the order
the packet really took, whatever order we read the sockets in. Consecutive
sightings in one namespace make one *visit*: in by its first incoming
interface, out by its last outgoing one (a UT's ``lan`` -> ``vx0`` -> ``up0``
is in ``lan``, out ``up0``; a GS's ``up0`` -> ``vx0`` -> ``core`` is in
``up0``, out ``core``). ``sll_pkttype`` tells in (host) from out (outgoing).

The observed satellites and their egress directions are compared with the
plan's path for the slice the controller says is current
(:meth:`emu.plan.path.PathFinder.path`). Only the end hosts run Python; the
kernel forwards (DESIGN.md rule 1).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from emu.dataplane import netns
from emu.dataplane.capture import Capture
from emu.dataplane.ifnames import direction_of
from emu.dataplane.runview import RunView, Target
from emu.errors import DataplaneError, PlanError

MAX_CAPTURE = 400  # above this many namespaces, watch the plan's path and its neighbours only


# ============================================================================ pure helpers
@dataclass(frozen=True)
class Sighting:
    netns: str
    ifname: str
    outgoing: bool
    ts: float  # kernel time stamp (s since the epoch)
    order: int  # read order: a tie-breaker only
    kind: str  # request | reply | error
    tunnelled: bool = False
    detail: str = ""


def visits(sightings: list[Sighting]) -> list[dict]:
    """Group time-ordered sightings into visits: consecutive sightings in one namespace."""
    out: list[dict] = []
    for s in sorted(sightings, key=lambda s: (s.ts, s.order)):
        if not out or out[-1]["netns"] != s.netns:
            out.append({"netns": s.netns, "in_if": None, "out_if": None, "tunnelled": False, "seen": [],
                        "t": s.ts})
        v = out[-1]
        v["seen"].append(("out:" if s.outgoing else "in:") + s.ifname)
        v["tunnelled"] = v["tunnelled"] or s.tunnelled
        if s.outgoing:
            v["out_if"] = s.ifname
        elif v["in_if"] is None and not any(x.startswith("out:") for x in v["seen"][:-1]):
            v["in_if"] = s.ifname
    return out


def satellite_hops(hops: list[dict], is_satellite) -> list[tuple[str, str | None]]:
    return [(h["node"], h.get("egress", h.get("direction"))) for h in hops if is_satellite(h["node"])]


def matches_plan(observed: list[tuple[str, str | None]], planned: list[tuple[str, str | None]] | None,
                 plan_reachable: bool, reply_received: bool,
                 egresses: Mapping[str, Collection[str]] | None = None) -> bool:
    """Do the observed (satellite, egress) pairs follow the plan?

    A reachable plan must be followed exactly, except where a table entry has
    several egresses (ECMP/UCMP, grc §Routing Table Structure): ``egresses``
    (satellite -> the directions its entry for the probe's destination
    allows) lets the kernel's hash take any of them, as long as the probe
    enters at the plan's first satellite and leaves as the plan does. An
    unreachable plan (no route at some satellite, no satellite in view, no
    ground station) matches when the probe followed the plan's hops and went
    no further: at most one more satellite, where it died (no egress), and
    no reply came back.
    """
    if planned is None:
        return False
    if plan_reachable:
        if not observed or not planned:
            return False
        if observed == planned:
            return True
        return egresses is not None and observed[0][0] == planned[0][0] and observed[-1][1] == planned[-1][1] \
            and all(eg in egresses.get(sat, ()) for sat, eg in observed)
    if reply_received:
        return False
    if observed == planned:
        return True
    return observed[:-1] == planned and observed[-1][1] is None


# ============================================================================ the probe
def classify(frame: bytes, token: bytes, icmp_id: int) -> tuple[str, bool, str] | None:
    """(request|reply|error, tunnelled, detail) if ``frame`` carries our probe (found by its token), else None."""
    if token not in frame:
        return None
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN  # noqa: F401 - binds UDP 4789 to VXLAN

    pkt = Ether(frame)
    tunnelled = bool(pkt.haslayer(VXLAN)) or (pkt.haslayer(IP) and pkt[IP].proto == 4)  # vx0/vx6 or tun0
    icmp = pkt.getlayer(ICMP)
    if icmp is None:
        return _classify6(pkt, tunnelled, icmp_id)
    ip = icmp.underlayer if isinstance(icmp.underlayer, IP) else None
    where = f"{ip.src} > {ip.dst}" if ip is not None else ""
    if icmp.type == 8 and icmp.id == icmp_id:
        return "request", tunnelled, where
    if icmp.type == 0 and icmp.id == icmp_id:
        return "reply", tunnelled, where
    if icmp.type in (3, 11):
        return "error", tunnelled, f"{where} type {icmp.type} code {icmp.code}"
    return None


def _classify6(pkt, tunnelled: bool, icmp_id: int) -> tuple[str, bool, str] | None:
    """The ICMPv6 part of :func:`classify`: echo request/reply with our id, destination unreachable
    (type 1) or time exceeded (type 3) quoting our probe."""
    from scapy.layers.inet6 import IPv6, ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6TimeExceeded

    for layer, kind in ((ICMPv6DestUnreach, "error"), (ICMPv6TimeExceeded, "error"),
                        (ICMPv6EchoRequest, "request"), (ICMPv6EchoReply, "reply")):
        icmp = pkt.getlayer(layer)
        if icmp is None:
            continue
        ip = icmp.underlayer if isinstance(icmp.underlayer, IPv6) else None
        where = f"{ip.src} > {ip.dst}" if ip is not None else ""
        if kind == "error":
            return "error", tunnelled, f"{where} type {icmp.type} code {icmp.code}"
        if icmp.id == icmp_id:
            return kind, tunnelled, where
    return None


def _send_probe(src_ns: str, dst_addr: str, icmp_id: int, seq: int, token: bytes) -> tuple[float, str | None]:
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoRequest
    from scapy.packet import Raw

    six = ":" in dst_addr
    payload = bytes((ICMPv6EchoRequest(id=icmp_id, seq=seq, cksum=0) if six else ICMP(type=8, id=icmp_id, seq=seq))
                    / Raw(token))  # ICMPv6: the kernel fills in the checksum (pseudo-header) on raw sockets
    with netns.inside(src_ns):
        s = (socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) if six
             else socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    try:
        t = time.time()
        s.sendto(payload, (dst_addr, 0))
        return t, None
    except OSError as exc:
        return time.time(), exc.strerror or str(exc)
    finally:
        s.close()


def _planned(view: RunView, src: str | None, dst: str | None, k: int) -> tuple[dict | None, str | None]:
    if src is None or dst is None:
        return None, "the destination is not a node of this run"
    from emu.plan.path import PathFinder

    try:
        return PathFinder(view.db).path(src, dst, k), None
    except PlanError as exc:
        return None, str(exc)


def _plan_egresses(view: RunView, planned: dict | None, sats: list[tuple[str, str | None]], k: int
                   ) -> dict[str, list[str]] | None:
    """The directions each observed satellite's plan entry allows for the probe's destination GRC."""
    if not planned or not planned.get("reachable") or not planned.get("grc_dst"):
        return None
    from emu.plan.path import PathFinder

    pf = PathFinder(view.db)
    dst = int(ipaddress.IPv4Address(planned["grc_dst"]))
    return {sat: pf.egresses(k, sat, dst) for sat, _eg in sats if sat in pf.sat_index}


def _capture_set(view: RunView, plan: dict | None, k: int, max_capture: int) -> tuple[list[str], dict]:
    everything = [n["netns"] for n in view.nodes]
    if len(everything) <= max_capture:
        return everything, {"scope": "all", "namespaces": len(everything)}
    if plan is None or not plan.get("hops"):
        return everything, {"scope": "all", "namespaces": len(everything),
                            "note": "no plan path to restrict to: watching every namespace"}
    sats = {n["name"]: n for n in view.nodes if n["kind"] == "satellite"}
    on_path = {h["node"] for h in plan["hops"] if h["node"] in sats}
    idx = {int(sats[n]["index"]) for n in on_path}
    slices = sorted({k, min(k + 1, view.db.n_slices - 1)})
    for kk in slices:  # where every ground node attaches: an unreachable plan stops short of it
        idx |= {int(s) for s in view.db.ground_links(kk).ravel().tolist() if s >= 0}  # every antenna
    near = set(idx)
    for kk in slices:
        L = view.db.links(kk)
        for a, b in zip(L["a"].tolist(), L["b"].tolist()):
            if a in idx:
                near.add(b)
            if b in idx:
                near.add(a)
    by_index = {int(n["index"]): n["netns"] for n in sats.values()}
    chosen = [by_index[i] for i in sorted(near) if i in by_index]
    chosen += [n["netns"] for n in view.nodes if n["kind"] != "satellite"]
    return chosen, {"scope": "path+neighbours", "namespaces": len(chosen),
                    "note": f"{len(everything)} namespaces in the run: watching the plan's path satellites and "
                            f"every satellite a ground node links to, their ISL/shell neighbours in slices "
                            f"{k}..{k + 1}, and every ground and terrestrial node (--all watches everything)"}


@dataclass
class ProbeRun:
    """Everything one probe produced, for :func:`_report`."""

    src_node: dict
    dst: str
    target: Target
    slice: int
    planned: dict | None
    plan_reason: str | None
    capture: dict
    icmp_id: int = field(default_factory=lambda: secrets.randbelow(0xFFFF) + 1)
    seq: int = field(default_factory=lambda: secrets.randbelow(0xFFFF) + 1)
    token: bytes = field(default_factory=lambda: b"leo-emu-trace " + secrets.token_hex(8).encode())
    sent_at: float = 0.0
    send_error: str | None = None
    slice_after: int = 0
    sightings: list[Sighting] = field(default_factory=list)


def trace(view: RunView, src: str, dst: str, timeout_s: float = 1.5, max_capture: int = MAX_CAPTURE,
          family: int | None = None) -> dict:
    """Send one probe from node ``src`` toward ``dst`` (node or IP address; ``family`` 6: the node's IPv6
    address, an ICMPv6 probe, forwarded by the IPv6 GRC tables); report where it went."""
    src_node = view.node(src)
    k = view.current_slice()
    target = view.target(dst, k, family)
    family = 6 if ":" in target.addr else 4
    planned, plan_reason = _planned(view, src_node["name"], target.name, k)
    names, capture_info = _capture_set(view, planned, k, max_capture)
    if src_node["netns"] not in names:
        names.append(src_node["netns"])
    for n in names:
        if not netns.exists(n):
            raise DataplaneError("open packet capture", n, None, "the namespace does not exist (is the run up?)")
    pr = ProbeRun(src_node, dst, target, k, planned, plan_reason, capture_info)
    t_open = time.perf_counter()
    cap = Capture(names, pr.icmp_id, family)
    try:
        pr.capture["open_s"] = round(time.perf_counter() - t_open, 3)
        pr.sent_at, pr.send_error = _send_probe(src_node["netns"], target.addr, pr.icmp_id, pr.seq, pr.token)
        deadline = time.monotonic() + timeout_s
        reply_seen = False
        while time.monotonic() < deadline:
            for name, frame, ifname, outgoing, ts, order in cap.poll(min(deadline - time.monotonic(), 0.05)):
                c = classify(frame, pr.token, pr.icmp_id)
                if c is None:
                    continue
                pr.sightings.append(Sighting(name, ifname, outgoing, ts, order, *c))
                if c[0] == "reply" and name == src_node["netns"] and not outgoing and not reply_seen:
                    reply_seen = True
                    deadline = min(deadline, time.monotonic() + 0.2)  # stragglers, then stop
            if pr.send_error and not pr.sightings:
                break
    finally:
        cap.close()
    pr.slice_after = view.current_slice()
    return _report(view, pr)


def _report(view: RunView, pr: ProbeRun) -> dict:
    by_ns = {n["netns"]: n for n in view.nodes}
    sightings = pr.sightings
    k, k_after, planned = pr.slice, pr.slice_after, pr.planned

    def hop(v: dict) -> dict:
        node = by_ns.get(v["netns"], {"name": v["netns"], "kind": "?"})
        return {"node": node["name"], "kind": node["kind"], "in_if": v["in_if"], "out_if": v["out_if"],
                "direction": direction_of(node["kind"], v["out_if"]), "tunnelled": v["tunnelled"],
                "seen": v["seen"], "t_us": round((v["t"] - t0) * 1e6, 1)}

    req = [s for s in sightings if s.kind == "request"]
    rep = [s for s in sightings if s.kind == "reply"]
    t0 = min((s.ts for s in sightings), default=pr.sent_at)
    observed = [hop(v) for v in visits(req)]
    reply_observed = [hop(v) for v in visits(rep)]
    errors = []
    for s in sorted((s for s in sightings if s.kind == "error"), key=lambda s: (s.ts, s.order)):
        node = by_ns.get(s.netns, {"name": s.netns})["name"]
        if not errors or errors[-1]["detail"] != s.detail:
            errors.append({"first_seen_at": node, "ifname": s.ifname, "detail": s.detail})
    src_ns = pr.src_node["netns"]
    out_src = [s.ts for s in req if s.netns == src_ns and s.outgoing]
    in_src = [s.ts for s in rep if s.netns == src_ns and not s.outgoing]
    is_sat = {n["name"] for n in view.nodes if n["kind"] == "satellite"}.__contains__
    planned_hops = [{"node": h["node"], "egress": h.get("egress")} for h in planned["hops"]] if planned else None
    obs_sats = satellite_hops(observed, is_sat)
    plan_sats = satellite_hops(planned_hops, is_sat) if planned_hops is not None else None
    names_seen = [h["node"] for h in observed]
    out = {
        "src": pr.src_node["name"], "dst": pr.dst, "dst_addr": pr.target.addr, "dst_node": pr.target.name,
        "family": 6 if ":" in pr.target.addr else 4,
        "slice": k, "slice_changed": k_after != k, "slice_after": k_after,
        "probe": {"icmp_id": pr.icmp_id, "icmp_seq": pr.seq, "payload": pr.token.decode()},
        "send_error": pr.send_error,
        "observed": observed,
        "loop": len(names_seen) != len(set(names_seen)),
        "reply_received": bool(in_src),
        "rtt_ms": round((min(in_src) - min(out_src)) * 1e3, 3) if in_src and out_src else None,
        "reply_observed": [{k2: h[k2] for k2 in ("node", "in_if", "out_if", "direction")} for h in reply_observed],
        "icmp_errors": errors,
        "planned": planned_hops,
        "plan_reachable": planned.get("reachable") if planned else None,
        "plan_reason": pr.plan_reason or (planned or {}).get("reason"),
        "matches_plan": matches_plan(obs_sats, plan_sats, bool(planned and planned.get("reachable")), bool(in_src),
                                     _plan_egresses(view, planned, obs_sats, k)),
        "observed_satellites": [list(x) for x in obs_sats],
        "planned_satellites": [list(x) for x in plan_sats] if plan_sats is not None else None,
        "capture": pr.capture,
    }
    notes = []
    if k_after != k:
        notes.append(f"the slice changed during the probe ({k} -> {k_after}): compared with slice {k}")
    if not observed and not pr.send_error:
        notes.append("the probe was not seen anywhere, not even leaving SRC: SRC's kernel dropped it "
                     "(a blackhole/unreachable route?)")
    if planned and not planned.get("reachable"):
        notes.append(f"the plan says unreachable in slice {k} ({planned.get('reason')}): a match means the "
                     "probe followed the plan's hops and died where the plan stops")
    elif not out["matches_plan"] and plan_sats is not None and obs_sats:
        notes.append("differs from the plan: ECMP may hash a flow onto another of an entry's egresses, "
                     "and next slice's table is installed just before its boundary")
    out["notes"] = notes
    return out
