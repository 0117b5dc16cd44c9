"""Interface names of the data plane and what each means: the one place names <-> directions are defined.

Satellites name their interfaces by the direction they leave in
(spec: satellite-semantic-addressing §5.4; :data:`emu.orbit.constellation.DIRECTION_IFNAME`):
``n`` ``s`` ``e`` ``w`` (grid ISLs), ``up<j>`` / ``dn<j>`` (links to the shell
above / below) and ``g<j>`` (a link down to a ground node), so
``ip -n <sat> route`` reads like the spec's directional table. A ground
node's link to its satellite is ``up<j>``; its tunnel to the chosen GS is
``tun0`` (ipip) or ``vx0`` (VXLAN); ``lan``/``eth0`` join a UT and its
device; terrestrial links are ``core``, ``inet``, ``g<i>`` (core side) and
``c<i>`` (Internet side).
"""

from __future__ import annotations

import re

from emu.orbit.constellation import DIRECTION_IFNAME, DIRECTIONS, DOWN, OPPOSITE, UP

TUNNEL_IFNAME = {"ipip": "tun0", "vxlan": "vx0"}
LAN_UT, LAN_DEV = "lan", "eth0"
GS_CORE, CORE_INET = "core", "inet"

_GRID = {DIRECTION_IFNAME[d]: d for d in range(4)}
_RE_SLOT = re.compile(r"^(?P<base>[a-z]+?)(?P<slot>\d+)$")


def grid(direction: int) -> str:
    """A grid ISL end: n, s, e, w."""
    if not 0 <= direction < 4:
        raise ValueError(f"direction: a grid direction 0..3 (got {direction})")
    return DIRECTION_IFNAME[direction]


def grid_peer(direction: int) -> str:
    return grid(OPPOSITE[direction])


def sat_ground(slot: int) -> str:
    """A satellite's link down to a ground node."""
    return f"g{slot}"


def sat_shell(direction: int, slot: int) -> str:
    """A satellite's link to the shell above (Up: up<j>) or below (Down: dn<j>)."""
    if direction not in (UP, DOWN):
        raise ValueError(f"direction: Up or Down (got {direction})")
    return f"{DIRECTION_IFNAME[direction]}{slot}"


def ground_up(slot: int) -> str:
    """A ground node's link up to its serving satellite."""
    return f"{DIRECTION_IFNAME[UP]}{slot}"


def core_gs(i: int) -> str:
    """An operator core's link to its i-th ground station."""
    return f"g{i}"


def core_peer(op: int) -> str:
    """An operator core's link to operator ``op``'s core (BGP overlay only)."""
    return f"p{op}"


def inet_core(op: int) -> str:
    """The Internet node's link to operator ``op``'s core."""
    return f"c{op}"


def direction_of(kind: str, ifname: str | None) -> str | None:
    """The plan's name for leaving a node of ``kind`` by interface ``ifname`` (None: not a known interface).

    Satellites: ``N`` ``S`` ``E`` ``W`` ``Up`` ``Down`` (the plan's directions);
    ground and terrestrial nodes: ``Up`` (to the satellite), ``tunnel``,
    ``lan``, ``terrestrial``.
    """
    if not ifname:
        return None
    m = _RE_SLOT.match(ifname)
    base = m["base"] if m else None
    if kind == "satellite":
        if ifname in _GRID:
            return DIRECTIONS[_GRID[ifname]]
        if base == "g" or base == DIRECTION_IFNAME[DOWN]:
            return DIRECTIONS[DOWN]
        if base == DIRECTION_IFNAME[UP]:
            return DIRECTIONS[UP]
        return None
    if ifname in TUNNEL_IFNAME.values():
        return "tunnel"
    if base == DIRECTION_IFNAME[UP] and kind in ("ut", "gs"):
        return DIRECTIONS[UP]  # a ground node's link to its satellite
    if ifname in (LAN_UT, LAN_DEV):
        return "lan"
    if kind in ("gs", "core", "inet") and (ifname in (GS_CORE, CORE_INET) or base in ("g", "c")):
        return "terrestrial"
    return None
