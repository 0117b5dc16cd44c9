"""The slice switch by mark, armed for a time (emu.dataplane.slicemark), with real packets (root only).

A router namespace holds two slices' tables: table(0) sends the test prefix to sink A, table(1) to sink B, in
both families. The switch is armed for a wall-clock instant T; a source sends a datagram every 10 ms across
it. Every datagram before T must arrive at A, every one after T at B: the kernel moves the router to slice 1
at T by itself, with no write at the boundary. spec: grc-based-routing §Time Slice Transition.

The same for a ground node (a UT between two satellites, its default routes per slice table, the ground rules
and the applier's own route writer): what the UT sends itself, what it forwards from its device, and what
it tunnels (VXLAN, outer header over the GRCs) all move from satellite A to B at T.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from emu.dataplane import desired as D
from emu.dataplane import features, slicemark
from emu.dataplane.build import SYSCTLS
from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.slices import ground_default

SINK = r"""
import socket, sys, time
out = []
for addr in sys.argv[2:]:  # every address given: UDP port 5000 on it
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
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
SINK_ADDRS = ["10.99.0.1", "fd99::1"]

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


def armed(switched: str, sinks: tuple[str, str], sink_addrs: list[str], sources: list[tuple[str, list[str]]],
          sink_s: int) -> tuple[int, dict[str, list[tuple[str, int]]]]:
    """Arm ``switched``'s slice switch (slice 0 -> 1) 1.5 s ahead while ``sources`` (namespace, argv) send; the
    instant and what each sink (A: slice 0's next hop, B: slice 1's) received, as (tag, send time ns)."""
    nft = slicemark.NftSockets([switched])
    try:
        m0, m1 = slicemark.slice_mark(0, D.N_TABLES), slicemark.slice_mark(1, D.N_TABLES)
        nft.transact([switched], slicemark.setup_messages(m0), "setup")
        argv = [sys.executable, "-c", SINK, str(sink_s), *sink_addrs]
        procs = [subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE, text=True)
                 for ns in sinks]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        at_ns = time.time_ns() + 1_500_000_000
        nft.transact([switched], slicemark.arm_messages(m0, m1, at_ns), "arm")  # nothing is written after this
        assert nft.marks([switched])[switched] == m0
        senders = [subprocess.Popen(["ip", "netns", "exec", ns, *cmd]) for ns, cmd in sources]
        for p in senders:
            assert p.wait(timeout=20) == 0
        assert nft.marks([switched])[switched] == m1  # read back: the kernel gives slice 1's mark now
        got = {}
        for name, p in zip("AB", procs):
            out, _ = p.communicate(timeout=10)
            got[name] = [(w, int(t)) for w, t in (line.split() for line in out.split("\n") if line)]
    finally:
        nft.close()
    return at_ns, got


def assert_switched_at(at_ns: int, got: dict, tags: tuple[str, ...]) -> None:
    """Sent before the instant -> A (table 0), after it -> B (table 1), for every tag; a datagram sent just
    before may still be on its way through the prerouting hook when the instant passes: 1 ms of slack; and no
    gap beyond the 10 ms sending interval: nothing lost."""
    for tag in tags:
        at_a = [t for w, t in got["A"] if w == tag]
        at_b = [t for w, t in got["B"] if w == tag]
        assert len(at_a) > 50 and len(at_b) > 50, (tag, len(at_a), len(at_b))
        assert max(at_a) < at_ns + 1_000_000, (tag, (max(at_a) - at_ns) / 1e6)
        assert min(at_b) > at_ns - 1_000_000, (tag, (min(at_b) - at_ns) / 1e6)
        assert (min(at_b) - max(at_a)) < 30_000_000, tag


def test_armed_switch_moves_packets_to_the_next_table_at_the_instant(router) -> None:
    src, r, a, b = router
    at_ns, got = armed(r, (a, b), SINK_ADDRS, [(src, [sys.executable, "-c", SOURCE, "3"])], 4)
    assert_switched_at(at_ns, got, ("4", "6"))


GROUND_SOURCE = r"""
import socket, sys, time
tag = sys.argv[2]
dsts = [(socket.AF_INET, "10.99.0.1", "4"), (socket.AF_INET6, "fd99::1", "6")]
if tag == "dev":
    dsts.append((socket.AF_INET, "192.168.50.1", "vx"))  # through the UT's VXLAN tunnel
socks = [(socket.socket(fam, socket.SOCK_DGRAM), addr, f"{tag}{what}") for fam, addr, what in dsts]
end = time.time() + float(sys.argv[1])
while time.time() < end:
    t = time.time_ns()
    for s, addr, what in socks:
        s.sendto(f"{what} {t}".encode(), (addr, 5000))
    time.sleep(0.01)
"""

