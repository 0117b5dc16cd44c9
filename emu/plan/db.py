"""The route database: one SQLite file (spec: grc-based-routing §Routing Database).

It holds the scenario (text and digest), the ephemeris (element sets used),
slices with every satellite's routing table, attachments, handover events,
link deltas, bindings, GRC <-> coordinates, the multi-source mapping table,
and the signatures (see :mod:`emu.plan.sign`).

Per slice, the columnar tables of all satellites are stored zlib-compressed
(a 1,584-satellite slice is ~1.4 MB raw, ~0.1 MB compressed); the signed
manifest holds one SHA-256 per satellite table, so a change to any entry is
found and named.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from sgp4 import exporter

from emu.errors import PlanError
from emu.plan import sign as signmod
from emu.plan.planner import LINK_DTYPE, Plan, SlicePlan
from emu.plan.shortest import PAIR_DTYPE
from emu.plan.routing import SliceTables

FORMAT_VERSION = "3"  # 3: several ground links per ground station (serving is (nodes, antennas)), visible, pairs

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE operators(idx INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, owner_code INTEGER NOT NULL,
                       user_pool TEXT NOT NULL);
CREATE TABLE satellites(idx INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, shell INTEGER NOT NULL,
                        plane INTEGER NOT NULL, sat INTEGER NOT NULL, owner INTEGER NOT NULL);
CREATE TABLE ground_nodes(idx INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, kind TEXT NOT NULL,
                          operator INTEGER NOT NULL, lat REAL NOT NULL, lon REAL NOT NULL, grc INTEGER NOT NULL,
                          plen INTEGER NOT NULL, device TEXT);
CREATE TABLE ephemeris(sat INTEGER PRIMARY KEY, line1 TEXT NOT NULL, line2 TEXT NOT NULL);
CREATE TABLE slices(k INTEGER PRIMARY KEY, time_s REAL NOT NULL, entries INTEGER NOT NULL,
                    raw_entries INTEGER NOT NULL, disconnected INTEGER NOT NULL,
                    tables BLOB NOT NULL, links BLOB NOT NULL, links_added BLOB NOT NULL,
                    links_removed BLOB NOT NULL, serving BLOB NOT NULL, gs_choice BLOB NOT NULL,
                    bound_grc BLOB NOT NULL, visible BLOB NOT NULL, pairs BLOB NOT NULL,
                    manifest BLOB NOT NULL, signature BLOB NOT NULL);
CREATE TABLE attachments(k INTEGER NOT NULL, node INTEGER NOT NULL, sat INTEGER NOT NULL,
                         elevation_deg REAL, range_km REAL, rank INTEGER NOT NULL, PRIMARY KEY(k, node, rank));
CREATE TABLE handovers(k INTEGER NOT NULL, node INTEGER NOT NULL, from_sat INTEGER NOT NULL,
                       to_sat INTEGER NOT NULL);
CREATE TABLE grc_coords(grc INTEGER NOT NULL, plen INTEGER NOT NULL, cell TEXT NOT NULL, lat REAL NOT NULL,
                        lon REAL NOT NULL, kind TEXT NOT NULL, name TEXT, PRIMARY KEY(grc, plen, kind));
CREATE TABLE mapping(prefix TEXT NOT NULL, operator TEXT NOT NULL, candidates TEXT NOT NULL,
                     PRIMARY KEY(prefix, operator));
CREATE TABLE signatures(what TEXT PRIMARY KEY, digest BLOB NOT NULL, signature BLOB NOT NULL);
"""


def _pack(*arrays: np.ndarray) -> bytes:
    parts = []
    for a in arrays:
        b = np.ascontiguousarray(a).tobytes()
        parts.append(len(b).to_bytes(8, "little") + b)
    return zlib.compress(b"".join(parts), 1)


def _unpack(blob: bytes, *dtypes) -> list[np.ndarray]:
    raw = zlib.decompress(blob)
    out, pos = [], 0
    for dt in dtypes:
        n = int.from_bytes(raw[pos:pos + 8], "little")
        pos += 8
        out.append(np.frombuffer(raw[pos:pos + n], dtype=dt).copy())
        pos += n
    return out


def _links_key(links: np.ndarray) -> np.ndarray:
    return links["a"].astype(np.int64) << 32 | links["b"].astype(np.int64) << 3 | links["dir_a"].astype(np.int64)


