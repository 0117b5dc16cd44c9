"""Who speaks BGP with whom: pure inputs -> one :class:`Router` per BGP speaker.

spec: bgp-mobile-routing-atn §3 (ATN/IPS Routing System):
- every c-ASBR of one operator (an INET partition) shares that operator's core
  ASN and holds the full table, synchronised over iBGP (a route reflector
  where it pays: from ``RR_MIN_CORES`` c-ASBRs on, the first by name reflects
  and the others peer only with it);
- the cores of different operators peer over eBGP (the "core of cores");
- every s-ASBR (one per ground station) has its own stub ASN, peers over eBGP
  with one or more c-ASBRs, announces the MNPs of the users attached through
  it and receives only a default route;
- each c-ASBR black-holes its operator's MSPs (``unreachable``: ICMPv6
  destination unreachable, never a less specific route).
spec §6 (BGP Protocol Considerations): aggressive timers (hold 3 s, MRAI 0) or BFD.

The addresses of each peering come from the data plane (one link per peering);
nothing here touches the kernel.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emu.errors import ScenarioError

RR_MIN_CORES = 4  # below this an iBGP full mesh among an operator's c-ASBRs is cheaper than a reflector
ASN_MAX = 2**32 - 1


@dataclass(frozen=True)
class Timers:
    """A BGP timer profile. BIRD 2 has no MRAI: it sends an UPDATE as soon as a route changes (MRAI 0).

    spec §6: RFC 4271 defaults (hold 90 s, keepalive 30 s) vs the aggressive
    hold 3 s with BFD for sub-second failure detection.
    """

    name: str
    hold_s: int
    keepalive_s: int
    connect_retry_s: int
    connect_delay_s: int  # first connection attempt after (re)start
    error_wait_s: tuple[int, int]  # BIRD's back-off after a session error (min, max)
    bfd: bool
    bfd_interval_ms: int = 100
    bfd_multiplier: int = 3


AGGRESSIVE = Timers("aggressive", hold_s=3, keepalive_s=1, connect_retry_s=1, connect_delay_s=1,
                    error_wait_s=(1, 2), bfd=True)
DEFAULT = Timers("default", hold_s=90, keepalive_s=30, connect_retry_s=120, connect_delay_s=5,
                 error_wait_s=(60, 300), bfd=False)  # RFC 4271 §10 suggestions; BIRD's connect delay and error wait
TIMER_PROFILES = {t.name: t for t in (AGGRESSIVE, DEFAULT)}


# ---------------------------------------------------------------------------- inputs (plan-like)
@dataclass(frozen=True)
class Operator:
    """One satellite network operator: its core AS and the MSPs its MNPs are delegated from."""

    name: str
    core_asn: int
    msps: tuple[str, ...]


@dataclass(frozen=True)
class Speaker:
    """A BGP speaker: a c-ASBR (``operator`` set, ``asn`` None: the operator's core ASN) or an s-ASBR."""

    name: str
    netns: str
    router_id: str
    operator: str | None = None  # c-ASBR: its operator
    asn: int | None = None  # s-ASBR: its own stub ASN
    mnps: tuple[str, ...] = ()  # s-ASBR: MNPs attached through it at start

    @property
    def is_core(self) -> bool:
        return self.operator is not None


@dataclass(frozen=True)
class Link:
    """A peering link between two speakers and the address each end has on it."""

    a: str
    a_addr: str
    b: str
    b_addr: str


# ---------------------------------------------------------------------------- output
@dataclass(frozen=True)
class Peering:
    """One BGP session as seen from one end; ``name`` (the peer's name) is the BIRD protocol name."""

    name: str
    kind: str  # "stub" (a c-ASBR's s-ASBR), "core" (an s-ASBR's c-ASBR), "ibgp", "ebgp" (core of cores)
    local_addr: str
    peer_addr: str
    peer_asn: int
    rr_client: bool = False


@dataclass(frozen=True)
class Router:
    name: str
    netns: str
    role: str  # "core" | "stub"
    asn: int
    router_id: str
    peerings: tuple[Peering, ...]
    msps: tuple[str, ...] = ()  # core: its operator's MSPs (black-holed, announced to other cores)
    all_msps: tuple[str, ...] = ()  # core: every operator's MSPs (what a stub may announce into)
    mnps: tuple[str, ...] = ()  # stub: initial announcements


@dataclass(frozen=True)
class Network:
    routers: dict[str, Router]
    operators: dict[str, Operator]

    def cores(self) -> list[Router]:
        return [r for r in self.routers.values() if r.role == "core"]

    def stubs(self) -> list[Router]:
        return [r for r in self.routers.values() if r.role == "stub"]


# ---------------------------------------------------------------------------- validation
def _ipv6_prefix(s: str, fld: str, min_len: int = 0) -> str:
    try:
        net = ipaddress.IPv6Network(s, strict=True)
    except ValueError:
        raise ScenarioError("not an IPv6 prefix with host bits zero", fld, s) from None
    if net.prefixlen < min_len:
        raise ScenarioError(f"prefix shorter than /{min_len}", fld, s)
    return str(net)


def _ipv6_addr(s: str, fld: str) -> str:
    try:
        addr = ipaddress.IPv6Address(s)
    except ValueError:
        raise ScenarioError("not an IPv6 address", fld, s) from None
    if addr.is_link_local or addr.is_unspecified or addr.is_multicast:
        raise ScenarioError("not a unicast global or ULA address", fld, s)
    return str(addr)


def _asn(v, fld: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= ASN_MAX or v == 23456:
        raise ScenarioError(f"not a 32-bit AS number (1..{ASN_MAX}, not AS_TRANS 23456)", fld, v)
    return v


def _router_id(s: str, fld: str) -> str:
    try:
        rid = ipaddress.IPv4Address(s)
    except ValueError:
        raise ScenarioError("not a dotted-quad router id", fld, s) from None
    if int(rid) == 0:
        raise ScenarioError("router id 0.0.0.0 is not allowed", fld, s)
    return str(rid)


def _name(s: str, fld: str) -> str:
    # the name becomes a BIRD protocol name: a symbol (letters, digits, _), not starting with a digit
    if not s or not (s[0].isalpha() or s[0] == "_") or not all(c.isalnum() or c in "_-" for c in s):
        raise ScenarioError("not a name of letters, digits, '_' and '-' starting with a letter", fld, s)
    return s


def protocol_name(peer: str) -> str:
    """BIRD protocol names are symbols: the peer's name with '-' as '_'."""
    return peer.replace("-", "_")


# ---------------------------------------------------------------------------- build
def build_network(operators: list[Operator], speakers: list[Speaker], links: list[Link],
                  rr_min_cores: int = RR_MIN_CORES) -> Network:
    """Validate the inputs and give every speaker its role, ASN and sessions (spec §3)."""
    ops: dict[str, Operator] = {}
    for i, op in enumerate(operators):
        _name(op.name, f"operators[{i}].name")
        if op.name in ops:
            raise ScenarioError("duplicate operator", f"operators[{i}].name", op.name)
        _asn(op.core_asn, f"operators[{i}].core_asn")
        if not op.msps:
            raise ScenarioError("an operator needs at least one MSP", f"operators[{i}].msps", list(op.msps))
        msps = tuple(_ipv6_prefix(m, f"operators[{i}].msps[{j}]", 8) for j, m in enumerate(op.msps))
        ops[op.name] = Operator(op.name, op.core_asn, msps)
    all_msps = tuple(m for op in ops.values() for m in op.msps)
    nets = [ipaddress.IPv6Network(m) for m in all_msps]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            if a.overlaps(b):
                raise ScenarioError("MSPs of operators overlap", "operators.msps", f"{a} / {b}")
    core_asns = {op.core_asn: op.name for op in ops.values()}
    if len(core_asns) != len(ops):
        raise ScenarioError("two operators share a core ASN", "operators.core_asn", sorted(core_asns))

    by_name: dict[str, Speaker] = {}
    rids: dict[str, str] = {}
    rid_of: dict[str, str] = {}
    stub_asns: dict[int, str] = {}
    for i, s in enumerate(speakers):
        f = f"speakers[{i}]"
        _name(s.name, f + ".name")
        if protocol_name(s.name) in {protocol_name(n) for n in by_name}:
            raise ScenarioError("duplicate speaker name", f + ".name", s.name)
        rid = _router_id(s.router_id, f + ".router_id")
        if rid in rids:
            raise ScenarioError(f"router id already used by {rids[rid]}", f + ".router_id", rid)
        rids[rid] = s.name
        rid_of[s.name] = rid
        if s.is_core:
            if s.operator not in ops:
                raise ScenarioError("no such operator", f + ".operator", s.operator)
            if s.asn is not None or s.mnps:
                raise ScenarioError("a c-ASBR takes its operator's core ASN and announces no MNPs", f + ".asn", s.asn)
        else:
            asn = _asn(s.asn, f + ".asn")
            if asn in core_asns:
                raise ScenarioError(f"stub ASN is the core ASN of {core_asns[asn]}", f + ".asn", asn)
            if asn in stub_asns:
                raise ScenarioError(f"stub ASN already used by {stub_asns[asn]}", f + ".asn", asn)
            stub_asns[asn] = s.name
            for j, m in enumerate(s.mnps):
                check_mnp(m, all_msps, f"{f}.mnps[{j}]")
        by_name[s.name] = s

    def asn_of(s: Speaker) -> int:
        return ops[s.operator].core_asn if s.is_core else s.asn

    # route reflectors: the first c-ASBR by name of an operator with >= rr_min_cores c-ASBRs
    reflector: dict[str, str] = {}
    for op in ops:
        names = sorted(s.name for s in by_name.values() if s.operator == op)
        if len(names) >= rr_min_cores:
            reflector[op] = names[0]

    sessions: dict[str, list[Peering]] = {n: [] for n in by_name}
    seen_pairs: set[frozenset] = set()
    for i, ln in enumerate(links):
        f = f"links[{i}]"
        for end in ("a", "b"):
            if getattr(ln, end) not in by_name:
                raise ScenarioError("no such speaker", f"{f}.{end}", getattr(ln, end))
        if ln.a == ln.b:
            raise ScenarioError("a link needs two different speakers", f + ".b", ln.b)
        pair = frozenset((ln.a, ln.b))
        if pair in seen_pairs:
            raise ScenarioError("a second link between the same speakers", f + ".b", ln.b)
        seen_pairs.add(pair)
        a, b = by_name[ln.a], by_name[ln.b]
        a_addr, b_addr = _ipv6_addr(ln.a_addr, f + ".a_addr"), _ipv6_addr(ln.b_addr, f + ".b_addr")
        if a_addr == b_addr:
            raise ScenarioError("both ends have the same address", f + ".b_addr", b_addr)
        if not a.is_core and not b.is_core:
            raise ScenarioError("s-ASBRs peer only with c-ASBRs (spec §3)", f + ".b", ln.b)
        if a.is_core and b.is_core:
            if a.operator == b.operator:
                rr = reflector.get(a.operator)
                if rr is not None and rr not in (a.name, b.name):
                    continue  # with a reflector, clients peer only with it
                kind = "ibgp"
            else:
                kind = "ebgp"
            ka = kb = kind
        else:
            ka, kb = ("stub", "core") if a.is_core else ("core", "stub")
        rr_a = ka == "ibgp" and reflector.get(a.operator) == a.name
        rr_b = kb == "ibgp" and reflector.get(b.operator) == b.name
        sessions[a.name].append(Peering(b.name, ka, a_addr, b_addr, asn_of(b), rr_client=rr_a))
        sessions[b.name].append(Peering(a.name, kb, b_addr, a_addr, asn_of(a), rr_client=rr_b))

    routers: dict[str, Router] = {}
    for s in by_name.values():
        peerings = tuple(sorted(sessions[s.name], key=lambda p: p.name))
        if not s.is_core and not any(p.kind == "core" for p in peerings):
            raise ScenarioError("an s-ASBR needs a link to at least one c-ASBR", "links", s.name)
        routers[s.name] = Router(
            name=s.name, netns=s.netns, role="core" if s.is_core else "stub", asn=asn_of(s),
            router_id=rid_of[s.name], peerings=peerings,
            msps=ops[s.operator].msps if s.is_core else (),
            all_msps=all_msps if s.is_core else (),
            mnps=tuple(str(ipaddress.IPv6Network(m)) for m in s.mnps))
    return Network(routers, ops)


def check_mnp(mnp: str, msps: tuple[str, ...], fld: str) -> str:
    """An MNP is an IPv6 prefix strictly inside one of the MSPs (spec §2: MNPs are delegated from MSPs)."""
    net = ipaddress.IPv6Network(_ipv6_prefix(mnp, fld))
    for m in msps:
        msp = ipaddress.IPv6Network(m)
        if net.subnet_of(msp) and net.prefixlen > msp.prefixlen:
            return str(net)
    raise ScenarioError(f"not a more specific prefix of an MSP ({', '.join(msps)})", fld, mnp)
