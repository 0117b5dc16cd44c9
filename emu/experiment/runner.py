"""``leo-emu experiment run FILE``: an experiment file in the live emulator, results as CSV + JSON + PNG.

spec: inter-sno-mobility §5.1 / §5 Figure 5 (both procedures, measured
under the same latencies), §4.3 (both associations, counted on the plan).

What a file asks for is checked whole before anything starts
(:func:`emu.experiment.spec.load_experiment` against the scenario's plan,
then :func:`supported`). The runner measures the file's association with
*both* procedures (the file's first), ``repeats`` inter-SNO handovers of
the plan each, from ``start_slice``, at ``speed``. Every traffic entry is
its own probe stream from its device to the Internet, of its own kind (UDP
datagrams to an echo, or ICMP echo requests: ``ping``/``icmp``), spacing,
payload size and (UDP) echo port; results are per stream, keyed by the device's user terminal
(``runs.<procedure>.probes``; each measured handover says which ``probe``
measured it). It writes into the output folder:

- ``results.json``: both runs (:func:`emu.experiment.handover.run`) and the
  plan's handovers per user-hour under both associations;
- ``handovers.csv``: one row per measured handover; ``steps.csv``: its
  registration steps;
- ``timeline.png``: the probe stream's round trips around the first
  handover of each procedure; ``handovers_per_user_hour.png``: intra- and
  inter-SNO handovers per user-hour, owner vs dynamic.

With ``events`` (forced handover, GS outage, core restart:
:mod:`emu.experiment.events`) each run spans the file's ``duration_s`` from
``start_slice``, causes them at their times, and the outputs add:

- ``results.json``: ``runs.<procedure>.events``, each event's record and
  measured effect (interruption ms, lost packets, recovery ms; the
  restart's control-plane outage);
- ``events.csv``: one row per event and procedure;
- ``events.png``: the affected user's probe round trips around each event,
  the event's start (and an outage's end) marked.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from emu.experiment.handover import MIN_INTERVAL_MS
from emu.experiment.spec import Experiment, ExperimentError, NodeCatalog, check_against, load_experiment

TIMELINE_MS = 1500.0


def supported(exp: Experiment, nodes: NodeCatalog | None) -> None:
    """What this runner can do; anything else is one :class:`ExperimentError` (nothing started). With
    ``nodes`` None only what needs no plan (checked before planning); with a plan's catalog, the rest.

    Each traffic entry is its own probe stream (its ``probe`` kind and ``interval_ms``) from a user device
    to the Internet; results are keyed by that stream's user terminal, so a device sends one stream."""
    if exp.scenario is None:
        raise ExperimentError("required by the runner (the scenario to bring up)", "scenario", None)
    seen: set[str] = set()
    for i, t in enumerate(exp.traffic):
        if t.src in seen:
            raise ExperimentError("one stream per device (its handovers are measured on it)", f"traffic.{i}.src",
                                  t.src)
        seen.add(t.src)
        if t.interval_ms < MIN_INTERVAL_MS:
            raise ExperimentError(f"the runner's probes send at most every {MIN_INTERVAL_MS:g} ms",
                                  f"traffic.{i}.interval_ms", t.interval_ms)
        if nodes is None:
            continue
        if t.src not in nodes.devices:
            raise ExperimentError("must be a user device", f"traffic.{i}.src", t.src)
        if t.dst != nodes.internet:
            raise ExperimentError(f"must be the Internet ({nodes.internet})", f"traffic.{i}.dst", t.dst)


def probe_kind(probe: str) -> str:
    """The stream a traffic entry asks for: ``udp`` or ``icmp`` (``ping`` is ICMP echo)."""
    return "udp" if probe == "udp" else "icmp"


def scenario_path(path: Path, exp: Experiment) -> Path:
    """The scenario file the experiment names (:func:`supported` requires one), relative to the experiment
    file; it must exist."""
    scen = (path.parent / exp.scenario).resolve()
    if not scen.is_file():
        raise ExperimentError("no such scenario file", "scenario", exp.scenario)
    return scen


def check_with_plan(exp: Experiment, nodes: NodeCatalog) -> None:
    """Everything :func:`prepare` checks once the scenario is planned: the file against the plan's nodes and
    slices, then what the runner supports (pure; the shipped examples' CI test calls it)."""
    check_against(exp, nodes)
    supported(exp, nodes)


