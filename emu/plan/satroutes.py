"""Routes to satellites' own addresses, on the semantic structure: toward the plane, then along it.

spec: satellite-semantic-addressing §4.3 (front/back neighbours in a plane
are steady), §5.1 and Figure 7 (shell / orbit / satellite indexes; laid out
in :mod:`emu.addressing.satgrc`, which states the aggregation rule);
grc-based-routing §Predictive Routing, §Routing Table Structure.

Per slice, instead of one shortest-path search per satellite:

- one search per orbit plane (the plane's satellites are its terminals, at
  no cost): every satellite outside the plane forwards the plane's /20 to
  the neighbours on a shortest path to the nearest satellite of the plane;
  the plane prefixes aggregate to /17, /14, /11 (:mod:`emu.plan.fold`: a
  default per region, exceptions below it);
- one search per satellite index j over the intra-plane links only (the
  front/back ring each plane forms, always linked): every satellite routes
  its own plane's satellites by /29 along the ring (the shorter way round;
  ECMP at the antipode), aggregated to /26, /23 and its own plane's /20 (a
  plane's /20 is never routed by the first search on its own satellites);
  its own /29 is delivered locally.

A packet for satellite (p, j) therefore walks a shortest-path tree toward
plane p, each hop strictly closer to it, enters the plane at some satellite,
and from there walks the ring, each hop strictly closer to j: it ends at j and
never loops (the /29 ring entries of plane p exist only on plane p, the /20 of
plane p only off it). Both searches use the slice's policy (ECMP, UCMP or
active-standby) through :func:`emu.plan.routing.next_hop_codes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emu.addressing import satgrc
from emu.plan import actions
from emu.plan.routing import (Destinations, SliceTables, aggregate_entries, destination_distances, hop_codes,
                              tables_from_entries)


@dataclass(frozen=True)
class SatelliteRoutes:
    tables: SliceTables  # the satellite-address entries of every satellite
    routed: np.ndarray  # per satellite: how many satellites it has a route to (its unaggregated entries)


def satellite_routes(nb: np.ndarray, nb_delay: np.ndarray, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray,
                     addr: np.ndarray, policy: str, ucmp_tolerance: float, enabled: bool = True) -> SatelliteRoutes:
    """Every satellite's entries for every satellite address of one slice (see the module docstring).

    ``nb``/``nb_delay``: (sats, 6) neighbour by direction and link delay; ``a``, ``b``, ``delay_ms``: the
    slice's links; ``addr``: each satellite's :func:`emu.addressing.satgrc.addresses`.
    """
    key, act, routed = satellite_entries(nb, nb_delay, a, b, delay_ms, addr, policy, ucmp_tolerance, enabled)
    return SatelliteRoutes(tables_from_entries(key, act, len(addr)), routed)


def satellite_entries(nb: np.ndarray, nb_delay: np.ndarray, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray,
                      addr: np.ndarray, policy: str, ucmp_tolerance: float,
                      enabled: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`satellite_routes` as unsorted entries (:func:`emu.plan.routing.entry_key`, action), plus ``routed``
    (the planner sorts them once with the ground destinations' entries)."""
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
    c_plane = hop_codes(nb, nb_delay, dist, to_plane, policy, ucmp_tolerance)  # (planes, sats)
    k_plane, a_plane = aggregate_entries(c_plane, to_plane.addr, to_plane.plen, enabled)
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
    c_ring = hop_codes(nb_ring, nb_delay, dist, ring, policy, ucmp_tolerance)  # (indexes, sats)
    k_ring, a_ring = aggregate_entries(c_ring, rel, ring.plen, enabled, coarsest=satgrc.PLANE_PLEN)
    k_ring = k_ring | (planes[plane_of].astype(np.uint64) << np.uint64(8))[(k_ring >> np.uint64(40)).astype(np.int64)]
    size = np.bincount(plane_of, minlength=len(planes))
    routed = size @ (c_plane > 0) + np.count_nonzero(c_ring, axis=0)
    return np.concatenate([k_plane, k_ring]), np.concatenate([a_plane, a_ring]), routed.astype(np.int64)

