"""The planner's compiled kernels (numba); imported only where a plan is computed, not where one is read.

spec: grc-based-routing §Predictive Routing (paths computed centrally per time slice), §Routing Table
Structure (egress directions with priority/weight), §Data Forwarding Process.

- :func:`sweeps`: shortest delays from many sources at once (:mod:`emu.plan.dijkstra` says why).
- :func:`hop_codes_rows`: every (destination, satellite)'s next-hop action code from those delays, one
  cell at a time over the six directions (:func:`emu.plan.routing.hop_codes` states the rule).
- :func:`table_columns`: a slice's sorted entries split into its tables' columns in one pass
  (:func:`emu.plan.routing.tables_from_entries` states the order).
- :func:`dictionary`: the sorted distinct values of a column and each row's index among them, by hashing
  (how the route database stores a slice's tables: :mod:`emu.plan.dbformat`).

Both do IEEE double arithmetic in the order the numpy versions did (no fast-math), so their answers are
bit for bit the same; ``tests/unit/test_plan_dijkstra.py`` and ``tests/unit/test_plan_kernels.py``
compare them with scipy and with the reference kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ECMP, UCMP, ACTIVE_STANDBY = 0, 1, 2  # policy ids of hop_codes_rows


@njit(cache=True, nogil=True)
def sweeps(indptr, indices, data, D, max_sweeps):  # pragma: no cover - compiled
    """Relax every edge into every node for all sources (the columns of ``D``: labels, inf where none),
    sweeping the nodes forward then backward, until a sweep changes nothing: True; False after
    ``max_sweeps`` sweeps (``D`` then holds upper bounds). ``indptr``/``indices``/``data``: the graph's
    in-edges (the CSR of its transpose)."""
    n, S = D.shape
    for it in range(max_sweeps):
        changed = False
        for i in range(n):
            v = i if it % 2 == 0 else n - 1 - i
            row = D[v]
            for e in range(indptr[v], indptr[v + 1]):
                src = D[indices[e]]
                w = data[e]
                c = False
                for r in range(S):  # branch-free, so it vectorises
                    x = src[r] + w
                    y = row[r]
                    m = x < y
                    row[r] = x if m else y
                    c |= m
                changed |= c
        if not changed:
            return True
    return False


@njit(cache=True, nogil=True)
def hop_codes_rows(nbi, nbd, dist, rows, policy, tol, eps, lut, standby_kind, codes, best):  # pragma: no cover
    """For each destination ``rows[i]`` and satellite s: ``codes[rows[i], s]`` (0 where unreachable) and
    ``best[i, s]``, the least delay through a neighbour. ``nbi``/``nbd``: (directions, sats) neighbour
    (``n_sats``: none) and link delay (0 where none); ``lut``: ECMP code by direction mask; ``tol``: the
    policy's tolerance; ``standby_kind``: the STANDBY kind bits of an action."""
    n_dir, n = nbi.shape
    C = np.empty(n_dir)
    Dn = np.empty(n_dir)
    inf = np.inf
    for i in range(len(rows)):
        drow = dist[rows[i]]
        for s in range(n):
            for d in range(n_dir):
                j = nbi[d, s]
                x = inf if j == n else drow[j]
                Dn[d] = x
                C[d] = x + nbd[d, s]
            b = C[0]
            for d in range(1, n_dir):
                if C[d] < b:
                    b = C[d]
            best[i, s] = b
            if not np.isfinite(b):
                codes[rows[i], s] = 0
                continue
            lim = drow[s] - eps
            if policy == ACTIVE_STANDBY:
                primary = 0
                for d in range(n_dir - 1, -1, -1):  # the first direction reaching the minimum
                    if C[d] == b:
                        primary = d
                alt_best = inf
                standby = 0
                for d in range(n_dir):
                    alt = C[d] if (Dn[d] < lim and primary != d) else inf
                    if alt < alt_best:
                        standby = d
                        alt_best = alt
                code = standby_kind | (np.int64(1) << primary) | (np.int64(1) << (6 + 7 * primary))
                if np.isfinite(alt_best):
                    code |= (np.int64(1) << standby) | (np.int64(2) << (6 + 7 * standby))
            else:
                near = b * (1.0 + tol) + eps
                tie = b + eps
                if policy == UCMP:
                    code = np.int64(0)
                    scaled = 100.0 * b
                    for d in range(n_dir):
                        if C[d] <= near and (Dn[d] < lim or C[d] <= tie):
                            w = np.rint(scaled / C[d])
                            w = 1.0 if w < 1.0 else (100.0 if w > 100.0 else w)
                            code |= (np.int64(1) << d) | (np.int64(w) << (6 + 7 * d))
                else:
                    mask = 0
                    for d in range(n_dir):
                        if C[d] <= near and (Dn[d] < lim or C[d] <= tie):
                            mask |= 1 << d
                    code = lut[mask]
            codes[rows[i], s] = code


