"""The planner's routing kernels as they were before the vectorised rewrite (issue 16, branch planperf),
kept verbatim as an independent reference: tests/unit/test_plan_kernels.py checks that the fast kernels give
exactly the same codes and tables on random graphs and on real scenario slices."""

from __future__ import annotations

import numpy as np

from emu.addressing import satgrc
from emu.addressing.grc import LEGAL_PREFIX_LENGTHS
from emu.plan import actions
from emu.plan.routing import Destinations, SliceTables, destination_distances  # noqa: F401 (Dijkstra is shared)

MIX = -2
_EPS = 1e-9



def next_hop_codes(nb: np.ndarray, nb_delay: np.ndarray, dist: np.ndarray, dest: Destinations,
                   policy: str, ucmp_tolerance: float, ecmp_tolerance: float = 0.0) -> np.ndarray:
    """(sats, dests) action codes; 0 where the destination is unreachable from the satellite.

    ECMP and UCMP take every neighbour whose path is within a relative
    tolerance of the best (``ecmp_tolerance``, ``ucmp_tolerance``; the
    scenario's ``routing`` block defines both): float delays over real
    geometry never tie exactly, so a zero tolerance would never split.
    ECMP gives the chosen egresses equal weights, UCMP weights them by
    best / delay. Near-equal neighbours must be strictly closer to the
    destination, so every hop still lowers the remaining delay (no loops).

    ``dist[d, s]``: least delay from satellite s to destination d
    (:func:`destination_distances`). A terminal satellite delivers (Down or
    local) unless its neighbours offer a strictly shorter way to another
    terminal of the same destination (a ground station with several
    antennas); every other satellite forwards to the neighbours on a shortest
    path, so each hop strictly lowers the remaining delay: no loops.
    """
    n_sats = nb.shape[0]
    n_dest = len(dest.addr)
    codes = np.zeros((n_sats, n_dest), dtype=np.int64)
    t_dest, t_sat, t_delay = dest.terminals()
    live = np.unique(t_dest)
    if len(live) == 0:
        return codes
    D = dist[live]  # (L, sats): distance to the destination
    has = nb >= 0
    nbi = np.where(has, nb, 0)
    C = np.where(has[None], nb_delay[None] + D[:, nbi], np.inf)  # (L, sats, 6)
    best = C.min(axis=-1)
    ok = np.isfinite(best)
    if policy == "active-standby":
        primary = np.argmin(C, axis=-1)
        Dn = np.where(has[None], D[:, nbi], np.inf)
        downstream = Dn < D[:, :, None] - _EPS
        alt = np.where(downstream, C, np.inf)
        np.put_along_axis(alt, primary[..., None], np.inf, axis=-1)
        standby = np.argmin(alt, axis=-1)
        has_standby = np.isfinite(np.take_along_axis(alt, standby[..., None], axis=-1)[..., 0])
        code = (np.int64(actions.STANDBY) << 48) | (np.int64(1) << primary) | (np.int64(1) << (6 + 7 * primary))
        code |= np.where(has_standby, (np.int64(1) << standby) | (np.int64(2) << (6 + 7 * standby)), 0)
    else:
        tol = ucmp_tolerance if policy == "ucmp" else ecmp_tolerance
        sel = C <= best[..., None] * (1.0 + tol) + _EPS
        # only neighbours strictly closer to the destination: near-equal paths must not loop
        Dn = np.where(has[None], D[:, nbi], np.inf)
        sel &= (Dn < D[:, :, None] - _EPS) | (C <= best[..., None] + _EPS)
        if policy == "ucmp":
            with np.errstate(invalid="ignore"):  # unreachable (best inf): masked by ``ok`` below
                w = np.clip(np.round(100.0 * best[..., None] / np.where(sel, C, np.inf)), 1, 100).astype(np.int64)
        else:
            w = np.ones_like(C, dtype=np.int64)
        code = np.zeros(best.shape, dtype=np.int64)
        for d in range(6):
            code |= np.where(sel[..., d], (np.int64(1) << d) | (w[..., d] << (6 + 7 * d)), 0)
    code = np.where(ok, code, 0)
    # terminal satellites: Down to the ground node, or local delivery (unless a neighbour is strictly shorter)
    row = np.searchsorted(live, t_dest)
    deliver = t_delay <= best[row, t_sat] + _EPS
    code[row[deliver], t_sat[deliver]] = dest.term_code[t_dest[deliver]]
    codes[:, live] = code.T
    return codes



