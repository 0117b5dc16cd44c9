"""Host-wide kernel limits a large run needs: raised at ``up``, recorded, restored when the last run goes down.

The kernel keeps ONE neighbour table per family (ARP, IPv6 ND) for all
network namespaces together, and its garbage-collection thresholds
(``net.ipv{4,6}.neigh.default.gc_thresh{2,3}``) are global too, whichever
namespace writes them. Above ``gc_thresh3`` (default 1,024 for the whole
machine) the kernel refuses new entries ("neighbour: ndisc_cache: neighbor
table overflow!") and packets toward an unresolved next hop are dropped.
Satellites forward to their neighbours' IPv6 link-local addresses, so a run
needs up to one ND entry per link end it uses; Starlink Phase I has ~23,000
link ends (docs/phase1.md), shell 1 ~9,000 -- far above 1,024.

``raise_for(need)`` lifts ``gc_thresh3`` to ``original + need`` (the original
room stays for everyone else) and ``gc_thresh2`` to half of that, never
lowers anything, and writes the originals to one host-wide record
(``/run/leo-emu/hostlimits.json`` whatever ``$LEOEMU_RUN_DIR`` says, or ``$LEOEMU_HOSTLIMITS``) with the runs that
rely on it. ``release(run)`` drops the run (and runs whose directory is gone,
e.g. after a reboot-less crash) and, when none is left, writes the originals
back wherever the value is still the one we set (someone else's later change
is left alone). Everything goes through ``proc_sys`` (a directory), so the
logic is testable on a fake tree without root.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

PROC_SYS = Path("/proc/sys")
FAMILIES = ("ipv4", "ipv6")
RESERVE = 1024  # the kernel's default gc_thresh3: room kept for everything else on the machine


def record_path() -> Path:
    return Path(os.environ.get("LEOEMU_HOSTLIMITS", "/run/leo-emu/hostlimits.json"))


def keys() -> list[str]:
    return [f"net/{f}/neigh/default/gc_thresh{n}" for f in FAMILIES for n in (2, 3)]


def targets(current: dict[str, int], original: dict[str, int], need: int) -> dict[str, int]:
    """The values to write (only those that go up): gc_thresh3 = original + need, gc_thresh2 = half of it.

    Pure. ``need``: neighbour entries the run may hold per family (its link ends).
    """
    out = {}
    for f in FAMILIES:
        k2, k3 = f"net/{f}/neigh/default/gc_thresh2", f"net/{f}/neigh/default/gc_thresh3"
        t3 = original.get(k3, current[k3]) + max(0, need)
        t2 = max(original.get(k2, current[k2]), t3 // 2)
        for k, t in ((k3, t3), (k2, t2)):
            if t > current[k]:
                out[k] = t
    return out


def read(proc_sys: Path = PROC_SYS) -> dict[str, int]:
    return {k: int((proc_sys / k).read_text().split()[0]) for k in keys()}


def _write(proc_sys: Path, values: dict[str, int], raising: bool) -> None:
    """Raising: gc_thresh3 before gc_thresh2; restoring: the other way round (thresh2 <= thresh3 throughout)."""
    for k in sorted(values, reverse=raising):
        (proc_sys / k).write_text(f"{values[k]}\n")


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the directory is the lock: no file left
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            rec = {}
        yield rec
        if rec.get("runs"):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec, indent=1, sort_keys=True))
            tmp.replace(path)
        else:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def raise_for(run_dir: Path, need: int, proc_sys: Path = PROC_SYS, path: Path | None = None) -> dict:
    """Raise the neighbour-table limits for a run needing ``need`` entries per family; return what changed
    (``{"need": ..., "before": {...}, "set": {...}}``), also written to ``run_dir/hostlimits.json``."""
    path = path or record_path()
    with _locked(path) as rec:
        current = read(proc_sys)
        original = rec.setdefault("original", {})
        for k, v in current.items():
            original.setdefault(k, v)
        want = targets(current, original, need)
        _write(proc_sys, want, raising=True)
        rec["set"] = {**rec.get("set", {}), **want}
        rec.setdefault("runs", [])
        if str(run_dir) not in rec["runs"]:
            rec["runs"].append(str(run_dir))
    out = {"need": need, "before": current, "set": want, "record": str(path)}
    try:
        (Path(run_dir) / "hostlimits.json").write_text(json.dumps(out, indent=1, sort_keys=True))
    except OSError:
        pass
    return out


def release(run_dir: Path, proc_sys: Path = PROC_SYS, path: Path | None = None) -> dict:
    """Forget ``run_dir`` (and runs whose directory is gone); restore the originals when no run is left.
    Returns ``{"restored": {...}}`` (empty while other runs still rely on the raised limits)."""
    path = path or record_path()
    if not path.exists():
        return {"restored": {}}
    restored: dict[str, int] = {}
    with _locked(path) as rec:
        runs = [r for r in rec.get("runs", []) if r != str(run_dir) and Path(r).is_dir()]
        rec["runs"] = runs
        if not runs:
            current = read(proc_sys)
            restored = {k: v for k, v in rec.get("original", {}).items()
                        if k in rec.get("set", {}) and current.get(k) == rec["set"][k]}
            _write(proc_sys, restored, raising=False)
    return {"restored": restored}
