"""Measured inter-SNO handovers in the live emulator: ``leo-emu experiment handover`` and ``emu.experiment``.

spec: inter-sno-mobility §5.1 (baseline), §5 Figure 5 (proactive); the
association policies of §3.3 / §4.3 (:mod:`emu.plan.association`).

One run: the scenario is brought up with its SNO control plane (the
``mobility`` settings given here override the scenario's), starting a
slice before the plan's first inter-SNO handover at or after
``start_slice``, on an accelerated clock, until ``repeat`` of the plan's
inter-SNO handovers have happened. The device behind every UT that hands
over sends a UDP probe stream (:mod:`emu.control.sno.probe`, every
``interval_ms``) to the Internet's echo. Per handover: the interruption
(last reply before the boundary -> first reply after, :func:`rig.interruption`),
the packets lost in it, and every registration step of the user's agent
and the cores with its time from the boundary (ms). The moment of the
boundary is when the data plane re-pointed the user's uplink
(``mobility.jsonl``, CLOCK_MONOTONIC like the step logs).

The pure parts (:func:`pick_window`, :func:`measure_one`, :func:`summary`)
are unit-tested; :func:`run` needs root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from emu.control.sno import steplog
from emu.experiment import events as EV
from emu.control.sno.rig import interruption, summarize
from emu.errors import InputError

PROBE_PORT = 7777
PROCEDURES = ("baseline", "proactive")  # the SNO control plane's (the file runner runs both)
PROBES = ("udp", "icmp")  # the probe stream: UDP datagrams to the echo, or ICMP echo requests
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 1.0, 10.0  # the probe spacing the live runs send at
BGP = "bgp"  # the BGP overlay's (spec: bgp-mobile-routing-atn §4): emu.experiment.bgp_handover
ASSOCIATIONS = ("owner", "dynamic")
STEP_KEYS = ("what", "ms", "coa", "target", "peer", "reason", "proactive", "core", "iface", "prefix")


def check_args(procedure: str, association: str, repeat: int, speed: float, interval_ms: float) -> None:
    """Every argument before anything is made (one line naming the field, exit 2)."""
    if procedure not in (*PROCEDURES, BGP):
        raise InputError(f"--procedure: must be one of {', '.join((*PROCEDURES, BGP))} (got {procedure!r})")
    if association not in ASSOCIATIONS:
        raise InputError(f"--association: must be one of {', '.join(ASSOCIATIONS)} (got {association!r})")
    if not 1 <= repeat <= 100:
        raise InputError(f"--repeat: must be 1..100 (got {repeat})")
    if not (speed == speed and 0 < speed <= 100):
        raise InputError(f"--speed: must be in (0, 100] (got {speed})")
    if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
        raise InputError(f"--interval-ms: must be {MIN_INTERVAL_MS:g}..{MAX_INTERVAL_MS:g}, the probe spacing "
                         f"(got {interval_ms})")


def pick_window(handovers: list[dict], start_slice: int | None, repeat: int, n_slices: int) -> tuple[int, int, list]:
    """(first slice, number of slices, the handovers to measure): from a slice before the first inter-SNO
    handover at or after ``start_slice`` (any, if None) to one after the ``repeat``-th (pure). Handovers
    right after an outage (the user unserved in the slice before) are re-attachments: not measured."""
    lo = 1 if start_slice is None else start_slice + 1
    todo = [h for h in handovers if h["k"] >= lo and not h.get("after_outage")][:repeat]
    if not todo:
        raise InputError(f"--start-slice: the plan has no inter-SNO handover after slice {lo - 1} under this "
                         f"association (got {start_slice})")
    first = todo[0]["k"] - 1 if start_slice is None else start_slice
    last = min(n_slices - 1, todo[-1]["k"] + 1)
    return first, last - first + 1, todo


def measure_one(h: dict, switched: dict, probe: dict, steps: list[dict], notice_ms: float) -> dict:
    """One handover's record from the hook's switch record, the user's probe result and the step logs (pure)."""
    cut = switched["t_ns"]
    user = steps_user = h["user"]
    reg = next((s["t_ns"] for s in steps if s["node"] == h["ut"] and s["step"] == "registered" and s["t_ns"] >= cut),
               None)
    end = reg if reg is not None else cut + int(5e9)
    gap = interruption(probe["sent"], probe["replies"], cut, end, cut)
    t0 = cut - int((notice_ms + 500) * 1e6)
    mine = []
    for s in steps:
        if s.get("user") != steps_user or not t0 <= s["t_ns"] <= end + int(0.2e9):
            continue
        rec = {"t_ms": round((s["t_ns"] - cut) / 1e6, 2), "node": s["node"], "step": s["step"]}
        for key in STEP_KEYS:
            if s.get(key) not in (None, [], ""):
                rec[key] = s[key]
        mine.append(rec)
    registered = next((s for s in mine if s["node"] == h["ut"] and s["step"] == "registered" and s["t_ms"] >= 0), None)
    return {"k": h["k"], "ut": h["ut"], "user": user, "kind": h["kind"], "from_core": h["from_core"],
            "to_core": h["to_core"], "gs": switched.get("gs"),
            "interruption_ms": gap["interruption_ms"], "lost_packets": gap["lost_packets"],
            "last_before_ms": gap["last_before_ms"], "first_after_ms": gap["first_after_ms"],
            "registered_ms": registered["t_ms"] if registered else None,
            "registered_core": registered.get("core") if registered else None,
            "coa": registered.get("coa") if registered else None,
            "prefix": registered.get("prefix") if registered else None,
            "steps": mine}


