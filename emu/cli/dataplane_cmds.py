"""``leo-emu up``, ``down`` and ``doctor``-adjacent checks: the live constellation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click

from emu.cli.common import emit_json, emit_kv, format_option
from emu.errors import DataplaneError, InputError, PrivilegeError


def require_root() -> None:
    if os.geteuid() != 0:
        raise PrivilegeError("this command needs root (CAP_NET_ADMIN) to create namespaces: run it with sudo")


def _progress_cb():
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console(stderr=True)
    # redrawn by cb itself, not by rich's refresh thread: the build forks its namespace maker only where the
    # process has no other thread (emu.dataplane.netns.create_behind)
    prog = Progress(TextColumn("{task.description:<24}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    console=console, transient=True, disable=not console.is_terminal, auto_refresh=False)
    tasks: dict[str, int] = {}

    def cb(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=max(total, 1))
        prog.update(tasks[stage], completed=done, total=max(total, 1))
        prog.refresh()

    return prog, cb, console


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), default=None,
              help="Use this plan (route database) instead of planning SCENARIO now.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Clock speed-up factor.")
@click.option("--slices", type=int, default=None, help="Run only the first N slices.")
@click.option("--start-slice", type=int, default=0, show_default=True, help="Begin at this slice of the plan.")
@click.option("--detach", is_flag=True, help="Leave a background controller running; stop it with `leo-emu down`.")
@click.option("--trust", multiple=True, help="Also accept plans signed by this public key (hex or .pub file); "
                                             "the ground-control key is always trusted. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Print what would be created (namespaces, links, tables per node, "
              "processes) and create nothing; no root needed.")
@format_option
def up(scenario: str, plan_path: str | None, speed: float, slices: int | None, start_slice: int, detach: bool,
       trust: tuple[str, ...], dry_run: bool, fmt: str) -> None:
    """Build SCENARIO as one namespace per node and keep it in step with the sky."""
    if dry_run:
        _dry_run(scenario, plan_path, slices, start_slice, fmt)
        return
    require_root()
    from emu.dataplane import cleanup
    from emu.cli.plan_cmds import check_up_arguments
    from emu.dataplane.controller import Controller
    from emu.dataplane.procs import interrupt_on
    from emu.dataplane.state import Run

    # every argument, the scenario and the plan (signer, seal, digest) are checked before anything exists
    loaded, trust = check_up_arguments(scenario, plan_path, speed, slices, start_slice, trust)
    run = Run.create()
    prog, cb, console = _progress_cb()
    try:
        if plan_path is None:
            from emu.cli.plan_cmds import build_plan

            plan_file = run.dir / "plan.db"
            console.print(f"planning {loaded.scenario.name} ...", style="dim")
            build_plan(scenario, plan_file, None if slices is None else start_slice + slices, fmt=fmt)
        else:
            plan_file = Path(plan_path).resolve()
        if detach:
            _detach(run, plan_file, speed, slices, start_slice, fmt, console, trust)
            return
        run.record_pid(os.getpid(), "controller (foreground)")
        interrupt_on()  # closing the terminal or `kill` tears down like Ctrl-C does
        ctl = Controller(run, plan_file, speed, slices, progress=cb, scenario_name=loaded.scenario.name,
                         start_slice=start_slice, trust=trust, scenario=loaded.scenario)
        try:
            with prog:
                build_s = ctl.build()
            _report_up(run, ctl.status, build_s, fmt, console)
            console.print("running: Ctrl-C tears everything down", style="bold")
            try:
                ctl.loop()
            except KeyboardInterrupt:
                pass
        finally:
            ctl.close()
    except BaseException:
        summary = cleanup.teardown(run)  # idempotent: also after _detach tore a failed build down
        console.print(f"torn down run {run.run_id}: {summary['namespaces_removed']} namespaces removed",
                      style="dim")
        raise
    summary = cleanup.teardown(run)
    console.print(f"torn down run {run.run_id}: {summary['namespaces_removed']} namespaces removed", style="dim")


def _dry_run(scenario: str, plan_path: str | None, slices: int | None, start_slice: int, fmt: str) -> None:
    """``up --dry-run``: the desired state of the start slice, listed instead of created."""
    import tempfile

    from emu.dataplane.controller import check_plan
    from emu.dataplane.dryrun import PLACEHOLDER_PREFIX, describe
    from emu.dataplane.model import Model
    from emu.dataplane.runconfig import RunConfig
    from emu.scenario.load import load_scenario

    if slices is not None and slices < 1:
        raise InputError(f"--slices: must be >= 1 (got {slices})")
    if start_slice < 0:
        raise InputError(f"--start-slice: must be >= 0 (got {start_slice})")
    loaded = load_scenario(scenario)
    with tempfile.TemporaryDirectory(prefix="leo-emu-dry-") as tmp:
        if plan_path is None:  # only the slices the preview needs: the start slice and the next
            from emu.cli.plan_cmds import build_plan

            plan_file = Path(tmp) / "plan.db"
            build_plan(scenario, plan_file, start_slice + (slices or 2), fmt="json")
        else:
            plan_file = Path(plan_path).resolve()
        db = check_plan(plan_file)
        if db.meta.get("scenario_digest") != loaded.digest:
            raise InputError(f"--plan: made from a different scenario than {scenario} (got {plan_path!r})")
        if not 0 <= start_slice < db.n_slices:
            raise InputError(f"--start-slice: must be 0..{db.n_slices - 1} (got {start_slice})")
        cfg = RunConfig.from_scenario(loaded.scenario)  # no kernel probe: auto is shown as its fallback
        m = Model.from_plan(db, PLACEHOLDER_PREFIX, None if slices is None else start_slice + slices, cfg)
        rec = describe(m, start_slice, plan=str(plan_path or "(planned for the preview)"),
                       scenario=loaded.scenario.name)
        db.close()
    if fmt == "json":
        emit_json(rec)
        return
    _emit_dry_run(rec)


def _emit_dry_run(rec: dict) -> None:
    from emu.cli.common import emit_table

    emit_kv(f"dry run: {rec['scenario']} from slice {rec['start_slice']} (nothing created)", {
        "namespaces": f"{len(rec['namespaces'])} ({rec['namespace_prefix']}<node>)",
        "links": ", ".join(f"{k} {v}" for k, v in rec["links"]["counts"].items()),
        "grid ISLs up": rec["links"]["grid_up"],
        "satellite table": f"{rec['satellite_tables']['table']} ({rec['satellite_tables']['routes_total']} routes, "
                           f"max {rec['satellite_tables']['routes_max']} per satellite)",
        "rules": ", ".join(f"table {r['table']} pref {r['priority']}" for r in rec["satellite_tables"]["rules"]),
        "slice switch": (f"by packet mark {rec['satellite_tables']['switch']['mark']} "
                         f"({len(rec['satellite_tables']['switch']['fixed_rules'])} fixed rules, nftables armed for "
                         "each boundary; the rules above: unmarked lookups)"
                         if rec["satellite_tables"]["switch"]["by"] == "mark" else "by rules"),
        "tunnel": f"{rec['tunnel']['mode']} ({rec['tunnel']['ifname']}) {rec['tunnel']['note']}".strip(),
    })
    emit_table("namespaces per kind", ["kind", "count"], [[k, v] for k, v in rec["namespace_counts"].items()])
    shown: dict[str, int] = {}
    rows = []
    for name, n in rec["nodes"].items():
        if shown.get(n["kind"], 0) >= 2:
            continue
        shown[n["kind"]] = shown.get(n["kind"], 0) + 1
        rows.append([name, n["kind"], " ".join(n["interfaces"]),
                     ", ".join(f"{t}: {c}" for t, c in n["tables"].items()), len(n["addresses"])])
    emit_table("nodes (two of each kind; --format json lists all)", ["node", "kind", "interfaces",
                                                                     "tables (routes)", "addresses"], rows)
    emit_table("processes", ["node", "what", "argv"],
               [[p["node"], p["what"] + (f" ({p['note']})" if p.get("note") else ""), " ".join(p["argv"])]
                for p in rec["processes"]])


@click.command()
@click.argument("plan_path", metavar="PLAN.db", type=click.Path(dir_okay=False))
@click.option("--slice", "k", type=int, default=0, show_default=True, help="The slice to export.")
@click.option("--format", "fmt", type=click.Choice(["graphml", "dot"]), default="graphml", show_default=True,
              help="GraphML (networkx, Gephi, yEd) or Graphviz DOT.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write here (default stdout).")
def graph(plan_path: str, k: int, fmt: str, output: str | None) -> None:
    """Export one slice's data-plane topology: nodes, and the links up in that slice with their interfaces."""
    from emu.dataplane.controller import check_plan
    from emu.dataplane.graph import slice_graph, to_dot, to_graphml
    from emu.dataplane.model import Model

    if not Path(plan_path).is_file():
        raise InputError(f"PLAN.db: no such file (got {plan_path!r})")
    db = check_plan(Path(plan_path).resolve())
    if not 0 <= k < db.n_slices:
        raise InputError(f"--slice: must be 0..{db.n_slices - 1} (got {k})")
    m = Model.from_plan(db, "g", k + 1)
    nodes, edges = slice_graph(m, k)
    name = f"{db.meta.get('scenario_name', 'plan')} slice {k}"
    text = to_graphml(nodes, edges, name) if fmt == "graphml" else to_dot(nodes, edges, name)
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)


