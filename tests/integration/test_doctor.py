"""``leo-emu doctor`` and feature detection against the real kernel (root)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from emu.cli import doctor_cmds
from emu.cli.common import EmuGroup
from emu.dataplane import features as feat

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

# A CLI with only doctor in it: runs whether or not main.py wires it yet.
_DOCTOR_CLI = """
from emu.cli.common import EmuGroup
from emu.cli import doctor_cmds
cli = EmuGroup("leo-emu")
doctor_cmds.register(cli)
cli(["doctor", "--format", "json"])
"""


def _cli() -> click.Group:
    group = EmuGroup("leo-emu")
    doctor_cmds.register(group)
    return group


def _probe_traces() -> list[str]:
    """Anything on the host that looks like the probe's objects (names it uses).

    Other tests may create and remove namespaces concurrently, so compare only
    what carries the probe's names, not the whole host state.
    """
    def out(*argv: str) -> list[str]:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()
    traces = [ln for ln in out("ip", "netns", "list") if "probe" in ln]
    traces += [ln for ln in out("ip", "-o", "link") if ": lp" in ln]
    traces += [ln for ln in out("nft", "list", "tables") if "leoemu_probe" in ln]
    return traces


@pytest.mark.root
@needs_root
def test_doctor_json_report() -> None:
    result = CliRunner().invoke(_cli(), ["doctor", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert {"root", "kernel", "features", "tools", "degradations", "in_vm"} <= set(doc)
    assert doc["root"] is True and doc["probed"] is True
    assert set(doc["features"]) == set(feat.FEATURES)
    assert all(isinstance(v, bool) for v in doc["features"].values())
    assert doc["tools"] == {t: shutil.which(t) for t in feat.TOOLS}
    assert doc["kernel"] == os.uname().release
    for name, ok in doc["features"].items():
        if not ok:
            assert doc["errors"][name], name


@pytest.mark.root
@needs_root
def test_doctor_table_names_every_feature() -> None:
    result = CliRunner().invoke(_cli(), ["doctor"])
    assert result.exit_code == 0, result.output
    for name in feat.FEATURES:
        assert name in result.output
    report = feat.detect()
    assert ("Degradations" in result.output) == bool(report.degradations)


@pytest.mark.root
@needs_root
def test_probe_is_fast_and_leaves_nothing_behind() -> None:
    report = feat.detect(refresh=True)
    assert _probe_traces() == []
    assert report.probed and report.probe_seconds < 2.0, report.probe_seconds


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("name,command", [
    ("netem", ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]),
    ("ipip", ["ip", "link", "add", "name", "t0", "type", "ipip", "remote", "192.0.2.2"]),
    ("vrf", ["ip", "link", "add", "name", "vrf0", "type", "vrf", "table", "10"]),
])
def test_probe_agrees_with_a_direct_attempt(name: str, command: list[str]) -> None:
    netns = f"leoemu-doc-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        direct = subprocess.run(["ip", "netns", "exec", netns, *command],
                                capture_output=True, text=True, check=False)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    assert feat.detect().features[name] == (direct.returncode == 0), direct.stderr


@pytest.mark.root
@needs_root
def test_doctor_without_capabilities_reports_instead_of_failing() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not on PATH")
    proc = subprocess.run(
        [setpriv, "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", _DOCTOR_CLI],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["probed"] is False and doc["cap_net_admin"] is False
    assert not any(doc["features"].values())
    assert "NOT probed" in doc["degradations"][0]
