"""Satellite -> SNO core association, per slice, under two policies.

spec: inter-sno-mobility-framework §3.3 (Figure 2), §4.1-§4.3, §5.

Several operators (SNOs) share one access layer of stateless satellites
(§4.1); each operator keeps its own core (§4.2). In every slice each
satellite is *associated* with one core: it hands the users it serves to that
core's ground stations. A user whose serving satellite is associated with a
core other than its home operator's is an inter-SNO (visited) user, and every
change of the core serving a user is an inter-SNO handover
(:mod:`emu.plan.handover` counts them).

``owner`` (Figure 2, today's constellation sharing)
    A satellite always uses its owner's core. A satellite no operator owns
    (a plane left out of every ``owns`` list) uses the home core of most of
    the users it serves in that slice (ties and idle: the lowest operator
    index), with no memory.

``dynamic`` (§4.3, §5: the access layer is decoupled from the cores and the
mapping is computed in advance from the predictable sky)
    Objective, in this order: (1) take as few users away from their home
    core as possible -- an inter-SNO handover pair (leave home, return
    home) starts only where a satellite is shared by users of different
    operators; (2) never re-associate a satellite under users that stay on
    it; (3) users at their home core as much as possible; (4) as few
    re-associations of a satellite as possible.

    Algorithm (greedy in time, exact per slice): slices are decided in
    order. Each user has a reference core: the core of its last served
    slice, or its home core before it was ever served. For slice k, every
    satellite s picks the core l minimising the lexicographic cost

    1. *leaves*: users s serves in slice k whose reference core is not l and
       whose home is not l (a user at home taken to a visited core, or one
       moved between two visited cores; going home is never a leave);
    2. *re-associations*: users served by s in slices k-1 and k whose
       reference core is not l (they would change core with no satellite
       change);
    3. *away*: user-slices away from home over the look-ahead window
       k .. k+H (H = ``LOOKAHEAD_S`` / slice length, rounded up): the users
       s serves in those slices whose home is not l -- a satellite is
       pre-associated with the operator of the users it is about to serve,
       a contested satellite goes to the operator with most users over the
       window, and a user on a visited core goes home at its next satellite
       change unless that satellite is contested;
    4. l is not s's association in slice k-1 (hysteresis: idle satellites
       keep their core; before slice 0 every satellite uses its owner's);
    5. l is not s's owner; then the lowest operator index.

    Each user is served by exactly one satellite per slice, so the costs of
    different satellites in one slice are independent and each slice is
    optimal for its cost; only the time order is greedy (a decision is
    never revisited when a later slice would have preferred another).

Arrays: ``ut_serving[k, u]`` is the satellite serving user terminal u in
slice k (-1: none visible), ``home[u]`` its operator index, ``owner[s]`` the
operator owning satellite s (-1: none). The result ``core[k, s]`` is the
operator index whose core satellite s uses in slice k (int16).
"""

from __future__ import annotations

import math

import numpy as np

POLICIES = ("owner", "dynamic")
LOOKAHEAD_S = 240.0
"""About one satellite pass over a user at 550 km above 25 deg elevation. Measured on starlink-3sno.yaml
(docs/mobility.md): inter-SNO handovers per user-hour fall from 7.28 (no look-ahead) to 6.90 (60 s) and 6.32
(240 s), then flatten (6.24 at 480 s); home share stays 83-84 %."""


def lookahead_slices(slice_s: float) -> int:
    """The look-ahead window H of the dynamic policy in slices for a slice length."""
    return max(0, math.ceil(LOOKAHEAD_S / slice_s - 1e-9))


