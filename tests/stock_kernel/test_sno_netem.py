"""The SNO rig where the kernel has netem: the kernel delays the inter-core path, the daemons do not.

spec: inter-sno-mobility §5.1. Runs inside QEMU with a stock kernel (``make
test-kernel``); elsewhere it skips, saying why. Only lower bounds on times:
TCG emulation makes everything slower, never faster.
"""

from __future__ import annotations

import secrets
import subprocess

import pytest

from emu.control.sno.rig import Rig

from .test_stock_kernel_smoke import require

pytestmark = pytest.mark.stock_kernel

LATENCY_MS = 40.0  # one way between the cores: L/2 on each end of each core's Internet link


def test_netem_carries_the_inter_core_latency(tmp_path):
    require("netem", "vxlan")
    r = Rig(f"tsn{secrets.token_hex(2)}-", run_root=str(tmp_path / "runs"), latency_ms=LATENCY_MS,
            link_switch_ms=50.0)
    try:
        r.build()
        info = r.start(timeout_s=180)
        assert info["latency_mode"] == "netem"
        qd = subprocess.run(["tc", "-n", r.ns["core-a"], "qdisc", "show", "dev", "inet"], capture_output=True,
                            text=True).stdout
        assert "netem" in qd and "delay 20ms" in qd, qd
        assert r.core_status("core-b")["latency_mode"] == "netem"  # the daemons add nothing themselves
        assert r.wait_registered("core-a", 60)
        res = r.handover("core-b", timeout_s=60)
        assert res["registered"]
        t: dict[str, float] = {}
        for s in res["steps"]:
            if s["node"] == "core-b":
                t.setdefault(s["step"], s["t_ms"])  # the first of each
        # AUTH_REQ out and AUTH_VECTOR back: one inter-core round trip, both ways through netem
        assert t["auth_vector_rx"] - t["auth_req_tx"] >= 2 * LATENCY_MS * 0.95
        assert t["tunnel_ack_rx"] - t["tunnel_req_tx"] >= 2 * LATENCY_MS * 0.95
    finally:
        r.close()
