"""Check a route database: signatures, then every table walked to every destination.

Signatures: the seal over every row of every table (:func:`emu.plan.sign.check_seal`),
then every slice's manifest (per-satellite table digests, so a changed entry is
named by slice and satellite). The walk runs only on a plan that matches its
signatures. Who signed (which keys are trusted) is :mod:`emu.plan.trust`'s job.

spec: grc-based-routing §Security Considerations (signed tables and
ephemeris; compromise of the routing database could cause black holes or
loops) and §Segmented Longest Match.

For every slice, every satellite and every destination, the destination's
GRC is looked up with segmented longest match in the stored tables and the
forwarding is followed (all ECMP/UCMP branches, the active branch of
active-standby entries). A pair must end with Down at a satellite that links
to the right ground node (a ground station with several antennas has several:
any of them), or local delivery at the right satellite, whenever
the links of that slice connect them: no loops, no black holes. Pairs with
no path are counted as disconnected, not hidden. A random sample of lookups
is cross-checked against the pure-Python reference
:class:`emu.addressing.slm.SegmentedTable`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import sqlite3
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from emu.addressing.grc import LEGAL_PREFIX_LENGTHS
from emu.errors import InputError, PlanInputError
from emu.plan import actions
from emu.plan import sign as signmod
from emu.plan.association import POLICIES, associate, user_view
from emu.plan.db import PlanDB, slice_extras_digest, unpack_core
from emu.plan.planner import neighbour_matrix
from emu.plan.routing import SliceTables


@dataclass
class VerifyReport:
    slices: int = 0
    pairs_checked: int = 0
    disconnected: int = 0
    failures: list[str] = field(default_factory=list)
    max_failures: int = 50

    def fail(self, msg: str) -> None:
        if len(self.failures) < self.max_failures:
            self.failures.append(msg)
        elif len(self.failures) == self.max_failures:
            self.failures.append("... more failures not shown")

    @property
    def ok(self) -> bool:
        return not self.failures


def lookup_all(tables: SliceTables, addrs: np.ndarray) -> np.ndarray:
    """(sats, len(addrs)) action of the segmented longest match, 0 where nothing matches."""
    codes, ids = lookup_ids(tables, addrs)
    return codes[ids]


def lookup_ids(tables: SliceTables, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The segmented longest match of every address on every satellite, as (codes, ids): ``codes`` the
    distinct actions of the tables (``codes[0] == 0``: no match), ``ids`` (sats, len(addrs)) indexes into it.

    Through the legal prefix lengths from the shortest: per length, a (sats, distinct masked addresses)
    matrix starts as its parent's (the same address at the next shorter length) and takes the entries of
    that length on top, so a longer match overrides a shorter one; the longest length's matrix is
    gathered per address.
    """
    n = len(tables.offsets) - 1
    addrs = np.asarray(addrs, dtype=np.int64)
    codes, aid = np.unique(np.concatenate([[0], tables.action]), return_inverse=True)
    aid = aid[1:].astype(np.int16 if len(codes) < 1 << 15 else np.int32)
    if len(addrs) == 0 or len(tables.prefix) == 0:
        return codes, np.zeros((n, len(addrs)), dtype=aid.dtype)
    sat_of_row = np.repeat(np.arange(n, dtype=np.int64), np.diff(tables.offsets))
    prefix = tables.prefix.astype(np.int64)
    cur = np.zeros((n, 1), dtype=aid.dtype)  # the matrix of the previous length (one column: nothing yet)
    prev_uniq = np.zeros(1, dtype=np.int64)
    prev_mask = 0
    for plen in sorted(LEGAL_PREFIX_LENGTHS):
        mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        uniq, inv = np.unique(addrs & mask, return_inverse=True)
        cur = cur[:, np.searchsorted(prev_uniq, uniq & prev_mask)]
        rows = np.nonzero(tables.plen == plen)[0]
        if len(rows):
            pos = np.minimum(np.searchsorted(uniq, prefix[rows]), len(uniq) - 1)
            hit = uniq[pos] == prefix[rows]
            cur[sat_of_row[rows[hit]], pos[hit]] = aid[rows[hit]]
        prev_uniq, prev_mask = uniq, mask
    return codes, cur[:, inv]


def verify(db: PlanDB, walk: bool = True, sample: int = 20, seed: int = 0, progress=None) -> VerifyReport:
    rep = VerifyReport()
    db.public_key  # noqa: B018 - a plan without a readable key is refused before anything else
    for problem in db.seal_problems():
        rep.fail(problem)
    if rep.ok:  # recomputed only from rows that are as signed
        _check_association(db, rep)
    if hashlib.sha256(db.meta["scenario_yaml"].encode("utf-8")).hexdigest() != db.meta["scenario_digest"]:
        rep.fail("scenario: the stored scenario text does not match its digest")
    walk = walk and rep.ok  # tables that are not as signed are not walked: their contents are not trusted
    for k, part in enumerate(_per_slice(db, walk, sample, seed)):
        if progress:
            progress(k, db.n_slices)
        rep.slices += 1
        rep.pairs_checked += part.pairs_checked
        rep.disconnected += part.disconnected
        for msg in part.failures:
            rep.fail(msg)
    return rep


