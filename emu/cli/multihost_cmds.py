"""``leo-emu partition`` and ``leo-emu multihost up|down``: the constellation over several hosts (issue 13).

Details: docs/multihost.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from emu.cli.common import emit_json, emit_table, format_option
from emu.errors import InputError


def _open_plan(plan_path: str):
    from emu.dataplane.controller import check_plan

    if not Path(plan_path).is_file():
        raise InputError(f"PLAN.db: no such file (got {plan_path!r})")
    return check_plan(Path(plan_path).resolve())


@click.command()
@click.argument("plan_path", metavar="PLAN.db", type=click.Path(dir_okay=False))
@click.option("--hosts", "n_hosts", type=int, required=True, help="Number of hosts to spread the nodes over.")
@click.option("--slices", "every", type=int, default=1, show_default=True,
              help="Report the cut of every N-th slice (1 = all).")
@format_option
def partition(plan_path: str, n_hosts: int, every: int, fmt: str) -> None:
    """Split the plan's nodes over hosts by whole planes and show the cut (links crossing hosts per slice)."""
    from emu.dataplane.model import Model
    from emu.multihost.partition import MAX_HOSTS
    from emu.multihost.partition import partition as make_partition
    from emu.multihost.partition import summary

    if not 1 <= n_hosts <= MAX_HOSTS:
        raise InputError(f"--hosts: must be 1..{MAX_HOSTS} (got {n_hosts})")
    if every < 1:
        raise InputError(f"--slices: must be >= 1 (got {every})")
    db = _open_plan(plan_path)
    m = Model.from_plan(db, "p")
    p = make_partition(m, n_hosts)
    s = summary(m, p, range(0, m.n_slices, every))
    if fmt == "json":
        emit_json(s)
        return
    emit_table(f"{n_hosts} host(s), {s['nodes']} nodes, imbalance {s['imbalance']}",
               ["host", "nodes", "satellites", "planes", "ground nodes", "cores", "inet"],
               [[h["host"], h["nodes"], h["satellites"], _planes(h["planes"]), len(h["ground"]),
                 " ".join(h["cores"]), "yes" if h["inet"] else ""] for h in s["split"]])
    c = s["cut"]
    emit_table("cut (links crossing hosts)", ["per slice min / mean / max", "VXLAN created once", "VXLAN per slice"],
               [[f"{c['min']} / {c['mean']} / {c['max']}",
                 ", ".join(f"{k} {v}" for k, v in c["vxlan_fixed"].items()) or "0",
                 ", ".join(f"{k} {v}" for k, v in c["vxlan_dynamic"].items())]])


def _planes(planes: list[list[int]]) -> str:
    if not planes:
        return ""
    return f"shell {planes[0][0]} plane {planes[0][1]} .. shell {planes[-1][0]} plane {planes[-1][1]} ({len(planes)})"


@click.group()
def multihost() -> None:
    """The constellation over several hosts, each a Ray node running the builder/applier on its partition."""


@multihost.command("up")
@click.argument("plan_path", metavar="PLAN.db", type=click.Path(dir_okay=False))
@click.option("--hosts", "n_hosts", type=int, required=True, help="Number of (simulated) hosts.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Replay the slices this much faster.")
@click.option("--slices", type=int, default=None, help="Run only this many slices.")
@click.option("--start-slice", type=int, default=0, show_default=True)
@click.option("--trust", multiple=True, help="Also accept plans signed by this public key (hex or .pub file).")
@click.option("--timeout", "timeout_s", type=float, default=600, show_default=True,
              help="Give up (and tear down) if the run is not up within this many seconds.")
