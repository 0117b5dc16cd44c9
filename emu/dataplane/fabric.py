"""Open netlink sockets and namespace fds for every namespace of a run, and send in bulk.

One NETLINK_ROUTE socket per namespace, reused for the whole run
(:class:`emu.dataplane.netlink.NetlinkBatch`: pyroute2-encoded requests,
our bulk route encoder): building and every slice boundary queue messages
on these and :meth:`Fabric.flush` sends each namespace's queue in one write.
The peer of a veth is named by an open fd of its namespace.
"""

from __future__ import annotations

import os
import queue
import resource
import threading
from collections.abc import Iterable

from emu.dataplane import netns
from emu.dataplane.netlink import NetlinkBatch


def raise_fd_limit(need: int) -> None:
    """Two fds per namespace (its file and its netlink socket): lift the soft limit, and the hard one too when
    it is below ``need`` (root may, up to fs.nr_open; e.g. a hard limit of 20,000 stops at ~9,900 namespaces)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError) as exc:
            from emu.errors import DataplaneError

            raise DataplaneError("raise RLIMIT_NOFILE", None, getattr(exc, "errno", None),
                                 f"{need} open files needed (two per namespace), hard limit {hard}") from exc
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


class Fabric:
    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        raise_fd_limit(2 * len(self.names) + 256)
        self.fd: dict[str, int] = {}
        self.nl: dict[str, NetlinkBatch] = {}
        try:
            for n in self.names:
                self.fd[n] = netns.open_fd(n)
                self.nl[n] = NetlinkBatch(n, ack_each=False)
        except BaseException:
            self.close()
            raise

    def flush(self, names: Iterable[str] | None = None, ok=()) -> int:
        """Send every namespace's queue (or those of ``names``); raise the first failure."""
        sent = 0
        for n in (self.names if names is None else names):
            b = self.nl[n]
            if len(b):
                sent += b.send(ok).sent
        return sent

    def pipeline(self, ok=()) -> Pipeline:
        """A sender thread for one bulk phase: ``with fabric.pipeline(ok) as send: ... send(name)`` hands a
        namespace whose queue is complete to the thread, which writes it while the caller encodes the next
        one (the socket write releases the GIL: the kernel's route inserts run beside our Python encoding).
        The caller must not queue on a namespace after handing it over, until the ``with`` block ends;
        leaving the block waits for every write and raises the first failure (as :meth:`flush` would)."""
        return Pipeline(self, ok)

    def close(self) -> None:
        for b in self.nl.values():
            b.close()
        for fd in self.fd.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.nl.clear()
        self.fd.clear()


def kernel_summary(names: Iterable[str]) -> dict:
    """What the kernel holds in these namespaces, read back over netlink (pyroute2 parsers):
    namespaces present, links and links up, IPv4 routes in all tables, policy rules.
    For ``leo-emu status --kernel``; one socket at a time, nothing changed."""
    out = {"namespaces": 0, "namespaces_missing": 0, "links": 0, "links_up": 0, "ipv4_routes": 0, "rules": 0}
    for n in names:
        if not netns.exists(n):
            out["namespaces_missing"] += 1
            continue
        with NetlinkBatch(n) as b:
            links = b.links()
            out["namespaces"] += 1
            out["links"] += len(links)
            out["links_up"] += sum(1 for x in links if x["up"])
            out["ipv4_routes"] += len(b.routes())
            out["rules"] += len(b.rules())
    return out


class Pipeline:
    """See :meth:`Fabric.pipeline`: one background sender, namespaces sent in the order handed over."""

    def __init__(self, fabric: Fabric, ok=()):
        self.f, self.ok = fabric, ok
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.sent = 0
        self.t = threading.Thread(target=self._run, name="netlink-sender", daemon=True)

    def _run(self) -> None:
        while (name := self.q.get()) is not None:
            if self.error is not None:
                continue  # drain the hand-overs; the first failure is raised by __exit__
            try:
                b = self.f.nl[name]
                if len(b):
                    self.sent += b.send(self.ok).sent
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread
                self.error = exc

    def __enter__(self):
        self.t.start()
        return self.q.put

    def __exit__(self, exc_type, exc, tb) -> None:
        self.q.put(None)
        self.t.join()
        if self.error is not None and exc is None:
            raise self.error
