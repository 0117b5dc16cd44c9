"""Experiment events: when they fire and what is measured from their records (pure; spec: inter-sno-mobility
§5.1, §5 Figure 5, §4.2). The live side is tests/integration/test_sno_events.py."""

from __future__ import annotations

import pytest

from emu.experiment import events as EV
from emu.experiment.spec import ExperimentError, parse_experiment, check_against, NodeCatalog

MS = 1_000_000
DOC = {"name": "x", "duration_s": 60, "start_slice": 10, "traffic": [{"probe": "udp", "src": "dev1", "dst": "inet"}],
       "events": [{"kind": "core_restart", "core": "sno-b", "time_s": 30},
                  {"kind": "gs_outage", "gs": "gs-a", "slice": 12, "duration_s": 6},
                  {"kind": "forced_handover", "ut": "ut1", "time_s": 3, "to_core": "sno-b"}]}
NODES = NodeCatalog(frozenset({"sat0"}), frozenset({"gs-a"}), frozenset({"ut1"}), frozenset({"dev1"}),
                    frozenset({"sno-a", "sno-b"}), "inet", 100, 15.0)


def test_schedule_in_wall_seconds_outage_has_an_end() -> None:
    exp = parse_experiment(DOC)
    got = EV.schedule(exp.events, exp.start_slice, 15.0, speed=5.0)
    assert got == [(0.6, 2, "start"), (6.0, 0, "start"), (6.0, 1, "start"), (7.2, 1, "end")]


def test_window_spans_the_file_and_measures_the_plans_handovers_inside() -> None:
    hs = [{"k": 9}, {"k": 11}, {"k": 12, "after_outage": True}, {"k": 14}, {"k": 16}, {"k": 40}]
    k0, n, todo = EV.window([], hs, 10, 60.0, 15.0, 2, 100)
    assert (k0, n) == (10, 5) and [h["k"] for h in todo] == [11, 14]
    assert EV.window([], hs, 98, 60.0, 15.0, 9, 100)[1] == 2  # clipped at the plan's end


def test_to_core_is_checked_and_exclusive() -> None:
    check_against(parse_experiment(DOC), NODES)
    bad = {**DOC, "events": [{"kind": "forced_handover", "ut": "ut1", "time_s": 3, "to_core": "sno-z"}]}
    with pytest.raises(ExperimentError, match="events.0.to_core"):
        check_against(parse_experiment(bad), NODES)
    both = {**DOC, "events": [{"kind": "forced_handover", "ut": "ut1", "time_s": 3, "to_core": "sno-a",
                               "to_sat": "sat0"}]}
    with pytest.raises(ExperimentError, match="to_sat or to_core"):
        parse_experiment(both)


def _stream(t0: int, n: int, gap: tuple[int, int] = (0, 0), rtt: int = 5 * MS) -> dict:
    """A probe every 10 ms from t0; sequence numbers in [gap) get no reply."""
    replies = [[q, t0 + q * 10 * MS, t0 + q * 10 * MS + rtt] for q in range(n) if not gap[0] <= q < gap[1]]
    return {"sent": n, "replies": replies, "interval_ms": 10.0}


def test_gs_outage_effect_per_user_rehomed_and_waiting() -> None:
    t0 = 1_000 * MS
    start, end = t0 + 500 * MS, t0 + 2_500 * MS
    probes = {"ut1": _stream(t0, 400, (50, 53)),   # re-homed: 3 probes lost
              "ut2": _stream(t0, 400, (50, 250))}  # no other GS: cut off for the whole outage
    rec = {"i": 1, "kind": "gs_outage", "slice": 12, "gs": "gs-a", "affected": ["ut1", "ut2", "ut3"],
           "t_ns": start, "end_ns": end, "rehomed": [{"ut": "ut1", "core": "sno-a", "gs": "gs-b"}]}
    e = EV.measure(rec, probes, [], 150.0, {})
    u = {x["ut"]: x for x in e["users"]}
    assert u["ut1"]["rehomed_gs"] == "gs-b" and u["ut1"]["outage"]["lost_packets"] == 3
    assert u["ut1"]["outage"]["interruption_ms"] == 40.0 and u["ut1"]["outage"]["recovery_ms"] == 35.0
    assert u["ut2"]["rehomed_gs"] is None and u["ut2"]["outage"]["lost_packets"] == 200
    assert u["ut2"]["outage"]["interruption_ms"] == 2010.0 and u["ut2"]["outage"]["recovery_ms"] == 2005.0
    assert u["ut3"]["outage"]["interruption_ms"] is None  # no probe stream: not measured, not invented
    assert (e["interruption_ms"], e["lost_packets"], e["recovery_ms"]) == (2010.0, 203, 2005.0)
    assert e["measured_duration_ms"] == 2000.0 and "t_ns" not in e


