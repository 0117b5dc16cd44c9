"""Satellite -> core association (owner, dynamic), handover counting, storage, signatures and `handovers`.

spec: inter-sno-mobility-framework §3.3 (Figure 2), §4.3, §5.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.cli.main import cli
from emu.errors import ScenarioError
from emu.plan import handover as ho
from emu.plan import sign as signmod
from emu.plan.association import associate, dynamic_association, owner_association, serving_core
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan
from emu.plan.verify import verify
from emu.scenario.load import load_scenario

from .helpers import ROOT, load_default, scenario_dict

A, B, C = 0, 1, 2


def col(*sats):
    """One user's serving satellites over time as a (T, 1) column."""
    return np.array(sats, dtype=np.int64)[:, None]


# --- owner --------------------------------------------------------------------------------------------------

def test_owner_uses_the_owner_core_every_slice() -> None:
    owner = np.array([A, B, A, B])
    us = col(0, 1, 2, 3, 0)
    core = owner_association(us, np.array([A]), owner, 2)
    assert (core == owner[None, :]).all() and core.shape == (5, 4)


def test_owner_unowned_satellite_takes_its_majority() -> None:
    owner = np.array([A, -1])
    us = np.array([[1, 1, 1], [0, 0, 1]])  # slice 0: three users on sat 1 (homes B, B, A); slice 1: one (A)
    core = owner_association(us, np.array([B, B, A]), owner, 2)
    assert core[0].tolist() == [A, B] and core[1].tolist() == [A, A]


# --- dynamic: known answers ---------------------------------------------------------------------------------

def test_alternating_owners_cost_owner_inter_handovers_dynamic_none() -> None:
    """One user of A on satellites of A, B, A, B: owner changes core at every step, dynamic never."""
    owner = np.array([A, B, A, B])
    us = col(0, 0, 1, 1, 2, 2, 3, 3)
    home = np.array([A])
    own = ho.rates(us, home, associate("owner", us, home, owner, 2, 15.0), 15.0)
    dyn = ho.rates(us, home, associate("dynamic", us, home, owner, 2, 15.0), 15.0)
    assert (own.intra, own.inter, own.leave_home, own.return_home) == (0, 3, 2, 1)
    assert (dyn.intra, dyn.inter, dyn.home_share) == (3, 0, 1.0)
    assert own.home_share == 0.5 and own.user_hours == pytest.approx(8 * 15 / 3600)
    assert ho.reduction(own, dyn) == 1.0


def test_shared_satellite_sends_one_user_away_and_home_at_its_next_satellite() -> None:
    """u (home A) and v (home B) share satellite 0 (owner A) for two slices; then v moves to satellite 1 alone.

    Slice 0 is a tie on leaves (1 each) and on the look-ahead window, broken by s0's previous (owner) core A:
    v is visited. When v moves on, satellite 1 takes it home (going home is never a leave), and satellite 0
    is not re-associated under u."""
    owner = np.array([A, A])
    us = np.array([[0, 0], [0, 0], [0, 1], [0, 1]])
    home = np.array([A, B])
    core = dynamic_association(us, home, owner, 2, lookahead=0)
    sc = serving_core(core, us)
    assert sc[:, 0].tolist() == [A, A, A, A]
    assert sc[:, 1].tolist() == [A, A, B, B]
    r = ho.rates(us, home, core, 15.0)
    assert (r.inter, r.return_home, r.leave_home, r.reassociations) == (1, 1, 0, 0)


def test_majority_over_the_window_wins_a_contested_satellite() -> None:
    """Two users of B and one of A arrive together on satellite 0 (owner A): B wins (fewer leaves)."""
    owner = np.array([A])
    us = np.zeros((3, 3), dtype=np.int64)
    home = np.array([A, B, B])
    core = dynamic_association(us, home, owner, 2, lookahead=4)
    assert core[:, 0].tolist() == [B, B, B]


