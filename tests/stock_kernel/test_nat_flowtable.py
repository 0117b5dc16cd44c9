"""The cores' NAT with the nf_flow_table fast path, on a kernel that has it (the QEMU stock-kernel tier).

spec: grc-based-routing §Data Forwarding Process step 5 (the PoP performs NAT). The ruleset is the one
``build.masquerade_ruleset`` gives a core; a user -> core -> Internet chain of three namespaces carries one
TCP transfer. With the flowtable the far end still sees only the core's address, and the packets after the
handshake no longer pass the core's forward hook (a counter there stays small); without it (the same test,
no devices) every packet does, so the check can fail. Each test builds its own uniquely named namespaces
and always removes them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from emu.dataplane import features
from emu.dataplane.build import masquerade_ruleset

from .test_stock_kernel_smoke import ip_batch, run

pytestmark = pytest.mark.stock_kernel

USER, CORE_IN, CORE_OUT, FAR = "10.0.0.1", "10.0.0.2", "203.0.113.1", "203.0.113.2"
COUNTER = ("table ip count {\n chain fwd_late {\n  type filter hook forward priority 10;\n"
           "  meta l4proto tcp counter\n }\n}\n")
PACKETS_RE = re.compile(r"counter packets (\d+)")


@pytest.fixture
def nat_chain() -> Iterator[tuple[str, str, str]]:
    """user -- core -- far: the user's only route is via the core; far knows only its link to the core."""
    found = features.detect()
    if not found.probed:
        pytest.skip("kernel features not probed (needs root)")
    missing = found.missing("veth", "nft_nat", "nft_flowtable", "iperf3")
    if missing:
        pytest.skip(f"kernel {found.kernel} lacks {', '.join(missing)}; "
                    "`make test-kernel` runs this under a stock kernel in QEMU")
    tag = f"leoemu-ft-{os.getpid()}-{secrets.token_hex(3)}"
    user, core, far = (f"{tag}-{x}" for x in ("u", "c", "f"))
    created: list[str] = []
    try:
        for ns in (user, core, far):
            run("ip", "netns", "add", ns)
            created.append(ns)
        run("ip", "netns", "exec", core, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ip_batch(user, ["link set lo up", f"link add v0 type veth peer name g0 netns {core}",
                        f"addr add {USER}/30 dev v0", "link set v0 up", f"route add default via {CORE_IN}"])
        ip_batch(core, ["link set lo up", f"link add inet type veth peer name v0 netns {far}",
                        f"addr add {CORE_IN}/30 dev g0", f"addr add {CORE_OUT}/30 dev inet",
                        "link set g0 up", "link set inet up"])
        ip_batch(far, ["link set lo up", f"addr add {FAR}/30 dev v0", "link set v0 up"])
        yield user, core, far
    finally:
        for ns in created:
            run("ip", "netns", "del", ns, check=False)


def transfer(user: str, core: str, far: str, devices: tuple[str, ...]) -> tuple[str, int, int]:
    """Load the core's ruleset (flowtable over ``devices``, none: no fast path) and a late forward counter,
    send 2 s of TCP from the user to far: (the peer far saw, packets the core's forward hook counted,
    packets the core received from the user)."""
    nft = subprocess.run(["ip", "netns", "exec", core, "nft", "-f", "-"], capture_output=True, text=True,
                         input=masquerade_ruleset(f"{USER}/30", flowtable_devices=devices) + COUNTER, timeout=60,
                         check=False)
    assert nft.returncode == 0, nft.stderr
    server = subprocess.Popen(["ip", "netns", "exec", far, "iperf3", "-s", "-1", "-J", "-B", FAR],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.0)
        run("ip", "netns", "exec", user, "iperf3", "-c", FAR, "-t", "2", "-J")
        out, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    peer = json.loads(out)["start"]["connected"][0]["remote_host"]
    counted = sum(int(x) for x in PACKETS_RE.findall(
        run("ip", "netns", "exec", core, "nft", "list", "table", "ip", "count").stdout))
    link = json.loads(run("ip", "-n", core, "-s", "-j", "link", "show", "dev", "g0").stdout)[0]
    return peer, counted, link["stats64"]["rx"]["packets"]


def test_established_flows_take_the_fast_path_and_stay_translated(nat_chain: tuple[str, str, str]) -> None:
    peer, counted, received = transfer(*nat_chain, devices=("g0", "inet"))
    assert peer == CORE_OUT  # the Internet side sees the core, never the user
    assert received > 1000, received
    assert counted < received / 10, (counted, received)  # only the handshake and the first packets


def test_without_the_flowtable_every_packet_passes_the_forward_hook(nat_chain: tuple[str, str, str]) -> None:
    peer, counted, received = transfer(*nat_chain, devices=())
    assert peer == CORE_OUT
    assert received > 1000, received
    assert counted >= received * 0.9, (counted, received)  # both directions pass it: ACKs count too
