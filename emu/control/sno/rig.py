"""A small rig for inter-SNO handovers in real packets: two cores, two ground stations, one terminal.

spec: inter-sno-mobility §5.1 / §5.2. The rig stands for the access layer
(the satellites are one veth per ground station) so that the handover
procedures can be measured without a constellation::

    dev1 --lan-- ut1 --gA-- gs-a --g1-- core-a --c1--+
                     \\                                inet (10.250.0.1)
                      --gB-- gs-b --g2-- core-b --c2--+

``ut1`` belongs to SNO A (``ut1@sno-a``, home prefix 10.77.1.0/24, device
10.77.1.2). A *link switch* takes ``gA`` down, waits ``link_switch_ms``,
brings ``gB`` up and points the terminal's default route at gs-b: that is
all the access layer does; the agent sees it on rtnetlink and the cores do
the rest. Between the cores, traffic crosses ``inet`` (the terrestrial
Internet), where the inter-core VXLAN tunnel runs.

Everything is journaled in a run (:mod:`emu.dataplane.state`) and torn down
by the same code as ``leo-emu down``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emu.control.sno import launch, steplog
from emu.control.sno.kernel import IpSession
from emu.control.sno.launch import ControlSpec, CoreSpec, UserSpec
from emu.control.sno.uplink import oper_up
from emu.dataplane import cleanup, netns, procs
from emu.dataplane.state import Run

USER = "ut1@sno-a"
PREFIX = "10.77.1.0/24"
DEV_ADDR = "10.77.1.2"
INET_ADDR = "10.250.0.1"
PROBE_PORT = 7777
CORE_PUBLIC = {"core-a": "10.0.1.2", "core-b": "10.0.2.2"}
NODES = ("inet", "core-a", "core-b", "gs-a", "gs-b", "ut1", "dev1")
UPLINK = {"core-a": ("gA", "10.2.1.1"), "core-b": ("gB", "10.2.2.1")}

# (netns, ip command lines): addresses and routes of every node; links are made first
_LINKS = [  # (ns, ifname, peer ns, peer ifname)
    ("inet", "c1", "core-a", "inet"), ("inet", "c2", "core-b", "inet"),
    ("core-a", "g1", "gs-a", "core"), ("core-b", "g2", "gs-b", "core"),
    ("gs-a", "ut", "ut1", "gA"), ("gs-b", "ut", "ut1", "gB"), ("ut1", "lan", "dev1", "eth0"),
]
_CONFIG = {
    "inet": ["addr add 10.250.0.1/32 dev lo", "addr add 10.0.1.1/30 dev c1", "addr add 10.0.2.1/30 dev c2",
             "link set c1 up", "link set c2 up",
             "route add 10.77.0.0/16 via 10.0.1.2", "route add 10.78.0.0/16 via 10.0.2.2"],
    "core-a": ["addr add 10.0.1.2/30 dev inet", "addr add 10.1.1.1/30 dev g1", "link set inet up", "link set g1 up",
               "route add default via 10.0.1.1", "route add 10.2.1.0/30 via 10.1.1.2"],
    "core-b": ["addr add 10.0.2.2/30 dev inet", "addr add 10.1.2.1/30 dev g2", "link set inet up", "link set g2 up",
               "route add default via 10.0.2.1", "route add 10.2.2.0/30 via 10.1.2.2"],
    "gs-a": ["addr add 10.1.1.2/30 dev core", "addr add 10.2.1.1/30 dev ut", "link set core up", "link set ut up",
             "route add default via 10.1.1.1", f"route add {PREFIX} via 10.2.1.2"],
    "gs-b": ["addr add 10.1.2.2/30 dev core", "addr add 10.2.2.1/30 dev ut", "link set core up", "link set ut up",
             "route add default via 10.1.2.1", f"route add {PREFIX} via 10.2.2.2"],
    "ut1": ["addr add 10.2.1.2/30 dev gA", "addr add 10.2.2.2/30 dev gB", "addr add 10.77.1.1/24 dev lan",
            "link set gA up", "link set lan up", "route add default via 10.2.1.1 dev gA"],
    "dev1": ["addr add 10.77.1.2/24 dev eth0", "link set eth0 up", "route add default via 10.77.1.1"],
}


def _ip(ns: str, lines: list[str]) -> None:
    p = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="".join(ln + "\n" for ln in lines),
                       capture_output=True, text=True, timeout=30, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"ip -n {ns}: {p.stderr.strip()}")


def interruption(sent: int, replies: list[list[int]], cut_ns: int, end_ns: int, origin_ns: int = 0) -> dict:
    """The probe stream's outage across a handover: last reply before it -> first reply after (pure).

    ``replies`` are ``[seq, t_send_ns, t_recv_ns]``; the link went down at ``cut_ns`` and the terminal
    was registered again by ``end_ns``. The outage is the longest silence between two consecutive
    replies that ends after ``cut_ns`` and begins before ``end_ns`` (a reply still in flight when the
    link went down does not end it). Lost packets: those sent within it that never came back;
    ``lost_total`` counts the whole stream. Times in the result are ms from ``origin_ns``.
    """
    got = sorted({r[0]: r for r in replies}.values(), key=lambda r: r[2])
    out = {"lost_total": sent - len(got)}
    gaps = [(b[2] - a[2], a, b) for a, b in zip(got, got[1:]) if b[2] > cut_ns and a[2] < end_ns]
    if not gaps:
        return {**out, "interruption_ms": None, "lost_packets": None, "last_before_ms": None, "first_after_ms": None}
    gap, a, b = max(gaps, key=lambda g: g[0])
    seen = {r[0] for r in got}
    lost = sum(1 for q in range(a[0] + 1, b[0]) if q not in seen)
    return {**out, "interruption_ms": round(gap / 1e6, 2), "lost_packets": lost,
            "last_before_ms": round((a[2] - origin_ns) / 1e6, 2), "first_after_ms": round((b[2] - origin_ns) / 1e6, 2)}


def summarize(values: list[float]) -> dict:
    v = sorted(x for x in values if x is not None)
    if not v:
        return {"median": None, "p90": None, "n": 0}
    p90 = v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
    return {"median": round(statistics.median(v), 2), "p90": round(p90, 2), "min": v[0], "max": v[-1], "n": len(v)}


class Rig:
    def __init__(self, prefix: str, run_root: str | None = None, latency_ms: float = 20.0,
                 link_switch_ms: float = 50.0, procedure: str = "baseline", keys: dict | None = None,
                 notice_ms: float = 20.0, features=None):
        from emu.dataplane.features import detect
        self.prefix = prefix
        self.latency_ms = latency_ms
        self.link_switch_ms = link_switch_ms
        self.procedure = procedure
        self.notice_ms = notice_ms
        self.keys = keys
        self.features = features or detect()
        self.ns = {n: prefix + n for n in NODES}
        root = Path(run_root or os.environ.get("LEOEMU_RUN_DIR") or tempfile.mkdtemp(prefix="sno-rig-"))
        root.mkdir(parents=True, exist_ok=True)
        self.run = Run(prefix.rstrip("-") + "-run", root)
        self.run.dir.mkdir(mode=0o755)
        (self.run.dir / "journal").touch()
        self.info: dict = {}
        self.attached = "core-a"
        self.events: list[dict] = []
        self._ips: dict[str, IpSession] = {}
        self._flag_socks: dict[str, socket.socket] = {}

    # ------------------------------------------------------------------ build and start
    def build(self) -> None:
        names = list(self.ns.values())
        self.run.record_netns(names)
        netns.create_many(names, netns.ROUTER_SYSCTLS)
        for k, (a, ai, b, bi) in enumerate(_LINKS):
            # distinct ifindexes on the two ends: the kernel then treats a carrier change as urgent and
            # activates the queue at once (equal ones can wait up to a second in linkwatch)
            _ip(self.ns[a], [f"link add {ai} index {20 + 2 * k} type veth peer name {bi} index {21 + 2 * k} "
                             f"netns {self.ns[b]}"])
        for n in NODES:
            _ip(self.ns[n], ["link set lo up"] + _CONFIG[n])

    def spec(self) -> ControlSpec:
        half = self.latency_ms / 2
        return ControlSpec(
            cores=[CoreSpec("core-a", self.ns["core-a"], 1, "sno-a", CORE_PUBLIC["core-a"], "10.79.1.0/24",
                            {"g1": "10.1.1.2"}),
                   CoreSpec("core-b", self.ns["core-b"], 2, "sno-b", CORE_PUBLIC["core-b"], "10.79.2.0/24",
                            {"g2": "10.1.2.2"})],
            users=[UserSpec("ut1", self.ns["ut1"], USER, PREFIX, ["gA", "gB"])],
            procedure=self.procedure, latency_ms=self.latency_ms, notice_ms=self.notice_ms,
            netem_links=[(self.ns["core-a"], "inet", half), (self.ns["inet"], "c1", half),
                         (self.ns["core-b"], "inet", half), (self.ns["inet"], "c2", half)])

    def start(self, timeout_s: float = 20.0) -> dict:
        echo = procs.popen_in(self.ns["inet"], [sys.executable, "-m", "emu.control.sno.probe", "echo", INET_ADDR,
                                                str(PROBE_PORT)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "PYTHONPATH": launch._pythonpath()})
        self.run.record_pid(echo.pid, f"probe echo in {self.ns['inet']}")
        self.info = launch.start(self.run, self.spec(), self.features, self.keys)
        if not launch.wait_ready(self.info, timeout_s):
            raise RuntimeError(f"SNO daemons not ready within {timeout_s} s; see {self.run.dir / 'sno'}")
        return self.info

    # ------------------------------------------------------------------ state
    def core_status(self, core: str) -> dict | None:
        return launch.try_admin(self.info["cores"][core]["admin"], {"op": "status"})

    def agent_status(self) -> dict | None:
        return launch.try_admin(self.info["agents"]["ut1"]["admin"], {"op": "status"})

    def wait_registered(self, core: str, timeout_s: float = 10.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            st = self.agent_status()
            if st and st.get("registered_at") == core:
                return True
            time.sleep(0.01)
        return False

    def set_procedure(self, procedure: str) -> None:
        for c in self.info["cores"].values():
            launch.admin(c["admin"], {"op": "set", "procedure": procedure})
        self.procedure = procedure

    # ------------------------------------------------------------------ the access layer
    def _session(self, node: str) -> IpSession:
        """A long-lived ``ip -n NS -batch`` per node: a link switch costs no process start."""
        if node not in self._ips:
            self._ips[node] = IpSession(("ip", "-n", self.ns[node]))
        return self._ips[node]

    def _wait_oper_up(self, links: list[tuple[str, str]], timeout_s: float) -> bool:
        for node, _ in links:
            if node not in self._flag_socks:
                with netns.inside(self.ns[node]):
                    self._flag_socks[node] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        end = time.monotonic() + timeout_s
        while not all(oper_up(self._flag_socks[node], ifname) for node, ifname in links):
            if time.monotonic() > end:
                return False
            time.sleep(0.0005)
        return True

    def link_switch(self, to: str) -> dict:
        """Old uplink down, ``link_switch_ms`` of nothing, new uplink up with the default route."""
        old_if, _ = UPLINK[self.attached]
        new_if, gw = UPLINK[to]
        ip = self._session("ut1")
        t0 = time.monotonic_ns()
        ip.apply([f"link set {old_if} down"])
        t_down = time.monotonic_ns()
        time.sleep(max(0.0, self.link_switch_ms / 1000 - (t_down - t0) / 1e9))
        t1 = time.monotonic_ns()
        ip.apply([f"link set {new_if} up"])
        # operational = both ends' operstate UP: the kernel has activated their queues (linkwatch); a packet
        # sent before that is dropped, and an ARP request dropped so waits a whole second for its retry
        gs = "gs-a" if to == "core-a" else "gs-b"
        ok = self._wait_oper_up([("ut1", new_if), (gs, "ut")], timeout_s=3.0)
        t_oper = time.monotonic_ns()
        ip.apply([f"route replace default via {gw} dev {new_if}"])
        t_up = time.monotonic_ns()
        self.attached = to
        ev = {"link_switch_start_ns": t0, "link_down_ns": t_down, "link_up_start_ns": t1, "link_oper_up_ns": t_oper,
              "link_up_ns": t_up, "oper_up_in_time": ok}
        self.events.append(ev)
        return ev

    # ------------------------------------------------------------------ probes and captures
    def start_probe(self, seconds: float = 0.0, interval_ms: float = 10.0) -> subprocess.Popen:
        """The device's UDP probe stream to the Internet's echo (stopped by SIGINT, or after ``seconds``)."""
        argv = [sys.executable, "-m", "emu.control.sno.probe", "send", INET_ADDR, str(PROBE_PORT),
                "--interval-ms", f"{interval_ms:g}", "--seconds", f"{seconds:g}"]
        p = procs.popen_in(self.ns["dev1"], argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, env={**os.environ, "PYTHONPATH": launch._pythonpath()})
        p.stderr.readline()  # "probe started": from here on SIGINT ends it with a result
        return p

    @staticmethod
    def stop_probe(p: subprocess.Popen, timed: bool = False) -> dict:
        """The probe's result; ``timed``: it was started with ``seconds`` and ends by itself."""
        if p.poll() is None and not timed:
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        try:
            return json.loads(out)
        except ValueError:
            raise RuntimeError(f"probe gave no result: {err.strip()[-300:]}") from None

    def start_capture(self, core: str, path: Path) -> subprocess.Popen:
        """tcpdump in a core's namespace, on its Internet-facing link: the tunnel's VXLAN packets."""
        return procs.popen_in(self.ns[core], ["tcpdump", "-i", "inet", "-n", "-U", "--immediate-mode", "-w", str(path),
                                              "udp", "port", "4789"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    @staticmethod
    def read_capture(path: Path) -> list[str]:
        p = subprocess.run(["tcpdump", "-r", str(path), "-n", "-v"], capture_output=True, text=True, timeout=30,
                           check=False)
        return [ln for ln in p.stdout.splitlines() if ln.strip()]

    # ------------------------------------------------------------------ one measured handover
    def handover(self, to: str = "core-b", pre_s: float = 0.5, post_s: float = 0.8, plan_ahead_ms: float = 60.0,
                 timeout_s: float = 10.0) -> dict:
        """Probe stream on, the plan told to the home core, the link switched at the planned time."""
        probe = self.start_probe()
        time.sleep(pre_s)
        plan_ahead_ms = max(plan_ahead_ms, self.notice_ms + 40.0)  # the plan must be known before the notice
        at_ns = time.monotonic_ns() + int(plan_ahead_ms * 1e6)
        launch.admin(self.info["cores"]["core-a"]["admin"], {"op": "plan", "user": USER, "target": to,
                                                              "at_ns": at_ns})
        time.sleep(max(0.0, (at_ns - time.monotonic_ns()) / 1e9))
        ev = self.link_switch(to)
        ok = self.wait_registered(to, timeout_s)
        t_reg = time.monotonic_ns()
        time.sleep(post_s)
        res = self.stop_probe(probe)
        origin = ev["link_switch_start_ns"]
        gap = interruption(res["sent"], res["replies"], ev["link_down_ns"], t_reg, origin)
        steps = self.steps_between(at_ns - int((plan_ahead_ms + 50) * 1e6), t_reg + int(0.2e9), origin)
        return {"procedure": self.procedure, "registered": ok, "to": to, **gap, "probes_sent": res["sent"],
                "registration_after_link_up_ms": self._first(steps, "registered", "ut1") if ok else None,
                "core_registered_after_link_up_ms": self._first(steps, "registered", to) if ok else None,
                "steps": steps}

    @staticmethod
    def _first(steps: list[dict], step: str, node: str) -> float | None:
        """``t_ms`` of the first ``step`` by ``node`` minus the link-up moment (link_up step of the rig)."""
        up = next((s["t_ms"] for s in steps if s["node"] == "rig" and s["step"] == "link_up"), None)
        if up is None:
            return None
        t = next((s["t_ms"] for s in steps if s["node"] == node and s["step"] == step and s["t_ms"] >= up), None)
        return None if t is None else round(t - up, 2)

    def steps_between(self, t0: int, t1: int, origin: int) -> list[dict]:
        """Every daemon step in [t0, t1] and the rig's link events, in ms from the link switch."""
        recs = []
        for d in list(self.info["cores"].values()) + list(self.info["agents"].values()):
            recs += [r for r in steplog.read(d["log"]) if t0 <= r["t_ns"] <= t1]
        ev = self.events[-1]
        recs += [{"t_ns": ev["link_switch_start_ns"], "node": "rig", "step": "link_down"},
                 {"t_ns": ev["link_oper_up_ns"], "node": "rig", "step": "link_up"}]
        out = []
        for r in sorted(recs, key=lambda r: r["t_ns"]):
            s = {"t_ms": round((r["t_ns"] - origin) / 1e6, 2), "node": r["node"], "step": r["step"]}
            for k in ("what", "ms", "coa", "target", "peer", "reason", "proactive", "errors"):
                if r.get(k) not in (None, [], ""):
                    s[k] = r[k]
            out.append(s)
        return out

    def go_home(self, timeout_s: float = 10.0) -> bool:
        self.link_switch("core-a")
        return self.wait_registered("core-a", timeout_s)

    def save_logs(self, dest: Path) -> Path:
        """Copy the daemons' logs and step logs (not their keys) out of the run before teardown removes it."""
        import shutil
        dest.mkdir(parents=True, exist_ok=True)
        for f in (self.run.dir / "sno").glob("*"):
            if f.suffix in (".jsonl", ".log"):
                shutil.copy2(f, dest / f.name)
        return dest

    def explain(self, tail: int = 12) -> str:
        """What the daemons say now and their last steps: the message of a failed wait in a test."""
        parts = [f"agent: {self.agent_status()}"]
        parts += [f"{c}: {self.core_status(c)}" for c in self.info.get("cores", {})]
        for f in sorted((self.run.dir / "sno").glob("*.jsonl")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # ------------------------------------------------------------------ teardown
    def close(self) -> dict:
        """The same removal as ``leo-emu down``: journaled processes, then the namespaces' processes, then them."""
        for x in list(self._ips.values()):
            x.close()
        for sk in self._flag_socks.values():
            sk.close()
        self._ips, self._flag_socks = {}, {}
        stopped = launch.stop(self.run) if self.info else True
        out = cleanup.teardown(self.run)
        out["supervisor_stopped"] = stopped
        return out


def tunnel_packets(lines: list[str]) -> dict:
    """Probe datagrams seen *inside* VXLAN in ``tcpdump -r -n -v`` output, per direction (pure)."""
    up = rf"{re.escape(DEV_ADDR)}\.\d+ > {re.escape(INET_ADDR)}\.{PROBE_PORT}: UDP"
    down = rf"{re.escape(INET_ADDR)}\.{PROBE_PORT} > {re.escape(DEV_ADDR)}\.\d+: UDP"
    return {"uplink": sum(1 for ln in lines if re.search(up, ln)),
            "downlink": sum(1 for ln in lines if re.search(down, ln)),
            "vxlan": sum(1 for ln in lines if "VXLAN" in ln)}
