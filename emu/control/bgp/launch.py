"""The entry point: start the BGP overlay of a network for a run, move MNPs, keep daemons alive, stop.

``start(run, network)`` renders every router's BIRD configuration into
``<run dir>/bgp/<router>/``, checks all of them before starting any (a bad
one is a :class:`~.daemon.BirdConfigError` and nothing runs), starts one BIRD
per router inside its namespace (pids in the run journal, so ``down`` stops
them even after ``kill -9`` of the caller) and, with ``keep=True``, a keeper
thread that restarts a daemon that died (config re-checked; routes return
once its sessions are re-established).

Mobility (spec: bgp-mobile-routing-atn §4, "Inter-domain" mobility events):
``attach(stub, mnp)`` / ``detach(stub, mnp)`` / ``move(mnp, old, new)``
rewrite the s-ASBRs' MNP files and reload them (``birdc configure``): the new
s-ASBR announces, the old one withdraws.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from emu.dataplane.state import Run
from emu.errors import InputError

from . import birdc
from .daemon import Bird
from .model import AGGRESSIVE, Network, Timers, check_mnp, protocol_name
from .render import render_core, render_mnps, render_stub

log = logging.getLogger(__name__)
KEEPER_PERIOD_S = 0.2


@dataclass
class BgpOverlay:
    """The running overlay: one :class:`Bird` per router, the MNPs each s-ASBR announces now."""

    network: Network
    timers: Timers
    run: Run | None
    daemons: dict[str, Bird]
    announced: dict[str, list[str]]
    restarts: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _keeper: threading.Thread | None = None

    # ------------------------------------------------------------------ queries
    def socket(self, router: str) -> str:
        return self.daemons[router].socket_path

    def sessions(self, router: str) -> dict[str, bool]:
        """BGP session name -> established, as BIRD says."""
        return {n: s.established for n, s in birdc.protocols(self.socket(router)).items() if s.proto == "BGP"}

    def all_established(self) -> bool:
        return all(all(self.sessions(r).values()) for r in self.daemons)

    def wait_established(self, timeout_s: float = 30.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                if self.all_established():
                    return True
            except Exception:  # a daemon being restarted: ask again
                pass
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------------ mobility
    def announce(self, stub: str, mnps: list[str]) -> None:
        """Make ``stub`` announce exactly ``mnps`` (withdrawing the others) and reload it."""
        r = self.network.routers.get(stub)
        if r is None or r.role != "stub":
            raise InputError(f"stub: no such s-ASBR (got {stub!r})")
        msps = tuple(m for op in self.network.operators.values() for m in op.msps)
        mnps = [check_mnp(m, msps, "mnp") for m in mnps]
        with self._lock:
            self.daemons[stub].move_mnps(render_mnps(mnps))  # a refusal restores the old file and raises
            self.announced[stub] = mnps

    def attach(self, stub: str, mnp: str) -> None:
        if mnp not in self.announced.get(stub, []):
            self.announce(stub, [*self.announced.get(stub, []), mnp])

    def detach(self, stub: str, mnp: str) -> None:
        self.announce(stub, [m for m in self.announced.get(stub, []) if m != mnp])

    def move(self, mnp: str, old: str, new: str) -> None:
        """Inter-GS handover of one user: the new s-ASBR announces first, then the old one withdraws."""
        self.attach(new, mnp)
        self.detach(old, mnp)

    # ------------------------------------------------------------------ keeper
    def _keep(self) -> None:
        while not self._stop.wait(KEEPER_PERIOD_S):
            for name, d in self.daemons.items():
                with self._lock:
                    if self._stop.is_set() or d.proc is None or d.running():
                        continue
                    log.warning("bgp: bird %s exited (status %s); restarting", name, d.proc.returncode)
                    try:
                        d.start(self.run)
                        self.restarts.append((time.monotonic(), name))
                    except Exception as exc:  # keep trying on the next round, say why
                        log.error("bgp: restart of %s failed: %s", name, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
        for d in self.daemons.values():
            d.stop()


def bgp_dir(run: Run | None, workdir: Path | None) -> Path:
    if workdir is not None:
        return Path(workdir)
    if run is None:
        raise InputError("bgp: a run or a workdir is needed for the daemons' files (got neither)")
    return run.dir / "bgp"


def start(run: Run | None, network: Network, timers: Timers = AGGRESSIVE, workdir: Path | None = None,
          keep: bool = True, kernel_table: int = 254, distinct_attributes: bool = False,
          stub_kernel: bool = True, stub_tables: bool = True) -> BgpOverlay:
    """Render, check (all before any start), start every router's BIRD; return the running overlay.

    Needs: every router's namespace exists and holds the peering addresses of
    ``network``'s links (the data plane's job); ``bird``/``birdc`` installed.
    On any failure the daemons started so far are stopped before the error propagates.
    """
    base = bgp_dir(run, workdir)
    daemons: dict[str, Bird] = {}
    for r in network.routers.values():
        d = Bird(r.name, r.netns, base / protocol_name(r.name))
        if r.role == "core":
            d.write(render_core(r, timers, str(d.log_path), kernel_table, stub_tables))
        else:
            d.write(render_stub(r, timers, str(d.log_path), kernel_table if stub_kernel else None,
                                mnp_file=str(d.mnp_path)),
                    mnps=render_mnps(r.mnps, distinct_attributes))
        daemons[r.name] = d
    ov = BgpOverlay(network, timers, run, daemons, {r.name: list(r.mnps) for r in network.stubs()})
    try:
        for d in daemons.values():
            d.spawn(run)
        for d in daemons.values():
            d.wait_ready(30.0)
    except BaseException:
        ov.stop()
        raise
    if keep:
        ov._keeper = threading.Thread(target=ov._keep, name="bgp-keeper", daemon=True)
        ov._keeper.start()
    return ov