@njit(cache=True, nogil=True)
def walk_words(ids, term, n_ground, right, local, to_ground, hop_bits, missing):  # pragma: no cover
    """The per-pair facts of :func:`emu.plan.verify._walk_slice`, 64 destinations to a machine word.

    ``ids`` (sats, dests): each pair's action id; per action id: ``right`` (the ground node a Down
    delivers to, -1: none), ``local`` (local delivery), ``to_ground`` (names a ground target),
    ``hop_bits`` (the directions it forwards to); ``term`` (sats, dests): the satellite may deliver the
    destination; ``missing`` per satellite: directions without a link. Destination columns below
    ``n_ground`` are ground nodes, the others satellites.

    Returns ``good`` (sats + 1, words; row ``sats``: no neighbour, never good): delivered right here;
    ``moving`` (sats, words): forwards somewhere; ``used`` (6, sats, words): forwards by direction e;
    ``why`` (sats, dests): 1 an egress has no link, 2 delivered to the wrong node (neither forwards)."""
    n, D = ids.shape
    words = (D + 63) // 64
    good = np.zeros((n + 1, words), dtype=np.uint64)
    moving = np.zeros((n, words), dtype=np.uint64)
    used = np.zeros((6, n, words), dtype=np.uint64)
    why = np.zeros((n, D), dtype=np.uint8)
    one = np.uint64(1)
    for s in range(n):
        miss = missing[s]
        for d in range(D):
            a = ids[s, d]
            t = term[s, d]
            if d < n_ground:
                g = t and right[a] == d
                wrong = (local[a] or to_ground[a]) and not g
            else:
                g = t and local[a]
                wrong = (local[a] and not t) or to_ground[a]
            b = hop_bits[a]
            dangling = (b & miss) != 0
            if dangling:
                why[s, d] = 1
            elif wrong:
                why[s, d] = 2
            bit = one << np.uint64(d & 63)
            w = d >> 6
            if g:
                good[s, w] |= bit
            if dangling or wrong or b == 0:
                continue
            moving[s, w] |= bit
            for e in range(6):
                if (b >> e) & 1:
                    used[e, s, w] |= bit
    return good, moving, used, why


@njit(cache=True, nogil=True)
def settle(good, moving, used, nbz):  # pragma: no cover - compiled
    """Grow ``good`` (in place) to the pairs that forward somewhere and whose every used direction leads
    to a good pair (the neighbour ``nbz[s, e]``, ``sats``: none), until nothing changes: the least such
    set, whichever order it is grown in (the rule is monotone). Sweeps alternate in direction."""
    n, words = moving.shape
    n_dir = used.shape[0]
    changed = True
    it = 0
    while changed:
        changed = False
        for i in range(n):
            s = i if it % 2 == 0 else n - 1 - i
            for w in range(words):
                ok = moving[s, w] & ~good[s, w]
                if ok == 0:
                    continue
                for e in range(n_dir):
                    u = used[e, s, w]
                    if u != 0:
                        ok &= ~u | good[nbz[s, e], w]
                if ok != 0:
                    good[s, w] |= ok
                    changed = True
        it += 1


@njit(cache=True, nogil=True)
def bad_pairs(good, reach, comp, D, limit):  # pragma: no cover - compiled
    """The first ``limit`` (satellite, destination) pairs, row-major, that are connected (``reach[comp[s]]``:
    the words of the destinations with a terminal in s's component) and not good."""
    n = len(comp)
    words = good.shape[1]
    out_s = np.empty(limit, dtype=np.int64)
    out_d = np.empty(limit, dtype=np.int64)
    k = 0
    for s in range(n):
        for w in range(words):
            x = reach[comp[s], w] & ~good[s, w]
            while x != 0 and k < limit:
                b = 0
                while (x >> np.uint64(b)) & np.uint64(1) == 0:
                    b += 1
                d = w * 64 + b
                if d < D:
                    out_s[k] = s
                    out_d[k] = d
                    k += 1
                x &= ~(np.uint64(1) << np.uint64(b))
            if k >= limit:
                return out_s[:k], out_d[:k]
    return out_s[:k], out_d[:k]


