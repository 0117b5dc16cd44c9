"""Snapshots: ISL rules (seam, polar), visibility, bindings, on hand-checked small constellations."""

from __future__ import annotations

import json
import math

import h3
import pytest
import numpy as np
from click.testing import CliRunner
from skyfield.api import EarthSatellite, wgs84

from emu.cli.main import cli
from emu.orbit.constellation import DOWN, E, N, UP
from emu.orbit.propagate import timescale
from emu.snapshot.series import SnapshotSeries

from .helpers import ROOT, loaded, scenario_dict


def test_polar_links_drop_above_threshold() -> None:
    d = scenario_dict()
    d["shells"][0].update(pattern="star", inclination_deg=87.9, altitude_km=1200, planes=4, sats_per_plane=6)
    d["links"] = {"polar_lat_deg": 70}
    d["time"]["duration"] = 3000
    series = SnapshotSeries(loaded(d))
    for snap in series:
        L = snap.links
        inter = (L.dir_a == E)
        assert (np.abs(snap.lat[L.a[inter]]) <= 70).all() and (np.abs(snap.lat[L.b[inter]]) <= 70).all()
        # intra-plane links are always there: 4 planes x 6
        assert (L.dir_a == N).sum() == 24
        # seam: no link between the last plane (3) and plane 0
        c = snap.constellation
        assert not np.any((c.plane[L.a[inter]] == 3) & (c.plane[L.b[inter]] == 0))
    # over the run, some inter-plane links were down (polar) and some up
    counts = [int((s.links.dir_a == E).sum()) for s in series]
    assert min(counts) < 18 and max(counts) > 0


def test_link_lengths_and_delays() -> None:
    series = SnapshotSeries(loaded(scenario_dict()))
    snap = series[0]
    L = snap.links
    ref = np.linalg.norm(snap.ecef[L.a] - snap.ecef[L.b], axis=-1)
    assert np.allclose(L.length_km, ref)
    # intra-plane spacing of 4 satellites at 550 km: chord = 2 r sin(45 deg)
    r = np.linalg.norm(snap.ecef, axis=-1).mean()
    intra = L.length_km[L.dir_a == N]
    assert np.allclose(intra, 2 * r * math.sin(math.pi / 4), rtol=5e-3)
    assert np.allclose(L.delay_ms, L.length_km / 299792.458 * 1e3)
    nb = snap.neighbours
    assert (nb[L.a, L.dir_a] == L.b).all()


def test_visibility_matches_skyfield() -> None:
    d = scenario_dict()
    d["ground_stations"] = [{"name": "g", "lat": 40.0, "lon": -3.0, "operator": "a", "min_elevation_deg": 0.0}]
    d["time"]["duration"] = 6000
    d["time"]["slice_s"] = 60
    series = SnapshotSeries(loaded(d))
    v = series.visibility
    ts = timescale()
    from sgp4 import exporter

    gs = wgs84.latlon(40.0, -3.0)
    for k in np.unique(v.sat)[:3]:
        rec = series.constellation.satrecs[k]
        sat = EarthSatellite(*exporter.export_tle(rec), ts=ts)
        rows = np.nonzero(v.sat == k)[0][:5]
        for i in rows:
            t = ts.utc(2026, 1, 1, 0, 0, float(series.times_s[v.slice[i]]))
            alt, _, dist = (sat - gs).at(t).altaz()
            assert abs(alt.degrees - v.elevation_deg[i]) < 0.15  # TLE export rounding of the elements
            assert abs(dist.km - v.range_km[i]) < 25


def test_bindings_are_subsatellite_cells() -> None:
    series = SnapshotSeries(loaded(scenario_dict()))
    snap = series[1]
    for k in range(snap.constellation.size):
        assert int(snap.bound_cell[k]) == h3.str_to_int(h3.latlng_to_cell(snap.lat[k], snap.lon[k], 6))
    cells = snap.footprint_cells(0, 2, 25.0)
    assert h3.str_to_int(h3.latlng_to_cell(snap.lat[0], snap.lon[0], 2)) in cells
    assert all(h3.get_resolution(h3.int_to_str(c)) == 2 for c in cells)
    # coverage radius at 550 km / 25 deg is ~940 km: a level-2 cell is ~300 km across, so tens of cells
    assert 10 < len(cells) < 200


