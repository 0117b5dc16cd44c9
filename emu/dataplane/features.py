"""Kernel feature detection: probe, never assume.

``detect()`` tries every kernel feature the data plane may use inside a
throwaway network namespace and reports what worked, which tools are on PATH,
and, in plain words, what the emulator does without the missing ones
(``degradations``). The result is cached per process.

How a probe runs
----------------
A private thread calls ``unshare(CLONE_NEWNET)``: that thread alone moves to a
new, empty namespace. The link, route and qdisc probes are pyroute2
requests (``IPRoute`` over a netlink socket the thread opens there, so it
belongs to that namespace); NAT is probed with one ``nft -f`` process started
from the thread. When the thread ends, the namespace has no user left and
the kernel frees it with everything created inside: nothing is named in
``/run/netns`` and nothing can leak, even after ``kill -9``. The host's own
namespaces are never touched. The whole probe costs tens of milliseconds on
the host and well under two seconds under QEMU/TCG (where modules also
autoload on first use).

Without root (CAP_SYS_ADMIN to create a namespace, CAP_NET_ADMIN inside) the
kernel probes are not run; the report says so instead of guessing.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

# Every kernel feature probed, in report order.
LINK_FEATURES = ("veth", "bridge", "vxlan", "ipip", "gre", "sit", "vrf")
ROUTE_FEATURES = ("ipv6", "multipath", "seg6", "nexthop")
QDISC_FEATURES = ("netem", "tbf", "htb", "fq", "fq_codel", "clsact")
NFT_FEATURES = ("nft_nat", "nft_flowtable", "nft_slice_mark")
FEATURES = LINK_FEATURES + ROUTE_FEATURES + QDISC_FEATURES + NFT_FEATURES

TOOLS = ("ip", "tc", "nft", "ping", "iperf3", "tcpdump")
PYTHON_MODULES = ("scapy", "pyroute2")

VM_CMDLINE_FLAG = "leoemu.vm=1"
VM_ENV = "LEOEMU_VM"

_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21
_CLONE_NEWNET = 0x40000000
_PROBE_TIMEOUT_S = 20.0  # per batch; module autoload under TCG is slow

try:
    from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
except ImportError:  # reported as a degradation; the probes then do not run
    IFA_F_NODAD = 0

# Probe names, all inside the throwaway namespace. TEST-NET addresses only.
_VETH_A, _VETH_B = "lpveth0", "lpveth1"
_IDX_A = 10  # fixed ifindex of _VETH_A, so later probes need no lookup

# (feature or None, what, pyroute2 IPRoute method, positional args, keyword args): a probe
# tagged None is setup whose failure only matters through the features that depend on it.
Probe = tuple[str | None, str, str, tuple, dict]
_LINK_PROBES: tuple[Probe, ...] = (
    (None, "link set lo up", "link", ("set",), {"index": 1, "state": "up"}),
    ("veth", "veth pair", "link", ("add",), {"ifname": _VETH_A, "index": _IDX_A, "kind": "veth", "peer": _VETH_B}),
    ("bridge", "bridge", "link", ("add",), {"ifname": "lpbr0", "kind": "bridge"}),
    ("vxlan", "vxlan", "link", ("add",), {"ifname": "lpvx0", "kind": "vxlan", "vxlan_id": 42, "vxlan_port": 4789,
                                          "vxlan_local": "192.0.2.1"}),
    ("ipip", "ipip", "link", ("add",), {"ifname": "lpipip0", "kind": "ipip", "ipip_local": "192.0.2.1",
                                        "ipip_remote": "192.0.2.2"}),
    ("gre", "gre", "link", ("add",), {"ifname": "lpgre0", "kind": "gre", "gre_local": "192.0.2.1",
                                      "gre_remote": "192.0.2.2"}),
    ("sit", "sit", "link", ("add",), {"ifname": "lpsit0", "kind": "sit", "sit_local": "192.0.2.1",
                                      "sit_remote": "192.0.2.2"}),
    ("vrf", "vrf", "link", ("add",), {"ifname": "lpvrf0", "kind": "vrf", "vrf_table": 100}),
    (None, "address on the veth", "addr", ("add",), {"index": _IDX_A, "address": "192.0.2.1", "prefixlen": 24}),
    (None, "veth up", "link", ("set",), {"index": _IDX_A, "state": "up"}),
    (None, "veth peer up", "link", ("set",), {"ifname": _VETH_B, "state": "up"}),
    ("multipath", "multipath route", "route", ("add",), {
        "dst": "198.51.100.0/24", "multipath": [{"gateway": "192.0.2.2", "oif": _IDX_A},
                                                {"gateway": "192.0.2.3", "oif": _IDX_A}]}),
    ("ipv6", "IPv6 address", "addr", ("add",), {"index": _IDX_A, "address": "2001:db8::1", "prefixlen": 64,
                                                "flags": IFA_F_NODAD}),
    ("seg6", "seg6 encap route", "route", ("add",), {
        "dst": "2001:db8:1::/64", "oif": _IDX_A,
        "encap": {"type": "seg6", "mode": "encap", "segs": "2001:db8::2"}}),
)
# Features whose probe needs another feature's probe to have worked.
_DEPENDS = {"multipath": "veth", "ipv6": "veth", "seg6": "ipv6", "nexthop": "ipv6"}

_DEL_ROOT: tuple = ("tc", ("del",), {"index": 1, "handle": 0, "parent": 0xFFFFFFFF})
_QDISC_PROBES: tuple[Probe, ...] = (
    ("netem", "netem", "tc", ("add", "netem"), {"index": 1, "delay": 1000}),
    (None, "qdisc del", *_DEL_ROOT),
    ("tbf", "tbf", "tc", ("add", "tbf"), {"index": 1, "rate": "1mbit", "burst": 32768, "latency": "50ms"}),
    (None, "qdisc del", *_DEL_ROOT),
    ("htb", "htb", "tc", ("add", "htb"), {"index": 1, "handle": "1:", "default": 0x10}),
    (None, "qdisc del", *_DEL_ROOT),
    ("fq", "fq", "tc", ("add", "fq"), {"index": 1}),
    (None, "qdisc del", *_DEL_ROOT),
    ("fq_codel", "fq_codel", "tc", ("add", "fq_codel"), {"index": 1}),
    (None, "qdisc del", *_DEL_ROOT),
    ("clsact", "clsact", "tc", ("add", "clsact"), {"index": 1}),
    (None, "qdisc del", "tc", ("del", "clsact"), {"index": 1}),
)

_NFT_NAT = (
    "add table ip leoemu_probe\n"
    "add chain ip leoemu_probe post { type nat hook postrouting priority 100 ; }\n"
    "add rule ip leoemu_probe post masquerade\n"
)
# The software fast path for established flows (nf_flow_table): a flowtable and a forward rule that adds to it.
_NFT_FLOWTABLE = (
    "add table ip leoemu_probe_ft\n"
    "add flowtable ip leoemu_probe_ft ft { hook ingress priority 0 ; }\n"
    "add chain ip leoemu_probe_ft fast { type filter hook forward priority 0 ; }\n"
    "add rule ip leoemu_probe_ft fast meta l4proto { tcp, udp } flow add @ft\n"
)

# What the emulator does without a feature, in the words a user reads.
_DEGRADATION = {
    "veth": "veth missing: the data plane cannot be built on this kernel (every link is a veth pair).",
    "bridge": "bridge missing: not used by the data plane; nothing changes.",
    "vxlan": ("vxlan missing: user-terminal tunnels use ipip; the SNO control plane (`mobility`: inter-core "
              "tunnels) and the BGP overlay's IPv6 delivery to users, which need VXLAN, cannot run."),
    "gre": "gre missing: not used by the data plane (tunnels are ipip or VXLAN); nothing changes.",
    "sit": "sit missing: not used by the data plane; nothing changes.",
    "vrf": "vrf missing: not used by the data plane; nothing changes.",
    "ipv6": "IPv6 missing: the data plane cannot be built (next hops are IPv6 link-local addresses).",
    "nexthop": ("nexthop objects missing: each satellite route carries its next hops; tables fill slower "
                "(Starlink shell 1: 1.7 s against 1.15 s) and IPv6 routes take per-CPU memory each; what is "
                "emulated is the same."),
    "multipath": "multipath routes missing: ECMP/UCMP entries cannot be installed (there is no fallback).",
    "seg6": "seg6 missing: not used by the data plane; nothing changes.",
    "netem": ("netem missing: link propagation delays are NOT emulated on this kernel; measured "
              "RTTs show only forwarding cost (`leo-emu path` gives the planned delays). "
              "No other mechanism here holds a packet for a set time: a BPF earliest-departure "
              "stamp (clsact egress, skb->tstamp) is honoured only by fq or etf, both absent, "
              "and ignored by pfifo, tbf and htb (ping RTT unchanged with a 50 ms stamp); tbf "
              "queues by rate, not time (idle RTT unchanged); BPF qdiscs (Linux >= 6.16) are "
              "not built in; a userspace delay would put userspace on the data path. Re-check "
              "with scripts/probe_delay_mechanisms.py. Run `make test-kernel` to check delays "
              "under a stock kernel in QEMU."),
    "tbf": "tbf missing: link rates are not limited.",
    "htb": "htb missing: not used by the data plane (links are shaped with tbf); nothing changes.",
    "fq": "fq missing: not used by the data plane; nothing changes.",
    "fq_codel": "fq_codel missing: not used by the data plane (link queues are tbf's); nothing changes.",
    "clsact": "clsact missing: not used by the data plane; nothing changes.",
    "nft_nat": ("nftables NAT missing: the cores do not masquerade their users; the Internet node routes "
                "the user pools back to the cores instead and sees users' own addresses."),
    "nft_flowtable": ("nftables flowtable (nf_flow_table) missing: the cores' NAT runs conntrack and NAT on every "
                      "packet of an established flow instead of a fast path; what is emulated is the same, "
                      "forwarding through a core costs more CPU."),
    "nft_slice_mark": ("nftables mark switch missing: IPv6 switches slices by policy rules like IPv4; each IPv6 "
                       "rule change walks the namespace's IPv6 tables, so boundaries take longer on large "
                       "constellations; what is emulated is the same."),
}
_TOOL_DEGRADATION = {
    "ip": "`ip` (iproute2) not on PATH: `leo-emu exec`-style commands and address lookups cannot run.",
    "tc": "`tc` not on PATH: qdiscs can still be set (netlink) but not inspected by hand.",
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
    """Every probe, in the calling thread's (fresh) namespace."""
    results: dict[str, tuple[bool, str]] = {}
    try:
        from pyroute2 import IPRoute
    except ImportError:
        results.update({f: (False, "not probed: python module pyroute2 missing")
                        for f in LINK_FEATURES + ROUTE_FEATURES + QDISC_FEATURES})
    else:
        # A socket opened by this thread belongs to its namespace; pyroute2's own netns=
        # option would fork a child to open one, in the namespace of a name we do not have.
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        with IPRoute(use_socket=sock, ext_ack=True) as ipr:
            results.update(run_probes(ipr, _LINK_PROBES))
            results.update(run_probes(ipr, _QDISC_PROBES))
        sock.close()
        from emu.dataplane import nexthops  # pyroute2 0.9 has no nexthop messages: ours, as the applier's

        results["nexthop"] = nexthops.probe(_IDX_A)
        for feat, dep in _DEPENDS.items():
            if not results[dep][0] and not results[feat][0]:
                results[feat] = (False, f"not probed: needs {dep}")
    for feat, batch in (("nft_nat", _NFT_NAT), ("nft_flowtable", _NFT_FLOWTABLE)):
        if tools["nft"]:
            proc = _run([tools["nft"], "-f", "-"], batch)
            results[feat] = (proc.returncode == 0, _nft_error(proc.stderr))
        else:
            results[feat] = (False, "not probed: `nft` not on PATH")
    from emu.dataplane import slicemark  # nfnetlink directly, as the applier does: no `nft` needed

    results["nft_slice_mark"] = slicemark.probe()
    return results


