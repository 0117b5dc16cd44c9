"""One function per figure: ``plot_*(ax, data)`` draws ``data`` on ``ax`` and returns nothing.

Sizes, file names and formats belong to the caller (:mod:`emu.cli.viz_cmds`).
Every artist that stands for plotted objects carries a ``gid``
(``satellites:<group>``, ``isl:<class>``, ``ground:<kind>``, ``serving``,
``path``, ``rtt:<pair>``, ...) so tests and scripts can find and count them.
Map figures need a cartopy ``GeoAxes`` (any projection); the others a plain Axes.
"""

from __future__ import annotations

import math

import numpy as np

from emu.viz.data import INTER, INTRA, LINK_CLASSES, SEAM, SHELL, HandoverData, MapData, PathData, RttData, TableData

# link styles: (colour, linestyle, linewidth); seam links stand out in red
LINK_STYLE = {INTRA: ("0.35", "-", 0.5), INTER: ("tab:blue", "--", 0.5), SEAM: ("tab:red", "-", 0.9),
              SHELL: ("tab:purple", ":", 0.7)}
MAX_NAMED_BARS = 30
DENSE = 300  # satellites: above this, smaller markers and thinner links
# terminals first, so a ground station at the same city stays visible on top
GROUND_MARKER = {"ut": ("s", "gold", "user terminal"), "gs": ("^", "black", "ground station")}


def _crs():
    import cartopy.crs as ccrs

    return ccrs.PlateCarree(), ccrs.Geodetic()


def _basemap(ax) -> None:
    from emu.viz.coast import land_geometries

    plate, _ = _crs()
    ax.add_geometries(land_geometries(), crs=plate, facecolor="0.93", edgecolor="0.55", linewidth=0.3, zorder=0,
                      gid="coast")
    gl = ax.gridlines(crs=plate, draw_labels=True, linewidth=0.2, color="0.7", xlocs=range(-180, 181, 60),
                      ylocs=range(-90, 91, 30))
    gl.top_labels = gl.right_labels = False
    gl.xlabel_style = gl.ylabel_style = {"size": 6}


def plot_map(ax, m: MapData) -> None:
    """Satellites by group, ISLs by class (great circles), links gone since the last slice, polar limits,
    ground stations, user terminals and their serving links."""
    from matplotlib.collections import LineCollection

    plate, geo = _crs()
    _basemap(ax)
    ax.set_global()
    lon, lat = m.sat_lon, m.sat_lat
    thin = 0.4 if len(lon) > DENSE else 1.0
    for cls in LINK_CLASSES:
        segs = [[(lon[a], lat[a]), (lon[b], lat[b])] for a, b, c in m.links if c == cls]
        if segs:
            col, ls, lw = LINK_STYLE[cls]
            ax.add_collection(LineCollection(segs, colors=col, linestyles=ls, linewidths=lw * thin, transform=geo,
                                             label=f"ISL {cls}", gid=f"isl:{cls}", zorder=2))
    if m.links_down:
        segs = [[(lon[a], lat[a]), (lon[b], lat[b])] for a, b, _c in m.links_down]
        ax.add_collection(LineCollection(segs, colors="tab:red", linestyles=(0, (1, 1)), linewidths=0.9,
                                         transform=geo, label="ISL down since last slice", gid="isl:down", zorder=2))
    for sign in (1, -1):
        ax.plot([-180, 180], [sign * m.polar_lat_deg] * 2, transform=plate, color="tab:red", lw=0.4, ls="-.",
                gid="polar_limit", label=f"polar limit ±{m.polar_lat_deg:g}°" if sign > 0 else None, zorder=1)
    gi = {g: i for i, g in enumerate(m.groups)}
    cmap = _group_colours(len(m.groups))
    for g in m.groups:
        sel = np.array([x == g for x in m.sat_group])
        ax.scatter(lon[sel], lat[sel], s=9 * thin ** 2, color=cmap[gi[g]], edgecolors="white", linewidths=0.3 * thin,
                   transform=plate, label=g, gid=f"satellites:{g}", zorder=4)
    if m.ew_off:
        ax.scatter(lon[m.ew_off], lat[m.ew_off], s=30, facecolors="none", edgecolors="tab:red", linewidths=0.6,
                   transform=plate, label="no E or W ISL (seam/polar)", gid="ew_off", zorder=4)
    if m.serving:
        segs = [[(m.ground[gn][3], m.ground[gn][2]), (lon[s], lat[s])] for gn, s in m.serving]
        ax.add_collection(LineCollection(segs, colors="tab:green", linewidths=0.8, transform=geo, label="serving link",
                                         gid="serving", zorder=3))
    for kind, (marker, colour, label) in GROUND_MARKER.items():
        pts = [(lo, la) for _n, kd, la, lo in m.ground if kd == kind]
        if pts:
            x, y = zip(*pts)
            ax.scatter(x, y, marker=marker, s=16 * thin, color=colour, edgecolors="black", linewidths=0.4, transform=plate,
                       label=label, gid=f"ground:{kind}", zorder=5)
    ax.set_title(m.title, fontsize=8)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5, fontsize=6, frameon=False,
              handlelength=2.0, columnspacing=1.2)


