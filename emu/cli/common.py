"""Conventions every CLI command shares.

- ``--format table|json`` via :func:`format_option`; JSON goes to stdout with
  :func:`emit_json`, tables through rich.
- Errors: commands raise :class:`emu.errors.EmuError`; :class:`EmuGroup` turns
  them into one line on stderr (``leo-emu: error: ...``) and the error's
  ``exit_code`` (2 for bad input). Library code never calls ``exit()``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from emu.errors import EmuError

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


def fail(message: str, exit_code: int = 2) -> None:
    """Print one error line and exit: only for the CLI edge."""
    click.echo(f"leo-emu: error: {message}", err=True)
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
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            fail("interrupted", 130)
