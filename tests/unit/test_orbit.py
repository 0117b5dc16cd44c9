"""Orbit propagation against skyfield and a published SGP4 reference."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest
from sgp4.api import Satrec
from skyfield.api import EarthSatellite, load, wgs84
from skyfield.framelib import itrs
from skyfield.sgp4lib import theta_GMST1982

from emu.orbit.constellation import E, N, S, W, build_constellation
from emu.orbit.elements import walker_satrecs
from emu.orbit.propagate import ecef_to_geodetic, geodetic_to_ecef, propagate, timescale
from emu.scenario.model import Shell

from .helpers import DATA, loaded, scenario_dict

ISS = ("1 25544U 98067A   24001.50000000  .00016717  00000-0  10270-3 0  9005",
       "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391 12345")


def test_vanguard_published_reference() -> None:
    """Vallado et al. 2006 (AIAA 2006-6753), case 00005 at tsince=0: TEME r = (7022.46529266, -1400.08296755, 0.03995155) km."""
    lines = (DATA / "vanguard.tle").read_text().splitlines()
    rec = Satrec.twoline2rv(lines[1], lines[2])
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
    from datetime import timedelta

    epoch = epoch + timedelta(days=179.78495062 - 1)
    eph = propagate([rec], epoch, np.array([0.0]))
    ts = timescale()
    t = ts.utc(epoch.year, epoch.month, epoch.day, epoch.hour, epoch.minute, epoch.second + epoch.microsecond / 1e6)
    theta, _ = theta_GMST1982(t.whole, t.ut1_fraction)
    x, y, z = eph.ecef[0, 0]
    teme = np.array([math.cos(theta) * x - math.sin(theta) * y, math.sin(theta) * x + math.cos(theta) * y, z])
    assert np.allclose(teme, [7022.46529266, -1400.08296755, 0.03995155], atol=2e-3)  # 2 m: epoch rounding


def test_positions_match_skyfield() -> None:
    ts = timescale()
    sat = EarthSatellite(*ISS, "ISS", ts)
    epoch = datetime(2024, 1, 1, 12, tzinfo=timezone.utc)
    times = np.arange(0, 5400, 600.0)
    eph = propagate([sat.model], epoch, times)
    t = ts.utc(2024, 1, 1, 12, 0, times)
    ref = sat.at(t).frame_xyz(itrs).km.T  # (times, 3)
    err = np.linalg.norm(eph.ecef[:, 0] - ref, axis=-1)
    assert err.max() < 0.1, err  # GMST-1982 rotation vs skyfield's full ITRS chain: < 100 m
    sub = wgs84.subpoint_of(sat.at(t))
    assert np.allclose(eph.lat[:, 0], sub.latitude.degrees, atol=1e-3)
    dlon = (eph.lon[:, 0] - sub.longitude.degrees + 180) % 360 - 180
    assert np.abs(dlon).max() < 2e-3


def test_geodetic_roundtrip() -> None:
    rng = np.random.default_rng(1)
    lat = rng.uniform(-89.9, 89.9, 200)
    lon = rng.uniform(-180, 180, 200)
    alt = rng.uniform(0, 2000, 200)
    la, lo, al = ecef_to_geodetic(geodetic_to_ecef(lat, lon, alt))
    assert np.allclose(la, lat, atol=1e-7) and np.allclose(al, alt, atol=1e-5)
    assert np.allclose((lo - lon + 180) % 360 - 180, 0, atol=1e-7)


def test_walker_elements_altitude_and_phasing() -> None:
    shell = Shell(name="s", altitude_km=550, inclination_deg=53, planes=4, sats_per_plane=5, phasing=1)
    recs = walker_satrecs(shell, datetime(2026, 1, 1, tzinfo=timezone.utc), 0)
    assert len(recs) == 20
    eph = propagate([r for _, r in recs], datetime(2026, 1, 1, tzinfo=timezone.utc), np.arange(0, 6000, 300.0))
    assert 535 < eph.alt.min() and eph.alt.max() < 575  # SGP4 mean elements: a few km of oscillation
    assert abs(np.abs(eph.lat).max() - 53) < 0.5  # reaches the inclination
    # plane p's RAAN = 90 p; mean anomaly of (p, j) = 72 j + 18 p
    ids = [i for i, _ in recs]
    r = recs[ids.index(next(i for i in ids if i.plane == 1 and i.sat == 2))][1]
    assert math.isclose(math.degrees(r.nodeo), 90, abs_tol=1e-6)
    assert math.isclose(math.degrees(r.mo), 72 * 2 + 18, abs_tol=1e-6)


def test_grid_neighbours_small_delta() -> None:
    c = build_constellation(loaded(scenario_dict()))
    # 3 planes x 4 sats, index = plane*4 + sat
    assert c.grid_nb[0, N] == 1 and c.grid_nb[0, S] == 3
    assert c.grid_nb[0, E] == 4 and c.grid_nb[4, W] == 0
    # delta: the last plane wraps to plane 0 (co-rotating, no seam)
    assert c.grid_nb[8, E] >= 0 and c.grid_nb[0, W] >= 0 and not c.seam_edge.any()
    # every link is symmetric
    for k in range(c.size):
        for d, o in ((N, S), (E, W)):
            j = c.grid_nb[k, d]
            if j >= 0:
                assert c.grid_nb[j, o] == k


def test_star_has_seam() -> None:
    d = scenario_dict()
    d["shells"][0].update(pattern="star", inclination_deg=87.9, altitude_km=1200)
    c = build_constellation(loaded(d))
    last_plane = np.nonzero(c.plane == 2)[0]
    assert (c.grid_nb[last_plane, E] == -1).all() and (c.grid_nb[c.plane == 0][:, W] == -1).all()
    d["links"] = {"seam": "wrap"}
    c2 = build_constellation(loaded(d))
    assert (c2.grid_nb[last_plane, E] >= 0).all()


def test_tle_file_indexing() -> None:
    d = scenario_dict()
    d["shells"] = [{"name": "t", "tle_file": str(DATA / "walker-3x4.tle"), "planes": 3, "sats_per_plane": 4}]
    c = build_constellation(loaded(d))
    # the shuffled file is re-indexed: plane by RAAN (0, 120, 240), satellite by argument of latitude
    for k, rec in enumerate(c.satrecs):
        assert math.isclose(math.degrees(rec.nodeo), 120 * c.plane[k], abs_tol=1e-3)
        assert math.isclose(math.degrees(rec.mo), (90 * c.sat[k] + 30 * c.plane[k]) % 360, abs_tol=1e-3)


def test_tle_count_mismatch_is_scenario_error() -> None:
    from emu.errors import ScenarioError

    d = scenario_dict()
    d["shells"] = [{"name": "t", "tle_file": str(DATA / "walker-3x4.tle"), "planes": 4, "sats_per_plane": 4}]
    with pytest.raises(ScenarioError, match="tle_file"):
        build_constellation(loaded(d))


def test_skyfield_never_downloads(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("download attempted")

    monkeypatch.setattr(load, "download", boom, raising=False)
    timescale()


def test_tle_file_with_reference_simulator_header(tmp_path) -> None:
    """A first line '<planes> <sats_per_plane>' (Hypatia's tles.txt) is accepted and checked against the scenario."""
    from emu.errors import ScenarioError

    body = (DATA / "walker-3x4.tle").read_text()
    good = tmp_path / "good.tle"
    good.write_text("3 4\n" + body)
    d = scenario_dict()
    d["shells"] = [{"name": "t", "tle_file": str(good), "planes": 3, "sats_per_plane": 4}]
    c = build_constellation(loaded(d))
    plain = scenario_dict()
    plain["shells"] = [{"name": "t", "tle_file": str(DATA / "walker-3x4.tle"), "planes": 3, "sats_per_plane": 4}]
    ref = build_constellation(loaded(plain))
    assert [r.nodeo for r in c.satrecs] == [r.nodeo for r in ref.satrecs]
    bad = tmp_path / "bad.tle"
    bad.write_text("4 3\n" + body)
    d["shells"][0]["tle_file"] = str(bad)
    with pytest.raises(ScenarioError, match="header says 4 planes x 3"):
        build_constellation(loaded(d))
