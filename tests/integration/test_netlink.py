"""Raw-netlink data-plane layer against the real kernel.

Topology, built once per module (names carry the module prefix):

    A e0 (10) ==10.1.0.0/31== (20) w0 B e1 (21) ==10.2.0.0/31== (30) w1 C
    A e2 (11) ==10.1.0.2/31== (22) w2 B                   C lo: 10.99.0.3/32

A reaches 10.99.0.3 over two parallel links (UCMP 3:1); B forwards to C.
IPv6: fd00:1::/64 on A-B link 10/20, fd00:2::/64 on B-C.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from emu.dataplane import netns, tc
from emu.dataplane.netlink import NetlinkBatch, Nexthop
from emu.errors import DataplaneError

MAC = {10: "02:00:00:00:0a:0a", 20: "02:00:00:00:0b:14"}
TARGET = "10.99.0.3"


def _host_view() -> dict:
    """The host namespace as ``ip -j`` sees it, lifetimes removed (they may tick)."""
    def run(*argv: str) -> object:
        out = subprocess.run(["ip", "-j", *argv], check=True, capture_output=True, text=True).stdout
        return json.loads(re.sub(r'"(valid|preferred)_life_time":\d+,?', "", out).replace(",}", "}"))
    return {"link": run("link"), "addr": run("addr"), "route4": run("-4", "route", "show", "table", "all"),
            "route6": run("-6", "route", "show", "table", "all"), "rule": run("rule")}


@pytest.fixture(scope="module")
def host_before(_netns_capable: None) -> dict:
    return _host_view()


@pytest.fixture(scope="module")
def line(module_ns_prefix: str, host_before: dict) -> dict:
    a, b, c = (module_ns_prefix + x for x in "abc")
    netns.create_many([a, b, c], netns.ROUTER_SYSCTLS)
    fd_b, fd_c = netns.open_fd(b), netns.open_fd(c)
    nl = {n: NetlinkBatch(n) for n in (a, b, c)}
    try:
        A, B, C = nl[a], nl[b], nl[c]
        A.veth("e0", "w0", fd_b, index=10, peer_index=20, mac=MAC[10], peer_mac=MAC[20], mtu=1500)
        A.veth("e2", "w2", fd_b, index=11, peer_index=22, group=42)
        B.veth("e1", "w1", fd_c, index=21, peer_index=30)
        A.send(), B.send()
        for batch, idxs in ((A, (1, 10, 11)), (B, (1, 20, 21, 22)), (C, (1, 30))):
            for i in idxs:
                batch.link_set(i, up=True)
        A.addr("add", 10, "10.1.0.0", 31), A.addr("add", 11, "10.1.0.2", 31)
        A.addr("add", 10, "fd00:1::1", 64)
        B.addr("add", 20, "10.1.0.1", 31), B.addr("add", 22, "10.1.0.3", 31), B.addr("add", 21, "10.2.0.0", 31)
        B.addr("add", 20, "fd00:1::2", 64), B.addr("add", 21, "fd00:2::1", 64)
        C.addr("add", 30, "10.2.0.1", 31), C.addr("add", 1, TARGET, 32), C.addr("add", 30, "fd00:2::2", 64)
        A.route("add", TARGET, 32, nexthops=[Nexthop(10, "10.1.0.1", 3), Nexthop(11, "10.1.0.3", 1)])
        A.route("add", "10.2.0.0/31", oif=10, gateway="10.1.0.1", metric=7)
        A.route("add", "fd00:2::/64", oif=10, gateway="fd00:1::2")
        B.route("add", TARGET, 32, oif=21, gateway="10.2.0.1")
        C.route("add", "0.0.0.0/0", oif=30, gateway="10.2.0.0")
        C.route("add", "::/0", oif=30, gateway="fd00:2::1")
        for batch in nl.values():
            batch.send()
        yield {"a": a, "b": b, "c": c, "nl": nl}
    finally:
        for batch in nl.values():
            batch.close()
        for fd in (fd_b, fd_c):
            os.close(fd)


def ping(ns: str, dst: str, *args: str) -> subprocess.CompletedProcess:
    """ping from inside ``ns``: the child inherits the thread's namespace, no ``ip netns exec``."""
    with netns.inside(ns):
        return subprocess.run(["ping", "-n", *args, dst], capture_output=True, text=True)


def test_links_indexes_names_macs(line: dict) -> None:
    a = {l["index"]: l for l in line["nl"][line["a"]].links()}
    b = {l["index"]: l for l in line["nl"][line["b"]].links()}
    assert (a[10]["name"], a[11]["name"], b[20]["name"], b[22]["name"]) == ("e0", "e2", "w0", "w2")
    assert a[10]["mac"] == MAC[10] and b[20]["mac"] == MAC[20]
    assert a[10]["kind"] == "veth" and a[10]["up"] and b[20]["up"]
    assert a[11]["group"] == 42 and b[22]["group"] == 42


