"""Three shells or more: a satellite of a middle shell is the upper end of one inter-shell link and the lower
end of another, so when both retire at the same boundary one group delete can take the other's link with it.

Root only. A small three-shell scenario (the shape of Starlink Phase I's
stack, topologies/starlink-phase1.yaml, at 3 x 48 satellites) is stepped
through its boundaries in-process, and the kernel's FIB must keep agreeing
with the plan (:mod:`emu.dataplane.fibcheck`), as in test_fib_vs_plan.
"""

from __future__ import annotations

from emu.dataplane import cleanup, fibcheck
from emu.dataplane.controller import Controller
from emu.dataplane.state import Run

SLICES = 30

THREE_SHELLS = """
name: three-shell
time: {epoch: 2026-01-01T00:00:00Z, slice_s: 15, duration: one_orbit}
shells:
  - {name: low, altitude_km: 540, inclination_deg: 53, planes: 6, sats_per_plane: 8, phasing: 1}
  - {name: mid, altitude_km: 560, inclination_deg: 70, planes: 6, sats_per_plane: 8, phasing: 2,
     raan_offset_deg: 20}
  - {name: high, altitude_km: 580, inclination_deg: 97.6, planes: 6, sats_per_plane: 8, phasing: 3,
     raan_offset_deg: 40}
operators:
  - {name: sno-a, owner_code: 1, user_pool: 10.1.0.0/16,
     owns: [{shell: 0, planes: all}, {shell: 1, planes: all}, {shell: 2, planes: all}]}
routing: {satellite_destinations: false}
ground_stations:
  - {name: gs-london, lat: 51.51, lon: -0.13, operator: sno-a, min_elevation_deg: 10}
user_terminals:
  - {name: ut1, lat: 48.86, lon: 2.35, operator: sno-a, device: dev1, min_elevation_deg: 10}
"""


def test_chained_inter_shell_links_retire_cleanly(tmp_path, monkeypatch, module_ns_prefix):
    from emu.cli.plan_cmds import build_plan

    monkeypatch.setenv("LEOEMU_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LEOEMU_RUN_ID_PREFIX", module_ns_prefix.rstrip("-"))
    scenario = tmp_path / "three-shell.yaml"
    scenario.write_text(THREE_SHELLS)
    plan = tmp_path / "p.db"
    build_plan(str(scenario), plan, SLICES, fmt="json")
    run = Run.create()
    try:
        ctl = Controller(run, plan, 1.0, SLICES)
        ctl.build()
        m = ctl.model
        # the case under test: a middle-shell satellite whose up and down links retire at the same cleanup
        ends = [sl for sl in m.shell_links if sl.retire < SLICES]
        chained = {(sl.upper, sl.retire) for sl in ends} & {(sl.lower, sl.retire) for sl in ends}
        assert chained, "the scenario should retire a middle satellite's up and down links together"
        for k in range(1, SLICES):
            ctl.applier.prepare(k)
            ctl.applier.switch(k)
            ctl.applier.cleanup(k)
            if k % 5 == 0:
                dsts = [g.grc for g in m.db.ground]  # no satellite destinations in this plan
                r = fibcheck.compare(m, ctl.builder.fabric, k, dsts)
                assert not r["mismatches"], r
        assert ctl.applier.unresolved == 0
        ctl.close()
    finally:
        cleanup.teardown(run)
