"""``leo-emu experiment handover --procedure bgp``: GS changes under the BGP overlay, measured live.

spec: bgp-mobile-routing-atn §4 (stub AS mobility: at an inter-GS or inter-SNO
change the new s-ASBR announces the user's MNP, the old one withdraws it;
traffic from the Internet follows BGP), §6 (aggressive vs default timers);
docs/bgp.md.

One run: the scenario is brought up with ``bgp: {enabled: true, timers:
TIMERS}`` (and no SNO control plane), starting a slice before the plan's
first GS change of a served user at or after ``start_slice``, on an
accelerated clock, until ``repeat`` such changes have happened. For every
user terminal that changes GS, a UDP probe stream (:mod:`emu.control.sno.probe`,
every ``interval_ms``) goes from the Internet's namespace to the user's
``MNP::1`` (held by the UT: the c-ASBR routes it to the GS whose s-ASBR
announces it, the GS into the UT's tunnel) and is echoed back; ``ip -ts -6
monitor route`` runs in every c-ASBR's namespace (netlink events, seeded
by a netlink dump). Per GS change:

- the interruption: the longest silence of the stream that ends after the
  data plane's switch and begins before the MNP's route is in every
  c-ASBR's kernel FIB (:func:`emu.control.sno.rig.interruption`), and the
  probes lost in it;
- BGP convergence: the new s-ASBR's announcement (the call, before ``bird
  -p`` and ``birdc configure``) -> the MNP's route in every c-ASBR's kernel
  FIB via the next hop toward the new GS (:func:`emu.control.bgp.convergence.move_convergence`);
- a change where the stream had no echo within 1 s before the switch (the
  UT out of service already: the data plane's outage, not BGP's) is
  recorded with ``flow_alive_at_switch`` false and left out of the summary;
- steps (ms from the switch): ``switched``, ``announce`` / ``announced``
  (the new s-ASBR's reload called / returned), ``withdraw`` / ``withdrawn``
  (the old one's), ``fib`` per c-ASBR.

All times are put on one clock: the probe's CLOCK_MONOTONIC replies are
shifted to wall-clock time by the offset measured in this process (the
moves, the slice switches and the monitors' timestamps are wall-clock).

The pure parts (:func:`gs_changes`, :func:`measure_one`, :func:`summary`) are
unit-tested; :func:`run` needs root.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from emu.control.bgp import convergence as C
from emu.control.sno.rig import interruption, summarize
from emu.errors import InputError

PROBE_PORT = 7778
TIMERS = ("aggressive", "default")
UNCONVERGED_WINDOW_S = 5.0  # no FIB event: look for the interruption this long after the switch
AFTER_FIB_S = 0.05  # a silence beginning this soon after the last c-ASBR's FIB change still counts
ALIVE_BEFORE_MS = 1000.0  # no echo within this long before the switch: the UT was out of service already


def check_timers(timers: str | None) -> None:
    if timers is not None and timers not in TIMERS:
        raise InputError(f"--timers: must be one of {', '.join(TIMERS)} (got {timers!r})")


# ---------------------------------------------------------------------------------------------- pure
def gs_changes(choices: list[np.ndarray], first_k: int, ut_names: list[str], gs_names: dict[int, str],
               gs_operator: dict[int, str], ut_operator: list[str]) -> list[dict]:
    """Every change of a user terminal's GS between two slices, in slice order (pure).

    ``choices[i]``: the plan's ``gs_choice`` of slice ``first_k + i`` (UT row -> GS ground index, -1 none).
    ``{"k", "ut", "from_gs", "to_gs", "from_core", "to_core", "kind", "after_outage"}``: kind ``inter-gs``
    (both GSs of one operator) or ``inter-sno``; ``after_outage``: no GS in slice k-1 (an attachment, the
    MNP was black-holed before: not a move); a change to no GS (a detachment) is not listed."""
    out = []
    for i in range(1, len(choices)):
        prev, cur = choices[i - 1][:, 0], choices[i][:, 0]
        for row, (a, b) in enumerate(zip(prev.tolist(), cur.tolist())):
            if b < 0 or a == b:
                continue
            out.append({"k": first_k + i, "ut": ut_names[row],
                        "from_gs": gs_names.get(a) if a >= 0 else None, "to_gs": gs_names[b],
                        "from_core": gs_operator.get(a) if a >= 0 else None, "to_core": gs_operator[b],
                        "kind": "inter-sno" if a >= 0 and gs_operator[a] != gs_operator[b] else "inter-gs",
                        "after_outage": a < 0, "home": ut_operator[row]})
    return out


def measure_one(h: dict, switch_at: float, move: dict | None, probe: dict, mono_to_wall_ns: int,
                events: dict[str, list[C.RouteEvent]], expected: dict[str, str], until: float | None) -> dict:
    """One GS change's record (pure): ``switch_at`` the data plane's switch (wall s), ``move`` its line of
    ``moves.jsonl``, ``probe`` the stream's result (CLOCK_MONOTONIC ns, shifted by ``mono_to_wall_ns``),
    ``events`` every c-ASBR's kernel route events, ``expected`` the next hop toward the new GS per c-ASBR,
    ``until`` the MNP's next move (events from then on are ignored)."""
    cut_ns = int(switch_at * 1e9)

    def ms(t: float | None) -> float | None:
        return None if t is None else round((t - switch_at) * 1e3, 2)

    steps = [{"t_ms": 0.0, "node": "dataplane", "step": "switched", "gs": h["to_gs"]}]
    conv = None
    fib_at = None
    if move is not None and move.get("called_at") is not None:
        conv = C.move_convergence(move, events, expected, until)
        steps += [{"t_ms": ms(move["called_at"]), "node": h["to_gs"], "step": "announce", "prefix": move["mnp"]},
                  {"t_ms": ms(move["announced_at"]), "node": h["to_gs"], "step": "announced", "prefix": move["mnp"]}]
        if move.get("withdraw_called_at") is not None:
            steps += [{"t_ms": ms(move["withdraw_called_at"]), "node": h["from_gs"], "step": "withdraw",
                       "prefix": move["mnp"]},
                      {"t_ms": ms(move["withdrawn_at"]), "node": h["from_gs"], "step": "withdrawn",
                       "prefix": move["mnp"]}]
        for core, v in conv["per_core"].items():
            if isinstance(v, float):
                steps.append({"t_ms": ms(move["called_at"] + v), "node": core, "step": "fib", "prefix": move["mnp"],
                              "target": expected[core]})
        if conv["s"] is not None:
            fib_at = move["called_at"] + conv["s"]
    steps.sort(key=lambda s: (s["t_ms"] is None, s["t_ms"]))
    end_ns = int(((fib_at + AFTER_FIB_S) if fib_at is not None else switch_at + UNCONVERGED_WINDOW_S) * 1e9)
    end_ns = max(end_ns, cut_ns)
    replies = [[q, t_s + mono_to_wall_ns, t_r + mono_to_wall_ns] for q, t_s, t_r in probe["replies"]]
    gap = interruption(probe["sent"], replies, cut_ns, end_ns, cut_ns)
    conv_ms = None if conv is None or conv["s"] is None else round(conv["s"] * 1e3, 2)
    # the stream was already silent before the switch (the data plane's own outage: the UT out of service):
    # recorded, not measured
    alive = gap["last_before_ms"] is not None and gap["last_before_ms"] >= -ALIVE_BEFORE_MS
    return {"k": h["k"], "flow_alive_at_switch": alive, "ut": h["ut"], "kind": h["kind"], "from_gs": h["from_gs"], "to_gs": h["to_gs"],
            "from_core": h["from_core"], "to_core": h["to_core"], "mnp": move["mnp"] if move else None,
            "interruption_ms": gap["interruption_ms"], "lost_packets": gap["lost_packets"],
            "last_before_ms": gap["last_before_ms"], "first_after_ms": gap["first_after_ms"],
            "convergence_ms": conv_ms,
            "convergence_from_switch_ms": ms(fib_at),
            "reload_ms": (round((move["announced_at"] - move["called_at"]) * 1e3, 2)
                          if move and move.get("called_at") is not None else None),
            "per_core_ms": ({c: (round(v * 1e3, 2) if isinstance(v, float) else v)
                             for c, v in conv["per_core"].items()} if conv else {}),
            "steps": steps}


