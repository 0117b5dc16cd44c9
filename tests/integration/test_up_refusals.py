"""`up` refuses bad arguments and untrusted or damaged plans before creating anything.

Root only (``up`` checks privileges first). Nothing here builds a constellation:
every case must exit 2 with one stderr line, and leave no namespace and no run
record behind. spec: grc-based-routing §Security Considerations.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from emu.dataplane import netns

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_ns_prefix):
    e = dict(os.environ)
    e["LEOEMU_RUN_DIR"] = str(tmp_path_factory.mktemp("runs"))
    e["LEOEMU_RUN_ID_PREFIX"] = module_ns_prefix.rstrip("-")
    return e


def leo(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "emu.cli.main", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def plans(env, tmp_path_factory):
    """A ground-control plan, one by a fresh keygen key, one forged (changed, re-signed with a swapped key)."""
    d = tmp_path_factory.mktemp("plans")
    assert leo(env, "plan", DEFAULT, "-o", d / "gc.db", "--slices", "3").returncode == 0
    assert leo(env, "keygen", d / "other").returncode == 0
    assert leo(env, "plan", DEFAULT, "-o", d / "other.db", "--slices", "3", "--key", d / "other").returncode == 0
    from emu.plan import sign as signmod

    forged = d / "forged.db"
    forged.write_bytes((d / "gc.db").read_bytes())
    key = signmod.new_key()
    con = sqlite3.connect(forged)
    con.execute("UPDATE grc_coords SET lat = lat + 1")
    con.execute("UPDATE meta SET value = ? WHERE key = 'public_key'", (signmod.public_bytes(key).hex(),))
    digest = dict(con.execute("SELECT key, value FROM meta"))["scenario_digest"]
    for k, manifest in list(con.execute("SELECT k, manifest FROM slices")):
        con.execute("UPDATE slices SET signature = ? WHERE k = ?",
                    (signmod.sign(key, signmod.slice_message(digest, k, manifest)), k))
    signmod.seal(con, key)
    con.commit()
    con.close()
    (d / "text.db").write_text("not a plan\n")
    return d


CASES = {
    "plan by a fresh keygen key": (["--plan", "{d}/other.db"], ["untrusted key"]),
    "plan re-signed with a swapped key": (["--plan", "{d}/forged.db"], ["untrusted key"]),
    "plan that is not SQLite": (["--plan", "{d}/text.db"], ["not an SQLite file"]),
    "--trust garbage": (["--plan", "{d}/other.db", "--trust", "nonsense"], ["--trust", "nonsense"]),
    "--speed nan": (["--plan", "{d}/gc.db", "--speed", "nan"], ["--speed", "nan"]),
    "--speed inf": (["--plan", "{d}/gc.db", "--speed", "inf"], ["--speed", "inf"]),
    "--speed 0": (["--plan", "{d}/gc.db", "--speed", "0"], ["--speed", "0"]),
    "--start-slice past the plan": (["--plan", "{d}/gc.db", "--start-slice", "3"], ["--start-slice", "3"]),
    "--start-slice past the scenario": (["--start-slice", "100000"], ["--start-slice", "100000"]),
    "--slices past the plan": (["--plan", "{d}/gc.db", "--slices", "5"], ["--slices", "5"]),
    "--start-slice negative": (["--plan", "{d}/gc.db", "--start-slice", "-1"], ["--start-slice", "-1"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_up_refuses_before_creating_anything(case, env, plans) -> None:
    args, needles = CASES[case]
    args = [a.replace("{d}", str(plans)) for a in args]
    mine = env["LEOEMU_RUN_ID_PREFIX"]  # other users' namespaces come and go: look at ours only
    p = leo(env, "up", DEFAULT, *args, "--detach")
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)
    assert netns.list_names(mine) == []
    assert list(Path(env["LEOEMU_RUN_DIR"]).iterdir()) == []


def test_a_refused_up_makes_no_ground_control_key(env, tmp_path) -> None:
    e = dict(env, LEOEMU_GC_KEY=str(tmp_path / "gc" / "ground-control.key"))
    p = leo(e, "up", DEFAULT, "--start-slice", "100000", "--detach")
    assert p.returncode == 2 and "--start-slice" in p.stderr
    assert not (tmp_path / "gc").exists()


def test_trust_accepts_the_keygen_plan(env, plans) -> None:
    """The same plan passes the pre-build check once its key is trusted (checked without building)."""
    from emu.plan.trust import check_before_up
    from emu.scenario.load import load_scenario

    check_before_up(plans / "other.db", [str(plans / "other.pub")], load_scenario(DEFAULT).digest).close()
