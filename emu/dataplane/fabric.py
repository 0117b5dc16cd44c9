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


def fds_needed(namespaces: int, switched: int = 0) -> int:
    """Open files a run may hold: three per namespace (its file, its netlink socket, a second one where links
    are retired) and one more per namespace the slice switch writes (``switched``: satellites and ground
    nodes, the nftables socket of :mod:`emu.dataplane.slicemark`)."""
    return 3 * namespaces + switched + 256


def raise_fd_limit(need: int) -> None:
    """Up to four fds per namespace (:func:`fds_needed`): lift the soft limit, and the hard one too when it is
    below ``need`` (root may, up to fs.nr_open; where it may not, a hard limit of 20,000 stops a run at ~4,900
    namespaces)."""
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
                                 f"{need} open files needed (three per namespace, four per satellite or ground node), "
                                 f"hard limit {hard}") from exc
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


class Fabric:
    sent = 0  # rtnetlink messages written so far (flush, pipeline, settled send_behind): for benchmarks

    def __init__(self, names: Iterable[str], switched: int | None = None):
        """``switched``: how many of ``names`` the slice switch writes (default all; :func:`fds_needed`)."""
        self.names = list(names)
        raise_fd_limit(fds_needed(len(self.names), len(self.names) if switched is None else switched))
        self.fd: dict[str, int] = {}
        self.nl: dict[str, NetlinkBatch] = {}
        self._aux: dict[str, NetlinkBatch] = {}
        self._behind: list[Pipeline] | None = None
        self._nft = None  # slicemark.NftSockets, opened by nft()
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
        self.sent += sent
        return sent

    def pipeline(self, ok=()) -> Pipeline:
        """A sender thread for one bulk phase: ``with fabric.pipeline(ok) as send: ... send(name)`` hands a
        namespace whose queue is complete to the thread, which writes it while the caller encodes the next
        one (the socket write releases the GIL: the kernel's route inserts run beside our Python encoding).
        The caller must not queue on a namespace after handing it over, until the ``with`` block ends;
        leaving the block waits for every write and raises the first failure (as :meth:`flush` would)."""
        return Pipeline(self, ok)

    def nft(self):
        """The nfnetlink sockets of the satellites' slice switch (:mod:`emu.dataplane.slicemark`): one per
        namespace it is used in (satellites, UTs and GSs), each opened on first use."""
        if self._nft is None:
            from emu.dataplane.slicemark import NftSockets

            self._nft = NftSockets()
        return self._nft

    def aux(self, name: str) -> NetlinkBatch:
        """A second socket of namespace ``name`` (opened on first use, in the caller's thread), for requests
        :meth:`send_behind` writes while the first socket goes on being used."""
        b = self._aux.get(name)
        if b is None:
            b = self._aux[name] = NetlinkBatch(name, ack_each=False)
        return b

    def send_behind(self, names: Iterable[str], ok=(), threads: int = 32) -> None:
        """Write the :meth:`aux` queues of ``names`` from background threads and return at once.

        For requests that spend their time *waiting* in the kernel, not working: deleting a link ends in
        ``rcu_barrier()`` inside our ``sendmsg`` (after the rtnl lock is released), tens of ms per
        namespace; from several threads at once the waits overlap (concurrent barriers share their grace
        periods). One such job at a time: the next call, :meth:`settle` and :meth:`close` wait for it.
        """
        self.settle()
        names = list(names)
        jobs = []
        for i in range(min(threads, len(names))):
            p = Pipeline(self, ok, self._aux)
            send = p.start()
            for n in names[i::threads]:
                send(n)
            p.end()
            jobs.append(p)
        self._behind = jobs

    def settle(self) -> None:
        """Wait for the :meth:`send_behind` job, if any; raise its first failure."""
        jobs, self._behind = self._behind or [], None
        for p in jobs:
            p.t.join()  # its hand-overs were ended by send_behind
            self.sent += p.sent
        for p in jobs:
            if p.error is not None:
                raise p.error

    def close(self) -> None:
        try:
            self.settle()
        except Exception:  # noqa: BLE001 -- closing anyway; the job's failure was the kernel's answer
            pass
        for b in list(self.nl.values()) + list(self._aux.values()):
            b.close()
        if self._nft is not None:
            self._nft.close()
            self._nft = None
        for fd in self.fd.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.nl.clear()
        self._aux.clear()
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

    def __init__(self, fabric: Fabric, ok=(), batches: dict[str, NetlinkBatch] | None = None):
        self.f, self.ok = fabric, ok
        self.nl = fabric.nl if batches is None else batches
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.sent = 0
        self.t = threading.Thread(target=self._run, name="netlink-sender", daemon=True)

    def _run(self) -> None:
        while (name := self.q.get()) is not None:
            if self.error is not None:
                continue  # drain the hand-overs; the first failure is raised by __exit__
            try:
                b = self.nl[name]
                if len(b):
                    self.sent += b.send(self.ok).sent
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread
                self.error = exc

    def start(self):
        """Start the sender; returns the hand-over function (a namespace's name)."""
        self.t.start()
        return self.q.put

    def end(self) -> None:
        """No more hand-overs: the sender stops after the last one."""
        self.q.put(None)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end()
        self.t.join()
        self.f.sent += self.sent
        if self.error is not None and exc is None:
            raise self.error
