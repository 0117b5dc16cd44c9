"""Mininet interop (issue 11): Mininet's CLI and API on a live run, bad input, a Mininet without mnexec.

Root only; skipped where Mininet (package or mnexec) is absent. One default
run per module (unique run-id prefix from ``leo_env``), always brought down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu.dataplane import netns
from emu.dataplane.cleanup import processes_in
from emu.mininet import requirements

from .test_dataplane import DEFAULT, ROOT, leo

pytestmark = pytest.mark.skipif(bool(requirements.missing()),
                                reason=f"Mininet missing ({requirements.missing()}): sudo make install-mininet")


@pytest.fixture(scope="module")
def run(leo_env):
    p = leo(leo_env, "up", str(DEFAULT), "--detach", "--format", "json", timeout=300)
    info = json.loads(p.stdout)
    names = json.loads((Path(leo_env["LEOEMU_RUN_DIR"]) / info["run"] / "run.json").read_text())
    return {"id": info["run"], "netns": [n["netns"] for n in names["nodes"]]}


def cli(env, *args, stdin: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu.cli.main", "cli", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def run_processes(run) -> set[int]:
    return set(processes_in(run["netns"]))


def test_scripted_cli_session_through_stdin(leo_env, run):
    before = run_processes(run)
    script = "\n".join([
        "nodes",
        "dev1 ping -c3 inet",
        "sat0-0-2 ip route show table all",
        "links",
        "dump",
        "py net.get('ut1')",
        "iperf dev1 inet",
        "status",
    ]) + "\n"
    p = cli(leo_env, run["id"], stdin=script)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr  # Mininet's output() logs to stderr, node output goes to stdout
    assert "available nodes are" in out and "sat0-0-2" in out and "dev1" in out
    assert "3 packets transmitted, 3 received" in out  # `inet` replaced by its address, kernel forwarded
    assert "via inet6 fe80::" in out and "proto static" in out  # the satellite's directional table
    assert ("ut1:lan<->dev1:eth0 (OK OK)" in out) or ("dev1:eth0<->ut1:lan (OK OK)" in out)
    assert "<LeoNode ut1 (ut, netns " in out
    assert "*** Results: [" in out and "bits/sec" in out  # Mininet's iperf between dev1 and inet
    assert f"run {run['id']}: state running" in out
    # leaving the CLI left the run as it was: same namespaces, no shell or iperf of ours behind
    assert all(netns.exists(n) for n in run["netns"])
    assert run_processes(run) == before
    st = leo(leo_env, "status", "--run", run["id"], "--format", "json")
    assert json.loads(st.stdout)["state"] == "running"


def test_unknown_run_is_one_line_exit_2(leo_env, run):
    p = cli(leo_env, "nosuchrun")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "nosuchrun" in p.stderr and "Traceback" not in p.stderr


def test_unknown_node_in_a_script_is_one_line_exit_2(leo_env, run):
    before = run_processes(run)
    p = cli(leo_env, run["id"], stdin="nosuchnode ip addr\ndev1 true\n")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "nosuchnode" in p.stderr and "Traceback" not in p.stderr
    assert run_processes(run) == before


def test_without_mnexec_doctor_and_cli_say_how_to_install(leo_env, run, tmp_path):
    bindir = tmp_path / "bin"  # a PATH with ip and bash but no mnexec
    bindir.mkdir()
    for tool in ("ip", "bash"):
        (bindir / tool).symlink_to(requirements.status()[tool])
    env = {**leo_env, "PATH": str(bindir)}
    before = run_processes(run)
    p = cli(env, run["id"], stdin="dev1 true\n")
    assert p.returncode == 69
    assert p.stderr.count("\n") == 1 and "mnexec" in p.stderr
    assert "apt-get install --no-install-recommends mininet" in p.stderr
    assert run_processes(run) == before  # nothing half-started
    d = subprocess.run([sys.executable, "-m", "emu.cli.main", "doctor", "--format", "json"], env=env,
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    mn = json.loads(d.stdout)["mininet"]
    assert mn["mnexec"] is None and "mnexec" in mn["missing"]
    assert "apt-get install --no-install-recommends mininet" in mn["install"]


def test_api_example_starts_and_stops_its_own_run(leo_env, run):
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "mininet_api.py"), str(DEFAULT)], env=leo_env,
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["run"] != run["id"] and result["nodes"] == len(run["netns"])
    assert "1 packets transmitted, 1 received" in p.stdout
    assert result["ping_loss_pct"] == 0
    assert result["iperf_server"].endswith("bits/sec") and result["iperf_client"].endswith("bits/sec")
    assert result["sat0-0-2_static_routes"] > 0
    # stop() = down: that run's record and namespaces are gone, ours is untouched
    assert not (Path(leo_env["LEOEMU_RUN_DIR"]) / result["run"]).exists()
    assert netns.list_names(result["run"] + "-") == []
    assert all(netns.exists(n) for n in run["netns"])
    assert os.path.exists(Path(leo_env["LEOEMU_RUN_DIR"]) / run["id"])
