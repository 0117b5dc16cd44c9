"""The 2x2 handover matrix (procedure x association) in the live emulator; prints one JSON object.

spec: inter-sno-mobility §5.1 / §5 (procedures), §3.3 / §4.3 (associations).
Each cell is one `leo-emu experiment handover` run (emu.experiment.measure_handovers) on the same plan,
same latencies, same probe spacing; the plan's handovers per user-hour are counted for both associations.
Run as root from the repository root:

    python scripts/handover_matrix.py [--scenario topologies/default.yaml] [--repeat 4] [--speed 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emu.cli.mobility_cmds import handover_report  # noqa: E402
from emu.cli.plan_cmds import build_plan  # noqa: E402
from emu.experiment import measure_handovers  # noqa: E402
from emu.plan.db import PlanDB  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="topologies/sparse.yaml")  # the 6 x 8 scenario the docs table measured
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--notice-ms", type=float, default=150.0)
    a = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="leo-matrix-") as tmp:
        plan = Path(tmp) / "plan.db"
        build_plan(a.scenario, plan, None, fmt="json")
        db = PlanDB(plan)
        rates = handover_report(db)
        db.close()
        cells = {}
        for assoc in ("owner", "dynamic"):
            for proc in ("baseline", "proactive"):
                r = measure_handovers(a.scenario, proc, assoc, a.repeat, a.speed, None, str(plan), a.latency_ms,
                                      a.notice_ms, progress=lambda m: print(m, file=sys.stderr))
                cells[f"{proc}/{assoc}"] = {
                    **{k: r[k] for k in ("median_interruption_ms", "p90_interruption_ms", "lost_packets",
                                         "handovers_measured", "latency_mode", "load_avg")},
                    "inter_per_user_hour": rates[assoc]["inter_per_user_hour"],
                    "intra_per_user_hour": rates[assoc]["intra_per_user_hour"],
                    "per_handover": [{k: h[k] for k in ("k", "ut", "kind", "interruption_ms", "lost_packets",
                                                        "registered_ms")} for h in r["handovers"]]}
    print(json.dumps({"scenario": a.scenario, "repeat": a.repeat, "speed": a.speed, "latency_ms": a.latency_ms,
                      "notice_ms": a.notice_ms, "reduction": rates["reduction"], "cells": cells,
                      "wall_s": round(time.time() - t0, 1), "load_avg_end": list(os.getloadavg())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
