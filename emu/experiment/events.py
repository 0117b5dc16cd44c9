"""Experiment-file events in the live emulator: forced handover, ground-station outage, core restart.

spec: inter-sno-mobility §5.1 (baseline: core work after the new link is up),
§5 Figure 5 (proactive: the home core prepares the target first), §4.2 (each
SNO's core anchors its users; a restarted core must go on anchoring them).

An event fires at its ``time_s`` (experiment seconds from the first slice,
``start_slice``) or at its ``slice``'s boundary, on the run's accelerated
clock (:func:`schedule`, pure). What each one does (:class:`EventThread`,
root, beside the slice clock):

- ``forced_handover``: the user terminal is served by another core *now*:
  ``to_core``, or the core ``to_sat`` is associated with in that slice, or
  (neither given) the next core the plan would give it, else any other.
  The access layer moves exactly as at a planned inter-SNO boundary
  (:meth:`MobilityHook.force`): the agent sees a new uplink and registers
  through the run's procedure; proactive tells the home core ``notice_ms``
  ahead. The satellite path stays the plan's (the radio side is not moved,
  only the core serving the user). The choice holds until the plan's own
  choice for that user changes.
- ``gs_outage``: the ground station's links carry nothing for
  ``duration_s``: an nftables table in its namespace drops every packet in
  and out (not ``link set down``: that deletes the routes through the
  links, which would not come back, and the slice clock makes new satellite
  links every slice). Its users move at once to the nearest other served GS
  of the same core (:func:`live.avoid_gs`; no detection delay is modelled)
  or, if the core has none, stay cut off until it is back.
- ``core_restart``: the core daemon gets SIGKILL; its supervisor starts it
  again (back-off 0.1 s), it restores its registrations from its state
  file; once it answers and its peers are connected again, every user it
  serves is told to re-register (``relink``) through it.

Each event's measured effect (:func:`measure`, pure): interruption of the
affected users' probe streams (last reply before -> first reply after, ms),
lost packets, recovery time (ms from the event to the first reply after
it), registration steps; the restart's control-plane outage.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from emu.control.sno.rig import interruption

OUTAGE_TABLE = "leoemu_outage"
OUTAGE_RULES = (f"table inet {OUTAGE_TABLE} {{\n"
                " chain pre {\n  type filter hook prerouting priority -300; policy accept;\n  iif != \"lo\" drop\n }\n"
                " chain out {\n  type filter hook output priority -300; policy accept;\n  oif != \"lo\" drop\n }\n}\n")


def event_time_s(ev, start_slice: int, slice_s: float) -> float:
    """Experiment seconds from the first slice's start (pure)."""
    return float(ev.time_s) if ev.time_s is not None else (ev.slice - start_slice) * slice_s


def schedule(events, start_slice: int, slice_s: float, speed: float) -> list[tuple[float, int, str]]:
    """(wall seconds from the clock's start, event index, action) in order; a GS outage is two actions,
    ``start`` and ``end`` (pure)."""
    out = []
    for i, ev in enumerate(events):
        t = event_time_s(ev, start_slice, slice_s) / speed
        out.append((t, i, "start"))
        if ev.kind == "gs_outage":
            out.append((t + ev.duration_s / speed, i, "end"))
    return sorted(out)