def test_two_shells_have_up_down_links() -> None:
    d = scenario_dict()
    d["shells"] = [
        {"name": "lo", "altitude_km": 540, "inclination_deg": 53, "planes": 4, "sats_per_plane": 6},
        {"name": "hi", "altitude_km": 570, "inclination_deg": 53, "planes": 4, "sats_per_plane": 6},
    ]
    snap = SnapshotSeries(loaded(d))[0]
    L = snap.links
    up = L.dir_a == UP
    assert up.any()
    c = snap.constellation
    assert (c.shell[L.a[up]] == 0).all() and (c.shell[L.b[up]] == 1).all()
    assert (L.dir_b[up] == DOWN).all() and not L.steady[up].any()
    nb = snap.neighbours
    lower = L.a[up][0]
    assert nb[nb[lower, UP], DOWN] == lower


def test_snapshot_cli_json() -> None:
    res = CliRunner().invoke(cli, ["snapshot", str(ROOT / "topologies" / "default.yaml"), "--time", "30",
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["slice"] == 2 and d["counts"]["satellites"] == 120 and d["counts"]["isls"] == 240
    assert {"a", "b", "dir_a", "delay_ms"} <= set(d["isls"][0])
    assert all(g["elevation_deg"] >= 10 for g in d["ground_links"])


def _many_slices() -> dict:
    """Two shells, ground nodes with a range limit, 70 slices: three runs of emu.snapshot.split (32, 32, 6)."""
    d = scenario_dict()
    d["shells"] = [
        {"name": "lo", "altitude_km": 540, "inclination_deg": 53, "planes": 4, "sats_per_plane": 6},
        {"name": "hi", "altitude_km": 570, "inclination_deg": 53, "planes": 4, "sats_per_plane": 6},
    ]
    d["ground_stations"] = [{"name": f"g{i}", "lat": -50.0 + 25 * i, "lon": 40.0 * i, "operator": "a",
                             "min_elevation_deg": 10.0 + i} for i in range(5)]
    d["ground_stations"][1]["max_range_km"] = 1500.0
    d["time"]["duration"] = 70 * 60
    d["time"]["slice_s"] = 60
    return d


def test_split_series_is_the_same_arrays(monkeypatch) -> None:
    """The planner's series (visibility and bound cells by forked workers) is byte for byte the one-process series."""
    from emu.snapshot import split

    monkeypatch.setattr(split.os, "cpu_count", lambda: 2)
    one = SnapshotSeries(loaded(_many_slices()))
    calls = []
    two = SnapshotSeries(loaded(_many_slices()), workers=2, started=lambda: calls.append(len(calls)))
    assert len(one) == len(two) == 70 and split.workers_for(70, 2) == 2 and calls == [0]
    assert len(one.visibility.slice) > 0 and len(np.unique(one.visibility.slice)) > 40
    for f in ("slice", "node", "sat", "elevation_deg", "range_km"):
        a, b = getattr(one.visibility, f), getattr(two.visibility, f)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f
    for f in ("bound_cells", "_vis_bounds", "_edge_up", "_edge_len", "_edge_a", "_edge_b"):
        a, b = getattr(one, f), getattr(two, f)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), f
    for k in (0, 33, 69):
        assert one[k].ground_links.sat.tobytes() == two[k].ground_links.sat.tobytes()
    single = []
    SnapshotSeries(loaded(scenario_dict()), workers=2, started=lambda: single.append(1))  # 4 slices: no fork
    assert single == [1] and split.workers_for(32, 2) == 1 and split.workers_for(33, 8) == 2


def test_split_series_raises_a_workers_error(monkeypatch) -> None:
    from emu.snapshot import split

    monkeypatch.setattr(split.os, "cpu_count", lambda: 2)
    real = split.visibility

    def failing(nodes, ecef):
        if len(ecef) < split.RUN:  # only the last run's worker fails
            raise ValueError("visibility failed")
        return real(nodes, ecef)

    monkeypatch.setattr(split, "visibility", failing)
    with pytest.raises(ValueError, match="visibility failed"):
        SnapshotSeries(loaded(_many_slices()), workers=2)
