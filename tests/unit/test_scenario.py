"""Scenario validation: every bad field is named with its value, exit code 2, nothing else done."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from emu.cli.main import cli
from emu.errors import ScenarioError
from emu.scenario.load import load_scenario, parse_scenario

from .helpers import ROOT, scenario_dict

TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))


@pytest.mark.parametrize("path", TOPOLOGIES, ids=[p.stem for p in TOPOLOGIES])
def test_shipped_scenarios_validate(path: Path) -> None:
    loaded = load_scenario(path)
    assert loaded.scenario.n_satellites > 0


def test_shipped_set_is_complete() -> None:
    names = {p.stem for p in TOPOLOGIES}
    assert {"default", "starlink-shell1"} <= names
    kinds = {p.stem: load_scenario(p).scenario for p in TOPOLOGIES}
    assert any(len(s.shells) >= 2 for s in kinds.values()), "a two-shell scenario is shipped"
    assert any(s.shells[0].inclination_deg and s.shells[0].inclination_deg > 80 for s in kinds.values()), "a polar one"


def test_default_is_as_documented() -> None:
    sc = load_scenario(ROOT / "topologies" / "default.yaml").scenario
    assert (sc.shells[0].planes, sc.shells[0].sats_per_plane) == (12, 10)
    assert len(sc.operators) == 2 and len(sc.ground_stations) == 4 and len(sc.user_terminals) == 4
    assert sc.user_terminals[0].device == "dev1" and sc.internet.name == "inet"


@pytest.mark.parametrize(
    "mutate, field, value",
    [
        (lambda d: d["shells"][0].update(altitude_km=5500), "shells.0.altitude_km", "5500"),
        (lambda d: d["shells"][0].update(inclination_deg=190), "shells.0.inclination_deg", "190"),
        (lambda d: d["shells"][0].update(planes=300), "shells.0.planes", "300"),
        (lambda d: d["shells"][0].update(sats_per_plane="many"), "shells.0.sats_per_plane", "many"),
        (lambda d: d["operators"][0].update(owner_code=256), "operators.0.owner_code", "256"),
        (lambda d: d["operators"][0].update(user_pool="100.64.0.0/10"), "operators.0.user_pool", "100.64.0.0/10"),
        (lambda d: d.update(ground_stations=[{"name": "g", "lat": 91, "lon": 0, "operator": "a"}]),
         "ground_stations.0.lat", "91"),
        (lambda d: d.update(ground_stations=[{"name": "g", "lat": 0, "lon": 0, "operator": "a",
                                              "min_elevation_deg": 95}]),
         "ground_stations.0.min_elevation_deg", "95"),
        (lambda d: d.update(user_terminals=[{"name": "u", "lat": 0, "lon": 0, "operator": "zz", "device": "d"}]),
         "user_terminals.0.operator", "zz"),
        (lambda d: d["time"].update(bogus=1), "time.bogus", "1"),
        (lambda d: d.update(grc={"shell_codes": [7]}), "grc.shell_codes.0", "7"),
        (lambda d: d["operators"][0].update(owns=[{"shell": 0, "planes": [9]}]), "operators.0.owns.0.planes", "9"),
        (lambda d: d.update(ground_stations=[{"name": "g", "lat": 0, "lon": 0, "operator": "a", "antennas": 0}]),
         "ground_stations.0.antennas", "0"),
        (lambda d: d.update(ground_stations=[{"name": "g", "lat": 0, "lon": 0, "operator": "a",
                                              "max_range_km": -5}]),
         "ground_stations.0.max_range_km", "-5"),
        (lambda d: d.update(user_terminals=[{"name": "u", "lat": 0, "lon": 0, "operator": "a", "device": "d",
                                             "destination": "u"}]),
         "user_terminals.0.destination", "u"),
        (lambda d: d.update(routing={"attach_policy": "closest"}), "routing.attach_policy", "closest"),
        (lambda d: d.update(routing={"attach_hysteresis": 1.5}), "routing.attach_hysteresis", "1.5"),
        (lambda d: d.update(routing={"ecmp_tolerance": 0.9}), "routing.ecmp_tolerance", "0.9"),
        # the footprint level drove nothing that is routed: the key is gone, not silently accepted
        (lambda d: d.update(grc={"footprint_level": 2}), "grc.footprint_level", "2"),
    ],
)
def test_bad_field_is_named(mutate, field, value, tmp_path) -> None:
    import yaml

    d = scenario_dict()
    mutate(d)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    assert field in str(exc.value) and value in str(exc.value)
    res = CliRunner().invoke(cli, ["validate", str(p)])
    assert res.exit_code == 2
    assert field in res.output


def test_not_a_mapping() -> None:
    with pytest.raises(ScenarioError):
        parse_scenario(["x"])


def test_validate_json_summary() -> None:
    import json

    res = CliRunner().invoke(cli, ["validate", str(ROOT / "topologies" / "default.yaml"), "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["satellites"] == 120 and d["planes"] == 12 and d["operators"] == 2
    assert d["slices"] == 421  # one orbit at 1,000 km (~6,307 s) at 15 s slices


def test_missing_file_exit_2(tmp_path) -> None:
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "file" in res.output