def write_plan(plan: Plan, path: Path, key=None, keep_key: bool = False) -> Path:
    """Write ``plan`` to a new SQLite file at ``path`` (replacing it); returns the private-key path if kept."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    key = key or signmod.new_key()
    sc = plan.loaded.scenario
    con = sqlite3.connect(tmp)
    try:
        con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        meta = {
            "format_version": FORMAT_VERSION,
            "scenario_name": sc.name,
            "scenario_digest": plan.loaded.digest,
            "scenario_yaml": plan.loaded.raw.decode("utf-8"),
            "scenario_path": str(plan.loaded.path),
            "epoch": sc.time.epoch.isoformat(),
            "slice_s": repr(sc.time.slice_s),
            "slices": str(len(plan.slices)),
            "grc_level": str(plan.bind.level),
            "routing": sc.routing.model_dump_json(),
            "public_key": signmod.public_bytes(key).hex(),
            "wall_s": f"{plan.wall_s:.3f}",
        }
        con.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
        con.executemany("INSERT INTO operators VALUES (?, ?, ?, ?)",
                        [(i, o.name, o.owner_code, o.user_pool) for i, o in enumerate(sc.operators)])
        c = plan.series.constellation
        con.executemany("INSERT INTO satellites VALUES (?, ?, ?, ?, ?, ?)",
                        [(k, c.names[k], int(c.shell[k]), int(c.plane[k]), int(c.sat[k]), int(c.owner[k]))
                         for k in range(c.size)])
        g = plan.series.ground
        devices = {u.name: u.device for u in sc.user_terminals}
        con.executemany("INSERT INTO ground_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(i, g.names[i], g.kind[i], int(g.operator[i]), float(g.lat[i]), float(g.lon[i]),
                          int(plan.ground_grc[i]), int(plan.ground_plen[i]), devices.get(g.names[i]))
                         for i in range(g.size)])
        eph = [(k, *exporter.export_tle(r)) for k, r in enumerate(c.satrecs)]
        con.executemany("INSERT INTO ephemeris VALUES (?, ?, ?)", eph)
        _sign_row(con, key, "ephemeris", ephemeris_digest(eph))
        maprows = [(r.prefix, r.operator, json.dumps(r.candidates, sort_keys=True)) for r in plan.mapping]
        con.executemany("INSERT INTO mapping VALUES (?, ?, ?)", maprows)
        _sign_row(con, key, "mapping", mapping_digest(maprows))
        _write_grc_coords(con, plan)
        prev = None
        for sp in plan.slices:
            prev = _write_slice(con, plan, sp, prev, key)
        att = plan.attach
        rows = []
        for k in range(len(plan.slices)):
            for node, j in zip(*np.nonzero(att.links[k] >= 0)):
                rows.append((k, int(node), int(att.links[k, node, j]), float(att.link_elevation_deg[k, node, j]),
                             float(att.link_range_km[k, node, j]), int(j)))
        con.executemany("INSERT INTO attachments VALUES (?, ?, ?, ?, ?, ?)", rows)
        con.executemany("INSERT INTO handovers VALUES (?, ?, ?, ?)", att.handovers())
        _sign_row(con, key, "static", static_digest(con))
        con.commit()
    finally:
        con.close()
    tmp.replace(path)
    if keep_key:
        kp = path.with_name(path.name + ".key")
        signmod.write_private_key(key, kp)
        return kp
    return path


def ephemeris_digest(rows) -> bytes:
    return signmod.blob_digest(*[f"{k}\n{l1}\n{l2}".encode() for k, l1, l2 in rows])


def mapping_digest(rows) -> bytes:
    return signmod.blob_digest(*[f"{p}\n{o}\n{c}".encode() for p, o, c in sorted(rows)])


UNSIGNED_META = ("public_key", "wall_s", "scenario_path")


def static_digest(con) -> bytes:
    """Everything outside the slices that the data plane acts on: the scenario text and its settings,
    satellites, operators (user pools), ground nodes (GRCs), attachments (ranges: link delays), handovers."""
    parts = []
    marks = ",".join("?" * len(UNSIGNED_META))
    for sql, args in (
        (f"SELECT key, value FROM meta WHERE key NOT IN ({marks}) ORDER BY key", UNSIGNED_META),
        ("SELECT * FROM satellites ORDER BY idx", ()),
        ("SELECT * FROM operators ORDER BY idx", ()),
        ("SELECT * FROM ground_nodes ORDER BY idx", ()),
        ("SELECT * FROM attachments ORDER BY k, node, rank", ()),
        ("SELECT * FROM handovers ORDER BY k, node, from_sat, to_sat", ()),
    ):
        parts.append(repr(list(con.execute(sql, args))).encode())
    return signmod.blob_digest(*parts)


def _sign_row(con, key, what: str, digest: bytes) -> None:
    con.execute("INSERT INTO signatures VALUES (?, ?, ?)", (what, digest, signmod.sign(key, what.encode() + digest)))


def _write_grc_coords(con, plan: Plan) -> None:
    import h3

    from emu.addressing.grc import decode

    rows = []
    g = plan.series.ground
    for i in range(g.size):
        cell = decode(int(plan.ground_grc[i])).cell
        la, lo = h3.cell_to_latlng(cell)
        rows.append((int(plan.ground_grc[i]), int(plan.ground_plen[i]), cell, la, lo, g.kind[i], g.names[i]))
    for grc_v, cell in sorted(set(zip(plan.bind.grc.ravel().tolist(), plan.bind.cell.ravel().tolist()))):
        text = h3.int_to_str(int(cell))
        la, lo = h3.cell_to_latlng(text)
        rows.append((int(grc_v), 11 + 3 * plan.bind.level, text, la, lo, "satellite-binding", None))
    con.executemany("INSERT OR IGNORE INTO grc_coords VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def _write_slice(con, plan: Plan, sp: SlicePlan, prev_links, key) -> np.ndarray:
    T = sp.tables
    tables_blob = _pack(T.offsets.astype("<i8"), T.prefix.astype("<u4"), T.plen.astype("u1"), T.action.astype("<i8"))
    links = sp.links
    if prev_links is None:
        added, removed = links, np.zeros(0, dtype=LINK_DTYPE)
    else:
        cur_k, prev_k = _links_key(links), _links_key(prev_links)
        added = links[~np.isin(cur_k, prev_k)]
        removed = prev_links[~np.isin(prev_k, cur_k)]
    serving = plan.attach.links[sp.index].astype("<i4")  # (nodes, antennas), -1: idle; column 0 primary
    bound = plan.bind.grc[sp.index].astype("<u4")
    v = plan.series.visibility
    lo, hi = plan.series._vis_bounds[sp.index], plan.series._vis_bounds[sp.index + 1]
    visible = np.zeros(hi - lo, dtype=VISIBLE_DTYPE)
    visible["node"], visible["sat"], visible["range_km"] = v.node[lo:hi], v.sat[lo:hi], v.range_km[lo:hi]
    pairs = sp.pairs if sp.pairs is not None else np.zeros(0, dtype=PAIR_DTYPE)
    blobs = {
        "links": _pack(links), "links_added": _pack(added), "links_removed": _pack(removed),
        "serving": _pack(np.array(serving.shape, "<i4"), serving), "gs_choice": _pack(sp.gs_choice.astype("<i4")),
        "bound_grc": _pack(bound), "visible": _pack(visible), "pairs": _pack(pairs),
    }
    manifest = b"".join(signmod.table_digests(T)) + slice_extras_digest(links, serving, sp.gs_choice, bound,
                                                                        visible, pairs)
    sig = signmod.sign(key, signmod.slice_message(plan.loaded.digest, sp.index, manifest))
    con.execute("INSERT INTO slices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sp.index, sp.time_s, int(T.sizes.sum()), int(sp.raw_entries.sum()), sp.disconnected, tables_blob,
                 blobs["links"], blobs["links_added"], blobs["links_removed"], blobs["serving"], blobs["gs_choice"],
                 blobs["bound_grc"], blobs["visible"], blobs["pairs"], manifest, sig))
    return links


VISIBLE_DTYPE = np.dtype([("node", "<i4"), ("sat", "<i4"), ("range_km", "<f8")])


def slice_extras_digest(links, serving, gs_choice, bound, visible, pairs) -> bytes:
    """Everything of a slice besides the tables: links, ground links (all antennas), GS choices, bindings,
    what each ground node sees, and the planned-vs-optimum pair delays."""
    return signmod.blob_digest(np.ascontiguousarray(links).tobytes(), np.asarray(serving, "<i4").tobytes(),
                               np.asarray(gs_choice, "<i4").tobytes(), np.asarray(bound, "<u4").tobytes(),
                               np.ascontiguousarray(visible).tobytes(), np.ascontiguousarray(pairs).tobytes())


@dataclass(frozen=True)
class GroundRow:
    idx: int
    name: str
    kind: str
    operator: int
    lat: float
    lon: float
    grc: int
    plen: int
    device: str | None


class PlanDB:
    """Read access to a route database."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PlanError(f"plan: no such file (got {str(path)!r})")
        try:
            self.con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self.meta = dict(self.con.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise PlanError(f"plan: not a leo-emu route database ({exc}) (got {str(path)!r})") from None
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise PlanError(f"plan: unsupported format version (got {self.meta.get('format_version')!r})")

    def close(self) -> None:
        self.con.close()

    @property
    def n_slices(self) -> int:
        return int(self.meta["slices"])

    @property
    def slice_s(self) -> float:
        return float(self.meta["slice_s"])

    @cached_property
    def sat_names(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT name FROM satellites ORDER BY idx")]

    @cached_property
    def sat_rows(self) -> list[tuple]:
        return list(self.con.execute("SELECT idx, name, shell, plane, sat, owner FROM satellites ORDER BY idx"))

    @cached_property
    def ground(self) -> list[GroundRow]:
        return [GroundRow(*r) for r in self.con.execute(
            "SELECT idx, name, kind, operator, lat, lon, grc, plen, device FROM ground_nodes ORDER BY idx")]

    @cached_property
    def ground_names(self) -> list[str]:
        return [g.name for g in self.ground]

    @cached_property
    def operators(self) -> list[tuple]:
        return list(self.con.execute("SELECT idx, name, owner_code, user_pool FROM operators ORDER BY idx"))

    def _slice_row(self, k: int, cols: str):
        if not 0 <= k < self.n_slices:
            raise PlanError(f"--slice: must be 0..{self.n_slices - 1} (got {k})")
        row = self.con.execute(f"SELECT {cols} FROM slices WHERE k = ?", (k,)).fetchone()
        if row is None:
            raise PlanError(f"slice {k} missing from the plan")
        return row

    def tables(self, k: int) -> SliceTables:
        (blob,) = self._slice_row(k, "tables")
        off, pre, pl, act = _unpack(blob, "<i8", "<u4", "u1", "<i8")
        return SliceTables(off, pre, pl, act)

    def links(self, k: int) -> np.ndarray:
        return _unpack(self._slice_row(k, "links")[0], LINK_DTYPE)[0]

    def link_delta(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        a, r = self._slice_row(k, "links_added, links_removed")
        return _unpack(a, LINK_DTYPE)[0], _unpack(r, LINK_DTYPE)[0]

    def serving(self, k: int) -> np.ndarray:
        """Primary serving satellite per ground node (-1: none)."""
        return self.ground_links(k)[:, 0].copy()

    def ground_links(self, k: int) -> np.ndarray:
        """(nodes, antennas): every satellite each ground node links to in slice k (-1: idle), primary first."""
        shape, flat = _unpack(self._slice_row(k, "serving")[0], "<i4", "<i4")
        return flat.reshape(int(shape[0]), int(shape[1]))

    def visible(self, k: int) -> np.ndarray:
        """VISIBLE_DTYPE rows: every (ground node, satellite above its mask, slant range) of slice k."""
        return _unpack(self._slice_row(k, "visible")[0], VISIBLE_DTYPE)[0]

    def pairs(self, k: int) -> np.ndarray:
        """PAIR_DTYPE rows: planned vs free-choice delay of each (UT, target) pair in slice k."""
        return _unpack(self._slice_row(k, "pairs")[0], PAIR_DTYPE)[0]

    def link_ranges(self, k: int) -> dict[tuple[int, int], float]:
        """(ground node, satellite) -> slant range km of every ground link in slice k."""
        return {(n, s): r for n, s, r in self.con.execute(
            "SELECT node, sat, range_km FROM attachments WHERE k = ?", (k,))}

    def gs_choice(self, k: int) -> np.ndarray:
        return _unpack(self._slice_row(k, "gs_choice")[0], "<i4")[0].reshape(-1, 2)

    def bound_grc(self, k: int) -> np.ndarray:
        return _unpack(self._slice_row(k, "bound_grc")[0], "<u4")[0]

    def slice_time(self, k: int) -> float:
        return float(self._slice_row(k, "time_s")[0])

    def handovers(self) -> list[tuple[int, int, int, int]]:
        return list(self.con.execute("SELECT k, node, from_sat, to_sat FROM handovers ORDER BY k, node"))

    def mapping(self) -> list[tuple[str, str, list[dict]]]:
        return [(p, o, json.loads(c)) for p, o, c in
                self.con.execute("SELECT prefix, operator, candidates FROM mapping ORDER BY prefix, operator")]

    def sat_index(self, text: str) -> int:
        """A satellite by name (sat0-3-7) or by semantic address (IPv6, MAC or 32-bit)."""
        names = {n: i for i, n in enumerate(self.sat_names)}
        if text in names:
            return names[text]
        from emu.addressing import semantic
        from emu.errors import AddressingError

        addr = None
        for parse in (semantic.parse_ipv6, semantic.parse_mac, semantic.parse_ipv4_semantic):
            try:
                addr = parse(text)
                break
            except (AddressingError, ValueError):
                continue
        if addr is not None:
            for idx, _name, shell, plane, sat, _owner in self.sat_rows:
                if (addr.shell, addr.orbit, addr.sat) == (shell, plane, sat):
                    return idx
        raise PlanError(f"--sat: no such satellite (got {text!r})")
