"""``leo-emu handovers``: inter- and intra-SNO handovers per user-hour under each association policy.

spec: inter-sno-mobility-framework §3.3, §4.3, §5 (see emu/plan/association.py and emu/plan/handover.py).
"""

from __future__ import annotations

import click

from emu.cli.common import emit_json, emit_table, format_option
from emu.plan.handover import handover_report  # noqa: F401  (also imported from here by the runner and scripts)


@click.command()
@click.argument("plan_db", type=click.Path(dir_okay=False))
@click.option("--per-ut", is_flag=True, help="Table format: also one row per user terminal.")
@click.option("--events", "with_events", is_flag=True,
              help="JSON format: also every handover (slice, UT, satellites, cores) under 'events'.")
@format_option
def handovers(plan_db: str, per_ut: bool, with_events: bool, fmt: str) -> None:
    """Intra- and inter-SNO handovers per user-hour under the owner and dynamic associations, and the reduction."""
    import sqlite3
    import zlib

    from emu.errors import InputError, PlanError
    from emu.plan.db import PlanDB

    try:  # the plan is this command's input: anything unreadable in it is bad input (exit 2)
        db = PlanDB(plan_db)
        try:
            rep = handover_report(db, with_events)
        finally:
            db.close()
    except PlanError as exc:
        raise InputError(str(exc)) from None
    except (sqlite3.DatabaseError, zlib.error, KeyError, ValueError) as exc:
        raise InputError(f"plan: unreadable route database ({exc}) (got {plan_db!r})") from None
    if fmt == "json":
        emit_json(rep)
        return
    red = rep["reduction"]
    title = (f"{rep['scenario']}: {rep['user_terminals']} user terminals, "
             f"{rep['slices']} slices of {rep['slice_s']:g} s, "
             f"configured {rep['configured']}; inter-SNO reduction "
             + ("n/a (owner has none)" if red is None else f"{100 * red:.1f} %"))
    cols = ["policy", "intra/user-h", "inter/user-h", "intra", "inter", "re-assoc", "at home"]
    rows = [[p, f"{r['intra_per_user_hour']:.2f}", f"{r['inter_per_user_hour']:.2f}", r["intra"], r["inter"],
             r["reassociations"], f"{100 * r['home_share']:.1f} %"]
            for p, r in ((p, rep[p]) for p in ("owner", "dynamic"))]
    emit_table(title, cols, rows)
    if per_ut:
        emit_table(None, ["ut", "home", "own intra", "own inter", "dyn intra", "dyn inter", "served h"],
                   [[u["ut"], u["home"], u["owner"]["intra"], u["owner"]["inter"], u["dynamic"]["intra"],
                     u["dynamic"]["inter"], u["served_hours"]] for u in rep["per_ut"]])


@click.group()
def experiment() -> None:
    """Scripted inter-SNO handover experiments: check or run a file (experiments/*.yaml), or measure handovers."""


@experiment.command("check")
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option("--plan", "plan_db", type=click.Path(dir_okay=False), default=None,
              help="Route database to check node names, times and slices against (default: structure only).")
@format_option
def experiment_check(experiment_file: str, plan_db: str | None, fmt: str) -> None:
    """Validate EXPERIMENT_FILE: unknown keys, events or nodes are one error line, exit 2; nothing is started.
    Refuses everything ``experiment run`` refuses (what the runner supports, the scenario file it names)."""
    from pathlib import Path

    from emu.errors import InputError, PlanError
    from emu.experiment.runner import scenario_path, supported
    from emu.experiment.spec import NodeCatalog, load_experiment
    from emu.plan.db import PlanDB

    nodes = None
    if plan_db is not None:
        try:
            db = PlanDB(plan_db)
            nodes = NodeCatalog.from_plan(db)
            db.close()
        except PlanError as exc:
            raise InputError(f"--plan: {exc}") from None
    exp = load_experiment(experiment_file, nodes)
    supported(exp, nodes)
    scenario_path(Path(experiment_file), exp)
    summary = {"experiment": exp.name, "valid": True, "checked_against_plan": plan_db is not None,
               "procedure": exp.procedure, "association": exp.association, "repeats": exp.repeats,
               "duration_s": exp.duration_s, "probes": len(exp.traffic), "events": len(exp.events),
               "measurements": list(exp.measurements)}
    if fmt == "json":
        emit_json(summary)
    else:
        from emu.cli.common import emit_kv

        emit_kv(f"experiment {exp.name}: valid", {k: v for k, v in summary.items() if k != "experiment"})


@experiment.command("handover")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--procedure", default="baseline", show_default=True,
              help="baseline | proactive (spec §5.1 / §5) | bgp (the BGP overlay: GS changes, docs/bgp.md).")