def prepare(path: str | Path, plan_out: Path) -> tuple[Experiment, Path, Path]:
    """Load and check the file, plan its scenario into ``plan_out``; (experiment, scenario, output folder)."""
    from emu.cli.plan_cmds import build_plan
    from emu.plan.db import PlanDB
    from emu.scenario.load import load_scenario

    p = Path(path)
    exp = load_experiment(p)
    supported(exp, None)  # before minutes of planning
    scen = scenario_path(p, exp)
    load_scenario(scen)
    build_plan(str(scen), plan_out, None, fmt="json")
    db = PlanDB(plan_out)
    nodes = NodeCatalog.from_plan(db)
    db.close()
    check_with_plan(exp, nodes)
    out = (p.parent / exp.output).resolve() if exp.output else Path.cwd() / f"results-{exp.name}"
    return exp, scen, out


def streams_of(exp: Experiment, plan: Path) -> dict[str, dict]:
    """The probe stream of every traffic entry, keyed by its device's user terminal: ``probe`` (udp | icmp),
    ``interval_ms``, ``size_bytes`` (payload), ``port`` (udp: the echo's; None: the runner's), ``device``."""
    from emu.plan.db import PlanDB
    db = PlanDB(plan)
    ut_of = {g.device: g.name for g in db.ground if g.kind == "ut" and g.device}
    db.close()
    return {ut_of[t.src]: {"probe": probe_kind(t.probe), "interval_ms": t.interval_ms, "size_bytes": t.size_bytes,
                           "port": t.port, "device": t.src} for t in exp.traffic}


def run_file(path: str | Path, out_dir: Path | None = None, progress=None) -> dict:
    """Run an experiment file; returns ``results.json``'s content (also written with the CSVs and PNGs)."""
    import tempfile

    from emu.cli.mobility_cmds import handover_report
    from emu.experiment import handover as H
    from emu.plan.db import PlanDB

    say = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="leo-exp-") as tmp:
        plan = Path(tmp) / "plan.db"
        exp, scen, out = prepare(path, plan)
        out = out_dir or out
        streams = streams_of(exp, plan)
        interval = min(x["interval_ms"] for x in streams.values())
        runs = {}
        for proc in [exp.procedure] + [x for x in H.PROCEDURES if x != exp.procedure]:
            say(f"{exp.name}: {proc}, {exp.association}")
            start = exp.start_slice if exp.events else exp.start_slice or None
            runs[proc] = H.run(str(scen), proc, exp.association, exp.repeats, exp.speed, start,
                               str(plan), interval_ms=interval, uts=set(streams), timeline_ms=TIMELINE_MS,
                               progress=say, events=exp.events, duration_s=exp.duration_s, streams=streams)
        db = PlanDB(plan)
        plan_rates = handover_report(db)
        db.close()
    res = {"experiment": exp.name, "scenario": str(scen), "association": exp.association, "runs": runs,
           "plan_handovers": {k: v for k, v in plan_rates.items() if k != "per_ut"}}
    write_outputs(res, out)
    res["output"] = str(out)
    return res


