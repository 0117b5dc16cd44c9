"""What a benchmark's helpers rely on to leave nothing behind (no root needed).

- ``netns.die_with_parent``: a child started with it is killed when its parent is killed -9;
- ``procs.interrupt_on``: SIGTERM runs the owner's ``finally`` (KeyboardInterrupt); a child it forks later
  dies of the signal without running its parent's clean-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from emu.dataplane.state import proc_starttime, wait_for

PARENT = r"""
import os, subprocess, sys, time
from emu.dataplane import netns
parent = os.getpid()
keep = sys.argv[1] == "1"
pre = (lambda: None if netns.die_with_parent(parent) else os._exit(1)) if keep else None
child = subprocess.Popen(["sleep", "60"], preexec_fn=pre, start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


def _orphan_after_kill9(die_with_parent: bool) -> bool:
    """Start a parent that starts ``sleep``, kill -9 the parent: True if the sleep is still alive after 3 s."""
    p = subprocess.Popen([sys.executable, "-c", PARENT, "1" if die_with_parent else "0"], stdout=subprocess.PIPE,
                         text=True)
    child = int(p.stdout.readline())
    try:
        p.kill()
        p.wait(10)
        return not wait_for(lambda: proc_starttime(child) is None, 3.0)
    finally:
        p.stdout.close()
        if proc_starttime(child) is not None:
            os.kill(child, signal.SIGKILL)


def test_die_with_parent_kills_the_child_with_its_parent():
    assert _orphan_after_kill9(die_with_parent=False)  # without it the child outlives a kill -9 (the leak)
    assert not _orphan_after_kill9(die_with_parent=True)


OWNER = r"""
import os, sys, time
from emu.dataplane.procs import interrupt_on
interrupt_on()
pid = os.fork()
if pid == 0:
    try:
        time.sleep(60)
    finally:
        print("child finally", flush=True)  # must not run: the child dies of the signal
    os._exit(0)
print(pid, flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt as exc:
    print("owner interrupted:", exc, flush=True)
finally:
    os.kill(pid, 15)
    _, status = os.waitpid(pid, 0)
    print("child status", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_interrupt_on_runs_the_owners_finally_only():
    p = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        int(p.stdout.readline())
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert f"owner interrupted: signal {int(signal.SIGTERM)}" in out
    assert f"child status -{int(signal.SIGTERM)}" in out
    assert "child finally" not in out
