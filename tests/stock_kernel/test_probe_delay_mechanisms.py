"""Positive control for scripts/probe_delay_mechanisms.py under a distribution kernel.

On the development kernel the probe finds no honest delay mechanism (issue 14,
docs/delay-without-netem.md). That claim is only worth something if the
probe's trials can succeed: here, where netem and fq exist, netem and the BPF
earliest-departure stamp under fq must both give ping RTT within 10 % of the
50 ms asked for, while pfifo (which ignores the stamp) must not. Runs inside
QEMU (``make test-kernel``); skips elsewhere, saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emu.dataplane import features

pytestmark = pytest.mark.stock_kernel

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "probe_delay_mechanisms.py"


def test_probe_finds_netem_and_edt_under_fq():
    found = features.detect()
    if not found.probed:
        pytest.skip("kernel features not probed (needs root)")
    missing = found.missing("netem", "fq", "clsact")
    if missing:
        pytest.skip(f"kernel {found.kernel} lacks {', '.join(missing)}; `make test-kernel` runs this in QEMU")
    if not shutil.which("llc"):
        pytest.skip("llc not on PATH: the probe cannot compile its BPF program")
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    print(json.dumps(out))
    assert out["netem"]["honest_within_10pct"], out["netem"]
    assert out["edt_fq"].get("filter_attached") and out["edt_fq"]["honest_within_10pct"], out["edt_fq"]
    assert not out["edt_pfifo"]["honest_within_10pct"], out["edt_pfifo"]
    assert {"edt_fq", "netem"} <= set(out["honest_mechanisms"])
