"""The route database: one SQLite file (spec: grc-based-routing §Routing Database).

It holds the scenario (text and digest), the ephemeris (element sets used),
slices with every satellite's routing table, attachments, handover events,
link deltas, bindings, GRC <-> coordinates, the multi-source mapping table,
and the signatures (see :mod:`emu.plan.sign`).

Per slice, the columnar tables of all satellites are stored zlib-compressed
(a 1,584-satellite slice is ~1.4 MB raw, ~0.1 MB compressed); the signed
manifest holds one SHA-256 per satellite table, so a change to any entry is
found and named. The last write is the seal (:func:`emu.plan.sign.seal`): one
signed manifest over every row of every table, so a table added to
:data:`SCHEMA` or by ``write_plan`` is covered without further code.

:class:`PlanDB` reads a plan defensively: a file that is not a route database
of this format, or is damaged, raises :class:`PlanInputError` (one line, exit
code 2) naming what is wrong, never a traceback.
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

from emu.addressing.grc import check_shell_code as grc_check_shell_code
from emu.addressing.grc import shell_code as grc_shell_code
from emu.errors import InputError, PlanInputError, echo
from emu.plan import sign as signmod
from emu.plan.planner import LINK_DTYPE, Plan, SlicePlan
from emu.plan.shortest import PAIR_DTYPE
from emu.plan.routing import SliceTables

FORMAT_VERSION = "5"  # 3: the signed seal; 4: several ground links per ground station (serving is (nodes, antennas)),
# visible, pairs; 5: satellites are destinations by their semantic address (emu.addressing.satgrc), meta shell_codes

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
CREATE TABLE associations(policy TEXT NOT NULL, k INTEGER NOT NULL, core BLOB NOT NULL, PRIMARY KEY(policy, k));
CREATE TABLE signatures(what TEXT PRIMARY KEY, digest BLOB NOT NULL, signature BLOB NOT NULL);
"""


def _pack(*arrays: np.ndarray) -> bytes:
    parts = []
    for a in arrays:
        b = np.ascontiguousarray(a).tobytes()
        parts.append(len(b).to_bytes(8, "little") + b)
    return zlib.compress(b"".join(parts), 1)


def _unpack(blob: bytes, *dtypes, what: str = "blob") -> list[np.ndarray]:
    try:
        raw = zlib.decompress(blob)
        out, pos = [], 0
        for dt in dtypes:
            n = int.from_bytes(raw[pos:pos + 8], "little")
            pos += 8
            if pos + n > len(raw):
                raise ValueError("truncated")
            out.append(np.frombuffer(raw[pos:pos + n], dtype=dt).copy())
            pos += n
        if pos != len(raw):
            raise ValueError("trailing bytes")
    except (zlib.error, ValueError, TypeError) as exc:
        raise PlanInputError(f"plan: {what} is damaged ({_short(exc)})") from None
    return out


def _typed(rows: list[tuple], types: tuple) -> bool:
    """Every row has these Python types (a damaged page can turn a number into text)."""
    return all(len(r) == len(types) and all(isinstance(v, t) for v, t in zip(r, types)) for r in rows)


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:100]


def _links_key(links: np.ndarray) -> np.ndarray:
    return links["a"].astype(np.int64) << 32 | links["b"].astype(np.int64) << 3 | links["dir_a"].astype(np.int64)