_FORK: tuple | None = None  # (path, walk, sample, seed) for forked workers
_FORK_DB: PlanDB | None = None


def _per_slice(db: PlanDB, walk: bool, sample: int, seed: int):
    """_verify_slice for every slice, in order; slices are independent, so long plans use forked workers
    (each opens the plan file itself: an SQLite connection does not cross a fork)."""
    n = db.n_slices
    workers = min(os.cpu_count() or 1, 4) if n >= 32 else 1
    if workers == 1:
        for k in range(n):
            yield _verify_slice(db, k, walk, sample, seed)
        return
    global _FORK
    _FORK = (str(db.path), walk, sample, seed)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for part in pool.imap(_forked, range(n), chunksize=2):
                if isinstance(part, BaseException):
                    raise part
                yield part
    finally:
        _FORK = None


def _forked(k: int):
    global _FORK_DB
    path, walk, sample, seed = _FORK
    try:
        if _FORK_DB is None:
            _FORK_DB = PlanDB(path)
        return _verify_slice(_FORK_DB, k, walk, sample, seed)
    except InputError as exc:  # a damaged slice: raised again in the parent, one line as ever
        return PlanInputError(str(exc))


def _verify_slice(db: PlanDB, k: int, walk: bool, sample: int, seed: int) -> VerifyReport:
    """Slice k: its manifest signature and digests, then (``walk``) every table walked to every destination."""
    rep = VerifyReport()
    routing = json.loads(db.meta["routing"])
    ground = db.ground
    n_sats = len(db.sat_names)
    rng = random.Random(seed * 1_000_003 + k)
    tables = db.tables(k)
    links = db.links(k)
    serving = db.ground_links(k)
    bound = db.bound_grc(k)
    manifest, signature = db.slice_signature(k)
    if not signmod.check(db.public_key, signature, signmod.slice_message(db.meta["scenario_digest"], k, manifest)):
        rep.fail(f"slice {k}: manifest signature invalid")
    digests = signmod.table_digests(tables)
    expect = [manifest[i * 32:(i + 1) * 32] for i in range(n_sats)]
    for s in range(n_sats):
        if s >= len(digests) or digests[s] != expect[s]:
            rep.fail(f"slice {k}: satellite {db.sat_names[s]}: table does not match its signed digest")
    extras = slice_extras_digest(links, serving, db.gs_choice(k), bound, db.visible(k), db.pairs(k))
    if manifest[n_sats * 32:] != extras:
        rep.fail(f"slice {k}: links/attachments/bindings do not match their signed digest")
    if not walk:
        return rep
    addrs = [np.array([g.grc for g in ground], dtype=np.uint32)]
    names = [g.name for g in ground]
    kinds = ["ground"] * len(ground)
    if routing.get("satellite_destinations"):
        addrs.append(db.sat_addresses)
        names += db.sat_names
        kinds += ["satellite"] * n_sats
    addr = np.concatenate(addrs).astype(np.uint32)
    term = np.zeros((n_sats, len(addr)), dtype=bool)  # term[s, d]: s may deliver destination d
    g_idx, j = np.nonzero(serving >= 0)
    term[serving[g_idx, j], g_idx] = True
    if routing.get("satellite_destinations"):
        term[np.arange(n_sats), len(ground) + np.arange(n_sats)] = True
    _walk_slice(db, rep, k, tables, links, addr, term, names, kinds, len(ground))
    # cross-check the vectorised lookup against the pure-Python reference on a sample
    for _ in range(sample):
        s = rng.randrange(n_sats)
        d = rng.randrange(len(addr))
        hit = tables.reference(s).lookup(int(addr[d]))
        got = int(lookup_all(SliceTables(np.array([0, tables.offsets[s + 1] - tables.offsets[s]]),
                                         *tables.of(s)), addr[d:d + 1])[0, 0])
        if (hit[2] if hit else 0) != got:
            rep.fail(f"slice {k}: satellite {db.sat_names[s]}: vectorised lookup disagrees with the reference")
    return rep


