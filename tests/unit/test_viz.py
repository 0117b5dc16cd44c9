"""``leo-emu plot`` and :mod:`emu.viz`: figures of the sparse scenario (6 x 8, the former default) checked for what they show.

Each figure is drawn on a real Axes and its artists are counted against the
plan (satellites, ISLs by class, ground nodes, serving links, hops, bars,
curve points); the CLI's PNG and CSV are checked for size and rows.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from emu.cli.main import cli  # noqa: E402
from emu.errors import InputError  # noqa: E402
from emu.plan.db import PlanDB  # noqa: E402
from emu.plan.path import PathFinder  # noqa: E402
from emu.viz import data as vd  # noqa: E402
from emu.viz import figures  # noqa: E402
from emu.viz.results import load_results  # noqa: E402

from .helpers import ROOT  # noqa: E402

SLICES = 40
SCENARIO = ROOT / "topologies/sparse.yaml"  # 6 planes x 8: the known counts below (48 satellites, 8 seam links)

pytest.importorskip("cartopy")


def _coast_or_skip():
    from emu.viz.coast import CoastlineError, coastline_path

    try:
        coastline_path()
    except CoastlineError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def plan_db(tmp_path_factory):
    out = tmp_path_factory.mktemp("viz") / "sparse.db"
    subprocess.run([sys.executable, "-m", "emu.cli.main", "plan", str(SCENARIO), "-o", str(out),
                    "--slices", str(SLICES), "--format", "json"], check=True, cwd=ROOT, capture_output=True)
    return out


@pytest.fixture(scope="module")
def view(plan_db):
    return vd.PlanView(PlanDB(plan_db))


def _geo_axes():
    import cartopy.crs as ccrs

    fig = plt.figure(figsize=(7, 4.3))
    return fig, fig.add_subplot(1, 1, 1, projection=ccrs.PlateCarree())


def _by_gid(ax, prefix: str) -> list:
    arts = list(ax.collections) + list(ax.lines) + list(ax.texts) + list(ax.patches)
    return [a for a in arts if (a.get_gid() or "").startswith(prefix)]


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ----------------------------------------------------------------------------- data
def test_per_satellite_table_sizes_add_up_to_the_plan(view) -> None:
    """Aggregated sizes sum to the slice's ``entries``; destinations each table routes sum to ``raw_entries``."""
    for k in (0, 7, SLICES - 1):
        agg, raw = view.table_sizes(k)
        entries, raw_entries = view.db.con.execute("SELECT entries, raw_entries FROM slices WHERE k = ?", (k,)).fetchone()
        assert agg.sum() == entries and raw.sum() == raw_entries
        assert (agg <= raw).all() and len(agg) == 48
        # 8 ground nodes + 48 satellites are the destinations: no table routes more
        assert raw.max() <= 56


def test_positions_match_the_planner(view) -> None:
    """Positions recomputed from the plan's signed TLEs are the snapshots' positions."""
    from emu.scenario.load import load_scenario
    from emu.snapshot.series import SnapshotSeries

    lat, lon = view.positions([0, 5])
    series = SnapshotSeries(load_scenario(SCENARIO), 6)
    np.testing.assert_allclose(lat, series.ephemeris.lat[[0, 5]], atol=0.05)
    dlon = (lon - series.ephemeris.lon[[0, 5]] + 180) % 360 - 180
    np.testing.assert_allclose(dlon, 0, atol=0.05)


def test_link_classes_of_the_delta_shell(view) -> None:
    m = vd.map_data(view, 3)
    classes = [c for _a, _b, c in m.links]
    assert classes.count(vd.INTRA) == 48  # 6 planes x 8: each satellite's northward link
    # E/W: 6 planes x 8, the wrap-around (plane 5 <-> plane 0) classed as seam, minus links down at the pole
    assert classes.count(vd.SEAM) + classes.count(vd.INTER) == len(m.links) - 48
    assert classes.count(vd.SEAM) == 8 and vd.SHELL not in classes


