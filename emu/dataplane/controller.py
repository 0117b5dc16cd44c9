"""The slice clock: build a run, then apply one plan slice at every boundary.

Real time by default; ``speed`` > 1 replays faster (a whole orbit in
minutes). Slice k+1 is prepared right after boundary k, off the critical
path; the boundary itself is :meth:`SliceApplier.switch`, whose duration is
logged and written to ``status.json`` (``leo-emu status``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from emu.dataplane.ahead import Recorder
from emu.dataplane.build import Builder
from emu.dataplane.model import Model
from emu.dataplane.runconfig import RunConfig, scenario_of_plan
from emu.dataplane.slices import SliceApplier
from emu.dataplane.state import Run
from emu.errors import EmuError

log = logging.getLogger(__name__)


def check_plan(plan_path: Path, trust: tuple[str, ...] | list[str] = (), scenario_digest: str | None = None):
    """Open the plan and check it before anything is built: structure, a trusted signer, every row as
    signed, the scenario digest (:func:`emu.plan.trust.check_before_up`); refuse it otherwise (exit 2)."""
    from emu.plan.trust import check_before_up

    return check_before_up(plan_path, trust, scenario_digest)


class Controller:
    def __init__(self, run: Run, plan_path: Path, speed: float = 1.0, n_slices: int | None = None,
                 progress=None, scenario_name: str = "", start_slice: int = 0, trust: tuple[str, ...] = (),
                 scenario=None, mobility=None, association: str | None = None):
        """``scenario``: the validated scenario (emu.scenario.model.Scenario) if the caller has it loaded
        already; otherwise the plan's own (signed) scenario is validated once here."""
        from emu.dataplane.features import detect

        if not 0 < speed < float("inf"):  # also refuses nan
            from emu.errors import InputError

            raise InputError(f"--speed: must be > 0 (got {speed})")
        self.run = run
        self.plan_path = Path(plan_path).resolve()
        self.speed = speed
        self.progress = progress or (lambda stage, done, total: None)
        self.stop = threading.Event()
        self.features = detect()
        self.db = check_plan(self.plan_path, trust)
        if not 0 <= start_slice < self.db.n_slices:
            from emu.errors import InputError

            raise InputError(f"--start-slice: must be 0..{self.db.n_slices - 1} (got {start_slice})")
        self.k0 = start_slice
        sc = scenario if scenario is not None else scenario_of_plan(self.db)
        self.cfg = RunConfig.from_scenario(sc, self.features)  # every choice made here, before anything exists
        self.model = Model.from_plan(self.db, run.prefix, None if n_slices is None else start_slice + n_slices,
                                     self.cfg)
        self.builder: Builder | None = None
        self.mobility = mobility if mobility is not None else getattr(sc, "mobility", None)
        self.association = association or sc.routing.association
        self.t_start: float | None = None  # CLOCK_MONOTONIC s of slice k0's start (set by loop)
        self.sno = None  # emu.control.sno.livehook.MobilityHook when the scenario asks for the SNO control plane
        self.applier: SliceApplier | None = None
        self.build_steps: list[tuple[str, int, float]] = []  # see build()
        self.bgp = None  # emu.control.bgp.uphook.BgpRun when the scenario asks for the BGP overlay
        self.status: dict = {"state": "building", "slice": None, "applied": [], "controller_pid": os.getpid(),
                             "error": None, "degradations": list(self.features.degradations)}
        self.scenario_name = scenario_name or self.db.meta.get("scenario_name", "")

    # ------------------------------------------------------------------ records
    def write_run_json(self) -> None:
        m = self.model
        nodes = []
        for n in m.nodes:
            item = {"name": n.name, "kind": n.kind, "netns": n.netns, "index": n.index}
            if n.kind in ("ut", "gs"):
                from emu.addressing.grc import to_ipv4, to_ipv6

                item["grc"] = to_ipv4(m.db.ground[n.index].grc)
                item["grc6"] = to_ipv6(m.db.ground[n.index].grc, m.cfg.grc_ipv6_prefix)
            elif n.kind == "dev":
                item["addr"] = m.dev_addr(n.index)
                item["addr6"] = m.dev_addr6(n.index)
            elif n.kind == "inet":
                item["addr"] = m.cfg.inet_addr
                item["addr6"] = m.cfg.inet_addr6
            nodes.append(item)
        self.run.write_json("run.json", {
            "run": self.run.run_id, "prefix": self.run.prefix, "plan": str(self.plan_path),
            "scenario": self.scenario_name, "slice_s": self.db.slice_s, "speed": self.speed,
            "n_slices": m.n_slices, "start_slice": self.k0, "inet": m.cfg.inet_name, "inet_addr": m.cfg.inet_addr,
            "inet_addr6": m.cfg.inet_addr6, "grc_ipv6_prefix": m.cfg.grc_ipv6_prefix, "nodes": nodes,
            "started": time.time()})

    def write_status(self, **kw) -> None:
        self.status.update(kw)
        applied = self.status["applied"][-200:]
        self.status["applied"] = applied
        if applied:
            ms = np.array([a["apply_ms"] for a in applied])
            self.status["apply_p50_ms"] = round(float(np.percentile(ms, 50)), 3)
            self.status["apply_p99_ms"] = round(float(np.percentile(ms, 99)), 3)
            self.status["apply_max_ms"] = round(float(ms.max()), 3)
        self.status["unresolved_routes"] = self.applier.unresolved if self.applier else 0
        self.run.write_json("status.json", self.status)

    # ------------------------------------------------------------------ build
    def build(self) -> float:
        t0 = time.perf_counter()
        self.write_run_json()
        self.write_status()
        b = self.builder = Builder(self.model, self.run, self.features, self.progress)
        self._host_limits()
        a = self.applier = SliceApplier(self.model, None)
        rec = Recorder([n.netns for n in self.model.nodes])

        def meanwhile() -> None:  # while the namespaces are made: everything of the first slice, encoded
            self.progress("slice 0 encoded ahead", 0, 1)
            b.fabric = a.f = rec
            b.create_links(self.k0)
            a.initial(self.k0)
            self.progress("slice 0 encoded ahead", 1, 1)
        b.create_namespaces(meanwhile)
        a.f = b.fabric
        rec.replay(b.fabric, lambda done, total: self.progress("links and tables", done, total))
        self.build_steps = rec.timed  # (kind, messages, seconds) of each step: scripts/bench_up.py sums them
        b.nat()
        b.servers()
        self._sno_build()
        self._bgp_start()
        build_s = time.perf_counter() - t0
        self.status["degradations"] = list(self.features.degradations) + b.degradations
        self.status["tunnel"] = self.model.cfg.tunnel_mode
        self.write_status(state="running", slice=self.k0, slice_started_at=time.time(), build_s=round(build_s, 3),
                          slice0_at=time.time())
        return build_s

    def _host_limits(self) -> None:
        """The open-file limit (fabric.fds_needed: three fds per namespace, four per satellite or ground node),
        and the machine-wide neighbour-table limits for this run's link ends (emu.dataplane.hostlimits; `down`
        restores them when the last run goes; where /proc/sys cannot be written: a degradation)."""
        from emu.dataplane import hostlimits
        from emu.dataplane.fabric import fds_needed, raise_fd_limit
        from emu.dataplane.terrestrial import terrestrial_veths

        m = self.model
        raise_fd_limit(fds_needed(len(m.nodes), len(m.satellites) + len(m.db.ground)))  # before any namespace
        # exists: refused early (the same count as the Builder's Fabric)
        dynamic = len(m.shell_link_at(self.k0)) + len(m.ground_links_at(self.k0))
        need = 2 * (len(m.grid_links) + len(terrestrial_veths(m)) + 2 * dynamic)  # ends; dynamic ones overlap
        try:
            self.status["host_limits"] = hostlimits.raise_for(self.run.dir, need)
        except OSError as exc:
            self.builder.degradations.append(f"neighbour-table limits not raised ({exc}): a run with more than "
                                              "~1,000 next hops in use may drop packets (neighbor table overflow)")

    # ------------------------------------------------------------------ the clock
    def loop(self) -> None:
        n = self.model.n_slices
        slice_wall = self.db.slice_s / self.speed
        warm_ms = self.applier.warm(n)  # slice k0 is in force already; its clock starts after this
        log.info("next tables warmed with slice %d's routes in %.0f ms", self.k0, warm_ms)
        t_start = self.t_start = time.monotonic()
        now = time.time()
        self.write_status(slice_started_at=now, slice0_at=now, warm_ms=round(warm_ms, 1))  # the clock's start
        for k in range(self.k0 + 1, n):
            if self.stop.is_set():
                return
            boundary = t_start + (k - self.k0) * slice_wall
            # the satellites' switch armed for the boundary, on the wall clock (nftables' meta time)
            prep_ms = self.applier.prepare(k, at_ns=time.time_ns() + round((boundary - time.monotonic()) * 1e9))
            self._sno_prepare(k, boundary)
            while not self.stop.is_set():
                left = boundary - time.monotonic()
                if left <= 0:
                    break
                self.stop.wait(min(left, 0.5))
            if self.stop.is_set():
                return
            late_ms = (time.monotonic() - boundary) * 1e3
            boundary_at = time.time()
            apply_ms = self.applier.switch(k)
            self._sno_switch(k)
            self._bgp_boundary(k)  # before the cleanup retires the old GS's links: the old path serves until BGP moved
            self.applier.cleanup(k)
            log.info("slice %d applied in %.2f ms (prepared in %.1f ms)", k, apply_ms, prep_ms)
            self.status["applied"].append({"slice": k, "apply_ms": round(apply_ms, 3), "prep_ms": round(prep_ms, 1),
                                           "late_ms": round(late_ms, 1), "boundary_at": boundary_at,
                                           "at": time.time()})
            self.write_status(slice=k, slice_started_at=time.time())
        self.write_status(state="finished")
        while not self.stop.is_set():  # hold the last slice until stopped
            self.stop.wait(0.5)

    # ------------------------------------------------------------------ SNO control plane (docs/mobility.md)
    def _home_gs(self, k: int) -> dict[int, int]:
        choice = self.applier.desired.choice(k)
        return {u.idx: int(choice[row, 0]) for row, u in enumerate(self.model.uts)}

    def _sno_build(self) -> None:
        """Scenario ``mobility``: the access layer the agents watch, slice k0's serving cores, the daemons."""
        if self.mobility is None:
            return
        from emu.control.sno.desired_hook import handed_off
        from emu.control.sno.livehook import MobilityHook

        self.applier.handed_off = handed_off()
        self.sno = MobilityHook(self.model, self.run, self.features, self.mobility, self.association)
        self.progress("SNO control plane", 0, 1)
        self.sno.build(self.k0, self._home_gs(self.k0))
        info = self.sno.start()
        self.status["sno"] = {"procedure": self.mobility.procedure, "association": self.association,
                              "latency_mode": info.get("latency_mode"), "ready": info.get("ready")}
        self.progress("SNO control plane", 1, 1)

    def _sno_prepare(self, k: int, boundary_monotonic: float) -> None:
        if self.sno is not None:
            self.sno.prepare(k, int(boundary_monotonic * 1e9))

    def _sno_switch(self, k: int) -> None:
        if self.sno is not None:
            self.sno.switch(k, self._home_gs(k))

    # ------------------------------------------------------------------ BGP overlay (docs/bgp.md)
    def _bgp_start(self) -> None:
        """After the terrestrial links: the BGP daemons, when the scenario's bgp.enabled says so."""
        if not self.model.cfg.bgp:
            return
        from emu.control.bgp import uphook

        self.progress("bgp daemons", 0, 1)
        self.bgp = uphook.start(self.model, self.run, self.k0)
        self.status["bgp"] = {"timers": self.model.cfg.bgp_timers, "established_s": self.bgp.established_s,
                              "moves": 0, "restarts": 0}
        self.progress("bgp daemons", 1, 1)

    def _bgp_boundary(self, k: int) -> None:
        """After slice k's switch: the s-ASBRs of GSs that gained a user announce, then the old ones withdraw."""
        if self.bgp is None:
            return
        try:
            n = len(self.bgp.boundary(k))
        except Exception as exc:  # noqa: BLE001 - the data plane keeps running; the failure is reported
            log.error("bgp: slice %d: %s", k, exc)
            self.status["bgp"]["error"] = f"slice {k}: {exc}"
            return
        self.status["bgp"]["moves"] += n
        self.status["bgp"]["restarts"] = self.bgp.restarts()

    def close(self) -> None:
        if self.sno is not None:
            self.sno.close()
        if self.bgp is not None:
            self.bgp.stop()
            self.bgp = None
        if self.builder and self.builder.fabric:
            self.builder.fabric.close()


