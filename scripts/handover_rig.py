#!/usr/bin/env python3
"""Inter-SNO handover interruption, baseline vs proactive, on the small rig (root). Prints one JSON object.

spec: inter-sno-mobility §5.1 (baseline), §5.2 / Figure 5 (proactive). A
10 ms ping from the user's device to the Internet runs across each
handover from the home SNO's ground station to the visited SNO's; the
interruption is the gap between the last reply before and the first reply
after. Procedures alternate repeat by repeat under the same link-switch
time and inter-core latency; the terminal goes back home (unmeasured)
between repeats.

    sudo python scripts/handover_rig.py --repeat 5 --latency-ms 20 --link-switch-ms 50
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emu.control.sno.rig import Rig, summarize  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="one-way terrestrial latency between cores")
    ap.add_argument("--link-switch-ms", type=float, default=50.0, help="link-layer switch time")
    ap.add_argument("--notice-ms", type=float, default=20.0, help="proactive: handover start before the switch")
    ap.add_argument("--steps", action="store_true", help="include every handover's steps")
    a = ap.parse_args()
    for name, v, lo, hi in (("--repeat", a.repeat, 1, 100), ("--latency-ms", a.latency_ms, 0, 5000),
                            ("--link-switch-ms", a.link_switch_ms, 0, 5000), ("--notice-ms", a.notice_ms, 0, 5000)):
        if not lo <= v <= hi:
            print(f"{name}: must be in {lo}..{hi} (got {v})", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("handover_rig: needs root (network namespaces)", file=sys.stderr)
        return 77
    rig = Rig(f"sr{secrets.token_hex(2)}-", latency_ms=a.latency_ms, link_switch_ms=a.link_switch_ms,
              notice_ms=a.notice_ms)
    results = {"baseline": [], "proactive": []}
    t0 = time.monotonic()
    try:
        rig.build()
        info = rig.start()
        if not rig.wait_registered("core-a"):
            raise RuntimeError("the terminal did not register at its home core")
        for i in range(a.repeat):
            for proc in (("baseline", "proactive") if i % 2 == 0 else ("proactive", "baseline")):
                rig.set_procedure(proc)
                r = rig.handover("core-b")
                if not a.steps:
                    r["steps"] = [s for s in r["steps"] if s["node"] in ("rig",) or s["step"] in (
                        "registered", "discover_rx", "auth_req_tx", "auth_vector_rx", "prepare_rx", "tunnel_req_tx",
                        "tunnel_ack_rx", "handover_start_tx", "prepare_tx", "link_up", "link_down", "auth_ok")]
                results[proc].append(r)
                if not rig.go_home():
                    raise RuntimeError("the terminal did not register back at its home core")
        teardown = rig.close()
    except BaseException:
        if rig.info:
            kept = rig.save_logs(Path(tempfile.gettempdir()) / f"sno-rig-logs-{rig.run.run_id}")
            print(f"handover_rig: failed; the daemons' logs are in {kept}", file=sys.stderr)
        rig.close()
        raise
    out = {"rig": "2 cores, 2 GS, 1 UT + device, inet; veth access links",
           "latency_ms": a.latency_ms, "link_switch_ms": a.link_switch_ms, "notice_ms": a.notice_ms,
           "latency_mode": info["latency_mode"],
           "latency_note": ("kernel netem delays the inter-core links" if info["latency_mode"] == "netem" else
                            "no netem on this kernel: the core daemons delay their own inter-core messages by "
                            "latency_ms; tunnelled data packets are not delayed"),
           "tunnel": info["tunnel"], "control_channel": "TLS 1.3, mutual certificates from a per-run CA",
           "probe": "UDP every 10 ms, dev1 -> echo in inet -> dev1 (emu.control.sno.probe)", "repeats": a.repeat}
    for proc, rs in results.items():
        out[proc] = {"median_interruption_ms": summarize([r["interruption_ms"] for r in rs])["median"],
                     "p90_interruption_ms": summarize([r["interruption_ms"] for r in rs])["p90"],
                     "lost_packets": summarize([r["lost_packets"] for r in rs]),
                     "registration_after_link_up_ms": summarize([r["registration_after_link_up_ms"] for r in rs]),
                     "core_registered_after_link_up_ms": summarize([r["core_registered_after_link_up_ms"]
                                                                    for r in rs]),
                     "all_registered": all(r["registered"] for r in rs),
                     "handovers": rs}
    b, p = out["baseline"]["median_interruption_ms"], out["proactive"]["median_interruption_ms"]
    out["ratio_proactive_to_baseline"] = round(p / b, 3) if b and p is not None else None
    out["teardown"] = teardown
    out["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