def _group_colours(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "turbo"]
    return [cmap(i) if n <= 10 else cmap(i / max(1, n - 1)) for i in range(n)]


def plot_path(ax, m: MapData, p: PathData) -> None:
    """The slice's ISLs and satellites faded, and on them the path: nodes named, each hop labelled with the
    direction it leaves by (N/S/E/W/Up/Down); the view zooms to the path."""
    from matplotlib.collections import LineCollection

    plate, geo = _crs()
    _basemap(ax)
    lon, lat = m.sat_lon, m.sat_lat
    segs = [[(lon[a], lat[a]), (lon[b], lat[b])] for a, b, _c in m.links]
    ax.add_collection(LineCollection(segs, colors="0.75", linewidths=0.4, transform=geo, gid="isl:all", zorder=2))
    ax.scatter(lon, lat, s=5, color="0.55", transform=plate, gid="satellites:all", zorder=3)
    # hops at one place (a device and its terminal) are one point on the map, named together
    placed: list[list] = []  # [names, lat, lon, egress]
    for n, la, lo, eg, _d in p.hops:
        if math.isnan(la):
            continue
        if placed and (placed[-1][1], placed[-1][2]) == (la, lo):
            placed[-1][0].append(n)
            placed[-1][3] = eg
        else:
            placed.append([[n], la, lo, eg])
    if placed:
        xs, ys = [h[2] for h in placed], [h[1] for h in placed]
        ax.plot(xs, ys, color="tab:red", lw=1.2, transform=geo, gid="path", zorder=4)
        ax.scatter(xs, ys, s=14, color="tab:red", edgecolors="white", linewidths=0.4, transform=plate, zorder=5,
                   gid="path:hops")
        for i, (names, la, lo, eg) in enumerate(placed):
            ax.annotate("/".join(names), (lo, la), xytext=(3, 3 if i % 2 == 0 else -8), textcoords="offset points",
                        fontsize=5,
                        transform=plate, gid="path:node", zorder=6)
            if eg and i + 1 < len(placed):
                mla, mlo = _great_circle_mid(la, lo, placed[i + 1][1], placed[i + 1][2])
                ax.text(mlo, mla, eg, fontsize=6, color="tab:red", ha="center", va="center", transform=plate,
                        gid="path:egress", zorder=6,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "tab:red", "lw": 0.4})
        cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
        hw = max(20.0, (max(xs) - min(xs)) / 2 + 8)
        hh = max(0.7 * hw, (max(ys) - min(ys)) / 2 + 6)  # keep the panel near the figure's aspect
        cy = min(max(cy, -90 + hh), 90 - hh) if hh < 90 else 0.0
        ax.set_extent([max(-180, cx - hw), min(180, cx + hw), max(-90, cy - hh), min(90, cy + hh)], crs=plate)
    tail = [n for n, la, _lo, _eg, _d in p.hops if math.isnan(la)]
    head = f"{p.src} \u2192 {p.dst}, slice {p.slice}: "
    if p.reachable:
        sats = set(m.sat_names)
        sat_hops = sum(1 for n, *_ in p.hops if n in sats)
        head += f"{p.one_way_ms:.1f} ms one way, {sat_hops} satellite{'s' if sat_hops != 1 else ''}"
        if tail:
            head += "\nthen " + " \u2192 ".join(tail) + " (terrestrial)"
    else:
        head += f"unreachable ({p.reason})"
    ax.set_title(head, fontsize=7)