def _mask(plen: np.ndarray) -> np.ndarray:
    p = plen.astype(np.uint64)
    return ((np.uint64(0xFFFFFFFF) << (np.uint64(32) - p)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)



def aggregate(codes: np.ndarray, addr: np.ndarray, plen: np.ndarray, enabled: bool = True,
              coarsest: int = 11) -> SliceTables:
    """Fold destinations along the GRC hierarchy, up to prefixes of length ``coarsest``; see the module docstring.

    Works on (destination-group, satellite) arrays so every reduction runs
    over contiguous rows.
    """
    n_sats, n_dest = codes.shape
    prefix = (addr & _mask(plen)).astype(np.uint32)
    levels = []  # (prefix, plen, code (groups, sats), parent_of_group)
    cur_p, cur_l, cur_c = prefix, plen.astype(np.uint8), np.ascontiguousarray(codes.T)
    if enabled:
        for P in sorted((x for x in LEGAL_PREFIX_LENGTHS if coarsest <= x < 32), reverse=True):
            if len(cur_p) == 0:
                break
            key = cur_p.astype(np.uint64) >> np.uint64(32 - P)
            pk, inv = np.unique(key, return_inverse=True)
            identity = (cur_l == P)[:, None]
            terminal = actions.is_terminal(cur_c)
            val = np.where((cur_c > 0) & (~terminal | identity), cur_c, MIX)
            order = np.argsort(inv, kind="stable")
            starts = np.searchsorted(inv[order], np.arange(len(pk)))
            vs = val[order]
            vmin = np.minimum.reduceat(vs, starts, axis=0)
            vmax = np.maximum.reduceat(vs, starts, axis=0)
            gcode = np.where(vmin == vmax, vmin, MIX)
            levels.append((cur_p, cur_l, cur_c, inv))
            # a group is the region at length P, unless a member is coarser already (a satellite's level-k
            # region holding a ground cell): then the group keeps that member's shorter prefix
            gl = np.minimum(np.minimum.reduceat(cur_l[order], starts), P).astype(np.uint8)
            cur_p = ((pk << np.uint64(32 - P)).astype(np.uint32) & _mask(gl)).astype(np.uint32)
            cur_l = gl
            cur_c = gcode
    levels.append((cur_p, cur_l, cur_c, None))
    sats, pre, pl, act = [], [], [], []
    for i, (p, l, c, inv) in enumerate(levels):
        emit = c > 0
        if inv is not None:
            emit &= levels[i + 1][2][inv] <= 0  # parent MIXED (or nothing): this level states it
        u_idx, s_idx = np.nonzero(emit)
        sats.append(s_idx)
        pre.append(p[u_idx])
        pl.append(l[u_idx])
        act.append(c[u_idx, s_idx])
    s_all = np.concatenate(sats)
    p_all = np.concatenate(pre).astype(np.uint32)
    l_all = np.concatenate(pl).astype(np.uint8)
    a_all = np.concatenate(act).astype(np.int64)
    order = np.lexsort((l_all, p_all, s_all))
    offsets = np.zeros(n_sats + 1, dtype=np.int64)
    np.cumsum(np.bincount(s_all, minlength=n_sats), out=offsets[1:])
    return SliceTables(offsets, p_all[order], l_all[order], a_all[order])



def satellite_routes(nb: np.ndarray, nb_delay: np.ndarray, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray,
                     addr: np.ndarray, policy: str, ucmp_tolerance: float, enabled: bool = True) -> tuple[SliceTables, np.ndarray]:
    """Every satellite's entries for every satellite address of one slice (see the module docstring).

    ``nb``/``nb_delay``: (sats, 6) neighbour by direction and link delay; ``a``, ``b``, ``delay_ms``: the
    slice's links; ``addr``: each satellite's :func:`emu.addressing.satgrc.addresses`.
    """
    n = len(addr)
    addr = np.asarray(addr, np.uint32)
    planes, plane_of = np.unique(satgrc.plane_prefix(addr), return_inverse=True)
    idx = ((addr >> np.uint32(3)) & np.uint32(satgrc.INDEX_MAX)).astype(np.int64)
    everyone = np.arange(n, dtype=np.int64)
    zero = np.zeros(n)
    # toward the plane
    term = (plane_of.astype(np.int64), everyone, zero)
    dist = destination_distances(n, a, b, delay_ms, term, len(planes))
    to_plane = Destinations(planes, np.full(len(planes), satgrc.PLANE_PLEN, np.uint8), np.zeros(len(planes), np.int32),
                            np.zeros(len(planes), np.int64), term)  # term_code 0: a plane's own members use the ring
    c_plane = next_hop_codes(nb, nb_delay, dist, to_plane, policy, ucmp_tolerance)
    t_plane = aggregate(c_plane, to_plane.addr, to_plane.plen, enabled)
    # along the plane: destination j is "satellite j of my plane"; only intra-plane links
    n_idx = int(idx.max()) + 1 if n else 0
    inplane = plane_of[a] == plane_of[b]
    has = nb >= 0
    nb_ring = np.where(has & (plane_of[np.where(has, nb, 0)] == plane_of[:, None]), nb, -1)
    term = (idx, everyone, zero)
    dist = destination_distances(n, a[inplane], b[inplane], delay_ms[inplane], term, n_idx)
    rel = (np.arange(n_idx, dtype=np.uint32) << np.uint32(3)).astype(np.uint32)  # j's address bits below the /20
    ring = Destinations(rel, np.full(n_idx, satgrc.SAT_PLEN, np.uint8), np.zeros(n_idx, np.int32),
                        np.full(n_idx, actions.local(), np.int64), term)
    c_ring = next_hop_codes(nb_ring, nb_delay, dist, ring, policy, ucmp_tolerance)
    t_ring = aggregate(c_ring, rel, ring.plen, enabled, coarsest=satgrc.PLANE_PLEN)
    own = np.repeat(planes[plane_of], np.diff(t_ring.offsets))  # each row's satellite's plane prefix
    t_ring = SliceTables(t_ring.offsets, (t_ring.prefix | own).astype(np.uint32), t_ring.plen, t_ring.action)
    size = np.bincount(plane_of, minlength=len(planes))
    routed = (c_plane > 0) @ size + np.count_nonzero(c_ring, axis=1)
    return merge_tables(t_plane, t_ring), routed.astype(np.int64)



def merge_tables(*parts: SliceTables) -> SliceTables:
    """One SliceTables from several with disjoint prefixes (rows per satellite ordered as aggregate orders them)."""
    n = len(parts[0].offsets) - 1
    s = np.concatenate([np.repeat(np.arange(n, dtype=np.int64), np.diff(t.offsets)) for t in parts])
    p = np.concatenate([t.prefix for t in parts]).astype(np.uint32)
    pl = np.concatenate([t.plen for t in parts]).astype(np.uint8)
    act = np.concatenate([t.action for t in parts]).astype(np.int64)
    order = np.lexsort((pl, p, s))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(s, minlength=n), out=offsets[1:])
    return SliceTables(offsets, p[order], pl[order], act[order])



