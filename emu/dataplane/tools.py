"""Measure a running constellation with ordinary tools: a node's namespace, ping, iperf3.

Three parts, kept apart so the parsers stay pure and unit-testable:

- :class:`RunView`: what a run is (``run.json``) and where it is now
  (``status.json``): node -> namespace, node -> address. A satellite's
  address is the GRC it binds in the *current* slice (interface 0), read
  from the plan, never recomputed.
- Processes in a namespace: the namespace is entered in the *child* only
  (``setns`` between fork and exec), the CLI process never leaves its own;
  argv lists only, never a shell.
- :func:`parse_ping` / :func:`parse_iperf3`: text (or JSON) in, numbers out.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from emu.dataplane import netns
from emu.dataplane.state import Run, proc_starttime
from emu.errors import DataplaneError, InputError

CLONE_NEWNET = 0x40000000
IPERF_PORT = 5201
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


# ============================================================================ the run
@dataclass(frozen=True)
class Target:
    """Where a probe goes: ``node`` (run.json entry) if the address belongs to one, and the address."""

    node: dict | None
    addr: str

    @property
    def name(self) -> str | None:
        return self.node["name"] if self.node else None


class RunView:
    """Read-only view of one run's records: nodes, namespaces, current slice, addresses."""

    def __init__(self, run: Run):
        self.run = run
        self.info = run.read_json("run.json")
        if not self.info.get("nodes"):
            raise DataplaneError("read run.json", None, None,
                                 f"run {run.run_id} has no node list yet (still building? see `leo-emu status`)")
        self.nodes: list[dict] = self.info["nodes"]
        self.by_name = {n["name"]: n for n in self.nodes}
        self.by_netns = {n["netns"]: n for n in self.nodes}
        self._db = None

    def status(self) -> dict:
        return self.run.read_json("status.json")

    def current_slice(self) -> int:
        k = self.status().get("slice")
        return int(k) if isinstance(k, int) else 0

    def node(self, name: str) -> dict:
        """A node by name (or by its namespace name); InputError (exit 2) if the run has none."""
        if name in self.by_name:
            return self.by_name[name]
        if name in self.by_netns:
            return self.by_netns[name]
        kinds = sorted({n["kind"] for n in self.nodes})
        examples = ", ".join(next(n["name"] for n in self.nodes if n["kind"] == k) for k in kinds)
        raise InputError(f"node: no such node in run {self.run.run_id} (got {name!r}); e.g. {examples}")

    def netns_of(self, name: str) -> str:
        return self.node(name)["netns"]

    @property
    def db(self):
        if self._db is None:
            from emu.plan.db import PlanDB

            self._db = PlanDB(self.info["plan"])
        return self._db

    def address_of(self, name: str, k: int | None = None) -> str:
        """The IPv4 address a probe toward node ``name`` should use (satellite: its slice-``k`` GRC)."""
        node = self.node(name)
        kind = node["kind"]
        if kind == "dev" and node.get("addr"):
            return node["addr"]
        if kind == "inet":
            return node.get("addr") or self.info["inet_addr"]
        if kind in ("ut", "gs") and node.get("grc"):
            return node["grc"]
        if kind == "satellite":
            from emu.addressing.grc import to_ipv4

            k = self.current_slice() if k is None else k
            return to_ipv4(int(self.db.bound_grc(k)[int(node["index"])]))  # interface 0 = the bound GRC itself
        addr = first_global_ipv4(node["netns"])
        if addr is None:
            raise InputError(f"node: {name} has no address to aim at (got {name!r}); give an IP address instead")
        return addr

    def node_by_addr(self, addr: str) -> dict | None:
        for n in self.nodes:
            if addr in (n.get("addr"), n.get("grc")):
                return n
        if addr == self.info.get("inet_addr"):
            return self.by_name.get(self.info.get("inet", "inet"))
        return None

    def target(self, text: str, k: int | None = None) -> Target:
        """A node name or a literal IPv4/IPv6 address."""
        try:
            addr = str(ipaddress.ip_address(text))
        except ValueError:
            return Target(self.node(text), self.address_of(text, k))
        return Target(self.node_by_addr(addr), addr)

    def controller_alive(self) -> bool:
        pid = self.status().get("controller_pid")
        return pid_alive(self.run, pid)


