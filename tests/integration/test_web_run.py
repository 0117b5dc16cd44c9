"""``leo-emu web`` following a real run: the live map's state is the controller's status, slice after slice.

Root only: the default scenario comes up in namespaces with this module's
unique run prefix (``leo_env``), accelerated; ``leo-emu web RUN`` follows it
from its records; the API's slice advances with the controller's, its apply
times are the controller's, and its frame is the plan's slice. Where Chromium
is installed, the page shows the run and its boundaries too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from emu.plan.db import PlanDB

from ..unit.webtools import Server, browser_factory  # noqa: F401 - a fixture
from .test_dataplane import DEFAULT, leo

SLICES = 40
SPEED = 7.5  # 15 s slices in 2 s


def test_web_follows_a_running_emulator(leo_env, tmp_path, browser_factory) -> None:  # noqa: F811
    from emu.cli.plan_cmds import build_plan

    plan = tmp_path / "default.db"
    build_plan(str(DEFAULT), plan, SLICES, fmt="json")
    res = leo(leo_env, "up", str(DEFAULT), "--plan", str(plan), "--speed", str(SPEED), "--detach", "--format", "json")
    run = json.loads(res.stdout)["run"]
    status_file = Path(leo_env["LEOEMU_RUN_DIR"]) / run / "status.json"
    server = None
    try:
        server = Server(run, env={"LEOEMU_RUN_DIR": leo_env["LEOEMU_RUN_DIR"]})
        first = json.loads(server.get("/api/state")[2])
        assert first["mode"] == "run" and first["run"] == run and first["state"] == "running"
        end = time.monotonic() + 60
        while True:
            st = json.loads(server.get("/api/state")[2])
            if st["slice"] is not None and first["slice"] is not None and st["slice"] >= first["slice"] + 2:
                break
            assert time.monotonic() < end, f"the run's slice did not advance: {st}"
            time.sleep(0.3)
        ctl = json.loads(status_file.read_text())
        assert st["applied"] and {a["slice"] for a in st["applied"]} <= {a["slice"] for a in ctl["applied"]}
        assert all(a["apply_ms"] > 0 for a in st["applied"]) and st["apply_p50_ms"] is not None
        k = st["slice"]
        frame = json.loads(server.get(f"/api/frame/{k}")[2])
        assert len(frame["links"]) == len(PlanDB(plan).links(k)) and frame["paths"][0]["src"] == "dev1"
        try:
            b = browser_factory(server.url)
        except BaseException as exc:  # the browser part is skipped where chromium is absent
            if type(exc).__name__ != "Skipped":
                raise
            return
        b.wait_for("document.getElementById('apply-summary').textContent.startsWith('apply p50')")
        k1 = b.wait_for("document.body.dataset.slice")
        b.wait_for(f"document.body.dataset.slice !== '{k1}'")
        assert json.loads(b.dom())["mode"] == f"run {run}"
        b.screenshot(tmp_path / "live-map-real-run.png")
    finally:
        if server:
            server.stop()
        leo(leo_env, "down", "--run", run)
