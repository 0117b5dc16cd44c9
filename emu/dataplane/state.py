"""Run records: everything a run creates is written down *before* it is created.

A run lives in ``$LEOEMU_RUN_DIR/<run>/`` (default ``/run/leo-emu``, a tmpfs
that vanishes with the namespaces at reboot):

- ``journal``: append-only, fsync'ed lines ``netns NAME`` and
  ``pid PID STARTTIME WHAT`` written before the namespace or process exists;
- ``run.json``: what the run is (plan, prefix, nodes) for status/exec/down;
- ``status.json``: the controller's live status (slice, apply times).

``down`` (:mod:`emu.dataplane.cleanup`) removes exactly what the journal
names, so it works after ``kill -9`` of the controller at any moment.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from emu.errors import InputError

DEFAULT_RUN_DIR = "/run/leo-emu"


def run_root() -> Path:
    return Path(os.environ.get("LEOEMU_RUN_DIR", DEFAULT_RUN_DIR))


def new_run_id() -> str:
    """``le`` + 4 hex digits; tests set LEOEMU_RUN_ID_PREFIX to give their runs a unique prefix."""
    return os.environ.get("LEOEMU_RUN_ID_PREFIX", "le") + secrets.token_hex(2)


def proc_starttime(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), to tell a reused pid from ours; None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


@dataclass
class Run:
    run_id: str
    root: Path

    @property
    def dir(self) -> Path:
        return self.root / self.run_id

    @property
    def prefix(self) -> str:
        return self.run_id

    @classmethod
    def create(cls, run_id: str | None = None) -> "Run":
        root = run_root()
        root.mkdir(parents=True, exist_ok=True)
        run = cls(run_id or new_run_id(), root)
        run.dir.mkdir(mode=0o755)
        (run.dir / "journal").touch()
        return run

    # --- journal -----------------------------------------------------------------------
    def _append(self, lines: list[str]) -> None:
        with open(self.dir / "journal", "a") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())

    def record_netns(self, names: list[str]) -> None:
        self._append([f"netns {n}" for n in names])

    def record_pid(self, pid: int, what: str) -> None:
        self._append([f"pid {pid} {proc_starttime(pid) or '-'} {what}"])

    def journal(self) -> tuple[list[str], list[tuple[int, str, str]]]:
        namespaces, pids = [], []
        try:
            text = (self.dir / "journal").read_text()
        except OSError:
            return [], []
        for line in text.splitlines():
            parts = line.split(" ", 3)
            if parts[0] == "netns" and len(parts) == 2:
                namespaces.append(parts[1])
            elif parts[0] == "pid" and len(parts) >= 3:
                pids.append((int(parts[1]), parts[2], parts[3] if len(parts) > 3 else ""))
        return namespaces, pids

    # --- descriptive files ---------------------------------------------------------------
    def write_json(self, name: str, data: dict) -> None:
        tmp = self.dir / (name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.dir / name)

    def read_json(self, name: str) -> dict:
        try:
            return json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return {}


def list_runs() -> list[Run]:
    root = run_root()
    if not root.is_dir():
        return []
    return [Run(p.name, root) for p in sorted(root.iterdir()) if p.is_dir() and (p / "journal").exists()]


def find_run(run_id: str | None = None) -> Run:
    runs = list_runs()
    if run_id:
        for r in runs:
            if r.run_id == run_id:
                return r
        raise InputError(f"--run: no such run (got {run_id!r}); runs: {', '.join(r.run_id for r in runs) or 'none'}")
    if not runs:
        raise InputError("no leo-emu run is up (start one with: sudo leo-emu up SCENARIO)")
    if len(runs) > 1:
        raise InputError(f"--run: several runs are up, name one (got none; runs: {', '.join(r.run_id for r in runs)})")
    return runs[0]


def wait_for(predicate, timeout_s: float, step_s: float = 0.05) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()