@njit(cache=True, nogil=True)
def pack_words(x):  # pragma: no cover - compiled
    """(rows, cols) bool as (rows, words) uint64, column c at bit c % 64 of word c // 64."""
    n, D = x.shape
    out = np.zeros((n, (D + 63) // 64), dtype=np.uint64)
    one = np.uint64(1)
    for s in range(n):
        for d in range(D):
            if x[s, d]:
                out[s, d >> 6] |= one << np.uint64(d & 63)
    return out


@njit(cache=True, nogil=True)
def table_columns(key, act, order, n_sats):  # pragma: no cover - compiled
    """The entries ``key[order]`` (``emu.plan.routing.entry_key``: satellite << 40 | prefix << 8 | plen, in
    table order) and ``act[order]`` as a SliceTables' columns: offsets (n_sats + 1), prefix, plen, action."""
    n = len(order)
    offsets = np.zeros(n_sats + 1, dtype=np.int64)
    prefix = np.empty(n, dtype=np.uint32)
    plen = np.empty(n, dtype=np.uint8)
    action = np.empty(n, dtype=np.int64)
    for i in range(n):
        j = order[i]
        x = key[j]
        offsets[(x >> np.uint64(40)) + 1] += 1
        prefix[i] = (x >> np.uint64(8)) & np.uint64(0xFFFFFFFF)
        plen[i] = x & np.uint64(0xFF)
        action[i] = act[j]
    for s in range(n_sats):
        offsets[s + 1] += offsets[s]
    return offsets, prefix, plen, action


@njit(cache=True, nogil=True)
def dictionary(values):  # pragma: no cover - compiled
    """(the distinct values of ``values``, ascending; for each row, the index of its value among them).
    One pass through an open-addressing hash table (Fibonacci hashing, linear probing, grown at half full),
    then the few distinct values sorted: no sort of the whole column."""
    n = len(values)
    bits = 10
    cap = 1 << bits
    slot_val = np.empty(cap, dtype=values.dtype)
    slot_id = np.full(cap, -1, dtype=np.int64)
    uniq = np.empty(cap // 2 + 1, dtype=values.dtype)
    ids = np.empty(n, dtype=np.int64)
    count = 0
    golden = np.uint64(0x9E3779B97F4A7C15)
    for i in range(n):
        v = values[i]
        h = np.int64((np.uint64(v) * golden) >> np.uint64(64 - bits))
        while slot_id[h] >= 0 and slot_val[h] != v:
            h = (h + 1) & (cap - 1)
        if slot_id[h] >= 0:
            ids[i] = slot_id[h]
            continue
        slot_val[h] = v
        slot_id[h] = count
        uniq[count] = v
        ids[i] = count
        count += 1
        if 2 * count > cap:  # grow: re-insert every distinct value
            bits += 1
            cap = 1 << bits
            slot_val = np.empty(cap, dtype=values.dtype)
            slot_id = np.full(cap, -1, dtype=np.int64)
            for u in range(count):
                h = np.int64((np.uint64(uniq[u]) * golden) >> np.uint64(64 - bits))
                while slot_id[h] >= 0:
                    h = (h + 1) & (cap - 1)
                slot_val[h] = uniq[u]
                slot_id[h] = u
            grown = np.empty(cap // 2 + 1, dtype=values.dtype)
            grown[:count] = uniq[:count]
            uniq = grown
    order = np.argsort(uniq[:count])
    rank = np.empty(count, dtype=np.int64)
    for r in range(count):
        rank[order[r]] = r
    index = np.empty(n, dtype=np.int64)
    for i in range(n):
        index[i] = rank[ids[i]]
    return uniq[:count][order], index


def warm() -> None:
    """Load every planning kernel into this process (numba's first call and each kernel's cached machine
    code: ~0.3 s in a forked worker), with the argument types the planner passes. The planner
    calls it once before forking its workers (:func:`emu.plan.planner.make_plan`), so they inherit loaded
    kernels instead of each paying that again."""
    i64 = np.zeros(2, np.int64)
    sweeps(np.zeros(3, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((2, 2)), 1)
    hop_codes_rows(np.zeros((6, 1), np.int64), np.zeros((6, 1)), np.zeros((1, 2)), np.zeros(1, np.int64), ECMP,
                   0.0, 1e-9, np.zeros(64, np.int64), np.int64(0), np.zeros((1, 1), np.int64), np.zeros((1, 1)))
    table_columns(i64.astype(np.uint64), i64, i64, 1)
    dictionary(i64)
    dictionary(i64.astype(np.uint64))