def write_plan(plan: Plan, path: Path, key=None) -> Path:
    """Write ``plan`` to a new SQLite file at ``path`` (replacing it), signed with ``key``
    (default: a throw-away key, which ``up`` will not trust; the CLI passes the ground-control key).

    Written to ``path.tmp`` and renamed, so a plan file is always complete; a failure leaves nothing."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"--output: no such folder (got {echo(str(path.parent))})")
    tmp = path.with_name(path.name + ".tmp")
    key = key or signmod.new_key()
    try:
        if tmp.exists():
            tmp.unlink()
        con = sqlite3.connect(tmp)
        try:
            _write_all(con, plan, key)
            con.commit()
            signmod.seal(con, key, tmp)
            con.commit()
        finally:
            con.close()
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"--output: cannot write the plan: {exc.strerror} (got {echo(str(path))})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_all(con, plan: Plan, key) -> None:
    sc = plan.loaded.scenario
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
        "shell_codes": json.dumps([grc_shell_code(i, sc.grc.shell_codes) for i in range(len(sc.shells))]),
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
    con.executemany("INSERT INTO ephemeris VALUES (?, ?, ?)",
                    [(k, *exporter.export_tle(r)) for k, r in enumerate(c.satrecs)])
    con.executemany("INSERT INTO mapping VALUES (?, ?, ?)",
                    [(r.prefix, r.operator, json.dumps(r.candidates, sort_keys=True)) for r in plan.mapping])
    prev, coords = None, {}
    for sp in plan.slices:
        prev = _write_slice(con, plan, sp, prev, key, coords)
    _write_grc_coords(con, plan, coords)
    att = plan.attach
    k, node, j = np.nonzero(att.links[:len(plan.slices)] >= 0)  # slice by slice, node by node, antenna by antenna
    con.executemany("INSERT INTO attachments VALUES (?, ?, ?, ?, ?, ?)",
                    zip(k.tolist(), node.tolist(), att.links[k, node, j].astype(np.int64).tolist(),
                        att.link_elevation_deg[k, node, j].astype(float).tolist(),
                        att.link_range_km[k, node, j].astype(float).tolist(), j.tolist()))
    con.executemany("INSERT INTO handovers VALUES (?, ?, ?, ?)", att.handovers())
    con.executemany("INSERT INTO associations VALUES (?, ?, ?)", association_rows(plan))


def association_rows(plan: Plan) -> list[tuple[str, int, bytes]]:
    """(policy, slice, packed int16 core per satellite) for every policy (spec: inter-sno-mobility §4.3, §5)."""
    return [(policy, k, _pack(core[k].astype("<i2")))
            for policy, core in sorted(plan.association.items()) for k in range(len(plan.slices))]


def unpack_core(blob: bytes) -> np.ndarray:
    """One slice's stored association: int16 operator index per satellite."""
    return _unpack(blob, "<i2")[0]


