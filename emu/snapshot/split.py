"""A series' per-slice parts computed by forked processes, for the planner (issue 16, plan <= 2.5x snapshots).

Most of a :class:`emu.snapshot.series.SnapshotSeries` of Starlink shell 1 is the ground nodes' visibility
(~75 %: every ground node against every satellite at every slice) and the satellites' bound cells (h3, one
call per satellite and slice); both are independent per slice. Computed alone they keep one core busy
while the other idles. Here they are computed for runs of :data:`RUN` slices by forked workers
(``multiprocessing`` fork pool, dynamic order, results in slice order) while the caller goes on. A run
starts at a multiple of :func:`emu.snapshot.ground.visibility`'s chunk, so every chunk is the very array
the one-process computation makes: the parts are the same numbers, rows and order (``tests/unit/
test_snapshot.py`` compares them byte for byte).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from typing import Callable

import numpy as np

from emu.snapshot.ground import VISIBILITY_CHUNK, Visibility, visibility

RUN = 2 * VISIBILITY_CHUNK  # slices per task: ~0.6 s of a shell-1 worker's time; a multiple of the chunk
MAX_WORKERS = 4


def workers_for(n_slices: int, wanted: int) -> int:
    """Forked processes for ``n_slices`` (1: none): at most ``wanted``, the CPUs and :data:`MAX_WORKERS`,
    and only when there are at least two runs to share."""
    runs = -(-n_slices // RUN)
    return max(1, min(wanted, os.cpu_count() or 1, MAX_WORKERS, runs)) if runs >= 2 else 1


_FORK_SERIES = None
_FORK_LEVEL = 0


def per_slice_parts(series, level: int, workers: int, started: Callable[[], None] | None,
                    meanwhile: Callable[[], None]) -> tuple[Visibility, np.ndarray]:
    """(visibility, bound cells) of every slice of ``series`` (its ephemeris and ground nodes set), by
    ``workers`` forked processes; ``started()`` is called once they exist (where the caller may start
    threads), then ``meanwhile()`` runs here while they work. Call it while no other thread of this process
    runs (a child forked while a thread holds a lock can hang on it). An error in a worker is raised here
    (the pool sends it back)."""
    global _FORK_SERIES, _FORK_LEVEL
    n = len(series.times_s)
    _FORK_SERIES, _FORK_LEVEL = series, level
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers, initializer=keep_freed_memory) as pool:  # forked here, before any thread starts
            results = pool.imap(_run, range(0, n, RUN))
            if started:
                started()
            meanwhile()
            parts = list(results)
    finally:
        _FORK_SERIES, _FORK_LEVEL = None, 0
    vis = [p[0] for p in parts]
    cat = [np.concatenate([getattr(v, f) for v in vis]) for f in ("slice", "node", "sat", "elevation_deg", "range_km")]
    return Visibility(*cat), np.concatenate([p[1] for p in parts])


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> None:
    """In a forked worker (a pool's initializer): keep freed memory for reuse instead of giving it back to
    the kernel (glibc's ``mallopt``; elsewhere nothing). A visibility chunk allocates and frees ~0.5 GB of
    arrays of ~120 MB, above glibc's largest mmap threshold, so each came fresh from the kernel,
    page-faulted in and zeroed: shell 1, 96 slices in one process, 1.6 s of system time of 3.2 s CPU,
    0.5 s of 2.0 s with this. The planner's slice workers too (``emu.plan.planner._per_slice``): 40 shell-1
    slices, page faults 108-120k -> 13k, system time 0.18-0.31 -> 0.04-0.09 s. The numbers computed are
    the same; a worker holds what it freed until it ends."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)
    mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)


def _run(lo: int) -> tuple[Visibility, np.ndarray]:
    """Slices lo .. lo + RUN - 1 of the forked series: their visibility rows (slice numbers of the whole
    series) and bound cells."""
    series = _FORK_SERIES
    hi = min(lo + RUN, len(series.times_s))
    v = visibility(series.ground, series.ephemeris.ecef[lo:hi])
    v = Visibility((v.slice + np.int32(lo)).astype(np.int32), v.node, v.sat, v.elevation_deg, v.range_km)
    return v, series._bindings(_FORK_LEVEL, lo, hi)