def timeline(probe: dict, cut_ns: int, window_ms: float) -> list[list]:
    """[send time ms from the boundary, round trip ms or None (lost)] of the probes sent within
    ``window_ms`` of it (pure)."""
    got = {r[0]: r for r in probe["replies"]}
    sends = sorted(r[1] for r in probe["replies"])
    if not sends:
        return []
    step = int(probe.get("interval_ms", 10.0) * 1e6)
    t0 = sends[0] - min(got) * step  # sequence n was due at t0 + n * step
    out = []
    for n in range(probe["sent"]):
        r = got.get(n)
        t_send = r[1] if r else t0 + n * step
        rel = (t_send - cut_ns) / 1e6
        if -window_ms <= rel <= window_ms:
            out.append([round(rel, 2), round((r[2] - r[1]) / 1e6, 3) if r else None])
    return out


def summary(measured: list[dict]) -> dict:
    """Top-level numbers over the measured handovers (pure)."""
    ok = [m for m in measured if m["interruption_ms"] is not None]
    s = summarize([m["interruption_ms"] for m in ok])
    return {"median_interruption_ms": s["median"], "p90_interruption_ms": s["p90"],
            "lost_packets": sum(m["lost_packets"] or 0 for m in ok), "handovers_measured": len(ok),
            "handovers_planned": len(measured)}


def hook_stats(records: list[dict]) -> dict:
    """The SNO hook's kernel time per boundary that changed something (``mobility.jsonl``; pure)."""
    ms = [r["hook_ms"] for r in records if "hook_ms" in r]
    per = [r["hook_ms"] / r["changes"] for r in records if r.get("changes")]
    s = summarize(ms)
    return {"boundaries": len(ms), "median": s["median"], "p90": s["p90"], "max": s.get("max"),
            "median_per_ut": summarize(per)["median"]}


# ---------------------------------------------------------------------------------------------- live (root)
def _env() -> dict:
    from emu.control.sno import launch
    return {**os.environ, "PYTHONPATH": launch._pythonpath()}


def _tunnel_counters(ns: str) -> dict:
    """rx/tx packets of every inter-core tunnel device (``sno<k>``) in a core's namespace."""
    p = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show"], capture_output=True, text=True, timeout=20,
                       check=False)
    try:
        links = json.loads(p.stdout or "[]")
    except ValueError:
        return {}
    return {x["ifname"]: {"rx": x["stats64"]["rx"]["packets"], "tx": x["stats64"]["tx"]["packets"]}
            for x in links if x.get("ifname", "").startswith("sno") and "stats64" in x}


