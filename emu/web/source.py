"""What the live map shows: per-slice frames from a plan, and which slice is current.

Two sources, one interface (``meta()``, ``state()``, ``frame(k)``):

- :class:`PlanReplay`: a plan file replayed, one slice every ``interval`` wall seconds, round and round;
- :class:`RunFollower`: a running emulator, read from its run records only (``run.json`` names the plan,
  ``status.json`` holds the current slice and the per-boundary apply times; see
  :mod:`emu.dataplane.state`): read-only, no root needed.

Frames (satellite positions, links by class, serving links, the chosen pairs'
paths) come from the plan through :mod:`emu.viz.data`, the same numbers the
figures draw.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

from emu.errors import InputError, PlanError
from emu.plan.db import PlanDB
from emu.plan.path import PathFinder
from emu.viz.data import LINK_CLASSES, PlanView


class Frames:
    """Per-slice JSON-ready frames of one plan."""

    def __init__(self, plan_path: str | Path, pairs: list[tuple[str, str]]):
        self.db = PlanDB(plan_path)
        self.view = PlanView(self.db)
        self.pf = PathFinder(self.db)
        if not pairs:
            dev = next((g.device for g in self.db.ground if g.kind == "ut" and g.device), None)
            pairs = [(dev, self.pf.inet)] if dev else []
        for pair in pairs:
            for n in pair:
                try:
                    self.pf.resolve(n)
                except PlanError:
                    raise InputError(f"--pair: unknown node (got {n!r})") from None
        self.pairs = pairs
        self.lat, self.lon = self.view.positions(range(self.db.n_slices))

    @property
    def n_slices(self) -> int:
        return self.db.n_slices

    def meta(self) -> dict:
        labels, groups = self.view.sat_group("operator")
        gi = {g: i for i, g in enumerate(groups)}
        return {
            "scenario": self.db.meta["scenario_name"], "n_slices": self.db.n_slices, "slice_s": self.db.slice_s,
            "satellites": self.db.sat_names, "sat_group": [gi[x] for x in labels], "groups": groups,
            "ground": [{"name": g.name, "kind": g.kind, "lat": g.lat, "lon": g.lon} for g in self.db.ground],
            "link_classes": list(LINK_CLASSES), "link_style": link_style_css(),
            "polar_lat_deg": self.view.polar_lat_deg,
            "pairs": [list(p) for p in self.pairs],
        }

    @lru_cache(maxsize=64)
    def frame(self, k: int) -> dict:
        if not 0 <= k < self.db.n_slices:
            raise InputError(f"slice: must be 0..{self.db.n_slices - 1} (got {k})")
        lat, lon = self.lat[k], self.lon[k]
        cls = {c: i for i, c in enumerate(LINK_CLASSES)}
        raw = self.db.links(k)
        links = [[int(r["a"]), int(r["b"]), cls[self.view.link_class(int(r["a"]), int(r["b"]), int(r["dir_a"]))]]
                 for r in raw]
        # every ground link: a ground station's antennas link it to several satellites at once
        serving = [[g, int(s)] for g, row in enumerate(self.db.ground_links(k)) for s in row if s >= 0]
        where = {g.name: (g.lat, g.lon) for g in self.db.ground}
        where.update({n: (float(lat[i]), float(lon[i])) for i, n in enumerate(self.db.sat_names)})
        for dev, ut in self.pf.device_ut.items():
            where[dev] = where[ut]
        paths = []
        for src, dst in self.pairs:
            r = self.pf.path(src, dst, k)
            hops = [{"node": h["node"], "egress": h["egress"], "delay_ms": round(h["delay_ms"], 3),
                     "lat": where.get(h["node"], (None, None))[0], "lon": where.get(h["node"], (None, None))[1]}
                    for h in r["hops"]]
            paths.append({"src": src, "dst": dst, "reachable": r["reachable"], "reason": r.get("reason"),
                          "one_way_ms": r["one_way_delay_ms"], "hops": hops})
        return {"slice": k, "time_s": self.db.slice_time(k),
                "sats": [[round(float(a), 3), round(float(b), 3)] for a, b in zip(lat, lon)],
                "links": links, "serving": serving, "paths": paths, "ew_off": self.view.ew_off(raw)}


def link_style_css() -> dict[str, list]:
    """The figures' link styles (:data:`emu.viz.figures.LINK_STYLE`) as SVG stroke, dash array and width (px)."""
    from matplotlib.colors import to_hex

    from emu.viz.figures import LINK_STYLE

    dash = {"-": "", "--": "5 3", ":": "2 2", "-.": "5 2 1 2"}
    return {c: [to_hex(col), dash[ls], round(1.6 * lw, 2)] for c, (col, ls, lw) in LINK_STYLE.items()}


