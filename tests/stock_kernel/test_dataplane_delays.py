"""The data plane under a distribution kernel: netem delays from the plan, ipip user-terminal tunnels.

Runs inside QEMU (``make test-kernel``); skips elsewhere, saying why. The
default scenario is brought up in-process at a slice where dev1 reaches the
Internet across several satellites; the measured ping RTT must match twice
the plan's one-way path delay within 10 % plus ~1 ms per hop of emulation
cost, before and after a slice boundary (netem updated by the applier).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from emu.dataplane import features

pytestmark = pytest.mark.stock_kernel

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
ALLOWANCE_MS_PER_HOP = 1.0


def require(*names: str) -> None:
    found = features.detect()
    if not found.probed:
        pytest.skip("kernel features not probed (needs root)")
    missing = found.missing(*names)
    if missing:
        pytest.skip(f"kernel {found.kernel} lacks {', '.join(missing)}; `make test-kernel` runs this in QEMU")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    require("netem", "ipip", "tbf")
    os.environ["LEOEMU_RUN_DIR"] = str(tmp_path_factory.mktemp("runs"))
    os.environ["LEOEMU_RUN_ID_PREFIX"] = "k" + secrets.token_hex(2)
    from emu.cli.plan_cmds import build_plan
    from emu.dataplane import cleanup
    from emu.dataplane.controller import Controller
    from emu.dataplane.state import Run
    from emu.plan.db import PlanDB
    from emu.plan.path import PathFinder

    plan = tmp_path_factory.mktemp("plan") / "default.db"
    made = os.environ.get("LEOEMU_VM_PLAN_DEFAULT90")  # planned on the host by scripts/vm/run-tests.sh
    trust: tuple[str, ...] = ()
    if made and os.path.exists(made):
        shutil.copyfile(made, plan)
        trust = (PlanDB(plan).public_key.hex(),)  # signed by the host's ground-control key, not the VM's
    else:
        build_plan(str(DEFAULT), plan, 90, fmt="json")
    pf = PathFinder(PlanDB(plan))
    # the first slice k whose path (and the next slice's) crosses the most satellites
    series = [pf.path("dev1", "inet", k) for k in range(90)]
    pairs = [k for k in range(89) if series[k]["reachable"] and series[k + 1]["reachable"]]
    k0 = max(pairs, key=lambda k: (series[k]["satellite_hops"], -k))
    run = Run.create()
    ctl = Controller(run, plan, speed=0.001, n_slices=2, start_slice=k0, trust=trust)
    try:
        ctl.build()
        yield {"ctl": ctl, "k0": k0, "series": series}
    finally:
        ctl.close()
        cleanup.teardown(run)


def ping_min_rtt(netns_name: str, dst: str, count: int = 8) -> float:
    p = subprocess.run(["ip", "netns", "exec", netns_name, "ping", "-c", str(count), "-i", "0.2", "-W", "3", dst],
                       capture_output=True, text=True, timeout=60)
    assert " 0% packet loss" in p.stdout, p.stdout + p.stderr
    return float(p.stdout.rsplit("=", 1)[1].split("/")[0])


def expect(path: dict) -> tuple[float, float]:
    rtt = 2 * path["one_way_delay_ms"]
    hops = len(path["hops"]) - 1
    return rtt, 0.1 * rtt + ALLOWANCE_MS_PER_HOP * hops


def test_tunnel_is_ipip_here(live):
    assert live["ctl"].model.cfg.tunnel_mode == "ipip"
    assert live["ctl"].status["tunnel"] == "ipip"


def test_rtt_matches_plan_then_follows_a_boundary(live):
    ctl, k0, series = live["ctl"], live["k0"], live["series"]
    dev = ctl.model.by_name["dev1"].netns
    results = []
    for k in (k0, k0 + 1):
        if k > k0:
            ctl.applier.prepare(k)
            ctl.applier.switch(k)
            ctl.applier.cleanup(k)
        rtt = ping_min_rtt(dev, ctl.model.cfg.inet_addr)
        want, tol = expect(series[k])
        results.append({"slice": k, "rtt_ms": rtt, "plan_rtt_ms": round(want, 3), "tolerance_ms": round(tol, 3)})
        assert abs(rtt - want) <= tol, results
    print(json.dumps(results))


def test_netem_carries_the_plan_delay(live):
    ctl, k = live["ctl"], live["k0"] + 1
    # a satellite on the path (default.yaml's paths may use no ISL at all: up and straight down again)
    sat = next(h["node"] for h in live["series"][k]["hops"] if h["node"].startswith("sat"))
    out = subprocess.run(["tc", "-n", ctl.model.by_name[sat].netns, "-j", "qdisc", "show"], capture_output=True,
                         text=True).stdout
    kinds = {q["kind"] for q in json.loads(out)}
    assert {"netem", "tbf"} <= kinds, kinds