def _write_grc_coords(con, plan: Plan, coords: dict[int, tuple]) -> None:
    """Every ground node's GRC, and every (GRC, cell) a satellite binds in some slice, with the cell's
    centre; ``coords``: slice -> :func:`binding_coords` of its bound cells where already computed."""
    import h3

    from emu.addressing.grc import decode

    rows = []
    g = plan.series.ground
    for i in range(g.size):
        cell = decode(int(plan.ground_grc[i])).cell
        la, lo = h3.cell_to_latlng(cell)
        rows.append((int(plan.ground_grc[i]), int(plan.ground_plen[i]), cell, la, lo, g.kind[i], g.names[i]))
    con.executemany("INSERT OR IGNORE INTO grc_coords VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    grc, cell = plan.bind.grc, plan.bind.cell
    n_sats = grc.shape[1]
    flat_g, flat_c = grc.ravel(), cell.ravel()
    order = np.lexsort((flat_c, flat_g))  # sorted (GRC, cell) pairs
    first = np.ones(len(order), dtype=bool)
    first[1:] = (flat_g[order][1:] != flat_g[order][:-1]) | (flat_c[order][1:] != flat_c[order][:-1])
    ks, ss = np.divmod(order[first], n_sats)
    lat, lon = np.zeros(grc.shape), np.zeros(grc.shape)
    for k in np.unique(ks).tolist():
        if k not in coords:
            coords[k] = binding_coords(cell[k])
        lat[k], lon[k] = coords[k][1], coords[k][2]
    texts = [coords[k][0][s] for k, s in zip(ks.tolist(), ss.tolist())]
    plen = 11 + 3 * plan.bind.level
    con.executemany("INSERT OR IGNORE INTO grc_coords VALUES (?, ?, ?, ?, ?, 'satellite-binding', NULL)",
                    zip(grc[ks, ss].tolist(), [plen] * len(ks), texts, lat[ks, ss].tolist(), lon[ks, ss].tolist()))


def binding_coords(cells: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The H3 text and centre (lat, lon) of each of a slice's bound cells."""
    import h3
    from h3.api import basic_int as h3i

    ints = np.asarray(cells).tolist()
    ll = np.array([h3i.cell_to_latlng(c) for c in ints], dtype=float).reshape(-1, 2)  # the text form's centre
    return [h3.int_to_str(c) for c in ints], ll[:, 0].copy(), ll[:, 1].copy()


@dataclass(frozen=True)
class PackedSlice:
    """A slice's route-database row before its signature: the packed blobs and the manifest, and the arrays
    they were made from (:func:`packed_row` uses it only while the slice still holds exactly those)."""

    of: tuple  # (tables or None: only packed, links, gs_choice, pairs, previous slice's links or None)
    entries: int
    sizes: np.ndarray  # entries per satellite
    blobs: dict
    manifest: bytes
    coords: tuple  # binding_coords of the slice's bound cells


def pack_slice(plan: Plan, sp: SlicePlan, prev_links: np.ndarray | None, keep_tables: bool = True) -> PackedSlice:
    """Everything of slice ``sp``'s row but the signature: blobs (zlib) and the manifest of digests
    (``keep_tables``: False when the slice will hold its tables only packed)."""
    T = sp.tables
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
        "tables": _pack(T.offsets.astype("<i8"), T.prefix.astype("<u4"), T.plen.astype("u1"), T.action.astype("<i8")),
        "links": _pack(links), "links_added": _pack(added), "links_removed": _pack(removed),
        "serving": _pack(np.array(serving.shape, "<i4"), serving), "gs_choice": _pack(sp.gs_choice.astype("<i4")),
        "bound_grc": _pack(bound), "visible": _pack(visible), "pairs": _pack(pairs),
    }
    manifest = b"".join(signmod.table_digests(T)) + slice_extras_digest(links, serving, sp.gs_choice, bound,
                                                                        visible, pairs)
    return PackedSlice((T if keep_tables else None, links, sp.gs_choice, sp.pairs, prev_links), int(T.sizes.sum()),
                       T.sizes, blobs, manifest, binding_coords(plan.bind.cell[sp.index]))


def unpack_tables(blob: bytes) -> SliceTables:
    """The tables of a packed slice (trusted: the planner's own blob)."""
    return SliceTables(*_unpack(blob, "<i8", "<u4", "u1", "<i8"))


def _packed(plan: Plan, sp: SlicePlan, prev_links) -> PackedSlice:
    """The worker's PackedSlice if the slice (and the previous one's links) still are what it was made of."""
    got = sp.packed
    if isinstance(got, PackedSlice):
        T, links, choice, pairs, prev = got.of
        same_tables = sp._tables is T if T is not None else (sp._tables is None or sp._from_packed)
        if same_tables and links is sp.links and choice is sp.gs_choice and pairs is sp.pairs and \
                (prev is None) == (prev_links is None) and (prev is None or np.array_equal(prev, prev_links)):
            return got
    return pack_slice(plan, sp, prev_links)


def _write_slice(con, plan: Plan, sp: SlicePlan, prev_links, key, coords: dict) -> np.ndarray:
    p = _packed(plan, sp, prev_links)
    coords[sp.index] = p.coords
    sig = signmod.sign(key, signmod.slice_message(plan.loaded.digest, sp.index, p.manifest))
    b = p.blobs
    con.execute("INSERT INTO slices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sp.index, sp.time_s, p.entries, int(sp.raw_entries.sum()), sp.disconnected, b["tables"],
                 b["links"], b["links_added"], b["links_removed"], b["serving"], b["gs_choice"],
                 b["bound_grc"], b["visible"], b["pairs"], p.manifest, sig))
    return sp.links


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


class _Rows(list):
    def fetchone(self):
        return self[0] if self else None

    def fetchall(self):
        return list(self)


class _GuardedConnection:
    """A read-only connection whose every failure (a damaged or foreign file) is one PlanInputError."""

    def __init__(self, path: Path):
        self.path = path
        try:
            from urllib.parse import quote

            self._con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise PlanInputError(f"plan: cannot open ({_short(exc)}) (got {echo(str(path))})") from None

    def execute(self, sql: str, args=()) -> _Rows:
        try:
            return _Rows(self._con.execute(sql, args).fetchall())
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # damaged pages: SQLite errors or broken text
            raise PlanInputError(f"plan: not a readable leo-emu route database ({_short(exc)}) "
                                 f"(got {echo(str(self.path))})") from None

    @property
    def raw(self) -> sqlite3.Connection:
        return self._con

    def close(self) -> None:
        self._con.close()


