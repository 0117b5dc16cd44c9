"""The kernel's FIB agrees with the plan's reference segmented-longest-match lookup, slice after slice.

Root only. Polar (seam, inter-plane ISLs going down and up above 75 deg) and
two-shell (Up/Down inter-shell links appearing and disappearing) scenarios are
built in-process and stepped through their boundaries; at every 4th slice
each satellite's kernel is asked (RTM_GETROUTE, through its rules and slice
tables) where every ground node's GRC, a sample of satellite GRCs and an
unassigned GRC go, and the answer must be one of the plan's egress paths
(or, under retention, the previous slice's).
"""

from __future__ import annotations

import subprocess

import pytest

from emu.dataplane import cleanup, fibcheck
from emu.dataplane.controller import Controller
from emu.dataplane.state import Run

from .test_dataplane import ROOT

SLICES = 33


@pytest.mark.parametrize("scenario, nexthops", [("polar", True), ("two-shell", True), ("polar", False),
                                               ("default-ucmp", True)],
                         ids=["polar", "two-shell", "polar-hops-in-routes", "default-ucmp"])
def test_kernel_fib_follows_the_plan(scenario, nexthops, tmp_path, monkeypatch, module_ns_prefix):
    """``nexthops`` False: the routes carry their hops, as on a kernel without nexthop objects (the fallback,
    run here on a kernel that has them). default-ucmp: UCMP's weighted groups, which change every slice; the
    kernel holds exactly the nexthop objects the applier knows (unused groups deleted, none missing)."""
    import dataclasses

    from emu.cli.plan_cmds import build_plan
    from emu.dataplane.runconfig import RunConfig

    if not nexthops:
        derive = RunConfig.from_scenario.__func__
        monkeypatch.setattr(RunConfig, "from_scenario", classmethod(
            lambda cls, *a, **kw: dataclasses.replace(derive(cls, *a, **kw), nexthops=False)))

    monkeypatch.setenv("LEOEMU_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LEOEMU_RUN_ID_PREFIX", module_ns_prefix.rstrip("-"))
    plan = tmp_path / "p.db"
    scen = ROOT / "topologies" / f"{scenario}.yaml"
    if scenario == "default-ucmp":
        scen = tmp_path / "ucmp.yaml"
        text = (ROOT / "topologies" / "default.yaml").read_text()
        scen.write_text(text.replace("multipath: ecmp", "multipath: ucmp"))
    build_plan(str(scen), plan, SLICES, fmt="json")
    run = Run.create()
    try:
        ctl = Controller(run, plan, 1.0, SLICES)
        ctl.build()
        m = ctl.model
        changes = 0
        for k in range(SLICES):
            if k:
                ctl.applier.prepare(k)
                ctl.applier.switch(k)
                ctl.applier.cleanup(k)
                changes += len(m.active_grid(k) ^ m.active_grid(k - 1))
            if k % 4:
                continue
            bound = m.db.bound_grc(k)
            dsts = [g.grc for g in m.db.ground] + [int(x) for x in bound[::7]] + [0xD0010203]
            dsts += [int(x) for x in m.db.sat_addresses[::5]]
            # the IPv6 GRC tables too (grc §GRC encoding, the 128-bit form), against the same plan answers
            r = fibcheck.compare(m, ctl.builder.fabric, k, dsts, families=(4, 6))
            assert r["checked"] == 2 * len(dsts) * len(m.satellites)
            assert not r["mismatches"], r
            if ctl.applier.nexthops is not None:
                for s in m.satellites[::10]:
                    out = subprocess.run(["ip", "-n", s.netns, "nexthop"], capture_output=True, text=True).stdout
                    assert len(out.splitlines()) == len(ctl.applier.nexthops[s.index]), (k, s.name, out)
        assert ctl.applier.unresolved == 0
        assert (ctl.applier.nexthops is not None) == (nexthops and ctl.features.has("nexthop"))
        if scenario == "polar":
            assert changes > 0, "the polar run should switch ISLs off and on"
        elif scenario == "two-shell":
            assert m.shell_links, "the two-shell run should have inter-shell links"
        ctl.close()
    finally:
        cleanup.teardown(run)
