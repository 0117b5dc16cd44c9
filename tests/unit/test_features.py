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
    probed = {p[0] for p in feat._LINK_PROBES + feat._QDISC_PROBES if p[0]} | set(feat.NFT_FEATURES) | {"nexthop"}
    # nexthop: probed by emu.dataplane.nexthops.probe (pyroute2 0.9 has no nexthop messages)
    assert probed == set(feat.FEATURES)
    assert set(feat._DEGRADATION) == set(feat.FEATURES) - {"ipip"}  # ipip: said with vxlan


class _FakeIPRoute:
    """Answers pyroute2 calls: raises NetlinkError for the kinds listed in ``refuse``."""

    def __init__(self, refuse: dict[str, int]):
        self.refuse = refuse
        self.calls: list[tuple] = []

    def _call(self, method: str, *args, **kwargs):
        from pyroute2.netlink.exceptions import NetlinkError

        self.calls.append((method, args, kwargs))
        kind = kwargs.get("kind") or (args[1] if len(args) > 1 else None)
        if kind in self.refuse:
            raise NetlinkError(self.refuse[kind])
        return ()

    def __getattr__(self, method: str):
        return lambda *a, **kw: self._call(method, *a, **kw)


def test_probe_failures_are_attributed_to_their_features() -> None:
    probes = (("a", "thing a", "link", ("add",), {"kind": "dummy"}),
              (None, "setup", "link", ("set",), {"index": 1, "kind": "setup"}),
              ("b", "thing b", "link", ("add",), {"kind": "vrf"}),
              ("c", "thing c", "tc", ("add", "netem"), {"index": 1}))
    ipr = _FakeIPRoute({"vrf": 95, "setup": 22, "netem": 2})
    result = feat.run_probes(ipr, probes)
    assert result == {"a": (True, ""), "b": (False, "thing b: Operation not supported (errno 95)"),
                      "c": (False, "thing c: No such file or directory (errno 2)")}
    assert [c[0] for c in ipr.calls] == ["link", "link", "link", "tc"]   # setup failure did not stop the rest


def test_a_request_pyroute2_itself_refuses_is_reported_by_name() -> None:
    class Broken:
        def link(self, *a, **kw):
            raise ValueError("bad spec")
    assert feat.run_probes(Broken(), (("a", "thing", "link", ("add",), {}),)) == {
        "a": (False, "thing: ValueError: bad spec")}


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


def test_netem_degradation_says_what_was_tried() -> None:
    """Issue 14: without netem, doctor names each delay mechanism tried and why it fails."""
    present = {f: True for f in feat.FEATURES}
    present["netem"] = present["fq"] = present["fq_codel"] = False
    tools = {t: "/x" for t in feat.TOOLS}
    mods = {"scapy": "2", "pyroute2": "0.9"}
    (netem,) = [ln for ln in feat._degradations("", present, tools, mods) if ln.startswith("netem missing")]
    for word in ("forwarding cost", "skb->tstamp", "etf", "tbf", "BPF qdiscs", "probe_delay_mechanisms"):
        assert word in netem, word
    present["fq"] = True
    (netem,) = [ln for ln in feat._degradations("", present, tools, mods) if ln.startswith("netem missing")]
    assert "fq is present" in netem and "both absent" not in netem and "make test-kernel" in netem


def test_nft_errors_are_reported_in_nfts_own_words() -> None:
    stderr = ("/dev/stdin:2:12-13: Error: Could not process rule: No such file or directory\n"
              "add flowtable ip leoemu_probe_ft ft { hook ingress priority 0 ; }\n           ^^\n")
    assert feat._nft_error(stderr) == "Could not process rule: No such file or directory"
    assert feat._nft_error("nft: command not found\n") == "nft: command not found"