@format_option
def mh_up(plan_path: str, n_hosts: int, speed: float, slices: int | None, start_slice: int,
          trust: tuple[str, ...], timeout_s: float, fmt: str) -> None:
    """Build the run over N hosts on this machine (underlay namespaces on a fabric bridge, one Ray node and
    one agent per host) and leave it running (`leo-emu down` removes it from every host)."""
    import subprocess
    import sys
    import time

    from emu.cli.dataplane_cmds import require_root
    from emu.dataplane import cleanup, procs
    from emu.dataplane.state import Run
    from emu.errors import DataplaneError
    from emu.multihost import engine, underlay
    from emu.multihost.partition import MAX_HOSTS
    from emu.plan.trust import load_public_key

    if not 1 <= n_hosts <= MAX_HOSTS:
        raise InputError(f"--hosts: must be 1..{MAX_HOSTS} (got {n_hosts})")
    if slices is not None and slices < 1:
        raise InputError(f"--slices: must be >= 1 (got {slices})")
    db = _open_plan(plan_path) if not trust else None
    require_root()
    if not engine.ray_available():
        raise InputError("--hosts: the multihost engine needs Ray (pip install 'leo-emu[multihost]' or ray)")
    trusted = tuple(load_public_key(t).hex() for t in trust)
    if db is None:
        from emu.dataplane.controller import check_plan

        db = check_plan(Path(plan_path).resolve(), trusted)
    if not 0 <= start_slice < db.n_slices:
        raise InputError(f"--start-slice: must be 0..{db.n_slices - 1} (got {start_slice})")
    run = Run.create()
    try:
        t0 = time.perf_counter()
        underlay.build_fabric(run, n_hosts)
        engine.start_nodes(run, n_hosts)
        argv = [sys.executable, "-m", "emu.multihost.controller", "--run", run.run_id, "--root", str(run.root),
                "--plan", str(Path(plan_path).resolve()), "--hosts", str(n_hosts), "--speed", str(speed),
                "--start-slice", str(start_slice)] + (["--slices", str(slices)] if slices else [])
        for t in trusted:
            argv += ["--trust", t]
        p = procs.popen_in(underlay.underlay_ns(run.prefix, 0), argv, env=engine.engine_env(), close_fds=True,
                           start_new_session=True, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run.record_pid(p.pid, "multihost controller")
        end = time.monotonic() + timeout_s
        while True:
            st = run.read_json("status.json")
            if st.get("state") in ("running", "finished"):
                break
            if st.get("state") in ("failed", "degraded") or p.poll() is not None or time.monotonic() > end:
                why = st.get("error") or (f"controller exited with code {p.poll()}" if p.poll() is not None
                                          else f"not up within {timeout_s:.0f} s")
                raise DataplaneError("multihost up", None, None, why)
            time.sleep(0.2)
    except BaseException:
        cleanup.teardown(run)
        raise
    out = {"run": run.run_id, "hosts": n_hosts, "state": st["state"], "build_s": st.get("build_s"),
           "up_s": round(time.perf_counter() - t0, 3), "per_host": st.get("hosts"),
           "degradations": st.get("degradations", [])}
    if fmt == "json":
        emit_json(out)
        return
    emit_table(f"run {run.run_id} is up over {n_hosts} host(s) (build {st.get('build_s')} s)",
               ["host", "state", "namespaces", "vxlan", "build_s", "agent pid"],
               [[h["host"], h.get("state"), h.get("namespaces"), h.get("vxlan"), h.get("build_s"), h.get("pid")]
                for h in st.get("hosts", [])])


@multihost.command("status")
@click.option("--run", "run_id", default=None, help="The run (default: the only one).")
@format_option
def mh_status(run_id: str | None, fmt: str) -> None:
    """Per host: state, agent pid, build time; per boundary: the slowest apply and the skew between hosts."""
    from emu.dataplane.state import find_run

    run = find_run(run_id)
    st = run.read_json("status.json")
    keys = ("state", "slice", "error", "build_s", "apply_p50_ms", "apply_p99_ms", "skew_p50_ms", "skew_p99_ms",
            "skew_max_ms")
    out = {"run": run.run_id, **{k: st.get(k) for k in keys}, "hosts": st.get("hosts", []),
           "last": (st.get("applied") or [None])[-1]}
    if fmt == "json":
        emit_json(out)
        return
    emit_table(f"run {run.run_id}: {st.get('state')} at slice {st.get('slice')}; skew p50/p99 "
               f"{st.get('skew_p50_ms')}/{st.get('skew_p99_ms')} ms" + (f"; {st['error']}" if st.get("error") else ""),
               ["host", "state", "namespaces", "vxlan", "build_s", "agent pid", "error"],
               [[h["host"], h.get("state"), h.get("namespaces"), h.get("vxlan"), h.get("build_s"), h.get("pid"),
                 h.get("error", "")] for h in st.get("hosts", [])])


def register(cli: click.Group) -> None:
    cli.add_command(partition)
    cli.add_command(multihost)
