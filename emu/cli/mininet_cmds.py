"""``leo-emu cli [RUN]``: Mininet's own CLI on a running constellation (issue 11).

Every namespace of the run is a Mininet node; nothing is built, and leaving
the CLI leaves the run as it was (only the node shells it started, and what
was started in them, end). See docs/mininet.md.
"""

from __future__ import annotations

import click

from emu.errors import InputError


@click.command("cli")
@click.argument("run_id", required=False, metavar="[RUN]")
@click.option("--script", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run the CLI commands in this file (Mininet's `source`), then leave.")
def mininet_cli(run_id: str | None, script: str | None) -> None:
    """Open Mininet's CLI (mininet.cli.CLI) on run RUN (default: the only run)."""
    from emu.cli.dataplane_cmds import require_root
    from emu.mininet import requirements

    require_root()
    requirements.require()  # before anything starts: says how to install Mininet / mnexec
    from mininet.log import setLogLevel

    from emu.mininet.cli import LeoCLI
    from emu.mininet.net import LeoNet

    setLogLevel("output")
    net = LeoNet(run=run_id)  # unknown run: the run store's one-line error, exit 2
    try:
        session = LeoCLI(net, script=script)
    finally:
        net.stop()  # only the shells this CLI started; the run stays up
    if session.failed:
        raise InputError(session.failed)


def register(cli: click.Group) -> None:
    cli.add_command(mininet_cli)
