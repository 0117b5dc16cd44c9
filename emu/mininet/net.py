"""``LeoNet``: a ``mininet.net.Mininet`` whose nodes are a leo-emu run's namespaces.

Two ways in (spec-free glue; issue 11):

- ``LeoNet('topologies/default.yaml').start()`` runs ``leo-emu up SCENARIO
  --detach`` (the CLI verb itself, as a subprocess: the same planning,
  builder, slice clock, journal and cleanup) and attaches; ``stop()`` leaves
  the node shells and runs ``leo-emu down --run ID``;
- ``LeoNet(run='le1a2b')`` attaches to a run that is already up (what
  ``leo-emu cli`` does); ``stop()`` then ends only the shells it started.

Hosts are the ground nodes (devices, terminals, ground stations, cores,
Internet): ``pingAll()`` and ``iperf()`` defaults use them, as in Mininet.
Satellites are in ``routers``: every Mininet lookup (``net.get``, ``net[..]``,
``nodes``, ``dump``, the CLI's ``sat0-0-2 ip route``) finds them too.
``links`` is read from the kernel when first asked for (:mod:`emu.mininet.peers`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from itertools import chain

from mininet.net import Mininet

from emu.dataplane.state import find_run
from emu.dataplane.runview import RunView
from emu.errors import DataplaneError, InputError, PrivilegeError
from emu.mininet import peers, requirements
from emu.mininet.node import LeoIntf, LeoLink, LeoNode


def leo_emu(*args: str, env: dict | None = None, timeout_s: float | None = None) -> subprocess.CompletedProcess:
    """Run one ``leo-emu`` verb (this interpreter's ``emu.cli.main``) and capture its output."""
    return subprocess.run([sys.executable, "-m", "emu.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout_s)


class LeoNet(Mininet):
    """Mininet's network object on a leo-emu run (see the module docstring)."""

    def __init__(self, scenario: str | None = None, run: str | None = None, plan: str | None = None,
                 speed: float = 1.0, slices: int | None = None, start_slice: int = 0, attach: bool = True):
        requirements.require()
        if os.geteuid() != 0:
            raise PrivilegeError("LeoNet needs root (CAP_NET_ADMIN) to enter namespaces: run it with sudo")
        # Mininet.init() would call fixLimits(), which retunes the *host's* sysctls (net.core.*,
        # neighbour tables, fs.file-max); leo-emu's namespaces carry their own and it never
        # touches the host's. Mark it done so Mininet.__init__ skips it.
        Mininet.inited = True
        self._links: list[LeoLink] | None = None
        self.routers: list[LeoNode] = []
        Mininet.__init__(self, topo=None, host=LeoNode, switch=None, controller=None, link=LeoLink,
                         intf=LeoIntf, build=False)
        self.scenario, self.plan, self.speed = scenario, plan, speed
        self.slices, self.start_slice = slices, start_slice
        self.run_id: str | None = None
        self.owns_run = False
        self.view: RunView | None = None
        if scenario is None and attach:
            self.attach(run)
        elif run is not None:
            raise InputError(f"LeoNet: give a scenario to start or a run to attach to, not both (got run={run!r})")

    # --- Mininet's container protocol, with the routers ---------------------------------------
    def __iter__(self):
        for node in chain(self.hosts, self.routers, self.switches, self.controllers):
            yield node.name

    def __len__(self):
        return len(self.hosts) + len(self.routers) + len(self.switches) + len(self.controllers)

    def getNodeByName(self, *args):
        for name in args:
            if name not in self.nameToNode:
                if self.view is None:
                    raise InputError(f"node: the network is not started (got {name!r})")
                self.view.node(name)  # raises the run's one-line "no such node" error
        return Mininet.getNodeByName(self, *args)

    @property
    def links(self) -> list[LeoLink]:
        if self._links is None:
            self._links = self._read_links() if self.view is not None else []
        return self._links

    @links.setter
    def links(self, value) -> None:
        self._links = list(value) if value else None

    # --- attach / start / stop ---------------------------------------------------------------
    def attach(self, run_id: str | None = None) -> None:
        """Make every namespace of run ``run_id`` (default: the only run) a node; nothing is created."""
        view = RunView(find_run(run_id))
        self.view, self.run_id = view, view.run.run_id
        infos = peers.read_interfaces([n["netns"] for n in view.nodes])
        for n in view.nodes:
            node = LeoNode(n["name"], n["netns"], kind=n["kind"], address=partial(view.address_of, n["name"]))
            (self.routers if n["kind"] == "satellite" else self.hosts).append(node)
            self.nameToNode[n["name"]] = node
        self._infos = {}
        self._add_intfs(infos)
        self.built = True

    def _add_intfs(self, infos) -> None:
        self._infos = infos
        for node in self.values():
            node.present = {i.name for i in infos.get(node.netns, [])}
            for i in infos.get(node.netns, []):
                LeoIntf(i.name, node=node, port=i.ifindex, mac=i.mac, addresses=[a for a, _ in i.ipv4],
                        prefix_len=i.ipv4[0][1] if i.ipv4 else None, up=i.up)

    def _read_links(self) -> list[LeoLink]:
        by_ns = {n.netns: n for n in self.values()}
        out = []
        for a, b in peers.pair_veths(self._infos):
            n1, n2 = by_ns.get(a.netns), by_ns.get(b.netns)
            i1, i2 = n1 and n1.nameToIntf.get(a.name), n2 and n2.nameToIntf.get(b.name)
            if i1 and i2:
                out.append(LeoLink(i1, i2))
        return out

    def refresh(self) -> None:
        """Re-read interfaces and links from the kernel (ground links change with the slices)."""
        infos = peers.read_interfaces([n.netns for n in self.values()])
        for node in self.values():
            for intf in list(node.intfList()):
                node.delIntf(intf)
        self._add_intfs(infos)
        self._links = None

    def build(self):
        """Nothing to build: the run's builder made the namespaces (``start()`` brings a scenario up)."""
        self.built = True

    def start(self):
        """``leo-emu up SCENARIO --detach`` (plan, build, slice clock), then attach to that run."""
        if self.view is not None:
            return
        if self.scenario is None:
            raise InputError("LeoNet.start: no scenario to bring up (got none); attach with LeoNet(run=...)")
        args = ["up", self.scenario, "--detach", "--format", "json", "--speed", str(self.speed),
                "--start-slice", str(self.start_slice)]
        args += ["--plan", self.plan] if self.plan else []
        args += ["--slices", str(self.slices)] if self.slices else []
        p = leo_emu(*args)
        if p.returncode != 0:
            raise DataplaneError("leo-emu up", None, None, (p.stderr.strip().splitlines() or ["failed"])[-1])
        run_id = json.loads(p.stdout)["run"]
        self.owns_run = True
        try:
            self.attach(run_id)
        except BaseException:
            self._down(run_id)
            raise

    def stop(self):
        """End the node shells (and what the user started in them); ``down`` the run if ``start()`` made it."""
        try:
            Mininet.stop(self)
            for node in self.routers:
                node.terminate()
        finally:
            if self.owns_run and self.run_id:
                self._down(self.run_id)
                self.owns_run = False

    def iperf(self, hosts=None, l4Type="TCP", udpBw="10M", fmt=None, seconds=5, port=5001):
        """Mininet's ``iperf()`` (iperf v2, server on ``hosts[1]``), bounded.

        Mininet 2.3.0 waits for *two* ``/sec`` reports from the TCP server, one
        of them for its own ``telnet`` reachability probe; iperf 2.1 (Debian 12)
        reports nothing for a connection that sends no data, so Mininet's loop
        never ends. Here the server output is read until the test's report
        arrives or ``seconds + 15`` s pass; the rest is Mininet's sequence.
        """
        from mininet.log import debug, output
        from mininet.util import waitListening

        hosts = hosts or [self.hosts[0], self.hosts[-1]]
        assert len(hosts) == 2
        client, server = hosts
        output("*** Iperf: testing", l4Type, "bandwidth between", client, "and", server, "\n")
        server.cmd("killall -9 iperf")  # scoped to the server's namespace by LeoNode
        args = "iperf -p %d " % port + ("-u " if l4Type == "UDP" else "") + ("-f %s " % fmt if fmt else "")
        bw = "-b " + udpBw + " " if l4Type == "UDP" else ""
        server.sendCmd(args + "-s")
        try:
            if l4Type == "TCP" and not waitListening(client, server.IP(), port, timeout=10):
                raise DataplaneError("iperf", server.netns, None, f"no iperf server on port {port} after 10 s")
            cliout = client.cmd(args + "-t %d -c " % seconds + server.IP() + " " + bw)
            debug("Client output: %s\n" % cliout)
            servout, waited = "", 0
            while "/sec" not in servout and waited < seconds + 15:
                servout += server.monitor(timeoutms=1000)
                waited += 1
        finally:
            server.sendInt()
            servout_rest = server.waitOutput()
        servout += servout_rest
        result = [self._parseIperf(servout), self._parseIperf(cliout)]
        if l4Type == "UDP":
            result.insert(0, udpBw)
        output("*** Results: %s\n" % result)
        return result

    def _down(self, run_id: str) -> None:
        p = leo_emu("down", "--run", run_id, "--format", "json")
        if p.returncode != 0:
            raise DataplaneError("leo-emu down", None, None, (p.stderr.strip().splitlines() or ["failed"])[-1])

    def __enter__(self) -> "LeoNet":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
