"""Element sets: Walker shells turned into SGP4 records, TLE files read as they are.

Both paths end in :class:`sgp4.api.Satrec` objects so one propagator serves
both (:mod:`emu.orbit.propagate`).

Indexes follow satellite-semantic-addressing §5.1: plane index increases with
the right ascension of the ascending node (RAAN), satellite index increases
along the direction of motion (argument of latitude), shell index increases
with altitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sgp4.api import WGS72, Satrec

from emu.errors import ScenarioError
from emu.scenario.load import read_capped
from emu.scenario.model import Shell

MU_WGS72 = 398600.8  # km^3/s^2, the gravity model SGP4 uses
R_WGS72 = 6378.135  # km
_SGP4_EPOCH0 = datetime(1949, 12, 31, tzinfo=timezone.utc)


@dataclass(frozen=True)
class SatelliteId:
    """Where a satellite sits in the constellation (spec: semantic-addressing §5.1)."""

    shell: int
    plane: int
    sat: int

    @property
    def name(self) -> str:
        return f"sat{self.shell}-{self.plane}-{self.sat}"


def mean_motion_rad_min(altitude_km: float) -> float:
    """Kozai mean motion (rad/min) of a circular orbit at ``altitude_km``."""
    a = R_WGS72 + altitude_km
    return math.sqrt(MU_WGS72 / a**3) * 60.0


def walker_satrecs(shell: Shell, epoch: datetime, shell_index: int, first_satnum: int = 1) -> list[tuple[SatelliteId, Satrec]]:
    """Satellites of a Walker shell as SGP4 records at ``epoch``.

    Delta (i:T/P/F): RAANs spread over 360 deg; star: over 180 deg (polar, with
    a seam between the last and the first plane). Mean anomaly of satellite j
    in plane p = 360*j/S + 360*F*p/(S*P) (the Walker phasing F).
    """
    planes, spp = int(shell.planes), int(shell.sats_per_plane)
    spread = 360.0 if shell.pattern == "delta" else 180.0
    n = mean_motion_rad_min(float(shell.altitude_km))
    inc = math.radians(float(shell.inclination_deg))
    epoch_days = (epoch - _SGP4_EPOCH0).total_seconds() / 86400.0
    out = []
    satnum = first_satnum
    for p in range(planes):
        raan = math.radians((shell.raan_offset_deg + spread * p / planes) % 360.0)
        for j in range(spp):
            m = math.radians((360.0 * j / spp + 360.0 * shell.phasing * p / (spp * planes)) % 360.0)
            rec = Satrec()
            # circular orbit: e = 0, argument of perigee 0 so mean anomaly = argument of latitude
            rec.sgp4init(WGS72, "i", satnum, epoch_days, 0.0, 0.0, 0.0, 0.0, 0.0, inc, m, n, raan)
            out.append((SatelliteId(shell_index, p, j), rec))
            satnum += 1
    return out


MAX_TLE_BYTES = 8 * 1024 * 1024  # CelesTrak's whole active catalogue is ~2 MB


def tle_checksum(line: str) -> int:
    """The TLE line checksum: digits summed, '-' counts 1, modulo 10 (column 69 holds it)."""
    return sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in line[:68]) % 10


def _tle_lines(path: Path, field: str) -> list[tuple[int, str]]:
    """The non-blank lines of a TLE file as (line number, text); refused if unreadable, too large or not ASCII."""
    raw = read_capped(path, MAX_TLE_BYTES, "TLE", field)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not a TLE file (not ASCII text, byte {exc.start})", field, str(path)) from None
    return [(n + 1, ln.rstrip()) for n, ln in enumerate(text.splitlines()) if ln.strip()]


def _header_of(numbered: list[tuple[int, str]]) -> tuple[int, int] | None:
    if numbered:
        parts = numbered[0][1].split()
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
    return None


def tle_header(path: Path, field: str = "tle_file") -> tuple[int, int] | None:
    """The ``<planes> <sats_per_plane>`` first line that reference simulators write (Hypatia's tles.txt), or None."""
    return _header_of(_tle_lines(path, field))


def read_tle_file(path: Path, field: str = "tle_file") -> list[tuple[str, str, str]]:
    """Read a CelesTrak-style file: (name, line1, line2) triples; 2-line files get names from the catalogue number.

    A first line of two integers (``<planes> <sats_per_plane>``, as Hypatia writes
    its tles.txt) is skipped here; :func:`tle_satrecs` checks it against the scenario.
    Refused as bad input (ScenarioError naming ``field`` and file:line): unreadable, larger than
    MAX_TLE_BYTES, not ASCII, not name/line 1/line 2 groups, a line not 69 columns, a wrong checksum,
    line 1 and 2 of different satellites, or elements SGP4 cannot read."""
    numbered = _tle_lines(path, field)
    if _header_of(numbered) is not None:
        numbered = numbered[1:]
    lines = [ln for _, ln in numbered]
    out = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("1 ") and i + 1 < len(lines) and lines[i + 1].startswith("2 "):
            name, first = lines[i][2:7].strip(), i
            i += 2
        elif i + 2 < len(lines) and lines[i + 1].startswith("1 ") and lines[i + 2].startswith("2 "):
            name, first = lines[i].strip(), i + 1
            i += 3
        else:
            raise ScenarioError("not a TLE file (expected name / line 1 / line 2)", field,
                                f"{path}:{numbered[i][0]}")
        l1, l2 = lines[first], lines[first + 1]
        for ln, n in ((l1, numbered[first][0]), (l2, numbered[first + 1][0])):
            if len(ln) != 69:
                raise ScenarioError(f"TLE line must be 69 columns (has {len(ln)})", field, f"{path}:{n}")
            if not ln[68].isdigit() or int(ln[68]) != tle_checksum(ln):
                raise ScenarioError(f"TLE checksum wrong (column 69 is {ln[68]!r}, the line sums to "
                                    f"{tle_checksum(ln)})", field, f"{path}:{n}")
        if l1[2:7] != l2[2:7]:
            raise ScenarioError("TLE line 1 and line 2 are of different satellites", field,
                                f"{path}:{numbered[first][0]}")
        try:
            err = Satrec.twoline2rv(l1, l2).error
        except (ValueError, IndexError) as exc:
            err = str(exc)[:60] or type(exc).__name__
        if err:
            raise ScenarioError(f"TLE elements SGP4 cannot use ({err})", field, f"{path}:{numbered[first][0]}")
        out.append((name, l1, l2))
    if not out:
        raise ScenarioError("TLE file holds no satellites", field, str(path))
    return out


def tle_satrecs(shell: Shell, path: Path, shell_index: int) -> list[tuple[SatelliteId, Satrec]]:
    """Satellites of a TLE file, indexed into planes by RAAN and along-plane by argument of latitude.

    The file must hold ``planes * sats_per_plane`` satellites; planes are the
    ``planes`` clusters of RAAN (sorted by RAAN), satellites within a plane
    are sorted by argument of latitude at the first record's epoch.
    """
    triples = read_tle_file(path, f"shells.{shell_index}.tle_file")
    planes, spp = int(shell.planes), int(shell.sats_per_plane)
    head = tle_header(path, f"shells.{shell_index}.tle_file")
    if head is not None and head != (planes, spp):
        raise ScenarioError(f"TLE file header says {head[0]} planes x {head[1]} satellites, the scenario "
                            f"{planes} x {spp}", f"shells.{shell_index}.tle_file", str(path))
    if len(triples) != planes * spp:
        raise ScenarioError(f"TLE file holds {len(triples)} satellites, planes*sats_per_plane is {planes * spp}",
                            f"shells.{shell_index}.tle_file", str(path))
    recs = [Satrec.twoline2rv(l1, l2) for _, l1, l2 in triples]
    raan = np.array([r.nodeo for r in recs])
    arglat = np.array([(r.argpo + r.mo) % (2 * math.pi) for r in recs])
    # cluster RAANs: sort, then cut at the (planes) largest circular gaps
    order = np.argsort(raan)
    gaps = np.diff(np.concatenate([raan[order], [raan[order][0] + 2 * math.pi]]))
    cuts = np.sort(np.argsort(gaps)[-planes:]) if planes > 1 else np.array([len(order) - 1])
    plane_of = np.empty(len(recs), dtype=int)
    start = (cuts[-1] + 1) % len(order)
    rotated = np.roll(order, -start)
    bounds = [((c - start) % len(order)) + 1 for c in cuts]
    bounds = sorted(bounds)
    prev = 0
    for p, b in enumerate(bounds):
        plane_of[rotated[prev:b]] = p
        prev = b
    out = []
    for p in range(planes):
        members = np.nonzero(plane_of == p)[0]
        if len(members) != spp:
            raise ScenarioError(f"plane {p} has {len(members)} satellites by RAAN clustering, expected {spp}",
                                f"shells.{shell_index}.tle_file", str(path))
        for j, k in enumerate(members[np.argsort(arglat[members])]):
            out.append((SatelliteId(shell_index, p, j), recs[k]))
    return out
