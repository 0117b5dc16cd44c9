"""``leo-emu validate`` and ``leo-emu snapshot``: look at a scenario before running it."""

from __future__ import annotations

import click
import numpy as np

from emu.cli.common import emit_json, emit_kv, emit_table, format_option
from emu.orbit.constellation import DIRECTIONS
from emu.scenario.load import load_scenario


def scenario_summary(loaded, series=None) -> dict:
    sc = loaded.scenario
    from emu.orbit.constellation import build_constellation, slice_times

    const = series.constellation if series else build_constellation(loaded)
    n_slices = len(series) if series else len(slice_times(loaded, const))
    return {
        "name": sc.name,
        "file": str(loaded.path),
        "digest": loaded.digest[:16],
        "shells": len(sc.shells),
        "planes": sum(int(s.planes) for s in sc.shells),
        "satellites": const.size,
        "operators": len(sc.operators),
        "ground_stations": len(sc.ground_stations),
        "user_terminals": len(sc.user_terminals),
        "user_devices": len(sc.user_terminals),
        "internet": sc.internet.name,
        "nodes": const.size + 2 * len(sc.user_terminals) + len(sc.ground_stations) + len(sc.operators) + 1,
        "slice_s": sc.time.slice_s,
        "slices": n_slices,
        "orbital_period_s": round(const.period_s, 1),
    }


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@format_option
def validate(scenario: str, fmt: str) -> None:
    """Validate SCENARIO and print a one-screen summary."""
    loaded = load_scenario(scenario)
    summary = scenario_summary(loaded)
    if fmt == "json":
        emit_json(summary)
    else:
        emit_kv(f"scenario {summary['name']}: valid", summary)


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--time", "time_s", type=float, default=0.0, show_default=True, help="Seconds since the scenario epoch.")
@format_option
def snapshot(scenario: str, time_s: float, fmt: str) -> None:
    """Satellites, ISLs and ground visibility of SCENARIO at --time."""
    from emu.errors import InputError
    from emu.snapshot.series import SnapshotSeries

    import math

    from emu.orbit.constellation import build_constellation, slice_times

    if not math.isfinite(time_s) or time_s < 0:
        raise InputError(f"--time: must be a finite number of seconds >= 0 (got {time_s})")
    loaded = load_scenario(scenario)
    slice_s = loaded.scenario.time.slice_s
    span = len(slice_times(loaded, build_constellation(loaded))) * slice_s
    if time_s >= span:
        raise InputError(f"--time: must be below {span:g} s, the scenario's duration (got {time_s})")
    k = int(time_s // slice_s)
    # the requested instant exactly (the slice index is the one it falls in)
    snap = SnapshotSeries(loaded, times_s=[time_s], first_index=k)[0]
    data = snapshot_dict(snap)
    if fmt == "json":
        emit_json(data)
        return
    emit_table(f"satellites at t={time_s:.0f}s (slice {k})", ["name", "lat", "lon", "alt_km", "owner", "grc_cell"],
               [[s["name"], s["lat"], s["lon"], s["alt_km"], s["owner"], s["cell"]] for s in data["satellites"]])
    emit_table("inter-satellite links", ["a", "dir", "b", "km", "delay_ms", "steady"],
               [[l["a"], l["dir_a"], l["b"], l["length_km"], l["delay_ms"], l["steady"]] for l in data["isls"]])
    emit_table("ground visibility", ["node", "sat", "elevation", "range_km", "delay_ms"],
               [[g["node"], g["sat"], g["elevation_deg"], g["range_km"], g["delay_ms"]] for g in data["ground_links"]])


def snapshot_dict(snap) -> dict:
    import h3

    c = snap.constellation
    sats = []
    for k in range(c.size):
        sats.append({
            "name": c.names[k],
            "shell": int(c.shell[k]), "plane": int(c.plane[k]), "sat": int(c.sat[k]),
            "owner": int(c.owner[k]),
            "lat": round(float(snap.lat[k]), 4), "lon": round(float(snap.lon[k]), 4),
            "alt_km": round(float(snap.alt[k]), 3),
            "ecef_km": [round(float(x), 3) for x in snap.ecef[k]],
            "cell": h3.int_to_str(int(snap.bound_cell[k])),
        })
    L = snap.links
    isls = [{
        "a": c.names[int(L.a[i])], "b": c.names[int(L.b[i])],
        "dir_a": DIRECTIONS[int(L.dir_a[i])], "dir_b": DIRECTIONS[int(L.dir_b[i])],
        "length_km": round(float(L.length_km[i]), 3), "delay_ms": round(float(L.delay_ms[i]), 4),
        "steady": bool(L.steady[i]),
    } for i in range(len(L))]
    G = snap.ground_links
    gl = [{
        "node": snap.ground.names[int(G.node[i])], "sat": c.names[int(G.sat[i])],
        "elevation_deg": round(float(G.elevation_deg[i]), 3), "range_km": round(float(G.range_km[i]), 3),
        "delay_ms": round(float(G.delay_ms[i]), 4),
    } for i in range(len(G.node))]
    return {"slice": snap.index, "time_s": snap.time_s, "satellites": sats, "isls": isls, "ground_links": gl,
            "counts": {"satellites": c.size, "isls": len(L), "ground_links": len(gl),
                       "steady_isls": int(np.sum(L.steady))}}


def register(cli: click.Group) -> None:
    cli.add_command(validate)
    cli.add_command(snapshot)