def window(events, handovers: list[dict], start_slice: int, duration_s: float, slice_s: float,
           repeat: int, n_slices: int) -> tuple[int, int, list[dict]]:
    """(first slice, slices, planned handovers to measure) for a file with events: the file's span from
    ``start_slice`` for ``duration_s``; the plan's first ``repeat`` inter-SNO handovers inside it (pure)."""
    n = min(n_slices - start_slice, int(-(-duration_s // slice_s)) + 1)
    todo = [h for h in handovers if start_slice < h["k"] < start_slice + n and not h.get("after_outage")][:repeat]
    return start_slice, n, todo


def forced_target(hook, ev, k: int, ut_row: int) -> int | None:
    """The operator a forced handover sends the user to (see the module docstring); None: no other core."""
    ops = {name: idx for idx, name, *_ in hook.m.db.operators}
    if getattr(ev, "to_core", None):
        return ops[ev.to_core]
    if ev.to_sat:
        return int(hook.core[k, hook.m.db.sat_names.index(ev.to_sat)])
    cur = hook.cur.get(hook.m.uts[ut_row].idx)
    now = cur.core if cur is not None else -1
    for kk in range(k + 1, hook.sc.shape[0]):
        c = int(hook.sc[kk, ut_row])
        if c >= 0 and c != now:
            return c
    return next((idx for idx in ops.values() if idx != now), None)


class EventThread(threading.Thread):
    """Causes the events at their times beside the slice clock; ``records`` gets one dict per event."""

    def __init__(self, ctl, events, start_slice: int, slice_s: float, speed: float, notice_ms: float):
        super().__init__(daemon=True)
        self.ctl, self.events, self.k0 = ctl, list(events), start_slice
        self.plan = schedule(self.events, start_slice, slice_s, speed)
        self.notice_s = notice_ms / 1e3
        self.slice_s = slice_s
        self.records: dict[int, dict] = {}
        self.error: str | None = None
        self.done = threading.Event()

    def slice_of(self, ev) -> int:
        """The slice the event falls in (its own ``slice``, or the one its ``time_s`` is in)."""
        return ev.slice if ev.slice is not None else self.k0 + int(ev.time_s // self.slice_s)

    def run(self) -> None:
        try:
            while getattr(self.ctl, "t_start", None) is None and not self.ctl.stop.is_set():
                time.sleep(0.01)
            t0 = self.ctl.t_start
            for at, i, action in self.plan:
                while not self.ctl.stop.is_set() and time.monotonic() < t0 + at:
                    time.sleep(min(0.005, max(0.0, t0 + at - time.monotonic())))
                if self.ctl.stop.is_set():
                    break
                ev = self.events[i]
                rec = self.records.setdefault(i, {"i": i, "kind": ev.kind, "slice": self.slice_of(ev)})
                getattr(self, f"_{ev.kind}")(ev, rec, action)
        except Exception as exc:  # noqa: BLE001 - reported in the results; the run goes on
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            for i, ev in enumerate(self.events):  # an outage still on when the run stops ends here
                r = self.records.get(i)
                if ev.kind == "gs_outage" and r and "end_ns" not in r:
                    self._gs_outage(ev, r, "end")
            self.done.set()

    # ------------------------------------------------------------------ the three kinds
    def _forced_handover(self, ev, rec: dict, _action: str) -> None:
        hook = self.ctl.sno
        m = hook.m
        row = [u.name for u in m.uts].index(ev.ut)
        rec["t_ns"] = time.monotonic_ns()
        cur = hook.cur.get(m.uts[row].idx)
        target = forced_target(hook, ev, hook.k, row)
        rec.update({"ut": ev.ut, "from_core": hook.ops.get(cur.core) if cur else None,
                    "to_core": hook.ops.get(target), "to_sat": ev.to_sat})
        sw = hook.force(ev.ut, target, self.notice_s) if target is not None else None
        rec["switched"] = sw
        if sw is None:
            rec["note"] = "no switch: the user is unserved or already served by that core"

    def _gs_outage(self, ev, rec: dict, action: str) -> None:
        from emu.dataplane import procs
        hook = self.ctl.sno
        ns = hook.m.by_name[ev.gs].netns
        gi = hook.m.by_name[ev.gs].index
        if action == "start":
            rec.update({"gs": ev.gs, "duration_s": ev.duration_s,
                        "affected": sorted(cs.node for cs in hook.cur.values() if cs.gs == gi)})
            rec["t_ns"] = time.monotonic_ns()
            p = procs.run_in(ns, ["nft", "-f", "-"], stdin=OUTAGE_RULES)
            rec["blocked"] = p.returncode == 0
            if p.returncode:
                rec["error"] = p.stderr.strip()
            rec["rehomed"] = [{"ut": r["ut"], "core": r["core"], "gs": r["gs"]} for r in hook.gs_down(ev.gs)]
        else:
            rec["end_ns"] = time.monotonic_ns()
            procs.run_in(ns, ["nft", "delete", "table", "inet", OUTAGE_TABLE])
            rec["returned"] = [{"ut": r["ut"], "core": r["core"], "gs": r["gs"]} for r in hook.gs_up(ev.gs)]

    def _core_restart(self, ev, rec: dict, _action: str) -> None:
        from emu.control.sno import launch
        hook = self.ctl.sno
        c = hook.info["cores"][ev.core]
        op = {name: idx for idx, name, *_ in hook.m.db.operators}[ev.core]
        st = launch.try_admin(c["admin"], {"op": "status"}) or {}
        served = sorted(cs.node for cs in hook.cur.values() if cs.core == op)
        rec.update({"core": ev.core, "old_pid": st.get("pid"), "served": served})
        rec["t_ns"] = time.monotonic_ns()
        try:
            os.kill(int(st["pid"]), signal.SIGKILL)
        except (KeyError, TypeError, ProcessLookupError) as exc:
            rec["error"] = f"not killed: {exc}"
            return
        peers = len(hook.info["cores"]) - 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            s = launch.try_admin(c["admin"], {"op": "status"})
            if s and s.get("pid") != rec["old_pid"]:
                rec.setdefault("answers_ns", time.monotonic_ns())
                rec["new_pid"] = s["pid"]
                conn = s.get("connected", {})
                if len(conn) >= peers and all(conn.values()):
                    rec["ready_ns"] = time.monotonic_ns()
                    break
            time.sleep(0.005)
        for name in served:  # the users it serves register again, through the restarted core
            launch.try_admin(hook.info["agents"][name]["admin"], {"op": "relink"})
        rec["relinked"] = served
        deadline = time.monotonic() + 15  # the run goes on until they did (or 15 s)
        while time.monotonic() < deadline and not all(
                (launch.try_admin(hook.info["agents"][n]["admin"], {"op": "status"}) or {}).get("registered_at")
                for n in served):
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------------- measured (pure)
def _gap(probe: dict | None, cut: int, end: int) -> dict:
    """The longest silence of the stream in [cut, end] (:func:`rig.interruption`); recovery: the first reply
    after it, ms from ``cut``, only when probes were lost (a silence without loss is jitter, not an outage)."""
    if probe is None:
        return {"interruption_ms": None, "lost_packets": None, "recovery_ms": None}
    g = interruption(probe["sent"], probe["replies"], cut, end, cut)
    return {"interruption_ms": g["interruption_ms"], "lost_packets": g["lost_packets"],
            "recovery_ms": g["first_after_ms"] if g["lost_packets"] else None}


def worst_user(e: dict, probes: dict) -> str | None:
    """The user whose probe stream shows an event's effect best: the forced user, else the affected user with
    the longest interruption (pure)."""
    if e.get("ut") in probes:
        return e["ut"]
    best = None
    for u in e.get("users", []):
        if u["ut"] not in probes:
            continue
        v = (u.get("outage") or u).get("interruption_ms") or 0
        if best is None or v > best[0]:
            best = (v, u["ut"])
    return best and best[1]


def _worst(values) -> float | None:
    v = [x for x in values if x is not None]
    return max(v) if v else None


def _registered_after(steps: list[dict], ut: str, t_ns: int) -> dict | None:
    return next((s for s in steps if s["node"] == ut and s["step"] == "registered" and s["t_ns"] >= t_ns), None)


def measure(rec: dict, probes: dict[str, dict], steps: list[dict], notice_ms: float, users: dict[str, str]) -> dict:
    """One event's measured effect from its record, the probe streams (per UT), the step logs (pure).
    ``users``: UT name -> ``name@home``."""
    from emu.experiment.handover import measure_one

    out = {k: v for k, v in rec.items() if not k.endswith("_ns") and k != "switched"}
    t = rec.get("t_ns")
    if t is None:
        return {**out, "note": rec.get("note", "did not happen (the run ended first)")}
    if rec["kind"] == "forced_handover":
        sw = rec.get("switched")
        if sw is None:
            return out
        h = {"k": sw["k"], "ut": rec["ut"], "user": users[rec["ut"]], "kind": "forced",
             "from_core": rec["from_core"], "to_core": rec["to_core"]}
        probe = probes.get(rec["ut"])
        ahead_ms = max(notice_ms, (sw["t_ns"] - t) / 1e6)  # the steps from the event on (proactive: the plan)
        one = measure_one(h, sw, probe or {"sent": 0, "replies": []}, steps, ahead_ms)
        one["recovery_ms"] = one.pop("first_after_ms")
        if probe is None:
            one["interruption_ms"] = one["lost_packets"] = one["recovery_ms"] = None
        one["switch_after_ms"] = round((sw["t_ns"] - t) / 1e6, 2)  # proactive: the notice
        return {**out, **{k: v for k, v in one.items() if k not in ("k", "user", "kind")}}
    if rec["kind"] == "gs_outage":
        end = rec.get("end_ns", t)
        after = min(end + int(2e9), rec.get("next_ns") or end + int(2e9))  # the return, up to the next event
        users_out = []
        for ut in rec.get("affected", []):
            p = probes.get(ut)
            moved = next((r for r in rec.get("rehomed", []) if r["ut"] == ut), None)
            users_out.append({"ut": ut, "rehomed_gs": moved and moved["gs"], "rehomed_core": moved and moved["core"],
                              "outage": _gap(p, t, end), "return": _gap(p, end, after)})
        ints = [u["outage"]["interruption_ms"] for u in users_out if u["outage"]["interruption_ms"] is not None]
        return {**out, "measured_duration_ms": round((end - t) / 1e6, 2), "users": users_out,
                "interruption_ms": max(ints) if ints else None,
                "lost_packets": sum(u["outage"]["lost_packets"] or 0 for u in users_out),
                "recovery_ms": _worst(u["outage"]["recovery_ms"] for u in users_out)}
    # core_restart
    ready = rec.get("ready_ns")
    users_out = []
    for ut in rec.get("served", []):
        p = probes.get(ut)
        reg = _registered_after(steps, ut, t)
        until = min((ready or t) + int(1e9), rec.get("next_ns") or (ready or t) + int(1e9))
        users_out.append({"ut": ut, **_gap(p, t, until),
                          "reregistered_ms": round((reg["t_ns"] - t) / 1e6, 2) if reg else None})
    ints = [u["interruption_ms"] for u in users_out if u["interruption_ms"] is not None]
    control = round((ready - t) / 1e6, 2) if ready else None
    return {**out, "control_outage_ms": control,
            "answers_ms": round((rec["answers_ns"] - t) / 1e6, 2) if rec.get("answers_ns") else None,
            "restarted": bool(rec.get("new_pid")) and rec.get("new_pid") != rec.get("old_pid"), "users": users_out,
            "interruption_ms": max(ints) if ints else None,
            "lost_packets": sum(u["lost_packets"] or 0 for u in users_out),
            # all registered again; None if one of them did not within the run
            "recovery_ms": None if control is None or any(u["reregistered_ms"] is None for u in users_out)
            else _worst([control] + [u["reregistered_ms"] for u in users_out])}

