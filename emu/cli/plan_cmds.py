"""``leo-emu plan``, ``route show``, ``path``, ``verify``: the ground control unit's tools."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from emu.cli.common import emit_json, emit_kv, emit_table, format_option
from emu.errors import InputError, VerifyError


def _progress(fmt: str):
    """A rich progress bar on stderr for people; nothing for JSON consumers piping stdout."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    prog = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
    return prog


def build_plan(scenario: str, out: Path, slices: int | None, keep_key: bool, fmt: str) -> dict:
    from emu.plan.db import write_plan
    from emu.plan.planner import make_plan
    from emu.plan.stretch import summarise
    from emu.scenario.load import load_scenario

    t0 = time.perf_counter()
    loaded = load_scenario(scenario)
    if slices is not None and slices < 1:
        raise InputError(f"--slices: must be >= 1 (got {slices})")
    with _progress(fmt) as prog:
        task = prog.add_task("planning slices", total=slices or 1)

        def cb(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        plan = make_plan(loaded, slices, progress=cb)
    key_path = write_plan(plan, out, keep_key=keep_key)
    sizes = np.concatenate([s.tables.sizes for s in plan.slices])
    raw = np.concatenate([s.raw_entries for s in plan.slices])
    summary = {
        "plan": str(out),
        "scenario": loaded.scenario.name,
        "slices": len(plan.slices),
        "satellites": plan.series.constellation.size,
        "ground_nodes": plan.series.ground.size,
        "destinations": plan.destinations_count,
        "table_entries_total": int(sizes.sum()),
        "table_entries_unaggregated_total": int(raw.sum()),
        "table_size": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "table_size_unaggregated": {"min": int(raw.min()), "median": float(np.median(raw)), "max": int(raw.max())},
        "handovers": len(plan.attach.handovers()),
        "bindings_moved": plan.bind.moved,
        "disconnected_pairs": int(sum(s.disconnected for s in plan.slices)),
        "attach_policy": loaded.scenario.routing.attach_policy,
        "stretch": summarise([s.pairs for s in plan.slices if s.pairs is not None], plan.series.ground.names),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    if keep_key:
        summary["private_key"] = str(key_path)
    return summary


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), required=True, help="Route database to write.")
@click.option("--slices", type=int, default=None, help="Plan only the first N slices (default: the scenario's duration).")
@click.option("--keep-key", is_flag=True, help="Keep the signing key beside the plan (mode 0600); default: discard it.")
@format_option
def plan(scenario: str, out: str, slices: int | None, keep_key: bool, fmt: str) -> None:
    """Plan SCENARIO: routing tables, attachments, GS choices for every slice, signed, into one SQLite file."""
    summary = build_plan(scenario, Path(out), slices, keep_key, fmt)
    if fmt == "json":
        emit_json(summary)
    else:
        flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
        flat["table_size (min/median/max)"] = "{min}/{median}/{max}".format(**summary["table_size"])
        flat["unaggregated (min/median/max)"] = "{min}/{median}/{max}".format(**summary["table_size_unaggregated"])
        flat["stretch (median/p99/max)"] = "{median}/{p99}/{max}".format(**summary["stretch"])
        emit_kv(f"plan written: {out}", flat)
        pairs = summary["stretch"].get("pairs", {})
        if pairs:
            emit_table("stretch per (UT, target) pair: planned delay over the free-choice optimum",
                       ["pair", "samples", "median", "max"],
                       [[p, v["samples"], v["median"], v["max"]] for p, v in sorted(pairs.items())])


@click.group()
def route() -> None:
    """Look at routing tables in a plan."""


