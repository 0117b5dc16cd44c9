"""Route churn between slices: which table entries change, whether their meaning changed, and why.

spec: grc-based-routing §Time Slice Transition (the FIB takes the new slice's table), §Segmented Longest
Match (what an entry means: the answer of the lookup for the addresses under it), §Predictive Routing.
See docs/route-churn.md.

The data plane rotates kernel tables, so filling a table writes the difference between two slices' plan
tables (``emu.dataplane.slices.SliceApplier._fill``): one message per deleted key, added key or changed
value, per address family. This module measures that difference and takes it apart:

- per entry: ground-region destinations or satellite destinations (by the destinations it covers);
  *meaning* (the segmented longest match at some destination address under the entry answers
  differently in the two slices) or *representation* only (every destination under it keeps its answer:
  aggregation stated the same answers with other prefixes);
- per (satellite, ground destination) pair whose answer changed: the cause, by replanning slice k's
  codes with one input of slice k' at a time (:func:`pair_causes`).
"""

from __future__ import annotations

import numpy as np

from emu.addressing.grc import LEGAL_PREFIX_LENGTHS
from emu.plan import actions
from emu.plan.routing import (
    SliceTables,
    destination_distances,
    hop_codes,
    table_entries,
)


def entry_diff(a: SliceTables, b: SliceTables) -> dict[str, np.ndarray]:
    """Keys (:func:`emu.plan.routing.entry_key`) only in ``a`` (``gone``), only in ``b`` (``new``), and in
    both with another action (``changed``); ``kept`` in both, same action."""
    ka, aa = table_entries(a)
    kb, ab = table_entries(b)
    common, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    same = aa[ia] == ab[ib]
    return {"gone": np.setdiff1d(ka, kb, assume_unique=True), "new": np.setdiff1d(kb, ka, assume_unique=True),
            "changed": common[~same], "kept": common[same]}


def messages(diff: dict[str, np.ndarray]) -> int:
    """Kernel messages per family of a fill that turns one table into the other (``desired.route_diff``:
    a delete per gone key, a replace per new or changed one)."""
    return len(diff["gone"]) + len(diff["new"]) + len(diff["changed"])


