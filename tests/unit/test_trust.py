"""Plans that cannot be forged: keys, the seal over every row of every table, and the check before `up`.

spec: grc-based-routing §Security Considerations.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat

import pytest
from click.testing import CliRunner

from emu.cli.main import cli
from emu.errors import InputError, PlanInputError
from emu.plan import sign as signmod
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan
from emu.plan.trust import check_before_up, ground_control_key, keygen, load_private_key, load_public_key
from emu.plan.verify import verify

from .helpers import load_default


@pytest.fixture(scope="module")
def small_plan():
    return make_plan(load_default(), n_slices=3)


@pytest.fixture
def gc_plan(small_plan, tmp_path):
    """A plan signed with the session's ground-control key (what `leo-emu plan` makes by default)."""
    p = tmp_path / "gc.db"
    write_plan(small_plan, p, key=ground_control_key())
    return p


def test_keygen_writes_a_private_0600_and_a_public_key(tmp_path) -> None:
    res = CliRunner().invoke(cli, ["keygen", str(tmp_path / "k"), "--format", "json"])
    assert res.exit_code == 0, res.output
    mode = stat.S_IMODE(os.stat(tmp_path / "k").st_mode)
    assert mode == 0o600
    pub = load_public_key(str(tmp_path / "k.pub"))
    assert pub == signmod.public_bytes(load_private_key(tmp_path / "k"))
    again = CliRunner().invoke(cli, ["keygen", str(tmp_path / "k")])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_plan_signs_with_the_ground_control_key_by_default_and_with_key(tmp_path) -> None:
    gc = signmod.public_bytes(ground_control_key())
    r = CliRunner().invoke(cli, ["plan", "topologies/default.yaml", "-o", str(tmp_path / "a.db"), "--slices", "2"])
    assert r.exit_code == 0, r.output
    assert PlanDB(tmp_path / "a.db").public_key == gc
    keygen(tmp_path / "other")
    r = CliRunner().invoke(cli, ["plan", "topologies/default.yaml", "-o", str(tmp_path / "b.db"), "--slices", "2",
                                 "--key", str(tmp_path / "other")])
    assert r.exit_code == 0, r.output
    assert PlanDB(tmp_path / "b.db").public_key == load_public_key(str(tmp_path / "other.pub"))
    import json

    for name, trusted in (("a.db", True), ("b.db", False)):
        v = CliRunner().invoke(cli, ["verify", str(tmp_path / name), "--signatures-only", "--format", "json"])
        assert v.exit_code == 0 and json.loads(v.stdout)["signer_trusted_by_up"] is trusted


def test_a_plan_by_an_untrusted_key_is_refused_unless_trusted(small_plan, tmp_path) -> None:
    priv, pub = keygen(tmp_path / "fresh")
    p = tmp_path / "p.db"
    write_plan(small_plan, p, key=load_private_key(priv))
    assert verify(PlanDB(p), walk=False).ok  # intact: it is the signer that is not trusted
    with pytest.raises(PlanInputError, match="untrusted key"):
        check_before_up(p)
    check_before_up(p, trust=[str(pub)]).close()
    check_before_up(p, trust=[pub.read_text().strip()]).close()


def test_the_ground_control_plan_passes_and_the_scenario_digest_is_checked(gc_plan) -> None:
    digest = load_default().digest
    check_before_up(gc_plan, scenario_digest=digest).close()
    with pytest.raises(PlanInputError, match="different scenario"):
        check_before_up(gc_plan, scenario_digest="0" * 64)


def _reseal_with(path, key) -> None:
    """What a forger does: change a row, then re-sign every slice and the seal with their own key."""
    con = sqlite3.connect(path)
    con.execute("UPDATE grc_coords SET lat = lat + 1")
    con.execute("UPDATE meta SET value = ? WHERE key = 'public_key'", (signmod.public_bytes(key).hex(),))
    digest = dict(con.execute("SELECT key, value FROM meta"))["scenario_digest"]
    for k, manifest in list(con.execute("SELECT k, manifest FROM slices")):
        sig = signmod.sign(key, signmod.slice_message(digest, k, manifest))
        con.execute("UPDATE slices SET signature = ? WHERE k = ?", (sig, k))
    signmod.seal(con, key)
    con.commit()
    con.close()


def test_a_plan_resigned_with_a_swapped_key_is_refused(gc_plan) -> None:
    _reseal_with(gc_plan, signmod.new_key())
    assert verify(PlanDB(gc_plan), walk=False).ok  # self-consistent: only trust can refuse it
    with pytest.raises(PlanInputError, match="untrusted key"):
        check_before_up(gc_plan)


def _tampered(value):
    if isinstance(value, bytes):
        return value[:-1] + bytes([value[-1] ^ 1]) if value else b"\x00"
    if isinstance(value, bool) or isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.25
    if isinstance(value, str):
        return value + "x"
    return 1  # None