class Measured:
    """A results file (:mod:`emu.viz.results`) that a probe appends to while the map runs: re-read when it
    changes; the last ``keep`` samples of each pair are shown. A file not there yet, or cut mid-record, leaves
    the last good reading and says why."""

    def __init__(self, path: str | Path, slice_s: float, keep: int = 40):
        self.path, self.slice_s, self.keep = Path(path), slice_s, keep
        self.stamp = None
        self.by_pair: dict[str, list] = {}
        self.error: str | None = None

    def read(self) -> dict:
        from emu.viz.results import load_results

        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            return {"file": str(self.path), "pairs": self.by_pair, "error": "no such file yet"}
        if stamp != self.stamp:
            try:
                samples = load_results(self.path, self.slice_s)
                by: dict[str, list] = {}
                for x in samples:
                    by.setdefault(f"{x['src']}>{x['dst']}", []).append([round(x["time_s"], 3), round(x["rtt_ms"], 3)])
                self.by_pair = {k: sorted(v)[-self.keep:] for k, v in by.items()}
                self.stamp, self.error = stamp, None
            except InputError as exc:
                self.error = str(exc)
        return {"file": str(self.path), "pairs": self.by_pair, "error": self.error}


class PlanReplay:
    """A plan replayed slice by slice on the wall clock."""

    def __init__(self, plan_path: str | Path, pairs, interval_s: float, clock=time.monotonic, results=None):
        self.frames = Frames(plan_path, pairs)
        self.measured = Measured(results, self.frames.db.slice_s) if results else None
        self.plan_path = str(plan_path)
        self.interval_s = interval_s
        self.clock = clock
        self.t0 = clock()

    def describe(self) -> str:
        return f"replaying {self.plan_path}, {self.interval_s:g} s per slice"

    def state(self) -> dict:
        k = int((self.clock() - self.t0) / self.interval_s) % self.frames.n_slices
        return {"mode": "replay", "state": "replaying", "slice": k, "source": self.plan_path, "applied": [],
                "measured": self.measured.read() if self.measured else None}


class RunFollower:
    """A running emulator, followed through its run records (``run.json``, ``status.json``)."""

    def __init__(self, run, pairs, results=None):
        self.run = run
        info = run.read_json("run.json")
        if not info.get("plan"):
            raise InputError(f"run: no run.json with a plan in {run.dir} (got {sorted(info)})")
        self.info = info
        self.frames = Frames(info["plan"], pairs)
        self.measured = Measured(results, self.frames.db.slice_s) if results else None

    def describe(self) -> str:
        return f"following run {self.run.run_id} (plan {self.info['plan']})"

    def state(self) -> dict:
        st = self.run.read_json("status.json")
        k = st.get("slice")
        applied = st.get("applied") or []
        return {"mode": "run", "state": st.get("state", "unknown"), "run": self.run.run_id,
                "slice": k if isinstance(k, int) and 0 <= k < self.frames.n_slices else None,
                "applied": applied[-30:], "apply_p50_ms": st.get("apply_p50_ms"), "apply_p99_ms": st.get("apply_p99_ms"),
                "apply_max_ms": st.get("apply_max_ms"), "speed": self.info.get("speed"), "error": st.get("error"),
                "source": self.info["plan"], "measured": self.measured.read() if self.measured else None}


def open_source(source: str | None, pairs, interval_s: float, results: str | None = None):
    """A plan file (replayed), a run directory, or a run id (default: the one run that is up); ``results``: a
    file of measured RTTs to show as it grows."""
    from emu.dataplane.state import Run, find_run

    if source and Path(source).is_file():
        return PlanReplay(source, pairs, interval_s, results=results)
    if source and Path(source).is_dir():
        p = Path(source).resolve()
        return RunFollower(Run(p.name, p.parent), pairs, results)
    if source and ("/" in source or source.endswith(".db")):
        raise InputError(f"SOURCE: no such plan file or run directory (got {source!r})")
    return RunFollower(find_run(source), pairs, results)
