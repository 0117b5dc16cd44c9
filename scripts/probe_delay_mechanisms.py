#!/usr/bin/env python3
"""Re-run the trials for emulating propagation delay on a kernel without netem.

Prints one JSON object. Each trial runs in a pair of throwaway namespaces
(``nd<pid>-a`` / ``nd<pid>-b`` joined by a veth pair) that are removed
afterwards, also on failure. Root only. Nothing touches the host namespace.

Trials (see README "Propagation delay on kernels without netem"):
  * ``qdisc_kinds``: which qdisc kinds the kernel accepts on a veth root.
  * ``bpf_qdisc``: whether the kernel has BPF-implemented qdiscs (struct_ops
    ``Qdisc_ops``, CONFIG_NET_SCH_BPF, Linux >= 6.16), read from /proc/kallsyms.
  * ``edt_<root>``: a tc clsact egress BPF program stamps every packet with an
    earliest departure time (``__sk_buff->tstamp = now + DELAY``) and the ping
    RTT is measured with the given root qdisc. Only fq and etf honour EDT; the
    trial shows whether anything present here does.
  * ``tbf_idle`` / ``tbf_loaded``: tbf with ``latency DELAY``: ping RTT without
    and with an iperf3 flow (tbf queues by rate; it never holds a lone packet).
  * ``netem``: the reference, where the kernel has it.

A mechanism counts as honest when the idle ping RTT is within 10 % of the
configured one-way delay applied in one direction (RTT = DELAY + forwarding);
the minimum of the pings is compared, since noise only adds to a fixed delay.

spec: issue 14 (last item).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

DELAY_MS = 50.0
PING_COUNT = 10
_P = f"nd{os.getpid()}-"
A, B = _P + "a", _P + "b"
ADDR_A, ADDR_B = "10.99.0.1", "10.99.0.2"

# LLVM IR (LLVM 14 typed pointers) of a tc classifier:
#   skb->tstamp = bpf_ktime_get_ns() + DELAY_NS; return TC_ACT_OK;
# 152 is offsetof(struct __sk_buff, tstamp); helper 5 is bpf_ktime_get_ns.
_EDT_IR = """
target datalayout = "e-m:e-p:64:64-i64:64-i128:128-n32:64-S128"
target triple = "bpf"
@_license = global [4 x i8] c"GPL\\00", section "license"
@llvm.used = appending global [1 x i8*] [i8* getelementptr ([4 x i8], [4 x i8]* @_license, i32 0, i32 0)], section "llvm.metadata"
define i32 @edt(i8* %skb) section "classifier" {
  %f = inttoptr i64 5 to i64 ()*
  %now = call i64 %f()
  %t = add i64 %now, DELAY_NS
  %p = getelementptr i8, i8* %skb, i64 152
  %pt = bitcast i8* %p to i64*
  store i64 %t, i64* %pt, align 8
  ret i32 0
}
"""

QDISC_KINDS = ("netem", "fq", "etf", "taprio", "cake", "fq_codel", "fq_pie", "codel", "pie",
               "sfq", "hfsc", "cbs", "prio", "mqprio", "drr", "qfq", "plug", "skbprio",
               "sfb", "hhf", "multiq", "pfifo", "bfifo", "tbf", "htb")


def _run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def _ns(ns: str, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return _run("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)


def _setup() -> None:
    _run("ip", "netns", "add", A)
    _run("ip", "netns", "add", B)
    _ns(A, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", B)
    _ns(A, "ip", "addr", "add", ADDR_A + "/24", "dev", "v0")
    _ns(B, "ip", "addr", "add", ADDR_B + "/24", "dev", "v1")
    for ns, dev in ((A, "v0"), (B, "v1")):
        _ns(ns, "ip", "link", "set", "lo", "up")
        _ns(ns, "ip", "link", "set", dev, "up")


def _teardown() -> None:
    for ns in (A, B):
        _run("ip", "netns", "del", ns, check=False)


def _ping_ms() -> dict:
    out = _ns(A, "ping", "-c", str(PING_COUNT), "-i", "0.2", "-W", "2", ADDR_B,
              check=False, timeout=60).stdout
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", out)
    loss = re.search(r"(\d+)% packet loss", out)
    if not m:
        return {"rtt_avg_ms": None, "loss_pct": float(loss.group(1)) if loss else 100.0}
    return {"rtt_min_ms": float(m.group(1)), "rtt_avg_ms": float(m.group(2)),
            "rtt_max_ms": float(m.group(3)), "loss_pct": float(loss.group(1))}


def _ping_loaded() -> dict:
    if not shutil.which("iperf3"):
        return {"skipped": "iperf3 not on PATH"}
    srv = subprocess.Popen(["ip", "netns", "exec", B, "iperf3", "-s", "-1", "-B", ADDR_B],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        cli = subprocess.Popen(["ip", "netns", "exec", A, "iperf3", "-c", ADDR_B, "-t", "4", "-J"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1.0)
        res = _ping_ms()
        out, _ = cli.communicate(timeout=30)
        try:
            bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
            res["iperf_mbit_s"] = round(bps / 1e6, 1)
        except (ValueError, KeyError):
            res["iperf_mbit_s"] = None
        return res
    finally:
        srv.kill()
        srv.wait()


def _verdict(res: dict) -> dict:
    # the minimum: a fixed delay is a floor, and scheduling noise (a loaded host, QEMU/TCG) only adds
    rtt = res.get("rtt_min_ms")
    res["honest_within_10pct"] = rtt is not None and abs(rtt - DELAY_MS) <= 0.1 * DELAY_MS
    return res


def qdisc_kinds() -> dict:
    kinds = {}
    for kind in QDISC_KINDS:
        args = {"tbf": ("rate", "1mbit", "burst", "32k", "latency", "50ms")}.get(kind, ())
        r = _ns(A, "tc", "qdisc", "add", "dev", "v0", "root", kind, *args, check=False)
        kinds[kind] = r.returncode == 0 or "unknown" not in r.stderr
        _ns(A, "tc", "qdisc", "del", "dev", "v0", "root", check=False)
    return kinds


def bpf_qdisc() -> dict:
    try:
        with open("/proc/kallsyms") as fh:
            syms = fh.read()
    except OSError as exc:
        return {"present": None, "error": str(exc)}
    return {"present": "bpf_qdisc_init_prologue" in syms or "bpf_qdisc_kfunc" in syms,
            "bpf_skb_set_tstamp": " bpf_skb_set_tstamp" in syms}


def _edt_object(tmp: str) -> str | None:
    llc = shutil.which("llc") or next((p for p in sorted(os.listdir("/usr/bin"))
                                       if p.startswith("llc-")), None)
    if not llc:
        return None
    ir = os.path.join(tmp, "edt.ll")
    obj = os.path.join(tmp, "edt.o")
    with open(ir, "w") as fh:
        fh.write(_EDT_IR.replace("DELAY_NS", str(int(DELAY_MS * 1e6))))
    _run(llc if os.path.isabs(llc) else "/usr/bin/" + llc, "-march=bpf", "-filetype=obj", ir, "-o", obj)
    return obj


def edt(obj: str, root: tuple[str, ...]) -> dict:
    if root:
        r = _ns(A, "tc", "qdisc", "add", "dev", "v0", "root", *root, check=False)
        if r.returncode:
            return {"skipped": r.stderr.strip()}
    _ns(A, "tc", "qdisc", "add", "dev", "v0", "clsact")
    r = _ns(A, "tc", "filter", "add", "dev", "v0", "egress", "bpf", "da", "obj", obj,
            "sec", "classifier", check=False)
    try:
        if r.returncode:
            return {"skipped": "BPF load failed: " + r.stderr.strip()[-300:]}
        shown = _ns(A, "tc", "filter", "show", "dev", "v0", "egress", check=False).stdout
        res = _ping_ms()
        res["filter_attached"] = "direct-action" in shown and "jited" in shown or "edt" in shown
        return _verdict(res)
    finally:
        _ns(A, "tc", "qdisc", "del", "dev", "v0", "clsact", check=False)
        _ns(A, "tc", "qdisc", "del", "dev", "v0", "root", check=False)


def with_root(root: tuple[str, ...], loaded: bool = False) -> dict:
    r = _ns(A, "tc", "qdisc", "add", "dev", "v0", "root", *root, check=False)
    if r.returncode:
        return {"skipped": r.stderr.strip()}
    try:
        return _verdict(_ping_loaded() if loaded else _ping_ms())
    finally:
        _ns(A, "tc", "qdisc", "del", "dev", "v0", "root", check=False)


def main() -> int:
    if os.geteuid() != 0:
        print("probe_delay_mechanisms: needs root (namespaces)", file=sys.stderr)
        return 2
    out: dict = {"kernel": os.uname().release, "delay_ms": DELAY_MS,
                 "criterion": "idle min ping RTT within 10 % of delay_ms (delay on one direction)"}
    try:
        _setup()
        out["baseline"] = _ping_ms()
        out["qdisc_kinds"] = qdisc_kinds()
        out["bpf_qdisc"] = bpf_qdisc()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                obj = _edt_object(tmp)
            except subprocess.CalledProcessError as exc:
                obj, out["edt_compile_error"] = None, exc.stderr[-300:]
            if obj is None:
                out["edt"] = {"skipped": "no llc to compile the BPF program"}
            else:
                for name, root in (("noqueue", ()), ("pfifo", ("pfifo",)),
                                   ("tbf", ("tbf", "rate", "1gbit", "burst", "256k", "latency", "50ms")),
                                   ("htb", ("htb", "default", "1")), ("fq", ("fq",))):
                    out["edt_" + name] = edt(obj, root)
        tbf = ("tbf", "rate", "20mbit", "burst", "4k", "latency", f"{DELAY_MS:g}ms")
        out["tbf_idle"] = with_root(tbf)
        out["tbf_loaded"] = with_root(tbf, loaded=True)
        out["netem"] = with_root(("netem", "delay", f"{DELAY_MS:g}ms"))
    finally:
        _teardown()
    out["honest_mechanisms"] = sorted(k for k, v in out.items()
                                      if isinstance(v, dict) and v.get("honest_within_10pct"))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