def run_detached(run: Run, make, what: str = "controller") -> int:
    """Body of a detached controller process (this one, or emu.multihost's): ``make()`` the controller, build,
    loop until stopped; any failure is logged and written to ``status.json``; the exit code says which."""
    ctl = None
    try:
        ctl = make()
        signal.signal(signal.SIGTERM, lambda *_: ctl.stop.set())
        signal.signal(signal.SIGINT, lambda *_: ctl.stop.set())
        ctl.build()
        ctl.loop()
        return 0
    except Exception as exc:  # noqa: BLE001 - the detached process reports everything it can
        if isinstance(exc, EmuError):
            log.error("%s failed: %s", what, exc)
            msg, code = str(exc), exc.exit_code
        else:
            log.exception("%s failed", what)
            msg, code = f"{type(exc).__name__}: {str(exc)[:300]}", 1
        if ctl is not None:
            ctl.write_status(state="failed", error=msg)
        else:
            run.write_json("status.json", {"state": "failed", "error": msg, "applied": []})
        return code
    finally:
        if ctl is not None:
            ctl.close()


def serve(run_id: str, root: str, plan: str, speed: float, n_slices: int | None, start_slice: int = 0,
          trust: tuple[str, ...] = ()) -> int:
    """Body of the detached controller process (``python -m emu.dataplane.controller``)."""
    run = Run(run_id, Path(root))
    return run_detached(run, lambda: Controller(run, Path(plan), speed, n_slices, start_slice=start_slice,
                                                trust=trust))


def detached_args(description: str, argv: list[str] | None, add=None) -> argparse.Namespace:
    """The command line every detached controller takes (``add(parser)`` adds its own), parsed; logging goes
    to the run's ``controller.log``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--run", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--plan", required=True)
    if add is not None:
        add(ap)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--slices", type=int, default=None)
    ap.add_argument("--start-slice", type=int, default=0)
    ap.add_argument("--trust", action="append", default=[])
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        filename=str(Path(a.root) / a.run / "controller.log"))
    return a


def main(argv: list[str] | None = None) -> int:
    a = detached_args("leo-emu detached controller (started by `leo-emu up --detach`)", argv)
    return serve(a.run, a.root, a.plan, a.speed, a.slices, a.start_slice, tuple(a.trust))


if __name__ == "__main__":
    sys.exit(main())
