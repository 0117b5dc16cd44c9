"""scripts/bench_report.py: JSON from each benchmark's output into out/bench.json, and the README table."""

from __future__ import annotations

import importlib.util
import json

from .helpers import ROOT

spec = importlib.util.spec_from_file_location("bench_report", ROOT / "scripts" / "bench_report.py")
br = importlib.util.module_from_spec(spec)
spec.loader.exec_module(br)


def test_extracts_one_line_indented_and_missing_json(tmp_path) -> None:
    (tmp_path / "plan.json").write_text('progress...\n{"bench": "plan", "plan_s": 12.5, "plan_over_snapshot": 2.1}\n')
    (tmp_path / "bgp_scale.json").write_text('{\n "load_s": 3.0,\n "updates_per_s": 4000\n}\n')
    (tmp_path / "up.json").write_text("Traceback: boom\n")
    out = tmp_path / "bench.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{br.BEGIN}\nold\n{br.END}\ntail\n")
    report = br.collect(sorted(tmp_path.glob("*.json")))
    out.write_text(json.dumps(report))
    assert report["results"]["plan"]["plan_s"] == 12.5
    assert report["results"]["bgp_scale"] == {"load_s": 3.0, "updates_per_s": 4000}
    assert "boom" in report["results"]["up"]["error"]
    br.rewrite_readme(readme, json.loads(out.read_text()))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{br.END}\ntail\n") and "old" not in text
    assert "| plan |  | plan s 12.5, plan/snapshots 2.1 |" in text
    assert "load_s 3" in text and "error: " in text