# ----------------------------------------------------------------------------- figures
def test_map_shows_every_satellite_link_and_ground_node(view) -> None:
    _coast_or_skip()
    k = 11
    m = vd.map_data(view, k)
    fig, ax = _geo_axes()
    try:
        figures.plot_map(ax, m)
        sats = _by_gid(ax, "satellites:")
        assert {a.get_gid() for a in sats} == {"satellites:sno-a", "satellites:sno-b"}
        assert sum(len(a.get_offsets()) for a in sats) == 48
        isl = {a.get_gid(): len(a.get_segments()) for a in _by_gid(ax, "isl:")}
        assert sum(isl.values()) == len(view.db.links(k))
        assert isl[f"isl:{vd.SEAM}"] == 8
        ground = {a.get_gid(): len(a.get_offsets()) for a in _by_gid(ax, "ground:")}
        assert ground == {"ground:gs": 4, "ground:ut": 4}
        serving = _by_gid(ax, "serving")
        assert len(serving[0].get_segments()) == int((view.db.ground_links(k) >= 0).sum())
        assert len(_by_gid(ax, "polar_limit")) == 2
        assert f"slice {k}" in ax.get_title()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "ISL intra-plane N/S" in labels and "ground station" in labels and "sno-a" in labels
    finally:
        plt.close(fig)


def test_map_by_plane_colours_six_planes(view) -> None:
    _coast_or_skip()
    fig, ax = _geo_axes()
    try:
        figures.plot_map(ax, vd.map_data(view, 0, color_by="plane"))
        sats = _by_gid(ax, "satellites:")
        assert len(sats) == 6 and all(len(a.get_offsets()) == 8 for a in sats)
    finally:
        plt.close(fig)


def _reachable_slice(view, src, dst, min_sats=2) -> tuple[int, dict]:
    pf = PathFinder(view.db)
    for k in range(SLICES):
        r = pf.path(src, dst, k)
        if r["reachable"] and r["satellite_hops"] >= min_sats:
            return k, r
    pytest.fail(f"no slice with a {min_sats}-satellite path {src} -> {dst}")


def test_path_labels_each_hop_with_its_direction(view) -> None:
    _coast_or_skip()
    k, r = _reachable_slice(view, "ut3", "ut4")
    m = vd.map_data(view, k)
    p = vd.path_data(view, m, "ut3", "ut4")
    fig, ax = _geo_axes()
    try:
        figures.plot_path(ax, m, p)
        hops = r["hops"]
        assert [t.get_text() for t in _by_gid(ax, "path:egress")] == [h["egress"] for h in hops[:-1]]
        assert [t.get_text() for t in _by_gid(ax, "path:node")] == [h["node"] for h in hops]
        assert len(_by_gid(ax, "path:hops")[0].get_offsets()) == len(hops)
        assert f"{r['one_way_delay_ms']:.1f} ms" in ax.get_title()
    finally:
        plt.close(fig)


def test_rtt_plots_every_slice_and_marks_handovers(view, tmp_path) -> None:
    pf = PathFinder(view.db)
    samples = tmp_path / "rtt.csv"
    samples.write_text("src,dst,time_s,rtt_ms\ndev1,inet,10.0,40.5\ndev1,inet,25.0,41.0\ndev2,dev4,10,9\n")
    d = vd.rtt_data(view, [("dev1", "inet"), ("dev2", "dev4")], load_results(samples, view.db.slice_s))
    fig, ax = plt.subplots(figsize=(3.5, 2.5))
    try:
        figures.plot_rtt(ax, d)
        (line,) = _by_gid(ax, "rtt:dev1>inet")
        planned = [2 * r["one_way_delay_ms"] if r["reachable"] else np.nan
                   for r in (pf.path("dev1", "inet", k) for k in range(SLICES))]
        np.testing.assert_allclose(line.get_ydata(), planned)
        np.testing.assert_allclose(line.get_xdata(), np.arange(SLICES) * 15 / 60)
        idx = {g.name: g.idx for g in view.db.ground}
        on = [{idx["ut1"]} | {idx[h["node"]] for h in pf.path("dev1", "inet", k)["hops"] if h["node"] in idx}
              for k in range(SLICES)]
        ho = sorted({k * 15.0 for k, node, _f, _t in view.db.handovers()
                     if node in on[k] or (k and node in on[k - 1])})
        assert {k * 15.0 for k, node, _f, _t in view.db.handovers() if node == idx["ut1"]} <= set(ho)
        (marks,) = _by_gid(ax, "handover:dev1>inet")
        np.testing.assert_allclose(marks.get_xdata(), np.array(ho) / 60)
        (meas,) = _by_gid(ax, "measured:dev1>inet")
        assert list(meas.get_ydata()) == [40.5, 41.0]
        assert len(_by_gid(ax, "measured:dev2>dev4")[0].get_xdata()) == 1
        assert ax.get_ylabel() == "round-trip delay (ms)" and "time" in ax.get_xlabel()
    finally:
        plt.close(fig)