def pid_alive(run: Run, pid) -> bool:
    """True if ``pid`` runs and, if the run's journal recorded its start time, is still that process."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    now = proc_starttime(pid)
    if now is None:
        return False
    _names, pids = run.journal()
    recorded = [start for p, start, _what in pids if p == pid and start != "-"]
    return not recorded or now in recorded


def first_global_ipv4(netns_name: str) -> str | None:
    """A node's first global IPv4 address (loopback-held first, 127/8 never): for nodes run.json gives none."""
    p = run_in(netns_name, ["ip", "-j", "-4", "addr", "show"], timeout_s=10)
    if p.returncode != 0:
        return None
    return pick_global_ipv4(p.stdout)


def pick_global_ipv4(ip_json: str) -> str | None:
    """From ``ip -j -4 addr show`` output, the address to aim at: on ``lo`` first, then the rest."""
    try:
        links = json.loads(ip_json or "[]")
    except ValueError:
        return None
    found: list[tuple[int, str]] = []
    for link in links:
        for a in link.get("addr_info", []):
            local = a.get("local")
            if not local or a.get("family") != "inet" or a.get("scope", "global") != "global":
                continue
            if ipaddress.ip_address(local).is_loopback:
                continue
            found.append((0 if link.get("ifname") == "lo" else 1, local))
    return min(found)[1] if found else None


# ============================================================================ processes in a namespace
class CommandNotFound(DataplaneError):
    """The program to run inside a namespace is not installed: exit code 127, as a shell says it."""

    exit_code = 127


def _enter(netns_name: str):
    """A ``preexec_fn`` that moves the *child* into the namespace (runs between fork and exec)."""
    path = netns.path(netns_name).encode()

    def pre() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {netns_name}: {os.strerror(err)}")
        finally:
            os.close(fd)

    return pre


def _check_netns(netns_name: str) -> None:
    if not netns.exists(netns_name):
        raise DataplaneError("enter netns", netns_name, None, "the namespace does not exist (is the run up?)")


def popen_in(netns_name: str, argv: list[str], **kw) -> subprocess.Popen:
    """``subprocess.Popen`` of ``argv`` inside a namespace, entered by the child only."""
    _check_netns(netns_name)
    try:
        return subprocess.Popen(list(argv), preexec_fn=_enter(netns_name), **kw)
    except FileNotFoundError as exc:
        raise CommandNotFound(f"run {argv[0]}", netns_name, exc.errno, f"{argv[0]}: command not found") from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataplaneError(f"run {argv[0]}", netns_name, getattr(exc, "errno", None), str(exc)) from None


