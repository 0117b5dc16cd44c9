"""``leo-emu doctor``: what this machine's kernel and tools can do, and what that costs.

A report, not a gate: it exits 0 whatever is missing, also without root (it
then says which probes it could not run).
"""

from __future__ import annotations

import click

from emu.cli.common import emit_json, emit_table, format_option
from emu.dataplane import features as feat


def register(cli: click.Group) -> None:
    cli.add_command(doctor)


@click.command("doctor")
@format_option
def doctor(fmt: str) -> None:
    """Probe kernel features (in a throwaway namespace), tools and privileges."""
    from emu.mininet import requirements as mininet_req

    report = feat.detect()
    mn = mininet_req.status()  # `leo-emu cli` / LeoNet (issue 11)
    mn_missing = mininet_req.missing(mn)
    if fmt == "json":
        emit_json({**report.to_dict(), "mininet": {**mn, "missing": mn_missing,
                                                   "install": mininet_req.INSTALL_HINT if mn_missing else None}})
        return
    _print_table(report)
    emit_table("mininet (leo-emu cli)", ["piece", "status", "where / version"],
               [[k, "ok" if v else ("MISSING" if k in ("package",) + mininet_req.TOOLS else "absent"), v or ""]
                for k, v in mn.items()])
    if mn_missing:
        click.echo(f"Mininet: {', '.join(mn_missing)} missing; {mininet_req.INSTALL_HINT}")


def _print_table(report: feat.Features) -> None:
    privileges = "root" if report.root else "not root"
    privileges += ", CAP_NET_ADMIN" if report.cap_net_admin else ", no CAP_NET_ADMIN"
    where = "QEMU stock-kernel tier (leoemu.vm=1)" if report.in_vm else "host"
    probe = (f"ran in a throwaway namespace, pyroute2 requests + nft ({report.probe_seconds * 1000:.0f} ms)"
             if report.probed else "NOT run (see below)")
    emit_table("leo-emu doctor", ["field", "value"], [
        ["privileges", privileges],
        ["kernel", report.kernel],
        ["running in", where],
        ["kernel probes", probe],
    ])

    rows = []
    for name in feat.FEATURES:
        if report.features[name]:
            status, detail = "ok", ""
        else:
            detail = report.errors.get(name, "")
            status = "not probed" if detail.startswith("not probed") else "MISSING"
        rows.append([name, status, detail])
    emit_table("kernel features", ["feature", "status", "detail"], rows)

    tool_rows = [[t, "ok" if p else "MISSING", p or ""] for t, p in report.tools.items()]
    tool_rows += [[f"python: {m}", "ok" if v else "MISSING", v or ""]
                  for m, v in report.python_modules.items()]
    emit_table("tools", ["tool", "status", "where / version"], tool_rows)

    if report.degradations:
        click.echo("Degradations on this machine:")
        for line in report.degradations:
            click.echo(f"  - {line}")
    else:
        click.echo("No degradations: every probed feature and tool is present.")