@pytest.fixture(scope="module")
def default_plan_db(tmp_path_factory):
    """The default scenario, 80 slices: owner and dynamic association differ (dynamic turns inter- into intra-SNO)."""
    out = tmp_path_factory.mktemp("viz") / "default.db"
    subprocess.run([sys.executable, "-m", "emu.cli.main", "plan", str(ROOT / "topologies/default.yaml"), "-o", str(out),
                    "--slices", "80", "--format", "json"], check=True, cwd=ROOT, capture_output=True)
    return out


@pytest.mark.parametrize("which", ["plan_db", "default_plan_db"])
def test_handovers_bars_per_ut_policy_and_kind_match_the_handovers_command(request, tmp_path, which) -> None:
    plan_db = request.getfixturevalue(which)
    view = vd.PlanView(PlanDB(plan_db))
    res = run("handovers", plan_db, "--format", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    uts = [u["ut"] for u in rep["per_ut"]]
    assert uts == [g.name for g in view.db.ground if g.kind == "ut"] and len(uts) == 4
    d = vd.handover_data(view)
    fig, ax = plt.subplots()
    try:
        figures.plot_handovers(ax, d)
        for pol in ("owner", "dynamic"):
            intra = _by_gid(ax, f"bars:{pol}:intra")
            inter = _by_gid(ax, f"bars:{pol}:inter")
            assert len(intra) == len(inter) == 1 + len(uts)  # all UTs, then one per terminal
            want = {k: [rep[pol][f"{k}_per_user_hour"]] + [u[pol][f"{k}_per_user_hour"] for u in rep["per_ut"]]
                    for k in ("intra", "inter")}
            assert [b.get_height() for b in intra] == want["intra"]
            # stacked: matplotlib keeps bottom and top, so the height is top - bottom (float rounding only)
            assert [b.get_height() for b in inter] == pytest.approx(want["inter"], rel=1e-12, abs=1e-12)
            assert [b.get_y() for b in inter] == want["intra"]  # inter-SNO stacked on intra-SNO
            # the rates are the counts over the served hours the command reports
            for u, b in zip(rep["per_ut"], inter[1:]):
                assert b.get_height() == pytest.approx(u[pol]["inter"] / u["served_hours"], rel=1e-3)
        # known for these plans: intra- and inter-SNO handovers both occur; on the default one, dynamic has fewer
        # inter-SNO handovers than owner for every terminal
        assert sum(d.per_ut[("owner", "intra")]) > 0 and sum(d.per_ut[("owner", "inter")]) > 0
        if which == "default_plan_db":
            assert all(o > dy for o, dy in zip(d.per_ut[("owner", "inter")], d.per_ut[("dynamic", "inter")]))
        gs = [g for g in view.db.ground if g.kind == "gs"]
        gs_bars = _by_gid(ax, "bars:gs:satellite")
        hours = view.db.n_slices * view.db.slice_s / 3600
        counts = np.bincount([node for _k, node, _f, _t in view.db.handovers()], minlength=len(view.db.ground))
        idx = {g.name: i for i, g in enumerate(view.db.ground)}
        np.testing.assert_allclose([b.get_height() for b in gs_bars], [counts[idx[g.name]] / hours for g in gs],
                                   atol=1e-4)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["all UTs", *uts, *(g.name for g in gs)]
        assert ax.get_ylabel() == "handovers per (user-)hour"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "owner: intra-SNO", "owner: inter-SNO", "dynamic: intra-SNO", "dynamic: inter-SNO", "GS: satellite change"]
    finally:
        plt.close(fig)
    # the CLI's CSV holds exactly the plotted numbers
    out = tmp_path / "h.png"
    assert run("plot", plan_db, "handovers", "--out", out).exit_code == 0
    rows = _read_csv(tmp_path / "h.csv")
    for pol in ("owner", "dynamic"):
        for kind in ("intra", "inter"):
            got = {r["node"]: float(r["per_hour"]) for r in rows if r["policy"] == pol and r["handover"] == kind}
            assert got == dict(zip(d.uts, d.per_ut[(pol, kind)]))
    assert {r["node"]: float(r["per_hour"]) for r in rows if r["kind"] == "gs"} == dict(zip(d.gss, d.gs_per_hour))


