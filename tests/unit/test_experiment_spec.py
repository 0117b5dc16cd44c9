"""Experiment files: the shipped examples are valid against their plans; every file of the bad-input corpus
(tests/data/experiments/bad, first line '# expect: FIELD VALUE') is one error line naming FIELD and VALUE, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from emu.cli.main import cli
from emu.experiment import (CoreRestart, ExperimentError, ForcedHandover, GsOutage, NodeCatalog, load_experiment,
                            parse_experiment)
from emu.experiment.runner import check_with_plan, scenario_path, supported
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan

from .helpers import DATA, ROOT, load_default

BAD = sorted((DATA / "experiments" / "bad").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.fixture(scope="module")
def default_db(tmp_path_factory):
    p = tmp_path_factory.mktemp("exp") / "default.db"
    write_plan(make_plan(load_default()), p)  # the full orbit: 421 slices (12 x 10 at 1,000 km)
    return p


@pytest.fixture(scope="module")
def catalog(default_db):
    db = PlanDB(default_db)
    return NodeCatalog.from_plan(db)


def test_catalog_from_plan(catalog) -> None:
    assert {"dev1", "ut1", "inet"} <= catalog.endpoints and "gs-london" not in catalog.endpoints
    assert catalog.cores == {"sno-a", "sno-b"} and "sat0-5-7" in catalog.satellites
    assert (catalog.n_slices, catalog.slice_s) == (421, 15.0)


@pytest.fixture(scope="module")
def catalog_of(tmp_path_factory, default_db):
    """The node catalog of a scenario file's plan, planned once per scenario (the default's is shared)."""
    from emu.scenario.load import load_scenario

    done = {(ROOT / "topologies" / "default.yaml").resolve(): default_db}

    def get(scen: Path) -> NodeCatalog:
        if scen not in done:
            done[scen] = tmp_path_factory.mktemp("exp") / f"{scen.stem}.db"
            write_plan(make_plan(load_scenario(scen)), done[scen])
        db = PlanDB(done[scen])
        try:
            return NodeCatalog.from_plan(db)
        finally:
            db.close()
    return get


def test_there_are_shipped_examples() -> None:
    assert {"handover-basic", "handover-live", "events-sparse"} <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_shipped_examples_pass_every_check_of_experiment_run(path, catalog_of) -> None:
    """What ``leo-emu experiment run`` checks before it brings anything up (:func:`runner.prepare`), without
    root: the file's structure, the runner's plan-free refusals, the scenario file, then the file against its
    own scenario's plan and the runner's refusals on the plan's nodes. A broken example fails here."""
    exp = load_experiment(path)
    supported(exp, None)
    scen = scenario_path(path, exp)
    check_with_plan(exp, catalog_of(scen))
    assert exp.traffic and all(t.interval_ms <= 10 for t in exp.traffic)


def test_handover_basic_is_parsed_as_written(catalog) -> None:
    exp = load_experiment(ROOT / "experiments" / "handover-basic.yaml", catalog)
    assert (exp.procedure, exp.association, exp.repeats, exp.start_slice) == ("proactive", "dynamic", 5, 20)
    assert [type(e) for e in exp.events] == [ForcedHandover, GsOutage, CoreRestart]
    assert exp.events[1].slice == 25 and exp.events[1].time_s is None and exp.events[1].duration_s == 20
    assert exp.traffic[0].probe == "udp" and exp.traffic[1].probe == "ping"


def test_handover_basic_streams_one_per_device_each_its_kind(default_db) -> None:
    """The runner gives every traffic entry its own probe stream, keyed by its device's user terminal."""
    from emu.experiment.runner import streams_of

    exp = load_experiment(ROOT / "experiments" / "handover-basic.yaml")
    assert streams_of(exp, default_db) == {
        "ut1": {"probe": "udp", "interval_ms": 10.0, "size_bytes": 64, "port": None, "device": "dev1"},
        "ut2": {"probe": "icmp", "interval_ms": 10.0, "size_bytes": 64, "port": None, "device": "dev2"}}


def test_corpus_is_large() -> None:
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_input_corpus(path, default_db, catalog) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: ")
    field, _, value = first[len("# expect: "):].partition(" ")
    with pytest.raises(ExperimentError) as exc:
        load_experiment(path, catalog)
    assert exc.value.field == field
    if value:
        assert str(exc.value.value) == value or repr(exc.value.value) == value, exc.value
    res = CliRunner().invoke(cli, ["experiment", "check", str(path), "--plan", str(default_db)])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and res.output.startswith(f"leo-emu: error: {field}: ")


def test_structure_only_without_a_plan() -> None:
    """Node names are only checked against a plan; structure is checked always."""
    exp = parse_experiment({"name": "x", "duration_s": 5, "traffic": [{"probe": "udp", "src": "a", "dst": "b"}]})
    assert exp.repeats == 1 and exp.procedure == "baseline" and exp.association == "owner"


def test_cli_check_json_and_bad_plan(default_db, tmp_path) -> None:
    path = ROOT / "experiments" / "handover-basic.yaml"
    res = CliRunner().invoke(cli, ["experiment", "check", str(path), "--plan", str(default_db), "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["valid"] and d["checked_against_plan"] and d["events"] == 3
    res = CliRunner().invoke(cli, ["experiment", "check", str(path), "--plan", str(tmp_path / "none.db")])
    assert res.exit_code == 2 and res.output.startswith("leo-emu: error: --plan: plan: no such file")


_OK = ("name: x\nscenario: {scen}\nduration_s: 5\ntraffic:\n"
       "  - {{probe: udp, src: dev1, dst: inet, interval_ms: {iv}}}\n{more}")


@pytest.mark.parametrize("scen, iv, more, field, value", [
    (None, 10, "", "scenario", "None"),
    ("no-such.yaml", 10, "", "scenario", "no-such.yaml"),
    ("{default}", 0.5, "", "traffic.0.interval_ms", "0.5"),
    ("{default}", 10, "  - {probe: ping, src: dev1, dst: inet, interval_ms: 10}\n", "traffic.1.src", "dev1"),
])
def test_check_refuses_what_the_runner_refuses(tmp_path, default_db, scen, iv, more, field, value) -> None:
    """`experiment check` (with or without a plan) refuses, with the same one line, what `experiment run` would
    refuse before starting anything: no scenario, a scenario file that is not there, probes faster than the
    runner sends, two streams from one device."""
    default = str(ROOT / "topologies" / "default.yaml")
    text = _OK.format(scen=(scen or "").format(default=default), iv=iv, more=more)
    if scen is None:
        text = text.replace("scenario: \n", "")
    path = tmp_path / "x.yaml"
    path.write_text(text)
    for extra in ([], ["--plan", str(default_db)]):
        res = CliRunner().invoke(cli, ["experiment", "check", str(path), *extra])
        assert res.exit_code == 2, res.output
        assert res.output.count("\\n") == 0 and res.output.count("\n") == 1
        assert res.output.startswith(f"leo-emu: error: {field}: "), res.output
        assert value in res.output
    ok = tmp_path / "ok.yaml"
    ok.write_text(_OK.format(scen=default, iv=10, more=""))
    assert CliRunner().invoke(cli, ["experiment", "check", str(ok)]).exit_code == 0
