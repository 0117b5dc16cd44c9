#!/usr/bin/env python3
"""Collect the benchmarks' JSON into one file and generate the README's results table from it.

Every ``scripts/bench_*.py`` prints one JSON object; ``make bench`` saves each one's output as
``out/bench/<name>.json`` and then runs

    python3 scripts/bench_report.py out/bench/*.json -o out/bench.json --readme README.md

which writes ``out/bench.json`` ({"generated": ..., "machine": ..., "results": {name: object}}) and
rewrites the README section between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``. With
``--from out/bench.json`` (and no inputs) it only regenerates the table. A benchmark whose output holds no
JSON object is recorded as {"error": ...}, never left out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# per benchmark, the figures the table shows (field, label); others fall back to _FIGURE_HINTS
FIGURES = {
    "snapshots": [("wall_s", "wall s"), ("slices", "slices"), ("peak_rss_mb", "RSS MB")],
    "plan": [("plan_s", "plan s"), ("snapshot_s", "snapshots s"), ("plan_over_snapshot", "plan/snapshots"),
             ("plan_no_satdest_s", "plan without sat. dest. s"), ("satdest_time_ratio", "sat. dest. time ratio"),
             ("satdest_entries_ratio", "sat. dest. entries ratio"), ("verify_s", "verify s"),
             ("verify_over_plan", "verify/plan"), ("cpu.plan_over_snapshot", "CPU plan/snapshots"),
             ("cpu.satdest_time_ratio", "CPU sat. dest. time ratio"), ("cpu.verify_over_plan", "CPU verify/plan"),
             ("peak_rss_mb", "RSS MB"), ("peak_rss_worker_mb", "worker RSS MB"), ("slices", "slices")],
    "up": [("namespaces", "namespaces"), ("build_s", "build s"), ("baseline_build_s", "bare build s"),
           ("build_ratio", "build ratio"), ("baseline_default_queues_build_s", "bare build, default veth queues s"),
           ("build_ratio_vs_default_queues", "build ratio vs it"),
           ("build_ratio_floor", "build ratio floor (bare + only the work it lacks)"),
           ("apply_p50_ms", "apply p50 ms"), ("apply_p99_ms", "apply p99 ms"),
           ("warm_ms", "warm ms"), ("prep_p50_ms", "prep p50 ms"), ("cleanup_p50_ms", "cleanup p50 ms"),
           ("prep_kernel_cpu_p50_ms", "prep kernel CPU p50 ms"), ("cleanup_kernel_cpu_p50_ms", "cleanup kernel CPU p50 ms"),
           ("replay_speed_max", "replay speed max"), ("replay_speed_kernel_bound", "replay speed, kernel time alone"),
           ("kernel_mem_mb", "kernel MB"), ("teardown_s", "teardown s")],
    "phase1": [("namespaces", "namespaces"), ("up.build_s", "build s"), ("baseline.baseline_build_s", "bare build s"),
               ("build_ratio", "build ratio"), ("boundaries.apply_p99_ms", "apply p99 ms"),
               ("boundaries.prep_max_ms", "prep max ms"), ("boundaries.late_max_ms", "late max ms"),
               ("kernel_mem_mb.Slab", "kernel Slab MB"), ("kernel_mem_mb.Percpu", "kernel Percpu MB"),
               ("controller_rss_mb.vm_hwm", "controller RSS MB"),
               ("ping_all_devices.reached_inet", "devices reaching inet"),
               ("down.wall_s", "down s")],
    "forwarding": [("ratio", "ratio (vs bare chain)"), ("ratio_vs_plain_modelled", "vs chain with tunnel + NAT"),
                   ("plain_modelled_ratio", "tunnel + NAT alone"), ("plain_tunnel_ratio", "tunnel alone"),
                   ("plain_nat_ratio", "NAT alone"), ("emulated_gbps", "emulated Gbit/s"),
                   ("plain_gbps", "bare chain Gbit/s"), ("emulated_cpu_s_per_gb", "CPU s/GB emulated"),
                   ("plain_modelled_cpu_s_per_gb", "CPU s/GB tunnel + NAT chain")],
}
_FIGURE_HINTS = ("_s", "ratio", "_over_", "p99", "rss_mb", "per_s", "gbit", "mbit")


def extract(text: str) -> dict:
    """The last JSON object in a benchmark's output (one line, or indented over several)."""
    text = text.strip()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            return obj
    except ValueError:
        pass
    dec = json.JSONDecoder()
    starts = [i for i, line in _line_starts(text) if line.startswith("{")]
    for i in reversed(starts):
        try:
            obj, _end = dec.raw_decode(text, i)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return {"error": "no JSON object in the output: " + (text[-200:] or "(empty)")}


def _line_starts(text: str):
    pos = 0
    for line in text.split("\n"):
        yield pos, line
        pos += len(line) + 1


def collect(files: list[Path]) -> dict:
    results = {}
    for f in files:
        name = f.stem.removeprefix("bench_")
        results[name] = extract(f.read_text(errors="replace")) if f.is_file() else {"error": f"missing {f}"}
    return {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu_count": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
            "results": results}


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def figures(name: str, res: dict) -> str:
    if "error" in res:
        return f"error: {res['error'][:120]}"
    pairs = FIGURES.get(name)
    if pairs is None:
        pairs = [(k, k) for k, v in res.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and any(h in k for h in _FIGURE_HINTS)]
    got = [(label, _get(res, k)) for k, label in pairs]
    return ", ".join(f"{label} {_fmt(v)}" for label, v in got if v is not None)


def _get(res: dict, key: str):
    """res[key], or a nested field by a dotted key ("cpu.plan_s"); None if absent."""
    for part in key.split("."):
        if not isinstance(res, dict) or part not in res:
            return None
        res = res[part]
    return res


def table(report: dict) -> str:
    lines = [f"Generated by `scripts/bench_report.py` from `out/bench.json` ({report['generated']}, "
             f"{report['machine'].get('cpu_count')} CPUs, kernel {report['machine'].get('kernel')}).", "",
             "| benchmark | scenario | figures |", "|---|---|---|"]
    for name, res in report["results"].items():
        lines.append(f"| {name} | {res.get('scenario', '')} | {figures(name, res)} |")
    return "\n".join(lines)


def rewrite_readme(readme: Path, report: dict) -> None:
    text = readme.read_text()
    block = f"{BEGIN}\n{table(report)}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        raise SystemExit(f"--readme: no {BEGIN} ... {END} section in {readme}")
    readme.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", type=Path, help="one benchmark's saved output each (name: the file's stem)")
    ap.add_argument("-o", "--output", type=Path, default=Path("out/bench.json"))
    ap.add_argument("--from", dest="source", type=Path, help="regenerate the table from this bench.json")
    ap.add_argument("--readme", type=Path, help="rewrite this README's bench section")
    args = ap.parse_args()
    if args.inputs:
        report = collect(args.inputs)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    elif args.source:
        report = json.loads(args.source.read_text())
    else:
        print("bench_report: give benchmark outputs or --from out/bench.json", file=sys.stderr)
        sys.exit(2)
    if args.readme:
        rewrite_readme(args.readme, report)


if __name__ == "__main__":
    main()
