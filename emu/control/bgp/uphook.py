"""The BGP overlay inside ``leo-emu up``: started after the terrestrial links exist, moved at each boundary.

spec: bgp-mobile-routing-atn §3 (c-ASBRs in the cores, s-ASBRs at the GSs),
§4 (at an inter-GS change the new s-ASBR announces the MNP, the old one
withdraws it), §6 (timer profiles). The controller calls three hooks:
:func:`start` (after the build), :meth:`BgpRun.boundary` (after each slice
switch) and :meth:`BgpRun.stop` (on the way down). Everything the run's
overlay is made of comes from :mod:`.wiring`; the daemons from :mod:`.launch`
(all configs checked with ``bird -p`` before any starts; pids journaled; a
keeper restarts a daemon that died).

Records under ``<run dir>/bgp/``: ``overlay.json`` (routers, namespaces,
control sockets, each UT's MNP, the expected next hop per c-ASBR for each
s-ASBR) and ``moves.jsonl`` (one line per MNP move: slice, wall-clock time of
the new s-ASBR's announcement, old and new s-ASBR).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from . import asbrs, wiring
from .launch import BgpOverlay
from .launch import start as start_overlay
from .model import TIMER_PROFILES, protocol_name

log = logging.getLogger(__name__)
ESTABLISH_TIMEOUT_S = {"aggressive": 60.0, "default": 90.0}  # default: 5 s connect delay, then retries


@dataclass
class BgpRun:
    model: object
    run: object
    ov: wiring.Overlay
    daemons: BgpOverlay
    announced: dict[str, tuple[str, ...]]
    established_s: float | None

    # ------------------------------------------------------------------ per boundary
    def boundary(self, k: int) -> list[dict]:
        """Slice k is in force: move every MNP whose GS changed (make-before-break; spec §4)."""
        nxt = wiring.stub_mnps(self.model, self.model.db.gs_choice(k), self.ov.mnps)
        mv = wiring.moves(self.announced, nxt)
        if not mv:
            return []
        calls: list[tuple[str, set[str], float, float]] = []  # (s-ASBR, MNPs it announces from then on, call, return)
        for stub, mnps in wiring.announcement_steps(self.announced, nxt):
            t = time.time()
            self.daemons.announce(stub, list(mnps))  # returns once BIRD reloaded: it has sent the UPDATE (no MRAI)
            calls.append((stub, set(mnps), t, time.time()))
        self.announced = nxt

        def first(stub: str | None, mnp: str, present: bool) -> tuple[float | None, float | None]:
            return next(((c, r) for s, ms, c, r in calls if s == stub and (mnp in ms) == present), (None, None))

        recs = []
        for p, old, new in mv:
            (called, announced), (wcalled, withdrawn) = first(new, p, True), first(old, p, False)
            recs.append({"slice": k, "mnp": p, "old": old, "new": new, "called_at": called,
                         "announced_at": announced, "withdraw_called_at": wcalled, "withdrawn_at": withdrawn,
                         "done_at": time.time()})
        with open(self.run.dir / "bgp" / "moves.jsonl", "a") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
        log.info("bgp: slice %d: %d MNP move(s)", k, len(recs))
        return recs

    def restarts(self) -> int:
        return len(self.daemons.restarts)

    def stop(self) -> None:
        self.daemons.stop()


def start(model, run, k0: int) -> BgpRun:
    """Render, check and start every router's BIRD for slice k0; wait (bounded) for the sessions.

    A configuration BIRD refuses raises :class:`~.daemon.BirdConfigError` before any daemon runs."""
    choice0 = model.db.gs_choice(k0)
    ov = wiring.overlay(model, choice0)
    asbrs.build(run, wiring.plumbing(model))  # extra c-ASBRs (bgp.c_asbrs): namespaces and links; none by default
    timers = TIMER_PROFILES[model.cfg.bgp_timers]
    daemons = start_overlay(run, ov.network, timers)
    t0 = time.monotonic()
    ok = daemons.wait_established(ESTABLISH_TIMEOUT_S[timers.name])
    est = round(time.monotonic() - t0, 3) if ok else None
    if not ok:
        log.warning("bgp: not every session established after %.0f s", ESTABLISH_TIMEOUT_S[timers.name])
    announced = {r.name: tuple(r.mnps) for r in ov.network.stubs()}
    ut_names = {u.idx: u.name for u in model.uts}
    record = {
        "timers": timers.name,
        "routers": {r.name: {"role": r.role, "asn": r.asn, "netns": r.netns,
                             "socket": daemons.socket(r.name), "dir": str(run.dir / "bgp" / protocol_name(r.name)),
                             "peerings": [{"peer": p.name, "kind": p.kind, "local": p.local_addr,
                                           "peer_addr": p.peer_addr} for p in r.peerings]}
                    for r in ov.network.routers.values()},
        "msps": {op.name: list(op.msps) for op in ov.network.operators.values()},
        "mnps": {ut_names[i]: p for i, p in ov.mnps.items()},
        "expected_via": {s.name: wiring.expected_via(ov.network, s.name) for s in ov.network.stubs()},
        "established_s": est,
    }
    (run.dir / "bgp" / "overlay.json").write_text(json.dumps(record, indent=1))
    return BgpRun(model, run, ov, daemons, announced, est)
