"""The SNO control plane in the live constellation (spec: inter-sno-mobility §4.2, §5.1, §5 Figure 5).

`up` with a scenario `mobility` block starts a core daemon per operator and an agent per terminal; an
inter-SNO handover of the plan keeps the user's address and sends its traffic through the inter-core
tunnel; `down` removes daemons and tunnels; `experiment handover` measures it; a bad experiment file is
one line, exit 2, nothing started.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from emu.control.sno import launch
from emu.dataplane import netns
from emu.dataplane.state import proc_starttime

from .test_dataplane import in_ns, leo
from .test_nat_ecmp_retention import inet_peer

ROOT = Path(__file__).resolve().parents[2]
# written for the 6 x 8 scenario (coverage gaps, inter-SNO handovers at known slices): topologies/sparse.yaml
DEFAULT = ROOT / "topologies" / "sparse.yaml"


def _mine(prefix: str) -> list[str]:
    return netns.list_names(prefix)


def test_experiment_handover_keeps_the_address_and_uses_the_tunnel(leo_env, module_ns_prefix) -> None:
    res = leo(leo_env, "experiment", "handover", str(DEFAULT), "--procedure", "proactive", "--association", "owner",
              "--repeat", "2", "--speed", "5", "--format", "json", timeout=900)
    d = json.loads(res.stdout)
    assert d["handovers_measured"] >= 1, d
    assert d["median_interruption_ms"] is not None and d["p90_interruption_ms"] >= d["median_interruption_ms"]
    for h in d["handovers"]:
        assert h["prefix"] == h["home_prefix"]  # the address the user registered with is its home one
        assert ipaddress.ip_address(h["device_addr"]) in ipaddress.ip_network(h["home_prefix"])
        assert h["registered_core"] == h["to_core"]
        assert h["first_after_ms"] is not None  # replies came back after the handover
        assert [s for s in h["steps"] if s["node"] == h["ut"] and s["step"] == "registered"]
    away = [h for h in d["handovers"] if h["kind"] == "leave_home"]
    assert away and all(h["coa"] for h in away)
    for core, devs in d["tunnels"].items():  # visited core -> tunnel -> home core and back
        assert devs and all(v["rx"] > 0 and v["tx"] > 0 for v in devs.values()), (core, devs)
    assert not [n for n in _mine(module_ns_prefix.rstrip("-")) if not n.endswith("probe")]


def test_experiment_handover_with_icmp_probes(leo_env, module_ns_prefix) -> None:
    """`--probe icmp`: ICMP echo requests every 10 ms from the device (the Internet's kernel answers) measure
    the handover as the UDP stream does, and the result says which probe it used."""
    res = leo(leo_env, "experiment", "handover", str(DEFAULT), "--procedure", "proactive", "--association", "owner",
              "--repeat", "1", "--speed", "5", "--probe", "icmp", "--format", "json", timeout=900)
    d = json.loads(res.stdout)
    assert d["probe"] == "icmp" and d["handovers_measured"] >= 1, d
    assert all(p["replies"] > 0.5 * p["sent"] > 0 for p in d["probes"].values()), d["probes"]
    assert all(h["first_after_ms"] is not None for h in d["handovers"])


def _inet_side_addr(core_ns: str) -> str:
    """A core's public address: the IPv4 address on its link to the Internet."""
    p = in_ns(core_ns, "ip", "-j", "-4", "addr", "show", "dev", "inet")
    return json.loads(p.stdout)[0]["addr_info"][0]["local"]


def _registered(info: dict) -> bool:
    return all((launch.try_admin(a["admin"], {"op": "status"}) or {}).get("registered_at")
               for a in info["agents"].values())


def test_up_starts_the_control_plane_and_down_removes_it(leo_env, tmp_path) -> None:
    sc = tmp_path / "mob.yaml"
    sc.write_text(DEFAULT.read_text().replace("name: default", "name: default-mob", 1)
                  + "mobility:\n  procedure: baseline\n  latency_ms: 10\n")
    res = leo(leo_env, "up", str(sc), "--start-slice", "18", "--slices", "3", "--detach", "--format", "json",
              timeout=600)
    run = json.loads(res.stdout)["run"]
    rundir = Path(leo_env["LEOEMU_RUN_DIR"]) / run
    try:
        info = json.loads((rundir / "sno" / "control.json").read_text())
        assert set(info["cores"]) == {"sno-a", "sno-b"} and set(info["agents"]) == {"ut1", "ut2", "ut3", "ut4"}
        journal = (rundir / "journal").read_text()
        assert f"pid {info['supervisor_pid']} " in journal
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _registered(info):
            time.sleep(0.5)
        assert _registered(info)
        st = {u: launch.admin(a["admin"], {"op": "status"}) for u, a in info["agents"].items()}
        visited = [u for u, s in st.items() if s["coa"]]
        assert visited  # slice 18 of default.yaml has users on the other operator's satellites
        pids = [launch.admin(c["admin"], {"op": "status"})["pid"] for c in info["cores"].values()]
        pids += [s["pid"] for s in st.values()]
        for u in visited:  # its device reaches the Internet through the visited core and the tunnel
            dev = f"{run}-dev{u[2:]}"
            p = in_ns(dev, "ping", "-c", "3", "-i", "0.2", "-W", "2", "12.0.0.1")
            assert " 0% packet loss" in p.stdout, p.stdout
            # ... and leaves by its home core's NAT: the visited core does not translate it (docs/dataplane.md)
            user, peer = inet_peer(f"{run}-inet", "12.0.0.1", dev)
            publics = {c: _inet_side_addr(f"{run}-{c}") for c in info["cores"]}
            assert peer in publics.values() and peer != publics[st[u]["registered_at"]] and peer != user, \
                (u, user, peer, publics)
        tunnels = in_ns(f"{run}-sno-a", "ip", "-j", "link", "show", "type", "vxlan").stdout
        assert any(x["ifname"].startswith("sno") for x in json.loads(tunnels))
        assert (rundir / "sno" / "sno-a.log").exists() and (rundir / "sno" / "ut1.jsonl").exists()
    finally:
        leo(leo_env, "down", "--run", run)
    assert not netns.list_names(run)
    time.sleep(0.5)
    assert all(proc_starttime(p) is None for p in pids + [info["supervisor_pid"]])


@pytest.mark.parametrize("change, field", [("  - {kind: forced_handover, ut: ut9, time_s: 3}\n", "events.0.ut"),
                                           ("  - {kind: meteor, time_s: 3}\n", "events.0.kind"),
                                           ("  - {kind: gs_outage, gs: gs-london, time_s: 3, duration_s: 5, "
                                            "colour: red}\n", "events.0.colour"),
                                           ("  - {kind: core_restart, core: sno-z, slice: 1}\n", "events.0.core"),
                                           ("  - {kind: forced_handover, ut: ut1, time_s: 3, to_core: sno-z}\n",
                                            "events.0.to_core")])
def test_bad_experiment_file_starts_nothing(leo_env, tmp_path, module_ns_prefix, change, field) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(f"name: bad\nscenario: {DEFAULT}\nduration_s: 60\n"
                 "traffic: [{probe: udp, src: dev1, dst: inet}]\nevents:\n" + change)
    before = set(_mine(module_ns_prefix.rstrip("-")))
    res = leo(leo_env, "experiment", "run", str(p), check=False, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and field in lines[0], res.stderr
    assert set(_mine(module_ns_prefix.rstrip("-"))) == before
    assert not list(Path(leo_env["LEOEMU_RUN_DIR"]).glob("*/sno"))
