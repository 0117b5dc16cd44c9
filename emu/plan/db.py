"""The route database: one SQLite file (spec: grc-based-routing §Routing Database); here, writing it.

It holds the scenario (text and digest), the ephemeris (element sets used),
slices with every satellite's routing table, attachments, handover events,
link deltas, bindings, GRC <-> coordinates, the multi-source mapping table,
and the signatures (see :mod:`emu.plan.sign`).

Per slice, the columnar tables of all satellites are stored dictionary-coded
and zlib-compressed (:func:`emu.plan.dbformat.pack_tables`: a 1,584-satellite
slice with satellites as destinations is 3.6 MB of columns, 0.9 MB coded,
~0.14 MB compressed); the signed
manifest holds one SHA-256 per satellite table, so a change to any entry is
found and named. The last write is the seal (:func:`emu.plan.sign.seal`): one
signed manifest over every row of every table, so a table added to
:data:`SCHEMA` or by ``write_plan`` is covered without further code.

The schema and the blob layout: :mod:`emu.plan.dbformat`. Reading a plan
(:class:`PlanDB`, defensive: a damaged or foreign file is one
:class:`PlanInputError`, exit code 2): :mod:`emu.plan.dbread`. Both are
importable from here, as before (``from emu.plan.db import PlanDB``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sgp4 import exporter

from emu.addressing.grc import shell_code as grc_shell_code
from emu.errors import InputError, echo
from emu.plan import sign as signmod
from emu.plan.dbformat import FORMAT_VERSION, SCHEMA, VISIBLE_DTYPE, _pack, pack_tables, slice_extras_digest
from emu.plan.planner import LINK_DTYPE, Plan, SlicePlan
from emu.plan.shortest import PAIR_DTYPE

# re-exported: what ``from emu.plan.db import X`` gave before the reader and the format had modules of their own
from emu.plan.dbformat import SCHEMA_TABLES, _unpack, unpack_core, unpack_tables  # noqa: E402,F401
from emu.plan.dbread import REQUIRED_META, GroundRow, PlanDB  # noqa: E402,F401


def _links_key(links: np.ndarray) -> np.ndarray:
    return links["a"].astype(np.int64) << 32 | links["b"].astype(np.int64) << 3 | links["dir_a"].astype(np.int64)


def write_plan(plan: Plan, path: Path, key=None) -> Path:
    """Write ``plan`` to a new SQLite file at ``path`` (replacing it), signed with ``key``
    (default: a throw-away key, which ``up`` will not trust; the CLI passes the ground-control key).

    Written to ``path.tmp`` and renamed, so a plan file is always complete; a failure leaves nothing."""
    return PlanWriter(path, key).finish(plan)


class PlanWriter:
    """:func:`write_plan` in steps. :meth:`start_early` (optional, ``make_plan(head=...)``) writes the tables
    known once the bindings are (:data:`EARLY_TABLES`: the scenario's tables and the bindings' coordinates,
    most of the head's work) in a forked process; :meth:`start` writes, in a thread, the rest of what is
    known before the slices' tables (attachments, handovers, association; everything, without
    :meth:`start_early`), so it runs while forked workers plan the slices (``make_plan(before_slices=...)``);
    :meth:`finish` writes the slices and the meta row, seals and renames. Without :meth:`start`,
    :meth:`finish` writes what is left itself. A failure (or :meth:`abort`) leaves nothing."""

    def __init__(self, path: Path, key=None):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise InputError(f"--output: no such folder (got {echo(str(self.path.parent))})")
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.key = key or signmod.new_key()
        self.con: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._n: int | None = None
        self._known: dict[str, str] = {}  # seal digests of the head's tables, taken by the thread
        self._early = None  # (process, pipe end) of start_early

    def start_early(self, plan: Plan, n_slices: int) -> None:
        """Write :data:`EARLY_TABLES` and take their seal digests in a forked process: while the parent
        computes the free pass and the attachments (one core of two busy) and without taking the parent's
        GIL from the result handling later. Call it while no other thread of this process runs (a child
        forked while a thread holds a lock can hang on it): ``make_plan`` calls ``head`` there."""
        import multiprocessing

        self._n = n_slices
        ctx = multiprocessing.get_context("fork")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_write_early_process, args=(self.tmp, plan, send), name="plan-writer-head",
                           daemon=True)
        proc.start()
        send.close()
        self._early = (proc, recv)

    def start(self, plan: Plan, n_slices: int) -> None:
        """Write the part that does not depend on the slices' tables, in a thread (``n_slices``: how many
        slices the plan will have); after :meth:`start_early`, the part it did not write."""
        if self._early is None:
            self._run(self._open)
        self._n = n_slices

        def head() -> None:
            try:
                if self._early is None:
                    _write_head(self.con, plan, n_slices)
                    tables = HEAD_TABLES
                else:
                    self._known = self._early_digests()
                    self._open(fresh=False)
                    _write_late(self.con, plan, n_slices)
                    tables = LATE_TABLES
                # these tables are complete: their digests for the seal are taken here too
                self._known.update({t: signmod.table_digest_of(self.con, t) for t in tables})
            except BaseException as exc:  # raised again by finish
                self._error = exc

        self._thread = threading.Thread(target=head, name="plan-writer", daemon=True)
        self._thread.start()

    def _early_digests(self) -> dict[str, str]:
        """Wait for :meth:`start_early`'s process: its tables' seal digests, or its exception raised here."""
        proc, recv = self._early
        try:
            status, value = recv.recv()
        except EOFError:
            proc.join()
            raise RuntimeError(f"plan writer: the head process ended without an answer (exit code {proc.exitcode})")
        finally:
            recv.close()
        proc.join()
        if status != "ok":
            raise value
        return value

    def finish(self, plan: Plan) -> Path:
        def rest() -> None:
            if self._thread is None and self._early is None:
                self._open()
                self._n = len(plan.slices)
                _write_head(self.con, plan, self._n)
            else:
                if self._thread is None:  # start_early without start: the rest of the head, here
                    self.start(plan, self._n)
                self._join()
            if self._n != len(plan.slices):
                raise ValueError(f"plan writer: {len(plan.slices)} slices, {self._n} announced")
            _write_all(self.con, plan, self.key)
            self.con.commit()
            signmod.seal(self.con, self.key, self.tmp, self._known)
            self.con.commit()
            self.con.close()
            self.con = None
            self.tmp.replace(self.path)

        self._run(rest)
        return self.path

    def abort(self) -> None:
        """Stop and remove the unfinished file."""
        if self._early is not None and self._early[0].is_alive():
            self._early[0].terminate()  # the thread waiting for it then gets EOFError
        try:
            self._join()
        except BaseException:  # noqa: S110 - the file goes anyway
            pass
        if self._early is not None:
            self._early[0].join()  # before the file goes: it writes no more
            self._early[1].close()
        self._close()
        self.tmp.unlink(missing_ok=True)

    def _open(self, fresh: bool = True) -> None:
        """Connect to the file (``fresh``: a new one with the schema; else the one :meth:`start_early` began)."""
        if fresh and self.tmp.exists():
            self.tmp.unlink()
        self.con = _connect(self.tmp, fresh)  # the head thread, then the caller's

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def _run(self, step) -> None:
        try:
            step()
        except OSError as exc:
            self.abort()
            raise InputError(f"--output: cannot write the plan: {exc.strerror} (got {echo(str(self.path))})") from None
        except BaseException:
            self.abort()
            raise


EARLY_TABLES = ("operators", "satellites", "ground_nodes", "ephemeris", "mapping", "grc_coords")  # once bound
LATE_TABLES = ("attachments", "handovers", "associations")  # once the attachments and the association are final
HEAD_TABLES = EARLY_TABLES + LATE_TABLES


def _connect(path: Path, fresh: bool) -> sqlite3.Connection:
    con = sqlite3.connect(path, check_same_thread=False)
    con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + (SCHEMA if fresh else ""))
    return con


def _write_early_process(tmp: Path, plan: Plan, send) -> None:
    """:meth:`PlanWriter.start_early`'s process: a new file with the schema and :data:`EARLY_TABLES`,
    committed; sends ("ok", their seal digests) or ("error", the exception)."""
    try:
        if tmp.exists():
            tmp.unlink()
        con = _connect(tmp, True)
        try:
            _write_early(con, plan)
            con.commit()
            answer = ("ok", {t: signmod.table_digest_of(con, t) for t in EARLY_TABLES})
        finally:
            con.close()
    except BaseException as exc:  # noqa: BLE001 - raised again in the parent
        answer = ("error", exc)
    try:
        send.send(answer)
    except Exception as exc:  # noqa: BLE001 - an exception that does not pickle: its text
        send.send(("error", RuntimeError(f"plan writer: {answer[1]!r} ({exc})")))
    send.close()


def _write_head(con, plan: Plan, n_slices: int) -> None:
    """The tables :data:`HEAD_TABLES`: every table but the slices and the meta row (what is known before
    the slices' tables); nothing writes to them after this."""
    _write_early(con, plan)
    _write_late(con, plan, n_slices)


def _write_early(con, plan: Plan) -> None:
    """:data:`EARLY_TABLES`: the scenario's operators, satellites, ground nodes, element sets, the mapping
    table, and every GRC's coordinates (the ground nodes' and each slice's satellite bindings')."""
    sc = plan.loaded.scenario
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
    _write_grc_coords(con, plan, {})


def _write_late(con, plan: Plan, n_slices: int) -> None:
    """:data:`LATE_TABLES`: every ground link of the first ``n_slices`` slices, the handovers, the associations."""
    att = plan.attach
    k, node, j = np.nonzero(att.links[:n_slices] >= 0)  # slice by slice, node by node, antenna by antenna
    con.executemany("INSERT INTO attachments VALUES (?, ?, ?, ?, ?, ?)",
                    zip(k.tolist(), node.tolist(), att.links[k, node, j].astype(np.int64).tolist(),
                        att.link_elevation_deg[k, node, j].astype(float).tolist(),
                        att.link_range_km[k, node, j].astype(float).tolist(), j.tolist()))
    con.executemany("INSERT INTO handovers VALUES (?, ?, ?, ?)", att.handovers())
    con.executemany("INSERT INTO associations VALUES (?, ?, ?)", association_rows(plan, n_slices))


def _write_all(con, plan: Plan, key) -> None:
    """The meta row and every slice's row: all that is left once :func:`_write_head` is written."""
    sc = plan.loaded.scenario
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
    prev = None
    for sp in plan.slices:
        prev = _write_slice(con, plan, sp, prev, key)


def association_rows(plan: Plan, n_slices: int | None = None) -> list[tuple[str, int, bytes]]:
    """(policy, slice, packed int16 core per satellite) for every policy and each of the first ``n_slices``
    slices (default: the plan's) (spec: inter-sno-mobility §4.3, §5)."""
    n = len(plan.slices) if n_slices is None else n_slices
    return [(policy, k, _pack(core[k].astype("<i2")))
            for policy, core in sorted(plan.association.items()) for k in range(n)]


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
        "tables": pack_tables(T),
        "links": _pack(links), "links_added": _pack(added), "links_removed": _pack(removed),
        "serving": _pack(np.array(serving.shape, "<i4"), serving), "gs_choice": _pack(sp.gs_choice.astype("<i4")),
        "bound_grc": _pack(bound), "visible": _pack(visible), "pairs": _pack(pairs),
    }
    manifest = b"".join(signmod.table_digests(T)) + slice_extras_digest(links, serving, sp.gs_choice, bound,
                                                                        visible, pairs)
    return PackedSlice((T if keep_tables else None, links, sp.gs_choice, sp.pairs, prev_links), int(T.sizes.sum()),
                       T.sizes, blobs, manifest)


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


def _write_slice(con, plan: Plan, sp: SlicePlan, prev_links, key) -> np.ndarray:
    p = _packed(plan, sp, prev_links)
    sig = signmod.sign(key, signmod.slice_message(plan.loaded.digest, sp.index, p.manifest))
    b = p.blobs
    con.execute("INSERT INTO slices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sp.index, sp.time_s, p.entries, int(sp.raw_entries.sum()), sp.disconnected, b["tables"],
                 b["links"], b["links_added"], b["links_removed"], b["serving"], b["gs_choice"],
                 b["bound_grc"], b["visible"], b["pairs"], p.manifest, sig))
    return sp.links