def write_outputs(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    cols = ["procedure", "k", "ut", "probe", "kind", "from_core", "to_core", "gs", "interruption_ms", "lost_packets",
            "registered_ms", "coa", "prefix"]
    with open(out / "handovers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for proc, r in res["runs"].items():
            for h in r["handovers"]:
                w.writerow([proc] + [h.get(c) for c in cols[1:]])
    with open(out / "steps.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["procedure", "k", "ut", "t_ms", "node", "step"])
        for proc, r in res["runs"].items():
            for h in r["handovers"]:
                for s in h["steps"]:
                    w.writerow([proc, h["k"], h["ut"], s["t_ms"], s["node"], s["step"]])
    plot_timeline(res, out / "timeline.png")
    plot_rates(res, out / "handovers_per_user_hour.png")
    if any(r.get("events") for r in res["runs"].values()):
        write_events_csv(res, out / "events.csv")
        plot_events(res, out / "events.png")


EVENT_COLS = ["procedure", "i", "kind", "slice", "target", "interruption_ms", "lost_packets", "recovery_ms",
              "control_outage_ms", "detail"]


def event_row(proc: str, e: dict) -> list:
    """One events.csv row: the event's target node and a short text of what happened (pure)."""
    if e["kind"] == "forced_handover":
        target = e.get("ut")
        detail = e.get("note") or f"{e.get('from_core')} -> {e.get('to_core')}, registered at {e.get('registered_ms')} ms"
    elif e["kind"] == "gs_outage":
        target = e.get("gs")
        detail = "; ".join(f"{u['ut']} via {u['rehomed_gs'] or 'nothing (waited)'}" for u in e.get("users", [])) \
            or "no user on it"
    else:
        target = e.get("core")
        detail = (f"pid {e.get('old_pid')} -> {e.get('new_pid')}; re-registered: "
                  + ", ".join(f"{u['ut']} {u['reregistered_ms']} ms" for u in e.get("users", [])))
    return [proc, e["i"], e["kind"], e.get("slice"), target, e.get("interruption_ms"), e.get("lost_packets"),
            e.get("recovery_ms"), e.get("control_outage_ms"), detail]


def event_summary(e: dict) -> dict:
    """An event's measured effect without its probe samples and steps (the CLI's JSON)."""
    return dict(zip(EVENT_COLS[1:], event_row("", e)[1:]))


def write_events_csv(res: dict, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EVENT_COLS)
        for proc, r in res["runs"].items():
            for e in r.get("events", []):
                w.writerow(event_row(proc, e))


def plot_events(res: dict, path: Path) -> None:
    """One panel per procedure and event: the affected user's probe round trips from the event's start
    (line) to after its end (an outage's end: dashed line); lost probes as red marks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(res["runs"].items())
    n_ev = max(len(r.get("events", [])) for _p, r in runs)
    fig, axes = plt.subplots(len(runs), n_ev, figsize=(3.2 * n_ev, 2.2 * len(runs)), squeeze=False)
    for row, (proc, r) in enumerate(runs):
        for col in range(n_ev):
            ax = axes[row, col]
            evs = r.get("events", [])
            if col >= len(evs):
                ax.axis("off")
                continue
            e = evs[col]
            ok = [(t, v) for t, v in e.get("timeline", []) if v is not None]
            lost = [t for t, v in e.get("timeline", []) if v is None]
            ax.plot([t for t, _ in ok], [v for _, v in ok], ".", ms=2)
            ax.plot(lost, [0] * len(lost), "|", color="red", ms=8, label=f"lost ({len(lost)})")
            ax.axvline(0, color="k", lw=0.8)
            if e.get("end_ms") is not None:
                ax.axvline(e["end_ms"], color="k", lw=0.8, ls="--")
            who = {"forced_handover": e.get("ut"), "gs_outage": e.get("gs"), "core_restart": e.get("core")}[e["kind"]]
            probe = r.get("probes", {}).get(e.get("timeline_ut"), {}).get("probe")
            ax.set_title(f"{proc}: {e['kind']} {who} (slice {e.get('slice')})\n{e.get('timeline_ut', 'no probe')}"
                         f"{f' ({probe})' if probe else ''}: "
                         f"interruption {e.get('interruption_ms')} ms, lost {e.get('lost_packets')}", fontsize=6)
            ax.tick_params(labelsize=5)
            ax.grid(True, lw=0.2)
            ax.legend(fontsize=5, frameon=False)
            if col == 0:
                ax.set_ylabel("round trip (ms)", fontsize=6)
            if row == len(runs) - 1:
                ax.set_xlabel("probe send time from the event (ms)", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_timeline(res: dict, path: Path) -> None:
    """Round trip of every probe around the first measured inter-SNO handover of each procedure; lost
    probes as marks at the bottom."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(res["runs"]), 1, figsize=(6, 2.2 * len(res["runs"])), sharex=True, squeeze=False)
    for ax, (proc, r) in zip(axes[:, 0], res["runs"].items()):
        h = next((x for x in r["handovers"] if x.get("timeline")), None)
        if h is None:
            ax.set_title(f"{proc}: no handover measured", fontsize=7)
            continue
        ok = [(t, rtt) for t, rtt in h["timeline"] if rtt is not None]
        lost = [t for t, rtt in h["timeline"] if rtt is None]
        ax.plot([t for t, _ in ok], [v for _, v in ok], ".", ms=2, label="reply")
        ax.plot(lost, [0] * len(lost), "|", color="red", ms=8, label=f"lost ({len(lost)})")
        ax.axvline(0, color="k", lw=0.6)
        ax.set_title(f"{proc}: {h['ut']} ({h.get('probe', 'udp')}) {h['from_core']} -> {h['to_core']} (slice {h['k']}), interruption "
                     f"{h['interruption_ms']} ms", fontsize=7)
        ax.set_ylabel("round trip (ms)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, frameon=False)
        ax.grid(True, lw=0.2)
    axes[-1, 0].set_xlabel("probe send time from the handover boundary (ms)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rates(res: dict, path: Path) -> None:
    """Intra- and inter-SNO handovers per user-hour, owner vs dynamic (from the plan)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ph = res["plan_handovers"]
    pols = [p for p in ("owner", "dynamic") if p in ph]
    fig, ax = plt.subplots(figsize=(4, 2.6))
    for i, what in enumerate(("intra_per_user_hour", "inter_per_user_hour")):
        ax.bar([j + (i - 0.5) * 0.38 for j in range(len(pols))], [ph[p][what] for p in pols], width=0.38,
               label=what.split("_")[0] + "-SNO")
    ax.set_xticks(range(len(pols)), pols, fontsize=7)
    ax.set_ylabel("handovers per user-hour", fontsize=7)
    ax.set_title(f"reduction of inter-SNO handovers (dynamic vs owner): {ph.get('reduction')}", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
