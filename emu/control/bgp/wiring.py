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

from .model import Link, Network, Operator, Speaker, build_network

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
    speakers = [Speaker(name, m.by_name[name].netns, str(ipaddress.IPv4Address(0x01000000 + idx + 1)),
                        operator=name) for idx, name, _c, _p in ops]
    speakers += [Speaker(g.name, m.by_name[g.name].netns, str(ipaddress.IPv4Address(0x02000000 + i + 1)),
                         asn=STUB_ASN_BASE + i, mnps=initial[g.name]) for i, g in enumerate(m.gss)]
    links = []
    for i, g in enumerate(m.gss):
        core_end, gs_end = gs_link_addrs(i)
        links.append(Link(ops[g.operator][1], core_end, g.name, gs_end))
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
    """c-ASBR name -> the next hop its kernel route to an MNP announced by ``stub`` must have: the stub's
    peering address for the c-ASBRs it peers with, else the peering address of such a c-ASBR (eBGP,
    core of cores; one hop, as every pair of cores peers directly)."""
    r = net.routers[stub]
    direct = {p.name: p.peer_addr for p in r.peerings if p.kind == "core"}
    out = {}
    for c in net.cores():
        if c.name in direct:
            out[c.name] = next(p.peer_addr for p in c.peerings if p.name == stub)
        else:
            out[c.name] = next(p.peer_addr for p in c.peerings if p.name in direct)
    return out