def _detach(run, plan_file: Path, speed: float, slices: int | None, start_slice: int, fmt: str, console,
            trust: tuple[str, ...] = ()) -> None:
    from emu.dataplane import cleanup

    argv = [sys.executable, "-m", "emu.dataplane.controller", "--run", run.run_id, "--root", str(run.root),
            "--plan", str(plan_file), "--speed", str(speed), "--start-slice", str(start_slice)]
    if slices is not None:
        argv += ["--slices", str(slices)]
    for t in trust:
        argv += ["--trust", t]
    p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, close_fds=True)
    run.record_pid(p.pid, "controller")
    console.print(f"run {run.run_id}: building (controller pid {p.pid}) ...", style="dim")
    while True:
        st = run.read_json("status.json")
        if st.get("state") in ("running", "finished"):
            _report_up(run, st, st.get("build_s"), fmt, console)
            return
        if st.get("state") == "failed" or p.poll() is not None:
            err = st.get("error") or f"controller exited with code {p.poll()}"
            cleanup.teardown(run)
            raise DataplaneError("up", None, None, err)
        time.sleep(0.1)


def _report_up(run, status: dict, build_s, fmt: str, console) -> None:
    info = run.read_json("run.json")
    summary = {"run": run.run_id, "state": status.get("state"), "build_s": build_s,
               "namespaces": len(info.get("nodes", [])), "slices": info.get("n_slices"),
               "speed": info.get("speed"), "degradations": status.get("degradations", [])}
    if fmt == "json":
        emit_json(summary)
    else:
        emit_kv(f"run {run.run_id} is up", {k: v for k, v in summary.items() if k != "degradations"})
        for d in summary["degradations"]:
            console.print(f"degraded: {d}", style="yellow")


@click.command()
@click.option("--all", "all_runs", is_flag=True, help="Remove every leo-emu run on this machine (nothing else).")
@click.option("--run", "run_id", default=None, help="The run to remove (default: the only one).")
@format_option
def down(all_runs: bool, run_id: str | None, fmt: str) -> None:
    """Remove a run: exactly the namespaces and processes its record names (idempotent)."""
    require_root()
    from emu.dataplane import cleanup
    from emu.dataplane.state import find_run, list_runs

    runs = list_runs() if all_runs else []
    if not all_runs:
        if not list_runs() and run_id is None:
            runs = []
        else:
            runs = [find_run(run_id)]
    results = [cleanup.teardown(r) for r in runs]
    if fmt == "json":
        emit_json({"removed": results})
    elif not results:
        click.echo("no leo-emu run to remove")
    else:
        for r in results:
            click.echo(f"run {r['run']}: {r['namespaces_removed']} namespaces removed, "
                       f"{r['processes_killed']} processes stopped in {r['teardown_s']} s")


def register(cli: click.Group) -> None:
    cli.add_command(up)
    cli.add_command(down)
    cli.add_command(graph)
