"""Reading a route database: :class:`PlanDB` and its queries (spec: grc-based-routing §Routing Database).

A plan is read defensively: a file that is not a route database of this
format (:mod:`emu.plan.dbformat`), or is damaged, raises
:class:`PlanInputError` (one line, exit code 2) naming what is wrong, never
a traceback. Import it as ``from emu.plan.db import PlanDB``.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from emu.addressing.grc import check_shell_code as grc_check_shell_code
from emu.errors import InputError, PlanInputError, echo
from emu.plan import sign as signmod
from emu.plan.dbformat import FORMAT_VERSION, SCHEMA_TABLES, VISIBLE_DTYPE, _short, _unpack, unpack_core, unpack_tables
from emu.plan.planner import LINK_DTYPE
from emu.plan.routing import SliceTables
from emu.plan.shortest import PAIR_DTYPE


def _typed(rows: list[tuple], types: tuple) -> bool:
    """Every row has these Python types (a damaged page can turn a number into text)."""
    return all(len(r) == len(types) and all(isinstance(v, t) for v, t in zip(r, types)) for r in rows)


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
        expected = set(SCHEMA_TABLES)
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
        t = unpack_tables(self._slice_row(k, "tables")[0], what=f"slice {k} tables")
        off, pre, pl, act = t.offsets, t.prefix, t.plen, t.action
        n = len(self.sat_names)
        if len(off) != n + 1 or off[0] != 0 or (np.diff(off) < 0).any() or off[-1] != len(pre) \
                or not len(pre) == len(pl) == len(act):
            raise PlanInputError(f"plan: slice {k} tables are damaged (got {echo(str(self.path))})")
        return t

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
