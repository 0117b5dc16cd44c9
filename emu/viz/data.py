"""What the figures show, read from a plan: pure data, no drawing.

Every figure in :mod:`emu.viz.figures` draws one of the dataclasses below and
nothing else, and each dataclass's ``csv()`` holds exactly the plotted
numbers (Hypatia's habit: every picture has its numbers beside it).

Satellite positions are not stored per slice in the route database; they are
recomputed from the plan's own ephemeris (the signed TLEs, spec:
grc-based-routing §Routing Database) at each slice's time with the planner's
SGP4 propagation (:func:`emu.orbit.propagate.propagate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import numpy as np
import yaml

from emu.errors import InputError
from emu.orbit.constellation import DOWN, E, N, S, UP, W
from emu.plan.db import PlanDB
from emu.plan.path import PathFinder

# link classes, in legend order (spec: grc-based-routing §Directional Forwarding)
INTRA, INTER, SEAM, SHELL = \
    "intra-plane N/S", "inter-plane E/W", "seam E/W (last↔first plane)", "inter-shell Up/Down"
LINK_CLASSES = (INTRA, INTER, SEAM, SHELL)


def csv_number(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class PlanView:
    """A plan DB plus what the figures need from it: positions, link classes, per-satellite counts."""

    def __init__(self, db: PlanDB):
        self.db = db
        self.scenario = yaml.safe_load(db.meta["scenario_yaml"])
        self.routing = yaml.safe_load(db.meta["routing"])
        self.epoch = datetime.fromisoformat(db.meta["epoch"])
        rows = db.sat_rows
        self.shell = np.array([r[2] for r in rows])
        self.plane = np.array([r[3] for r in rows])
        self.owner = np.array([r[5] for r in rows])
        self.planes_of_shell = {int(s): int(self.plane[self.shell == s].max()) + 1 for s in np.unique(self.shell)}
        self.operator_names = [o[1] for o in db.operators]

    @property
    def n_sats(self) -> int:
        return len(self.shell)

    @property
    def polar_lat_deg(self) -> float:
        return float(self.scenario.get("links", {}).get("polar_lat_deg", 75.0))

    @cached_property
    def satrecs(self) -> list:
        from sgp4.api import Satrec

        return [Satrec.twoline2rv(l1, l2) for l1, l2 in
                self.db.con.execute("SELECT line1, line2 FROM ephemeris ORDER BY sat")]

    def slice_times(self) -> np.ndarray:
        return np.array([t for (t,) in self.db.con.execute("SELECT time_s FROM slices ORDER BY k")], dtype=float)

    def positions(self, ks) -> tuple[np.ndarray, np.ndarray]:
        """Sub-satellite latitude and longitude (degrees), shape (len(ks), satellites)."""
        from emu.orbit.propagate import propagate

        times = np.array([self.db.slice_time(int(k)) for k in ks], dtype=float)
        eph = propagate(self.satrecs, self.epoch, times)
        return eph.lat, eph.lon

    def check_slice(self, k: int) -> int:
        if not 0 <= k < self.db.n_slices:
            raise InputError(f"--slice: must be 0..{self.db.n_slices - 1} (got {k})")
        return k

    def link_class(self, a: int, b: int, dir_a: int) -> str:
        """Intra-plane, inter-plane, seam (an E/W link between the last and the first plane) or inter-shell."""
        if dir_a in (UP, DOWN):
            return SHELL
        if dir_a in (N, S):
            return INTRA
        P = self.planes_of_shell[int(self.shell[a])]
        if P > 2 and {int(self.plane[a]), int(self.plane[b])} == {0, P - 1}:
            return SEAM
        return INTER

    def ew_off(self, links: np.ndarray) -> list[int]:
        """Satellites (of shells with several planes) lacking an E or a W link in ``links``: at the seam of a
        Walker star or in the polar region (spec: satellite-semantic-addressing §4.3, unsteady E/W neighbours)."""
        has = np.zeros((self.n_sats, 2), dtype=bool)
        for ends, dirs in (("a", "dir_a"), ("b", "dir_b")):
            sel = np.isin(links[dirs], (E, W))
            has[links[ends][sel], links[dirs][sel] - E] = True
        multi_plane = np.array([self.planes_of_shell[int(sh)] > 1 for sh in self.shell])
        return np.nonzero(multi_plane & ~has.all(axis=1))[0].tolist()

    def sat_group(self, color_by: str) -> tuple[list[str], list[str]]:
        """(group label per satellite, groups in legend order) for colouring by operator or by plane."""
        if color_by == "operator":
            labels = [self.operator_names[o] if o >= 0 else "unowned" for o in self.owner]
        elif color_by == "plane":
            multi = len(self.planes_of_shell) > 1
            labels = [f"shell {s} plane {p}" if multi else f"plane {p}" for s, p in zip(self.shell, self.plane)]
        else:
            raise InputError(f"--color-by: must be operator or plane (got {color_by!r})")
        order = list(dict.fromkeys(labels))
        return labels, order

    def destinations(self, k: int) -> np.ndarray:
        """The destination addresses of slice k (ground GRCs, then satellites' own addresses when they are destinations)."""
        addr = [np.array([g.grc for g in self.db.ground], dtype=np.uint32)]
        if self.routing.get("satellite_destinations"):
            addr.append(self.db.sat_addresses.astype(np.uint32))
        return np.concatenate(addr)

    def table_sizes(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per satellite: (entries as stored, aggregated; destinations the table routes, i.e. the entries it
        would hold without aggregation). The second sums to the slice's ``raw_entries`` column.

        spec: grc-based-routing §Routing Table Structure (aggregation along the GRC hierarchy).
        """
        T = self.db.tables(k)
        return T.sizes.astype(int), routed_destinations(T, self.destinations(k), self.n_sats)


def routed_destinations(T, dest: np.ndarray, n_sats: int) -> np.ndarray:
    """Per satellite, how many of the addresses ``dest`` some entry of its table matches (as the segmented
    longest match would find them). Entries of one table normally do not nest (aggregation states a region
    once); then each entry's count is two binary searches over the sorted destinations. Satellites whose
    entries nest are counted by matching every destination against every prefix length instead."""
    ds = np.sort(dest.astype(np.uint64))
    start = T.prefix.astype(np.uint64)
    end = start + (np.uint64(1) << (np.uint64(32) - T.plen.astype(np.uint64)))
    per_entry = np.searchsorted(ds, end, "left") - np.searchsorted(ds, start, "left")
    sat_of_entry = np.repeat(np.arange(n_sats), np.diff(T.offsets))
    out = np.bincount(sat_of_entry, weights=per_entry, minlength=n_sats).astype(int)
    order = np.lexsort((start, sat_of_entry))
    s_o, st_o, en_o = sat_of_entry[order], start[order], end[order]
    nested = np.unique(s_o[1:][(s_o[1:] == s_o[:-1]) & (st_o[1:] < en_o[:-1])])
    for s in nested.tolist():
        a, b = T.offsets[s], T.offsets[s + 1]
        hit = np.zeros(len(dest), dtype=bool)
        for p, L in zip(T.prefix[a:b].tolist(), T.plen[a:b].tolist()):
            hit |= (dest.astype(np.uint64) >> np.uint64(32 - L)) == (np.uint64(p) >> np.uint64(32 - L))
        out[s] = int(hit.sum())
    return out


# ============================================================================ map and path
@dataclass
class MapData:
    """One slice on the world map (spec: grc-based-routing §Directional Forwarding for the link classes)."""

    slice: int
    time_s: float
    sat_names: list[str]
    sat_lat: np.ndarray
    sat_lon: np.ndarray
    sat_group: list[str]
    groups: list[str]
    links: list[tuple[int, int, str]]  # (a, b, class)
    links_down: list[tuple[int, int, str]]  # present last slice, gone now
    ground: list[tuple[str, str, float, float]]  # (name, kind gs|ut, lat, lon)
    serving: list[tuple[int, int]]  # (ground index, satellite index): every ground link, all antennas
    polar_lat_deg: float
    ew_off: list[int] = field(default_factory=list)  # satellites without an E or a W link: seam or polar region
    title: str = ""

    def csv(self) -> tuple[list[str], list[list]]:
        head = ["layer", "name", "lat", "lon", "to", "to_lat", "to_lon", "class"]
        rows = [["satellite", n, la, lo, "", "", "", g]
                for n, la, lo, g in zip(self.sat_names, self.sat_lat.tolist(), self.sat_lon.tolist(), self.sat_group)]
        for layer, links in (("isl", self.links), ("isl_down", self.links_down)):
            for a, b, c in links:
                rows.append([layer, self.sat_names[a], self.sat_lat[a], self.sat_lon[a], self.sat_names[b],
                             self.sat_lat[b], self.sat_lon[b], c])
        for name, kind, la, lo in self.ground:
            rows.append([kind, name, la, lo, "", "", "", ""])
        for gi, s in self.serving:
            name, _kind, la, lo = self.ground[gi]
            rows.append(["serving", name, la, lo, self.sat_names[s], self.sat_lat[s], self.sat_lon[s], ""])
        rows += [["ew_off", self.sat_names[i], self.sat_lat[i], self.sat_lon[i], "", "", "", ""] for i in self.ew_off]
        rows.append(["polar_limit", "", self.polar_lat_deg, "", "", "", "", ""])
        return head, rows


def map_data(view: PlanView, k: int, color_by: str = "operator") -> MapData:
    view.check_slice(k)
    db = view.db
    lat, lon = view.positions([k])
    links = db.links(k)
    cur = [(int(r["a"]), int(r["b"]), view.link_class(int(r["a"]), int(r["b"]), int(r["dir_a"]))) for r in links]
    _added, removed = db.link_delta(k)
    down = [(int(r["a"]), int(r["b"]), view.link_class(int(r["a"]), int(r["b"]), int(r["dir_a"]))) for r in removed]
    if k == 0:
        down = []
    ground_links = db.ground_links(k)  # (nodes, antennas): a ground station links to several satellites
    labels, order = view.sat_group(color_by)

    return MapData(
        slice=k, time_s=db.slice_time(k), sat_names=db.sat_names, sat_lat=lat[0], sat_lon=lon[0],
        sat_group=labels, groups=order, links=cur, links_down=down,
        ground=[(g.name, g.kind, g.lat, g.lon) for g in db.ground],
        serving=[(g, int(s)) for g, row in enumerate(ground_links) for s in row if s >= 0],
        polar_lat_deg=view.polar_lat_deg, ew_off=view.ew_off(links),
        title=f"{db.meta['scenario_name']}: slice {k} (t = {db.slice_time(k):.0f} s)")


@dataclass
class PathData:
    """One slice's path between two nodes: every hop, where it is, and the direction it leaves by."""

    src: str
    dst: str
    slice: int
    reachable: bool
    reason: str | None
    one_way_ms: float | None
    hops: list[tuple[str, float, float, str | None, float]]  # (node, lat, lon, egress, delay_ms); NaN: not on the map

    def csv(self) -> tuple[list[str], list[list]]:
        return (["hop", "node", "lat", "lon", "egress", "delay_ms"],
                [[i, n, la, lo, eg or "", d] for i, (n, la, lo, eg, d) in enumerate(self.hops)])


def path_data(view: PlanView, m: MapData, src: str, dst: str, finder: PathFinder | None = None) -> PathData:
    """The plan's path (:class:`emu.plan.path.PathFinder`) placed on map ``m``: devices at their terminal,
    satellites where they are; cores and the Internet have no place (NaN)."""
    pf = finder or PathFinder(view.db)
    r = pf.path(src, dst, m.slice)
    where = {n: (la, lo) for n, _k, la, lo in m.ground}
    where.update({n: (float(la), float(lo)) for n, la, lo in zip(m.sat_names, m.sat_lat, m.sat_lon)})
    for dev, ut in pf.device_ut.items():
        where[dev] = where[ut]
    hops = [(h["node"], *where.get(h["node"], (math.nan, math.nan)), h["egress"], float(h["delay_ms"]))
            for h in r["hops"]]
    return PathData(src, dst, m.slice, bool(r["reachable"]), r.get("reason"), r["one_way_delay_ms"], hops)


# ============================================================================ delay over time
@dataclass
class RttSeries:
    """Planned round-trip delay of one pair per slice (twice the plan's one-way delay), handovers on its way."""

    src: str
    dst: str
    time_s: np.ndarray
    planned_rtt_ms: np.ndarray  # NaN where unreachable
    handover_s: list[float] = field(default_factory=list)  # serving-satellite changes of ground nodes on the path
    gs_change_s: list[float] = field(default_factory=list)  # the path's ground station changes
    measured_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    measured_rtt_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def label(self) -> str:
        return f"{self.src} \u2192 {self.dst}"


@dataclass
class RttData:
    series: list[RttSeries]
    title: str = ""

    def csv(self) -> tuple[list[str], list[list]]:
        rows = []
        for s in self.series:
            rows += [[s.src, s.dst, "planned_rtt", t, v] for t, v in zip(s.time_s.tolist(), s.planned_rtt_ms.tolist())]
            rows += [[s.src, s.dst, "handover", t, ""] for t in s.handover_s]
            rows += [[s.src, s.dst, "gs_change", t, ""] for t in s.gs_change_s]
            rows += [[s.src, s.dst, "measured_rtt", t, v] for t, v in zip(s.measured_s.tolist(),
                                                                          s.measured_rtt_ms.tolist())]
        return ["src", "dst", "series", "time_s", "rtt_ms"], rows


def rtt_data(view: PlanView, pairs: list[tuple[str, str]], measured: list[dict] | None = None) -> RttData:
    """``measured``: samples ``{"src", "dst", "time_s", "rtt_ms"}`` (see :mod:`emu.viz.results`)."""
    db = view.db
    pf = PathFinder(db)
    times = view.slice_times()
    ho = db.handovers()
    out = []
    for src, dst in pairs:
        rtt, gs_seen, on_path = [], [], []
        ends = {pf.ground_by_name[pf.device_ut.get(n, n)].idx for n in (src, dst)
                if pf.device_ut.get(n, n) in pf.ground_by_name}
        for k in range(db.n_slices):
            r = pf.path(src, dst, k)
            rtt.append(2 * r["one_way_delay_ms"] if r["reachable"] else math.nan)
            names = [h["node"] for h in r["hops"]]
            gs_seen.append(next((n for n in names if n in pf.ground_by_name and pf.ground_by_name[n].kind == "gs"), None))
            on_path.append(ends | {pf.ground_by_name[n].idx for n in names if n in pf.ground_by_name})
        # a ground node's serving-satellite change matters to the pair while the node is on its path
        hand = sorted({float(times[k]) for k, node, _f, _t in ho
                       if node in on_path[k] or (k > 0 and node in on_path[k - 1])})
        gsc = [float(times[k]) for k in range(1, len(gs_seen)) if gs_seen[k] != gs_seen[k - 1]
               and gs_seen[k] is not None and gs_seen[k - 1] is not None]
        m = [s for s in (measured or []) if s["src"] == src and s["dst"] == dst]
        out.append(RttSeries(src, dst, times, np.array(rtt, dtype=float), hand, gsc,
                             np.array([s["time_s"] for s in m], dtype=float),
                             np.array([s["rtt_ms"] for s in m], dtype=float)))
    return RttData(out, f"{db.meta['scenario_name']}: round-trip delay over time")


# ============================================================================ handovers
HANDOVER_KINDS = ("intra", "inter")  # intra-SNO, inter-SNO (spec: inter-sno-mobility-framework §3.3)
ALL_UTS = "all UTs"


@dataclass
class HandoverData:
    """Intra- and inter-SNO handovers per served user-hour for each user terminal under each association
    policy, plus the satellite changes per hour of each ground station (policy-independent).

    ``per_ut[(policy, kind)]`` holds one rate per entry of ``uts``; ``uts[0]`` is :data:`ALL_UTS`, the
    policy's rate over all user terminals. Every number is the ``leo-emu handovers --format json`` value
    (:func:`emu.plan.handover.handover_report`), not recomputed.
    """

    uts: list[str]
    per_ut: dict[tuple[str, str], list[float]]
    gss: list[str]
    gs_per_hour: list[float]
    title: str = ""

    @property
    def policies(self) -> list[str]:
        return list(dict.fromkeys(p for p, _k in self.per_ut))

    def csv(self) -> tuple[list[str], list[list]]:
        rows = [[u, "ut", pol, kind, rates[i]] for (pol, kind), rates in self.per_ut.items()
                for i, u in enumerate(self.uts)]
        rows += [[g, "gs", "", "satellite", r] for g, r in zip(self.gss, self.gs_per_hour)]
        return ["node", "kind", "policy", "handover", "per_hour"], rows


def handover_data(view: PlanView) -> HandoverData:
    """Per user terminal and policy: the ``handovers`` command's intra/inter-SNO rates per served user-hour;
    per ground station: serving-satellite changes per hour from the plan's handover table."""
    from emu.plan.association import POLICIES
    from emu.plan.handover import handover_report

    db = view.db
    rep = handover_report(db)
    uts = [ALL_UTS] + [u["ut"] for u in rep["per_ut"]]
    per_ut = {(p, kind): [rep[p][f"{kind}_per_user_hour"]] + [u[p][f"{kind}_per_user_hour"] for u in rep["per_ut"]]
              for p in POLICIES for kind in HANDOVER_KINDS}
    hours = db.n_slices * db.slice_s / 3600.0
    gs = [i for i, g in enumerate(db.ground) if g.kind == "gs"]
    counts = np.zeros(len(db.ground))
    for _k, node, _f, _t in db.handovers():
        counts[node] += 1
    return HandoverData(uts, per_ut, [db.ground[i].name for i in gs], [round(counts[i] / hours, 4) for i in gs],
                        f"{db.meta['scenario_name']}: handovers per hour ({hours * 60:.0f} min planned)")


# ============================================================================ table sizes
@dataclass
class TableData:
    """Per-satellite table size per slice: aggregated (as installed) and not (one entry per destination)."""

    time_s: np.ndarray
    aggregated: np.ndarray  # (slices, satellites)
    unaggregated: np.ndarray
    title: str = ""

    def stats(self, which: np.ndarray) -> dict[str, np.ndarray]:
        return {"min": which.min(axis=1), "median": np.median(which, axis=1), "max": which.max(axis=1)}

    def csv(self) -> tuple[list[str], list[list]]:
        a, u = self.stats(self.aggregated), self.stats(self.unaggregated)
        head = ["time_s", "aggregated_min", "aggregated_median", "aggregated_max",
                "unaggregated_min", "unaggregated_median", "unaggregated_max"]
        rows = [[t, a["min"][i], a["median"][i], a["max"][i], u["min"][i], u["median"][i], u["max"][i]]
                for i, t in enumerate(self.time_s.tolist())]
        return head, rows


def table_data(view: PlanView) -> TableData:
    db = view.db
    agg, raw = zip(*(view.table_sizes(k) for k in range(db.n_slices)))
    return TableData(view.slice_times(), np.array(agg), np.array(raw),
                     f"{db.meta['scenario_name']}: routing-table entries per satellite")


__all__ = ["PlanView", "MapData", "PathData", "RttData", "RttSeries", "HandoverData",
           "TableData", "ALL_UTS", "HANDOVER_KINDS", "map_data", "path_data", "rtt_data", "handover_data", "table_data",
           "LINK_CLASSES"]