@route.command("show")
@click.argument("plan_db", type=click.Path(dir_okay=False))
@click.option("--sat", "sat", required=True, help="Satellite name (sat0-3-7) or semantic address.")
@click.option("--slice", "k", type=int, default=0, show_default=True)
@format_option
def route_show(plan_db: str, sat: str, k: int, fmt: str) -> None:
    """The directional routing table of one satellite in one slice."""
    from emu.plan.db import PlanDB
    from emu.plan.path import route_rows

    db = PlanDB(plan_db)
    s = db.sat_index(sat)
    rows = route_rows(db, s, k)
    if fmt == "json":
        emit_json({"satellite": db.sat_names[s], "slice": k, "entries": rows})
        return
    out = []
    for r in rows:
        paths = " ".join(
            f"{p['direction']}" + (f"->{p['next_hop']}" if p.get("next_hop") else "")
            + (f" (w {p['weight']})" if "weight" in p else (f" ({p['priority']})" if "priority" in p else ""))
            for p in r["paths"])
        out.append([r["destination"], r["region"], r["kind"], paths])
    emit_table(f"{db.sat_names[s]}, slice {k}: {len(rows)} entries", ["destination GRC", "region (H3)", "kind",
                                                                      "egress paths (next hop, attributes)"], out)


@click.command()
@click.argument("plan_db", type=click.Path(dir_okay=False))
@click.argument("src")
@click.argument("dst")
@click.option("--slice", "k", type=int, default=0, show_default=True)
@click.option("--series", is_flag=True, help="Every slice: a one-way-delay-over-time trace.")
@format_option
def path(plan_db: str, src: str, dst: str, k: int, series: bool, fmt: str) -> None:
    """The plan's path from SRC to DST: hops with egress direction, one-way delay, destination GRC."""
    from emu.plan.db import PlanDB
    from emu.plan.path import PathFinder

    db = PlanDB(plan_db)
    pf = PathFinder(db)
    if series:
        res = [pf.path(src, dst, i) for i in range(db.n_slices)]
        if fmt == "json":
            emit_json({"src": src, "dst": dst, "series": res})
        else:
            emit_table(f"{src} -> {dst}", ["slice", "time_s", "one_way_delay_ms", "hops", "optimum_ms", "stretch"],
                       [[r["slice"], r["time_s"], r["one_way_delay_ms"] if r["reachable"] else r["reason"],
                         len(r["hops"]), r.get("optimum_ms"), r.get("stretch")] for r in res])
        return
    r = pf.path(src, dst, k)
    if fmt == "json":
        emit_json(r)
        return
    emit_table(f"{src} -> {dst}, slice {k}: " + (f"{r['one_way_delay_ms']} ms one way, dst GRC {r['grc_dst']}"
                                                 if r["reachable"] else f"unreachable ({r['reason']})"),
               ["hop", "node", "egress", "delay_ms"],
               [[i, h["node"], h["egress"], round(h["delay_ms"], 3)] for i, h in enumerate(r["hops"])])


@click.command()
@click.argument("plan_db", type=click.Path(dir_okay=False))
@click.option("--signatures-only", is_flag=True, help="Check signatures, skip walking the tables.")
@format_option
def verify(plan_db: str, signatures_only: bool, fmt: str) -> None:
    """Check every signature, then walk every table from every satellite to every destination."""
    from emu.plan.db import PlanDB
    from emu.plan.verify import verify as run_verify

    t0 = time.perf_counter()
    with _progress(fmt) as prog:
        task = prog.add_task("verifying slices", total=1)
        rep = run_verify(PlanDB(plan_db), walk=not signatures_only,
                         progress=lambda done, total: prog.update(task, completed=done, total=total))
    result = {"ok": rep.ok, "slices": rep.slices, "pairs_checked": rep.pairs_checked,
              "disconnected_pairs": rep.disconnected, "failures": rep.failures,
              "wall_s": round(time.perf_counter() - t0, 3)}
    if fmt == "json":
        emit_json(result)
    else:
        emit_kv(f"verify {plan_db}: {'OK' if rep.ok else 'FAILED'}",
                {k: v for k, v in result.items() if k != "failures"})
        for f in rep.failures:
            click.echo(f"  {f}", err=True)
    if not rep.ok:
        raise VerifyError(f"verify failed: {rep.failures[0]}")


def register(cli: click.Group) -> None:
    cli.add_command(plan)
    cli.add_command(route)
    cli.add_command(path)
    cli.add_command(verify)
