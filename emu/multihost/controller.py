"""The shared slice clock over several hosts: one Ray actor per host, boundary k at the same wall time.

The single-host :class:`emu.dataplane.controller.Controller` keeps its
records (run.json, status.json) and checks; here ``build`` starts one
:class:`emu.multihost.agent.HostAgent` actor pinned to each host's Ray node
and ``loop`` drives them: after boundary k-1 every host prepares slice k,
then is told to apply boundary k at wall time ``t0 + (k - k0) * slice``
(``time.time()``: the hosts' clocks, NTP/PTP-synchronised on real machines,
one clock here). Each host reports when it started the boundary and how long
it took; the controller writes per host apply time and lateness, and the
skew (latest minus earliest start) per boundary, to status.json. A host whose
actor dies is reported (state ``degraded``, the host ``lost``) and the clock
stops; ``down`` still removes everything from the hosts' journals.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

from emu.dataplane.controller import Controller, detached_args, run_detached
from emu.dataplane.state import Run
from emu.errors import EmuError
from emu.multihost import engine

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 600  # every Ray node starts ~5 processes: minutes on a loaded 2-core machine with 4 nodes


class MultiController(Controller):
    def __init__(self, run: Run, plan_path: Path, n_hosts: int, speed: float = 1.0, n_slices: int | None = None,
                 start_slice: int = 0, trust: tuple[str, ...] = ()):
        super().__init__(run, plan_path, speed, n_slices, start_slice=start_slice, trust=trust)
        self.n_hosts = n_hosts
        self.n_slices_arg = n_slices
        self.trust = trust
        self.agents: list = []
        self.lost: dict[int, str] = {}
        self.status["hosts"] = [{"host": h, "state": "starting"} for h in range(n_hosts)]

    def write_status(self, **kw) -> None:
        applied = self.status.get("applied", [])[-200:]
        if applied and "skew_ms" in applied[-1]:
            sk = np.array([a["skew_ms"] for a in applied if "skew_ms" in a])
            self.status["skew_p50_ms"] = round(float(np.percentile(sk, 50)), 3)
            self.status["skew_p99_ms"] = round(float(np.percentile(sk, 99)), 3)
            self.status["skew_max_ms"] = round(float(sk.max()), 3)
        super().write_status(**kw)

    # ------------------------------------------------------------------ build: one actor per host
    def build(self) -> float:
        import ray

        from emu.multihost.agent import HostAgent

        t0 = time.perf_counter()
        self.write_run_json()
        info = self.run.read_json("run.json")
        info.update({"hosts": self.n_hosts, "engine": "ray", "ray_address": engine.head_address(),
                     "ray_temp_dir": engine.temp_dir(self.run.run_id)})
        self.run.write_json("run.json", info)
        self.write_status()
        ray.init(address=engine.head_address(), namespace=self.run.run_id, log_to_driver=False,
                 logging_level=logging.WARNING)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while sum(1 for n in ray.nodes() if n.get("Alive")) < self.n_hosts:
            if time.monotonic() > deadline:
                raise EmuError(f"ray: only {sum(1 for n in ray.nodes() if n.get('Alive'))} of {self.n_hosts} "
                               f"nodes joined within {JOIN_TIMEOUT_S} s")
            time.sleep(0.2)
        Agent = ray.remote(HostAgent)
        host_root = str(self.run.dir / "hosts")
        self.agents = [Agent.options(resources={engine.resource(h): 1}, num_cpus=0, max_restarts=0,
                                     name=f"agent-h{h}").remote(h, self.n_hosts, str(self.plan_path), self.run.prefix,
                                                                host_root, self.n_slices_arg, self.k0, self.trust)
                       for h in range(self.n_hosts)]
        infos = ray.get([a.info.remote() for a in self.agents])
        for i in infos:
            self.status["hosts"][i["host"]].update(state="building", pid=i["pid"])
        self.write_status()
        builds = ray.get([a.build.remote() for a in self.agents])
        for b in builds:
            self.status["hosts"][b["host"]].update(state="running", build_s=b["build_s"], namespaces=b["namespaces"],
                                                   vxlan=b["vxlan"])
            self.status["degradations"] += [f"host{b['host']}: {d}" for d in b["degradations"]]
        build_s = time.perf_counter() - t0
        self.status["degradations"] = sorted(set(self.status["degradations"]))
        self.status["tunnel"] = self.model.cfg.tunnel_mode
        self.write_status(state="running", slice=self.k0, slice_started_at=time.time(), build_s=round(build_s, 3),
                          slice0_at=time.time())
        return build_s

    # ------------------------------------------------------------------ the shared clock
    def _gather(self, refs: list, what: str) -> list | None:
        """Wait for every host's reply (or stop); a dead actor marks its host lost and returns None."""
        import ray
        from ray.exceptions import RayActorError

        pending = list(refs)
        while pending and not self.stop.is_set():
            _done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        if self.stop.is_set():
            return None
        out = []
        for h, r in enumerate(refs):
            try:
                out.append(ray.get(r))
            except RayActorError as exc:
                self.lost[h] = f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if self.lost:
            for h, why in self.lost.items():
                self.status["hosts"][h].update(state="lost", error=why, lost_at=time.time())
            msg = "; ".join(f"host{h} agent lost ({why})" for h, why in sorted(self.lost.items()))
            log.error("%s", msg)
            self.write_status(state="degraded", error=msg)
            return None
        return out

    def loop(self) -> None:
        n = self.model.n_slices
        slice_wall = self.db.slice_s / self.speed
        # every host warms its next two tables before the shared clock starts (as Controller.loop)
        warms = self._gather([a.warm.remote(n) for a in self.agents], "warm")
        if warms is None:
            return self._hold()
        t0 = time.time()
        self.write_status(slice_started_at=t0, slice0_at=t0, warm_ms=round(max(warms, default=0.0), 1))
        for k in range(self.k0 + 1, n):
            if self.stop.is_set():
                return
            at = t0 + (k - self.k0) * slice_wall
            preps = self._gather([a.prepare.remote(k, at) for a in self.agents], f"prepare {k}")
            if preps is None:
                return self._hold()
            res = self._gather([a.switch_at.remote(k, at) for a in self.agents], f"boundary {k}")
            if res is None:
                return self._hold()
            starts = [r["started_at"] for r in res]
            entry = {"slice": k, "apply_ms": max(r["apply_ms"] for r in res), "prep_ms": round(max(preps), 1),
                     "cleanup_ms": max(r["cleanup_ms"] for r in res),
                     "skew_ms": round((max(starts) - min(starts)) * 1e3, 3),
                     "late_ms": round(max(r["late_ms"] for r in res), 3), "boundary_at": at, "at": time.time(),
                     "hosts": [{"host": r["host"], "apply_ms": r["apply_ms"], "late_ms": r["late_ms"]} for r in res]}
            self.status["applied"].append(entry)
            log.info("slice %d: apply max %.2f ms, skew %.2f ms", k, entry["apply_ms"], entry["skew_ms"])
            self.write_status(slice=k, slice_started_at=time.time())
        self.write_status(state="finished")
        self._hold()

    def _hold(self) -> None:
        """Keep the last slice (or the degraded run) until stopped, watching the agents."""
        import ray
        from ray.exceptions import RayActorError

        while not self.stop.is_set():
            self.stop.wait(1.0)
            for h, a in enumerate(self.agents):
                if h in self.lost:
                    continue
                try:
                    ray.get(a.info.remote(), timeout=10)
                except RayActorError as exc:
                    self.lost[h] = f"idle: {type(exc).__name__}"
                    self.status["hosts"][h].update(state="lost", error=self.lost[h], lost_at=time.time())
                    self.write_status(state="degraded", error=f"host{h} agent lost ({self.lost[h]})")
                except Exception:  # noqa: BLE001 - a slow reply is not a lost host
                    pass

    def close(self) -> None:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001
            pass


def serve(run_id: str, root: str, plan: str, n_hosts: int, speed: float, n_slices: int | None,
          start_slice: int = 0, trust: tuple[str, ...] = ()) -> int:
    run = Run(run_id, Path(root))
    return run_detached(run, lambda: MultiController(run, Path(plan), n_hosts, speed, n_slices, start_slice, trust),
                        "multihost controller")


def main(argv: list[str] | None = None) -> int:
    a = detached_args("leo-emu multihost controller (started by `leo-emu multihost up`)", argv,
                      lambda ap: ap.add_argument("--hosts", type=int, required=True))
    return serve(a.run, a.root, a.plan, a.hosts, a.speed, a.slices, a.start_slice, tuple(a.trust))


if __name__ == "__main__":
    sys.exit(main())
