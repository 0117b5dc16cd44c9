"""``leo-emu web``: the sources, the read-only HTTP API, and the page in headless Chromium.

The browser test drives Debian's ``chromium`` through the DevTools protocol
(``websocket-client``): the page renders, its DOM shows the satellite count and
the current slice, and it moves on without a reload when the slice changes, in
plan-replay mode (the clock) and in run mode (a run's ``status.json`` rewritten,
as the controller does). Screenshots are kept in the test's tmp dir. Skipped,
saying why, where chromium or websocket-client is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu.dataplane.state import Run
from emu.plan.db import PlanDB
from emu.web.source import PlanReplay, RunFollower

from .helpers import ROOT
from .webtools import Browser, Server, browser_factory  # noqa: F401 - a fixture

SLICES = 12
SATS = 12 * 10  # topologies/default.yaml: 12 planes x 10 satellites


@pytest.fixture(scope="module")
def plan_db(tmp_path_factory):
    out = tmp_path_factory.mktemp("web") / "default.db"
    subprocess.run([sys.executable, "-m", "emu.cli.main", "plan", str(ROOT / "topologies/default.yaml"), "-o", str(out),
                    "--slices", str(SLICES), "--format", "json"], check=True, cwd=ROOT, capture_output=True)
    return out


def _fake_run(root: Path, plan: Path, slice_k: int, applied: list[dict]) -> Run:
    run = Run("tviz" + os.urandom(2).hex(), root)
    run.dir.mkdir(parents=True)
    (run.dir / "journal").touch()
    run.write_json("run.json", {"run": run.run_id, "plan": str(plan), "speed": 30.0, "n_slices": SLICES,
                                "start_slice": 0, "nodes": []})
    _status(run, slice_k, applied)
    return run


def _status(run: Run, slice_k: int, applied: list[dict]) -> None:
    run.write_json("status.json", {"state": "running", "slice": slice_k, "applied": applied,
                                   "apply_p50_ms": applied[-1]["apply_ms"] if applied else None,
                                   "apply_p99_ms": applied[-1]["apply_ms"] if applied else None,
                                   "apply_max_ms": applied[-1]["apply_ms"] if applied else None})


# ----------------------------------------------------------------------------- sources (no browser)
def test_replay_advances_with_the_clock_and_wraps(plan_db) -> None:
    now = [100.0]
    src = PlanReplay(plan_db, [], 2.0, clock=lambda: now[0])
    assert src.state()["slice"] == 0
    now[0] += 2.1
    assert src.state()["slice"] == 1
    now[0] += 2.0 * (SLICES - 1)
    assert src.state()["slice"] == 0  # round and round
    fr = src.frames.frame(3)
    db = PlanDB(plan_db)
    assert len(fr["sats"]) == SATS and len(fr["links"]) == len(db.links(3))
    assert len(fr["serving"]) == int((db.ground_links(3) >= 0).sum())
    assert src.frames.pairs == [("dev1", "inet")] and fr["paths"][0]["src"] == "dev1"


def test_run_follower_reads_the_records(plan_db, tmp_path) -> None:
    run = _fake_run(tmp_path, plan_db, 4, [{"slice": 4, "apply_ms": 7.5, "prep_ms": 30.0}])
    src = RunFollower(run, [("ut1", "ut2")])
    st = src.state()
    assert st["mode"] == "run" and st["slice"] == 4 and st["apply_p50_ms"] == 7.5 and st["applied"][0]["slice"] == 4
    _status(run, SLICES + 5, [])
    assert src.state()["slice"] is None  # out of the plan: shown as unknown, not as a crash


def test_measured_file_is_reread_as_it_grows(tmp_path) -> None:
    from emu.web.source import Measured

    f = tmp_path / "pings.json"
    m = Measured(f, 15.0, keep=2)
    assert m.read()["error"] == "no such file yet"
    rec = {"src": "dev1", "dst": "inet", "slice": 1, "rtt_avg_ms": 30.0}
    f.write_text(json.dumps(rec) + "\n")
    assert m.read()["pairs"] == {"dev1>inet": [[22.5, 30.0]]}
    with open(f, "a") as fh:
        fh.write(json.dumps({**rec, "slice": 2, "rtt_avg_ms": 31.0}) + "\n" + json.dumps({**rec, "slice": 3, "rtt_avg_ms": 32.0}))
    assert m.read()["pairs"] == {"dev1>inet": [[37.5, 31.0], [52.5, 32.0]]}  # the last two
    with open(f, "a") as fh:
        fh.write('\n{"src": "dev1", "dst"')  # a probe mid-write
    got = m.read()
    assert got["pairs"] == {"dev1>inet": [[37.5, 31.0], [52.5, 32.0]]} and "not JSON" in got["error"]


# ----------------------------------------------------------------------------- the server
@pytest.fixture
def replay_server(plan_db):
    s = Server(str(plan_db), "--interval", "1.5")
    yield s
    s.stop()


def test_api_is_local_read_only_and_self_contained(replay_server) -> None:
    s = replay_server
    assert s.url.startswith("http://127.0.0.1:")
    code, ctype, body = s.get("/")
    assert code == 200 and ctype.startswith("text/html")
    html = body.decode()
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing from elsewhere
    code, _c, js = s.get("/static/app.js")
    assert code == 200 and b"http" not in js.replace(b'"http://www.w3.org/2000/svg"', b"")
    meta = json.loads(s.get("/api/meta")[2])
    assert len(meta["satellites"]) == SATS and meta["groups"] == ["sno-a", "sno-b"] and meta["n_slices"] == SLICES
    coast = json.loads(s.get("/api/coast")[2])
    assert len(coast) > 100 and all(-180 <= x <= 180 and -90 <= y <= 90 for ring in coast for x, y in ring)
    assert s.get("/api/state", method="POST")[0] == 405
    assert s.get("/api/frame/999")[0] == 400
    assert s.get("/../../etc/passwd")[0] == 404


def test_bad_source_exits_2() -> None:
    p = subprocess.run([sys.executable, "-m", "emu.cli.main", "web", "no/such/plan.db", "--port", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "SOURCE" in p.stderr and "Traceback" not in p.stderr


def _state(b: Browser) -> dict:
    return json.loads(b.dom())


def test_page_replays_the_plan_in_chromium(replay_server, browser_factory, plan_db, tmp_path) -> None:
    b = browser_factory(replay_server.url)
    b.wait_for(f"document.getElementById('sat-count').textContent === '{SATS}'")
    first = _state(b)
    assert first["circles"] == SATS and first["land"] > 100 and first["mode"] == "plan replay" and not first["error"]
    k1 = int(first["slice"])
    assert int(first["links"]) == len(PlanDB(plan_db).links(k1))
    assert first["lines"] >= int(first["links"])  # one line per ISL, two where it crosses the antimeridian
    assert "dev1 → inet" in first["paths"]
    b.screenshot(tmp_path / "live-map-replay-1.png")
    b.eval("window.__sameLoad = 'yes'")  # gone if the page reloads
    b.wait_for(f"document.body.dataset.slice !== '{k1}' && document.body.dataset.slice !== ''")
    second = _state(b)
    shown = b.eval("document.getElementById('shown-list').textContent").split()
    assert shown.index(second["slice"]) > shown.index(str(k1))  # drawn one after the other in one page load
    assert b.eval("window.__sameLoad") == "yes"
    assert int(second["links"]) == len(PlanDB(plan_db).links(int(second["slice"])))
    b.screenshot(tmp_path / "live-map-replay-2.png")
    assert (tmp_path / "live-map-replay-2.png").stat().st_size > 20_000


def test_page_follows_a_run_in_chromium(plan_db, browser_factory, tmp_path) -> None:
    run = _fake_run(tmp_path / "runs", plan_db, 5, [{"slice": 5, "apply_ms": 12.25, "prep_ms": 41.0}])
    pings = tmp_path / "pings.json"
    server = Server(run.run_id, "--pair", "ut1", "ut4", "--results", str(pings), env={"LEOEMU_RUN_DIR": str(run.root)})
    try:
        b = browser_factory(server.url)
        b.wait_for("document.body.dataset.slice === '5'")
        st = _state(b)
        assert st["sats"] == str(SATS) and st["mode"] == f"run {run.run_id}" and "p50 12.25 ms" in st["apply"]
        assert "ut1 → ut4" in st["paths"]
        b.eval("window.__sameLoad = 'yes'")
        _status(run, 6, [{"slice": 5, "apply_ms": 12.25, "prep_ms": 41.0}, {"slice": 6, "apply_ms": 9.5, "prep_ms": 38.0}])
        b.wait_for("document.body.dataset.slice === '6'")
        assert b.eval("window.__sameLoad") == "yes"
        rows = b.eval("Array.from(document.querySelectorAll('#applied tbody tr')).map(r => r.textContent)")
        assert rows[0].startswith("6") and len(rows) == 2
        assert "no such file yet" in b.eval("document.getElementById('measured-note').textContent")
        # a probe appends `leo-emu ping --format json` records: the page shows them as they come
        pings.write_text(json.dumps({"src": "dev1", "dst": "inet", "slice": 6, "rtt_avg_ms": 33.4}, indent=2))
        b.wait_for("document.getElementById('measured').textContent.includes('dev1 → inet: 33.4 ms')")
        assert b.eval("document.querySelectorAll('#measured svg polyline').length") == 1
        b.screenshot(tmp_path / "live-map-run.png")
    finally:
        server.stop()
