"""Satellites' own destination addresses: the 32-bit semantic address, laid out inside the GRC space.

spec: satellite-semantic-addressing §5.1 (shell / orbit / satellite indexes),
§5.4 Figure 7 (the 32-bit semantic address); grc-based-routing §GRC encoding
and §Segmented Longest Match (prefix lengths 11, 14, ..., 32 only).

Figure 7 leaves the final 32-bit coding open ("can be decided by the
community"). Here it must share the IPv4 space with the GRCs and be matched by
the same segmented longest match, so the indexes sit on the GRC's 3-bit digit
boundaries, behind a base-cell value that no H3 cell has (H3's base cells are
0..121; 127 marks "a satellite")::

    shell code (4) | 127 (7) | orbit (9) | satellite (9) | interface (3)
    /11: every satellite of a shell   /20: one orbit plane   /29: one satellite   /32: an interface

The shell code is the GRC's (emu.addressing.grc: never 0, 7, 14 or 15, so an
address is never in 0/8, 127/8 or 224/3); the owner code of Figure 7 is left
out (one constellation per plan; operators own planes of it).

THE AGGREGATION RULE (defined here once, used by emu.plan.satroutes): a
satellite routes another plane's satellites by that plane's /20 (the plane
prefixes fold to /17, /14, /11 where they leave by the same directions), and
its own plane's satellites by their /29 (folding to /26, /23 along the plane).
"""

from __future__ import annotations

import numpy as np

from emu.addressing.grc import check_shell_code

SAT_BASE_CELL = 127
SHELL_PLEN = 11
PLANE_PLEN = 20
SAT_PLEN = 29
INDEX_MAX = (1 << 9) - 1
INTERFACE_MAX = 5


def address(shell_code: int, plane: int, sat: int, intf: int = 0) -> int:
    """The 32-bit address of a satellite's interface (0: the satellite itself)."""
    check_shell_code(shell_code)
    for name, v, hi in (("plane", plane, INDEX_MAX), ("sat", sat, INDEX_MAX), ("interface", intf, INTERFACE_MAX)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= hi:
            from emu.errors import AddressingError

            raise AddressingError(f"{name}: must be 0..{hi} (got {v!r})")
    return int(addresses(np.array([shell_code]), np.array([plane]), np.array([sat]))[0]) | intf


def addresses(shell_code: np.ndarray, plane: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """Vectorised :func:`address` (interface 0), uint32; inputs are trusted (the planner's own indexes)."""
    a = (np.asarray(shell_code, np.uint64) << np.uint64(28)) | np.uint64(SAT_BASE_CELL << 21)
    a |= np.asarray(plane, np.uint64) << np.uint64(12) | np.asarray(sat, np.uint64) << np.uint64(3)
    return a.astype(np.uint32)


def plane_prefix(addr: np.ndarray) -> np.ndarray:
    """The /20 (shell, plane) prefix of satellite addresses."""
    return (np.asarray(addr, np.uint32) & np.uint32(0xFFFFF000)).astype(np.uint32)


def is_satellite(addr: np.ndarray) -> np.ndarray:
    """Whether 32-bit addresses are satellite addresses (base-cell field 127)."""
    return ((np.asarray(addr, np.uint64) >> np.uint64(21)) & np.uint64(0x7F)) == SAT_BASE_CELL


def parse(addr: int) -> tuple[int, int, int, int] | None:
    """(shell code, plane, satellite, interface) of a satellite address, None for any other address."""
    addr = int(addr)
    if (addr >> 21) & 0x7F != SAT_BASE_CELL:
        return None
    return addr >> 28, (addr >> 12) & INDEX_MAX, (addr >> 3) & INDEX_MAX, addr & 7


def label(prefix: int, plen: int) -> str:
    """A human label of a satellite prefix: 'shell code 1', 'plane 1/5', 'sat 1/5/3' or a block of them."""
    code, plane, sat, _ = parse(prefix) or (0, 0, 0, 0)
    if plen <= SHELL_PLEN:
        return f"satellites of shell code {code}"
    if plen < PLANE_PLEN:
        n = 1 << (PLANE_PLEN - plen)
        return f"planes {plane}..{plane + n - 1} of shell code {code}"
    if plen == PLANE_PLEN:
        return f"plane {plane} of shell code {code}"
    if plen < SAT_PLEN:
        n = 1 << (SAT_PLEN - plen)
        return f"satellites {sat}..{sat + n - 1} of plane {plane}, shell code {code}"
    return f"satellite {sat} of plane {plane}, shell code {code}"
