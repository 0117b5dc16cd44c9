"""Coverage of one satellite and the minimum constellation that covers Earth.

spec: satellite-semantic-addressing §5.2 (Tables 1 and 2). The formula below
reproduces every cell of both tables (elevation 25 and 35 degrees, altitudes
160..2000 km):

- R = 6378.137 km (WGS-84 equatorial radius), elevation e, altitude h;
- Earth-central half-angle  lambda = arccos(R cos e / (R + h)) - e;
- coverage radius           Rc = R * lambda (km, along the surface);
- satellites per plane      Ns = ceil(2 pi R / (sqrt(3) Rc));
- orbit planes              No = ceil(2 pi R / (1.5 Rc)).

Ns and No use the unrounded Rc; the tables show Rc rounded to the nearest km.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emu.errors import AddressingError

EARTH_RADIUS_KM = 6378.137
ALTITUDE_RANGE_KM = (100.0, 40000.0)


@dataclass(frozen=True)
class Coverage:
    """One satellite's footprint and the minimum Walker grid it implies."""

    coverage_radius_km: float
    min_sats_per_plane: int
    min_planes: int
    central_angle_deg: float

    @property
    def coverage_radius_km_rounded(self) -> int:
        """Rc to the nearest km, as Tables 1 and 2 print it."""
        return int(round(self.coverage_radius_km))


def coverage(altitude_km: float, elevation_deg: float) -> Coverage:
    """Coverage radius and minimum planes / satellites per plane (§5.2)."""
    h = _number("altitude_km", altitude_km)
    e = _number("elevation_deg", elevation_deg)
    lo, hi = ALTITUDE_RANGE_KM
    if not lo <= h <= hi:
        raise AddressingError(f"altitude_km: must be {lo:g}..{hi:g} km (got {altitude_km})")
    if not 0.0 <= e < 90.0:
        raise AddressingError(f"elevation_deg: must be 0 <= elevation < 90 degrees (got {elevation_deg})")
    eps = math.radians(e)
    lam = math.acos(EARTH_RADIUS_KM * math.cos(eps) / (EARTH_RADIUS_KM + h)) - eps
    rc = EARTH_RADIUS_KM * lam
    circumference = 2.0 * math.pi * EARTH_RADIUS_KM
    return Coverage(
        coverage_radius_km=rc,
        min_sats_per_plane=math.ceil(circumference / (math.sqrt(3.0) * rc)),
        min_planes=math.ceil(circumference / (1.5 * rc)),
        central_angle_deg=math.degrees(lam),
    )


def _number(field: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AddressingError(f"{field}: must be a number (got {value!r})") from None
    if math.isnan(v):
        raise AddressingError(f"{field}: must be a number (got {value!r})")
    return v