def _great_circle_mid(lat1: float, lon1: float, lat2: float, lon2: float) -> tuple[float, float]:
    """The midpoint of the great circle between two points (where the drawn link's label goes)."""
    v = [np.array([math.cos(math.radians(la)) * math.cos(math.radians(lo)),
                   math.cos(math.radians(la)) * math.sin(math.radians(lo)), math.sin(math.radians(la))])
         for la, lo in ((lat1, lon1), (lat2, lon2))]
    x, y, z = v[0] + v[1]
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))


def plot_rtt(ax, d: RttData) -> None:
    """Planned RTT over time per pair (a step per slice); unreachable slices as bars along the top; satellite
    handovers (|) and ground-station changes (v) as a rug along the bottom; measured RTTs as dots."""
    colours = _group_colours(len(d.series))
    rug = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for i, (s, c) in enumerate(zip(d.series, colours)):
        t = s.time_s / 60.0
        ax.plot(t, s.planned_rtt_ms, color=c, lw=1.0, drawstyle="steps-post", label=f"{s.label} planned",
                gid=f"rtt:{s.src}>{s.dst}")
        gap = np.isnan(s.planned_rtt_ms)
        if gap.any():
            step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
            ax.bar(t[gap], 0.04, width=step, bottom=0.96 - 0.05 * i, align="edge", color=c, alpha=0.35, lw=0,
                   transform=rug, label=f"{s.label} unreachable", gid=f"unreachable:{s.src}>{s.dst}")
        for times, y, marker, what in ((s.handover_s, 0.03 + 0.05 * i, "|", "satellite handover"),
                                       (s.gs_change_s, 0.06 + 0.05 * i, "v", "GS change")):
            if times:
                ax.plot(np.array(times) / 60.0, [y] * len(times), ls="none", marker=marker, ms=4, mew=0.8,
                        color=c, transform=rug, label=f"{s.label} {what}",
                        gid=f"{'handover' if marker == '|' else 'gs_change'}:{s.src}>{s.dst}")
        if len(s.measured_s):
            ax.plot(s.measured_s / 60.0, s.measured_rtt_ms, ls="none", marker=".", ms=2, alpha=0.6, color=c,
                    label=f"{s.label} measured", gid=f"measured:{s.src}>{s.dst}")
    ax.set_xlabel("time since epoch (min)", fontsize=7)
    ax.set_ylabel("round-trip delay (ms)", fontsize=7)
    ax.set_title(d.title, fontsize=7)
    ax.tick_params(labelsize=6)
    ax.grid(True, lw=0.2)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)


KIND_LABEL = {"intra": "intra-SNO", "inter": "inter-SNO"}
POLICY_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