def test_satellite_is_pre_associated_with_its_arriving_users() -> None:
    """Satellite 1 (owner A) is idle in slices 0-1 and serves a B user from slice 2: within the look-ahead it is
    already B's before the user arrives, so the association does not change under the user."""
    owner = np.array([B, A])
    us = col(0, 0, 1, 1)
    home = np.array([B])
    core = dynamic_association(us, home, owner, 2, lookahead=2)
    assert core[:, 1].tolist() == [B, B, B, B]
    far = dynamic_association(us, home, owner, 2, lookahead=0)
    assert far[:, 1].tolist() == [A, A, B, B]  # no look-ahead: only when the user is there


def test_idle_satellites_keep_their_core_hysteresis() -> None:
    owner = np.array([A, A])
    us = col(1, 1, -1, -1, -1)
    core = dynamic_association(us, np.array([B]), owner, 2, lookahead=0)
    assert core[:, 1].tolist() == [B, B, B, B, B]  # nobody asks for A back
    assert core[:, 0].tolist() == [A] * 5


def test_no_reassociation_under_staying_users() -> None:
    """A visited user staying on its satellite is not moved home by re-association when the majority leaves."""
    owner = np.array([A, A])
    us = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 1], [0, 1, 1]])  # col 0: home B; cols 1, 2: home A, leave
    home = np.array([B, A, A])
    core = dynamic_association(us, home, owner, 2, lookahead=0)
    assert serving_core(core, us)[:, 0].tolist() == [A, A, A, A]


def test_lookahead_is_about_one_pass() -> None:
    from emu.plan.association import lookahead_slices

    assert (lookahead_slices(15.0), lookahead_slices(60.0), lookahead_slices(7.0), lookahead_slices(3600.0)) == (
        16, 4, 35, 1)


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="nearest"):
        associate("nearest", col(0), np.array([A]), np.array([A]), 1, 15.0)


# --- handover events ------------------------------------------------------------------------------------------

def test_events_skip_outages_and_count_reassociation() -> None:
    us = col(0, -1, -1, 0, 1, 1)
    core = np.array([[A, A], [A, A], [A, A], [A, A], [A, A], [A, B]])
    ev = ho.events(us, core)
    assert [(int(e["k"]), int(e["from_sat"]), int(e["to_sat"]), bool(e["inter"])) for e in ev] == [
        (4, 0, 1, False), (5, 1, 1, True)]
    r = ho.rates(us, np.array([A]), core, 60.0)
    assert (r.intra, r.inter, r.reassociations, r.outages, r.served_slices) == (1, 1, 1, 1, 4)
    assert r.intra_per_user_hour == pytest.approx(1 / (4 * 60 / 3600))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 8), st.integers(1, 4), st.integers(1, 40), st.randoms(use_true_random=False))
def test_counts_are_consistent_and_lone_users_stay_home(n_users, n_sats, n_ops, T, rnd) -> None:
    us = np.array([[rnd.randrange(-1, n_sats) for _ in range(n_users)] for _ in range(T)], dtype=np.int64)
    home = np.array([rnd.randrange(n_ops) for _ in range(n_users)])
    owner = np.array([rnd.randrange(-1, n_ops) for _ in range(n_sats)])
    for policy in ("owner", "dynamic"):
        core = associate(policy, us, home, owner, n_ops, 15.0)
        assert core.shape == (T, n_sats) and core.min() >= 0 and core.max() < n_ops
        r = ho.rates(us, home, core, 15.0)
        assert r.leave_home + r.return_home + r.visited_to_visited == r.inter
        assert sum(u["intra"] for u in r.per_ut) == r.intra and sum(u["inter"] for u in r.per_ut) == r.inter
        changes = 0
        sc = serving_core(core, us)
        for u in range(n_users):
            ks = np.nonzero(us[:, u] >= 0)[0]
            changes += int(((us[ks[1:], u] != us[ks[:-1], u]) | (sc[ks[1:], u] != sc[ks[:-1], u])).sum())
        assert r.intra + r.inter == changes
    # no satellite ever shared by users of two operators: dynamic keeps everyone at home, no inter-SNO handover
    shared = any(len({int(home[u]) for u in range(n_users) if us[k, u] == s}) > 1
                 for k in range(T) for s in range(n_sats))
    if not shared:
        r = ho.rates(us, home, dynamic_association(us, home, owner, n_ops, lookahead=3), 15.0)
        assert r.inter == 0 and (r.served_slices == 0 or r.home_share == 1.0)


