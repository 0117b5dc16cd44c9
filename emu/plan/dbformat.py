"""The route database's format, shared by its writer (:mod:`emu.plan.db`) and reader (:mod:`emu.plan.dbread`).

spec: grc-based-routing §Routing Database. The SQLite schema and its version,
how a slice's arrays are packed into its zlib blobs (and unpacked, damage
raising :class:`PlanInputError`), and the digest of a slice's non-table
arrays that its signed manifest holds (the tables' digests:
:func:`emu.plan.sign.table_digests`, over the decoded columns, so they do not
depend on how the tables are stored).

A slice's tables (:func:`pack_tables`) are stored dictionary-coded: a shell-1
slice has ~278k entries but only ~2,400 distinct (prefix, length) pairs and
~220 distinct actions, so each entry is two narrow indexes into the sorted
distinct values instead of 13 bytes (raw 3.6 -> 0.9 MB, zlib level 1 three
times faster to write and to read, the blob less than half the size).
"""

from __future__ import annotations

import zlib

import numpy as np

from emu.errors import PlanInputError
from emu.plan import sign as signmod
from emu.plan.routing import SliceTables

FORMAT_VERSION = "6"  # 3: the signed seal; 4: several ground links per ground station (serving is (nodes, antennas)),
# visible, pairs; 5: satellites are destinations by their semantic address (emu.addressing.satgrc), meta shell_codes;
# 6: a slice's tables dictionary-coded (pack_tables)

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


def _frames(blob: bytes, count: int) -> list[memoryview]:
    """The ``count`` length-prefixed byte strings of a :func:`_pack` blob (ValueError, zlib.error: damaged)."""
    raw = memoryview(zlib.decompress(blob))
    out, pos = [], 0
    for _ in range(count):
        n = int.from_bytes(raw[pos:pos + 8], "little")
        pos += 8
        if pos + n > len(raw):
            raise ValueError("truncated")
        out.append(raw[pos:pos + n])
        pos += n
    if pos != len(raw):
        raise ValueError("trailing bytes")
    return out


def _unpack(blob: bytes, *dtypes, what: str = "blob") -> list[np.ndarray]:
    try:
        return [np.frombuffer(f, dtype=dt).copy() for f, dt in zip(_frames(blob, len(dtypes)), dtypes)]
    except (zlib.error, ValueError, TypeError) as exc:
        raise PlanInputError(f"plan: {what} is damaged ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:100]


def unpack_core(blob: bytes) -> np.ndarray:
    """One slice's stored association: int16 operator index per satellite."""
    return _unpack(blob, "<i2")[0]


def _index_dtype(n_values: int) -> str:
    """The narrowest index type for a dictionary of ``n_values`` values."""
    return "u1" if n_values <= 1 << 8 else "<u2" if n_values <= 1 << 16 else "<u4"


def pack_tables(tables: SliceTables) -> bytes:
    """A slice's tables as stored: offsets (<i8), the sorted distinct (prefix << 8 | length) pairs (<u8) and
    each entry's index among them, the sorted distinct actions (<i8) and each entry's index among them (the
    indexes in the narrowest of u1, <u2, <u4 that holds them, :func:`_index_dtype`)."""
    from emu.plan.kernels import dictionary  # compiled: only where a plan is written

    pairs = (np.asarray(tables.prefix, dtype=np.uint64) << np.uint64(8)) | np.asarray(tables.plen, dtype=np.uint64)
    pair_values, pair_index = dictionary(pairs)
    act_values, act_index = dictionary(np.asarray(tables.action, dtype=np.int64))
    return _pack(np.asarray(tables.offsets, "<i8"), pair_values.astype("<u8"),
                 pair_index.astype(_index_dtype(len(pair_values))), act_values.astype("<i8"),
                 act_index.astype(_index_dtype(len(act_values))))


def unpack_tables(blob: bytes, what: str = "tables") -> SliceTables:
    """The tables of a :func:`pack_tables` blob; a blob that does not decode raises PlanInputError (whether
    the offsets fit the satellites is the reader's check, :meth:`emu.plan.dbread.PlanDB.tables`)."""
    try:
        off, pair_values, pair_index, act_values, act_index = _frames(blob, 5)
        off = np.frombuffer(off, "<i8")
        pair_values = np.frombuffer(pair_values, "<u8")
        act_values = np.frombuffer(act_values, "<i8")
        pair_index = np.frombuffer(pair_index, _index_dtype(len(pair_values)))
        act_index = np.frombuffer(act_index, _index_dtype(len(act_values)))
        if len(pair_index) != len(act_index) or (pair_values >> np.uint64(40)).any():
            raise ValueError("columns disagree")
        pairs = pair_values.take(pair_index)  # IndexError: an index beyond its dictionary
        action = act_values.take(act_index)
    except (zlib.error, ValueError, TypeError, IndexError) as exc:
        raise PlanInputError(f"plan: {what} is damaged ({_short(exc)})") from None
    return SliceTables(off.copy(), (pairs >> np.uint64(8)).astype(np.uint32), (pairs & np.uint64(0xFF)).astype(np.uint8),
                       action)


def slice_extras_digest(links, serving, gs_choice, bound, visible, pairs) -> bytes:
    """Everything of a slice besides the tables: links, ground links (all antennas), GS choices, bindings,
    what each ground node sees, and the planned-vs-optimum pair delays."""
    return signmod.blob_digest(np.ascontiguousarray(links).tobytes(), np.asarray(serving, "<i4").tobytes(),
                               np.asarray(gs_choice, "<i4").tobytes(), np.asarray(bound, "<u4").tobytes(),
                               np.ascontiguousarray(visible).tobytes(), np.ascontiguousarray(pairs).tobytes())
