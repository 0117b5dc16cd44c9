"""BGP mobile routing with real BIRD daemons in real namespaces (spec: bgp-mobile-routing-atn §3, §4, §6).

The rig (the data plane's part is done here by hand: links, addresses, the
routes to the user terminal):

    core-a2 (AS 65001) --iBGP-- 
    src --- core-a (AS 65001, MSP fd00:a::/32) === core-b (AS 65002, MSP fd00:b::/32)
              |                                      |
            gs1 (AS 4200000001)                    gs2 (AS 4200000002)
               \\____________ ut (MNP fd00:a:0:100::/56) ______/
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from emu.control.bgp import birdc, launch
from emu.control.bgp.daemon import BirdConfigError
from emu.control.bgp.model import AGGRESSIVE, Link, Operator, Speaker, build_network
from emu.dataplane import netns
from emu.dataplane.state import Run

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="bird not installed (apt-get install bird2)")]

MNP = "fd00:a:0:100::/56"
UT_ADDR = "fd00:a:0:100::1"
SRC_ADDR = "fd10:5::2"
LINKS = {  # (a, b): subnet; a gets ::1, b ::2
    ("core-a", "core-b"): "fd10:ab",
    ("core-a", "core-a2"): "fd10:a2",
    ("core-a", "gs1"): "fd10:1",
    ("core-b", "gs2"): "fd10:2",
    ("core-a", "src"): "fd10:5",
    ("gs1", "ut"): "fd10:71",
    ("gs2", "ut"): "fd10:72",
}
FOLLOW_BUDGET_S = 2 * AGGRESSIVE.hold_s  # a move is an UPDATE (MRAI 0), not a failure: far inside hold time


def sh(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(argv)}: {p.stderr}"
    return p.stdout


def addr(a: str, b: str, end: str) -> str:
    return f"{LINKS[(a, b)]}::{1 if end == a else 2}"


def ifname(peer: str) -> str:
    return "to-" + peer


@pytest.fixture(scope="module")
def rig(module_ns_prefix, tmp_path_factory):
    pre = module_ns_prefix
    names = ["core-a", "core-a2", "core-b", "gs1", "gs2", "ut", "src"]
    ns = {n: pre + n for n in names}
    netns.create_many(list(ns.values()), netns.ROUTER_SYSCTLS)
    for (a, b), _ in LINKS.items():
        sh("ip", "link", "add", "bgptmp0", "netns", ns[a], "type", "veth", "peer", "name", "bgptmp1", "netns", ns[b])
        for me, other, tmp in ((a, b, "bgptmp0"), (b, a, "bgptmp1")):
            sh("ip", "-n", ns[me], "link", "set", tmp, "name", ifname(other))
            sh("ip", "-n", ns[me], "addr", "add", addr(a, b, me) + "/64", "dev", ifname(other), "nodad")
            sh("ip", "-n", ns[me], "link", "set", ifname(other), "up")
    for n in names:
        sh("ip", "-n", ns[n], "link", "set", "lo", "up")
    sh("ip", "-n", ns["ut"], "addr", "add", UT_ADDR + "/128", "dev", "lo")
    sh("ip", "-n", ns["src"], "-6", "route", "add", "default", "via", addr("core-a", "src", "core-a"))
    # the IGP's job: core-b reaches src's subnet through core-a
    sh("ip", "-n", ns["core-b"], "-6", "route", "add", "fd10:5::/64", "via", addr("core-a", "core-b", "core-a"))
    ut_at(ns, "gs1")

    run_root = tmp_path_factory.mktemp("bgprun")
    run = Run("bgp", run_root)
    run.dir.mkdir()
    (run.dir / "journal").touch()
    ops = [Operator("opa", 65001, ("fd00:a::/32",)), Operator("opb", 65002, ("fd00:b::/32",))]
    speakers = [Speaker("core-a", ns["core-a"], "10.255.0.1", operator="opa"),
                Speaker("core-a2", ns["core-a2"], "10.255.0.3", operator="opa"),
                Speaker("core-b", ns["core-b"], "10.255.0.2", operator="opb"),
                Speaker("gs1", ns["gs1"], "10.255.1.1", asn=4200000001),
                Speaker("gs2", ns["gs2"], "10.255.1.2", asn=4200000002)]
    links = [Link(a, addr(a, b, a), b, addr(a, b, b)) for (a, b) in LINKS if "ut" not in (a, b) and "src" not in (a, b)]
    net = build_network(ops, speakers, links)
    ov = launch.start(run, net, AGGRESSIVE)
    try:
        assert ov.wait_established(30), {r: ov.sessions(r) for r in ov.daemons}
        yield {"ns": ns, "ov": ov, "run": run}
    finally:
        ov.stop()
        netns.delete_many(list(ns.values()))


def ut_at(ns: dict, gs: str) -> None:
    """The data plane's part of a handover: the GS routes the MNP to the UT, the UT's default points at it."""
    other = "gs2" if gs == "gs1" else "gs1"
    subprocess.run(["ip", "-n", ns[other], "-6", "route", "del", MNP], capture_output=True)
    sh("ip", "-n", ns[gs], "-6", "route", "replace", MNP, "via", addr(gs, "ut", "ut"))
    sh("ip", "-n", ns["ut"], "-6", "route", "replace", "default", "via", addr(gs, "ut", gs))


def kernel_nexthop(netns_name: str, prefix: str) -> str | None:
    out = sh("ip", "-n", netns_name, "-6", "route", "show", "exact", prefix, "proto", "bird")
    m = re.search(r"via (\S+)", out)
    return m.group(1) if m else None


def wait_nexthops(ns: dict, want: dict[str, str | None], timeout_s: float, t0: float | None = None
                  ) -> float | None:
    """Seconds from ``t0`` (default: now) until every c-ASBR's kernel route for the MNP has the wanted next hop."""
    t0 = time.monotonic() if t0 is None else t0
    while time.monotonic() - t0 < timeout_s:
        if all(kernel_nexthop(ns[c], MNP) == v for c, v in want.items()):
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def ping(netns_name: str, dst: str) -> str:
    p = subprocess.run(["ip", "netns", "exec", netns_name, "ping", "-6", "-c", "1", "-W", "2", "-n", dst],
                       capture_output=True, text=True)
    return p.stdout + p.stderr