def _check_association(db: PlanDB, rep: VerifyReport) -> None:
    """spec: inter-sno-mobility §5 (the pre-computed association): one row per policy and slice, and what
    the algorithm gives from the signed attachments (the rows themselves are covered by the plan's seal)."""
    try:
        rows = list(db.con.execute("SELECT policy, k, core FROM associations"))
    except sqlite3.DatabaseError:
        rep.fail("association: table missing")
        return
    n_sats = len(db.sat_names)
    for policy, k, blob in rows:
        try:
            core = unpack_core(blob)
        except (zlib.error, ValueError):
            rep.fail(f"association: {policy} slice {k}: unreadable")
            return
        if len(core) != n_sats or (core < 0).any() or (core >= len(db.operators)).any():
            rep.fail(f"association: {policy} slice {k}: not one operator index per satellite")
    got = {(p, k) for p, k, _ in rows}
    want = {(p, k) for p in POLICIES for k in range(db.n_slices)}
    if got != want:
        rep.fail(f"association: {len(want - got)} (policy, slice) rows missing, {len(got - want)} unexpected")
        return
    # the association is a function of signed data (attachments, owners, homes): recompute it
    serving = np.stack([db.serving(k) for k in range(db.n_slices)])
    _cols, ut_serving, home = user_view(serving, [g.kind for g in db.ground], np.array([g.operator for g in db.ground]))
    owner = np.array([r[5] for r in db.sat_rows], dtype=np.int64)
    for policy in POLICIES:
        diff = np.nonzero((associate(policy, ut_serving, home, owner, len(db.operators), db.slice_s)
                           != db.association(policy)).any(axis=1))[0]
        if len(diff):
            rep.fail(f"association: {policy} slice {int(diff[0])}: differs from the association algorithm's result")


def _walk_slice(db, rep, k, tables, links, addr, term, names, kinds, n_ground) -> None:
    """Every (satellite, destination) pair of slice k: good when every branch of its forwarding ends with
    the right delivery (see the module docstring); the others are named (at most ``max_failures``).

    The lookup yields an action id per pair; what an action does (its kind, ground target, the directions
    it forwards to) is worked out once per distinct action. The pairs' facts and the growth of the good
    set run compiled (:mod:`emu.plan.kernels`), 64 destinations to a machine word: a pair is good when it
    delivers right, or forwards and every branch leads to a good pair (to the fixed point: pairs on a
    loop, or with a branch that never ends, are not).
    """
    from emu.plan import kernels

    n = len(tables.offsets) - 1
    nb = neighbour_matrix(links, n)[0]
    codes, ids = lookup_ids(tables, addr)
    comp = _components(n, links)
    D = len(addr)
    kind_c = actions.kind_of(codes)
    target_c = actions.target_of(codes)
    down_c = ((codes >> 4) & 1).astype(bool)
    bits_c = codes & 0x3F
    active = np.zeros_like(bits_c)  # active-standby: the active direction only
    for d in range(6):
        active |= (((codes >> (6 + 7 * d)) & 0x7F) == 1).astype(np.int64) << d
    bits_c = np.where(kind_c == actions.STANDBY, bits_c & active, bits_c)
    bits_c &= ~np.where(target_c >= 0, np.int64(1) << 4, 0)  # Down to ground is terminal, not a hop
    # columns [:n_ground] are ground nodes (delivered by Down to them), [n_ground:] satellites (local delivery)
    right_c = np.where(down_c & (target_c >= 0), target_c, -1).astype(np.int64)
    missing = ((nb < 0).astype(np.int64) << np.arange(6)).sum(axis=1).astype(np.uint8)  # directions without a link
    good, moving, used, why = kernels.walk_words(np.ascontiguousarray(ids), np.ascontiguousarray(term), int(n_ground),
                                                 right_c, kind_c == actions.LOCAL, target_c >= 0,
                                                 bits_c.astype(np.uint8), missing)
    kernels.settle(good, moving, used, np.where(nb >= 0, nb, n).astype(np.int64))
    # connected: the satellite's component holds a terminal of the destination
    n_comp = int(comp.max()) + 1 if n else 0
    comp_has = np.zeros((n_comp, D), dtype=bool)
    ts, td = np.nonzero(term)
    comp_has[comp[ts], td] = True
    n_conn = int(np.bincount(comp, minlength=n_comp) @ comp_has.sum(axis=1))  # connected pairs
    rep.pairs_checked += n_conn
    rep.disconnected += n * D - n_conn
    bs, bd = kernels.bad_pairs(good, kernels.pack_words(comp_has), comp.astype(np.int64), D,
                               rep.max_failures + 1)  # the report shows no more
    for s, d in zip(bs.tolist(), bd.tolist()):
        if codes[ids[s, d]] == 0:
            why_s = "black hole (no matching entry)"
        elif why[s, d] == 1:
            why_s = "egress direction has no link in this slice"
        elif why[s, d] == 2:
            why_s = "delivered to the wrong node"
        else:
            why_s = "loop or path that never reaches the destination"
        rep.fail(f"slice {k}: satellite {db.sat_names[s]} -> {kinds[d]} {names[d]}: {why_s}")


def _components(n: int, links) -> np.ndarray:
    if len(links) == 0:
        return np.arange(n)
    g = coo_matrix((np.ones(len(links)), (links["a"], links["b"])), shape=(n, n))
    return connected_components(g, directed=False)[1]