def test_tables_median_and_band_per_slice(view) -> None:
    d = vd.table_data(view)
    fig, ax = plt.subplots()
    try:
        figures.plot_tables(ax, d)
        (agg,) = _by_gid(ax, "median:aggregated")
        sizes = np.array([view.db.tables(k).sizes for k in range(SLICES)])
        np.testing.assert_allclose(agg.get_ydata(), np.median(sizes, axis=1))
        (raw,) = _by_gid(ax, "median:not aggregated")
        assert (raw.get_ydata() >= agg.get_ydata()).all()
        assert len(_by_gid(ax, "band:")) == 2 and ax.get_ylabel() == "entries per satellite"
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- the CLI: files, CSV rows, errors
@pytest.mark.parametrize("what,extra,rows", [
    ("map", ["--slice", "5"], lambda db: 48 + len(db.links(5)) + len(db.link_delta(5)[1]) + 8
     + int((db.ground_links(5) >= 0).sum()) + 1),
    ("rtt", ["--pair", "dev1", "inet"], None),
    # (all UTs + each UT) x 2 policies x 2 kinds, + one per GS
    ("handovers", [], lambda db: 4 * (1 + sum(g.kind == "ut" for g in db.ground))
     + sum(g.kind == "gs" for g in db.ground)),
    ("tables", [], lambda db: SLICES),
])
def test_plot_cli_writes_png_and_csv(plan_db, tmp_path, what, extra, rows) -> None:
    if what == "map":
        _coast_or_skip()
    out = tmp_path / f"{what}.png"
    res = run("plot", plan_db, what, *extra, "--out", out, "--format", "json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = _read_csv(tmp_path / f"{what}.csv")
    assert summary["csv_rows"] == len(table)
    if what != "rtt":
        assert len(table) == rows(PlanDB(plan_db))
    else:
        assert sum(1 for r in table if r["series"] == "planned_rtt") == SLICES


def test_plot_path_cli(plan_db, view, tmp_path) -> None:
    _coast_or_skip()
    k, r = _reachable_slice(view, "dev1", "inet", min_sats=1)
    res = run("plot", plan_db, "path", "--slice", k, "--pair", "dev1", "inet", "--out", tmp_path / "p.png")
    assert res.exit_code == 0, res.output
    table = _read_csv(tmp_path / "p.csv")
    assert [row["node"] for row in table] == [h["node"] for h in r["hops"]]
    assert [row["egress"] for row in table][:-1] == [h["egress"] for h in r["hops"]][:-1]


@pytest.mark.parametrize("args,field", [
    (["map", "--slice", "400"], "--slice"),
    (["path", "--pair", "dev1", "nowhere"], "--pair"),
    (["rtt", "--results", "missing.json"], "--results"),
    (["handovers", "--results", "x.csv"], "--results"),
    (["tables", "--width", "0.1"], "--width"),
])
def test_plot_bad_input_exits_2_and_creates_nothing(plan_db, tmp_path, args, field) -> None:
    out = tmp_path / "x.png"
    res = run("plot", plan_db, *args, "--out", out)
    assert res.exit_code == 2 and field in res.output
    assert not out.exists() and not out.with_suffix(".csv").exists()


def test_results_accepts_ping_json_outputs(tmp_path) -> None:
    f = tmp_path / "pings.json"
    rec = {"src": "dev1", "dst": "inet", "slice": 4, "rtt_avg_ms": 33.2, "rtt_min_ms": 30.0}
    lost = {"src": "dev1", "dst": "inet", "slice": 5, "rtt_avg_ms": None}
    f.write_text(json.dumps(rec, indent=2) + "\n" + json.dumps(lost, indent=2) + "\n")
    assert load_results(f, 15.0) == [{"src": "dev1", "dst": "inet", "time_s": 67.5, "rtt_ms": 33.2}]
    bad = tmp_path / "bad.csv"
    bad.write_text("src,dst,t,rtt\n")
    with pytest.raises(InputError, match="time_s"):
        load_results(bad, 15.0)
    bad.write_text("src,dst,time_s,rtt_ms\ndev1,inet,abc,3\n")
    with pytest.raises(InputError, match="line 2: time_s"):
        load_results(bad, 15.0)


def test_seam_and_polar_satellites_are_marked(tmp_path) -> None:
    """Walker star: planes 0 and P-1 have no ISL across the seam; satellites above the polar latitude no E/W ISL."""
    db_path = tmp_path / "polar.db"
    subprocess.run([sys.executable, "-m", "emu.cli.main", "plan", str(ROOT / "topologies/polar.yaml"), "-o",
                    str(db_path), "--slices", "2"], check=True, cwd=ROOT, capture_output=True)
    v = vd.PlanView(PlanDB(db_path))
    m = vd.map_data(v, 1)
    P = v.planes_of_shell[0]
    off = set(m.ew_off)
    seam = {i for i in range(v.n_sats) if v.plane[i] in (0, P - 1)}
    polar = {i for i in range(v.n_sats) if abs(m.sat_lat[i]) > v.polar_lat_deg}
    assert seam | polar <= off
    # a link is off when either end is polar: the rest have a polar E/W neighbour, so sit near the limit
    assert all(abs(m.sat_lat[i]) > v.polar_lat_deg - 12 for i in off - seam - polar)
    assert not any(c == vd.SEAM for _a, _b, c in m.links)  # a star has no ISL across its seam
    _coast_or_skip()
    fig, ax = _geo_axes()
    try:
        figures.plot_map(ax, m)
        (rings,) = _by_gid(ax, "ew_off")
        assert len(rings.get_offsets()) == len(off)
    finally:
        plt.close(fig)


def test_handovers_with_many_nodes_are_ranked_and_unnamed() -> None:
    intra = [1.0] + [float(i % 7) for i in range(40)]
    inter = [2.0] + [float(i % 3) for i in range(40)]
    d = vd.HandoverData(["all UTs"] + [f"u{i}" for i in range(40)], {("p", "intra"): intra, ("p", "inter"): inter},
                        ["g0", "g1"], [1.0, 5.0], "t")
    fig, ax = plt.subplots()
    try:
        figures.plot_handovers(ax, d)
        low = [b.get_height() for b in _by_gid(ax, "bars:p:intra")]
        high = [b.get_height() for b in _by_gid(ax, "bars:p:inter")]
        totals = [a + b for a, b in zip(low, high)]
        assert low[0] == 1.0 and totals[1:] == sorted(totals[1:], reverse=True)
        assert sorted(zip(low[1:], high[1:])) == sorted(zip(intra[1:], inter[1:]))
        assert [b.get_height() for b in _by_gid(ax, "bars:gs:")] == [5.0, 1.0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["all UTs"]
        assert ax.get_xlabel() == "40 user terminals | 2 ground stations, by rate"
    finally:
        plt.close(fig)


def test_routed_destinations_counts_nested_entries_once() -> None:
    from emu.plan.routing import SliceTables

    # satellite 0: 10.0.0.0/8 and, nested in it, 10.1.0.0/16; satellite 1: 10.1.0.0/16 and 11.0.0.0/8; satellite 2: none
    ip = lambda a, b: (a << 24) | (b << 16)  # noqa: E731
    T = SliceTables(np.array([0, 2, 4, 4]), np.array([ip(10, 0), ip(10, 1), ip(10, 1), ip(11, 0)], dtype=np.uint32),
                    np.array([8, 16, 16, 8], dtype=np.uint8), np.ones(4, dtype=np.int64))
    dest = np.array([ip(10, 1) + 5, ip(10, 2), ip(11, 9), ip(12, 0)], dtype=np.uint32)
    assert vd.routed_destinations(T, dest, 3).tolist() == [2, 2, 0]