VIA_CORE_A = addr("core-a", "core-a2", "core-a")  # iBGP: next hop self
AT_GS1 = {"core-a": addr("core-a", "gs1", "gs1"), "core-b": addr("core-a", "core-b", "core-a"), "core-a2": VIA_CORE_A}
AT_GS2 = {"core-a": addr("core-a", "core-b", "core-b"), "core-b": addr("core-b", "gs2", "gs2"), "core-a2": VIA_CORE_A}
NOWHERE = {"core-a": None, "core-b": None, "core-a2": None}


def test_attach_announces_into_every_core_fib(rig):
    ns, ov = rig["ns"], rig["ov"]
    t0 = time.monotonic()
    ov.attach("gs1", MNP)
    took = wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S, t0)
    assert took is not None, {c: kernel_nexthop(ns[c], MNP) for c in AT_GS1}
    print(f"attach -> every c-ASBR FIB: {took * 1000:.0f} ms")
    assert " 0% packet loss" in ping(ns["src"], UT_ADDR)


def test_move_between_stubs_every_core_follows(rig):
    ns, ov = rig["ns"], rig["ov"]
    ov.attach("gs1", MNP)
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None
    ut_at(ns, "gs2")
    t0 = time.monotonic()  # from the call: rendering, bird -p, birdc configure on both s-ASBRs count
    ov.move(MNP, "gs1", "gs2")
    took = wait_nexthops(ns, AT_GS2, FOLLOW_BUDGET_S, t0)
    assert took is not None, {c: kernel_nexthop(ns[c], MNP) for c in AT_GS2}
    print(f"move gs1 -> gs2, every c-ASBR FIB follows in {took * 1000:.0f} ms (budget {FOLLOW_BUDGET_S} s)")
    assert " 0% packet loss" in ping(ns["src"], UT_ADDR)
    assert ov.announced["gs1"] == [] and ov.announced["gs2"] == [MNP]
    ut_at(ns, "gs1")
    ov.move(MNP, "gs2", "gs1")
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None


@pytest.mark.parametrize("inactive, answering_core",
                         [("fd00:a:0:900::1", "core-a"), ("fd00:b:0:900::1", "core-b")])
def test_inactive_mnp_gets_icmp_unreachable(rig, inactive, answering_core):
    """An address in an MSP with no active MNP: the owning c-ASBR answers ICMPv6 no-route (spec §3)."""
    out = ping(rig["ns"]["src"], inactive)
    core_addr = {"core-a": addr("core-a", "src", "core-a"), "core-b": addr("core-a", "core-b", "core-b")}
    assert "Destination unreachable" in out, out
    assert f"From {core_addr[answering_core]}" in out, out


def test_detach_leaves_black_hole_not_less_specific(rig):
    ns, ov = rig["ns"], rig["ov"]
    ov.attach("gs1", MNP)
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None
    ov.detach("gs1", MNP)
    assert wait_nexthops(ns, NOWHERE, FOLLOW_BUDGET_S) is not None
    out = ping(ns["src"], UT_ADDR)
    assert "Destination unreachable" in out and f"From {addr('core-a', 'src', 'core-a')}" in out, out
    ov.attach("gs1", MNP)
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None


def test_stubs_hold_only_the_default_route(rig):
    ns, ov = rig["ns"], rig["ov"]
    ov.attach("gs1", MNP)
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None
    for gs in ("gs1", "gs2"):
        assert birdc.bgp_route_count(ov.socket(gs)) == 1
        bird_routes = sh("ip", "-n", ns[gs], "-6", "route", "show", "proto", "bird").strip().splitlines()
        assert len(bird_routes) == 1 and bird_routes[0].startswith("default via"), bird_routes
    for core in ("core-a", "core-a2", "core-b"):  # the full table: the MNP and the other operator's MSP
        assert birdc.bgp_route_count(ov.socket(core)) == 2, core