def plot_handovers(ax, d: HandoverData) -> None:
    """Per user terminal (first: all of them), one stacked bar per association policy side by side: intra-SNO
    (light) under inter-SNO (dark, hatched), per served user-hour; then, past a dotted line, each ground
    station's serving-satellite changes per hour (grey). More than 30 nodes: ranked, unnamed (the CSV names them)."""
    import matplotlib.colors as mcolors

    pols = d.policies
    n = max(1, len(pols))
    w = 0.8 / n
    many = len(d.uts) + len(d.gss) > MAX_NAMED_BARS
    first = d.per_ut[(pols[0], "intra")] if pols else [0.0] * len(d.uts)
    total = np.asarray(first) + np.asarray(d.per_ut.get((pols[0], "inter"), first) if pols else 0.0)
    # many nodes: "all UTs" stays first, the terminals ranked by the first policy's total, stations by rate
    ut_order = [0] + [1 + int(i) for i in np.argsort(-total[1:], kind="stable")] if many else list(range(len(d.uts)))
    gs_order = np.argsort(-np.asarray(d.gs_per_hour), kind="stable") if many else np.arange(len(d.gss))
    x = np.arange(len(d.uts), dtype=float)
    for i, pol in enumerate(pols):
        base = mcolors.to_rgb(POLICY_COLOURS[i % len(POLICY_COLOURS)])
        light = tuple(0.55 * c + 0.45 for c in base)
        intra = np.asarray(d.per_ut[(pol, "intra")])[ut_order]
        inter = np.asarray(d.per_ut[(pol, "inter")])[ut_order]
        xs = x + (i - (n - 1) / 2) * w
        # many nodes: bars a pixel or two wide, so no edges and no hatching (they would hide the fill)
        ax.bar(xs, intra, width=w, color=light, edgecolor=base, linewidth=0 if many else 0.4,
               label=f"{pol}: {KIND_LABEL['intra']}", gid=f"bars:{pol}:intra")
        ax.bar(xs, inter, width=w, bottom=intra, color=base, edgecolor="white", linewidth=0 if many else 0.3,
               hatch=None if many else "////", label=f"{pol}: {KIND_LABEL['inter']}", gid=f"bars:{pol}:inter")
    gx = len(d.uts) + 0.5 + np.arange(len(d.gss), dtype=float)
    if d.gss:
        ax.axvline(len(d.uts) - 0.25, color="0.5", lw=0.5, ls=":")
        ax.bar(gx, np.asarray(d.gs_per_hour)[gs_order], width=0.8 * 0.6, color="0.6",
               label="GS: satellite change", gid="bars:gs:satellite")
    if many:
        ax.set_xticks([0], [d.uts[0]], fontsize=6)
        ax.set_xlabel(f"{len(d.uts) - 1} user terminals | {len(d.gss)} ground stations, by rate", fontsize=7)
    else:
        ax.set_xticks(np.concatenate([x, gx]), list(d.uts) + list(d.gss), rotation=45, ha="right", fontsize=6)
    ax.set_ylabel("handovers per (user-)hour", fontsize=7)
    ax.set_title(d.title, fontsize=7)
    ax.tick_params(axis="y", labelsize=6)
    ax.grid(True, axis="y", lw=0.2)
    ax.set_axisbelow(True)
    ax.legend(fontsize=5, frameon=False, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))


def plot_tables(ax, d: TableData) -> None:
    """Entries per satellite over time: median line and min-max band, aggregated vs one entry per destination."""
    t = d.time_s / 60.0
    for which, label, colour in ((d.unaggregated, "not aggregated", "tab:gray"), (d.aggregated, "aggregated", "tab:blue")):
        st = d.stats(which)
        ax.fill_between(t, st["min"], st["max"], color=colour, alpha=0.25, lw=0, gid=f"band:{label}",
                        label=f"{label} (min–max)")
        ax.plot(t, st["median"], color=colour, lw=1.0, gid=f"median:{label}", label=f"{label} (median)")
    ax.set_xlabel("time since epoch (min)", fontsize=7)
    ax.set_ylabel("entries per satellite", fontsize=7)
    ax.set_ylim(bottom=0)
    ax.set_title(d.title, fontsize=7)
    ax.tick_params(labelsize=6)
    ax.grid(True, lw=0.2)
    ax.legend(fontsize=6, frameon=False, loc="lower right")
