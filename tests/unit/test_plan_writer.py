"""Writing a plan: the two-step writer (tables written while the slices are planned) gives the same database
as writing it in one go, and the planner's answers are pinned (issue 16: faster, not different).

``PINNED``: the seal's digest of every table but ``meta`` (which holds the wall time) of a 3-slice plan of
``topologies/default.yaml`` with satellites as destinations, signed with a fixed key; taken from the planner
before the issue-16 speed work (scipy's Dijkstra, numpy next hops and walk). Regenerate only for a change
that means to change plans (or the scenario file), or how a table is stored: ``slices`` was retaken when the
tables became dictionary-coded (format 6), after a 40-slice shell-1 plan by the format-5 and the format-6 code
decoded to the same arrays in every slice (tables, links, attachments, choices, bindings, visibility, pairs,
manifest, signature).

``MANIFESTS``: the SHA-256 of every slice's signed manifest of the same plan, in slice order. A manifest holds
the SHA-256 of each satellite's table over its decoded columns (and of the slice's other arrays), so it does
not depend on how the tables are stored: taken from the format-5 code, it pins that the format-6 tables
decode to the same entries. Both were retaken once more when the aggregation became ORTC-like
(``emu/plan/fold.py``, docs/route-churn.md: the same answer for every destination, fewer entries):
``MANIFESTS`` from the format-5 code with the new aggregation, which the format-6 code matches, and
``slices`` from the format-6 code.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from emu.plan.db import PlanDB, PlanWriter, write_plan
from emu.plan.planner import make_plan
from emu.plan.verify import verify
from emu.scenario.load import load_scenario

from .helpers import ROOT

PINNED = {
    "associations": "e3ecb13f4be9e3b7f1119fac4f7011ac0dc3092cc06a1831f1d19b41f13b9b57",
    "attachments": "b037ab1f1815e9a860f9ae9118b7662a3c0dbec01be499555f70b1985460bcff",
    "ephemeris": "f466a2dd6c4d4371e7184318f4f449521cef64f86450991f41126053be995265",
    "grc_coords": "58e5b4dd09faca8cfdb763712ddccae56236c761ec10c3e9a1c3802be0de51f3",
    "ground_nodes": "fc9afaabb2e2b591bd38e2e9d56989abd7210b82a11eb0eadb9fc515c4afdc51",
    "handovers": "98adf19421ed73980a7e8511c2852d7c08afbe97fe102aede98953361b8cbbb7",
    "mapping": "53a3e3cb5363846f97d4089ea0e9523825318e473e5ac3314654b5a6c7c8ae98",
    "operators": "68e1b304b78d644217b76883211aebc38a4109db5f414328ff532e47152ec069",
    "satellites": "0797a1afe466dc9cc7db44d52033f24a91a07a8585e0acb74382feed540f2ad8",
    "slices": "a8a7858bfaf5728727dbbb97ddb86800d9355d31747bc6e0ca638b079c3675d8",
}
MANIFESTS = "7d9b0d172098c6170fead7a901dfa9c2a47cd57370f7c3df97e80db73b2e1f90"


def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)


def scenario(tmp_path, name: str = "default.yaml"):
    data = yaml.safe_load((ROOT / "topologies" / name).read_text())
    data.setdefault("routing", {})["satellite_destinations"] = True
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_scenario(str(p))


def table_digests(path) -> dict:
    con = sqlite3.connect(path)
    try:
        return json.loads(con.execute("SELECT digest FROM signatures").fetchone()[0])["tables"]
    finally:
        con.close()


def test_a_small_plan_is_as_pinned(tmp_path) -> None:
    write_plan(make_plan(scenario(tmp_path), 3), tmp_path / "p.db", key=key())
    got = {t: d for t, d in table_digests(tmp_path / "p.db").items() if t != "meta"}
    assert got == PINNED
    con = sqlite3.connect(tmp_path / "p.db")
    manifests = b"".join(m for (m,) in con.execute("SELECT manifest FROM slices ORDER BY k"))
    con.close()
    assert hashlib.sha256(manifests).hexdigest() == MANIFESTS
    db = PlanDB(tmp_path / "p.db")
    assert verify(db, walk=False).ok  # the stored tables decode to what the manifests digest


@pytest.mark.parametrize("name", ["default.yaml", "two-shell.yaml"])
def test_written_while_planning_is_written_in_one_go(tmp_path, name) -> None:
    loaded = scenario(tmp_path, name)
    one = write_plan(make_plan(loaded, 3), tmp_path / "one.db", key=key())
    w = PlanWriter(tmp_path / "two.db", key())
    two = w.finish(make_plan(loaded, 3, before_slices=w.start))
    a, b = table_digests(one), table_digests(two)
    assert a.keys() == b.keys()
    assert {t for t in a if a[t] != b[t]} <= {"meta"}  # the wall time
    assert not PlanDB(two).seal_problems()
    assert verify(PlanDB(two)).ok
    assert sorted(os.listdir(tmp_path)) == ["one.db", "s.yaml", "two.db"]


@pytest.mark.parametrize("name", ["default.yaml", "two-shell.yaml"])
def test_written_in_three_steps_is_written_in_one_go(tmp_path, name) -> None:
    """The first tables by a forked process (start_early), the rest of the head by a thread, then the slices."""
    loaded = scenario(tmp_path, name)
    one = write_plan(make_plan(loaded, 3), tmp_path / "one.db", key=key())
    w = PlanWriter(tmp_path / "three.db", key())
    three = w.finish(make_plan(loaded, 3, before_slices=w.start, head=w.start_early))
    a, b = table_digests(one), table_digests(three)
    assert a.keys() == b.keys()
    assert {t for t in a if a[t] != b[t]} <= {"meta"}  # the wall time
    assert not PlanDB(three).seal_problems()
    assert sorted(os.listdir(tmp_path)) == ["one.db", "s.yaml", "three.db"]
    w = PlanWriter(tmp_path / "early.db", key())  # start_early without start: finish writes the rest
    early = w.finish(make_plan(loaded, 3, head=w.start_early))
    assert table_digests(early) == {**b, "meta": table_digests(early)["meta"]}


def test_a_failing_early_head_is_raised_by_finish(tmp_path, monkeypatch) -> None:
    from emu.errors import InputError
    from emu.plan import db as dbmod

    def full(con, plan):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dbmod, "_write_early", full)  # the forked process inherits it
    loaded = scenario(tmp_path)
    w = PlanWriter(tmp_path / "p.db", key())
    plan = make_plan(loaded, 2, before_slices=w.start, head=w.start_early)
    with pytest.raises(InputError, match="No space left"):
        w.finish(plan)
    assert sorted(os.listdir(tmp_path)) == ["s.yaml"]


@pytest.mark.parametrize("hook", ["head", "before_slices"])
def test_an_aborted_writer_leaves_nothing(tmp_path, hook) -> None:
    """Planning fails after the writer began (its forked first tables, ``head``, or its thread, ``before_slices``):
    abort leaves no file and no process."""
    loaded = scenario(tmp_path)
    w = PlanWriter(tmp_path / "p.db", key())
    begin = w.start_early if hook == "head" else w.start

    def boom(plan, n) -> None:
        begin(plan, n)
        raise RuntimeError("planning failed")

    with pytest.raises(RuntimeError):
        try:
            make_plan(loaded, 2, **{hook: boom})
        except BaseException:
            w.abort()
            raise
    assert sorted(os.listdir(tmp_path)) == ["s.yaml"]
    if hook == "head":
        assert not w._early[0].is_alive()


def test_a_failing_head_is_raised_by_finish(tmp_path, monkeypatch) -> None:
    from emu.errors import InputError
    from emu.plan import db as dbmod

    def full(con, plan, n):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dbmod, "_write_head", full)
    loaded = scenario(tmp_path)
    w = PlanWriter(tmp_path / "p.db", key())
    plan = make_plan(loaded, 2, before_slices=w.start)
    with pytest.raises(InputError, match="No space left"):
        w.finish(plan)
    assert sorted(os.listdir(tmp_path)) == ["s.yaml"]
