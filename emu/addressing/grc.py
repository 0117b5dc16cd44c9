"""Geographic Region Codes: H3 cells as 32-bit IPv4-compatible addresses.

spec: grc-based-routing §GRC encoding (the 32-bit layout, MSB first)::

    shell code (4) | H3 base cell (7) | L1..L6 digits (3 each) | interface (3)

The base cell and the digits are taken bit for bit from the 64-bit H3 index
(base cell = H3 bits 45..51, digit r at bits (15-r)*3 .. +2). A cell at level
k < 6 keeps digits k+1..6 equal to 7 (0b111), exactly as H3 stores unused
digits, so the level of a GRC is the number of leading digits != 7 and a
level-k region is the prefix of length 11 + 3k (level 0 -> /11, level 6 ->
/29, /32 adds the interface). Cells finer than level 6 are rejected.

Shell codes -- the ONE place that keeps GRCs out of special IPv4 space:
the 4-bit shell field is a *code*, not the raw shell index. It is the top
nibble of the first octet, so forbidding four codes forbids four /4 blocks:

- 0  -> 0/4 would allow 0.0.0.0 itself (base cell 0, level-6 digits
  000000, interface 0) and put base cells 0..1 in 0/8, "this network".
- 7  -> base cells 120 and 121 (121 holds the south pole) land in 127/8,
  loopback, which the kernel never forwards.
- 14 -> 224/4, multicast.
- 15 -> 240/4, class E (and 255.255.255.255), not reliably unicast.

Every other code (DEFAULT_SHELL_CODES) gives a first octet outside 0, 127,
224..255, whatever the base cell, digits and interface; tests/unit/test_grc.py
proves it exhaustively over codes and base cells. Shell index i maps to
DEFAULT_SHELL_CODES[i] unless a scenario supplies its own ``shell_map``.

The IPv6 form is a configurable /96 prefix (default the ULA
``fd00:6772:6300::/96``, "grc" in ASCII) followed by the 32 GRC bits
(spec: grc-based-routing §GRC encoding, "it can also be easily fit into 128
bits"). :func:`prefix6_of` is the ONE rule from an IPv4 GRC region to its
IPv6 form: network | 96 bits above it, length + 96, so the segmented lengths
11..32 become 107..128 and every table has one IPv6 twin of each entry. The
/96 must be ordinary unicast (not link-local, multicast, loopback, the
unspecified /96 or IPv4-mapped space): the kernel forwards none of those.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h3
import numpy as np

from emu.errors import AddressingError

LEVEL_MAX = 6
INTERFACE_MAX = 5
BASE_CELL_MAX = 121
LEGAL_PREFIX_LENGTHS = (11, 14, 17, 20, 23, 26, 29, 32)
FORBIDDEN_SHELL_CODES = frozenset({0, 7, 14, 15})
DEFAULT_SHELL_CODES = (1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13)
DEFAULT_GRC_IPV6_PREFIX = "fd00:6772:6300::/96"

_UNUSED_DIGIT = 7
_DIGITS_MASK = (1 << 18) - 1  # six 3-bit digits
_PENTAGON_BASE_CELLS = frozenset(h3.get_base_cell_number(p) for p in h3.get_pentagons(0))
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]{8}")


@dataclass(frozen=True)
class GrcInfo:
    """A decoded GRC. ``digits`` holds the ``level`` used digits (each 0..6)."""

    grc: int
    shell_code: int
    base_cell: int
    digits: tuple[int, ...]
    level: int
    interface: int
    cell: str


def plen_of_level(level: int) -> int:
    """Prefix length of a level-``level`` region: 11 + 3*level."""
    _check_range("level", level, 0, LEVEL_MAX)
    return 11 + 3 * level


def check_shell_code(code: int) -> int:
    """Return ``code`` if it is a legal shell code, else raise AddressingError."""
    _check_range("shell_code", code, 0, 15)
    if code in FORBIDDEN_SHELL_CODES:
        raise AddressingError(
            f"shell_code: {code} is forbidden (0, 7, 14, 15 would put GRCs in "
            f"0.0.0.0, 127/8, 224/4 or 240/4) (got {code})"
        )
    return code


def shell_code(shell_index: int, shell_map: Mapping[int, int] | Sequence[int] | None = None) -> int:
    """Map a shell index to its 4-bit code: ``shell_map[i]`` or ``DEFAULT_SHELL_CODES[i]``."""
    table = DEFAULT_SHELL_CODES if shell_map is None else shell_map
    try:
        if isinstance(shell_index, bool) or shell_index < 0:
            raise KeyError(shell_index)
        code = table[shell_index]
    except (KeyError, IndexError, TypeError):
        raise AddressingError(f"shell: no shell code for shell index {shell_index} (got {shell_index})") from None
    return check_shell_code(code)


def shell_index_of_code(code: int, shell_map: Mapping[int, int] | Sequence[int] | None = None) -> int | None:
    """The shell index whose code is ``code`` (default map unless given), or None."""
    table = DEFAULT_SHELL_CODES if shell_map is None else shell_map
    items = table.items() if isinstance(table, Mapping) else enumerate(table)
    for index, c in items:
        if c == code:
            return index
    return None


def encode_cell(cell: str | int, shell_code: int, interface: int = 0) -> int:
    """GRC of an H3 cell (level 0..6). spec: grc-based-routing §GRC encoding."""
    check_shell_code(shell_code)
    _check_range("interface", interface, 0, INTERFACE_MAX)
    index, text = _cell_int(cell)
    res = (index >> 52) & 0xF
    if res > LEVEL_MAX:
        raise AddressingError(f"cell: level must be 0..{LEVEL_MAX} (got {text} at level {res})")
    base = (index >> 45) & 0x7F
    digits = (index >> 27) & _DIGITS_MASK
    return (shell_code << 28) | (base << 21) | (digits << 3) | interface


def encode_latlon(lat: float, lon: float, level: int, shell_code: int, interface: int = 0) -> int:
    """GRC of the level-``level`` H3 cell holding (lat, lon) in degrees."""
    lat_f, lon_f = _check_coord("lat", lat, 90.0), _check_coord("lon", lon, 180.0)
    _check_range("level", level, 0, LEVEL_MAX)
    return encode_cell(h3.latlng_to_cell(lat_f, lon_f, level), shell_code, interface)


def decode(grc: int) -> GrcInfo:
    """Split a GRC into its fields and rebuild (and validate) its H3 cell."""
    _check_range("grc", grc, 0, 0xFFFFFFFF, hexa=True)
    grc = int(grc)  # numpy scalars from encode_cells_array
    code = grc >> 28
    if code in FORBIDDEN_SHELL_CODES:
        raise AddressingError(f"grc: shell code {code} is forbidden (got {grc:#010x})")
    base = (grc >> 21) & 0x7F
    if base > BASE_CELL_MAX:
        raise AddressingError(f"grc: base cell must be 0..{BASE_CELL_MAX} (got {grc:#010x}, base cell {base})")
    interface = grc & 0x7
    if interface > INTERFACE_MAX:
        raise AddressingError(f"grc: interface must be 0..{INTERFACE_MAX} (got {grc:#010x}, interface {interface})")
    raw = [(grc >> (3 + 3 * (LEVEL_MAX - r))) & 0x7 for r in range(1, LEVEL_MAX + 1)]
    level = next((i for i, d in enumerate(raw) if d == _UNUSED_DIGIT), LEVEL_MAX)
    if any(d != _UNUSED_DIGIT for d in raw[level:]):
        raise AddressingError(f"grc: digit 7 followed by a used digit (got {grc:#010x})")
    index = _h3_index(base, raw, level)
    cell = h3.int_to_str(index)
    if not h3.is_valid_cell(cell):
        # The only way left: a pentagon's deleted K (digit 1) subsequence.
        raise AddressingError(f"grc: not a valid H3 cell {cell} (got {grc:#010x})")
    return GrcInfo(grc, code, base, tuple(raw[:level]), level, interface, cell)


def prefix_of(grc: int, level: int) -> tuple[int, int]:
    """(network, prefix length) of the level-``level`` region holding ``grc``.

    ``level`` may not exceed the GRC's own level (the /32 of a GRC is just
    ``(grc, 32)``). spec: grc-based-routing §Segmented Longest Match.
    """
    info = decode(grc)
    if not isinstance(level, int) or not 0 <= level <= info.level:
        raise AddressingError(f"level: must be 0..{info.level} for a level-{info.level} GRC (got {level})")
    plen = plen_of_level(level)
    return grc & _mask(plen), plen


def region_prefix(cell: str | int, shell_code: int) -> tuple[int, int]:
    """(network, prefix length) of a cell's own region: every descendant is inside."""
    grc = encode_cell(cell, shell_code)
    plen = plen_of_level(decode(grc).level)
    return grc & _mask(plen), plen


