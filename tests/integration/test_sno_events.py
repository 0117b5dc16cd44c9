"""Experiment-file events in the live emulator, real namespaces and packets (spec: inter-sno-mobility §5.1,
§5 Figure 5, §4.2): `leo-emu experiment run` with a forced inter-SNO handover, a ground-station outage and a
core restart, both procedures; each event measured from the users' probe streams and the daemons' logs.

One run of the file for the module (planning + two procedures, a few minutes); each test checks one kind.
"""

from __future__ import annotations

import csv
import ipaddress
import json
from pathlib import Path

import pytest

from emu.dataplane import netns

from .test_dataplane import leo

ROOT = Path(__file__).resolve().parents[2]
SPARSE = ROOT / "topologies" / "sparse.yaml"  # all four users served in slices 15..22 (docs/mobility.md)

FILE = f"""name: events-it
scenario: {SPARSE}
procedure: proactive
association: owner
repeats: 1
start_slice: 16
duration_s: 75
speed: 5
traffic:
  - {{probe: udp, src: dev1, dst: inet, interval_ms: 10}}
  - {{probe: udp, src: dev2, dst: inet, interval_ms: 10}}
  - {{probe: udp, src: dev3, dst: inet, interval_ms: 10}}
events:
  - {{kind: gs_outage, gs: gs-london, time_s: 5, duration_s: 10}}
  - {{kind: forced_handover, ut: ut1, time_s: 30, to_core: sno-b}}
  - {{kind: core_restart, core: sno-b, slice: 19}}
"""


@pytest.fixture(scope="module")
def result(leo_env, tmp_path_factory, module_ns_prefix):
    d = tmp_path_factory.mktemp("exp")
    p = d / "events.yaml"
    p.write_text(FILE)
    res = leo(leo_env, "experiment", "run", str(p), "--out", str(d / "out"), "--format", "json", timeout=1500)
    summary = json.loads(res.stdout)
    assert not netns.list_names(module_ns_prefix.rstrip("-")), "namespaces left after the run"
    for proc, r in summary["runs"].items():  # the CLI's summary names every event with its effect
        assert [e["kind"] for e in r["events"]] == ["gs_outage", "forced_handover", "core_restart"], proc
    return json.loads((d / "out" / "results.json").read_text()), d / "out"


def _events(out, kind):
    return {proc: [e for e in r["events"] if e["kind"] == kind] for proc, r in out["runs"].items()}


def test_every_event_is_in_the_outputs(result) -> None:
    out, folder = result
    assert set(out["runs"]) == {"baseline", "proactive"}
    for proc, r in out["runs"].items():
        assert r["events_error"] is None, r["events_error"]
        assert [e["kind"] for e in r["events"]] == ["gs_outage", "forced_handover", "core_restart"], proc
    rows = list(csv.DictReader(open(folder / "events.csv")))
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"gs_outage", "forced_handover", "core_restart"}
    assert (folder / "events.png").stat().st_size > 10_000
    assert json.loads((folder / "results.json").read_text())["runs"]["proactive"]["events"]


def test_forced_handover_runs_the_procedure_and_keeps_the_address(result) -> None:
    out, _ = result
    for proc, (e,) in _events(out, "forced_handover").items():
        assert (e["from_core"], e["to_core"]) == ("sno-a", "sno-b"), e
        assert e["registered_core"] == "sno-b" and e["coa"], e  # a care-of address from the visited core
        assert e["prefix"] == out["runs"][proc]["handovers"][0]["home_prefix"] or \
            ipaddress.ip_network(e["prefix"]).prefixlen == 24
        assert e["interruption_ms"] is not None and e["recovery_ms"] is not None and e["lost_packets"] is not None
        mine = [s["step"] for s in e["steps"]]
        if proc == "proactive":
            assert "prepare_rx" in mine and e["switch_after_ms"] >= 100  # told ahead, then switched
        else:
            assert "auth_req_tx" in mine and "prepare_rx" not in mine
    # the user's address is its home prefix whatever core serves it
    for proc, r in out["runs"].items():
        (e,) = [x for x in r["events"] if x["kind"] == "forced_handover"]
        homes = {h["ut"]: h["home_prefix"] for h in r["handovers"]}
        if "ut1" in homes:
            assert e["prefix"] == homes["ut1"]


def test_gs_outage_rehomes_its_users_and_cuts_traffic_only_briefly(result) -> None:
    out, _ = result
    for proc, (e,) in _events(out, "gs_outage").items():
        assert e["blocked"], e
        users = {u["ut"]: u for u in e["users"]}
        assert {"ut1", "ut2"} <= set(users), e  # both on gs-london at slice 16
        for ut in ("ut1", "ut2"):
            u = users[ut]
            assert u["rehomed_gs"] == "gs-madrid" and u["rehomed_core"] == "sno-a", u
            # re-homed through gs-madrid: traffic came back long before the GS did (2 s outage; recovery is
            # None when the silence lost nothing)
            assert u["outage"]["interruption_ms"] is not None and u["outage"]["interruption_ms"] < 1000, (proc, u)
            assert u["outage"]["recovery_ms"] is None or u["outage"]["recovery_ms"] < 1000, (proc, u)
            assert u["return"]["interruption_ms"] is not None
        assert {r["ut"] for r in e["returned"]} >= {"ut1", "ut2"}  # back to gs-london after the outage
        assert 1900 <= e["measured_duration_ms"] <= 2600  # 10 s at 5x


def test_core_restart_is_supervised_and_users_register_again(result) -> None:
    out, _ = result
    for proc, (e,) in _events(out, "core_restart").items():
        assert e["restarted"] and e["new_pid"] != e["old_pid"], e
        assert e["control_outage_ms"] is not None and e["control_outage_ms"] < 15000, e
        assert e["served"], e
        for u in e["users"]:
            assert u["reregistered_ms"] is not None and u["reregistered_ms"] >= e["control_outage_ms"] - 1, (proc, u)