@click.option("--association", default="owner", show_default=True, help="owner | dynamic (stored in the plan).")
@click.option("--repeat", type=int, default=3, show_default=True, help="Inter-SNO handovers of the plan to measure.")
@click.option("--speed", type=float, default=10.0, show_default=True, help="Clock speed-up factor.")
@click.option("--start-slice", type=int, default=None, help="Measure handovers after this slice (default: the first).")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), default=None, help="Use this plan.")
@click.option("--latency-ms", type=float, default=20.0, show_default=True, help="Terrestrial latency between cores.")
@click.option("--notice-ms", type=float, default=150.0, show_default=True, help="Proactive: plan notice.")
@click.option("--interval-ms", type=float, default=10.0, show_default=True, help="Probe spacing (<= 10 ms).")
@click.option("--probe", default="udp", show_default=True,
              help="udp (datagrams to the Internet's echo) | icmp (echo requests; not with --procedure bgp).")
@click.option("--timers", default=None, help="bgp: aggressive | default (default: the scenario's bgp.timers).")
@format_option
def experiment_handover(scenario: str, procedure: str, association: str, repeat: int, speed: float,
                        start_slice: int | None, plan_path: str | None, latency_ms: float, notice_ms: float,
                        interval_ms: float, probe: str, timers: str | None, fmt: str) -> None:
    """Probe a device's UDP stream to the Internet through the plan's inter-SNO handovers in the live emulator;
    with --procedure bgp a stream from the Internet to each moving UT's MNP through its GS changes (BGP overlay)."""
    from emu.cli.dataplane_cmds import require_root
    from emu.errors import InputError
    from emu.experiment import handover as H

    H.check_args(procedure, association, repeat, speed, interval_ms)
    if probe not in H.PROBES or (procedure == H.BGP and probe != "udp"):
        raise InputError(f"--probe: must be one of {', '.join(H.PROBES)}, udp with --procedure bgp (got {probe!r})")
    if procedure == H.BGP:
        from emu.experiment.bgp_handover import check_timers

        check_timers(timers)
    elif timers is not None:
        raise InputError(f"--timers: only with --procedure bgp (got {timers!r})")
    require_root()
    out = H.run(scenario, procedure, association, repeat, speed, start_slice, plan_path, latency_ms, notice_ms,
                interval_ms, progress=lambda msg: click.echo(msg, err=True), timers=timers, probe=probe)
    if fmt == "json":
        emit_json(out)
    elif procedure == H.BGP:
        c = out["convergence"]
        emit_table(f"experiment handover: bgp, timers {out['timers']} (median {out['median_interruption_ms']} ms, "
                   f"p90 {out['p90_interruption_ms']} ms, lost {out['lost_packets']}; BGP convergence median "
                   f"{c['median_ms']} ms, p90 {c['p90_ms']} ms)",
                   ["slice", "UT", "kind", "from", "to", "interruption ms", "lost", "convergence ms"],
                   [[h["k"], h["ut"], h["kind"], h["from_gs"], h["to_gs"], h["interruption_ms"], h["lost_packets"],
                     h["convergence_ms"]] for h in out["handovers"]])
    else:
        emit_table(f"experiment handover: {procedure}, {association} (median {out['median_interruption_ms']} ms, "
                   f"p90 {out['p90_interruption_ms']} ms, lost {out['lost_packets']})",
                   ["slice", "UT", "kind", "from", "to", "interruption ms", "lost", "registered ms"],
                   [[h["k"], h["ut"], h["kind"], h["from_core"], h["to_core"], h["interruption_ms"], h["lost_packets"],
                     h["registered_ms"]] for h in out["handovers"]])


@experiment.command("run")
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Results folder (default: the file's output, else ./results-NAME).")
@format_option
def experiment_run(experiment_file: str, out_dir: str | None, fmt: str) -> None:
    """Run EXPERIMENT_FILE in the live emulator (both procedures): CSV + JSON + PNG into its output folder."""
    from pathlib import Path

    from emu.cli.dataplane_cmds import require_root
    from emu.experiment.runner import run_file
    from emu.experiment.spec import load_experiment

    load_experiment(experiment_file)  # the file's own structure first: a bad file never needs root
    require_root()
    res = run_file(experiment_file, Path(out_dir) if out_dir else None, progress=lambda m: click.echo(m, err=True))
    from emu.experiment.runner import EVENT_COLS, event_row, event_summary

    rows = {p: {k: r[k] for k in ("median_interruption_ms", "p90_interruption_ms", "lost_packets",
                                   "handovers_measured")} for p, r in res["runs"].items()}
    if fmt == "json":
        runs = {p: {**rows[p], "hook_ms": r.get("hook_ms"), **({"events": [event_summary(e) for e in r["events"]]}
                                                                 if "events" in r else {})}
                for p, r in res["runs"].items()}
        emit_json({"experiment": res["experiment"], "output": res["output"], "association": res["association"],
                   "runs": runs, "plan_handovers": res["plan_handovers"]})
    else:
        emit_table(f"experiment {res['experiment']} ({res['association']}): results in {res['output']}",
                   ["procedure", "median ms", "p90 ms", "lost", "measured"],
                   [[p, *r.values()] for p, r in rows.items()])
        evs = [[p, *event_row(p, e)[1:]] for p, r in res["runs"].items() for e in r.get("events", [])]
        if evs:
            emit_table("events", EVENT_COLS, evs)


def register(cli: click.Group) -> None:
    cli.add_command(handovers)
    cli.add_command(experiment)