def summary(measured: list[dict]) -> dict:
    """Top-level numbers (pure): the interruption keys of the baseline/proactive JSON, and BGP convergence."""
    ok = [m for m in measured if m["interruption_ms"] is not None and m.get("flow_alive_at_switch", True)]
    s = summarize([m["interruption_ms"] for m in ok])
    conv = [m["convergence_ms"] / 1e3 for m in measured if m["convergence_ms"] is not None]
    return {"median_interruption_ms": s["median"], "p90_interruption_ms": s["p90"],
            "lost_packets": sum(m["lost_packets"] or 0 for m in ok), "handovers_measured": len(ok),
            "handovers_planned": len(measured), "convergence": C.summary(conv),
            "not_converged": sum(1 for m in measured if m["convergence_ms"] is None)}


def parse_ss_retrans(text: str) -> dict:
    """``ss -tinH`` of a router's BGP sockets -> {"sockets", "retrans" (segments retransmitted, all sockets),
    "lost"} (pure). A late UPDATE with retransmissions on its session was a lost segment, not BGP (docs/bgp.md)."""
    socks = [ln for ln in text.splitlines() if ln and not ln[0].isspace()]
    retrans = sum(int(m) for m in re.findall(r"\bretrans:\d+/(\d+)", text))
    lost = sum(int(m) for m in re.findall(r"\blost:(\d+)", text))
    return {"sockets": len(socks), "retrans": retrans, "lost": lost}


