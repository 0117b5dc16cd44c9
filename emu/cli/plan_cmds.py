"""``leo-emu plan``, ``keygen``, ``route show``, ``path``, ``verify``: the ground control unit's tools."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from emu.cli.common import emit_json, emit_kv, emit_table, format_option
from emu.errors import InputError, VerifyError, echo


def _progress(fmt: str):
    """A rich progress bar on stderr for people; nothing for JSON consumers piping stdout."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    prog = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
    return prog


def build_plan(scenario: str, out: Path, slices: int | None, fmt: str = "table",
               key: str | Path | None = None) -> dict:
    """Plan ``scenario`` into ``out``, signed with the key file ``key`` or the ground-control key
    (:mod:`emu.plan.trust`)."""
    from emu.plan.db import PlanWriter
    from emu.plan.planner import make_plan
    from emu.plan.sign import public_bytes
    from emu.plan.trust import fingerprint, ground_control_key, load_private_key
    from emu.plan.stretch import summarise
    from emu.scenario.load import load_scenario

    out = Path(out)
    if not out.parent.is_dir():  # before minutes of planning
        raise InputError(f"--output: no such folder (got {echo(str(out.parent))})")
    if out.is_dir():
        raise InputError(f"--output: is a folder, give a file name (got {echo(str(out))})")
    if slices is not None and slices < 1:
        raise InputError(f"--slices: must be >= 1 (got {slices})")
    loaded = load_scenario(scenario)
    total = scenario_slices(loaded)
    if slices is not None and slices > total:
        raise InputError(f"--slices: must be 1..{total}, the scenario's slices (got {slices})")
    # last of the checks: the ground-control key is made on first use, never for a refused command
    signing_key = load_private_key(key) if key is not None else ground_control_key()
    t0 = time.perf_counter()
    writer = PlanWriter(out, signing_key)  # the database is written while the slices are planned
    try:
        with _progress(fmt) as prog:
            task = prog.add_task("planning slices", total=slices or 1)

            def cb(done: int, total: int) -> None:
                prog.update(task, completed=done, total=total)

            plan = make_plan(loaded, slices, progress=cb, before_slices=writer.start, head=writer.start_early)
    except BaseException:
        writer.abort()
        raise
    writer.finish(plan)
    sizes = np.concatenate([s.sizes for s in plan.slices])
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
        "bindings_moved": plan.bind.moved,  # bindings displaced to a neighbouring cell to stay unique
        "bindings_changed": int((plan.bind.grc[1:] != plan.bind.grc[:-1]).sum()),  # re-bound from slice to slice
        "disconnected_pairs": int(sum(s.disconnected for s in plan.slices)),
        "signed_by": fingerprint(public_bytes(signing_key)),
        "attach_policy": loaded.scenario.routing.attach_policy,
        "stretch": summarise([s.pairs for s in plan.slices if s.pairs is not None], plan.series.ground.names),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    return summary


def scenario_slices(loaded) -> int:
    """How many slices the scenario's duration holds."""
    from emu.orbit.constellation import build_constellation, slice_times

    return len(slice_times(loaded, build_constellation(loaded)))


def check_up_arguments(scenario: str, plan_path: str | None, speed: float, slices: int | None, start_slice: int,
                       trust: tuple[str, ...] = ()):
    """Every argument of ``up`` checked before anything is created; returns (loaded scenario, trusted keys as hex).

    With ``--plan``: the plan's structure, signer, seal and scenario digest (:func:`emu.plan.trust.check_before_up`)
    and the start slice against it; without: the start slice against the scenario's duration and that the
    ground-control key can be used."""
    import math

    from emu.plan.trust import check_before_up, ground_control_key, load_public_key
    from emu.scenario.load import load_scenario

    if not (math.isfinite(speed) and speed > 0):
        raise InputError(f"--speed: must be a finite number > 0 (got {speed})")
    if slices is not None and slices < 1:
        raise InputError(f"--slices: must be >= 1 (got {slices})")
    if start_slice < 0:
        raise InputError(f"--start-slice: must be >= 0 (got {start_slice})")
    trusted = tuple(load_public_key(t).hex() for t in trust)
    loaded = load_scenario(scenario)
    if plan_path is not None:
        db = check_before_up(Path(plan_path).resolve(), trusted, loaded.digest)
        n = db.n_slices
        db.close()
        what = "the plan's"
    else:
        n = scenario_slices(loaded)
        what = "the scenario's"
    if start_slice >= n:
        raise InputError(f"--start-slice: must be 0..{n - 1}, {what} slices (got {start_slice})")
    if slices is not None and start_slice + slices > n:
        raise InputError(f"--slices: at most {n - start_slice} from slice {start_slice}, {what} {n} slices "
                         f"(got {slices})")
    if plan_path is None:
        ground_control_key()  # `up` signs its own plan with it: fail now (not after a run exists) if it cannot be made
    return loaded, trusted


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), required=True, help="Route database to write.")
@click.option("--slices", type=int, default=None, help="Plan only the first N slices (default: the scenario's duration).")
@click.option("--key", "key", type=click.Path(dir_okay=False), default=None,
              help="Sign with this private key (from `leo-emu keygen`); default: the ground-control key "
                   "($LEOEMU_GC_KEY, else /var/lib/leo-emu/ground-control.key, made on first use).")
@format_option
def plan(scenario: str, out: str, slices: int | None, key: str | None, fmt: str) -> None:
    """Plan SCENARIO: routing tables, attachments, GS choices for every slice, signed, into one SQLite file."""
    summary = build_plan(scenario, Path(out), slices, fmt=fmt, key=key)
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


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace a key pair that exists at PATH.")
@format_option
def keygen(path: str, force: bool, fmt: str) -> None:
    """Write a new Ed25519 signing key pair: PATH (private, mode 0600) and PATH.pub (public, hex).

    Sign plans with it (`leo-emu plan ... --key PATH`); let `up` accept them with `--trust PATH.pub`."""
    from emu.plan.sign import public_bytes
    from emu.plan.trust import fingerprint, keygen as make_pair, load_private_key

    priv, pub = make_pair(path, force=force)
    res = {"private_key": str(priv), "public_key": str(pub),
           "fingerprint": fingerprint(public_bytes(load_private_key(priv)))}
    if fmt == "json":
        emit_json(res)
    else:
        emit_kv("key pair written", res)


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

    from emu.plan.trust import fingerprint

    t0 = time.perf_counter()
    db = PlanDB(plan_db)
    with _progress(fmt) as prog:
        task = prog.add_task("verifying slices", total=1)
        rep = run_verify(db, walk=not signatures_only,
                         progress=lambda done, total: prog.update(task, completed=done, total=total))
    result = {"ok": rep.ok, "slices": rep.slices, "pairs_checked": rep.pairs_checked,
              "disconnected_pairs": rep.disconnected, "failures": rep.failures,
              "signed_by": fingerprint(db.public_key), "signer_trusted_by_up": _trusted(db.public_key),
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


def _trusted(public: bytes) -> bool | None:
    """Whether `up` on this machine would trust the signer (None: the ground-control key is unreadable)."""
    from emu.plan.trust import trusted_keys

    try:
        return public in trusted_keys()
    except InputError:
        return None


def register(cli: click.Group) -> None:
    cli.add_command(plan)
    cli.add_command(keygen)
    cli.add_command(route)
    cli.add_command(path)
    cli.add_command(verify)
