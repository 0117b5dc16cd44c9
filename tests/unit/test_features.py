"""Feature detection logic without a kernel: batch parsing, degradations, caching."""

from __future__ import annotations

import json
import subprocess

import pytest

from emu.dataplane import features as feat


def _fake_run(stderr: str, returncode: int = 1):
    def run(argv, stdin):
        return subprocess.CompletedProcess(argv, returncode, "", stderr)
    return run


def _report(**overrides: object) -> feat.Features:
    fields: dict[str, object] = dict(
        root=True, cap_net_admin=True, kernel="6.1.0-test", in_vm=False, probed=True,
        features={f: True for f in feat.FEATURES}, errors={},
        tools={t: f"/usr/bin/{t}" for t in feat.TOOLS},
        python_modules={m: "1.0" for m in feat.PYTHON_MODULES}, degradations=(),
    )
    fields.update(overrides)
    return feat.Features(**fields)  # type: ignore[arg-type]


def test_every_feature_has_a_probe() -> None:
    probed = {f for f, _ in feat._IP_BATCH + feat._TC_BATCH if f} | set(feat.NFT_FEATURES)
    assert probed == set(feat.FEATURES)
    assert set(feat._DEGRADATION) == set(feat.FEATURES) - {"ipip"}  # ipip: said with vxlan


def test_batch_failures_are_attributed_to_their_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (("a", "x"), (None, "setup"), ("b", "y"), ("c", "z"))
    stderr = ("Error: Unknown device type.\nCommand failed -:3\n"
              "Error: Cannot delete qdisc with handle of zero.\nCommand failed -:2\n")
    monkeypatch.setattr(feat, "_run", _fake_run(stderr))
    result = feat._run_batch(["ip", "-force", "-batch", "-"], lines)
    assert result == {"a": (True, ""), "b": (False, "Error: Unknown device type."), "c": (True, "")}


def test_a_batch_that_never_ran_marks_features_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feat, "_run", _fake_run("timed out after 20 s", returncode=124))
    result = feat._run_batch(["tc"], (("netem", "q"), (None, "d"), ("tbf", "q")))
    assert set(result) == {"netem", "tbf"}
    assert all(not ok and err.startswith("not probed: timed out") for ok, err in result.values())


def test_degradations_on_the_development_kernel() -> None:
    present = {f: True for f in feat.FEATURES}
    for missing in ("ipip", "gre", "sit", "vrf", "netem", "fq", "fq_codel"):
        present[missing] = False
    tools = {t: "/x" for t in feat.TOOLS}
    lines = feat._degradations("", present, tools, {"scapy": "2", "pyroute2": "0.9"})
    assert lines[0] == "ipip missing: user-terminal tunnels use VXLAN."
    netem = [ln for ln in lines if ln.startswith("netem missing")]
    assert len(netem) == 1 and "NOT emulated" in netem[0] and "make test-kernel" in netem[0]
    assert len(lines) == 7


def test_degradations_when_vxlan_is_missing_too() -> None:
    present = {f: True for f in feat.FEATURES}
    present["ipip"] = present["vxlan"] = False
    lines = feat._degradations("", present, {t: "/x" for t in feat.TOOLS}, {"scapy": "2", "pyroute2": "1"})
    assert lines == ["ipip and vxlan missing: user-terminal tunnels cannot be built on this kernel."]


def test_missing_tools_and_modules_are_reported() -> None:
    tools = {t: "/x" for t in feat.TOOLS} | {"iperf3": None}
    lines = feat._degradations("", {f: True for f in feat.FEATURES}, tools, {"scapy": None, "pyroute2": "1"})
    assert any("iperf3" in ln for ln in lines) and any("scapy" in ln for ln in lines)


def test_without_privileges_nothing_is_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feat.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(feat, "_effective_caps", lambda: 0)

    def no_namespace(fn):  # pragma: no cover - must not be reached
        raise AssertionError("a probe ran without privileges")

    monkeypatch.setattr(feat, "_run_in_fresh_netns", no_namespace)
    report = feat._detect()
    assert not report.root and not report.probed
    assert not any(report.features.values())
    assert all(e.startswith("not probed") for e in report.errors.values())
    assert report.degradations[0].startswith("not root: kernel features were NOT probed")


def test_in_vm_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(feat.VM_ENV, "1")
    assert feat.in_vm()


def test_report_queries_and_json() -> None:
    report = _report(features={f: f != "netem" for f in feat.FEATURES},
                     tools={t: None if t == "iperf3" else "/x" for t in feat.TOOLS})
    assert report.has("veth") and not report.has("netem") and not report.has("iperf3")
    assert report.missing("veth", "netem", "iperf3", "scapy") == ["netem", "iperf3"]
    with pytest.raises(KeyError):
        report.has("warp-drive")
    doc = json.loads(json.dumps(report.to_dict()))
    assert {"root", "kernel", "features", "tools", "degradations", "in_vm"} <= set(doc)


def test_detect_is_cached_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(feat, "_cache", None)
    monkeypatch.setattr(feat, "_detect", lambda: calls.append(1) or _report())
    first = feat.detect()
    assert feat.detect() is first and len(calls) == 1
    assert feat.detect(refresh=True) is not first and len(calls) == 2