def test_tampering_any_row_of_any_table_is_detected(gc_plan, tmp_path) -> None:
    """Every table of a real plan, first, middle and last row, every column: the change is found,
    `verify` fails and the check before `up` refuses the plan."""
    con = sqlite3.connect(gc_plan)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    cases = []
    for t in tables:
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]
        rowids = [r[0] for r in con.execute(f'SELECT rowid FROM "{t}" ORDER BY rowid')]
        assert rowids, f"table {t} is empty: the test would prove nothing for it"
        for rowid in sorted({rowids[0], rowids[len(rowids) // 2], rowids[-1]}):
            for c in cols:
                cases.append((t, rowid, c))
        cases.append((t, rowids[-1], None))  # the row deleted
    con.close()
    assert {"meta", "slices", "grc_coords", "signatures", "attachments", "ephemeris"} <= set(tables)
    missed = []
    for t, rowid, col in cases:
        p = tmp_path / "t.db"
        shutil.copyfile(gc_plan, p)
        con = sqlite3.connect(p)
        if col is None:
            con.execute(f'DELETE FROM "{t}" WHERE rowid = ?', (rowid,))
        else:
            (v,) = con.execute(f'SELECT "{col}" FROM "{t}" WHERE rowid = ?', (rowid,)).fetchone()
            new = _tampered(v)
            try:
                con.execute(f'UPDATE "{t}" SET "{col}" = ? WHERE rowid = ?', (new, rowid))
            except sqlite3.IntegrityError:
                con.execute(f'UPDATE "{t}" SET "{col}" = ? WHERE rowid = ?', (_tampered(new) * 1000, rowid))
        con.commit()
        con.close()
        try:
            db = PlanDB(p)
        except PlanInputError:
            continue  # refused on opening (a meta field the structure check needs): detected too
        try:
            ok = verify(db, walk=False).ok
        except PlanInputError:
            ok = False  # unreadable: refused as bad input
        try:
            check_before_up(p).close()
            up_ok = True
        except PlanInputError:
            up_ok = False
        if ok or up_ok:
            missed.append((t, rowid, col, ok, up_ok))
    assert not missed, missed
    assert len(cases) > 100


def test_a_table_or_trigger_added_after_signing_is_detected(gc_plan) -> None:
    con = sqlite3.connect(gc_plan)
    con.execute("CREATE TABLE association(ut INTEGER, gs INTEGER)")
    con.commit()
    con.close()
    problems = PlanDB(gc_plan).seal_problems()
    assert any("table association: not covered" in p for p in problems), problems


def test_a_new_table_written_before_the_seal_is_covered_by_construction(small_plan, tmp_path) -> None:
    """A later stage adding its own table in write_plan needs no signing code: the seal covers it."""
    from emu.plan import db as dbmod

    p = tmp_path / "p.db"
    original = dbmod._write_all

    def with_extra(con, plan, key):
        original(con, plan, key)
        con.execute("CREATE TABLE association(ut INTEGER, gs INTEGER)")
        con.execute("INSERT INTO association VALUES (1, 2)")

    dbmod._write_all = with_extra
    try:
        write_plan(small_plan, p, key=ground_control_key())
    finally:
        dbmod._write_all = original
    check_before_up(p).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE association SET gs = 3")
    con.commit()
    con.close()
    with pytest.raises(PlanInputError, match="table association"):
        check_before_up(p)


def test_slice_tamper_is_still_named_by_satellite(gc_plan) -> None:
    import zlib

    con = sqlite3.connect(gc_plan)
    (blob,) = con.execute("SELECT tables FROM slices WHERE k = 1").fetchone()
    raw = bytearray(zlib.decompress(blob))
    raw[-1] = 0 if raw[-1] else 1  # the last entry's action index (dbformat.pack_tables): another action
    con.execute("UPDATE slices SET tables = ? WHERE k = 1", (zlib.compress(bytes(raw)),))
    con.commit()
    con.close()
    rep = verify(PlanDB(gc_plan), walk=True)
    assert "table slices: rows do not match the signed digest" in rep.failures
    last = PlanDB(gc_plan).sat_names[-1]  # the flipped byte is in the last satellite's table
    assert last == "sat0-11-9"  # default.yaml: 12 planes x 10
    assert any(f.startswith(f"slice 1: satellite {last}:") for f in rep.failures), rep.failures
    assert rep.pairs_checked == 0  # not walked: the tables are not as signed


def test_bad_key_files_are_bad_input(tmp_path) -> None:
    (tmp_path / "junk").write_text("hello")
    for bad in (str(tmp_path / "junk"), str(tmp_path / "missing"), "abcd"):
        with pytest.raises(InputError, match="--trust"):
            load_public_key(bad)
    with pytest.raises(InputError, match="--key"):
        load_private_key(tmp_path / "junk")
    r = CliRunner().invoke(cli, ["plan", "topologies/default.yaml", "-o", str(tmp_path / "x.db"),
                                 "--key", str(tmp_path / "junk")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--key" in r.stderr
    assert not list(tmp_path.glob("x.db*"))
