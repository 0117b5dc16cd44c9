"""The BGP overlay of a run, derived purely from the data plane's model (no kernel, no root).

spec: bgp-mobile-routing-atn §3 (ATN/IPS Routing System: one core AS per
operator, c-ASBRs in the cores, eBGP between cores -- the core of cores --,
s-ASBRs at the ground stations with their own stub ASNs), §4 (stub AS
mobility: the s-ASBR a user is attached through announces its MNP), §2
(MNPs delegated from an operator's MSP). docs/bgp.md "Wiring into up".

Every numbering rule of the overlay lives here, once:

- peering links: GS position i <-> its operator's core on the existing
  GS <-> core veth, ``PEER_PREFIX:0:i::/64`` (core ``::1``, GS ``::2``); core
  a <-> core b (a < b, operator indices) on a dedicated veth (only when BGP
  is on), ``PEER_PREFIX:1:(a<<8|b)::/64`` (a ``::1``, b ``::2``);
- ASNs: core ``CORE_ASN_BASE + owner_code``, s-ASBR ``STUB_ASN_BASE + GS position``
  (RFC 6996 private 32-bit ASNs);
- router ids: core ``1.0.0.0 + operator index + 1``, s-ASBR ``2.0.0.0 + GS position + 1``;
- MSP: the ``owner_code``-th /40 of the scenario's ``bgp.msp_base`` (/32);
  MNP: the j-th /56 of that MSP for the operator's j-th user terminal (plan order).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from emu.errors import ScenarioError

from .model import RR_MIN_CORES, Link, Network, Operator, Speaker, build_network

PEER_PREFIX = ipaddress.IPv6Network("fd6c:6565::/48")  # peering links of the overlay (ULA)
PEER_PLEN = 64
CORE_ASN_BASE = 4_200_000_000
STUB_ASN_BASE = 4_201_000_000
MSP_PLEN = 40
MNP_PLEN = 56
CORE_PEER_BASE = 20000  # ifindex of a core's link to operator j's core: CORE_PEER_BASE + j (above any g<i>)


# ---------------------------------------------------------------------------- addresses
def gs_link_addrs(i: int) -> tuple[str, str]:
    """(core end, GS end) IPv6 addresses of the i-th GS's link to its core (both /64)."""
    if not 0 <= i < 1 << 16:
        raise ValueError(f"gs position: 0..65535 (got {i})")
    net = int(PEER_PREFIX.network_address) | (i << 64)
    return str(ipaddress.IPv6Address(net | 1)), str(ipaddress.IPv6Address(net | 2))


def core_link_addrs(a: int, b: int) -> tuple[str, str]:
    """(core a end, core b end) of the a <-> b core-of-cores link, a < b operator indices."""
    if not 0 <= a < b < 256:
        raise ValueError(f"core pair: 0 <= a < b < 256 (got {a}, {b})")
    net = int(PEER_PREFIX.network_address) | (1 << 80) | (((a << 8) | b) << 64)
    return str(ipaddress.IPv6Address(net | 1)), str(ipaddress.IPv6Address(net | 2))


def inet_link_addrs(op: int) -> tuple[str, str]:
    """(core end, Internet end) of operator ``op``'s core <-> Internet link (IPv6, the probe's path)."""
    if not 0 <= op < 1 << 16:
        raise ValueError(f"operator index: 0..65535 (got {op})")
    net = int(PEER_PREFIX.network_address) | (2 << 80) | (op << 64)
    return str(ipaddress.IPv6Address(net | 1)), str(ipaddress.IPv6Address(net | 2))


GS_TUNNEL_LL = "fe80::1"  # every GS's tunnel end (shared, like its IPv4 tunnel address and MAC)


def ut_tunnel_ll(pos: int) -> str:
    """The link-local address of the pos-th UT's tunnel end (pos: plan order among all UTs)."""
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("fe80::")) | (pos + 2)))


def mnp_host(mnp_prefix: str) -> str:
    """The UT's own address in its MNP (``::1``): what a probe from the Internet pings."""
    return str(ipaddress.IPv6Network(mnp_prefix).network_address + 1)


