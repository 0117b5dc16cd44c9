"""Propagate every satellite for every slice time through SGP4, vectorised.

One :class:`sgp4.api.SatrecArray` call computes all satellites at all times;
TEME is turned into Earth-fixed coordinates by the GMST-1982 rotation (the
PEF frame; polar motion, ~10 m, is ignored), then into WGS-84 geodetic
latitude/longitude/altitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sgp4.api import SatrecArray
from skyfield.api import load
from skyfield.sgp4lib import theta_GMST1982

from emu.errors import PlanError

WGS84_A = 6378.137
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)

_TS = None


def timescale():
    """Skyfield's timescale from its built-in tables: no download, ever."""
    global _TS
    if _TS is None:
        _TS = load.timescale(builtin=True)
    return _TS


@dataclass(frozen=True)
class Ephemeris:
    """Positions of all satellites at all slice times.

    ``ecef`` has shape (n_times, n_sats, 3) in km; ``lat``/``lon`` degrees and
    ``alt`` km have shape (n_times, n_sats); ``times_s`` seconds since epoch.
    """

    epoch: datetime
    times_s: np.ndarray
    ecef: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray


def propagate(satrecs: list, epoch: datetime, times_s: np.ndarray) -> Ephemeris:
    ts = timescale()
    times_s = np.asarray(times_s, dtype=float)
    t = ts.utc(epoch.year, epoch.month, epoch.day, epoch.hour, epoch.minute,
               epoch.second + epoch.microsecond / 1e6 + times_s)
    jd = t.whole
    fr = t.tai_fraction - t._leap_seconds() / 86400.0
    err, r, _v = SatrecArray(satrecs).sgp4(np.broadcast_to(jd, times_s.shape).copy(), fr)
    if np.any(err):
        bad = np.argwhere(err)[0]
        raise PlanError(f"SGP4 error code {int(err[tuple(bad)])} for satellite #{bad[0]} at t={times_s[bad[1]]:.0f}s")
    # r: (n_sats, n_times, 3) TEME -> rotate about z by -GMST1982
    theta, _ = theta_GMST1982(t.whole, t.ut1_fraction)
    c, s = np.cos(theta), np.sin(theta)
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    ex = c * x + s * y
    ey = -s * x + c * y
    ecef = np.stack([ex, ey, z], axis=-1).transpose(1, 0, 2)  # (times, sats, 3)
    lat, lon, alt = ecef_to_geodetic(ecef)
    return Ephemeris(epoch, times_s, np.ascontiguousarray(ecef), lat, lon, alt)


def ecef_to_geodetic(ecef: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WGS-84 geodetic latitude, longitude (degrees) and height (km); Bowring, two iterations."""
    x, y, z = ecef[..., 0], ecef[..., 1], ecef[..., 2]
    lon = np.degrees(np.arctan2(y, x))
    p = np.hypot(x, y)
    lat = np.arctan2(z, p * (1 - WGS84_E2))
    for _ in range(3):
        n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(lat) ** 2)
        h = p / np.maximum(np.cos(lat), 1e-12) - n
        lat = np.arctan2(z, p * (1 - WGS84_E2 * n / (n + h)))
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(lat) ** 2)
    h = p / np.maximum(np.cos(lat), 1e-12) - n
    return np.degrees(lat), lon, h


def geodetic_to_ecef(lat_deg, lon_deg, alt_km=0.0) -> np.ndarray:
    lat = np.radians(np.asarray(lat_deg, dtype=float))
    lon = np.radians(np.asarray(lon_deg, dtype=float))
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(lat) ** 2)
    x = (n + alt_km) * np.cos(lat) * np.cos(lon)
    y = (n + alt_km) * np.cos(lat) * np.sin(lon)
    z = (n * (1 - WGS84_E2) + alt_km) * np.sin(lat)
    return np.stack([x, y, z], axis=-1)


def slice_datetime(epoch: datetime, seconds: float) -> datetime:
    return epoch + timedelta(seconds=float(seconds))
