"""Keep a run's daemons alive: start each in its namespace, journal its pid, restart it when it dies.

One supervisor process per run and control plane (SNO daemons now, BGP
speakers later), itself journaled by whoever starts it. It lives in the
host's namespace and starts each child inside the child's namespace (the
child enters it between fork and exec, :func:`emu.dataplane.procs.popen_in`),
writes the child's pid and start time to the run's journal right after the
fork, so ``down`` finds every incarnation, and restarts a child that exits
with a growing back-off (reset after a minute of good health).

SIGTERM stops everything: children get SIGTERM (their chance to remove
their kernel state), then SIGKILL after ``grace_s``. The supervisor never
restarts anything once it has been told to stop.

Run it as ``python -m emu.control.supervise SPEC.json``, the spec being::

    {"run": {"root": "/run/leo-emu", "id": "le1a2b"}, "events": "PATH.jsonl",
     "children": [{"name": "core-a", "netns": "le1a2b-core-a", "argv": [...], "log": "PATH"}]}
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

JOURNAL_ENV = "LEOEMU_SUPERVISED_JOURNAL"  # a supervised daemon waits until its pid is in this journal
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
HEALTHY_S = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    netns: str | None = None
    log: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_START_S
    due: float = 0.0  # when a dead child may start again


def next_backoff(current: float, ran_s: float) -> float:
    """Double the wait after a quick death, start over after a long healthy run (pure)."""
    if ran_s >= HEALTHY_S:
        return BACKOFF_START_S
    return min(BACKOFF_MAX_S, current * 2)


class Supervisor:
    def __init__(self, children: list[Child], run=None, events: str | None = None, grace_s: float = 3.0):
        self.children = children
        self.run = run
        self.events = events
        self.grace_s = grace_s
        self.stopping = False

    def _event(self, **rec) -> None:
        if not self.events:
            return
        rec = {"t_ns": time.monotonic_ns(), **rec}
        with open(self.events, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _spawn(self, c: Child) -> None:
        env = {**os.environ, **c.env}
        if self.run is not None:
            env[JOURNAL_ENV] = str(self.run.dir / "journal")
        out = open(c.log, "ab") if c.log else subprocess.DEVNULL
        try:
            if c.netns:
                from emu.dataplane import procs
                c.proc = procs.popen_in(c.netns, c.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                        close_fds=True, start_new_session=True, env=env)
            else:
                c.proc = subprocess.Popen(c.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          close_fds=True, start_new_session=True, env=env)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        if self.run is not None:
            self.run.record_pid(c.proc.pid, f"{c.name} (supervised) in {c.netns or 'host'}")
        c.started = time.monotonic()
        self._event(event="start", child=c.name, pid=c.proc.pid, restarts=c.restarts)

    def start(self) -> None:
        for c in self.children:
            self._spawn(c)

    def poll(self) -> None:
        """Reap dead children and start those whose back-off has passed."""
        now = time.monotonic()
        for c in self.children:
            if self.stopping:
                return
            if c.proc is not None and c.proc.poll() is not None:
                ran = now - c.started
                self._event(event="exit", child=c.name, pid=c.proc.pid, returncode=c.proc.returncode,
                            ran_s=round(ran, 3))
                c.backoff = next_backoff(c.backoff, ran) if c.restarts else BACKOFF_START_S
                c.due = now + c.backoff
                c.proc = None
            if c.proc is None and now >= c.due:
                c.restarts += 1
                try:
                    self._spawn(c)
                except Exception as exc:  # the namespace is gone, the program missing: try again later
                    self._event(event="start-failed", child=c.name, error=str(exc))
                    c.backoff = min(BACKOFF_MAX_S, c.backoff * 2)
                    c.due = now + c.backoff

    def stop(self) -> None:
        self.stopping = True
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for p in live:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
        end = time.monotonic() + self.grace_s
        for p in live:
            try:
                p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._event(event="stopped")

    def serve(self, step_s: float = 0.05) -> None:
        """Run until SIGTERM/SIGINT: poll, restart, then stop everything."""
        def on_signal(_signum, _frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if self.run is not None and not journaled(str(self.run.dir / "journal"), os.getpid()):
            self._event(event="not-journaled", pid=os.getpid())  # whoever started us did not record us
            return
        self.start()
        while not self.stopping:
            time.sleep(step_s)
            self.poll()
        self.stop()


def journaled(journal: str, pid: int, timeout_s: float = 5.0) -> bool:
    """True once the run's journal names ``pid`` (so ``down`` can find it), False after ``timeout_s``."""
    needle = f"pid {pid} "
    end = time.monotonic() + timeout_s
    while True:
        try:
            if any(line.startswith(needle) for line in Path(journal).read_text().splitlines()):
                return True
        except OSError:
            pass
        if time.monotonic() > end:
            return False
        time.sleep(0.005)


def wait_journaled() -> bool:
    """First thing a supervised daemon does: run only once the supervisor has journaled it."""
    journal = os.environ.get(JOURNAL_ENV)
    return True if not journal else journaled(journal, os.getpid())


def load_spec(path: str) -> Supervisor:
    spec = json.loads(Path(path).read_text())
    run = None
    if spec.get("run"):
        from emu.dataplane.state import Run
        run = Run(spec["run"]["id"], Path(spec["run"]["root"]))
    children = [Child(c["name"], list(c["argv"]), c.get("netns"), c.get("log"), dict(c.get("env", {})))
                for c in spec["children"]]
    return Supervisor(children, run, spec.get("events"), float(spec.get("grace_s", 3.0)))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m emu.control.supervise SPEC.json", file=sys.stderr)
        return 2
    try:
        sup = load_spec(args[0])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # one line, no traceback (an internal entry point)
        print(f"supervise: bad spec {args[0]!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    sup.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
