#!/usr/bin/env bash
# The main job on a scenario: plan, bring it up, ping and iperf3 from dev1 to the Internet, print, tear down.
# Usage: scripts/demo.sh [SCENARIO] [OUTDIR]   (run as root; `sudo make demo` calls it)
set -euo pipefail
SCENARIO=${1:-topologies/default.yaml}
OUT=${2:-out}
mkdir -p "$OUT"
PLAN="$OUT/demo.plan.db"

RUN=""
# only this demo's run is removed (other runs on the machine stay up)
cleanup() { [ -n "$RUN" ] && leo-emu down --run "$RUN" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== plan $SCENARIO"
leo-emu plan "$SCENARIO" -o "$PLAN"
leo-emu verify "$PLAN"
# start at the first slice where dev1 reaches the Internet across the most satellites
START=$(leo-emu path "$PLAN" dev1 inet --series --format json | python3 -c '
import json, sys
s = [r for r in json.load(sys.stdin)["series"] if r["reachable"]]
print(max(s, key=lambda r: (r["satellite_hops"], -r["slice"]))["slice"] if s else 0)')
echo "== the plan's path dev1 -> inet at slice $START"
leo-emu path "$PLAN" dev1 inet --slice "$START"
echo "== up (one namespace per node)"
leo-emu up "$SCENARIO" --plan "$PLAN" --detach --start-slice "$START" --format json | tee "$OUT/demo-up.json"
RUN=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["run"])' "$OUT/demo-up.json")
leo-emu status --run "$RUN"
echo "== ping dev1 -> inet"
leo-emu ping --run "$RUN" dev1 inet -c 10 -i 0.2 --format json | tee "$OUT/demo-ping.json"
echo "== iperf3 dev1 -> inet"
leo-emu iperf --run "$RUN" dev1 inet --time 5 --format json | tee "$OUT/demo-iperf.json"
echo "== trace dev1 -> inet (scapy probe vs the plan)"
leo-emu trace --run "$RUN" dev1 inet --format json | tee "$OUT/demo-trace.json" || true
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
p = json.load(open(f"{out}/demo-ping.json"))
i = json.load(open(f"{out}/demo-iperf.json"))
print(f"\nresult: ping {p['received']}/{p['transmitted']} received, rtt avg {p['rtt_avg_ms']} ms; "
      f"iperf3 {i['bits_per_second'] / 1e6:.1f} Mbit/s")
PY
echo "== down"
leo-emu down --run "$RUN"
trap - EXIT
