"""``leo-emu partition`` and ``leo-emu multihost up|down``: the constellation over several hosts (issue 13).

Details: docs/multihost.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from emu.cli.common import emit_json, emit_table, format_option
from emu.errors import InputError


def _open_plan(plan_path: str):
    from emu.dataplane.controller import check_plan

    if not Path(plan_path).is_file():
        raise InputError(f"PLAN.db: no such file (got {plan_path!r})")
    return check_plan(Path(plan_path).resolve())


@click.command()
@click.argument("plan_path", metavar="PLAN.db", type=click.Path(dir_okay=False))
@click.option("--hosts", "n_hosts", type=int, required=True, help="Number of hosts to spread the nodes over.")
@click.option("--slices", "every", type=int, default=1, show_default=True,
              help="Report the cut of every N-th slice (1 = all).")
@format_option
def partition(plan_path: str, n_hosts: int, every: int, fmt: str) -> None:
    """Split the plan's nodes over hosts by whole planes and show the cut (links crossing hosts per slice)."""
    from emu.dataplane.model import Model
    from emu.multihost.partition import MAX_HOSTS
    from emu.multihost.partition import partition as make_partition
    from emu.multihost.partition import summary

    if not 1 <= n_hosts <= MAX_HOSTS:
        raise InputError(f"--hosts: must be 1..{MAX_HOSTS} (got {n_hosts})")
    if every < 1:
        raise InputError(f"--slices: must be >= 1 (got {every})")
    db = _open_plan(plan_path)
    m = Model.from_plan(db, "p")
    p = make_partition(m, n_hosts)
    s = summary(m, p, range(0, m.n_slices, every))
    if fmt == "json":
        emit_json(s)
        return
    emit_table(f"{n_hosts} host(s), {s['nodes']} nodes, imbalance {s['imbalance']}",
               ["host", "nodes", "satellites", "planes", "ground nodes", "cores", "inet"],
               [[h["host"], h["nodes"], h["satellites"], _planes(h["planes"]), len(h["ground"]),
                 " ".join(h["cores"]), "yes" if h["inet"] else ""] for h in s["split"]])
    c = s["cut"]
    emit_table("cut (links crossing hosts)", ["per slice min / mean / max", "VXLAN created once", "VXLAN per slice"],
               [[f"{c['min']} / {c['mean']} / {c['max']}",
                 ", ".join(f"{k} {v}" for k, v in c["vxlan_fixed"].items()) or "0",
                 ", ".join(f"{k} {v}" for k, v in c["vxlan_dynamic"].items())]])


def _planes(planes: list[list[int]]) -> str:
    if not planes:
        return ""
    return f"shell {planes[0][0]} plane {planes[0][1]} .. shell {planes[-1][0]} plane {planes[-1][1]} ({len(planes)})"


def register(cli: click.Group) -> None:
    cli.add_command(partition)
