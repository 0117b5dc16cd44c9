"""Kernel feature detection: probe, never assume.

``detect()`` tries every kernel feature the data plane may use inside a
throwaway network namespace and reports what worked, which tools are on PATH,
and, in plain words, what the emulator does without the missing ones
(``degradations``). The result is cached per process.

How a probe runs
----------------
A private thread calls ``unshare(CLONE_NEWNET)``: that thread alone moves to a
new, empty namespace, and the commands it starts (``ip -batch``, ``tc -batch``,
``nft -f``) run there. When the thread ends, the namespace has no user left
and the kernel frees it with everything created inside: nothing is named in
``/run/netns`` and nothing can leak, even after ``kill -9``. The host's own
namespaces are never touched. Three processes in all (one per tool family),
so the whole probe costs tens of milliseconds on the host and well under two
seconds under QEMU/TCG (where modules also autoload on first use).

Without root (CAP_SYS_ADMIN to create a namespace, CAP_NET_ADMIN inside) the
kernel probes are not run; the report says so instead of guessing.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

# Every kernel feature probed, in report order.
LINK_FEATURES = ("veth", "bridge", "vxlan", "ipip", "gre", "sit", "vrf")
ROUTE_FEATURES = ("ipv6", "multipath", "seg6")
QDISC_FEATURES = ("netem", "tbf", "htb", "fq", "fq_codel", "clsact")
NFT_FEATURES = ("nft_nat",)
FEATURES = LINK_FEATURES + ROUTE_FEATURES + QDISC_FEATURES + NFT_FEATURES

TOOLS = ("ip", "tc", "nft", "ping", "iperf3", "tcpdump")
PYTHON_MODULES = ("scapy", "pyroute2")

VM_CMDLINE_FLAG = "leoemu.vm=1"
VM_ENV = "LEOEMU_VM"

_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21
_CLONE_NEWNET = 0x40000000
_PROBE_TIMEOUT_S = 20.0  # per batch; module autoload under TCG is slow

# Probe names, all inside the throwaway namespace. TEST-NET addresses only.
_VETH_A, _VETH_B = "lpveth0", "lpveth1"

# (feature or None, command line): a line tagged None is setup whose failure
# only matters through the features that depend on it.
_IP_BATCH: tuple[tuple[str | None, str], ...] = (
    (None, "link set lo up"),
    ("veth", f"link add name {_VETH_A} type veth peer name {_VETH_B}"),
    ("bridge", "link add name lpbr0 type bridge"),
    ("vxlan", "link add name lpvx0 type vxlan id 42 dstport 4789 local 192.0.2.1"),
    ("ipip", "link add name lpipip0 type ipip local 192.0.2.1 remote 192.0.2.2"),
    ("gre", "link add name lpgre0 type gre local 192.0.2.1 remote 192.0.2.2"),
    ("sit", "link add name lpsit0 type sit local 192.0.2.1 remote 192.0.2.2"),
    ("vrf", "link add name lpvrf0 type vrf table 100"),
    (None, f"addr add 192.0.2.1/24 dev {_VETH_A}"),
    (None, f"link set {_VETH_A} up"),
    (None, f"link set {_VETH_B} up"),
    ("multipath", f"route add 198.51.100.0/24 nexthop via 192.0.2.2 dev {_VETH_A} "
                  f"nexthop via 192.0.2.3 dev {_VETH_A}"),
    ("ipv6", f"addr add 2001:db8::1/64 dev {_VETH_A} nodad"),
    ("seg6", f"route add 2001:db8:1::/64 encap seg6 mode encap segs 2001:db8::2 dev {_VETH_A}"),
)
# Features whose probe line needs another feature's line to have worked.
_DEPENDS = {"multipath": "veth", "ipv6": "veth", "seg6": "ipv6"}

_TC_BATCH: tuple[tuple[str | None, str], ...] = (
    ("netem", "qdisc add dev lo root netem delay 1ms"),
    (None, "qdisc del dev lo root"),
    ("tbf", "qdisc add dev lo root tbf rate 1mbit burst 32kb latency 50ms"),
    (None, "qdisc del dev lo root"),
    ("htb", "qdisc add dev lo root handle 1: htb default 10"),
    (None, "qdisc del dev lo root"),
    ("fq", "qdisc add dev lo root fq"),
    (None, "qdisc del dev lo root"),
    ("fq_codel", "qdisc add dev lo root fq_codel"),
    (None, "qdisc del dev lo root"),
    ("clsact", "qdisc add dev lo clsact"),
    (None, "qdisc del dev lo clsact"),
)

_NFT_NAT = (
    "add table ip leoemu_probe\n"
    "add chain ip leoemu_probe post { type nat hook postrouting priority 100 ; }\n"
    "add rule ip leoemu_probe post masquerade\n"
)

# What the emulator does without a feature, in the words a user reads.
_DEGRADATION = {
    "veth": "veth missing: the data plane cannot be built on this kernel (every link is a veth pair).",
    "bridge": "bridge missing: not used by the data plane; nothing changes.",
    "vxlan": "vxlan missing: VXLAN tunnels are unavailable.",
    "gre": "gre missing: not used by the data plane (tunnels are ipip or VXLAN); nothing changes.",
    "sit": "sit missing: not used by the data plane; nothing changes.",
    "vrf": "vrf missing: not used by the data plane; nothing changes.",
    "ipv6": "IPv6 missing: the data plane cannot be built (next hops are IPv6 link-local addresses).",
    "multipath": "multipath routes missing: ECMP/UCMP entries cannot be installed (there is no fallback).",
    "seg6": "seg6 missing: not used by the data plane; nothing changes.",
    "netem": ("netem missing: link propagation delays are NOT emulated on this kernel; measured "
              "RTTs show only forwarding cost. Run `make test-kernel` to check delays under a "
              "stock kernel in QEMU."),
    "tbf": "tbf missing: link rates are not limited.",
    "htb": "htb missing: not used by the data plane (links are shaped with tbf); nothing changes.",
    "fq": "fq missing: not used by the data plane; nothing changes.",
    "fq_codel": "fq_codel missing: not used by the data plane (link queues are tbf's); nothing changes.",
    "clsact": "clsact missing: not used by the data plane; nothing changes.",
    "nft_nat": "nftables NAT missing: GS/PoP border gateways cannot translate addresses.",
}
_TOOL_DEGRADATION = {
    "ip": "`ip` (iproute2) not on PATH: kernel probes and namespace commands cannot run.",
    "tc": "`tc` not on PATH: qdisc probes cannot run and link shaping is unavailable.",
    "nft": "`nft` not on PATH: NAT cannot be configured.",
    "ping": "`ping` not on PATH: RTT experiments are unavailable.",
    "iperf3": "`iperf3` not on PATH: throughput experiments are unavailable.",
    "tcpdump": "`tcpdump` not on PATH: packet captures are unavailable.",
    "scapy": "python module scapy missing: packet crafting and injection probes are unavailable.",
    "pyroute2": "python module pyroute2 missing: the data plane cannot talk netlink.",
}


@dataclass(frozen=True)
class Features:
    """What this kernel and machine can do, as probed once."""

    root: bool
    cap_net_admin: bool
    kernel: str
    in_vm: bool
    probed: bool  # False: the kernel probes could not run (see ``errors``)
    features: Mapping[str, bool]
    errors: Mapping[str, str]  # feature -> why it is missing / was not probed
    tools: Mapping[str, str | None]  # tool -> path on PATH or None
    python_modules: Mapping[str, str | None]  # module -> version or None
    degradations: tuple[str, ...]
    probe_seconds: float = field(default=0.0, compare=False)

    def has(self, name: str) -> bool:
        """True when ``name`` (a feature, tool or python module) is present."""
        if name in self.features:
            return self.features[name]
        if name in self.tools:
            return self.tools[name] is not None
        if name in self.python_modules:
            return self.python_modules[name] is not None
        raise KeyError(f"unknown feature {name!r}")

    def missing(self, *names: str) -> list[str]:
        """The subset of ``names`` that is not present, in order."""
        return [n for n in names if not self.has(n)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "cap_net_admin": self.cap_net_admin,
            "kernel": self.kernel,
            "in_vm": self.in_vm,
            "probed": self.probed,
            "features": dict(self.features),
            "errors": dict(self.errors),
            "tools": dict(self.tools),
            "python_modules": dict(self.python_modules),
            "degradations": list(self.degradations),
            "probe_seconds": round(self.probe_seconds, 4),
        }


_cache: Features | None = None
_cache_lock = threading.Lock()


def detect(refresh: bool = False) -> Features:
    """Probe this machine once per process (``refresh=True`` probes again)."""
    global _cache
    with _cache_lock:
        if _cache is None or refresh:
            _cache = _detect()
        return _cache


def in_vm() -> bool:
    """True inside the QEMU stock-kernel tier (kernel cmdline flag or env var)."""
    if os.environ.get(VM_ENV) == "1":
        return True
    try:
        with open("/proc/cmdline", encoding="ascii", errors="replace") as fh:
            return VM_CMDLINE_FLAG in fh.read().split()
    except OSError:
        return False


def _effective_caps() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def _detect() -> Features:
    started = time.perf_counter()
    caps = _effective_caps()
    root = os.geteuid() == 0
    cap_net_admin = bool(caps >> _CAP_NET_ADMIN & 1)
    can_unshare = bool(caps >> _CAP_SYS_ADMIN & 1)
    tools = {t: shutil.which(t) for t in TOOLS}
    modules = {m: _module_version(m) for m in PYTHON_MODULES}

    features = {f: False for f in FEATURES}
    errors: dict[str, str] = {}
    probed = False
    if not (cap_net_admin and can_unshare):
        for f in FEATURES:
            errors[f] = "not probed: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    else:
        try:
            results = _run_in_fresh_netns(lambda: _probe_all(tools))
            probed = True
        except OSError as exc:
            results = {f: (False, f"not probed: cannot create a namespace: {exc}") for f in FEATURES}
        for f, (ok, err) in results.items():
            features[f] = ok
            if not ok:
                errors[f] = err or "failed"

    if probed:
        not_probed_reason = ""
    elif not root:
        not_probed_reason = "not root"
    elif not (cap_net_admin and can_unshare):
        not_probed_reason = "no CAP_NET_ADMIN/CAP_SYS_ADMIN"
    else:
        not_probed_reason = "namespace creation failed"
    degradations = _degradations(not_probed_reason, features, tools, modules)
    return Features(
        root=root,
        cap_net_admin=cap_net_admin,
        kernel=platform.release(),
        in_vm=in_vm(),
        probed=probed,
        features=MappingProxyType(features),
        errors=MappingProxyType(errors),
        tools=MappingProxyType(tools),
        python_modules=MappingProxyType(modules),
        degradations=tuple(degradations),
        probe_seconds=time.perf_counter() - started,
    )


def _module_version(name: str) -> str | None:
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _run_in_fresh_netns(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a private thread moved to a new, empty network namespace.

    The namespace lives as long as that thread (and the processes it starts):
    it is gone when this returns, whatever ``fn`` did.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(_CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="leoemu-feature-probe", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _probe_all(tools: Mapping[str, str | None]) -> dict[str, tuple[bool, str]]:
    results: dict[str, tuple[bool, str]] = {}
    if tools["ip"]:
        results.update(_run_batch([tools["ip"], "-force", "-batch", "-"], _IP_BATCH))
        for feat, dep in _DEPENDS.items():
            if not results[dep][0] and not results[feat][0]:
                results[feat] = (False, f"not probed: needs {dep}")
    else:
        results.update({f: (False, "not probed: `ip` not on PATH") for f in LINK_FEATURES + ROUTE_FEATURES})
    if tools["tc"] and tools["ip"]:
        results.update(_run_batch([tools["tc"], "-force", "-batch", "-"], _TC_BATCH))
    else:
        results.update({f: (False, "not probed: `tc` not on PATH") for f in QDISC_FEATURES})
    if tools["nft"]:
        proc = _run([tools["nft"], "-f", "-"], _NFT_NAT)
        results["nft_nat"] = (proc.returncode == 0, _last_line(proc.stderr))
    else:
        results["nft_nat"] = (False, "not probed: `nft` not on PATH")
    return results


def _run(argv: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {_PROBE_TIMEOUT_S:.0f} s")
    except OSError as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


_FAILED = re.compile(r"^Command failed -:(\d+)\s*$")


def _run_batch(argv: list[str], lines: tuple[tuple[str | None, str], ...]) -> dict[str, tuple[bool, str]]:
    """Run an iproute2 ``-force -batch -`` and attribute each failure to its line.

    iproute2 prints the kernel's message, then ``Command failed -:N`` for line N.
    """
    proc = _run(argv, "".join(cmd + "\n" for _, cmd in lines))
    failed: dict[int, str] = {}
    pending: list[str] = []
    for raw in proc.stderr.splitlines():
        m = _FAILED.match(raw.strip())
        if m:
            failed[int(m.group(1))] = "; ".join(pending) or "failed"
            pending = []
        elif raw.strip():
            pending.append(raw.strip())
    results: dict[str, tuple[bool, str]] = {}
    if proc.returncode != 0 and not failed:
        # The tool itself failed (timeout, crash, not executable): nothing is known.
        why = _last_line(proc.stderr) or f"exit {proc.returncode}"
        return {feat: (False, f"not probed: {why}") for feat, _ in lines if feat}
    for lineno, (feat, _cmd) in enumerate(lines, start=1):
        if feat is None:
            continue
        err = failed.get(lineno)
        results[feat] = (err is None, err or "")
    return results


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _degradations(not_probed_reason: str, features: Mapping[str, bool],
                  tools: Mapping[str, str | None], modules: Mapping[str, str | None]) -> list[str]:
    out: list[str] = []
    if not_probed_reason:
        out.append(f"{not_probed_reason}: kernel features were NOT probed, so none is known to "
                   "work; run `sudo leo-emu doctor` for the full report.")
    else:
        if not features["ipip"]:
            if features["vxlan"]:
                out.append("ipip missing: user-terminal tunnels use VXLAN.")
            else:
                out.append("ipip and vxlan missing: user-terminal tunnels cannot be built on this kernel.")
        for feat in FEATURES:
            if feat == "ipip" or features[feat]:
                continue
            if feat == "vxlan" and not features["ipip"]:
                continue  # said together with ipip above
            if feat in ("gre", "sit") and not features["ipip"]:
                msg = _DEGRADATION[feat].replace("ipip or VXLAN", "VXLAN here")
                out.append(msg)
                continue
            out.append(_DEGRADATION[feat])
    for tool, path in tools.items():
        if path is None:
            out.append(_TOOL_DEGRADATION[tool])
    for mod, version in modules.items():
        if version is None:
            out.append(_TOOL_DEGRADATION[mod])
    return out


def main() -> None:  # pragma: no cover - debugging aid: python -m emu.dataplane.features
    import json

    print(json.dumps(detect().to_dict(), indent=2, sort_keys=True))


if __name__ == "__main__":  # pragma: no cover
    main()
