"""topologies/starlink-phase1.yaml: Starlink's first generation as filed, lowest shell first, as generated."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from emu.scenario.load import load_scenario

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "topologies" / "starlink-phase1.yaml"


def test_five_shells_of_the_4408_satellite_first_generation():
    sc = load_scenario(FILE).scenario
    shells = [(s.altitude_km, s.inclination_deg, s.planes, s.sats_per_plane) for s in sc.shells]
    assert sorted(shells) == sorted([(550, 53.0, 72, 22), (540, 53.2, 72, 22), (570, 70.0, 36, 20),
                                     (560, 97.6, 6, 58), (560, 97.6, 4, 43)])
    assert sc.n_satellites == 4408
    # inter-shell Up/Down links join each shell to the next one in the list: lowest first
    assert [s[0] for s in shells] == sorted(s[0] for s in shells)
    assert len(sc.ground_stations) == len(sc.user_terminals) == 50
    assert all(o.shell in range(5) for o in sc.operators[0].owns) and len(sc.operators[0].owns) == 5


def test_the_shipped_file_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("make_city_scenario", ROOT / "scripts" / "make_city_scenario.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.phase1_text() == FILE.read_text()