def run_in(netns_name: str, argv: list[str], timeout_s: float = 60.0, stdin: str | None = None
           ) -> subprocess.CompletedProcess:
    """Run ``argv`` inside a namespace and capture its output (text); a timeout kills it and raises."""
    p = popen_in(netns_name, argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop(p)
        raise DataplaneError(f"run {argv[0]}", netns_name, None, f"no result within {timeout_s:.0f} s") from None
    except BaseException:
        _stop(p)
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def exec_in(netns_name: str, argv: list[str]) -> int:
    """Run ``argv`` inside a namespace with the caller's stdin/stdout/stderr; return its exit code.

    The child stays in the terminal's process group, so Ctrl-C reaches it;
    meanwhile this process ignores SIGINT/SIGQUIT and forwards SIGTERM/SIGHUP,
    and reports the child's status as a shell would (128 + signal).
    """
    p = popen_in(netns_name, argv)
    forwarded = {s: signal.signal(s, lambda signum, _f: p.send_signal(signum)) for s in (signal.SIGTERM, signal.SIGHUP)}
    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        rc = p.wait()
    finally:
        for s, h in {**forwarded, **ignored}.items():
            signal.signal(s, h)
    return 128 - rc if rc < 0 else rc


def _stop(p: subprocess.Popen, grace_s: float = 2.0) -> None:
    """Terminate, then kill, and always reap."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()


# ============================================================================ ping
_RE_REPLY = re.compile(r"^(?:\[(?P<at>\d+(?:\.\d+)?)\]\s+)?(?P<bytes>\d+) bytes from (?P<src>.+?): "
                       r"icmp_[rs]eq=(?P<seq>\d+)(?: ttl=(?P<ttl>\d+))?(?: time[=<](?P<rtt>[\d.]+) ?ms)?"
                       r"(?P<dup> \(DUP!\))?")
_RE_NOANSWER = re.compile(r"^(?:\[(?P<at>\d+(?:\.\d+)?)\]\s+)?no answer yet for icmp_seq=(?P<seq>\d+)")
_RE_ICMPERR = re.compile(r"^(?:\[(?P<at>\d+(?:\.\d+)?)\]\s+)?From (?P<src>\S+)(?: \([^)]*\))?:? "
                         r"icmp_seq=(?P<seq>\d+) (?P<msg>.+)$")
_RE_TX = re.compile(r"(?P<tx>\d+) packets transmitted, (?P<rx>\d+) (?:packets )?received")
_RE_LOSS = re.compile(r"(?P<loss>[\d.]+)% packet loss")
_RE_PLUS = re.compile(r"\+(?P<n>\d+) (?P<what>duplicates|errors|corrupted)")
_RE_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/(?:mdev|stddev))? = "
                     r"(?P<min>[\d.]+)/(?P<avg>[\d.]+)/(?P<max>[\d.]+)(?:/(?P<mdev>[\d.]+))? ms")
_RE_FATAL = re.compile(r"^ping6?: (?P<msg>.+)$")


def ping_argv(addr: str, count: int, interval_s: float, wait_s: float = 1.0) -> list[str]:
    """iputils ping: numeric, one line per reply *and* per unanswered probe (-O), unix timestamps (-D).

    ``-w`` bounds the whole run: count x interval plus one reply wait and a second of slack.
    """
    deadline = max(1, int(count * interval_s + wait_s + 1.999))
    return ["ping", "-n", "-O", "-D", "-c", str(count), "-i", f"{interval_s:g}", "-W", f"{wait_s:g}",
            "-w", str(deadline), addr]


def parse_ping(text: str) -> dict:
    """Numbers from iputils ping output (with or without -O/-D); tolerant of a missing summary.

    ``rtts_ms`` lists each first reply's RTT in arrival order (duplicates are
    counted apart). Without a statistics block (ping killed, or it failed
    before sending: ``error`` says why) the numbers come from the per-line output.
    """
    replies: list[dict] = []
    seen: set[int] = set()
    unanswered: list[int] = []
    icmp_errors: list[dict] = []
    messages: list[str] = []
    duplicates_seen = 0
    tx = rx = None
    loss = None
    plus = {"duplicates": 0, "errors": 0, "corrupted": 0}
    rtt = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _RE_REPLY.match(line):
            seq = int(m["seq"])
            if m["dup"] or seq in seen:
                duplicates_seen += 1
                continue
            seen.add(seq)
            replies.append({"seq": seq, "ttl": int(m["ttl"]) if m["ttl"] else None,
                            "rtt_ms": float(m["rtt"]) if m["rtt"] else None,
                            "at": float(m["at"]) if m["at"] else None, "from": m["src"]})
        elif m := _RE_NOANSWER.match(line):
            unanswered.append(int(m["seq"]))
        elif m := _RE_ICMPERR.match(line):
            icmp_errors.append({"seq": int(m["seq"]), "from": m["src"], "message": m["msg"].strip(),
                                "at": float(m["at"]) if m["at"] else None})
        elif m := _RE_FATAL.match(line):
            messages.append(m["msg"].strip())
        else:
            if m := _RE_TX.search(line):
                tx, rx = int(m["tx"]), int(m["rx"])
                for p in _RE_PLUS.finditer(line):
                    plus[p["what"]] = int(p["n"])
                if lm := _RE_LOSS.search(line):
                    loss = float(lm["loss"])
            elif m := _RE_RTT.search(line):
                rtt = {k: float(v) if v is not None else None for k, v in m.groupdict().items()}
    rtts = [r["rtt_ms"] for r in replies if r["rtt_ms"] is not None]
    summary = tx is not None
    if not summary:  # no statistics block: count from the lines
        seqs = [r["seq"] for r in replies] + unanswered + [e["seq"] for e in icmp_errors]
        tx = max(seqs) if seqs else 0
        rx = len(replies)
        plus["duplicates"] = duplicates_seen
        plus["errors"] = len({e["seq"] for e in icmp_errors})
    if loss is None:
        loss = round(100.0 * (tx - rx) / tx, 3) if tx else 100.0
    if rtt is None and rtts:
        rtt = {"min": min(rtts), "avg": round(sum(rtts) / len(rtts), 3), "max": max(rtts), "mdev": None}
    rtt = rtt or {"min": None, "avg": None, "max": None, "mdev": None}
    return {
        "transmitted": tx, "received": rx, "loss_pct": loss,
        "duplicates": plus["duplicates"], "errors": plus["errors"],
        "rtt_min_ms": rtt["min"], "rtt_avg_ms": rtt["avg"], "rtt_max_ms": rtt["max"], "rtt_mdev_ms": rtt["mdev"],
        "rtts_ms": rtts, "replies": replies, "unanswered_seqs": sorted(set(unanswered) - seen),
        "icmp_errors": icmp_errors, "messages": messages, "summary": summary,
        "error": None if summary else ("; ".join(messages) or "ping printed no statistics"),
    }


# ============================================================================ iperf3
def iperf_client_argv(addr: str, port: int, seconds: float, parallel: int, reverse: bool) -> list[str]:
    argv = ["iperf3", "-c", addr, "-p", str(port), "-J", "-t", f"{seconds:g}", "-P", str(parallel),
            "--connect-timeout", "3000"]
    return argv + (["-R"] if reverse else [])


def parse_iperf3(text: str, netns_name: str | None = None) -> dict:
    """The summary of ``iperf3 -J`` client output: receiver-side rate, retransmits, duration.

    TCP tests report ``end.sum_received`` (receiver side, also with ``-R``) and
    ``end.sum_sent`` (retransmits); UDP tests a single ``end.sum``. A run that
    failed before measuring raises DataplaneError with iperf3's own message.
    """
    doc = _json_object(text)
    if doc is None:
        raise DataplaneError("iperf3", netns_name, None, "no JSON output: " + (text.strip()[:200] or "nothing"))
    end = doc.get("end") or {}
    received = end.get("sum_received") or end.get("sum") or {}
    sent = end.get("sum_sent") or end.get("sum") or {}
    if doc.get("error") and not received:
        raise DataplaneError("iperf3", netns_name, None, str(doc["error"]))
    if not received:
        raise DataplaneError("iperf3", netns_name, None, "the JSON output has no end summary")
    test = (doc.get("start") or {}).get("test_start") or {}
    return {
        "bits_per_second": float(received.get("bits_per_second", 0.0)),
        "sender_bits_per_second": float(sent.get("bits_per_second", 0.0)) if sent else None,
        "bytes": int(received.get("bytes", 0)),
        "retransmits": sent.get("retransmits"),
        "seconds": float(received.get("seconds", received.get("end", 0.0))),
        "lost_percent": received.get("lost_percent"),
        "protocol": test.get("protocol"),
        "streams": test.get("num_streams"),
        "reverse": bool(test.get("reverse", 0)),
        "error": doc.get("error"),
        "iperf3": end,
    }


def _json_object(text: str) -> dict | None:
    """The JSON document in ``text``; tolerates stray lines printed before it."""
    text = text.strip()
    for start in [0] + [m.start() for m in re.finditer(r"^\{", text, re.M)]:
        try:
            doc = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of ``pid`` (read from /proc/PID/net)."""
    return parse_proc_net_tcp(_read(f"/proc/{pid}/net/tcp") + _read(f"/proc/{pid}/net/tcp6"))