def slice_tables(plan, k: int) -> tuple[SliceTables, np.ndarray]:
    """(tables, raw entries per satellite) of slice k as emu.plan.planner.plan_slice computed them before."""
    from emu.plan.planner import destinations_for, satellite_addresses

    sc = plan.loaded.scenario
    snap = plan.series[k]
    L = snap.links
    dest = destinations_for(plan, k)
    dist = destination_distances(snap.constellation.size, L.a, L.b, L.delay_ms, dest.terminals(), len(dest.addr))
    codes = next_hop_codes(snap.neighbours, snap.neighbour_delay_ms, dist, dest,
                           sc.routing.multipath, sc.routing.ucmp_tolerance, sc.routing.ecmp_tolerance)
    tables = aggregate(codes, dest.addr, dest.plen, sc.routing.aggregate)
    raw = np.count_nonzero(codes, axis=1)
    if sc.routing.satellite_destinations:
        st, routed = satellite_routes(snap.neighbours, snap.neighbour_delay_ms, L.a, L.b, L.delay_ms,
                                      satellite_addresses(plan.loaded, snap.constellation), sc.routing.multipath,
                                      sc.routing.ucmp_tolerance, sc.routing.aggregate)
        tables = merge_tables(tables, st)
        raw = raw + routed
    return tables, raw
