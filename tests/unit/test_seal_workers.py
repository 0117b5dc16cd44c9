"""The seal's table digests taken by worker processes equal the ones taken in the process itself, whether the
workers are forked (a single-threaded process) or fresh interpreters (a process with other threads, where a
forked child can hang on a lock another thread held: a Ray actor checking a plan's seal did); a script without
a ``__main__`` guard is not run again by them (multiprocessing's forkserver did, and waited forever); a worker
that fails costs only time."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from emu.plan import sign
from emu.plan.db import write_plan
from emu.plan.planner import make_plan

from .helpers import load_default


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    p = tmp_path_factory.mktemp("seal") / "p.db"
    write_plan(make_plan(load_default()), p)  # the full orbit: large enough for the workers
    con = sqlite3.connect(p)
    names = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                   if r[0] != "signatures")
    return p, con, names, sign._table_digests(con, names, None)


def test_worker_digests_equal_the_serial_ones_with_and_without_threads(plan, monkeypatch) -> None:
    p, con, names, serial = plan
    how = []
    for name in ("_forked", "_interpreters"):
        orig = getattr(sign, name)
        monkeypatch.setattr(sign, name, lambda *a, _o=orig, _n=name: how.append(_n) or _o(*a))
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
    assert how == ["_forked" if single else "_interpreters", "_interpreters"], how


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(plan, tmp_path) -> None:
    p, _con, names, serial = plan
    marks = tmp_path / "runs"
    script = tmp_path / "noguard.py"
    script.write_text(textwrap.dedent(f"""
        import json, sqlite3, threading
        from emu.plan import sign
        assert sign.__file__ == {sign.__file__!r}, sign.__file__   # the code under test, not an installed emu
        open({str(marks)!r}, "a").write("run\\n")   # module level: once per run of this script
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()   # other threads: no fork
        con = sqlite3.connect({str(p)!r})
        print(json.dumps(sign._table_digests(con, {names!r}, __import__("pathlib").Path({str(p)!r}))))
        stop.set()
    """))
    root = str(Path(sign.__file__).resolve().parents[2])  # the script's own directory comes first on its path
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=root))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == serial
    assert marks.read_text() == "run\n"  # the workers did not run the script again


def test_a_failing_worker_costs_only_time(plan, monkeypatch, caplog) -> None:
    p, con, names, serial = plan
    monkeypatch.setattr(sign, "_os_threads", lambda: 2)  # fresh interpreters
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    real = subprocess.Popen

    def broken(cmd, **kw):
        return real([sys.executable, "-c", "import sys; sys.exit(3)"], **kw)
    monkeypatch.setattr(subprocess, "Popen", broken)
    assert sign._table_digests(con, names, p) == serial
    assert "workers failed" in caplog.text and "exit 3" in caplog.text


def test_the_workers_run_this_emu_not_one_in_the_working_directory(plan, tmp_path, monkeypatch) -> None:
    """``python -m emu.plan.digest`` put the working directory first on the worker's path: another checkout's
    (or any) ``emu/plan/digest.py`` there gave its digests, silently."""
    p, con, names, serial = plan
    fake = tmp_path / "emu" / "plan"
    fake.mkdir(parents=True)
    (tmp_path / "emu" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "digest.py").write_text('import json, sys\nprint(json.dumps({t: "0" * 64 for t in sys.argv[2:]}))\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(sign, "_os_threads", lambda: 2)  # fresh interpreters
    assert sign._table_digests(con, names, p.resolve()) == serial


def test_a_single_threaded_process_forks_its_workers(plan, tmp_path) -> None:
    """The forked path: numpy's BLAS threads make every process that imports the seal multi-threaded (so the
    test above never forks), unless the BLAS is told to use one thread."""
    p, _con, names, serial = plan
    script = tmp_path / "single.py"
    script.write_text(textwrap.dedent(f"""
        import json, sqlite3
        from pathlib import Path
        from emu.plan import sign
        assert sign.__file__ == {sign.__file__!r}, sign.__file__
        how = []
        for name in ("_forked", "_interpreters"):
            orig = getattr(sign, name)
            setattr(sign, name, lambda *a, _o=orig, _n=name: how.append(_n) or _o(*a))
        threads = sign._os_threads()
        con = sqlite3.connect({str(p)!r})
        print(json.dumps([threads, how, sign._table_digests(con, {names!r}, Path({str(p)!r}))]))
    """))
    root = str(Path(sign.__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    threads, how, got = json.loads(out.stdout)
    if threads != 1:
        pytest.skip(f"this process has {threads} threads even with one BLAS thread")
    assert how == ["_forked"], how
    assert got == serial