def core_pairs(n_ops: int) -> list[tuple[int, int]]:
    """Every pair of operators' cores: a full mesh of eBGP sessions (the core of cores)."""
    return [(a, b) for a in range(n_ops) for b in range(a + 1, n_ops)]


def msp(msp_base: str, owner_code: int) -> str:
    """An operator's MSP: the ``owner_code``-th /40 of the /32 ``msp_base``."""
    base = ipaddress.IPv6Network(msp_base)
    if base.prefixlen != 32:
        raise ScenarioError("must be an IPv6 /32", "bgp.msp_base", msp_base)
    if not 0 <= owner_code < 1 << (MSP_PLEN - 32):
        raise ScenarioError("owner code out of range for a /40 MSP", "operators.owner_code", owner_code)
    return str(ipaddress.IPv6Network((int(base.network_address) | (owner_code << (128 - MSP_PLEN)), MSP_PLEN)))


def mnp(msp_prefix: str, j: int) -> str:
    """The j-th /56 MNP of an MSP (j: the user terminal's rank within its operator)."""
    net = ipaddress.IPv6Network(msp_prefix)
    if not 0 <= j < 1 << (MNP_PLEN - net.prefixlen):
        raise ScenarioError(f"more user terminals than /{MNP_PLEN} MNPs in the MSP", "user_terminals", j)
    return str(ipaddress.IPv6Network((int(net.network_address) | (j << (128 - MNP_PLEN)), MNP_PLEN)))


# ---------------------------------------------------------------------------- several c-ASBRs per operator
def c_asbr_names(core: str, n: int) -> list[str]:
    """An operator's c-ASBRs (scenario ``bgp.c_asbrs``): its core node first, then ``<core>-c2`` ... ``-c<n>``
    (each in a namespace of its own). Sorted by name the core node is first: it is the route reflector."""
    return [core] + [f"{core}-c{k}" for k in range(2, n + 1)]


def ibgp_pairs(n: int) -> list[tuple[int, int]]:
    """The iBGP sessions among an operator's n c-ASBRs (ranks): a full mesh below ``RR_MIN_CORES``, else every
    client to the reflector (rank 0) only (spec §3: a route reflector where it pays)."""
    if n < RR_MIN_CORES:
        return [(a, b) for a in range(n) for b in range(a + 1, n)]
    return [(0, b) for b in range(1, n)]


def ibgp_link_addrs(op: int, a: int, b: int) -> tuple[str, str]:
    """(c-ASBR a end, c-ASBR b end) of operator ``op``'s iBGP link between c-ASBR ranks a < b."""
    if not (0 <= op < 256 and 0 <= a < b < 16):
        raise ValueError(f"ibgp link: op 0..255, 0 <= a < b < 16 (got {op}, {a}, {b})")
    net = int(PEER_PREFIX.network_address) | (3 << 80) | (((op << 8) | (a << 4) | b) << 64)
    return str(ipaddress.IPv6Address(net | 1)), str(ipaddress.IPv6Address(net | 2))


def gs_asbr_link_addrs(i: int) -> tuple[str, str]:
    """(c-ASBR end, GS end) of the i-th GS's link to a c-ASBR other than its core node."""
    if not 0 <= i < 1 << 16:
        raise ValueError(f"gs position: 0..65535 (got {i})")
    net = int(PEER_PREFIX.network_address) | (4 << 80) | (i << 64)
    return str(ipaddress.IPv6Address(net | 1)), str(ipaddress.IPv6Address(net | 2))


@dataclass(frozen=True)
class Veth:
    """A link the overlay adds for extra c-ASBRs (made by :mod:`.asbrs`): both ends' namespace, name, address."""

    a_ns: str
    a_if: str
    a_addr: str
    b_ns: str
    b_if: str
    b_addr: str


@dataclass(frozen=True)
class Plumbing:
    """What extra c-ASBRs need from the kernel: their namespaces, links, and a default route each toward
    their core node (the return path of the traffic they forward to their GSs)."""

    namespaces: tuple[str, ...]
    veths: tuple[Veth, ...]
    default_via: tuple[tuple[str, str], ...]  # (namespace, next hop)


