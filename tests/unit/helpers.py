"""Small scenario builders shared by unit tests (no files, no root)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from emu.scenario.load import LoadedScenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"

BASE = {
    "name": "t",
    "time": {"epoch": "2026-01-01T00:00:00Z", "slice_s": 15, "duration": 60},
    "shells": [{"name": "s", "altitude_km": 550, "inclination_deg": 53, "planes": 3, "sats_per_plane": 4,
                "phasing": 0, "pattern": "delta"}],
    "operators": [{"name": "a", "owner_code": 1, "user_pool": "10.1.0.0/16"}],
}


def scenario_dict(**over) -> dict:
    d = copy.deepcopy(BASE)
    for k, v in over.items():
        d[k] = v
    return d


def loaded(d: dict, path: Path | None = None) -> LoadedScenario:
    import hashlib

    sc = parse_scenario(d)
    raw = yaml.safe_dump(d).encode()
    return LoadedScenario(sc, (path or (DATA / "inline.yaml")).resolve(), hashlib.sha256(raw).hexdigest(), raw)


def load_default() -> LoadedScenario:
    from emu.scenario.load import load_scenario

    return load_scenario(ROOT / "topologies" / "default.yaml")


def dump(d: dict, tmp_path: Path) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    return p
