"""Conventions every CLI command shares.

- ``--format table|json`` via :func:`format_option`; JSON goes to stdout with
  :func:`emit_json`, tables through rich.
- Errors: commands raise :class:`emu.errors.EmuError`; :class:`EmuGroup` turns
  them into one line on stderr (``leo-emu: error: ...``, cut to
  :data:`MAX_ERROR_LINE` characters) and the error's ``exit_code`` (2 for bad
  input). Click's usage errors (a bad option value, a missing argument) become
  the same one line with exit code 2. Library code never calls ``exit()``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from emu.errors import EmuError, cut

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format: a human table or machine-readable JSON.",
)


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (sorted keys, one document)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def emit_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console().print(table)


def emit_kv(title: str | None, obj: dict[str, Any]) -> None:
    """Print a two-column key/value table."""
    emit_table(title, ["field", "value"], [[k, v] for k, v in obj.items()])


MAX_ERROR_LINE = 400


def fail(message: str, exit_code: int = 2) -> None:
    """Print one error line (never longer than MAX_ERROR_LINE) and exit: only for the CLI edge."""
    click.echo(f"leo-emu: error: {cut(message, MAX_ERROR_LINE)}", err=True)
    sys.exit(exit_code)


class EmuGroup(click.Group):
    """A click group that turns EmuError into one clear line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmuError as exc:
            fail(str(exc), exc.exit_code)
        except click.exceptions.Exit:
            raise
        except click.UsageError as exc:  # a bad option or argument: bad input like any other, one line
            cmd = exc.ctx.command_path if exc.ctx else "leo-emu"
            fail(f"{exc.format_message()} (see {cmd} -h)", exc.exit_code)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            fail("interrupted", 130)