def c_asbrs_of(m) -> dict[int, list[str]]:
    """Operator index -> its c-ASBR names (:func:`c_asbr_names`; one, the core node, unless ``bgp.c_asbrs``)."""
    n = dict(m.cfg.bgp_c_asbrs)
    out = {}
    for idx, name, _c, _p in m.db.operators:
        out[idx] = c_asbr_names(name, n.get(name, 1))
        for extra in out[idx][1:]:
            if extra in m.by_name:
                raise ScenarioError("an extra c-ASBR's name is taken by a node", "bgp.c_asbrs", extra)
    return out


def gs_rank(m) -> dict[int, int]:
    """GS position i -> the rank of the c-ASBR its s-ASBR peers with: the j-th GS of an operator (plan order)
    with c-ASBR j mod n (rank 0: the core node, over the data plane's GS <-> core link)."""
    cores = c_asbrs_of(m)
    seen: dict[int, int] = {}
    out = {}
    for i, g in enumerate(m.gss):
        j = seen.get(g.operator, 0)
        seen[g.operator] = j + 1
        out[i] = j % len(cores[g.operator])
    return out


def ns_of(m, name: str) -> str:
    return m.by_name[name].netns if name in m.by_name else m.ns(name)


def plumbing(m) -> Plumbing:
    """The extra c-ASBRs' namespaces, their iBGP links and their links to their GSs (empty with one c-ASBR
    per operator)."""
    cores = c_asbrs_of(m)
    spaces = [m.ns(n) for names in cores.values() for n in names[1:]]
    veths, defaults = [], []
    for op, names in cores.items():
        for a, b in ibgp_pairs(len(names)) if len(names) > 1 else []:
            a_addr, b_addr = ibgp_link_addrs(op, a, b)
            veths.append(Veth(ns_of(m, names[a]), f"ib{b}", a_addr, ns_of(m, names[b]), f"ib{a}", b_addr))
            if a == 0:
                defaults.append((m.ns(names[b]), a_addr))
    rank = gs_rank(m)
    for i, g in enumerate(m.gss):
        k = rank[i]
        if k:
            c_end, g_end = gs_asbr_link_addrs(i)
            veths.append(Veth(m.ns(cores[g.operator][k]), f"g{i}", c_end, m.by_name[g.name].netns, "bgpc", g_end))
    return Plumbing(tuple(spaces), tuple(veths), tuple(defaults))


# ---------------------------------------------------------------------------- the overlay of a model
@dataclass(frozen=True)
class Overlay:
    """The run's BGP network and the MNP of every UT (by ground index)."""

    network: Network
    mnps: dict[int, str]  # UT ground index -> MNP
    stub_of_gs: dict[int, str]  # GS ground index -> s-ASBR name (the GS node's name)


def operator_msps(m) -> dict[int, str]:
    return {idx: msp(m.cfg.bgp_msp_base, code) for idx, _n, code, _p in m.db.operators}


def ut_mnps(m) -> dict[int, str]:
    """UT ground index -> MNP: the j-th UT of an operator (plan order) gets the MSP's j-th /56."""
    msps = operator_msps(m)
    rank: dict[int, int] = {}
    out = {}
    for u in m.uts:
        j = rank.get(u.operator, 0)
        rank[u.operator] = j + 1
        out[u.idx] = mnp(msps[u.operator], j)
    return out


def stub_mnps(m, choice: np.ndarray, mnps: dict[int, str]) -> dict[str, tuple[str, ...]]:
    """s-ASBR name -> the MNPs it announces while ``choice`` (Desired.choice(k): UT row -> GS, -1 none) holds.

    spec §4: the s-ASBR of the GS a user is attached through announces the user's MNP."""
    names = {g.idx: g.name for g in m.gss}
    out: dict[str, list[str]] = {g.name: [] for g in m.gss}
    for row, u in enumerate(m.uts):
        gs = int(choice[row, 0])
        if gs >= 0:
            out[names[gs]].append(mnps[u.idx])
    return {k: tuple(sorted(v)) for k, v in out.items()}


