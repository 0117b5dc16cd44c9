"""A corpus of bad input, as a new user (or a hostile file) would give it.

Every case: exit code 2, exactly one stderr line that names the field or option
and the offending value, no traceback, nothing created (no plan, no ``*.tmp``).
Hostile files (alias bomb, deep nesting, 50 MB) are generated at test time and
must be refused by their limit, not after parsing them.
"""

from __future__ import annotations

import copy
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from emu.cli.main import cli

from .helpers import DATA, ROOT

DEFAULT = ROOT / "topologies" / "default.yaml"
BASE = yaml.safe_load(DEFAULT.read_text())


def run(args: list) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_refused(res, *needles: str) -> None:
    """Exit 2, one stderr line naming what is wrong, no traceback."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert len(lines[0]) <= 500, len(lines[0])
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


def scenario_file(tmp_path: Path, mutate=None, text: str | None = None, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    if text is None:
        d = copy.deepcopy(BASE)
        if mutate:
            mutate(d)
        text = yaml.safe_dump(d, sort_keys=False)
    p.write_text(text)
    return p


def _gs(name: str, lat: float, lon: float) -> dict:
    return {"name": name, "lat": lat, "lon": lon, "operator": BASE["operators"][0]["name"]}


def _tle_shell(d: dict, tle: str) -> None:
    d["shells"] = [{"name": "t", "tle_file": tle, "planes": 3, "sats_per_plane": 4}]
    for i, op in enumerate(d["operators"]):
        op["owns"] = [{"shell": 0, "planes": "all"}] if i == 0 else []


def _write_tle(tmp_path: Path, mutate) -> str:
    lines = (DATA / "walker-3x4.tle").read_text().splitlines()
    (tmp_path / "x.tle").write_bytes(mutate(lines))
    return str(tmp_path / "x.tle")


SCENARIO_CASES = {
    # what later stages rejected or crashed on
    "ground node named like a satellite": (
        lambda d, t: d["ground_stations"].append(_gs("sat0-1-2", 10, 10)), ["node names", "sat0-1-2"]),
    "seven ground nodes in one level-6 cell": (
        lambda d, t: d["ground_stations"].extend(_gs(f"crowd{i}", 10.0 + i * 1e-4, 10.0) for i in range(7)),
        ["ground_stations.", "level-6"]),
    "internet prefix inside a user pool": (
        lambda d, t: d["internet"].update(prefix="10.1.2.0/24"), ["internet.prefix", "10.1.2.0/24"]),
    "user pool over the tunnel range": (
        lambda d, t: d["operators"][0].update(user_pool="10.254.0.0/15"), ["operators.0.user_pool", "10.254.0.0/15"]),
    "internet prefix in the core NAT range": (
        lambda d, t: d["internet"].update(prefix="11.0.0.0/24"), ["internet.prefix", "11.0.0.0/24"]),
    "user pool garbage": (
        lambda d, t: d["operators"][0].update(user_pool="banana"), ["operators.0.user_pool", "banana"]),
    "user pool too small for its terminals": (
        lambda d, t: d["operators"][0].update(user_pool="10.1.0.0/29"), ["operators.0.user_pool", "10.1.0.0/29"]),
    "duplicate shell codes": (
        lambda d, t: d.update(grc={"shell_codes": [3, 3]}), ["grc.shell_codes.1", "3"]),
    "a plane owned twice": (
        lambda d, t: d["operators"][1].update(owns=[{"shell": 0, "planes": [0, 1]}]),
        ["operators.1.owns.0.planes", "plane 0", "[0, 1]"]),
    "forbidden shell code": (lambda d, t: d.update(grc={"shell_codes": [14]}), ["grc.shell_codes.0", "14"]),
    "garbage GRC IPv6 prefix": (
        lambda d, t: d.update(grc={"ipv6_prefix": "fd00::zz/96"}), ["grc.ipv6_prefix", "fd00::zz/96"]),
    "GRC IPv6 prefix not a /96": (
        lambda d, t: d.update(grc={"ipv6_prefix": "fd00::/64"}), ["grc.ipv6_prefix", "fd00::/64"]),
    "garbage semantic prefix": (
        lambda d, t: d.update(addressing={"semantic_prefix": "hello"}), ["addressing.semantic_prefix", "hello"]),
    "multicast OUI": (lambda d, t: d.update(addressing={"oui": "01:00:5e"}), ["addressing.oui", "01:00:5e"]),
    "TLE with a wrong checksum": (
        lambda d, t: _tle_shell(d, _write_tle(t, lambda ls: "\n".join(
            ls[:2] + [ls[2][:-1] + str((int(ls[2][-1]) + 1) % 10)] + ls[3:]).encode())),
        ["shells.0.tle_file", "checksum", "x.tle:3"]),
    "truncated TLE": (
        lambda d, t: _tle_shell(d, _write_tle(t, lambda ls: "\n".join(ls[:5] + [ls[5][:30]]).encode())),
        ["shells.0.tle_file", "x.tle"]),
    "binary TLE": (
        lambda d, t: _tle_shell(d, _write_tle(t, lambda ls: bytes(range(256)) * 4)),
        ["shells.0.tle_file", "not ASCII"]),
    "TLE of the wrong size": (
        lambda d, t: _tle_shell(d, _write_tle(t, lambda ls: "\n".join(ls[:9]).encode())),
        ["shells.0.tle_file", "holds 3 satellites"]),
    "missing TLE file": (lambda d, t: _tle_shell(d, "nowhere.tle"), ["shells.0.tle_file", "nowhere.tle"]),
}


@pytest.mark.parametrize("case", sorted(SCENARIO_CASES))
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_bad_scenario_is_refused_by_validate_and_plan(case, command, tmp_path, tmp_path_factory,
                                                     monkeypatch) -> None:
    mutate, needles = SCENARIO_CASES[case]
    p = scenario_file(tmp_path, lambda d: mutate(d, tmp_path))
    gc = tmp_path_factory.mktemp("gc") / "ground-control.key"
    monkeypatch.setenv("LEOEMU_GC_KEY", str(gc))
    before = sorted(os.listdir(tmp_path))
    args = [command, p] + (["-o", tmp_path / "out.db", "--slices", "2"] if command == "plan" else [])
    assert_refused(run(args), *needles)
    assert sorted(os.listdir(tmp_path)) == before
    assert not gc.exists()


def _alias_bomb() -> str:
    text = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, 12):
        refs = ",".join([f"*a{i - 1}"] * 9)
        text += f"a{i}: &a{i} [{refs}]\n"
    return text


def _alias_chain() -> str:
    """Each alias nests the previous one a level deeper: shallow as written, 400 levels once expanded."""
    text = "l0: &l0 [1]\n"
    for i in range(1, 400):
        text += f"l{i}: &l{i} [*l{i - 1}]\n"
    return text


FILE_CASES = {
    "alias bomb": (lambda p: p.write_text(_alias_bomb()), ["file", "aliases are expanded"]),
    "alias chain nested deep once expanded": (lambda p: p.write_text(_alias_chain()), ["file", "nested deeper"]),
    "recursive alias": (lambda p: p.write_text("a: &a [*a]\n"), ["file"]),
    "deeply nested YAML": (lambda p: p.write_text("x: " + "[" * 100_000 + "]" * 100_000 + "\n"),
                           ["file", "nested deeper"]),
    "deeply nested block YAML": (lambda p: p.write_text("".join(" " * i + f"k{i}:\n" for i in range(1500))),
                                 ["file", "nested deeper"]),
    "50 MB file": (lambda p: _sparse(p, 50 * 2**20), ["file", "larger than"]),
    "duplicated key": (lambda p: p.write_text(DEFAULT.read_text() + "\nname: other\n"),
                       ["file", "duplicate key 'name'"]),
    "duplicated nested key": (lambda p: p.write_text(DEFAULT.read_text().replace(
        "  slice_s: 15", "  slice_s: 15\n  slice_s: 30")), ["file", "duplicate key 'slice_s'"]),
    "UTF-16 scenario": (lambda p: p.write_bytes(DEFAULT.read_text().encode("utf-16")), ["file", "UTF-8"]),
    "binary file": (lambda p: p.write_bytes(bytes(range(256)) * 16), ["file"]),
    "empty file": (lambda p: p.write_text(""), ["(top)", "mapping"]),
    "a list, not a mapping": (lambda p: p.write_text("- 1\n- 2\n"), ["(top)", "mapping"]),
    "not YAML": (lambda p: p.write_text("name: [unclosed\n"), ["file", "not valid YAML"]),
    "a folder": (lambda p: p.mkdir(), ["SCENARIO", "is a directory"]),
    "missing file": (lambda p: None, ["file", "s.yaml"]),
    "huge value echoed": (lambda p: p.write_text(DEFAULT.read_text().replace(
        "name: default", "name: " + "y" * 1_900_000, 1)), ["name", "(1900000 characters)"]),
}


def _sparse(p: Path, size: int) -> None:
    with open(p, "wb") as f:
        f.truncate(size)


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_hostile_or_broken_scenario_files(case, tmp_path) -> None:
    make, needles = FILE_CASES[case]
    p = tmp_path / "s.yaml"
    make(p)
    assert_refused(run(["validate", p]), *needles)


def test_a_utf8_bom_is_fine(tmp_path) -> None:
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + DEFAULT.read_bytes())
    assert run(["validate", p]).exit_code == 0


ARG_CASES = {
    "plan into a missing folder": (["plan", DEFAULT, "-o", "{tmp}/no/such/dir/p.db"], ["--output", "no/such/dir"]),
    "plan into a folder": (["plan", DEFAULT, "-o", "{tmp}"], ["--output"]),
    "plan --slices 0": (["plan", DEFAULT, "-o", "{tmp}/p.db", "--slices", "0"], ["--slices", "0"]),
    "plan --slices past the duration": (["plan", DEFAULT, "-o", "{tmp}/p.db", "--slices", "100000"],
                                        ["--slices", "100000"]),
    "plan --slices not a number": (["plan", DEFAULT, "-o", "{tmp}/p.db", "--slices", "many"], ["--slices", "many"]),
    "plan --key missing": (["plan", DEFAULT, "-o", "{tmp}/p.db", "--key", "{tmp}/nokey"], ["--key", "nokey"]),
    "plan without -o": (["plan", DEFAULT], ["--output"]),
    "snapshot --time nan": (["snapshot", DEFAULT, "--time", "nan"], ["--time", "nan"]),
    "snapshot --time inf": (["snapshot", DEFAULT, "--time", "inf"], ["--time", "inf"]),
    "snapshot --time 1e30": (["snapshot", DEFAULT, "--time", "1e30"], ["--time", "1e+30"]),
    "snapshot --time -1": (["snapshot", DEFAULT, "--time", "-1"], ["--time", "-1"]),
    "an unknown command": (["bogus"], ["bogus"]),
    "keygen into a missing folder": (["keygen", "{tmp}/no/k"], ["PATH", "no"]),
}


@pytest.mark.parametrize("case", sorted(ARG_CASES))
def test_bad_arguments(case, tmp_path, tmp_path_factory, monkeypatch) -> None:
    args, needles = ARG_CASES[case]
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    gc = tmp_path_factory.mktemp("gc") / "ground-control.key"
    monkeypatch.setenv("LEOEMU_GC_KEY", str(gc))  # a refused command makes no ground-control key either
    before = sorted(os.listdir(tmp_path))
    assert_refused(run(args), *needles)
    assert sorted(os.listdir(tmp_path)) == before
    assert not gc.exists()


def test_a_failed_plan_leaves_no_tmp_file(tmp_path, monkeypatch) -> None:
    from emu.plan import db as dbmod

    def boom(con, plan, key):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dbmod, "_write_all", boom)
    res = run(["plan", DEFAULT, "-o", tmp_path / "p.db", "--slices", "2"])
    assert_refused(res, "--output", "No space left")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- plan databases
@pytest.fixture(scope="module")
def good_plan(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("plan") / "good.db"
    assert run(["plan", DEFAULT, "-o", p, "--slices", "3"]).exit_code == 0
    return p


def _truncated(good: Path, p: Path) -> None:
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 3])


def _zeroed_middle(good: Path, p: Path) -> None:
    data = bytearray(good.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8192] = bytes(8192)
    p.write_bytes(bytes(data))


def _foreign(good: Path, p: Path) -> None:
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE songs(title TEXT)")
    con.commit()
    con.close()


def _old_format(good: Path, p: Path) -> None:
    shutil.copyfile(good, p)
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    con.commit()
    con.close()


def _blob_garbage(good: Path, p: Path) -> None:
    shutil.copyfile(good, p)
    con = sqlite3.connect(p)
    con.execute("UPDATE slices SET tables = x'00112233', links = x'789c' WHERE k = 0")
    con.commit()
    con.close()


def _meta_garbage(good: Path, p: Path) -> None:
    shutil.copyfile(good, p)
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value = 'many' WHERE key = 'slices'")
    con.commit()
    con.close()


def _slices_dropped(good: Path, p: Path) -> None:
    shutil.copyfile(good, p)
    con = sqlite3.connect(p)
    con.execute("DELETE FROM slices WHERE k = 2")
    con.commit()
    con.close()


PLAN_CASES = {
    "not SQLite": (lambda g, p: p.write_bytes(b"hello, I am a text file\n" * 100), "not an SQLite file"),
    "empty file": (lambda g, p: p.write_bytes(b""), "not an SQLite file"),
    "random bytes": (lambda g, p: p.write_bytes(os.urandom(65536)), "not an SQLite file"),
    "truncated": (_truncated, "plan"),
    "foreign SQLite": (_foreign, "not a leo-emu route database"),
    "older format": (_old_format, "format version"),
    "garbage blobs": (_blob_garbage, "slice 0"),
    "garbage meta": (_meta_garbage, "meta"),
    "a slice missing": (_slices_dropped, "slices"),
    "missing file": (lambda g, p: None, "no such file"),
}


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
@pytest.mark.parametrize("command", [["verify", "{p}"], ["route", "show", "{p}", "--sat", "sat0-0-0", "--slice", "0"],
                                     ["path", "{p}", "ut1", "gs-london", "--slice", "0"]],
                         ids=["verify", "route-show", "path"])
def test_unreadable_plan_is_bad_input(case, command, good_plan, tmp_path) -> None:
    make, needle = PLAN_CASES[case]
    p = tmp_path / "bad.db"
    make(good_plan, p)
    assert_refused(run([a.replace("{p}", str(p)) for a in command]), needle)


def test_verify_refuses_a_plan_with_zeroed_pages(good_plan, tmp_path) -> None:
    """verify reads every page (the seal hashes every row): damage anywhere is found, never a traceback."""
    p = tmp_path / "bad.db"
    _zeroed_middle(good_plan, p)
    res = run(["verify", p])
    assert res.exit_code in (1, 2) and "Traceback" not in res.output and len(res.stderr.splitlines()) >= 1
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 2:
        assert len(res.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, needles", [
    (["route", "show", "{p}", "--sat", "sat9-9-9"], ["--sat", "sat9-9-9"]),
    (["route", "show", "{p}", "--sat", "sat0-0-0", "--slice", "3"], ["--slice", "3"]),
    (["path", "{p}", "ut1", "nobody"], ["node", "nobody"]),
    (["path", "{p}", "ut1", "gs-london", "--slice", "-1"], ["--slice", "-1"]),
    (["path", "{p}", "inet", "ut1"], ["path", "inet"]),
])
def test_unknown_names_and_slices_are_bad_input(args, needles, good_plan) -> None:
    assert_refused(run([a.replace("{p}", str(good_plan)) for a in args]), *needles)


def test_cli_refusals_print_no_traceback_in_a_real_process(tmp_path) -> None:
    """The same contract through a real interpreter: what a user sees on their terminal."""
    p = tmp_path / "s.yaml"
    p.write_text("x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    for args in (["validate", str(p)], ["verify", str(DEFAULT)], ["snapshot", str(DEFAULT), "--time", "nan"]):
        r = subprocess.run([sys.executable, "-m", "emu.cli.main", *args], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------- fuzz: never anything but ScenarioError
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from emu.errors import ScenarioError  # noqa: E402
from emu.scenario.load import load_scenario, parse_scenario  # noqa: E402

_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=40), st.lists(st.integers(-5, 300), max_size=5),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


_ALL_PATHS = list(_paths(BASE))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_ALL_PATHS), _LEAVES), min_size=1, max_size=3))
def test_any_value_anywhere_is_accepted_or_a_scenario_error(changes) -> None:
    d = copy.deepcopy(BASE)
    for path, value in changes:
        target = d
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced a parent
    try:
        parse_scenario(d)
    except ScenarioError as exc:
        assert len(str(exc)) < 1000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1728), st.binary(min_size=0, max_size=4)), min_size=1, max_size=4))
def test_any_byte_damage_to_a_scenario_file_is_accepted_or_a_scenario_error(tmp_path, edits) -> None:
    data = bytearray(DEFAULT.read_bytes())
    for pos, new in edits:
        data[pos:pos + len(new)] = new
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(bytes(data))
    try:
        load_scenario(p)
    except ScenarioError as exc:
        assert len(str(exc)) < 1000


@pytest.mark.parametrize("seed", range(40))
def test_any_damage_to_a_plan_is_bad_input_or_a_failed_verify(seed, good_plan, tmp_path) -> None:
    """Random byte flips, truncations and zeroed runs: reading, verifying, `path`, `route show` and the
    check before `up` end in a result or InputError (exit 2), never another exception."""
    import random

    from emu.errors import InputError
    from emu.plan.db import PlanDB
    from emu.plan.path import PathFinder, route_rows
    from emu.plan.trust import check_before_up
    from emu.plan.verify import verify

    rng = random.Random(seed)
    data = bytearray(good_plan.read_bytes())
    mode = seed % 3
    if mode == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif mode == 1:
        data = data[:rng.randrange(len(data))]
    else:
        pos = rng.randrange(len(data))
        data[pos:pos + 4096] = bytes(4096)
    p = tmp_path / "damaged.db"
    p.write_bytes(bytes(data))
    try:
        db = PlanDB(p)
        verify(db, walk=True)
        PathFinder(db).path("dev1", "inet", 1)
        route_rows(db, 3, 2)
        check_before_up(p).close()
    except InputError:
        pass
