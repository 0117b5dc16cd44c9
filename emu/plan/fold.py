"""Aggregation of next-hop codes into segmented-longest-match tables: a default per region, exceptions below.

spec: grc-based-routing §Segmented Longest Match (entries only at lengths 11, 14, ..., 32; a lookup falls
back from the longest match to shorter ones), §Routing Table Structure (destination GRC prefix -> egress
directions), §Time Slice Transition (the FIB takes each slice's table: what changes is what is written).
docs/route-churn.md says why this form.

The regions form a tree: every destination's own prefix, and its ancestors at the legal lengths down to
``coarsest``. Per satellite, the choice of which region states which code follows ORTC (Draves, King,
Venkatachary, Zill: "Constructing optimal IP routing tables", INFOCOM 1999), generalised from binary
tries to the GRC's regions:

- bottom-up, each region gets a *candidate set*: a destination's own code (``POISON`` if it has no route:
  nothing above it may state one, so its address matches nothing; ``FREE`` if terminal -- Down to a ground
  node or local delivery --, which is always stated at the destination's own prefix and never folds into a
  region); a region's set is the codes the most of its children can take (each child's set counts once
  per code), in the order its children give them; ``POISON`` if a child is, ``FREE`` if every child is,
  and ``POISON`` where the region holds the address of a coarser destination (nested destinations: a
  default there would answer for it);
- top-down, a region whose set holds what its parent already answers takes that (no entry); otherwise it
  states the first code of its set. A destination states its code where that differs from its parent's
  answer, a terminal code always.

Every destination's longest match is therefore its own code, exactly; an entry covers other addresses
only where the region holds no other destination. Destinations that share a prefix share its one entry:
the first one's code (a table holds one entry per key, as the kernel's does).

Why not fold only regions whose members all agree (what the planner did before): a destination whose
answer changes then breaks up or merges its whole region, rewriting its siblings' entries although
their answers stayed. Here it costs about one entry (an exception appears or goes), and a region keeps
its parent's code whenever that is one of its best, so a sibling's change rarely moves the others. On
Starlink shell 1 this took the entries of a slice from 217k to 144k and the entries that change between
slices k and k+3 from 163k to 89k (docs/route-churn.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from emu.addressing.grc import LEGAL_PREFIX_LENGTHS
from emu.orbit.constellation import DOWN
from emu.plan import actions

POISON = -1
FREE = -3


@dataclass(frozen=True)
class RegionTree:
    """The regions of a set of destinations, coarse to fine (a parent before its children)."""

    prefix: np.ndarray  # uint32 per region
    plen: np.ndarray  # uint8 per region
    parent: np.ndarray  # int64 per region, -1: a root
    dest: np.ndarray  # int64 per region: the destination whose own prefix it is, -1: none
    pinned: np.ndarray  # bool per region: holds the address of a coarser destination (so never a default)
    extra: np.ndarray  # destinations that share an earlier one's prefix (that one's code answers for them)


_TREES: dict[tuple, RegionTree] = {}


def region_tree(addr: np.ndarray, plen: np.ndarray, coarsest: int) -> RegionTree:
    """The tree of :func:`fold_entries` (it depends on the destinations only: kept per set of them)."""
    addr = np.ascontiguousarray(addr, dtype=np.uint32)
    plen = np.ascontiguousarray(plen, dtype=np.uint8)
    key = (addr.tobytes(), plen.tobytes(), int(coarsest))
    got = _TREES.get(key)
    if got is not None:
        return got
    nodes: dict[tuple[int, int], int] = {}  # (prefix, plen) -> destination (-1: a region only)
    extra = []
    for d, (a, p) in enumerate(zip(addr.tolist(), plen.tolist())):
        own = (a & _mask(p), p)
        if nodes.get(own, -1) >= 0:
            extra.append(d)
            continue
        nodes[own] = d
        for P in LEGAL_PREFIX_LENGTHS:
            if coarsest <= P < p:
                nodes.setdefault((a & _mask(P), P), -1)
    # a region below a destination's own prefix that holds the destination's address (nested destinations):
    # a default there would answer for that address, so it never takes one
    pinned = set()
    for a, p in zip(addr.tolist(), plen.tolist()):
        for P in LEGAL_PREFIX_LENGTHS:
            if P > p and nodes.get((a & _mask(P), P), 0) == -1:
                pinned.add((a & _mask(P), P))
    order = sorted(nodes, key=lambda x: (x[1], x[0]))
    index = {x: i for i, x in enumerate(order)}
    parent = np.full(len(order), -1, dtype=np.int64)
    for i, (a, p) in enumerate(order):
        for P in sorted((x for x in LEGAL_PREFIX_LENGTHS if coarsest <= x < p), reverse=True):
            j = index.get((a & _mask(P), P))
            if j is not None:
                parent[i] = j
                break
    tree = RegionTree(np.array([x[0] for x in order], dtype=np.uint32), np.array([x[1] for x in order], dtype=np.uint8),
                      parent, np.array([nodes[x] for x in order], dtype=np.int64),
                      np.array([x in pinned for x in order], dtype=bool), np.array(extra, dtype=np.int64))
    if len(_TREES) > 64:
        _TREES.clear()
    _TREES[key] = tree
    return tree


def _mask(p: int) -> int:
    return (0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF


def fold_entries(codes: np.ndarray, addr: np.ndarray, plen: np.ndarray, coarsest: int = 11
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Entries (:func:`emu.plan.routing.entry_key`, action) of (dests, sats) codes, unsorted (see the module
    docstring)."""
    from emu.plan.routing import entry_key

    codes = np.ascontiguousarray(codes, dtype=np.int64)
    tree = region_tree(addr, plen, coarsest)
    # the children of each region, contiguous (regions are numbered coarse to fine, so children after parents)
    kids = np.argsort(tree.parent, kind="stable")
    kids = kids[tree.parent[kids] >= 0]
    start = np.searchsorted(tree.parent[kids], np.arange(len(tree.parent) + 1))
    node, sat, act = _fold(np.ascontiguousarray(codes.T), tree.parent, tree.dest, tree.pinned, kids, start, np.int64(actions.LOCAL),
                           np.int64(DOWN))
    return entry_key(sat, tree.prefix[node], tree.plen[node]), act


