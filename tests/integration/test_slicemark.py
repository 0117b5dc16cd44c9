"""The slice switch by mark, armed for a time (emu.dataplane.slicemark), with real packets (root only).

A router namespace holds two slices' tables: table(0) sends the test prefix to sink A, table(1) to sink B, in
both families. The switch is armed for a wall-clock instant T; a source sends a datagram every 10 ms across
it. Every datagram before T must arrive at A, every one after T at B: the kernel moves the router to slice 1
at T by itself, with no write at the boundary. spec: grc-based-routing §Time Slice Transition.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from emu.dataplane import desired as D
from emu.dataplane import features, slicemark
from emu.dataplane.build import SYSCTLS
from emu.dataplane.netlink import NetlinkBatch

SINK = r"""
import socket, sys, time
out = []
for fam, addr in ((socket.AF_INET, "10.99.0.1"), (socket.AF_INET6, "fd99::1")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((addr, 5000))
    s.setblocking(False)
    out.append(s)
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for s in out:
        try:
            data = s.recv(64)
        except BlockingIOError:
            continue
        print(data.decode(), flush=True)
    time.sleep(0.001)
"""

SOURCE = r"""
import socket, sys, time
a4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    t = time.time_ns()
    a4.sendto(f"4 {t}".encode(), ("10.99.0.1", 5000))
    a6.sendto(f"6 {t}".encode(), ("fd99::1", 5000))
    time.sleep(0.01)
"""


def ip(ns: str, *lines: str) -> None:
    p = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                       capture_output=True)
    assert p.returncode == 0, p.stderr


@pytest.fixture
def router(make_ns):
    if not features.detect().has("nft_slice_mark"):
        pytest.skip("this kernel has no nftables mark switch")
    # as the emulator's namespaces, but with automatic link-locals (neighbour discovery needs them; the emulator
    # assigns its own)
    src, r, a, b = make_ns("src", "r", "a", "b", sysctls={k: v for k, v in SYSCTLS.items() if "addr_gen" not in k})
    for ns in (src, r, a, b):
        ip(ns, "link set lo up")
    # src -- r -- a, r -- b; both sinks own the test addresses
    subprocess.run(["ip", "-n", r, "link", "add", "s0", "type", "veth", "peer", "r0", "netns", src], check=True)
    for peer, name in ((a, "a0"), (b, "b0")):
        subprocess.run(["ip", "-n", r, "link", "add", name, "type", "veth", "peer", "r0", "netns", peer], check=True)
    ip(src, "link set r0 up", "addr add 10.98.0.2/24 dev r0", "addr add fd98::2/64 dev r0 nodad",
       "route add default via 10.98.0.1", "route add default via fd98::1")
    ip(r, "link set s0 up", "link set a0 up", "link set b0 up", "addr add 10.98.0.1/24 dev s0",
       "addr add fd98::1/64 dev s0 nodad", "addr add 10.97.1.1/24 dev a0", "addr add 10.97.2.1/24 dev b0",
       "addr add fd97:1::1/64 dev a0 nodad", "addr add fd97:2::1/64 dev b0 nodad",
       # slice 0's table to A, slice 1's to B
       f"route add 10.99.0.0/24 via 10.97.1.2 table {D.table_id(0)}",
       f"route add 10.99.0.0/24 via 10.97.2.2 table {D.table_id(1)}",
       f"route add fd99::/64 via fd97:1::2 table {D.table_id(0)}",
       f"route add fd99::/64 via fd97:2::2 table {D.table_id(1)}")
    for ns, i in ((a, 1), (b, 2)):
        ip(ns, "link set r0 up", f"addr add 10.97.{i}.2/24 dev r0", f"addr add fd97:{i}::2/64 dev r0 nodad",
           "addr add 10.99.0.1/32 dev lo", "addr add fd99::1/128 dev lo nodad",
           f"route add default via 10.97.{i}.1", f"route add default via fd97:{i}::1")
    nl = NetlinkBatch(r)
    for rule in slicemark.fixed_rules(D.table_id, D.N_TABLES):
        nl.rule("add", table=rule.table, priority=rule.priority, **rule.selector())
    nl.send()
    nl.close()
    return src, r, a, b


def test_armed_switch_moves_packets_to_the_next_table_at_the_instant(router) -> None:
    src, r, a, b = router
    nft = slicemark.NftSockets([r])
    try:
        m0, m1 = slicemark.slice_mark(0, D.N_TABLES), slicemark.slice_mark(1, D.N_TABLES)
        nft.transact([r], slicemark.setup_messages(m0), "setup")
        sinks = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SINK, "4"],
                                  stdout=subprocess.PIPE, text=True) for ns in (a, b)]
        for p in sinks:
            assert p.stdout.readline().strip() == "ready"
        at_ns = time.time_ns() + 1_500_000_000
        nft.transact([r], slicemark.arm_messages(m0, m1, at_ns), "arm")  # nothing is written after this
        assert nft.marks([r])[r] == m0
        subprocess.run(["ip", "netns", "exec", src, sys.executable, "-c", SOURCE, "3"], check=True, timeout=20)
        assert nft.marks([r])[r] == m1  # read back: the kernel gives slice 1's mark now
        got = {}
        for name, p in zip("AB", sinks):
            out, _ = p.communicate(timeout=10)
            got[name] = [(int(f), int(t)) for f, t in (line.split() for line in out.split("\n") if line)]
    finally:
        nft.close()
    for family in (4, 6):
        at_a = [t for f, t in got["A"] if f == family]
        at_b = [t for f, t in got["B"] if f == family]
        assert len(at_a) > 50 and len(at_b) > 50, (family, len(at_a), len(at_b))
        # sent before T -> A (table 0), after T -> B (table 1); a datagram sent just before T may still be on its
        # way through the router's prerouting hook when T passes: 1 ms of slack
        assert max(at_a) < at_ns + 1_000_000, (family, (max(at_a) - at_ns) / 1e6)
        assert min(at_b) > at_ns - 1_000_000, (family, (min(at_b) - at_ns) / 1e6)
        assert (min(at_b) - max(at_a)) < 30_000_000  # no gap beyond the 10 ms sending interval: nothing lost
