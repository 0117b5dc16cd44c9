"""First smoke tests of the stock-kernel tier: netem delays and ipip tunnels.

They need a distribution kernel (netem, ipip) and root: ``make test-kernel``
runs them inside QEMU. Elsewhere (the development kernel has neither) they
skip, saying why. Each test builds its own uniquely named namespaces and
always removes them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from emu.dataplane import features

pytestmark = pytest.mark.stock_kernel

NETEM_DELAY_MS = 20.0  # one way, on each veth end
EMULATION_ALLOWANCE_MS = 1.0  # per hop, TCG emulation cost (MEASURED.md)
RTT_RE = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def require(*names: str) -> None:
    """Skip unless this kernel was probed and has every feature in ``names``."""
    found = features.detect()
    if not found.probed:
        pytest.skip("kernel features not probed (needs root): " + found.errors.get(names[0], ""))
    missing = found.missing(*names)
    if missing:
        pytest.skip(f"kernel {found.kernel} lacks {', '.join(missing)}; "
                    "`make test-kernel` runs this under a stock kernel in QEMU")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


def ip_batch(netns: str, lines: list[str]) -> None:
    proc = subprocess.run(["ip", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"ip -n {netns} -batch failed: {proc.stderr.strip()}"


@pytest.fixture
def netem_kernel() -> None:
    require("veth", "netem")


@pytest.fixture
def ipip_kernel() -> None:
    require("veth", "ipip")


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces with lo up, linked by veth v0 <-> v0 (192.0.2.1/30, .2/30)."""
    tag = f"leoemu-sk-{os.getpid()}-{secrets.token_hex(3)}"
    a, b = f"{tag}-a", f"{tag}-b"
    created: list[str] = []
    try:
        for ns in (a, b):
            run("ip", "netns", "add", ns)
            created.append(ns)
        ip_batch(a, ["link set lo up", f"link add v0 type veth peer name v0 netns {b}",
                     "addr add 192.0.2.1/30 dev v0", "link set v0 up"])
        ip_batch(b, ["link set lo up", "addr add 192.0.2.2/30 dev v0", "link set v0 up"])
        yield a, b
    finally:
        for ns in created:
            run("ip", "netns", "del", ns, check=False)


def ping_rtt(netns: str, dst: str, count: int = 5) -> tuple[float, float]:
    """(min, avg) RTT in ms after one warm-up ping (which also resolves ARP)."""
    run("ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "5", dst)
    out = run("ip", "netns", "exec", netns, "ping", "-c", str(count), "-i", "0.2",
              "-W", "5", "-q", dst).stdout
    m = RTT_RE.search(out)
    assert m, f"no rtt line in ping output: {out!r}"
    return float(m.group(1)), float(m.group(2))


def test_netem_delay_on_both_veth_ends_gives_the_round_trip(
        netem_kernel: None, netns_pair: tuple[str, str]) -> None:
    a, b = netns_pair
    base_min, _ = ping_rtt(a, "192.0.2.2")
    for ns in (a, b):
        run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "v0", "root",
            "netem", "delay", f"{NETEM_DELAY_MS:g}ms")
    rtt_min, rtt_avg = ping_rtt(a, "192.0.2.2")
    expected = 2 * NETEM_DELAY_MS
    # netem never sends early: the floor is exact; the ceiling allows emulation
    # cost (~1 ms per hop measured) plus scheduling noise under TCG.
    assert rtt_min >= expected, (rtt_min, expected)
    assert rtt_min <= expected + base_min + 4 * EMULATION_ALLOWANCE_MS, (rtt_min, base_min)
    assert rtt_avg <= expected + base_min + 10 * EMULATION_ALLOWANCE_MS, (rtt_avg, base_min)
    # The delay is the qdisc's doing: without it the RTT falls back.
    run("ip", "netns", "exec", a, "tc", "qdisc", "del", "dev", "v0", "root")
    half_min, _ = ping_rtt(a, "192.0.2.2")
    assert NETEM_DELAY_MS <= half_min < expected, half_min


def test_ipip_tunnel_carries_pings_between_namespaces(
        ipip_kernel: None, netns_pair: tuple[str, str]) -> None:
    a, b = netns_pair
    ends = {a: ("192.0.2.1", "192.0.2.2", "198.51.100.1", "198.51.100.2"),
            b: ("192.0.2.2", "192.0.2.1", "198.51.100.2", "198.51.100.1")}
    for ns, (local, remote, inner, peer) in ends.items():
        ip_batch(ns, [f"link add t0 type ipip local {local} remote {remote}",
                      f"addr add {inner}/32 peer {peer}/32 dev t0", "link set t0 up"])
    run("ip", "netns", "exec", a, "ping", "-c", "3", "-i", "0.2", "-W", "5", "-q", "198.51.100.2")
    # The pings went through the tunnel, not around it.
    stats = json.loads(run("ip", "-n", b, "-s", "-j", "link", "show", "dev", "t0").stdout)[0]
    assert stats["stats64"]["rx"]["packets"] >= 3, stats["stats64"]


def test_doctor_sees_the_stock_kernel_features_inside_the_vm() -> None:
    """The probe's positive answers, checked where they must all be yes."""
    if not features.in_vm():
        pytest.skip("only inside the QEMU tier (leoemu.vm=1 on the kernel command line)")
    found = features.detect()
    assert found.in_vm and found.probed, found.errors
    lacking = [f for f in features.FEATURES if not found.features[f]]
    assert lacking == [], {f: found.errors.get(f) for f in lacking}
    assert not any(d.startswith(tuple(features.FEATURES)) for d in found.degradations), found.degradations
