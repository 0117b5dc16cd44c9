"""verify.py's walk as it was before the bit-parallel rewrite (issue 16, branch planperf), kept verbatim as
the reference that tests/unit/test_plan_kernels.py compares the walk with: ``lookup_all`` (one dense gather per prefix length),
``_walk_slice`` and its ``_settle`` over predecessor layers. Everything around the walk (signatures, the
per-slice checks, connected components) is verify.py's own, used as it is: :func:`_verify_slice` runs
``emu.plan.verify._verify_slice`` with this walk in place of the new one.
"""

from __future__ import annotations

from unittest import mock

import numpy as np

from emu.addressing.grc import LEGAL_PREFIX_LENGTHS
from emu.plan import actions
from emu.plan import verify as fast
from emu.plan.planner import neighbour_matrix
from emu.plan.routing import SliceTables
from emu.plan.verify import VerifyReport, _components


def _verify_slice(db, k: int, walk: bool, sample: int, seed: int) -> VerifyReport:
    """The slice checked by verify.py with the walk of before."""
    with mock.patch.object(fast, "_walk_slice", _walk_slice), mock.patch.object(fast, "lookup_all", lookup_all):
        return fast._verify_slice(db, k, walk, sample, seed)

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
    D = good.shape[1]
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