def split_key(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(satellite, prefix, length) of entry keys."""
    key = np.asarray(key, np.uint64)
    return ((key >> np.uint64(40)).astype(np.int64), ((key >> np.uint64(8)) & np.uint64(0xFFFFFFFF)).astype(np.int64),
            (key & np.uint64(0xFF)).astype(np.int64))


def covered_any(key: np.ndarray, addrs: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Per entry key: does any destination address under the entry's prefix have ``flag[sat, dest]``?
    ``flag``: (sats, len(addrs)) bool. Also usable with a (1, dests) flag broadcast to every satellite."""
    sat, prefix, plen = split_key(key)
    out = np.zeros(len(key), dtype=bool)
    addrs = np.asarray(addrs, np.int64)
    for P in LEGAL_PREFIX_LENGTHS:
        rows = np.nonzero(plen == P)[0]
        if not len(rows):
            continue
        mask = (0xFFFFFFFF << (32 - P)) & 0xFFFFFFFF
        uniq, inv = np.unique(addrs & mask, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        starts = np.searchsorted(inv[order], np.arange(len(uniq)))
        per_group = np.logical_or.reduceat(flag[:, order], starts, axis=1)  # (sats or 1, groups)
        pos = np.minimum(np.searchsorted(uniq, prefix[rows]), len(uniq) - 1)
        hit = uniq[pos] == prefix[rows]
        s = sat[rows] if per_group.shape[0] > 1 else np.zeros(len(rows), np.int64)
        out[rows[hit]] = per_group[s[hit], pos[hit]]
    return out


def classify(diff: dict[str, np.ndarray], addrs: np.ndarray, is_ground: np.ndarray, moved: np.ndarray) -> dict:
    """Counts of gone/new/changed entries by destination kind (an entry covering a ground destination is a
    ground entry) and by meaning vs representation (``moved``: (sats, dests) the answer changed)."""
    out = {}
    ground_flag = is_ground[None, :]
    for what in ("gone", "new", "changed"):
        key = diff[what]
        ground = covered_any(key, addrs, ground_flag)
        meaning = covered_any(key, addrs, moved)
        out[what] = {"ground_meaning": int((ground & meaning).sum()),
                     "ground_representation": int((ground & ~meaning).sum()),
                     "satellite_meaning": int((~ground & meaning).sum()),
                     "satellite_representation": int((~ground & ~meaning).sum())}
    tot = {c: sum(out[w][c] for w in out) for c in out["gone"]}
    out["total"] = tot
    return out


LINKS64 = np.dtype([("a", "<i8"), ("b", "<i8"), ("dir_a", "i1"), ("dir_b", "i1"), ("delay_ms", "<f8")])


def links_of(L) -> np.ndarray:
    """A slice's ISLs (``emu.snapshot.series.Links``) as rows with the planner's float64 delays (the stored
    LINK_DTYPE rounds them to float32, which moves near-ties)."""
    out = np.zeros(len(L), dtype=LINKS64)
    out["a"], out["b"], out["dir_a"], out["dir_b"], out["delay_ms"] = L.a, L.b, L.dir_a, L.dir_b, L.delay_ms
    return out


def codes_for(n_sats: int, links: np.ndarray, terminals, term_code: np.ndarray, addr, plen, routing) -> np.ndarray:
    """(dests, sats) next-hop codes of ground destinations over ``links`` (:func:`links_of` rows) with ``terminals``
    (destination, satellite, last-hop delay ms): the planner's computation (``planner.plan_slice``)."""
    from emu.plan.planner import neighbour_matrix
    from emu.plan.routing import Destinations

    nb, dl = neighbour_matrix(links, n_sats)
    dl = np.where(nb >= 0, dl, np.inf)
    dest = Destinations(addr, plen, np.full(len(addr), -1, np.int32), term_code, terminals)
    dist = destination_distances(n_sats, links["a"].astype(np.int64), links["b"].astype(np.int64),
                                 links["delay_ms"].astype(np.float64), terminals, len(addr))
    return hop_codes(nb, dl, dist, dest, routing.multipath, routing.ucmp_tolerance, routing.ecmp_tolerance)


def _link_id(links: np.ndarray) -> np.ndarray:
    return (links["a"].astype(np.int64) << 24) | (links["b"].astype(np.int64) << 6) | (links["dir_a"].astype(np.int64) << 3) \
        | links["dir_b"].astype(np.int64)


def _terminal_id(t) -> np.ndarray:
    return (np.asarray(t[0], np.int64) << 32) | np.asarray(t[1], np.int64)


def hybrid_links(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``new``'s links, with ``old``'s delay where the link exists in both (the link set of k', the geometry of k)."""
    out = new.copy()
    io, jn = np.intersect1d(_link_id(old), _link_id(new), return_indices=True)[1:]
    out["delay_ms"][jn] = old["delay_ms"][io]
    return out


def hybrid_terminals(old, new):
    """``new``'s terminals, with ``old``'s last-hop delay where the (destination, satellite) exists in both."""
    d, s, w = (np.asarray(x).copy() for x in new)
    w = w.astype(np.float64)
    io, jn = np.intersect1d(_terminal_id(old), _terminal_id(new), return_indices=True)[1:]
    w[jn] = np.asarray(old[2], np.float64)[io]
    return d, s, w


CAUSES = ("terminal", "link_set", "geometry")


def pair_causes(n_sats: int, links: tuple[np.ndarray, np.ndarray], terms: tuple, term_code, addr, plen, routing
                ) -> dict[str, np.ndarray]:
    """Per (destination, satellite) pair, how its code moved from slice k to k' when the inputs change one
    at a time: k's links and delays with k''s terminal set (``terminal``: a ground station's antennas or a
    user terminal's serving satellite moved), then k''s link set at k's delays (``link_set``: an ISL came or
    went, the polar cut-off), then k''s delays (``geometry``: the same graph, other distances).

    Returns each stage's code arrays (``c0`` = slice k, ``c3`` = slice k') and ``cause``: per pair, the index
    into :data:`CAUSES` of the first stage that changed its code, -1 where k and k' agree.
    """
    l0, l1 = links
    t0, t1 = terms
    c0 = codes_for(n_sats, l0, t0, term_code, addr, plen, routing)
    ta = hybrid_terminals(t0, t1)
    # stage 1: k's graph (its link set and delays), k''s terminal set
    c1 = codes_for(n_sats, l0, ta, term_code, addr, plen, routing)
    # stage 2: k''s link set at k's delays
    c2 = codes_for(n_sats, hybrid_links(l0, l1), ta, term_code, addr, plen, routing)
    c3 = codes_for(n_sats, l1, t1, term_code, addr, plen, routing)
    cause = np.full(c0.shape, -1, dtype=np.int8)
    moved = c0 != c3
    for i, (a, b) in enumerate(((c0, c1), (c1, c2), (c2, c3))):
        cause[(cause < 0) & moved & (a != b)] = i
    cause[moved & (cause < 0)] = 2  # changed and changed back within a stage pair: counted as geometry
    return {"c0": c0, "c1": c1, "c2": c2, "c3": c3, "cause": cause}


def tie_kind(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair of codes (both forwarding): 0 the direction sets are nested (a direction entered or left the
    near-equal set: a tie that flipped), 1 disjoint (the best way changed), 2 overlapping otherwise, 3 a
    terminal or unreachable code on either side, 4 same directions, other weights."""
    ma, mb = actions.mask_of(a), actions.mask_of(b)
    term = actions.is_terminal(a) | actions.is_terminal(b) | (a == 0) | (b == 0)
    inter = ma & mb
    out = np.full(len(a), 2, dtype=np.int8)
    out[(inter == ma) | (inter == mb)] = 0
    out[inter == 0] = 1
    out[ma == mb] = 4
    out[term] = 3
    return out
