"""The seal's table digests taken by worker processes equal the ones taken in the process itself, whether the
workers are forked (a single-threaded process) or come from a forkserver (a process with other threads, where a
forked child can hang on a lock another thread held: a Ray actor checking a plan's seal did)."""

from __future__ import annotations

import sqlite3
import threading

from emu.plan import sign
from emu.plan.db import write_plan
from emu.plan.planner import make_plan

from .helpers import load_default


def test_worker_digests_equal_the_serial_ones_with_and_without_threads(tmp_path, monkeypatch) -> None:
    p = tmp_path / "p.db"
    write_plan(make_plan(load_default()), p)  # the full orbit: large enough for the workers
    con = sqlite3.connect(p)
    names = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                   if r[0] != "signatures")
    serial = sign._table_digests(con, names, None)
    used = []
    import multiprocessing

    orig = multiprocessing.get_context

    def spy(method=None):
        used.append(method)
        return orig(method)
    monkeypatch.setattr(multiprocessing, "get_context", spy)
    single = sign._os_threads() == 1
    assert sign._table_digests(con, names, p) == serial
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert sign._os_threads() > 1
        assert sign._table_digests(con, names, p) == serial
    finally:
        stop.set()
        t.join()
    assert used == ["fork" if single else "forkserver", "forkserver"], used
