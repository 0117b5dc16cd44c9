"""The ``leo-emu`` command line: one group, subcommands registered from their modules."""

from __future__ import annotations

import logging

import click

from emu import __version__
from emu.cli.common import EmuGroup


@click.group(cls=EmuGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="leo-emu")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """leo-emu: a real-packet LEO satellite network emulator on Linux namespaces."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    import importlib

    for mod in (
        "emu.cli.addr_cmds",
        "emu.cli.scenario_cmds",
        "emu.cli.plan_cmds",
        "emu.cli.dataplane_cmds",
        "emu.cli.run_cmds",
        "emu.cli.doctor_cmds",
        "emu.cli.mobility_cmds",
        "emu.cli.viz_cmds",
        "emu.cli.mininet_cmds",
        "emu.cli.multihost_cmds",
    ):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue  # that stage is not built yet
            raise
        m.register(cli)


_register()


if __name__ == "__main__":
    cli()