def test_core_restart_effect_control_outage_and_reregistration() -> None:
    t0 = 1_000 * MS
    kill, ready = t0 + 500 * MS, t0 + 800 * MS
    rec = {"i": 0, "kind": "core_restart", "slice": 3, "core": "sno-b", "old_pid": 10, "new_pid": 11,
           "served": ["ut1"], "t_ns": kill, "answers_ns": t0 + 700 * MS, "ready_ns": ready, "relinked": ["ut1"]}
    steps = [{"t_ns": t0 + 100 * MS, "node": "ut1", "step": "registered"},
             {"t_ns": ready + 60 * MS, "node": "ut1", "step": "registered"}]
    e = EV.measure(rec, {"ut1": _stream(t0, 300)}, steps, 150.0, {})
    assert e["restarted"] and e["control_outage_ms"] == 300.0 and e["answers_ms"] == 200.0
    assert e["users"][0]["reregistered_ms"] == 360.0 and e["users"][0]["lost_packets"] == 0
    assert e["recovery_ms"] == 360.0 and e["lost_packets"] == 0
    late = EV.measure({**rec, "served": ["ut1", "ut2"]}, {"ut1": _stream(t0, 300)}, steps, 150.0, {})
    assert late["users"][1]["reregistered_ms"] is None and late["recovery_ms"] is None  # ut2 never did
    dead = EV.measure({**rec, "new_pid": None, "ready_ns": None}, {}, [], 150.0, {})
    assert not dead["restarted"] and dead["control_outage_ms"] is None


def test_forced_handover_effect_from_the_switch_record() -> None:
    t0 = 1_000 * MS
    fire, switch = t0 + 350 * MS, t0 + 500 * MS  # proactive: the notice between the event and the switch
    rec = {"i": 2, "kind": "forced_handover", "slice": 5, "ut": "ut1", "from_core": "sno-a", "to_core": "sno-b",
           "t_ns": fire, "switched": {"k": 5, "t_ns": switch, "gs": "gs-w", "ut": "ut1"}}
    steps = [{"t_ns": switch + 20 * MS, "node": "ut1", "step": "registered", "user": "ut1@sno-a", "core": "sno-b",
              "coa": "10.253.1.2", "prefix": "10.77.1.0/24"}]
    e = EV.measure(rec, {"ut1": _stream(t0, 300, (50, 52))}, steps, 150.0, {"ut1": "ut1@sno-a"})
    assert e["kind"] == "forced_handover"
    assert e["switch_after_ms"] == 150.0 and e["registered_ms"] == 20.0 and e["coa"] == "10.253.1.2"
    assert e["lost_packets"] == 2 and e["interruption_ms"] == 30.0 and e["gs"] == "gs-w"
    none = EV.measure({**rec, "switched": None, "note": "no switch"}, {}, [], 150.0, {})
    assert none["note"] == "no switch" and "interruption_ms" not in none


def test_return_is_measured_up_to_the_next_event_and_silence_without_loss_has_no_recovery() -> None:
    t0 = 1_000 * MS
    start, end = t0 + 500 * MS, t0 + 1_000 * MS
    probe = _stream(t0, 400, (150, 170))  # a cut 0.5 s after the outage's end: the next event's, not this one's
    rec = {"i": 0, "kind": "gs_outage", "gs": "gs-a", "affected": ["ut1"], "t_ns": start, "end_ns": end,
           "rehomed": [], "next_ns": t0 + 1_400 * MS}
    u = EV.measure(rec, {"ut1": probe}, [], 150.0, {})["users"][0]
    assert u["return"]["lost_packets"] == 0 and u["return"]["recovery_ms"] is None
    assert u["outage"]["interruption_ms"] == 10.0 and u["outage"]["recovery_ms"] is None
    u = EV.measure({**rec, "next_ns": None}, {"ut1": probe}, [], 150.0, {})["users"][0]
    assert u["return"]["lost_packets"] == 20  # without a next event the 2 s after the end would include it


def test_worst_user_is_the_forced_one_or_the_longest_interruption() -> None:
    probes = {"ut1": {}, "ut2": {}}
    assert EV.worst_user({"ut": "ut1"}, probes) == "ut1"
    e = {"users": [{"ut": "ut1", "outage": {"interruption_ms": 30.0}}, {"ut": "ut2", "outage": {"interruption_ms": 90.0}},
                   {"ut": "ut3", "outage": {"interruption_ms": 900.0}}]}
    assert EV.worst_user(e, probes) == "ut2"  # ut3 has no probe stream
    assert EV.worst_user({"users": [{"ut": "ut1", "interruption_ms": 5.0}]}, probes) == "ut1"
    assert EV.worst_user({"users": []}, probes) is None