TCP_EXT = ("TCPTimeouts", "TCPSpuriousRTOs", "TCPLossProbes", "TCPLostRetransmit", "DelayedACKs")


def parse_netstat(text: str, keys: tuple[str, ...] = TCP_EXT) -> dict[str, int]:
    """``/proc/net/netstat`` (a namespace's own) -> the ``TcpExt`` counters named in ``keys`` (pure): RTO
    timeouts, spurious ones (the receiver was late, nothing lost), tail loss probes, delayed ACKs."""
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("TcpExt:")]
    if len(lines) < 2:
        return {}
    row = dict(zip(lines[0][1:], lines[1][1:]))
    return {k: int(row[k]) for k in keys if k in row}


def tcp_delta(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per router, the counters' growth between two :func:`bgp_tcp` samples (pure): what happened during the
    measured slices, not at session set-up (SYN retries)."""
    return {n: {k: v - before.get(n, {}).get(k, 0) for k, v in a.items() if k != "sockets"}
            for n, a in after.items()}


def bgp_tcp(netns_name: str) -> dict:
    """A router's BGP sockets (``ss``) and its namespace's TCP timer counters (only BGP speaks TCP there)."""
    from emu.dataplane import procs

    p = procs.run_in(netns_name, ["ss", "-tinH", "state", "established", "( sport = :179 or dport = :179 )"],
                     timeout_s=30)
    q = procs.run_in(netns_name, ["cat", "/proc/net/netstat"], timeout_s=30)
    return {**parse_ss_retrans(p.stdout), **parse_netstat(q.stdout)}


# ---------------------------------------------------------------------------------------------- live (root)
def seed_events(netns_name: str, t: float) -> list[C.RouteEvent]:
    """A c-ASBR's BIRD routes now, as events (a netlink dump by ``ip -j``; never /proc/net/ipv6_route)."""
    from emu.dataplane import procs

    p = procs.run_in(netns_name, ["ip", "-6", "-j", "route", "show", "proto", "bird"], timeout_s=30)
    return [C.RouteEvent(t, r["dst"], r.get("gateway"), False) for r in json.loads(p.stdout or "[]")]


def _env() -> dict:
    from emu.control.sno import launch
    return {**os.environ, "PYTHONPATH": launch._pythonpath()}


def run(scenario: str, timers: str | None = None, repeat: int = 3, speed: float = 10.0,
        start_slice: int | None = None, plan: str | None = None, interval_ms: float = 10.0,
        keep_logs: Path | None = None, progress=None, uts: set[str] | None = None) -> dict:
    """Bring the scenario up with the BGP overlay, probe through ``repeat`` GS changes, tear down; the JSON."""
    from emu.cli.plan_cmds import check_up_arguments
    from emu.control.bgp import wiring
    from emu.dataplane import cleanup, procs
    from emu.dataplane.controller import Controller
    from emu.dataplane.state import Run
    from emu.experiment.handover import keep_logs_of, pick_window, plan_for_run
    from emu.plan.db import PlanDB
    from emu.scenario.model import BgpCfg

    say = progress or (lambda msg: None)
    check_timers(timers)
    loaded, trust = check_up_arguments(scenario, plan, speed, None, start_slice or 0)
    sc0 = loaded.scenario
    timers = timers or (sc0.bgp.timers if sc0.bgp.enabled else "aggressive")
    # the overlay on, the SNO control plane off: the run's configuration (the plan does not depend on it)
    sc = sc0.model_copy(update={"bgp": BgpCfg(enabled=True, timers=timers, msp_base=sc0.bgp.msp_base),
                                "mobility": None})
    run_ = Run.create()
    ctl = None
    procs_: list[tuple[subprocess.Popen, object]] = []
    probes: dict[str, subprocess.Popen] = {}
    try:
        plan_file = plan_for_run(scenario, plan, run_.dir, say, sc.name)
        db = PlanDB(plan_file)
        ground = db.ground
        ops = {idx: name for idx, name, *_ in db.operators}
        uts_rows = [g for g in ground if g.kind == "ut"]
        gss = {g.idx: g.name for g in ground if g.kind == "gs"}
        k_lo = 0 if start_slice is None else start_slice
        choices = [db.gs_choice(k) for k in range(k_lo, db.n_slices)]
        hs = [h for h in gs_changes(choices, k_lo, [u.name for u in uts_rows], gss,
                                    {g.idx: ops[g.operator] for g in ground if g.kind == "gs"},
                                    [ops[u.operator] for u in uts_rows])
              if uts is None or h["ut"] in uts]
        k0, n, todo = pick_window(hs, start_slice, repeat, db.n_slices)
        n_slices, slice_s = db.n_slices, db.slice_s
        db.close()
        say(f"slices {k0}..{k0 + n - 1} at speed {speed:g}, timers {timers}: {len(todo)} GS change(s)")
        ctl = Controller(run_, plan_file, speed, n, start_slice=k0, trust=trust, scenario=sc)
        ctl.build()
        cm = ctl.model
        if cm.cfg.tunnel_mode != "vxlan":
            raise InputError(f"--procedure bgp: IPv6 to the MNPs needs VXLAN tunnels (got {cm.cfg.tunnel_mode!r})")
        overlay = json.loads((run_.dir / "bgp" / "overlay.json").read_text())
        if overlay.get("established_s") is None:
            raise RuntimeError(f"BGP sessions not established; see {run_.dir / 'bgp'}")
        cores = {name: r["netns"] for name, r in overlay["routers"].items() if r["role"] == "core"}
        mon_files = {}
        for name, ns in cores.items():
            f = open(run_.dir / "bgp" / f"monitor-{name}.txt", "w")
            p = procs.popen_in(ns, ["ip", "-ts", "-6", "monitor", "route"], stdout=f, stderr=subprocess.DEVNULL,
                               start_new_session=True)
            run_.record_pid(p.pid, f"ip monitor in {ns}")
            procs_.append((p, f))
            mon_files[name] = f.name
        inet_ns = cm.by_name[cm.cfg.inet_name].netns
        for ut in sorted({h["ut"] for h in todo}):
            host = wiring.mnp_host(overlay["mnps"][ut])
            e = procs.popen_in(cm.by_name[ut].netns, [sys.executable, "-m", "emu.control.sno.probe", "echo", host,
                                                      str(PROBE_PORT)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               env=_env())
            run_.record_pid(e.pid, f"probe echo in {ut}")
            procs_.append((e, None))
        time.sleep(0.3)  # the echoes bound
        for ut in sorted({h["ut"] for h in todo}):
            host = wiring.mnp_host(overlay["mnps"][ut])
            p = procs.popen_in(inet_ns, [sys.executable, "-m", "emu.control.sno.probe", "send", host, str(PROBE_PORT),
                                         "--interval-ms", f"{interval_ms:g}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env=_env())
            run_.record_pid(p.pid, f"probe to {ut} in {inet_ns}")
            p.stderr.readline()
            probes[ut] = p
        t_seed = time.time()
        seeds = {name: seed_events(ns, t_seed) for name, ns in cores.items()}
        tcp0 = {name: bgp_tcp(r["netns"]) for name, r in overlay["routers"].items()}
        mono_to_wall_ns = time.time_ns() - time.monotonic_ns()
        slice_wall = slice_s / speed
        last_k = todo[-1]["k"]

        def watch() -> None:  # the clock runs in this thread (the plan's connection is bound to it)
            deadline = time.monotonic() + (n + 1) * slice_wall + 30
            while time.monotonic() < deadline and (ctl.status.get("slice") or 0) < last_k:
                time.sleep(0.2)
            time.sleep(min(slice_wall * 0.9, 3.0))  # the replies after the last change
            ctl.stop.set()

        threading.Thread(target=watch, daemon=True).start()
        ctl.loop()
        tcp = {name: bgp_tcp(r["netns"]) for name, r in overlay["routers"].items()}
        results = {}
        for ut, p in probes.items():
            p.send_signal(signal.SIGINT)
            out, _err = p.communicate(timeout=60)
            results[ut] = json.loads(out)
        for p, f in procs_:
            procs.stop(p)
            if f is not None:
                f.close()
        events = {name: seeds[name] + C.parse_monitor(Path(mon_files[name]).read_text()) for name in cores}
        mfile = run_.dir / "bgp" / "moves.jsonl"
        moves = [json.loads(x) for x in mfile.read_text().splitlines() if x.strip()] if mfile.exists() else []
        switch_at = {a["slice"]: a["boundary_at"] for a in ctl.status["applied"]}
        measured = []
        for h in todo:
            if h["k"] not in switch_at:
                continue
            mnp = overlay["mnps"][h["ut"]]
            mv = next((m for m in moves if m["slice"] == h["k"] and m["mnp"] == mnp), None)
            nxt = next((m["called_at"] or m["done_at"] for m in moves if m["mnp"] == mnp and m["slice"] > h["k"]), None)
            rec = measure_one(h, switch_at[h["k"]], mv, results[h["ut"]], mono_to_wall_ns, events,
                              overlay["expected_via"][h["to_gs"]], nxt)
            measured.append(rec)
        out = {"scenario": sc.name, "procedure": "bgp", "association": sc.routing.association, "timers": timers,
               "speed": speed, "start_slice": k0, "slices": n, "slice_s": slice_s, "interval_ms": interval_ms,
               "load_avg": list(os.getloadavg()), **summary(measured),
               "definition": {"interruption": "longest silence of the probe stream (inet -> MNP::1 -> inet) that "
                                              "ends after the data plane's switch and begins before the MNP is in "
                                              "every c-ASBR's kernel FIB",
                              "convergence": "the new s-ASBR's announcement (call) -> the MNP in every c-ASBR's "
                                             "kernel FIB via the next hop toward the new GS"},
               "bgp": {"established_s": overlay.get("established_s"), "restarts": ctl.status["bgp"].get("restarts"),
                       "error": ctl.status["bgp"].get("error"), "n_slices_plan": n_slices,
                       "tcp_at_start": tcp0, "tcp_during": tcp_delta(tcp0, tcp)},
               "probes": {ut: {"sent": r["sent"], "replies": len(r["replies"])} for ut, r in results.items()},
               "handovers": measured}
        if keep_logs is not None:
            keep_logs_of(keep_logs, results,
                         list((run_.dir / "bgp").glob("*.txt")) + [mfile, run_.dir / "bgp" / "overlay.json"])
        return out
    finally:
        for p in probes.values():
            if p.poll() is None:
                p.kill()
        for p, f in procs_:
            if p.poll() is None:
                procs.stop(p)
            if f is not None and not f.closed:
                f.close()
        if ctl is not None:
            ctl.stop.set()
            ctl.close()
        cleanup.teardown(run_)