def parse_proc_net_tcp(text: str) -> set[int]:
    ports = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A" and ":" in parts[1]:  # 0A = TCP_LISTEN
            with contextlib.suppress(ValueError):
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


@contextlib.contextmanager
def oneoff_iperf_server(netns_name: str, timeout_s: float = 5.0) -> Iterator[int]:
    """An ``iperf3 -s -1`` in a namespace, listening before the body runs and gone after it; yields its port.

    A port already taken (another server) is retried on a random one. The
    server exits by itself after one test; if it has not, it is stopped.
    """
    ports = [IPERF_PORT] + random.sample(range(20000, 60000), 3)
    last = ""
    for port in ports:
        p = popen_in(netns_name, ["iperf3", "-s", "-1", "-p", str(port)], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            end = time.monotonic() + timeout_s
            while p.poll() is None and port not in listening_ports(p.pid) and time.monotonic() < end:
                time.sleep(0.02)
            if p.poll() is not None:
                last = (p.stderr.read().decode(errors="replace").strip() if p.stderr else "") or f"exit {p.returncode}"
                if "in use" in last:
                    continue
                raise DataplaneError("start iperf3 server", netns_name, None, last)
            if port not in listening_ports(p.pid):
                raise DataplaneError("start iperf3 server", netns_name, None, f"not listening after {timeout_s:.0f} s")
            yield port
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2.0)  # it ends by itself after its one test
            return
        finally:
            _stop(p)
            if p.stderr:
                p.stderr.close()
    raise DataplaneError("start iperf3 server", netns_name, None, last or "no free port")
