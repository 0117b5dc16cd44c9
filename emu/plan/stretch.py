"""Path stretch: planned one-way delay over the free-choice optimum (issue 14).

For a (user terminal, target) pair in one slice, the *planned* delay is the
satellite segment the plan gives (the UT's up link to its serving satellite,
the tables' path, the down link to the target) and the *optimum* the least
up + ISL path + down over every pair of satellites the two ends see, with no
relaying through the ground (what reference simulators such as Hypatia
compute). Propagation only. Both come from
:func:`emu.plan.planner.pair_delays`; this module only summarises them.
"""

from __future__ import annotations

import numpy as np


def stretch_of(pairs: np.ndarray) -> np.ndarray:
    """planned / optimum of PAIR_DTYPE rows where both exist (NaN rows dropped)."""
    ok = np.isfinite(pairs["planned_ms"]) & np.isfinite(pairs["optimum_ms"]) & (pairs["optimum_ms"] > 0)
    return pairs["planned_ms"][ok] / pairs["optimum_ms"][ok]


def summarise(per_slice: list[np.ndarray], names: tuple[str, ...] | list[str], per_pair: bool = True) -> dict:
    """Median / p99 / max stretch over every (pair, slice) sample, and per pair (median, max)."""
    rows = np.concatenate(per_slice) if per_slice else np.zeros(0)
    out: dict = {"samples": 0, "median": None, "p99": None, "max": None, "unreachable_samples": 0}
    if len(rows) == 0:
        return out
    st = stretch_of(rows)
    out["unreachable_samples"] = int(len(rows) - len(st))
    if len(st):
        out.update(samples=int(len(st)), median=round(float(np.median(st)), 4),
                   p99=round(float(np.percentile(st, 99)), 4), max=round(float(st.max()), 4))
    if per_pair:
        pairs = {}
        key = rows["src"].astype(np.int64) << 32 | rows["dst"].astype(np.int64)
        for kv in np.unique(key):
            sel = rows[key == kv]
            s = stretch_of(sel)
            label = f"{names[int(kv >> 32)]}->{names[int(kv & 0xFFFFFFFF)]}"
            pairs[label] = {"samples": int(len(s)),
                            "median": round(float(np.median(s)), 4) if len(s) else None,
                            "max": round(float(s.max()), 4) if len(s) else None}
        out["pairs"] = pairs
    return out
