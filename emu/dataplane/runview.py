"""What a run is and where it is now, read from its records (``run.json``, ``status.json``) and its plan.

A read-only view: node -> namespace, node -> address. A satellite's address
is the GRC it binds in the *current* slice (interface 0), read from the plan,
never recomputed.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from emu.dataplane.parsers import pick_global_ipv4
from emu.dataplane.procs import run_in
from emu.dataplane.state import Run, proc_starttime
from emu.errors import DataplaneError, InputError


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

    def address_of(self, name: str, k: int | None = None, family: int = 4) -> str:
        """The IPv4 (``family`` 6: IPv6) address a probe toward node ``name`` should use (satellite: its own
        address, emu.addressing.satgrc, when the plan routes satellites as destinations, else the GRC it binds
        in slice ``k``; with IPv6 their 128-bit forms)."""
        if family == 6:
            return self._address6_of(name, k)
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

            if json.loads(self.db.meta["routing"]).get("satellite_destinations"):
                return to_ipv4(int(self.db.sat_addresses[int(node["index"])]))
            k = self.current_slice() if k is None else k
            return to_ipv4(int(self.db.bound_grc(k)[int(node["index"])]))  # interface 0 = the bound GRC itself
        addr = first_global_ipv4(node["netns"])
        if addr is None:
            raise InputError(f"node: {name} has no address to aim at (got {name!r}); give an IP address instead")
        return addr

    def _address6_of(self, name: str, k: int | None) -> str:
        """The IPv6 address of node ``name``: a device's from its operator's IPv6 pool, the Internet's IPv6
        server, a ground node's or satellite's IPv6 GRC (grc §GRC encoding, the 128-bit form)."""
        node = self.node(name)
        kind = node["kind"]
        if kind in ("dev", "inet") and node.get("addr6"):
            return node["addr6"]
        if kind in ("ut", "gs") and node.get("grc6"):
            return node["grc6"]
        if kind == "satellite" and self.info.get("grc_ipv6_prefix"):
            from emu.addressing.grc import to_ipv6

            if json.loads(self.db.meta["routing"]).get("satellite_destinations"):
                return to_ipv6(int(self.db.sat_addresses[int(node["index"])]), self.info["grc_ipv6_prefix"])
            k = self.current_slice() if k is None else k
            return to_ipv6(int(self.db.bound_grc(k)[int(node["index"])]), self.info["grc_ipv6_prefix"])
        p = run_in(node["netns"], ["ip", "-j", "-6", "addr", "show"], timeout_s=10)
        addr = pick_global_ipv4(p.stdout, "inet6") if p.returncode == 0 else None
        if addr is None:
            raise InputError(f"node: {name} has no IPv6 address to aim at (got {name!r}); give an IP address instead")
        return addr

    def node_by_addr(self, addr: str) -> dict | None:
        for n in self.nodes:
            if addr in (n.get("addr"), n.get("grc"), n.get("addr6"), n.get("grc6")):
                return n
        if addr in (self.info.get("inet_addr"), self.info.get("inet_addr6")):
            return self.by_name.get(self.info.get("inet", "inet"))
        return None

    def target(self, text: str, k: int | None = None, family: int | None = None) -> Target:
        """A node name or a literal IPv4/IPv6 address; ``family`` 6 aims at a node's IPv6 address (a literal
        address of the other family is bad input)."""
        try:
            addr = str(ipaddress.ip_address(text))
        except ValueError:
            return Target(self.node(text), self.address_of(text, k, family or 4))
        if family is not None and ipaddress.ip_address(addr).version != family:
            raise InputError(f"dst: -{family} asks for an IPv{family} destination (got {text!r})")
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
