"""Satellite semantic addresses: owner / shell / orbit / satellite / interface.

spec: satellite-semantic-addressing §5 (indexes §5.1-5.3, formats §5.4,
Figures 5-7) and §4.3 (neighbour kinds, steady vs unsteady links).

- IPv6 (Figure 5): a /64 subnet prefix, then owner, shell, orbit, sat and
  interface bytes, then 24 reserved zero bits.
- MAC (Figure 6): a 3-octet OUI, then shell (4 bits) | orbit (8) | sat (8) |
  interface (4). The default OUI ``02:00:5a`` is locally administered; an
  OUI with the multicast bit set is refused (the NIC would not be unicast).
- 32-bit (Figure 7): owner | shell | orbit | sat, shown as a dotted quad.

Neighbour relations are read from two addresses alone (§4.3, Figure 1):
same plane, sat +-1 -> front/back (steady); adjacent plane -> right/left
(steady, except across the seam of a Walker star or in the polar region);
adjacent shell -> above/below (always unsteady).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from emu.errors import AddressingError

DEFAULT_SEMANTIC_IPV6_PREFIX = "fd00:5a7::/64"
DEFAULT_OUI = "02:00:5a"
RELATION_KINDS = ("front", "back", "left", "right", "above", "below", "none")

_MAC_RE = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")
_OUI_RE = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}\1[0-9a-fA-F]{2}")


@dataclass(frozen=True)
class SemanticAddress:
    """The indexes an address carries; a field the form lacks is None."""

    owner: int | None
    shell: int | None
    orbit: int | None
    sat: int | None
    intf: int | None


@dataclass(frozen=True)
class Relation:
    """Where ``b`` sits as seen from ``a``, and whether that link is steady."""

    kind: str
    steady: bool


def ipv6_address(owner: int, shell: int, orbit: int, sat: int, intf: int = 0,
                 prefix: str = DEFAULT_SEMANTIC_IPV6_PREFIX) -> str:
    """Figure 5: /64 prefix + owner | shell | orbit | sat | intf | 24 reserved bits."""
    for field, value in (("owner", owner), ("shell", shell), ("orbit", orbit), ("sat", sat), ("intf", intf)):
        _check_range(field, value, 255)
    net = _ipv6_prefix(prefix)
    iid = (owner << 56) | (shell << 48) | (orbit << 40) | (sat << 32) | (intf << 24)
    return str(ipaddress.IPv6Address(int(net.network_address) | iid))


def mac_address(shell: int, orbit: int, sat: int, intf: int = 0, oui: str = DEFAULT_OUI) -> str:
    """Figure 6: OUI (3 octets) + shell (4) | orbit (8) | sat (8) | intf (4)."""
    _check_range("shell", shell, 15, form="MAC")
    _check_range("orbit", orbit, 255)
    _check_range("sat", sat, 255)
    _check_range("intf", intf, 15, form="MAC")
    oui_int = _parse_oui(oui)
    nic = (shell << 20) | (orbit << 12) | (sat << 4) | intf
    value = (oui_int << 24) | nic
    return ":".join(f"{(value >> (8 * i)) & 0xFF:02x}" for i in range(5, -1, -1))


def ipv4_semantic(owner: int, shell: int, orbit: int, sat: int) -> str:
    """Figure 7: owner | shell | orbit | sat as a dotted quad."""
    for field, value in (("owner", owner), ("shell", shell), ("orbit", orbit), ("sat", sat)):
        _check_range(field, value, 255)
    return f"{owner}.{shell}.{orbit}.{sat}"


def parse_ipv6(text: str, prefix: str | None = None) -> SemanticAddress:
    """Read Figure 5 back; if ``prefix`` is given the address must lie in it."""
    try:
        addr = ipaddress.IPv6Address(text.strip())
    except (ipaddress.AddressValueError, AttributeError):
        raise AddressingError(f"address: not an IPv6 address (got {text!r})") from None
    if prefix is not None and addr not in _ipv6_prefix(prefix):
        raise AddressingError(f"address: outside the semantic prefix {prefix} (got {text!r})")
    iid = int(addr) & 0xFFFFFFFFFFFFFFFF
    if iid & 0xFFFFFF:
        raise AddressingError(f"address: reserved bits must be zero (got {text!r})")
    b = [(iid >> s) & 0xFF for s in (56, 48, 40, 32, 24)]
    return SemanticAddress(*b)


def parse_mac(text: str, oui: str | None = None) -> SemanticAddress:
    """Read Figure 6 back (owner is None); if ``oui`` is given it must match."""
    s = text.strip() if isinstance(text, str) else ""
    if not _MAC_RE.fullmatch(s):
        raise AddressingError(f"mac: expected 6 octets like 02:00:5a:01:02:30 (got {text!r})")
    value = int(re.sub("[:-]", "", s), 16)
    if oui is not None and value >> 24 != _parse_oui(oui):
        raise AddressingError(f"mac: OUI is not {oui} (got {text!r})")
    return SemanticAddress(None, (value >> 20) & 0xF, (value >> 12) & 0xFF, (value >> 4) & 0xFF, value & 0xF)


def parse_ipv4_semantic(text: str) -> SemanticAddress:
    """Read Figure 7 back (intf is None)."""
    try:
        value = int(ipaddress.IPv4Address(text.strip()))
    except (ipaddress.AddressValueError, AttributeError):
        raise AddressingError(f"address: not a dotted IPv4 address (got {text!r})") from None
    return SemanticAddress(value >> 24, (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF, None)


def relation(a: SemanticAddress, b: SemanticAddress, n_orbits: int, n_sats: int,
             seam: bool = True, in_polar_region: bool = False) -> Relation:
    """Where ``b`` is relative to ``a``, from their addresses alone.

    spec: satellite-semantic-addressing §4.3 and §3. ``n_orbits``/``n_sats``
    are the plane count and satellites per plane of the shell. ``seam``:
    the shell is a Walker star whose planes n_orbits-1 and 0 counter-rotate
    (inter-plane links across it are unsteady); False for a Walker delta,
    where the wrap-around is an ordinary steady neighbour. ``in_polar_region``:
    the pair is above the polar latitude threshold, where inter-plane links
    are unsteady (Figure 2). The owner code plays no part: §4.3 defines
    neighbours by shell, orbit and satellite index only, and in this emulator
    operators own planes of one constellation, so neighbouring planes of two
    owners are ordinary (and linked) neighbours.
    """
    _check_range("n_orbits", n_orbits, 1 << 8, lo=1)
    _check_range("n_sats", n_sats, 1 << 8, lo=1)
    for name, addr in (("a", a), ("b", b)):
        for field in ("shell", "orbit", "sat"):
            if getattr(addr, field) is None:
                raise AddressingError(f"{name}.{field}: must be set to compare addresses (got None)")
        _check_range(f"{name}.orbit", addr.orbit, n_orbits - 1)
        _check_range(f"{name}.sat", addr.sat, n_sats - 1)
    none = Relation("none", False)
    if b.shell != a.shell:
        if b.shell == a.shell + 1:
            return Relation("above", False)
        if b.shell == a.shell - 1:
            return Relation("below", False)
        return none
    if b.orbit == a.orbit:
        if b.sat == a.sat:
            return none
        if b.sat == (a.sat + 1) % n_sats:
            return Relation("front", True)
        if b.sat == (a.sat - 1) % n_sats:
            return Relation("back", True)
        return none
    crosses_seam = seam and {a.orbit, b.orbit} == {0, n_orbits - 1}
    steady = not (crosses_seam or in_polar_region)
    if b.orbit == (a.orbit + 1) % n_orbits:
        return Relation("right", steady)
    if b.orbit == (a.orbit - 1) % n_orbits:
        return Relation("left", steady)
    return none


def _parse_oui(oui: str) -> int:
    s = oui.strip() if isinstance(oui, str) else ""
    if not _OUI_RE.fullmatch(s):
        raise AddressingError(f"oui: must be 3 octets like 02:00:5a (got {oui!r})")
    value = int(re.sub("[:-]", "", s), 16)
    if value >> 16 & 0x01:
        raise AddressingError(f"oui: multicast bit set, a NIC address must be unicast (got {oui!r})")
    return value


def _ipv6_prefix(prefix: str) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.IPv6Network(prefix, strict=True)
    except (ValueError, TypeError):
        raise AddressingError(f"prefix: not an IPv6 network (got {prefix!r})") from None
    if net.prefixlen != 64:
        raise AddressingError(f"prefix: must be a /64 (got {prefix!r})")
    return net


def _check_range(field: str, value: int, hi: int, lo: int = 0, form: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        where = f" in the {form} form" if form else ""
        raise AddressingError(f"{field}: must be {lo}..{hi}{where} (got {value!r})")