def run_probes(ipr: Any, probes: tuple[Probe, ...]) -> dict[str, tuple[bool, str]]:
    """Send each probe through ``ipr`` (a pyroute2 IPRoute) and attribute each failure to its feature.

    A failure reads like ``Operation not supported (errno 95): Unknown device type``
    (strerror, errno, the kernel's extended-ack text when it gave one).
    """
    results: dict[str, tuple[bool, str]] = {}
    for feat, what, method, args, kwargs in probes:
        try:
            getattr(ipr, method)(*args, **kwargs)
        except Exception as exc:  # NetlinkError, or pyroute2 refusing the request itself
            if feat:
                results[feat] = (False, f"{what}: {_why(exc)}")
        else:
            if feat:
                results[feat] = (True, "")
    return results


def _why(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        text = os.strerror(code)
        extra = exc.args[1] if len(exc.args) > 1 and exc.args[1] != text else ""
        return f"{text} (errno {code}){': ' + str(extra) if extra else ''}"
    return f"{type(exc).__name__}: {exc}"


def _run(argv: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {_PROBE_TIMEOUT_S:.0f} s")
    except OSError as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _nft_error(text: str) -> str:
    """nft's own words: its last ``Error:`` line without the ``/dev/stdin:2:1-9:`` position (the lines after
    it only underline the batch), else the last line."""
    errors = [ln.split("Error:", 1)[1].strip() for ln in text.splitlines() if "Error:" in ln]
    return errors[-1] if errors else _last_line(text)


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
            msg = _DEGRADATION[feat]
            if feat == "netem" and features.get("fq"):
                msg = msg.split(" No other mechanism")[0] + (
                    " fq is present, so a BPF earliest-departure stamp could hold packets, but the "
                    "data plane does not use it. Run `make test-kernel` to check delays under a "
                    "stock kernel in QEMU.")
            out.append(msg)
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