def prefix_contains(network: int, plen: int, addr: int) -> bool:
    """True if ``addr`` lies in ``network/plen``."""
    return (addr & _mask(plen)) == network


def to_ipv4(grc: int) -> str:
    """Dotted-quad form of a GRC."""
    _check_range("grc", grc, 0, 0xFFFFFFFF, hexa=True)
    return str(ipaddress.IPv4Address(grc))


def to_ipv6(grc: int, prefix: str = DEFAULT_GRC_IPV6_PREFIX) -> str:
    """IPv6 form: the /96 ``prefix`` followed by the 32 GRC bits."""
    _check_range("grc", grc, 0, 0xFFFFFFFF, hexa=True)
    net = _ipv6_prefix(prefix)
    return str(ipaddress.IPv6Address(int(net.network_address) | grc))


def prefix6_of(network: int, plen: int, prefix: str | int = DEFAULT_GRC_IPV6_PREFIX) -> tuple[int, int]:
    """(IPv6 network as an int, length) of the IPv4 GRC region ``network/plen``: the one IPv4 -> IPv6 rule.

    ``prefix`` is the /96 (text, validated) or its network as an int (from
    :func:`ipv6_base`, for hot loops). spec: grc-based-routing §GRC encoding.
    """
    base = prefix if isinstance(prefix, int) else ipv6_base(prefix)
    if not 0 <= plen <= 32 or network & ~_mask(plen) & 0xFFFFFFFF or not 0 <= network <= 0xFFFFFFFF:
        raise AddressingError(f"prefix: not an IPv4 prefix (got {network:#x}/{plen})")
    return base | network, plen + 96