def user_view(serving: np.ndarray, kind, operator: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the plan's ground-node arrays (``serving`` is (T, G)): (UT columns, ut_serving (T, U), home (U,))."""
    cols = np.array([i for i, kd in enumerate(kind) if kd == "ut"], dtype=np.int64)
    serving = np.asarray(serving)
    return cols, serving[:, cols].astype(np.int64), np.asarray(operator)[cols].astype(np.int64)


def associate(policy: str, ut_serving: np.ndarray, home: np.ndarray, owner: np.ndarray, n_ops: int,
              slice_s: float) -> np.ndarray:
    """core[k, s] under ``policy`` (one of :data:`POLICIES`) for slices of ``slice_s`` seconds."""
    if policy == "owner":
        return owner_association(ut_serving, home, owner, n_ops)
    if policy == "dynamic":
        return dynamic_association(ut_serving, home, owner, n_ops, lookahead_slices(slice_s))
    raise ValueError(f"association policy must be one of {POLICIES} (got {policy!r})")


def user_counts(ut_serving: np.ndarray, home: np.ndarray, n_sats: int, n_ops: int) -> np.ndarray:
    """c[k, s, l]: users of operator l served by satellite s in slice k."""
    T, U = ut_serving.shape
    c = np.zeros((T, n_sats, n_ops), dtype=np.int32)
    k, u = np.nonzero(ut_serving >= 0)
    np.add.at(c, (k, ut_serving[k, u], home[u]), 1)
    return c


def owner_association(ut_serving: np.ndarray, home: np.ndarray, owner: np.ndarray, n_ops: int) -> np.ndarray:
    """spec Figure 2: a satellite always uses its owner's core (unowned: its majority of users this slice)."""
    T = ut_serving.shape[0]
    owner = np.asarray(owner, dtype=np.int64)
    core = np.broadcast_to(owner, (T, len(owner))).astype(np.int16)
    if (owner < 0).any():
        c = user_counts(ut_serving, home, len(owner), n_ops)
        majority = np.argmax(c, axis=2).astype(np.int16)  # lowest index on ties, 0 when idle
        core = np.where(owner[None, :] >= 0, core, majority)
    return core


def dynamic_association(ut_serving: np.ndarray, home: np.ndarray, owner: np.ndarray, n_ops: int,
                        lookahead: int) -> np.ndarray:
    """spec §4.3, §5: the lexicographic greedy of the module docstring."""
    if lookahead < 0:
        raise ValueError(f"lookahead must be >= 0 (got {lookahead})")
    T, U = ut_serving.shape
    N = len(owner)
    O = n_ops
    owner = np.asarray(owner, dtype=np.int64)
    home = np.asarray(home, dtype=np.int64)
    c = user_counts(ut_serving, home, N, O)
    cs = np.concatenate([np.zeros((1, N, O), dtype=np.int64), np.cumsum(c, axis=0, dtype=np.int64)])
    ops = np.arange(O)[None, :]
    not_owner = (ops != owner[:, None]).astype(np.int64)  # (N, O); unowned: every core counts as not-owner
    span_re = U + 1  # the composite key keeps the steps' order: each step's range fits under the one before
    span_away = U * (lookahead + 1) + 1
    core = np.zeros((T, N), dtype=np.int16)
    prev_assoc = np.where(owner >= 0, owner, 0)
    user_core = np.full(U, -1, dtype=np.int64)  # core of each user's last served slice
    for k in range(T):
        window = cs[min(k + lookahead + 1, T)] - cs[k]  # (N, O) users per home over k..k+H
        away = window.sum(axis=1, keepdims=True) - window
        leave = np.zeros((N, O), dtype=np.int64)
        reassoc = np.zeros((N, O), dtype=np.int64)
        served = np.nonzero(ut_serving[k] >= 0)[0]
        if len(served):
            sats = ut_serving[k, served]
            ref = np.where(user_core[served] >= 0, user_core[served], home[served])
            visited = ref != home[served]
            np.add.at(leave, (sats, ref), -1)
            np.add.at(leave, (sats[visited], home[served][visited]), -1)
            leave += np.bincount(sats, minlength=N)[:, None]
            if k > 0:
                kept = (ut_serving[k - 1, served] == sats) & (user_core[served] >= 0)
                np.add.at(reassoc, (sats[kept], user_core[served][kept]), -1)
                reassoc += np.bincount(sats[kept], minlength=N)[:, None]
        not_prev = (ops != prev_assoc[:, None]).astype(np.int64)
        key = (((leave * span_re + reassoc) * span_away + away) * 2 + not_prev) * 2 + not_owner
        choice = np.argmin(key, axis=1)  # first (lowest) operator index on a full tie
        core[k] = choice
        if len(served):
            user_core[served] = choice[ut_serving[k, served]]
        prev_assoc = choice
    return core


def serving_core(core: np.ndarray, ut_serving: np.ndarray) -> np.ndarray:
    """(T, U) core serving each user terminal in each slice: its satellite's association, -1 when unserved."""
    k = np.arange(ut_serving.shape[0])[:, None]
    return np.where(ut_serving >= 0, core[k, np.maximum(ut_serving, 0)], -1).astype(np.int64)