def test_killed_daemon_is_restarted_and_routes_return(rig):
    ns, ov, run = rig["ns"], rig["ov"], rig["run"]
    ov.attach("gs1", MNP)
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None
    old_pid = ov.daemons["gs1"].pid
    restarts = len(ov.restarts)
    t0 = time.monotonic()
    ov.daemons["gs1"].kill()
    # the TCP session closes (or BFD / hold timer): the cores drop the MNP; the keeper restarts gs1, which
    # announces it again
    gone = wait_nexthops(ns, NOWHERE, 2 * AGGRESSIVE.hold_s, t0)
    back = wait_nexthops(ns, AT_GS1, 20, t0)
    assert len(ov.restarts) > restarts and ov.daemons["gs1"].pid != old_pid
    assert back is not None, {c: kernel_nexthop(ns[c], MNP) for c in AT_GS1}
    print(f"killed gs1: withdrawn after {gone and gone * 1000:.0f} ms; back {back * 1000:.0f} ms after the kill")
    _, pids = run.journal()
    assert ov.daemons["gs1"].pid in [p for p, _, _ in pids]
    assert " 0% packet loss" in ping(ns["src"], UT_ADDR)


def test_silent_link_failure_detected_by_bfd(rig):
    """A link that stops carrying packets without going down: BFD (100 ms x 3) drops the session (spec §6)."""
    if shutil.which("nft") is None:
        pytest.skip("nft not installed: cannot make a silent link failure")
    ns, ov = rig["ns"], rig["ov"]
    ov.attach("gs1", MNP)
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None
    rules = ("add table inet bgptest\n"
             "add chain inet bgptest in { type filter hook input priority 0; policy accept; }\n"
             "add chain inet bgptest out { type filter hook output priority 0; policy accept; }\n"
             'add rule inet bgptest in iifname "to-core-a" drop\n'
             'add rule inet bgptest out oifname "to-core-a" drop\n')
    subprocess.run(["ip", "netns", "exec", ns["gs1"], "nft", "-f", "-"], input=rules, text=True, check=True)
    t0 = time.monotonic()
    try:
        gone = wait_nexthops(ns, NOWHERE, AGGRESSIVE.hold_s, t0)  # BFD must beat the hold timer
        assert gone is not None, {c: kernel_nexthop(ns[c], MNP) for c in NOWHERE}
        print(f"silent link failure: MNP withdrawn from every c-ASBR after {gone * 1000:.0f} ms")
    finally:
        subprocess.run(["ip", "netns", "exec", ns["gs1"], "nft", "delete", "table", "inet", "bgptest"], check=True)
    assert wait_nexthops(ns, AT_GS1, 20) is not None


def test_bad_config_is_refused_and_nothing_starts(make_ns, tmp_path, monkeypatch):
    (core_ns,) = make_ns("badcore")
    net = build_network([Operator("opa", 65001, ("fd00:a::/32",))],
                        [Speaker("core-a", core_ns, "10.255.0.1", operator="opa")], [])
    from emu.control.bgp import render

    monkeypatch.setattr(launch, "render_core", lambda *a, **k: render.render_core(*a, **k) + "protocol bgp {\n")
    with pytest.raises(BirdConfigError, match="bgp config of core-a: bird refused it: .*syntax error"):
        launch.start(None, net, AGGRESSIVE, workdir=tmp_path)
    assert not (tmp_path / "core_a" / "bird.ctl").exists()
    assert subprocess.run(["pgrep", "-f", f"bird -f -c {tmp_path}"], capture_output=True).returncode == 1


def test_bad_mnp_is_refused_and_nothing_changes(rig):
    from emu.errors import InputError

    ov = rig["ov"]
    before = list(ov.announced["gs2"])
    with pytest.raises(InputError, match="fd00:c::/56"):
        ov.announce("gs2", ["fd00:c::/56"])
    assert ov.announced["gs2"] == before


def test_refused_mnp_file_keeps_the_running_daemon_and_its_file(rig):
    """The hot path of a move skips `bird -p`: a file BIRD refuses on `configure` raises BirdConfigError, the
    old file is put back and the daemon keeps announcing what it did."""
    ns, ov = rig["ns"], rig["ov"]
    ov.attach("gs1", MNP)
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None
    d = ov.daemons["gs1"]
    before = d.mnp_path.read_text()
    with pytest.raises(BirdConfigError, match="gs1: bird refused the MNP file"):
        d.move_mnps("route this is not bird;\n")
    assert d.mnp_path.read_text() == before and d.running()
    assert wait_nexthops(ns, AT_GS1, FOLLOW_BUDGET_S) is not None
