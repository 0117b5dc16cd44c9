"""Route actions: what one routing-table entry does, packed into one int64.

spec: grc-based-routing §Routing Table Structure — an entry maps a
destination GRC prefix to one or more egress directions (North, South, East,
West, Down, Up) with path attributes (priority / weight / optional next hop).

Layout of the int64 code (0 means "no entry"):

    bits 0..5    direction mask: N, S, E, W, Down, Up (bit d = direction d)
    bits 6..47   one 7-bit attribute per direction d at 6+7d:
                 kind MULTIPATH: weight 1..100 (ECMP: all equal; UCMP: unequal)
                 kind STANDBY:   priority 1 (active) or 2 (standby)
    bits 48..49  kind: 0 MULTIPATH, 1 STANDBY, 2 LOCAL (delivered to the satellite itself)
    bits 50..62  Down target: ground-node index + 1 (0: none, or Down to the lower shell)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emu.orbit.constellation import DIRECTIONS, DOWN

MULTIPATH, STANDBY, LOCAL = 0, 1, 2
KIND_NAMES = ("multipath", "standby", "local")
_ATTR_SHIFT = 6
_KIND_SHIFT = 48
_TARGET_SHIFT = 50
MAX_GROUND_TARGET = (1 << 13) - 2


@dataclass(frozen=True)
class Egress:
    direction: int  # 0..5
    attribute: int  # weight or priority


@dataclass(frozen=True)
class Action:
    kind: int
    egress: tuple[Egress, ...]
    down_target: int | None  # ground-node index

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[e.direction] for e in self.egress]


def encode(kind: int, attrs: dict[int, int], down_target: int | None = None) -> int:
    """attrs: direction -> weight/priority (1..100)."""
    code = kind << _KIND_SHIFT
    for d, a in attrs.items():
        if not 1 <= a <= 100:
            raise ValueError(f"attribute must be 1..100 (got {a})")
        code |= (1 << d) | (a << (_ATTR_SHIFT + 7 * d))
    if down_target is not None:
        if not 0 <= down_target <= MAX_GROUND_TARGET:
            raise ValueError(f"ground target index too large (got {down_target})")
        code |= (down_target + 1) << _TARGET_SHIFT
    return code


def local() -> int:
    return LOCAL << _KIND_SHIFT


def decode(code: int) -> Action:
    code = int(code)
    kind = (code >> _KIND_SHIFT) & 3
    egress = []
    for d in range(6):
        if code >> d & 1:
            egress.append(Egress(d, (code >> (_ATTR_SHIFT + 7 * d)) & 0x7F))
    tgt = (code >> _TARGET_SHIFT) & 0x1FFF
    return Action(kind, tuple(egress), tgt - 1 if tgt else None)


def mask_of(codes: np.ndarray) -> np.ndarray:
    return np.asarray(codes, dtype=np.int64) & 0x3F


def kind_of(codes: np.ndarray) -> np.ndarray:
    return (np.asarray(codes, dtype=np.int64) >> _KIND_SHIFT) & 3


def target_of(codes: np.ndarray) -> np.ndarray:
    """Ground-node index of a Down-to-ground action, or -1."""
    return ((np.asarray(codes, dtype=np.int64) >> _TARGET_SHIFT) & 0x1FFF) - 1


def is_terminal(codes: np.ndarray) -> np.ndarray:
    """Entries that end the satellite segment: local delivery or Down to a ground node."""
    c = np.asarray(codes, dtype=np.int64)
    return (kind_of(c) == LOCAL) | ((target_of(c) >= 0) & ((c >> DOWN) & 1).astype(bool))


def describe(code: int, ground_names: list[str] | None = None) -> str:
    a = decode(code)
    if a.kind == LOCAL:
        return "local"
    parts = []
    for e in a.egress:
        label = DIRECTIONS[e.direction]
        if e.direction == DOWN and a.down_target is not None and ground_names:
            label += f"->{ground_names[a.down_target]}"
        attr = f"w={e.attribute}" if a.kind == MULTIPATH else ("active" if e.attribute == 1 else "standby")
        parts.append(f"{label}({attr})")
    return " ".join(parts)
