"""`leo-emu experiment handover --procedure bgp` in the live constellation (root, real BIRD daemons).

spec: bgp-mobile-routing-atn §4 (at a GS change the new s-ASBR announces the
MNP, the old one withdraws; traffic from the Internet follows BGP), §6
(timers). On topologies/sparse.yaml (6 x 8: GS changes at known slices).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from emu.dataplane import netns

from .test_dataplane import ROOT, leo

SPARSE = ROOT / "topologies" / "sparse.yaml"
pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="bird (Debian bird2) not installed")


def test_bgp_handover_measures_interruption_and_convergence(leo_env, module_ns_prefix) -> None:
    res = leo(leo_env, "experiment", "handover", str(SPARSE), "--procedure", "bgp", "--timers", "aggressive",
              "--repeat", "2", "--speed", "5", "--format", "json", timeout=900)
    d = json.loads(res.stdout)
    assert d["procedure"] == "bgp" and d["timers"] == "aggressive" and d["bgp"]["error"] is None
    assert d["handovers_measured"] == 2 and d["not_converged"] == 0, d
    assert d["median_interruption_ms"] is not None and d["p90_interruption_ms"] >= d["median_interruption_ms"]
    assert d["convergence"]["n"] == 2 and d["convergence"]["median_ms"] > 0
    cores = {"sno-a", "sno-b"}
    for h in d["handovers"]:
        assert h["from_gs"] and h["to_gs"] and h["from_gs"] != h["to_gs"] and h["mnp"].endswith("/56")
        assert set(h["per_core_ms"]) == cores and all(isinstance(v, float) for v in h["per_core_ms"].values()), h
        assert h["convergence_ms"] == max(h["per_core_ms"].values())
        steps = [(s["node"], s["step"]) for s in h["steps"]]
        assert steps[0] == ("dataplane", "switched")
        assert (h["to_gs"], "announce") in steps and (h["from_gs"], "withdrawn") in steps
        assert {n for n, s in steps if s == "fib"} == cores
        # the stream from the Internet reached the UT through the new GS after the change
        assert h["first_after_ms"] is not None and h["first_after_ms"] > 0
    assert all(p["replies"] > 0 for p in d["probes"].values())
    assert not [n for n in netns.list_names(module_ns_prefix.rstrip("-")) if not n.endswith("probe")]
    assert subprocess.run(["pgrep", "-f", leo_env["LEOEMU_RUN_DIR"]], capture_output=True).returncode == 1