DST6 = "fd99::/96"  # the "GRC /96" of this test: the UT's IPv6 default
VX_MAC = "02:00:00:00:50:01"


@pytest.fixture
def ground(make_ns):
    """dev -- ut ==(up0)== A, ut ==(up1)== B: the UT's slice 0 default toward A, slice 1's toward B (the
    satellites' link-locals), written by the applier's own writer; A and B both own the test addresses and
    end the UT's VXLAN tunnel."""
    if not features.detect().has("nft_slice_mark"):
        pytest.skip("this kernel has no nftables mark switch")
    dev, ut, a, b = make_ns("dev", "ut", "sa", "sb", sysctls=SYSCTLS)
    for ns in (dev, ut, a, b):
        ip(ns, "link set lo up")
    subprocess.run(["ip", "-n", ut, "link", "add", "lan", "type", "veth", "peer", "lan", "netns", dev], check=True)
    for i, sat in enumerate((a, b)):
        subprocess.run(["ip", "-n", ut, "link", "add", f"up{i}", "type", "veth", "peer", "g0", "netns", sat],
                       check=True)
    ip(dev, "link set lan up", "addr add 192.168.7.2/24 dev lan", "addr add fd77::2/64 dev lan nodad",
       "route add default via 192.168.7.1", "route add default via fd77::1")
    ip(ut, "link set lan up", "link set up0 up", "link set up1 up", "addr add 192.168.7.1/24 dev lan",
       "addr add fd77::1/64 dev lan nodad", "addr add fe80::2/64 dev up0 nodad", "addr add fe80::2/64 dev up1 nodad",
       "addr add 10.200.0.2/32 dev lo", "addr add fd99::200:2/128 dev lo nodad",
       # main may hold a ::/0 (the BGP overlay's): the GRC /96 rules come before it
       "route add unreachable ::/0",
       "link add vx0 type vxlan id 7 local 10.200.0.2 remote 10.99.0.1 dstport 4789",
       "link set vx0 up", "addr add 192.168.50.2/24 dev vx0",
       f"neigh add 192.168.50.1 lladdr {VX_MAC} dev vx0 nud permanent")
    for sat in (a, b):
        ip(sat, "link set g0 up", "addr add fe80::1/64 dev g0 nodad", "addr add 10.99.0.1/32 dev lo",
           "addr add fd99::1/128 dev lo nodad", "route add 10.200.0.2/32 via inet6 fe80::2 dev g0",
           "link add vx0 type vxlan id 7 local 10.99.0.1 remote 10.200.0.2 dstport 4789",
           f"link set vx0 address {VX_MAC}", "link set vx0 up", "addr add 192.168.50.1/24 dev vx0")
    nl = NetlinkBatch(ut)
    for rule in slicemark.ground_rules(D.table_id, D.N_TABLES, DST6):
        nl.rule("add", table=rule.table, priority=rule.priority, **rule.selector())
    nl.send()
    for k in (0, 1):  # slice k's default by up<k>
        oif = json.loads(subprocess.run(["ip", "-n", ut, "-j", "link", "show", f"up{k}"], capture_output=True,
                                        text=True, check=True).stdout)[0]["ifindex"]
        x = D.GroundDefault(0, "ut", (oif, "fe80::1"), DST6, D.table_id(k))
        ground_default(nl, x)
        if k == 0:  # unmarked lookups: slice 0's (the cleanup after the boundary would move it)
            ground_default(nl, D.unmarked(x))
    nl.send()
    nl.close()
    return dev, ut, a, b


def test_armed_ground_node_moves_its_traffic_to_the_new_satellite_at_the_instant(ground) -> None:
    dev, ut, a, b = ground
    send = [sys.executable, "-c", GROUND_SOURCE, "3"]
    at_ns, got = armed(ut, (a, b), SINK_ADDRS + ["192.168.50.1"],  # + the far end of the UT's tunnel
                       [(ut, send + ["ut"]), (dev, send + ["dev"])], 5)
    assert_switched_at(at_ns, got, ("ut4", "ut6", "dev4", "dev6", "devvx"))
