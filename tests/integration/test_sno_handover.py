"""Inter-SNO handovers in real packets on a small rig (root): registration, tunnel, refusals, restarts, cleanup.

spec: inter-sno-mobility §5.1 (baseline), §5.2 / Figure 5 (proactive). The
rig (``emu.control.sno.rig``): two cores, two ground stations, one terminal
with its device, the Internet; its namespaces carry this module's unique
prefix and a private run directory, and are removed even on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from emu.control.sno import launch, steplog
from emu.control.sno.config import ANYCAST
from emu.control.sno.rig import DEV_ADDR, PREFIX, USER, Rig, tunnel_packets
from emu.control.sno.wire import Msg, decode, encode
from emu.dataplane import cleanup, netns, procs
from emu.dataplane.state import proc_starttime

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _ip_json(ns: str, *args: str) -> list:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def _vxlans(ns: str) -> list[str]:
    return [link["ifname"] for link in _ip_json(ns, "-d", "link", "show")
            if link.get("linkinfo", {}).get("info_kind") == "vxlan"]


def _dev_addrs(rig: Rig) -> list[str]:
    return [f'{a["local"]}/{a["prefixlen"]}' for link in _ip_json(rig.ns["dev1"], "-4", "addr", "show")
            for a in link.get("addr_info", []) if a["local"] != "127.0.0.1"]


def _wait(pred, timeout_s=10.0, step=0.05):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


@pytest.fixture(scope="module")
def rig(module_ns_prefix, tmp_path_factory):
    r = Rig(module_ns_prefix, run_root=str(tmp_path_factory.mktemp("sno-runs")), latency_ms=20.0,
            link_switch_ms=50.0)
    try:
        r.build()
        r.start()
        assert r.wait_registered("core-a"), "the terminal did not register at its home core"
        yield r
    finally:
        r.close()


def test_home_registration_gives_service(rig):
    st = rig.agent_status()
    assert st["registered_at"] == "core-a" and st["prefix"] == PREFIX and st["coa"] is None
    res = rig.stop_probe(rig.start_probe(seconds=0.5), timed=True)
    assert len(res["replies"]) >= res["sent"] - 2 > 30


@pytest.mark.parametrize("procedure", ["baseline", "proactive"])
def test_handover_keeps_the_address_and_the_tunnel_carries_both_ways(rig, procedure, tmp_path):
    rig.set_procedure(procedure)
    before = _dev_addrs(rig)
    r = rig.handover("core-b")
    assert r["registered"], r["steps"]
    assert _dev_addrs(rig) == before == [f"{DEV_ADDR}/24"]
    st = rig.agent_status()
    assert st["registered_at"] == "core-b" and st["prefix"] == PREFIX and st["coa"].startswith("10.79.2.")
    steps = [s["step"] for s in r["steps"] if s["node"] == "core-b"]
    if procedure == "proactive":
        assert "prepare_rx" in steps and "auth_req_tx" not in steps
        assert [s for s in r["steps"] if s["step"] == "prepare_tx"][0]["t_ms"] < 0  # before the link switch
    else:
        assert "auth_req_tx" in steps and "prepare_rx" not in steps
    # the home core routes the user's prefix to the care-of address, through the tunnel
    routes = _ip_json(rig.ns["core-a"], "-4", "route", "show", PREFIX)
    assert routes and routes[0]["gateway"] == st["coa"] and routes[0]["dev"] == "sno2"
    assert _vxlans(rig.ns["core-a"]) == ["sno2"] and _vxlans(rig.ns["core-b"]) == ["sno1"]
    # capture in both cores while the device talks to the Internet: probes inside VXLAN, both directions
    caps = {c: tmp_path / f"{c}.pcap" for c in ("core-a", "core-b")}
    dumps = {c: rig.start_capture(c, p) for c, p in caps.items()}
    time.sleep(1.0)
    res = rig.stop_probe(rig.start_probe(seconds=1.0), timed=True)
    time.sleep(0.3)
    for p in dumps.values():
        p.send_signal(signal.SIGINT)
        p.wait(10)
    assert len(res["replies"]) >= res["sent"] - 2
    for core, path in caps.items():
        seen = tunnel_packets(rig.read_capture(path))
        assert seen["uplink"] >= res["sent"] - 2 and seen["downlink"] >= res["sent"] - 2, (core, seen)
    assert rig.go_home()
    assert _wait(lambda: not _vxlans(rig.ns["core-a"]) and not _vxlans(rig.ns["core-b"]))  # released both ends
    assert _dev_addrs(rig) == before


def test_replayed_registration_is_rejected_and_service_continues(rig, tmp_path):
    pcap = tmp_path / "ut.pcap"
    dump = procs.popen_in(rig.ns["ut1"], ["tcpdump", "-i", "any", "-n", "-U", "--immediate-mode", "-w", str(pcap), "udp", "port", "7140"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.0)
    assert rig.handover("core-b", pre_s=0.1, post_s=0.1)["registered"]
    assert rig.go_home()
    time.sleep(0.3)
    dump.send_signal(signal.SIGINT)
    dump.wait(10)
    from scapy.all import UDP, rdpcap
    sent = [bytes(p[UDP].payload) for p in rdpcap(str(pcap)) if UDP in p and p[UDP].dport == 7140]
    responses = [d for d in sent if len(d) > 4 and d[3] == Msg.RESPONSE]
    assert responses, "no RESPONSE captured"
    replay = responses[-1]  # the registration just made at the home core
    forged = decode(replay)
    forged.msg_id += 1  # a fresh id cannot make a used challenge fresh
    log = rig.info["cores"]["core-a"]["log"]
    t0 = time.monotonic_ns()
    with netns.inside(rig.ns["ut1"]):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        for data in (replay, encode(forged)):
            s.sendto(data, (ANYCAST, 7140))
            time.sleep(0.2)
    rejected = _wait(lambda: [r for r in steplog.read(log) if r["t_ns"] > t0 and r["step"] == "rejected"])
    assert [r["reason"] for r in rejected] == ["replay (duplicate)", "replay"]
    assert rig.agent_status()["registered_at"] == "core-a"
    res = rig.stop_probe(rig.start_probe(seconds=0.5), timed=True)
    assert len(res["replies"]) >= res["sent"] - 2


def _journal_pids(rig: Rig, name: str) -> list[int]:
    return [pid for pid, _s, what in rig.run.journal()[1] if what.startswith(f"{name} (supervised)")]


def test_killed_daemons_restart_and_the_run_recovers(rig):
    assert rig.handover("core-b", pre_s=0.1, post_s=0.1)["registered"]
    for name in ("core-b", "core-a", "ut1"):
        st = rig.core_status(name) if name.startswith("core") else rig.agent_status()
        old = st["pid"]
        os.kill(old, signal.SIGKILL)
        new = _wait(lambda: (s := (rig.core_status(name) if name.startswith("core") else rig.agent_status()))
                    and s["pid"] != old and s)
        assert new, f"{name} was not restarted"
        assert new["pid"] in _journal_pids(rig, name)  # every incarnation is journaled
        if name == "core-b":
            assert new["visitors"][USER]["state"] == "registered"  # taken back from its state file
        if name == "core-a":
            assert new["own"][USER]["where"] == "core-b"
        # service went on through the restart: kernel state outlived the process
        res = rig.stop_probe(rig.start_probe(seconds=0.5), timed=True)
        assert len(res["replies"]) >= res["sent"] - 3, name
    assert _wait(lambda: rig.agent_status()["registered_at"] == "core-b")  # the new agent registered again
    assert launch.wait_ready(rig.info)
    assert rig.go_home()
    assert rig.handover("core-b", pre_s=0.1, post_s=0.1)["registered"]
    assert rig.go_home()


def test_proactive_cuts_the_interruption(rig):
    """The expectation, measured: same latency and link-switch time, procedures alternated."""
    got = {"baseline": [], "proactive": []}
    for i in range(3):
        for proc in ("baseline", "proactive") if i % 2 == 0 else ("proactive", "baseline"):
            rig.set_procedure(proc)
            r = rig.handover("core-b", pre_s=0.3, post_s=0.4)
            assert r["registered"]
            got[proc].append(r["interruption_ms"])
            assert rig.go_home()
    med = {p: sorted(v)[1] for p, v in got.items()}  # the median of three
    assert med["proactive"] < med["baseline"], got


def test_wrong_key_is_rejected_with_no_service(ns_prefix, tmp_path):
    r = Rig(ns_prefix, run_root=str(tmp_path / "runs"), keys={USER: secrets.token_bytes(32)})
    try:
        r.build()
        r.start()
        st = _wait(lambda: (s := r.agent_status()) and s["rejected"] and s)
        assert st and st["rejected"] == "wrong-response" and st["registered_at"] is None
        res = r.stop_probe(r.start_probe(seconds=0.5), timed=True)
        assert res["sent"] > 30 and res["replies"] == []
        rules = subprocess.run(["ip", "-n", r.ns["core-a"], "rule"], capture_output=True, text=True).stdout
        assert PREFIX not in rules and "blackhole" in rules
    finally:
        r.close()


def test_stop_and_down_remove_daemons_and_tunnels(ns_prefix, tmp_path):
    r = Rig(ns_prefix, run_root=str(tmp_path / "runs"))
    try:
        r.build()
        r.start()
        assert r.wait_registered("core-a")
        assert r.handover("core-b", pre_s=0.1, post_s=0.1)["registered"]
        assert _vxlans(r.ns["core-a"]) and _vxlans(r.ns["core-b"])
        pids = [st["pid"] for st in (r.core_status("core-a"), r.core_status("core-b"), r.agent_status())]
        assert launch.stop(r.run)  # the supervisor stops the daemons; they remove their tunnels and routes
        assert not any(proc_starttime(p) for p in pids)
        assert not _vxlans(r.ns["core-a"]) and not _vxlans(r.ns["core-b"])
        assert not _ip_json(r.ns["core-a"], "-4", "route", "show", PREFIX)
        # a second start, then `leo-emu down`: everything the journal names goes
        r.info = {}
        r.start()
        assert r.wait_registered("core-b"), r.explain()  # still on gs-b: a baseline registration there
        sup = launch.info_of(r.run)["supervisor_pid"]
        env = {**os.environ, "LEOEMU_RUN_DIR": str(r.run.root)}
        p = subprocess.run([sys.executable, "-m", "emu.cli.main", "down", "--run", r.run.run_id],
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert proc_starttime(sup) is None
        assert not [n for n in r.ns.values() if netns.exists(n)]
        assert not cleanup.processes_in(list(r.ns.values()))
    finally:
        r.close()
