"""verify.py as it was before the bit-parallel walk (issue 16, branch planperf), kept verbatim as the reference
that tests/unit/test_plan_kernels.py compares the walk with. Original docstring:

Check a route database: signatures, then every table walked to every destination.

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
    """(sats, len(addrs)) action of the segmented longest match, 0 where nothing matches.

    Per legal prefix length, from the shortest: the entries of that length whose prefix is some
    destination's masked address go into a dense (sats, distinct masked addresses) matrix, gathered per
    destination; a longer match overrides a shorter one.
    """
    n = len(tables.offsets) - 1
    addrs = np.asarray(addrs, dtype=np.int64)
    out = np.zeros((n, len(addrs)), dtype=np.int64)
    if len(addrs) == 0 or len(tables.prefix) == 0:
        return out
    sat_of_row = np.repeat(np.arange(n, dtype=np.int64), np.diff(tables.offsets))
    prefix = tables.prefix.astype(np.int64)
    for plen in sorted(LEGAL_PREFIX_LENGTHS):
        rows = np.nonzero(tables.plen == plen)[0]
        if len(rows) == 0:
            continue
        mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        uniq, inv = np.unique(addrs & mask, return_inverse=True)
        pos = np.minimum(np.searchsorted(uniq, prefix[rows]), len(uniq) - 1)
        hit = uniq[pos] == prefix[rows]
        dense = np.zeros((n, len(uniq)), dtype=np.int64)
        dense[sat_of_row[rows[hit]], pos[hit]] = tables.action[rows[hit]]
        got = dense[:, inv]
        np.copyto(out, got, where=got != 0)
    return out


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
    n = len(tables.offsets) - 1
    nb = neighbour_matrix(links, n)[0]
    A = lookup_all(tables, addr)  # (sats, dests)
    comp = _components(n, links)
    D = len(addr)
    dest_idx = np.arange(D)[None, :]
    kind = actions.kind_of(A)
    target = actions.target_of(A)
    downbit = (A >> 4) & 1
    is_ground = dest_idx < n_ground
    good = np.zeros((n, D), dtype=bool)
    at_term = term
    right_down = is_ground & (downbit == 1) & (target == dest_idx)
    right_local = ~is_ground & (kind == actions.LOCAL)
    good |= at_term & (right_down | right_local)
    wrong_term = (kind == actions.LOCAL) & ~(at_term & ~is_ground) | ((target >= 0) & ~(at_term & right_down))
    # successors: every direction in the mask (active-standby: the active one only), as a 6-bit mask
    bits = A & 0x3F
    standby = kind == actions.STANDBY
    if standby.any():
        active = np.zeros_like(bits)
        for d in range(6):
            active |= (((A >> (6 + 7 * d)) & 0x7F) == 1).astype(np.int64) << d
        bits = np.where(standby, bits & active, bits)
    bits &= ~np.where(target >= 0, np.int64(1) << 4, 0)  # Down to ground is terminal, not a hop
    missing = ((nb < 0).astype(np.int64) << np.arange(6)).sum(axis=1)  # per satellite: directions without a link
    dangling = (bits & missing[:, None]) != 0
    bits = np.where((bits != 0) & ~dangling & ~wrong_term, bits, 0).astype(np.int8)
    _settle(good, bits, _predecessors(nb))
    # connected: the satellite's component holds a terminal of the destination
    n_comp = int(comp.max()) + 1 if n else 0
    comp_has = np.zeros((n_comp, D), dtype=bool)
    ts, td = np.nonzero(term)
    comp_has[comp[ts], td] = True
    connected = comp_has[comp]
    rep.pairs_checked += int(connected.sum())
    rep.disconnected += int((~connected).sum())
    bad = connected & ~good
    bs, bd = np.nonzero(bad)
    for s, d in zip(bs[:rep.max_failures + 1], bd[:rep.max_failures + 1]):  # the report shows no more
        if A[s, d] == 0:
            why = "black hole (no matching entry)"
        elif dangling[s, d]:
            why = "egress direction has no link in this slice"
        elif wrong_term[s, d]:
            why = "delivered to the wrong node"
        else:
            why = "loop or path that never reaches the destination"
        rep.fail(f"slice {k}: satellite {db.sat_names[s]} -> {kinds[d]} {names[d]}: {why}")


def _predecessors(nb: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Layers (e, rev): rev[v] is a satellite u with nb[u, e] == v (-1: none); one layer per direction
    unless several satellites reach the same v by the same direction (then one more layer per extra)."""
    n = nb.shape[0]
    out = []
    for e in range(nb.shape[1]):
        u = np.nonzero(nb[:, e] >= 0)[0]
        v = nb[u, e]
        order = np.argsort(v, kind="stable")
        u, v = u[order], v[order]
        first = np.ones(len(v), dtype=bool)
        first[1:] = v[1:] != v[:-1]
        rank = np.arange(len(v)) - np.maximum.accumulate(np.where(first, np.arange(len(v)), 0))
        for layer in range(int(rank.max()) + 1 if len(v) else 0):
            rev = np.full(n, -1, dtype=np.int64)
            m = rank == layer
            rev[v[m]] = u[m]
            out.append((e, rev))
    return out


def _settle(good: np.ndarray, bits: np.ndarray, pred: list[tuple[int, np.ndarray]]) -> None:
    """Mark (satellite, destination) good once every direction it uses (``bits``, a 6-bit mask) leads to a
    good pair (in place).

    Backward from the good pairs (Kahn's algorithm on the forwarding graphs of all destinations at
    once): when a pair becomes good, the bit of every pair that forwards to it is cleared; a pair with
    no bit left is good. Each used direction is looked at once; pairs on a loop never get there.
    """
    n, D = good.shape
    good_flat = good.ravel()
    rem = np.where(good_flat, 0, bits.ravel()).astype(np.int8)  # used directions not yet known good
    frontier = np.nonzero(good_flat)[0]
    while len(frontier):
        fv, fd = np.divmod(frontier, D)
        new = []
        for e, rev in pred:
            u = rev[fv]
            m = u >= 0
            idx = u[m] * D + fd[m]
            idx = idx[((rem[idx] >> e) & 1).astype(bool)]  # unique: rev is one-to-one, frontier pairs distinct
            rem[idx] &= np.int8(~(1 << e))
            new.append(idx[rem[idx] == 0])
        frontier = np.concatenate(new)
        good_flat[frontier] = True


def _components(n: int, links) -> np.ndarray:
    if len(links) == 0:
        return np.arange(n)
    g = coo_matrix((np.ones(len(links)), (links["a"], links["b"])), shape=(n, n))
    return connected_components(g, directed=False)[1]
