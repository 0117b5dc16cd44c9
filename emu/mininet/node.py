"""Mininet node, interface and link objects that attach to a run's existing namespaces.

``mininet.node.Node`` runs a bash per node under ``mnexec -cdn``, which
*creates* a namespace. :class:`LeoNode` keeps everything of ``Node`` (the
prompt-driven shell, ``cmd``/``sendCmd``/``popen``/``monitor``) and changes
only how the shell is spawned: ``mnexec -cd ip netns exec NS bash ...``,
so the shell enters the run's namespace and never makes one. Shells start
on first use, so attaching to Starlink's 1,584 satellites costs no process.

:class:`LeoIntf` and :class:`LeoLink` describe what the kernel has; they never
create, move, rename or delete an interface (the run owns them and ``down``
removes them). Addresses are read with ``ip`` (no ``ifconfig`` needed).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from mininet.link import Intf, Link
from mininet.node import Node

from emu.dataplane import netns as nsmod
from emu.dataplane.procs import run_in
from emu.errors import DataplaneError

# Mininet.iperf() begins with `killall -9 iperf`, which would hit every iperf
# on the machine; a LeoNode kills only the iperf processes of its own namespace.
_KILLALL_IPERF = "killall -9 iperf"
_SCOPED_KILL_IPERF = ('for p in $(pgrep -x iperf); do [ "$(readlink /proc/$p/ns/net)" = '
                      '"$(readlink /proc/$$/ns/net)" ] && kill -9 $p; done; true')


def _no_move(*_args, **_kwargs) -> bool:
    """Interfaces are already in their namespace: Mininet must not move them."""
    return True


class LeoNode(Node):
    """A Mininet node whose shell enters the existing namespace ``netns`` (spec-free glue; issue 11)."""

    isSetup = True  # requirements are checked by emu.mininet.requirements, not Mininet's pathCheck (exit(1))

    def __init__(self, name: str, netns: str, kind: str = "host",
                 address: Callable[[], str | None] | None = None, **params):
        self.netns = netns
        self.kind = kind
        self._address = address
        self._deferred = True  # Node.__init__ calls startShell(): not yet
        self._spawning = False
        Node.__init__(self, name, inNamespace=True, **params)
        self._deferred = False

    # --- the shell ------------------------------------------------------------------------
    def startShell(self, mnopts=None):
        if self._deferred:
            return
        if not nsmod.exists(self.netns):
            raise DataplaneError("enter netns", self.netns, None, f"node {self.name}: the namespace is gone "
                                 "(is the run still up? see `leo-emu status`)")
        self._spawning = True
        try:
            Node.startShell(self, mnopts)
        finally:
            self._spawning = False

    def _popen(self, cmd, **params):
        if self._spawning and cmd and cmd[0] == "mnexec":
            # Node.startShell asks mnexec for a *new* namespace (-n): enter ours instead
            cmd = [cmd[0], cmd[1].replace("n", ""), "ip", "netns", "exec", self.netns] + list(cmd[2:])
        return Node._popen(self, cmd, **params)

    def ensureShell(self) -> None:
        if self.shell is None:
            self.startShell()

    def cmd(self, *args, **kwargs):
        self.ensureShell()
        return Node.cmd(self, *args, **kwargs)

    def sendCmd(self, *args, **kwargs):
        self.ensureShell()
        if len(args) == 1 and args[0] == _KILLALL_IPERF:
            args = (_SCOPED_KILL_IPERF,)
        return Node.sendCmd(self, *args, **kwargs)

    def popen(self, *args, **kwargs):
        self.ensureShell()
        return Node.popen(self, *args, **kwargs)

    # --- interfaces and addresses -----------------------------------------------------------
    def addIntf(self, intf, port=None, moveIntfFn=None):
        Node.addIntf(self, intf, port=port, moveIntfFn=_no_move)

    def IP(self, intf=None):
        """The node's address as leo-emu aims at it (a satellite: the GRC it binds in the current slice)."""
        if intf is None and self._address is not None:
            try:
                return self._address()
            except Exception:  # no address to aim at: fall back to Mininet's (default interface)
                pass
        return Node.IP(self, intf)

    def defaultIntf(self):
        """The interface that holds :meth:`IP` now (Mininet's CLI replaces node names by its address)."""
        ip = self.IP()
        for intf in self.intfList():
            if ip and ip in getattr(intf, "addresses", ()):
                return intf
        return Node.defaultIntf(self)

    def kernel_ipv4(self, dev: str | None = None) -> list[str]:
        """The IPv4 addresses the kernel has now in this node (on ``dev`` only, if given)."""
        argv = ["ip", "-j", "-4", "addr", "show"] + (["dev", dev] if dev else [])
        p = run_in(self.netns, argv, timeout_s=10)
        if p.returncode != 0:
            return []
        return [a["local"] for link in json.loads(p.stdout or "[]") for a in link.get("addr_info", [])
                if a.get("local")]

    def __repr__(self):
        return "<%s %s (%s, netns %s): %s pid=%s> " % (
            self.__class__.__name__, self.name, self.kind, self.netns,
            ",".join("%s:%s" % (i.name, i.IP()) for i in self.intfList()), self.pid)


class LeoIntf(Intf):
    """An interface that exists in a run's namespace: read, never created or deleted here."""

    def __init__(self, name, node=None, port=None, mac=None, addresses=(), prefix_len=None, up=True):
        # no mac/ip and up=None: Intf.config() would otherwise run ifconfig on the run's interfaces
        Intf.__init__(self, name, node=node, port=port, up=None)
        self.mac = mac
        self.addresses = list(addresses)
        self.ip = next((a for a in self.addresses if not a.startswith("127.")), None) or \
            (self.addresses[0] if self.addresses else None)
        self.prefixLen = prefix_len
        self.up = up

    def updateIP(self):
        """Re-read this interface's IPv4 addresses; the node's own address first if it is here."""
        self.addresses = self.node.kernel_ipv4(self.name)
        want = self.node.IP()
        self.ip = want if want in self.addresses else (next((a for a in self.addresses
                                                               if not a.startswith("127.")), None))
        return self.ip

    def status(self):
        """OK if the interface is in its namespace as of the node's last read (``LeoNet.refresh``)."""
        return "OK" if self.name in getattr(self.node, "present", ()) else "MISSING"

    def delete(self):
        """Forget the interface; the kernel object belongs to the run (``leo-emu down`` removes it)."""
        self.node.delIntf(self)
        self.link = None


class LeoLink(Link):
    """A veth pair the run made, as Mininet's ``Link``: ``links``/``net`` show it, ``stop()`` leaves it."""

    def __init__(self, intf1: LeoIntf, intf2: LeoIntf):  # noqa: super-init-not-called: nothing to create
        self.intf1, self.intf2 = intf1, intf2
        intf1.link = intf2.link = self
        self.fast = True

    def delete(self):
        self.intf1.link = self.intf2.link = None

    def stop(self):
        self.delete()

    def __str__(self):
        return "%s:%s<->%s:%s" % (self.intf1.node.name, self.intf1.name, self.intf2.node.name, self.intf2.name)
