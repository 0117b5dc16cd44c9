"""The constellation: every satellite of every shell, indexed, owned, paired.

spec: satellite-semantic-addressing §5.1 (indexes), §4.3 (neighbours: front,
back, left, right, above, below); grc-based-routing §Directional Forwarding
(North/South intra-plane, East/West inter-plane, Down/Up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from emu.orbit.elements import SatelliteId, tle_satrecs, walker_satrecs
from emu.scenario.load import LoadedScenario

# Directions, in the spec's order. Interface names say the direction.
N, S, E, W, DOWN, UP = range(6)
DIRECTIONS = ("N", "S", "E", "W", "Down", "Up")
DIRECTION_IFNAME = ("n", "s", "e", "w", "dn", "up")
OPPOSITE = (S, N, W, E, UP, DOWN)


@dataclass(frozen=True)
class Constellation:
    """All satellites, flattened: satellite k has ``shell[k]``, ``plane[k]``, ``sat[k]``."""

    ids: tuple[SatelliteId, ...]
    satrecs: tuple = field(repr=False)
    shell: np.ndarray
    plane: np.ndarray
    sat: np.ndarray
    owner: np.ndarray  # operator index owning the satellite, -1 if none
    grid_nb: np.ndarray  # (n, 4) neighbour index for N, S, E, W or -1
    seam_edge: np.ndarray  # (n, 4) bool: the E/W link crosses the seam
    period_s: float

    @property
    def size(self) -> int:
        return len(self.ids)

    @cached_property
    def names(self) -> list[str]:
        return [i.name for i in self.ids]

    @cached_property
    def index_of(self) -> dict[str, int]:
        return {n: k for k, n in enumerate(self.names)}


def build_constellation(loaded: LoadedScenario) -> Constellation:
    sc = loaded.scenario
    pairs = []
    for si, shell in enumerate(sc.shells):
        if shell.tle_file is None:
            pairs += walker_satrecs(shell, sc.time.epoch, si, first_satnum=len(pairs) + 1)
        else:
            pairs += tle_satrecs(shell, loaded.resolve(shell.tle_file), si)
    ids = tuple(p[0] for p in pairs)
    recs = tuple(p[1] for p in pairs)
    n = len(ids)
    shell = np.array([i.shell for i in ids], dtype=np.int16)
    plane = np.array([i.plane for i in ids], dtype=np.int16)
    sat = np.array([i.sat for i in ids], dtype=np.int16)

    owner = np.full(n, -1, dtype=np.int16)
    for oi, op in enumerate(sc.operators):
        for ps in op.owns:
            planes = ps.resolve(int(sc.shells[ps.shell].planes))
            owner[(shell == ps.shell) & np.isin(plane, planes)] = oi

    grid_nb = np.full((n, 4), -1, dtype=np.int32)
    seam_edge = np.zeros((n, 4), dtype=bool)
    base = 0
    for si, shell_cfg in enumerate(sc.shells):
        P, S_ = int(shell_cfg.planes), int(shell_cfg.sats_per_plane)
        idx = lambda p, j: base + p * S_ + (j % S_)  # noqa: E731
        seam_mode = sc.links.seam
        if seam_mode == "auto":
            seam_mode = "down" if _is_star(shell_cfg, recs[base:base + P * S_]) else "wrap"
        arglat = np.array([(r.argpo + r.mo) % (2 * math.pi) for r in recs[base:base + P * S_]]).reshape(P, S_)
        for p in range(P):
            for j in range(S_):
                k = idx(p, j)
                if S_ > 1:
                    grid_nb[k, N] = idx(p, j + 1)
                    grid_nb[k, S] = idx(p, j - 1)
            if P < 2:
                continue
            q = (p + 1) % P
            crosses = q == 0
            if crosses and (seam_mode == "down" or P == 2):
                continue
            off = _plane_offset(arglat[p], arglat[q], S_)
            for j in range(S_):
                a, b = idx(p, j), idx(q, j + off)
                grid_nb[a, E] = b
                grid_nb[b, W] = a
                seam_edge[a, E] = seam_edge[b, W] = crosses and seam_mode != "wrap"
        base += P * S_
    period = min(2 * math.pi / r.no_kozai * 60.0 for r in recs)
    return Constellation(ids, recs, shell, plane, sat, owner, grid_nb, seam_edge, period)


def _plane_offset(a: np.ndarray, b: np.ndarray, spp: int) -> int:
    """Index shift k so that satellite j of plane a pairs with j+k of plane b (nearest argument of latitude)."""
    spacing = 2 * math.pi / spp
    diff = (a - b[: len(a)]) / spacing
    return int(round(float(np.median(np.round(diff))))) % spp if spp else 0


def _is_star(shell_cfg, recs) -> bool:
    if shell_cfg.tle_file is None:
        return shell_cfg.pattern == "star"
    raans = sorted(r.nodeo for r in recs)
    return (raans[-1] - raans[0]) < math.radians(200)


def slice_times(loaded: LoadedScenario, constellation: Constellation, n_slices: int | None = None) -> np.ndarray:
    """Start time of every slice, seconds since the scenario epoch."""
    t = loaded.scenario.time
    duration = constellation.period_s if t.duration == "one_orbit" else float(t.duration)
    count = max(1, math.ceil(duration / t.slice_s - 1e-9))
    if n_slices is not None:
        count = n_slices
    return np.arange(count, dtype=float) * t.slice_s