# --- scenario key ---------------------------------------------------------------------------------------------

def test_scenario_key_default_and_strict(tmp_path) -> None:
    assert load_default().scenario.routing.association == "owner"
    d = scenario_dict(routing={"association": "nearest"})
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ScenarioError, match="routing.association"):
        load_scenario(p)
    res = CliRunner().invoke(cli, ["validate", str(p)])
    assert res.exit_code == 2 and "routing.association" in res.output and "nearest" in res.output


def test_starlink_3sno_is_interleaved() -> None:
    sc = load_scenario(ROOT / "topologies" / "starlink-3sno.yaml").scenario
    assert [o.name for o in sc.operators] == ["sno-a", "sno-b", "sno-c"]
    assert [o.owns[0].planes[:2] for o in sc.operators] == [[0, 3], [1, 4], [2, 5]]
    assert {u.operator for u in sc.user_terminals} == {"sno-a", "sno-b", "sno-c"}


# --- in the plan: stored, signed, verified ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    key = signmod.new_key()
    plan = make_plan(load_default(), n_slices=80)
    p = tmp_path_factory.mktemp("assoc") / "p.db"
    write_plan(plan, p, key=key)
    return plan, p, key


def test_plan_stores_both_policies(planned) -> None:
    plan, p, _key = planned
    db = PlanDB(p)
    for policy in ("owner", "dynamic"):
        assert (db.association(policy) == plan.association[policy]).all()
    assert (db.association("owner") == plan.series.constellation.owner[None, :]).all()
    rep = verify(db, walk=False)
    assert rep.ok, rep.failures


def _copy(p, tmp_path):
    q = tmp_path / "t.db"
    q.write_bytes(p.read_bytes())
    return q


def test_tampered_association_is_rejected(planned, tmp_path) -> None:
    from emu.plan.db import unpack_core

    _plan, p, _key = planned
    q = _copy(p, tmp_path)
    con = sqlite3.connect(q)
    blobs = [bytes(b) for (b,) in con.execute("SELECT core FROM associations WHERE policy = 'dynamic' ORDER BY k")]
    # another slice's (different) association in place of slice k's: with continuous coverage many slices agree
    k = next(i for i, b in enumerate(blobs) if unpack_core(b).tolist() != unpack_core(blobs[0]).tolist())
    con.execute("UPDATE associations SET core = ? WHERE policy = 'dynamic' AND k = ?", (blobs[0], k))
    con.commit()
    con.close()
    rep = verify(PlanDB(q), walk=False)
    assert not rep.ok and any("associations" in f for f in rep.failures), rep.failures
    res = CliRunner().invoke(cli, ["verify", str(q), "--signatures-only"])
    assert res.exit_code != 0 and "association" in res.output


def test_validly_signed_but_wrong_association_is_found(planned, tmp_path) -> None:
    """Re-signed with the plan's own key, a changed association still differs from the algorithm's result."""
    from emu.plan.db import _pack, unpack_core

    _plan, p, key = planned
    q = _copy(p, tmp_path)
    con = sqlite3.connect(q)
    (blob,) = con.execute("SELECT core FROM associations WHERE policy = 'dynamic' AND k = 9").fetchone()
    core = unpack_core(blob).copy()
    core[:] = 1 - core
    con.execute("UPDATE associations SET core = ? WHERE policy = 'dynamic' AND k = 9", (_pack(core),))
    signmod.seal(con, key)  # re-sealed with the plan's own key: every signature checks out
    con.commit()
    con.close()
    rep = verify(PlanDB(q), walk=False)
    assert rep.failures == ["association: dynamic slice 9: differs from the association algorithm's result"]