REQUIRED_META = ("format_version", "scenario_name", "scenario_digest", "scenario_yaml", "slice_s", "slices",
                 "grc_level", "routing", "public_key", "shell_codes")


class PlanDB:
    """Read access to a route database; opening checks its structure (tables, meta fields)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            what = "not a regular file" if self.path.exists() else "no such file"
            raise PlanInputError(f"plan: {what} (got {echo(str(path))})")
        self.con = _GuardedConnection(self.path)
        try:
            self._check_structure()
        except BaseException:
            self.con.close()
            raise

    def _check_structure(self) -> None:
        where = f"(got {echo(str(self.path))})"
        with open(self.path, "rb") as f:
            head = f.read(16)
        if head != b"SQLite format 3\x00":
            raise PlanInputError(f"plan: not an SQLite file, so not a route database {where}")
        present = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        expected = set(_SCHEMA_TABLES)
        missing = sorted(expected - present)
        if missing:
            raise PlanInputError(f"plan: not a leo-emu route database (no table {missing[0]}) {where}")
        self.meta = {str(k): v for k, v in self.con.execute("SELECT key, value FROM meta")}
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise PlanInputError(f"plan: unsupported format version {echo(self.meta.get('format_version'))}, "
                                 f"this leo-emu reads {FORMAT_VERSION}: re-plan it {where}")
        for k in REQUIRED_META:
            if not isinstance(self.meta.get(k), str):
                raise PlanInputError(f"plan: meta.{k} missing {where}")
        from emu.errors import ScenarioError
        from emu.scenario.load import parse_yaml

        try:
            if not isinstance(parse_yaml(self.meta["scenario_yaml"], "meta.scenario_yaml"), dict):
                raise PlanInputError(f"plan: meta.scenario_yaml is not a scenario {where}")
        except ScenarioError as exc:
            raise PlanInputError(f"plan: {exc} {where}") from None
        try:
            n = int(self.meta["slices"])
            slice_s = float(self.meta["slice_s"])
            bytes.fromhex(self.meta["public_key"])
            json.loads(self.meta["routing"])
        except (ValueError, RecursionError) as exc:
            raise PlanInputError(f"plan: meta field unreadable ({_short(exc)}) {where}") from None
        if len(self.meta["public_key"]) != 64:
            raise PlanInputError(f"plan: meta.public_key is not an Ed25519 key {where}")
        if not (n >= 1 and np.isfinite(slice_s) and slice_s > 0):
            raise PlanInputError(f"plan: meta.slices/slice_s out of range (slices {n}, slice_s {slice_s}) {where}")
        (rows,) = self.con.execute("SELECT COUNT(*) FROM slices").fetchone()
        if rows != n:
            raise PlanInputError(f"plan: holds {rows} slices, its header says {n} {where}")

    def close(self) -> None:
        self.con.close()

    @property
    def public_key(self) -> bytes:
        return bytes.fromhex(self.meta["public_key"])

    def seal_problems(self) -> list[str]:
        """What differs from the signed seal over every table (empty: intact). spec: grc-based-routing §Security."""
        try:
            return signmod.check_seal(self.con.raw, self.public_key, self.path)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise PlanInputError(f"plan: not a readable leo-emu route database ({_short(exc)}) "
                                 f"(got {echo(str(self.path))})") from None
        except (ValueError, KeyError, TypeError) as exc:  # a seal that is not the JSON it should be
            return [f"signature: the seal is unreadable ({_short(exc)})"]

    @property
    def n_slices(self) -> int:
        return int(self.meta["slices"])

    @property
    def slice_s(self) -> float:
        return float(self.meta["slice_s"])

    @cached_property
    def sat_names(self) -> list[str]:
        return [r[1] for r in self.sat_rows]

    @cached_property
    def sat_rows(self) -> list[tuple]:
        rows = list(self.con.execute("SELECT idx, name, shell, plane, sat, owner FROM satellites ORDER BY idx"))
        if [r[0] for r in rows] != list(range(len(rows))) or not rows or not _typed(rows, (int, str, int, int, int, int)):
            raise PlanInputError(f"plan: the satellites table is damaged (got {echo(str(self.path))})")
        return rows

    @cached_property
    def sat_addresses(self) -> np.ndarray:
        """Every satellite's own address (emu.addressing.satgrc), the destination of satellite-addressed traffic."""
        from emu.addressing import satgrc

        try:
            codes = [int(c) for c in json.loads(self.meta["shell_codes"])]
            shell = np.array([r[2] for r in self.sat_rows], dtype=np.int64)
            if not codes or shell.min() < 0 or shell.max() >= len(codes):
                raise ValueError("a satellite's shell has no code")
            for c in codes:
                grc_check_shell_code(c)
        except (ValueError, TypeError, InputError) as exc:
            raise PlanInputError(f"plan: meta shell_codes is damaged ({_short(exc)}) (got {echo(str(self.path))})") from None
        return satgrc.addresses(np.array(codes)[shell], [r[3] for r in self.sat_rows], [r[4] for r in self.sat_rows])

    @cached_property
    def ground(self) -> list[GroundRow]:
        raw = list(self.con.execute(
            "SELECT idx, name, kind, operator, lat, lon, grc, plen, device FROM ground_nodes ORDER BY idx"))
        rows = [GroundRow(*r) for r in raw]
        n_ops = len(self.operators)
        if [g.idx for g in rows] != list(range(len(rows))) or \
                not _typed(raw, (int, str, str, int, float, float, int, int, (str, type(None)))) or \
                any(not 0 <= g.operator < n_ops for g in rows):
            raise PlanInputError(f"plan: the ground_nodes table is damaged (got {echo(str(self.path))})")
        return rows

    @cached_property
    def ground_names(self) -> list[str]:
        return [g.name for g in self.ground]

    @cached_property
    def operators(self) -> list[tuple]:
        rows = list(self.con.execute("SELECT idx, name, owner_code, user_pool FROM operators ORDER BY idx"))
        if [r[0] for r in rows] != list(range(len(rows))) or not _typed(rows, (int, str, int, str)):
            raise PlanInputError(f"plan: the operators table is damaged (got {echo(str(self.path))})")
        return rows

    def check_slice(self, k: int, field: str = "--slice") -> int:
        if not 0 <= k < self.n_slices:
            raise InputError(f"{field}: must be 0..{self.n_slices - 1}, the plan's slices (got {k})")
        return k

    def _slice_row(self, k: int, cols: str):
        self.check_slice(k)
        row = self.con.execute(f"SELECT {cols} FROM slices WHERE k = ?", (k,)).fetchone()
        if row is None:
            raise PlanInputError(f"plan: slice {k} missing (got {echo(str(self.path))})")
        return row

    def _blob(self, k: int, col: str, *dtypes) -> list[np.ndarray]:
        return _unpack(self._slice_row(k, col)[0], *dtypes, what=f"slice {k} {col}")

    def tables(self, k: int) -> SliceTables:
        off, pre, pl, act = self._blob(k, "tables", "<i8", "<u4", "u1", "<i8")
        n = len(self.sat_names)
        if len(off) != n + 1 or off[0] != 0 or (np.diff(off) < 0).any() or off[-1] != len(pre) \
                or not len(pre) == len(pl) == len(act):
            raise PlanInputError(f"plan: slice {k} tables are damaged (got {echo(str(self.path))})")
        return SliceTables(off, pre, pl, act)

    def _check_links(self, k: int, links: np.ndarray) -> np.ndarray:
        n = len(self.sat_names)
        ok = all(((links[c] >= 0) & (links[c] < n)).all() for c in ("a", "b")) and \
            all(((links[c] >= 0) & (links[c] < 6)).all() for c in ("dir_a", "dir_b"))
        if not ok:
            raise PlanInputError(f"plan: slice {k} links are damaged (got {echo(str(self.path))})")
        return links

    def links(self, k: int) -> np.ndarray:
        return self._check_links(k, self._blob(k, "links", LINK_DTYPE)[0])

    def link_delta(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        a = self._check_links(k, self._blob(k, "links_added", LINK_DTYPE)[0])
        r = self._check_links(k, self._blob(k, "links_removed", LINK_DTYPE)[0])
        return a, r

    def serving(self, k: int) -> np.ndarray:
        """Primary serving satellite per ground node (-1: none)."""
        return self.ground_links(k)[:, 0].copy()

    def ground_links(self, k: int) -> np.ndarray:
        """(nodes, antennas): every satellite each ground node links to in slice k (-1: idle), primary first."""
        shape, flat = self._blob(k, "serving", "<i4", "<i4")
        if len(shape) != 2 or shape[0] != len(self.ground) or shape[1] < 1 or len(flat) != shape[0] * shape[1] \
                or ((flat < -1) | (flat >= len(self.sat_names))).any():
            raise PlanInputError(f"plan: slice {k} attachments are damaged (got {echo(str(self.path))})")
        return flat.reshape(int(shape[0]), int(shape[1]))

    def visible(self, k: int) -> np.ndarray:
        """VISIBLE_DTYPE rows: every (ground node, satellite above its mask, slant range) of slice k."""
        v = self._blob(k, "visible", VISIBLE_DTYPE)[0]
        if ((v["node"] < 0) | (v["node"] >= len(self.ground)) | (v["sat"] < 0) | (v["sat"] >= len(self.sat_names))
                | ~(v["range_km"] >= 0)).any():
            raise PlanInputError(f"plan: slice {k} visibility is damaged (got {echo(str(self.path))})")
        return v

    def pairs(self, k: int) -> np.ndarray:
        """PAIR_DTYPE rows: planned vs free-choice delay of each (UT, target) pair in slice k."""
        return self._blob(k, "pairs", PAIR_DTYPE)[0]

    def link_ranges(self, k: int) -> dict[tuple[int, int], float]:
        """(ground node, satellite) -> slant range km of every ground link in slice k."""
        self.check_slice(k)
        return {(n, s): r for n, s, r in self.con.execute(
            "SELECT node, sat, range_km FROM attachments WHERE k = ?", (k,))}

    def gs_choice(self, k: int) -> np.ndarray:
        g = self._blob(k, "gs_choice", "<i4")[0]
        if len(g) % 2 or ((g < -1) | (g >= len(self.ground))).any():
            raise PlanInputError(f"plan: slice {k} ground-station choices are damaged (got {echo(str(self.path))})")
        return g.reshape(-1, 2)

    def bound_grc(self, k: int) -> np.ndarray:
        b = self._blob(k, "bound_grc", "<u4")[0]
        if len(b) != len(self.sat_names):
            raise PlanInputError(f"plan: slice {k} bindings are damaged (got {echo(str(self.path))})")
        return b

    def slice_signature(self, k: int) -> tuple[bytes, bytes]:
        manifest, signature = self._slice_row(k, "manifest, signature")
        return bytes(manifest), bytes(signature)

    def slice_time(self, k: int) -> float:
        return float(self._slice_row(k, "time_s")[0])

    def handovers(self) -> list[tuple[int, int, int, int]]:
        return list(self.con.execute("SELECT k, node, from_sat, to_sat FROM handovers ORDER BY k, node"))

    def association(self, policy: str) -> np.ndarray:
        """core[k, s] under ``policy`` for every slice (emu.plan.association)."""
        try:
            rows = list(self.con.execute("SELECT k, core FROM associations WHERE policy = ? ORDER BY k", (policy,)))
        except sqlite3.DatabaseError:
            raise PlanInputError(f"plan: no association table (planned before associations existed; re-plan) "
                            f"(got {str(self.path)!r})") from None
        if len(rows) != self.n_slices or [k for k, _ in rows] != list(range(self.n_slices)):
            raise PlanInputError(f"plan: association {policy!r} does not cover every slice (got {len(rows)} of "
                            f"{self.n_slices})")
        try:
            return np.stack([unpack_core(b) for _, b in rows]).astype(np.int64)
        except (zlib.error, ValueError):
            raise PlanInputError(f"plan: association {policy!r} is unreadable (got {str(self.path)!r})") from None

    def mapping(self) -> list[tuple[str, str, list[dict]]]:
        try:
            return [(p, o, json.loads(c)) for p, o, c in
                    self.con.execute("SELECT prefix, operator, candidates FROM mapping ORDER BY prefix, operator")]
        except (ValueError, TypeError) as exc:
            raise PlanInputError(f"plan: the mapping table is damaged ({_short(exc)})") from None

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
        raise InputError(f"--sat: no such satellite in this plan (got {echo(text)})")


_SCHEMA_TABLES = tuple(line.split("(")[0].split()[-1] for line in SCHEMA.split(";") if "CREATE TABLE" in line)
