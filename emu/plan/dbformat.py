"""The route database's format, shared by its writer (:mod:`emu.plan.db`) and reader (:mod:`emu.plan.dbread`).

spec: grc-based-routing §Routing Database. The SQLite schema and its version,
how a slice's arrays are packed into its zlib blobs (and unpacked, damage
raising :class:`PlanInputError`), and the digest of a slice's non-table
arrays that its signed manifest holds (the tables' digests:
:func:`emu.plan.sign.table_digests`).
"""

from __future__ import annotations

import zlib

import numpy as np

from emu.errors import PlanInputError
from emu.plan import sign as signmod
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

SCHEMA_TABLES = tuple(line.split("(")[0].split()[-1] for line in SCHEMA.split(";") if "CREATE TABLE" in line)

VISIBLE_DTYPE = np.dtype([("node", "<i4"), ("sat", "<i4"), ("range_km", "<f8")])


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


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:100]


def unpack_core(blob: bytes) -> np.ndarray:
    """One slice's stored association: int16 operator index per satellite."""
    return _unpack(blob, "<i2")[0]


def unpack_tables(blob: bytes) -> SliceTables:
    """The tables of a packed slice (trusted: the planner's own blob)."""
    return SliceTables(*_unpack(blob, "<i8", "<u4", "u1", "<i8"))


def slice_extras_digest(links, serving, gs_choice, bound, visible, pairs) -> bytes:
    """Everything of a slice besides the tables: links, ground links (all antennas), GS choices, bindings,
    what each ground node sees, and the planned-vs-optimum pair delays."""
    return signmod.blob_digest(np.ascontiguousarray(links).tobytes(), np.asarray(serving, "<i4").tobytes(),
                               np.asarray(gs_choice, "<i4").tobytes(), np.asarray(bound, "<u4").tobytes(),
                               np.ascontiguousarray(visible).tobytes(), np.ascontiguousarray(pairs).tobytes())