def test_routes_dump_back(line: dict) -> None:
    routes = {r["dst"]: r for r in line["nl"][line["a"]].routes(table=254)}
    mp = routes[f"{TARGET}/32"]
    assert sorted((o, g, w) for o, g, w, _ in mp["nexthops"]) == [(10, "10.1.0.1", 3), (11, "10.1.0.3", 1)]
    single = routes["10.2.0.0/31"]
    assert (single["oif"], single["gateway"], single["metric"], single["nexthops"]) == (10, "10.1.0.1", 7, [])
    v6 = {r["dst"]: r for r in line["nl"][line["a"]].routes(socket.AF_INET6, table=254)}
    assert v6["fd00:2::/64"]["gateway"] == "fd00:1::2"


def test_ping_across_two_hops(line: dict) -> None:
    r = ping(line["a"], TARGET, "-c", "3", "-i", "0.05", "-W", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    r6 = ping(line["a"], "fd00:2::2", "-6", "-c", "2", "-i", "0.05", "-W", "1")
    assert r6.returncode == 0, r6.stdout + r6.stderr


def test_ipv6_nodad_usable_at_once(line: dict) -> None:
    B, C = line["nl"][line["b"]], line["nl"][line["c"]]
    B.addr("add", 21, "fd00:3::1", 64)
    C.addr("add", 30, "fd00:3::2", 64)
    B.send(), C.send()
    tentative = [x for x in B.addresses(socket.AF_INET6) if x["address"] == "fd00:3::1"][0]["flags"] & 0x40
    # no sleep: with DAD the addresses stay tentative for over a second; here a reply comes within the
    # first second (several probes, since the first can race the neighbour solicitation)
    r = ping(line["b"], "fd00:3::2", "-6", "-c", "5", "-i", "0.1", "-w", "1")
    assert not tentative and r.returncode == 0, r.stdout + r.stderr


def test_route_replace_under_ping_loses_nothing(line: dict) -> None:
    A = line["nl"][line["a"]]
    shapes = [dict(oif=10, gateway="10.1.0.1"), dict(oif=11, gateway="10.1.0.3"),
              dict(nexthops=[Nexthop(10, "10.1.0.1", 1), Nexthop(11, "10.1.0.3", 5)])]
    stop = threading.Event()

    def flap() -> None:
        k = 0
        while not stop.is_set():
            A.route("replace", TARGET, 32, **shapes[k % 3])
            A.send()
            k += 1
            time.sleep(0.005)
    t = threading.Thread(target=flap)
    t.start()
    try:
        r = ping(line["a"], TARGET, "-c", "200", "-i", "0.005", "-W", "1")
    finally:
        stop.set()
        t.join()
    assert " 0% packet loss" in r.stdout, r.stdout


def test_shadow_table_rule_switch(line: dict) -> None:
    A = line["nl"][line["a"]]
    A.route("add", TARGET, 32, table=1000, type="blackhole")
    A.rule("add", table=1000, priority=100)
    A.send()
    try:
        assert ping(line["a"], TARGET, "-c", "1", "-W", "1").returncode != 0
    finally:
        A.rule("del", table=1000, priority=100)
        A.route("del", TARGET, 32, table=1000, type="blackhole")
        A.send()
    assert ping(line["a"], TARGET, "-c", "1", "-W", "1").returncode == 0


def test_errors_name_op_netns_errno(line: dict) -> None:
    A = line["nl"][line["a"]]
    A.route("add", "10.2.0.0/31", oif=10, gateway="10.1.0.1", metric=7)
    with pytest.raises(DataplaneError) as ei:
        A.send()
    assert ei.value.errno == errno.EEXIST and ei.value.netns == line["a"] and "route add" in ei.value.op
    A.route("add", "10.2.0.0/31", oif=10, gateway="10.1.0.1", metric=7)
    assert A.send(ok={errno.EEXIST}).tolerated == 1
    A.route("add", "10.77.0.0/16", oif=99)
    with pytest.raises(DataplaneError) as ei:
        A.send()
    assert ei.value.errno == errno.ENODEV


def test_missing_link_kind_and_netem_are_reported(line: dict) -> None:
    A = line["nl"][line["a"]]
    A.ipip("tun9", remote="10.1.0.1", local="10.1.0.0")
    try:
        A.send()
        A.link_del([l["index"] for l in A.links() if l["name"] == "tun9"][0])
        A.send()
    except DataplaneError as exc:   # this kernel: no ipip
        assert exc.errno == errno.EOPNOTSUPP and "ipip" in exc.op
    tc.netem(A, 11, 5000)
    try:
        A.send()
        tc.qdisc_del(A, 11)
        A.send()
    except DataplaneError as exc:   # this kernel: no netem
        assert exc.errno == errno.ENOENT and "netem" in exc.op


def test_vxlan_and_tbf(line: dict) -> None:
    A = line["nl"][line["a"]]
    A.vxlan("vx5", 5, remote="10.1.0.1", local="10.1.0.0", dev_index=10, index=50)
    tc.tbf(A, 11, 100_000_000)
    A.send()
    try:
        vx = [l for l in A.links() if l["index"] == 50][0]
        assert vx["kind"] == "vxlan" and vx["name"] == "vx5"
        assert {"index": 11, "kind": "tbf"}.items() <= [q for q in tc.qdiscs(A) if q["index"] == 11][0].items()
    finally:
        A.link_del(50)
        tc.qdisc_del(A, 11)
        A.send()


def test_a_dump_longer_than_one_read_comes_back_whole(line: dict) -> None:
    """A dump continues after the batch's barrier (the kernel fills later parts as we read)."""
    A = line["nl"][line["a"]]
    A.ack_each = False
    for i in range(5000):
        A.route("add", (0x0B000000 + i).to_bytes(4, "big"), 32, oif=10, table=1234)
    A.send()
    A.ack_each = True
    try:
        assert len(A.routes(table=1234)) == 5000
    finally:
        A.ack_each = False
        for i in range(5000):
            A.route("del", (0x0B000000 + i).to_bytes(4, "big"), 32, table=1234)
        A.send()
        A.ack_each = True
    assert A.routes(table=1234) == []


def test_route_get_many_and_neighbours(line: dict) -> None:
    from emu.dataplane import fibcheck, nlroute

    A = line["nl"][line["a"]]
    nlroute.neigh(A, "add", 10, "10.1.0.9", "02:00:00:00:00:99")
    A.send()
    try:
        got = [n for n in A.neighbours(socket.AF_INET) if n["dst"] == "10.1.0.9"]
        assert got and got[0]["lladdr"] == "02:00:00:00:00:99" and got[0]["index"] == 10
        assert got[0]["state"] == 0x80                                 # NUD_PERMANENT
        dsts = [0x0A010001, 0x0A010000, 0xCB007101]                    # 10.1.0.1, own 10.1.0.0, 203.0.113.1
        answers = fibcheck.route_get_many(A, dsts * 200)
        assert answers[:3] == [(0, 1, 10), (0, 2, 1), (errno.ENETUNREACH, None, None)]
        assert answers == answers[:3] * 200
    finally:
        nlroute.neigh(A, "del", 10, "10.1.0.9", "02:00:00:00:00:99")
        A.send()


def test_link_down_up_and_group_delete(line: dict) -> None:
    A = line["nl"][line["a"]]
    A.veth("g0", "g1", None, index=60, peer_index=61, group=77)
    A.send()
    A.link_set(60, up=True, mac="02:00:00:00:00:60")
    A.link_set(61, up=False)
    A.send()
    links = {l["index"]: l for l in A.links()}
    assert links[60]["up"] and not links[61]["up"] and links[60]["mac"] == "02:00:00:00:00:60"
    A.link_del_group(77)
    A.send()
    assert not {60, 61} & {l["index"] for l in A.links()}


def test_namespace_lifecycle_idempotent(make_ns) -> None:
    names = make_ns("x", "y", "z", sysctls={"net.ipv4.ip_forward": 1})
    assert all(netns.exists(n) for n in names)
    assert netns.get_sysctl(names[0], "net.ipv4.ip_forward") == "1"
    with pytest.raises(DataplaneError) as ei:
        netns.create(names[0])
    assert ei.value.errno == errno.EEXIST
    assert netns.exists(names[0])            # a failed create leaves the existing one alone
    netns.set_sysctls_many(names, {"net.ipv4.conf.all.rp_filter": 2})
    assert netns.get_sysctl(names[2], "net.ipv4.conf.all.rp_filter") == "2"
    assert netns.delete_many(names) == 3
    assert netns.delete_many(names) == 0 and not netns.delete(names[0])
    assert not any(netns.exists(n) for n in names)
    for bad in ("", "a/b", "..", "x" * 256):
        with pytest.raises(DataplaneError):
            netns.validate_name(bad)


@pytest.mark.parametrize("threaded", [False, True], ids=["forked", "inline"])
def test_namespaces_made_behind(ns_prefix: str, threaded: bool) -> None:
    """create_behind: made by a forked child while the caller runs on (inline where the process has other
    threads), progress per chunk, sysctls set; a clash fails in wait() with the kernel's errno, and the
    failing chunk's other namespaces are removed again (as create_many does)."""
    names = [f"{ns_prefix}b{i}" for i in range(7)]
    seen: list[tuple[int, int]] = []
    stop = threading.Event()
    other = threading.Thread(target=stop.wait) if threaded else None
    if other:
        other.start()
    try:
        job = netns.create_behind(names, {"net.ipv4.ip_forward": 1}, chunk=3)
        assert (job.pid is None) == threaded
        job.wait(lambda done, total: seen.append((done, total)))
    finally:
        stop.set()
    assert seen == [(3, 7), (6, 7), (7, 7)]
    assert all(netns.exists(n) for n in names)
    assert netns.get_sysctl(names[6], "net.ipv4.ip_forward") == "1"
    clash = [f"{ns_prefix}c0", names[0], f"{ns_prefix}c2"]
    job = netns.create_behind(clash, chunk=3)
    with pytest.raises(DataplaneError) as ei:
        job.wait()
    assert ei.value.errno == errno.EEXIST and ei.value.netns == names[0]
    assert not netns.exists(clash[0]) and not netns.exists(clash[2]) and netns.exists(names[0])


def test_namespaces_made_behind_while_the_caller_runs_and_stopped_at_once(ns_prefix: str) -> None:
    """The child makes them while the caller does something else (no wait() yet); abort() and an interrupted
    wait() kill and reap it: nothing is made afterwards, and what was made can be removed by name."""
    names = [f"{ns_prefix}r{i}" for i in range(400)]
    try:
        job = netns.create_behind(names, chunk=20)
        assert job.pid is not None
        deadline = time.monotonic() + 10
        while not netns.exists(names[0]) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert netns.exists(names[0])            # made by the child, the caller never waited
        job.abort()
        assert job.pid is None
        made = sum(map(netns.exists, names))
        time.sleep(0.3)
        assert sum(map(netns.exists, names)) == made < len(names)
        netns.delete_many(names)

        def interrupt(done, total):
            raise KeyboardInterrupt
        job = netns.create_behind(names, chunk=20)
        with pytest.raises(KeyboardInterrupt):
            job.wait(interrupt)
        assert job.pid is None
        made = sum(map(netns.exists, names))
        time.sleep(0.3)
        assert sum(map(netns.exists, names)) == made < len(names)
    finally:
        netns.delete_many(names)
    assert not any(map(netns.exists, names))


def test_point_to_point_addresses_route_the_peer(make_ns) -> None:
    """addr(peer=): IPv6 gets the peer's /128 through the link and no prefix route of its own
    (noprefixroute); IPv4 keeps its peer route (the prefix route is the peer's there)."""
    a, b = make_ns("pa", "pb")
    fd = netns.open_fd(b)
    try:
        with NetlinkBatch(a) as na:
            na.veth("pp0", "pp1", fd, index=30, peer_index=31)
            na.send()
    finally:
        os.close(fd)
    with NetlinkBatch(a) as na, NetlinkBatch(b) as nb:
        for nl, me, peer, idx in ((na, 1, 2, 30), (nb, 2, 1, 31)):
            nl.link_set(idx, up=True)
            nl.addr("add", idx, f"fd00:99::{me}", 128, peer=f"fd00:99::{peer}")
            nl.addr("add", idx, f"10.99.0.{me}", 32, peer=f"10.99.0.{peer}")
            nl.send()
        # the IPv6 peer route comes with the address's DAD completion, which the kernel runs from a work item
        # even with nodad (addrconf_dad_work): moments after the request, later on a loaded machine
        deadline = time.monotonic() + 5
        while True:
            six = {r["dst"] for r in na.routes(socket.AF_INET6) if r["table"] == 254}
            if "fd00:99::2/128" in six or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        four = {r["dst"] for r in na.routes(socket.AF_INET) if r["table"] == 254}
    assert "fd00:99::2/128" in six and "fd00:99::1/128" not in six
    assert "10.99.0.2/32" in four
    for dst in ("fd00:99::2", "10.99.0.2"):
        p = ping(a, dst, "-c1", "-W2")
        assert p.returncode == 0, (dst, p.stdout, p.stderr)


def test_host_namespace_untouched(line: dict, host_before: dict) -> None:
    """Runs after everything above (file order): the host saw nothing of it."""
    after = _host_view()
    changed = [k for k in host_before if after[k] != host_before[k]]
    assert not changed, f"host namespace changed in {changed}: {[after[k] for k in changed]}"
