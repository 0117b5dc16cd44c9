"""Ground nodes (ground stations and user terminals) and their visibility.

A satellite is visible from a ground node when its elevation is at least the
node's minimum elevation (satellite-semantic-addressing §5.2 uses 25 and 35
degrees; the scenario sets it per node) and, if the node sets
``max_range_km``, its slant range is at most that (the way reference
simulators such as Hypatia state a ground link's reach).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emu.orbit.propagate import geodetic_to_ecef
from emu.scenario.model import Scenario

C_KM_S = 299792.458
VISIBILITY_CHUNK = 16  # slices computed together by :func:`visibility` (bounds its memory)


@dataclass(frozen=True)
class GroundNodes:
    """Ground stations first, then user terminals; arrays aligned with ``names``."""

    names: tuple[str, ...]
    kind: tuple[str, ...]  # "gs" | "ut"
    operator: np.ndarray  # operator index
    lat: np.ndarray
    lon: np.ndarray
    min_elevation_deg: np.ndarray
    ecef: np.ndarray  # (g, 3) km
    up: np.ndarray  # (g, 3) unit local vertical
    max_range_km: np.ndarray | None = None  # (g,) inf where unset

    @property
    def size(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)


def ground_nodes(sc: Scenario) -> GroundNodes:
    ops = {o.name: i for i, o in enumerate(sc.operators)}
    items = [("gs", g) for g in sc.ground_stations] + [("ut", u) for u in sc.user_terminals]
    lat = np.array([i.lat for _, i in items], dtype=float)
    lon = np.array([i.lon for _, i in items], dtype=float)
    rl, ro = np.radians(lat), np.radians(lon)
    up = np.stack([np.cos(rl) * np.cos(ro), np.cos(rl) * np.sin(ro), np.sin(rl)], axis=-1).reshape(-1, 3)
    return GroundNodes(
        names=tuple(i.name for _, i in items),
        kind=tuple(k for k, _ in items),
        operator=np.array([ops[i.operator] for _, i in items], dtype=np.int16),
        lat=lat,
        lon=lon,
        min_elevation_deg=np.array([i.min_elevation_deg for _, i in items], dtype=float),
        ecef=geodetic_to_ecef(lat, lon).reshape(-1, 3),
        up=up,
        max_range_km=np.array([i.max_range_km if i.max_range_km is not None else np.inf for _, i in items], dtype=float),
    )


@dataclass(frozen=True)
class Visibility:
    """Every (slice, ground node, satellite) with the satellite above the node's mask, as flat arrays."""

    slice: np.ndarray
    node: np.ndarray
    sat: np.ndarray
    elevation_deg: np.ndarray
    range_km: np.ndarray

    @property
    def delay_ms(self) -> np.ndarray:
        return self.range_km / C_KM_S * 1e3


def visibility(nodes: GroundNodes, sat_ecef: np.ndarray, chunk: int = VISIBILITY_CHUNK) -> Visibility:
    """Elevation of every satellite from every ground node at every slice, kept where visible.

    ``sat_ecef`` is (slices, sats, 3). Works in chunks of slices to bound memory.
    """
    parts = []
    n_t = sat_ecef.shape[0]
    if nodes.size == 0:
        z = np.zeros(0)
        return Visibility(z.astype(np.int32), z.astype(np.int32), z.astype(np.int32), z, z)
    sin_mask = np.sin(np.radians(nodes.min_elevation_deg))[None, :, None]
    for t0 in range(0, n_t, chunk):
        sub = sat_ecef[t0:t0 + chunk]  # (c, s, 3)
        d = sub[:, None, :, :] - nodes.ecef[None, :, None, :]  # (c, g, s, 3)
        rng = np.linalg.norm(d, axis=-1)
        sin_el = np.einsum("cgsk,gk->cgs", d, nodes.up) / rng
        seen = sin_el >= sin_mask
        if nodes.max_range_km is not None and np.isfinite(nodes.max_range_km).any():
            seen &= rng <= nodes.max_range_km[None, :, None]
        t, g, s = np.nonzero(seen)
        parts.append((t + t0, g, s, np.degrees(np.arcsin(sin_el[t, g, s])), rng[t, g, s]))
    cat = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    return Visibility(cat[0].astype(np.int32), cat[1].astype(np.int32), cat[2].astype(np.int32), cat[3], cat[4])