def ipv6_base(prefix: str = DEFAULT_GRC_IPV6_PREFIX) -> int:
    """The validated GRC /96 as an int (its low 32 bits are zero)."""
    return int(_ipv6_prefix(prefix).network_address)


def parse_address(text: str, ipv6_prefix: str = DEFAULT_GRC_IPV6_PREFIX) -> int:
    """Parse "0x" + 8 hex digits, dotted IPv4, or IPv6 inside ``ipv6_prefix``.

    Syntax only: pass the result to :func:`decode` to validate the fields.
    """
    s = text.strip()
    if _HEX_RE.fullmatch(s):
        return int(s, 16)
    try:
        if ":" in s:
            addr6 = ipaddress.IPv6Address(s)
            net = _ipv6_prefix(ipv6_prefix)
            if addr6 not in net:
                raise AddressingError(f"address: IPv6 address outside the GRC prefix {net} (got {text!r})")
            return int(addr6) & 0xFFFFFFFF
        return int(ipaddress.IPv4Address(s))
    except ipaddress.AddressValueError:
        raise AddressingError(
            f"address: expected 0x + 8 hex digits, dotted IPv4 or IPv6 (got {text!r})"
        ) from None


def encode_cells_array(cells, shell_code: int, interface: int = 0) -> np.ndarray:
    """Vectorised :func:`encode_cell`: H3 strings or uint64 H3 indexes -> uint32 GRCs.

    Every cell is validated (mode, level <= 6, base cell, digit pattern,
    pentagon deleted subsequence) with numpy bit operations.
    """
    check_shell_code(shell_code)
    _check_range("interface", interface, 0, INTERFACE_MAX)
    if isinstance(cells, np.ndarray):
        idx = cells.astype(np.uint64, copy=False)
    else:
        try:
            idx = np.fromiter((int(c, 16) if isinstance(c, str) else int(c) for c in cells), dtype=np.uint64)
        except (ValueError, OverflowError):
            raise AddressingError("cells: every cell must be an H3 hex string or integer (got a bad entry)") from None
    idx = idx.ravel()
    mode = (idx >> np.uint64(59)) & np.uint64(0xF)
    res = ((idx >> np.uint64(52)) & np.uint64(0xF)).astype(np.int64)
    base = ((idx >> np.uint64(45)) & np.uint64(0x7F)).astype(np.uint32)
    digits = ((idx >> np.uint64(27)) & np.uint64(_DIGITS_MASK)).astype(np.uint32)
    bad = (mode != 1) | (res > LEVEL_MAX) | (base > BASE_CELL_MAX) | ((idx >> np.uint64(63)) != 0)
    bad |= ((idx >> np.uint64(56)) & np.uint64(0x7)) != 0
    bad |= (idx & np.uint64((1 << 27) - 1)) != np.uint64((1 << 27) - 1)  # digits 7..15 unused
    first_nonzero = np.full(idx.shape, 0, dtype=np.uint32)
    for r in range(1, LEVEL_MAX + 1):
        d = (digits >> np.uint32(3 * (LEVEL_MAX - r))) & np.uint32(7)
        used = r <= res
        bad |= np.where(used, d == 7, d != 7)
        first_nonzero = np.where(used & (first_nonzero == 0), d, first_nonzero)
    pent = np.isin(base, np.fromiter(_PENTAGON_BASE_CELLS, dtype=np.uint32))
    bad |= pent & (first_nonzero == 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise AddressingError(f"cells[{i}]: not a valid H3 cell of level 0..{LEVEL_MAX} (got {int(idx[i]):x})")
    return (np.uint32(shell_code << 28) | (base << np.uint32(21)) | (digits << np.uint32(3))
            | np.uint32(interface)).astype(np.uint32)


# -- helpers -----------------------------------------------------------------


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF


def _h3_index(base: int, raw: list[int], level: int) -> int:
    index = (1 << 59) | (level << 52) | (base << 45)
    for r in range(1, 16):
        d = raw[r - 1] if r <= level else _UNUSED_DIGIT
        index |= d << ((15 - r) * 3)
    return index


def _cell_int(cell: str | int) -> tuple[int, str]:
    if isinstance(cell, str):
        text = cell.strip().lower()
        ok = h3.is_valid_cell(text)
        index = int(text, 16) if ok else 0
    elif isinstance(cell, (int, np.integer)) and not isinstance(cell, bool):
        index = int(cell)
        text = format(index, "x")
        ok = 0 <= index < 1 << 64 and h3.is_valid_cell(text)
    else:
        ok, text, index = False, repr(cell), 0
    if not ok:
        raise AddressingError(f"cell: not a valid H3 cell (got {text})")
    return index, text


@functools.lru_cache(maxsize=64)  # validated once per prefix text (to_ipv6 is called per address)
def _ipv6_prefix(prefix: str) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.IPv6Network(prefix, strict=True)
    except ValueError:
        raise AddressingError(f"ipv6_prefix: not an IPv6 network (got {prefix!r})") from None
    if net.prefixlen != 96:
        raise AddressingError(f"ipv6_prefix: must be a /96 (got {prefix!r})")
    for special, why in _SPECIAL6:
        if net.overlaps(special):
            raise AddressingError(f"ipv6_prefix: inside {special} ({why}), not forwarded as unicast (got {prefix!r})")
    return net


_SPECIAL6 = tuple((ipaddress.IPv6Network(n), why) for n, why in (
    ("::/96", "unspecified, loopback and IPv4-compatible"), ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"), ("fec0::/10", "site-local, deprecated"), ("ff00::/8", "multicast")))


def _check_range(field: str, value: int, lo: int, hi: int, hexa: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        shown = f"{value:#x}" if hexa and isinstance(value, int) and not isinstance(value, bool) else value
        bounds = f"{lo:#x}..{hi:#x}" if hexa else f"{lo}..{hi}"
        raise AddressingError(f"{field}: must be {bounds} (got {shown})")


def _check_coord(field: str, value: float, limit: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AddressingError(f"{field}: must be a number (got {value!r})") from None
    if not -limit <= v <= limit:  # also rejects NaN
        raise AddressingError(f"{field}: must be in -{limit:g}..{limit:g} (got {value})")
    return v
