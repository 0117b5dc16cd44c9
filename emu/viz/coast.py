"""Coastlines from an installed file, never from the network.

The GSHHS crude-resolution land outline (``GSHHS_c_L1.shp``, LGPL, Wessel &
Smith) comes with Debian's ``python-cartopy-data`` package
(``/usr/share/cartopy/data``; ``make install-apt`` installs it). Cartopy would
download Natural Earth files at draw time: we never ask it to, we read this
file by path with cartopy's shapefile reader. ``LEOEMU_COASTLINES`` names
another shapefile of polygons or lines.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from emu.errors import EmuError

GSHHS_REL = Path("shapefiles/gshhs/c/GSHHS_c_L1.shp")
SEARCH_DIRS = (Path("/usr/share/cartopy/data"), Path("/usr/share/cartopy"))


class CoastlineError(EmuError):
    """No coastline file is installed."""


def coastline_path() -> Path:
    env = os.environ.get("LEOEMU_COASTLINES")
    if env:
        if not Path(env).is_file():
            raise CoastlineError(f"LEOEMU_COASTLINES: no such file (got {env!r})")
        return Path(env)
    dirs = list(SEARCH_DIRS)
    try:
        import cartopy

        dirs += [Path(cartopy.config[k]) for k in ("pre_existing_data_dir", "data_dir") if cartopy.config.get(k)]
    except ImportError:  # the web map needs only pyshp
        pass
    for d in dirs:
        if (d / GSHHS_REL).is_file():
            return d / GSHHS_REL
    raise CoastlineError("coastlines: GSHHS_c_L1.shp not found; install Debian's python-cartopy-data "
                         "(make install-apt) or set LEOEMU_COASTLINES (got none in "
                         + ", ".join(str(d) for d in dirs) + ")")


def land_geometries() -> list:
    """Shapely geometries of the land outline (cartopy's reader)."""
    import logging

    from cartopy.io.shapereader import Reader

    # GSHHS stores a few rings clockwise-only; pyshp warns and keeps them, which is what we want
    logging.getLogger("shapefile").setLevel(logging.ERROR)
    return list(Reader(str(coastline_path())).geometries())


@lru_cache(maxsize=1)
def coast_rings(decimals: int = 1) -> list[list[list[float]]]:
    """The outline as lists of [lon, lat] points (for the web map), rounded, consecutive repeats dropped."""
    import shapefile  # pyshp, cartopy's dependency

    rings = []
    with shapefile.Reader(str(coastline_path())) as r:
        for shape in r.iterShapes():
            parts = list(shape.parts) + [len(shape.points)]
            for a, b in zip(parts[:-1], parts[1:]):
                ring = []
                for x, y in shape.points[a:b]:
                    p = [round(x, decimals), round(y, decimals)]
                    if not ring or ring[-1] != p:
                        ring.append(p)
                if len(ring) > 2:
                    rings.append(ring)
    return rings
