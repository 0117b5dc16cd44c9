"""``leo-emu plot`` (figures from a plan, each PNG with its numbers in a CSV) and ``leo-emu web`` (a live map)."""

from __future__ import annotations

import csv
from pathlib import Path

import click

from emu.cli.common import emit_json
from emu.errors import InputError, PlanError

# figure sizes in inches (width, height): one column of a two-column paper is ~3.5 in, the full width ~7 in
SIZES = {"map": (7.0, 4.3), "path": (3.5, 3.3), "rtt": (3.5, 2.5), "handovers": (3.5, 2.6), "tables": (3.5, 2.5)}
RC = {"font.size": 7, "axes.linewidth": 0.5, "xtick.major.width": 0.5, "ytick.major.width": 0.5,
      "savefig.bbox": "tight", "savefig.pad_inches": 0.03}


def _default_pair(pf) -> tuple[str, str]:
    dev = next((g.device for g in pf.db.ground if g.kind == "ut" and g.device), None)
    if dev is None:
        raise InputError("--pair: the plan has no user device, name a pair (got none)")
    return dev, pf.inet


def _check_pairs(pf, pairs) -> None:
    for src, dst in pairs:
        for n in (src, dst):
            try:
                pf.resolve(n)
            except PlanError:
                raise InputError(f"--pair: unknown node (got {n!r})") from None


def write_csv(path: Path, head: list[str], rows: list[list]) -> None:
    from emu.viz.data import csv_number

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows([[csv_number(v) for v in r] for r in rows])


@click.command()
@click.argument("plan_db", type=click.Path(exists=True, dir_okay=False))
@click.argument("what", type=click.Choice(["map", "path", "rtt", "handovers", "tables"]))
@click.option("--slice", "k", type=int, default=0, show_default=True, help="Slice for map and path.")
@click.option("--pair", "pairs", type=(str, str), multiple=True, metavar="SRC DST",
              help="A node pair for path and rtt (repeat for rtt); default: the first device and the Internet.")
@click.option("--results", type=click.Path(dir_okay=False), default=None,
              help="Measured RTTs to overlay on rtt: CSV src,dst,time_s,rtt_ms or JSON (see docs/viz.md).")
@click.option("--color-by", type=click.Choice(["operator", "plane"]), default="operator", show_default=True,
              help="Colour satellites on the map by operator or by orbital plane.")
@click.option("--width", type=float, default=None, help="Figure width in inches (default: per figure, 3.5 or 7).")
@click.option("--dpi", type=int, default=200, show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Image to write (.png, .pdf or .svg); its numbers go to the same name with .csv.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def plot(plan_db: str, what: str, k: int, pairs, results, color_by: str, width, dpi: int, out: str, fmt: str) -> None:
    """Draw WHAT from PLAN_DB: map, path, rtt, handovers or tables (one slice's map, a path on it, delay over
    time, handovers per hour, table sizes per satellite)."""
    from emu.plan.db import PlanDB
    from emu.plan.path import PathFinder
    from emu.viz import data as vd

    out_p = Path(out)
    if out_p.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InputError(f"--out: must end in .png, .pdf or .svg (got {out!r})")
    if not out_p.parent.is_dir():
        raise InputError(f"--out: no such directory (got {str(out_p.parent)!r})")
    if width is not None and not 1.0 <= width <= 20.0:
        raise InputError(f"--width: must be 1..20 inches (got {width})")
    if not 50 <= dpi <= 1200:
        raise InputError(f"--dpi: must be 50..1200 (got {dpi})")
    if results and what != "rtt":
        raise InputError(f"--results: only for rtt (got {what})")
    db = PlanDB(plan_db)
    view = vd.PlanView(db)
    pf = PathFinder(db)
    pairs = list(pairs) or ([_default_pair(pf)] if what in ("path", "rtt") else [])
    _check_pairs(pf, pairs)
    if what == "path" and len(pairs) != 1:
        raise InputError(f"--pair: path draws one pair (got {len(pairs)})")
    # everything is computed before anything is written: bad input creates nothing
    if what == "map":
        d = vd.map_data(view, view.check_slice(k), color_by)
        draw, geo, numbers = (lambda ax: _figs().plot_map(ax, d)), True, d.csv()
    elif what == "path":
        m = vd.map_data(view, view.check_slice(k), color_by)
        p = vd.path_data(view, m, *pairs[0], finder=pf)
        draw, geo, numbers = (lambda ax: _figs().plot_path(ax, m, p)), True, p.csv()
    elif what == "rtt":
        measured = None
        if results:
            from emu.viz.results import load_results

            measured = load_results(results, db.slice_s)
        d = vd.rtt_data(view, pairs, measured)
        draw, geo, numbers = (lambda ax: _figs().plot_rtt(ax, d)), False, d.csv()
    elif what == "handovers":
        d = vd.handover_data(view)
        draw, geo, numbers = (lambda ax: _figs().plot_handovers(ax, d)), False, d.csv()
    else:
        d = vd.table_data(view)
        draw, geo, numbers = (lambda ax: _figs().plot_tables(ax, d)), False, d.csv()
    size = SIZES[what]
    if width is not None:
        size = (width, width * size[1] / size[0])
    render(draw, geo, size, dpi, out_p)
    csv_p = out_p.with_suffix(".csv")
    write_csv(csv_p, *numbers)
    summary = {"figure": what, "image": str(out_p), "csv": str(csv_p), "csv_rows": len(numbers[1]),
               "size_in": list(size), "dpi": dpi}
    if fmt == "json":
        emit_json(summary)
    else:
        click.echo(f"wrote {out_p} and {csv_p} ({len(numbers[1])} rows)")


def _figs():
    from emu.viz import figures

    return figures


def render(draw, geo: bool, size: tuple[float, float], dpi: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(RC):
        fig = plt.figure(figsize=size, dpi=dpi)
        try:
            if geo:
                import cartopy.crs as ccrs

                ax = fig.add_subplot(1, 1, 1, projection=ccrs.PlateCarree())
            else:
                ax = fig.add_subplot(1, 1, 1)
            draw(ax)
            fig.savefig(out, dpi=dpi, metadata={"Software": None} if out.suffix.lower() == ".png" else None)
        finally:
            plt.close(fig)


@click.command()
@click.argument("source", required=False)
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port on 127.0.0.1 (0: any free port).")
@click.option("--pair", "pairs", type=(str, str), multiple=True, metavar="SRC DST",
              help="Show this pair's path (repeatable); default: the first device and the Internet.")
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="Plan replay: wall seconds per slice.")
@click.option("--results", type=click.Path(dir_okay=False), default=None,
              help="Measured RTTs to show as a probe appends them (the plot --results formats).")
def web(source: str | None, port: int, pairs, interval: float, results: str | None) -> None:
    """A live map on http://127.0.0.1:PORT/ (read-only): SOURCE is a run id (default: the one run that is up)
    or a plan file, which is replayed slice by slice."""
    from emu.web.server import serve
    from emu.web.source import open_source

    if not 0 <= port <= 65535:
        raise InputError(f"--port: must be 0..65535, 0 for any free port (got {port})")
    if not 0.05 <= interval <= 3600:
        raise InputError(f"--interval: must be 0.05..3600 s (got {interval})")
    src = open_source(source, list(pairs), interval, results)
    serve(src, port, ready=lambda url: click.echo(f"leo-emu web: {url} ({src.describe()}); Ctrl-C stops", err=True))


def register(cli: click.Group) -> None:
    cli.add_command(plot)
    cli.add_command(web)