def overlay(m, choice0: np.ndarray) -> Overlay:
    """The BGP network of a run: c-ASBRs in the cores, s-ASBRs at the GSs, peerings on the overlay links."""
    ops = m.db.operators
    operators = [Operator(name, CORE_ASN_BASE + code, (msp(m.cfg.bgp_msp_base, code),))
                 for _idx, name, code, _p in ops]
    mnps = ut_mnps(m)
    initial = stub_mnps(m, choice0, mnps)
    cores = c_asbrs_of(m)
    speakers = [Speaker(c, ns_of(m, c), str(ipaddress.IPv4Address(0x01000000 + (k << 8) + idx + 1)), operator=name)
                for idx, name, _c, _p in ops for k, c in enumerate(cores[idx])]
    speakers += [Speaker(g.name, m.by_name[g.name].netns, str(ipaddress.IPv4Address(0x02000000 + i + 1)),
                         asn=STUB_ASN_BASE + i, mnps=initial[g.name]) for i, g in enumerate(m.gss)]
    links = []
    rank = gs_rank(m)
    for i, g in enumerate(m.gss):
        k = rank[i]
        c_end, gs_end = gs_asbr_link_addrs(i) if k else gs_link_addrs(i)
        links.append(Link(cores[g.operator][k], c_end, g.name, gs_end))
    for op, names in cores.items():
        for a, b in ibgp_pairs(len(names)) if len(names) > 1 else []:
            a_end, b_end = ibgp_link_addrs(op, a, b)
            links.append(Link(names[a], a_end, names[b], b_end))
    for a, b in core_pairs(len(ops)):
        a_end, b_end = core_link_addrs(a, b)
        links.append(Link(ops[a][1], a_end, ops[b][1], b_end))
    return Overlay(build_network(operators, speakers, links), mnps, {g.idx: g.name for g in m.gss})


def announcement_steps(cur: dict[str, tuple[str, ...]], nxt: dict[str, tuple[str, ...]]
                       ) -> list[tuple[str, tuple[str, ...]]]:
    """(s-ASBR, MNPs it announces from then on) in make-before-break order (spec §4): first every s-ASBR
    that gains an MNP announces its old and new ones, then every s-ASBR that loses one announces its new set."""
    gain = [(s, tuple(sorted(set(cur.get(s, ())) | set(v)))) for s, v in sorted(nxt.items())
            if set(v) - set(cur.get(s, ()))]
    lose = [(s, tuple(v)) for s, v in sorted(nxt.items()) if set(cur.get(s, ())) - set(v)]
    return gain + lose


def moves(cur: dict[str, tuple[str, ...]], nxt: dict[str, tuple[str, ...]]) -> list[tuple[str, str | None, str | None]]:
    """(MNP, old s-ASBR or None, new s-ASBR or None) for every MNP whose s-ASBR changes."""
    where_cur = {p: s for s, v in cur.items() for p in v}
    where_nxt = {p: s for s, v in nxt.items() for p in v}
    return [(p, where_cur.get(p), where_nxt.get(p)) for p in sorted(set(where_cur) | set(where_nxt))
            if where_cur.get(p) != where_nxt.get(p)]


def expected_via(net: Network, stub: str) -> dict[str, str]:
    """c-ASBR name -> the next hop its kernel route to an MNP announced by ``stub`` must have: the address of the
    neighbour it learns the route from, the first hop of its shortest session path to the stub through
    c-ASBRs (eBGP: the sender's address; iBGP: ``next hop self``, also on a reflector)."""
    via: dict[str, str] = {}
    seen = {stub}
    frontier = [stub]
    while frontier:
        nxt = []
        for x in frontier:
            for p in net.routers[x].peerings:
                y = p.name
                if y in seen or net.routers[y].role != "core":
                    continue
                seen.add(y)
                via[y] = next(q.peer_addr for q in net.routers[y].peerings if q.name == x)
                nxt.append(y)
        frontier = nxt
    return {c.name: via[c.name] for c in net.cores() if c.name in via}