def test_missing_association_rows_are_named(planned, tmp_path) -> None:
    _plan, p, key = planned
    q = _copy(p, tmp_path)
    con = sqlite3.connect(q)
    con.execute("DELETE FROM associations WHERE policy = 'owner'")
    signmod.seal(con, key)  # re-sealed with the plan's own key: only the structural check can find it
    con.commit()
    con.close()
    rep = verify(PlanDB(q), walk=False)
    assert any("rows missing" in f for f in rep.failures)


# --- leo-emu handovers ------------------------------------------------------------------------------------------

def test_handovers_json_shape_and_values(planned) -> None:
    plan, p, _key = planned
    res = CliRunner().invoke(cli, ["handovers", str(p), "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert {"owner", "dynamic", "reduction"} <= set(d)
    for policy in ("owner", "dynamic"):
        assert {"intra_per_user_hour", "inter_per_user_hour"} <= set(d[policy])
    from emu.plan.association import user_view

    _cols, us, home = user_view(plan.attach.serving, plan.series.ground.kind, plan.series.ground.operator)
    own = ho.rates(us, home, plan.association["owner"], 15.0)
    dyn = ho.rates(us, home, plan.association["dynamic"], 15.0)
    assert d["owner"]["inter"] == own.inter and d["dynamic"]["intra"] == dyn.intra
    assert d["reduction"] == ho.reduction(own, dyn)
    assert d["configured"] == "owner" and len(d["per_ut"]) == 4 and d["per_ut"][0]["ut"] == "ut1"
    res = CliRunner().invoke(cli, ["handovers", str(p), "--events", "--format", "json"])
    ev = json.loads(res.output)["events"]
    assert len(ev["dynamic"]) == dyn.intra + dyn.inter and sum(e["kind"] == "inter" for e in ev["owner"]) == own.inter
    assert all(e["from_core"] != e["to_core"] for e in ev["owner"] if e["kind"] == "inter")
    res = CliRunner().invoke(cli, ["handovers", str(p), "--per-ut"])
    assert res.exit_code == 0 and "dynamic" in res.output and "ut4" in res.output


@pytest.mark.parametrize("make", [
    lambda t: t / "missing.db",
    lambda t: (t / "garbage.db").write_text("not sqlite") and t / "garbage.db",
])
def test_handovers_bad_input_is_one_line_exit_2(make, tmp_path) -> None:
    path = make(tmp_path)
    res = CliRunner().invoke(cli, ["handovers", str(path), "--format", "json"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("leo-emu: error: plan:") and str(path) in res.output


def test_handovers_corrupt_rows_exit_2(planned, tmp_path) -> None:
    _plan, p, _key = planned
    for sql in ("UPDATE slices SET serving = x'00' WHERE k = 3", "DROP TABLE associations",
                "UPDATE associations SET core = x'0102' WHERE k = 2"):
        q = _copy(p, tmp_path)
        con = sqlite3.connect(q)
        con.execute(sql)
        con.commit()
        con.close()
        res = CliRunner().invoke(cli, ["handovers", str(q)])
        assert res.exit_code == 2 and res.output.count("\n") == 1, (sql, res.output)


def test_no_user_terminals_is_all_zero(tmp_path) -> None:
    from .helpers import loaded

    p = tmp_path / "n.db"
    write_plan(make_plan(loaded(scenario_dict()), n_slices=3), p)
    res = CliRunner().invoke(cli, ["handovers", str(p), "--format", "json", "--events"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["user_terminals"] == 0 and d["reduction"] is None and d["owner"]["inter_per_user_hour"] == 0
    assert d["events"] == {"owner": [], "dynamic": []}
    assert verify(PlanDB(p), walk=False).ok