@njit(cache=True, nogil=True)
def _terminal(c, local_kind, down):  # pragma: no cover - compiled
    """:func:`emu.plan.actions.is_terminal` of one code > 0."""
    return ((c >> 48) & 3) == local_kind or (c >= (np.int64(1) << 50) and ((c >> down) & 1) == 1)


@njit(cache=True, nogil=True)
def _fold(codes, parent, dest, pinned, kids, start, local_kind, down):  # pragma: no cover - compiled
    """(region, satellite, code) of every entry: per satellite, candidate sets bottom-up, then choices and
    statements top-down. ``codes``: (sats, dests), so one satellite's codes are contiguous."""
    n = len(parent)
    n_sats = codes.shape[0]
    width = 1
    for i in range(n):
        width = max(width, start[i + 1] - start[i])
    cap = 1024
    out_node = np.empty(cap, dtype=np.int64)
    out_sat = np.empty(cap, dtype=np.int64)
    out_code = np.empty(cap, dtype=np.int64)
    k = 0
    cand = np.empty((n, width), dtype=np.int64)  # a region's candidate set (its first ``size`` columns)
    size = np.empty(n, dtype=np.int64)  # set size; POISON or FREE: no set
    eff = np.empty(n, dtype=np.int64)
    tmp = np.empty(width * width, dtype=np.int64)
    cnt = np.empty(width * width, dtype=np.int64)
    buf_node = np.empty(n, dtype=np.int64)
    buf_code = np.empty(n, dtype=np.int64)
    for s in range(n_sats):
        for i in range(n - 1, -1, -1):  # fine to coarse: children first
            d = dest[i]
            if d >= 0:
                c = codes[s, d]
                if c <= 0:
                    size[i] = POISON
                elif _terminal(c, local_kind, down):
                    size[i] = FREE
                else:
                    size[i] = 1
                    cand[i, 0] = c
                continue
            if pinned[i]:
                size[i] = POISON
                continue
            t = 0
            poison = False
            for x in range(start[i], start[i + 1]):
                ch = kids[x]
                if size[ch] == POISON:
                    poison = True
                    break
                for y in range(max(size[ch], 0)):
                    v = cand[ch, y]
                    z = 0
                    while z < t and tmp[z] != v:
                        z += 1
                    if z == t:
                        tmp[t] = v
                        cnt[t] = 0
                        t += 1
                    cnt[z] += 1
            if poison:
                size[i] = POISON
                continue
            if t == 0:
                size[i] = FREE
                continue
            most = 0
            for z in range(t):
                most = max(most, cnt[z])
            m = 0
            for z in range(t):  # the codes most children can take, in the order the children give them
                if cnt[z] == most:
                    cand[i, m] = tmp[z]
                    m += 1
            size[i] = m
        j = 0  # this satellite's entries, gathered in buf_* (arrays never re-bound in the loop stay fast)
        for i in range(n):  # coarse to fine: parents first
            p = parent[i]
            above = eff[p] if p >= 0 else 0
            d = dest[i]
            stated = 0
            if d >= 0:
                c = codes[s, d]
                if c > 0 and (size[i] == FREE or c != above):
                    stated = c
                eff[i] = c if c > 0 else above
            elif size[i] > 0:
                pick = cand[i, 0]
                for y in range(size[i]):
                    if cand[i, y] == above:
                        pick = above
                        break
                if pick != above:
                    stated = pick
                eff[i] = pick
            else:
                eff[i] = above
            if stated != 0:
                buf_node[j] = i
                buf_code[j] = stated
                j += 1
        if k + j > cap:
            cap = max(2 * cap, k + j)
            out_node = _grow(out_node, cap)
            out_sat = _grow(out_sat, cap)
            out_code = _grow(out_code, cap)
        out_node[k:k + j] = buf_node[:j]
        out_sat[k:k + j] = s
        out_code[k:k + j] = buf_code[:j]
        k += j
    return out_node[:k], out_sat[:k], out_code[:k]


@njit(cache=True, nogil=True)
def _grow(a, cap):  # pragma: no cover - compiled
    b = np.empty(cap, dtype=a.dtype)
    b[:len(a)] = a
    return b
