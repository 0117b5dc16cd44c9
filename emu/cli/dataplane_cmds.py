"""``leo-emu up``, ``down`` and ``doctor``-adjacent checks: the live constellation."""

from __future__ import annotations

import os
import signal
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
    prog = Progress(TextColumn("{task.description:<24}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    console=console, transient=True, disable=not console.is_terminal)
    tasks: dict[str, int] = {}

    def cb(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=max(total, 1))
        prog.update(tasks[stage], completed=done, total=max(total, 1))

    return prog, cb, console


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), default=None,
              help="Use this plan (route database) instead of planning SCENARIO now.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Clock speed-up factor.")
@click.option("--slices", type=int, default=None, help="Run only the first N slices.")
@click.option("--start-slice", type=int, default=0, show_default=True, help="Begin at this slice of the plan.")
@click.option("--detach", is_flag=True, help="Leave a background controller running; stop it with `leo-emu down`.")
@format_option
def up(scenario: str, plan_path: str | None, speed: float, slices: int | None, start_slice: int, detach: bool,
       fmt: str) -> None:
    """Build SCENARIO as one namespace per node and keep it in step with the sky."""
    require_root()
    from emu.dataplane import cleanup
    from emu.dataplane.controller import Controller, check_plan
    from emu.dataplane.state import Run

    if speed <= 0:
        raise InputError(f"--speed: must be > 0 (got {speed})")
    if slices is not None and slices < 1:
        raise InputError(f"--slices: must be >= 1 (got {slices})")
    from emu.scenario.load import load_scenario

    loaded = load_scenario(scenario)  # bad input fails here, before anything exists
    if plan_path is not None:
        db = check_plan(Path(plan_path).resolve())  # an unverified plan is refused before anything exists
        if db.meta.get("scenario_digest") != loaded.digest:
            raise InputError(f"--plan: made from a different scenario than {scenario} (plan of "
                             f"{db.meta.get('scenario_name')!r}, digest {db.meta.get('scenario_digest', '')[:12]}); "
                             f"re-plan it (got {plan_path!r})")
    run = Run.create()
    prog, cb, console = _progress_cb()
    try:
        if plan_path is None:
            from emu.cli.plan_cmds import build_plan

            plan_file = run.dir / "plan.db"
            console.print(f"planning {loaded.scenario.name} ...", style="dim")
            build_plan(scenario, plan_file, None if slices is None else start_slice + slices, keep_key=False,
                       fmt=fmt)
        else:
            plan_file = Path(plan_path).resolve()
        if detach:
            _detach(run, plan_file, speed, slices, start_slice, fmt, console)
            return
        run.record_pid(os.getpid(), "controller (foreground)")
        # closing the terminal or `kill` tears down like Ctrl-C does
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        ctl = Controller(run, plan_file, speed, slices, progress=cb, scenario_name=loaded.scenario.name,
                         start_slice=start_slice, scenario=loaded.scenario)
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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _detach(run, plan_file: Path, speed: float, slices: int | None, start_slice: int, fmt: str, console) -> None:
    from emu.dataplane import cleanup

    argv = [sys.executable, "-m", "emu.dataplane.controller", "--run", run.run_id, "--root", str(run.root),
            "--plan", str(plan_file), "--speed", str(speed), "--start-slice", str(start_slice)]
    if slices is not None:
        argv += ["--slices", str(slices)]
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
