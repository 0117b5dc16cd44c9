"""The constellation over two simulated hosts on one machine, orchestrated by Ray (issue 13). Root only.

Each host is an underlay namespace on a fabric bridge running its own Ray
node and agent; links that cross hosts are VXLAN. a user device and inet on
different hosts (chosen from the partition), so the ping, iperf and trace cross the cut.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from emu.dataplane import netns

from .test_dataplane import DEFAULT, leo

pytest.importorskip("ray", reason="the multihost engine needs Ray (pip install .[multihost])")


@pytest.fixture(scope="module")
def plan(env, tmp_path_factory):
    p = tmp_path_factory.mktemp("mh") / "default.db"
    leo(env, "plan", str(DEFAULT), "-o", str(p), "--format", "json", timeout=600)
    return p


@pytest.fixture(scope="module")
def env(leo_env):
    return leo_env


def _runs(env) -> list[str]:
    root = env["LEOEMU_RUN_DIR"]
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def test_two_hosts_ping_iperf_trace_kill_down(env, plan):
    up = json.loads(leo(env, "multihost", "up", str(plan), "--hosts", "2", "--speed", "10", "--slices", "60",
                        "--format", "json", timeout=900).stdout)
    run = up["run"]
    try:
        assert up["state"] == "running" and [h["state"] for h in up["per_host"]] == ["running", "running"]
        assert all(h["vxlan"] > 0 for h in up["per_host"])
        part = json.loads(leo(env, "partition", str(plan), "--hosts", "2", "--format", "json", "--slices",
                              "1000").stdout)
        inet_host = next(h["host"] for h in part["split"] if h["inet"])
        dev = sorted(d for h in part["split"] if h["host"] != inet_host for d in h["devices"])[0]  # across the cut
        # the partition's namespaces exist, each host's in its own journal
        mine = set(netns.list_names(run + "-"))
        assert len(mine) == part["nodes"] + 3  # + fabric + two underlays
        # a cut ISL is a VXLAN half with the veth's name; its UDP socket is in the underlay namespace, not here
        sat = next(n for n in sorted(mine) if "-sat" in n and json.loads(subprocess.run(
            ["ip", "-n", n, "-j", "-d", "link", "show", "type", "vxlan"], capture_output=True, text=True).stdout))
        halves = json.loads(subprocess.run(["ip", "-n", sat, "-j", "-d", "link", "show", "type", "vxlan"],
                                           capture_output=True, text=True).stdout)
        assert {h["ifname"] for h in halves} <= {"e", "w"} | {f"g{i}" for i in range(200)}  # N/S never cut
        assert all(h["linkinfo"]["info_data"]["port"] == 4790 for h in halves)
        ss = lambda ns: subprocess.run(["ip", "netns", "exec", ns, "ss", "-H", "-uan"], capture_output=True,  # noqa: E731
                                       text=True).stdout
        assert ":4790" not in ss(sat)
        assert any(":4790" in ss(f"{run}-u{h}") for h in (0, 1))
        # real packets across the cut
        ping = json.loads(leo(env, "ping", dev, "inet", "-c", "5", "-i", "0.2", "--format", "json").stdout)
        assert ping["received"] >= 4, ping
        ipf = json.loads(leo(env, "iperf", dev, "inet", "--time", "2", "--format", "json", timeout=120).stdout)
        assert ipf.get("error") in (None, "") and ipf["bits_per_second"] > 1e6, ipf
        tr = json.loads(leo(env, "trace", dev, "inet", "--format", "json").stdout)
        if not tr.get("slice_changed"):
            assert tr["matches_plan"] and tr["reply_received"], tr
        # the shared clock: several boundaries applied on both hosts, skew reported
        time.sleep(4)
        st = json.loads(leo(env, "multihost", "status", "--format", "json").stdout)
        assert st["state"] == "running" and st["slice"] > 0, st
        assert st["skew_p50_ms"] is not None and len(st["last"]["hosts"]) == 2
        # kill host 1's agent: detected and reported
        pid = next(h["pid"] for h in st["hosts"] if h["host"] == 1)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = json.loads(leo(env, "multihost", "status", "--format", "json").stdout)
            if st["state"] == "degraded":
                break
            time.sleep(0.5)
        assert st["state"] == "degraded", st
        lost = [h for h in st["hosts"] if h["state"] == "lost"]
        assert [h["host"] for h in lost] == [1] and "host1" in st["error"], st
    finally:
        down = json.loads(leo(env, "down", "--run", run, "--format", "json", timeout=120).stdout)
    assert down["removed"][0]["namespaces_removed"] == part["nodes"] + 3
    assert not netns.list_names(run + "-")
    assert run not in _runs(env)
    assert not os.path.exists(f"/tmp/lr-{run}")


def test_killed_raylet_is_detected_and_down_cleans(env, plan):
    up = json.loads(leo(env, "multihost", "up", str(plan), "--hosts", "2", "--speed", "10", "--slices", "200",
                        "--format", "json", timeout=900).stdout)
    run = up["run"]
    try:
        from emu.dataplane.cleanup import processes_in

        raylets = [p for p in processes_in([f"{run}-u1"]) if open(f"/proc/{p}/comm").read().strip() == "raylet"]
        assert len(raylets) == 1
        os.kill(raylets[0], signal.SIGKILL)  # host 1's Ray node, not the agent
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = json.loads(leo(env, "multihost", "status", "--format", "json").stdout)
            if st["state"] == "degraded":
                break
            time.sleep(0.5)
        assert st["state"] == "degraded" and [h["host"] for h in st["hosts"] if h["state"] == "lost"] == [1], st
    finally:
        leo(env, "down", "--run", run, "--format", "json", timeout=120)
    assert not netns.list_names(run + "-")
    assert run not in _runs(env)