def plan_for_run(scenario: str, plan: str | None, run_dir: Path, say, name: str) -> Path:
    """The plan an experiment runs on: the given one, or one planned now into the run's folder."""
    if plan is not None:
        return Path(plan).resolve()
    from emu.cli.plan_cmds import build_plan

    plan_file = run_dir / "plan.db"
    say(f"planning {name}")
    build_plan(scenario, plan_file, None, fmt="json")
    return plan_file


def keep_logs_of(folder: Path, probes: dict, files: list[Path]) -> None:
    """``--keep-logs``: the probe results and the run's logs (those that exist) copied out before teardown."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probes.json").write_text(json.dumps(probes))
    for f in files:
        if f.exists():
            (folder / f.name).write_text(f.read_text())


def run(scenario: str, procedure: str = "baseline", association: str = "owner", repeat: int = 3,
        speed: float = 10.0, start_slice: int | None = None, plan: str | None = None, latency_ms: float = 20.0,
        notice_ms: float = 150.0, interval_ms: float = 10.0, keep_logs: Path | None = None,
        progress=None, uts: set[str] | None = None, timeline_ms: float = 0.0, events=(),
        duration_s: float | None = None, timers: str | None = None, probe: str = "udp",
        streams: dict[str, dict] | None = None) -> dict:
    """Bring the scenario up with its SNO control plane, probe through ``repeat`` inter-SNO handovers, tear
    down; the measured JSON (see module docstring). ``uts``: only these terminals' handovers (and, with
    events, the terminals whose devices probe throughout); ``timeline_ms``: each handover also gets its probe
    samples within that many ms of the boundary. ``events`` (an experiment file's, :mod:`emu.experiment.events`):
    the run spans ``duration_s`` from ``start_slice`` and causes them; ``events`` in the result.
    ``procedure="bgp"``: the BGP overlay instead, GS changes (:func:`emu.experiment.bgp_handover.run`,
    ``timers``). ``probe``: ``udp`` datagrams to the Internet's echo, or ``icmp`` echo requests (the
    Internet's kernel answers); the result says which. ``streams``: per UT its own ``probe`` and
    ``interval_ms`` (an experiment file's traffic entries; ``probe`` and ``interval_ms`` for the others), and
    optionally ``port`` (UDP: the Internet's echo listens there too) and ``size_bytes`` (payload); the result's
    ``probes`` say what each UT sent."""
    streams = {ut: {"probe": probe, "interval_ms": interval_ms, **x} for ut, x in (streams or {}).items()}
    for ut, x in streams.items():
        if x["probe"] not in PROBES:
            raise InputError(f"probe: must be one of {', '.join(PROBES)} (got {x['probe']!r} for {ut})")
        if not MIN_INTERVAL_MS <= x["interval_ms"] <= MAX_INTERVAL_MS:
            raise InputError(f"interval_ms: must be {MIN_INTERVAL_MS:g}..{MAX_INTERVAL_MS:g}, the probe spacing "
                             f"(got {x['interval_ms']} for {ut})")
    if probe not in PROBES:
        raise InputError(f"probe: must be one of {', '.join(PROBES)} (got {probe!r})")
    if procedure == BGP:
        if probe != "udp" or streams:
            raise InputError(f"probe: the bgp procedure probes with UDP only (got {probe!r})")
        if events:
            raise InputError(f"procedure: the bgp procedure runs no experiment-file events (got {procedure!r})")
        from emu.experiment import bgp_handover

        check_args(procedure, association, repeat, speed, interval_ms)
        return bgp_handover.run(scenario, timers, repeat, speed, start_slice, plan, interval_ms, keep_logs,
                                progress, uts)
    from emu.cli.plan_cmds import check_up_arguments
    from emu.control.sno import launch, live
    from emu.dataplane import cleanup, procs
    from emu.dataplane.controller import Controller
    from emu.dataplane.model import Model
    from emu.dataplane.state import Run
    from emu.plan.db import PlanDB
    from emu.scenario.model import MobilityCfg

    say = progress or (lambda msg: None)
    check_args(procedure, association, repeat, speed, interval_ms)
    mob = MobilityCfg(procedure=procedure, latency_ms=latency_ms, notice_ms=notice_ms)
    loaded, trust = check_up_arguments(scenario, plan, speed, None, start_slice or 0)
    run_ = Run.create()
    ctl = None
    probes: dict[str, subprocess.Popen] = {}
    try:
        plan_file = plan_for_run(scenario, plan, run_.dir, say, loaded.scenario.name)
        db = PlanDB(plan_file)
        m = Model.from_plan(db, "x")
        hs = [h for h in live.inter_sno_handovers(m, live.association(m, association)) if uts is None or h["ut"] in uts]
        if events:
            k0, n, todo = EV.window(events, hs, start_slice or 0, duration_s, db.slice_s, repeat, db.n_slices)
        else:
            k0, n, todo = pick_window(hs, start_slice, repeat, db.n_slices)
        db.close()
        say(f"slices {k0}..{k0 + n - 1} at speed {speed:g}: {len(todo)} inter-SNO handover(s), {len(events)} event(s)")
        ctl = Controller(run_, plan_file, speed, n, start_slice=k0, trust=trust, scenario=loaded.scenario,
                         mobility=mob, association=association)
        for i, ev in enumerate(events):  # probed, never assumed: nothing is built yet
            if ev.kind == "gs_outage" and not ctl.features.has("nft_nat"):
                raise InputError(f"events.{i}.kind: a GS outage drops packets with nftables, which this kernel "
                                 f"lacks (see `leo-emu doctor`) (got {ev.kind!r})")
        ctl.build()
        if not ctl.status.get("sno", {}).get("ready"):
            raise RuntimeError(f"SNO daemons not ready; see {run_.dir / 'sno'}")
        cm = ctl.model
        inet_ns = cm.by_name[cm.cfg.inet_name].netns
        for port in sorted({x.get("port") or PROBE_PORT for x in streams.values()} | {PROBE_PORT}):
            echo = procs.popen_in(inet_ns, [sys.executable, "-m", "emu.control.sno.probe", "echo", cm.cfg.inet_addr,
                                            str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True, env=_env())
            run_.record_pid(echo.pid, f"probe echo on port {port} in {inet_ns}")
        for ut in sorted({h["ut"] for h in todo} | (set(uts or ()) if events else set())):
            dev = cm.by_name[cm.db.ground[cm.by_name[ut].index].device]
            mine = streams.get(ut, {"probe": probe, "interval_ms": interval_ms})
            p = procs.popen_in(dev.netns, [sys.executable, "-m", "emu.control.sno.probe", "send", cm.cfg.inet_addr,
                                           str(mine.get("port") or PROBE_PORT), "--interval-ms",
                                           f"{mine['interval_ms']:g}", *(["--icmp"] if mine["probe"] == "icmp" else []),
                                           *([f"--size-bytes={mine['size_bytes']}"] if mine.get("size_bytes") else [])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env=_env())
            run_.record_pid(p.pid, f"probe in {dev.netns}")
            p.stderr.readline()
            probes[ut] = p
        slice_wall = db.slice_s / speed
        last_k = todo[-1]["k"] if todo else k0

        evt = EV.EventThread(ctl, events, k0, db.slice_s, speed, notice_ms) if events else None

        def watch() -> None:  # the clock runs in this thread (the plan's connection is bound to it)
            deadline = time.monotonic() + (n + 1) * slice_wall + 30
            if evt is not None:
                while ctl.t_start is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                end = (ctl.t_start or time.monotonic()) + duration_s / speed
                while time.monotonic() < deadline and (time.monotonic() < end or not evt.done.is_set()):
                    time.sleep(0.1)
            while time.monotonic() < deadline and (ctl.status.get("slice") or 0) < last_k:
                time.sleep(0.2)
            time.sleep(min(slice_wall * 0.9, 3.0))  # the last registration and the replies after it
            ctl.stop.set()

        threading.Thread(target=watch, daemon=True).start()
        if evt is not None:
            evt.start()
        ctl.loop()
        if evt is not None:
            evt.join(60)
        results = {}
        for ut, p in probes.items():
            p.send_signal(signal.SIGINT)
            out, _err = p.communicate(timeout=60)
            results[ut] = json.loads(out)
        tunnels = {name: _tunnel_counters(cm.by_name[name].netns) for _i, name, *_ in cm.db.operators}
        info = launch.info_of(run_)
        steps = []
        for d in list(info["cores"].values()) + list(info["agents"].values()):
            steps += steplog.read(d["log"])
        steps.sort(key=lambda s: s["t_ns"])
        switched = [json.loads(x) for x in (run_.dir / "mobility.jsonl").read_text().splitlines() if x.strip()]
        ops = {idx: name for idx, name, *_ in cm.db.operators}
        measured = []
        for h in todo:
            rec = next((r for r in switched if r.get("k") == h["k"] and r.get("ut") == h["ut"] and "t_ns" in r), None)
            if rec is None:
                continue
            u = cm.db.ground[cm.by_name[h["ut"]].index]
            h = {**h, "user": f"{u.name}@{ops[u.operator]}"}
            one = measure_one(h, rec, results[h["ut"]], steps, notice_ms)
            one["probe"] = results[h["ut"]]["probe"]
            one["home_prefix"] = str(cm.user_subnets[u.idx])
            one["device_addr"] = cm.dev_addr(u.idx)
            if timeline_ms > 0:
                one["timeline"] = timeline(results[h["ut"]], rec["t_ns"], timeline_ms)
            measured.append(one)
        users = {u.name: f"{u.name}@{ops[u.operator]}" for u in cm.uts}
        ev_out = []
        starts = sorted(r["t_ns"] for r in (evt.records.values() if evt is not None else ()) if r.get("t_ns"))
        for i in sorted(evt.records) if evt is not None else ():
            rec = evt.records[i]
            t_ns = rec.get("t_ns")
            if t_ns:  # an effect is measured up to the next event at the latest
                rec["next_ns"] = next((x for x in starts if x > rec.get("end_ns", t_ns)), None)
            e = EV.measure(rec, results, steps, notice_ms, users)
            who = EV.worst_user(e, results)
            if who and t_ns and timeline_ms > 0:
                span = max(timeline_ms, 1000 * (events[i].duration_s / speed if events[i].kind == "gs_outage" else 0)
                           + timeline_ms)
                e["timeline_ut"] = who
                e["timeline"] = [x for x in timeline(results[who], t_ns, span) if x[0] >= -timeline_ms]
                if evt.records[i].get("end_ns"):
                    e["end_ms"] = round((evt.records[i]["end_ns"] - t_ns) / 1e6, 2)
            ev_out.append(e)
        kinds = sorted({r["probe"] for r in results.values()}) or [probe]
        out = {"scenario": loaded.scenario.name, "procedure": procedure, "association": association,
               "speed": speed, "start_slice": k0, "slices": n, "slice_s": db.slice_s, "latency_ms": latency_ms,
               "latency_mode": info.get("latency_mode"), "notice_ms": notice_ms, "interval_ms": interval_ms,
               "probe": kinds[0] if len(kinds) == 1 else "mixed", "load_avg": list(os.getloadavg()), **summary(measured),
               "probes": {ut: {"probe": r["probe"], "interval_ms": r["interval_ms"], "size_bytes": r["size_bytes"],
                               "sent": r["sent"], "replies": len(r["replies"])} for ut, r in results.items()},
               "tunnels": tunnels, "hook_ms": hook_stats(switched), "handovers": measured}
        if evt is not None:
            out["events"] = ev_out
            out["events_error"] = evt.error
        if keep_logs is not None:
            keep_logs_of(keep_logs, results, list((run_.dir / "sno").glob("*.jsonl")) + [run_.dir / "mobility.jsonl"])
        return out
    finally:
        for p in probes.values():
            if p.poll() is None:
                p.kill()
        if ctl is not None:
            ctl.stop.set()
            ctl.close()
        launch.stop(run_)
        cleanup.teardown(run_)
