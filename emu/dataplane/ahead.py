"""Encode a build before its namespaces exist, send it once they do: a fabric that records, then replays.

A run's first slice is hundreds of thousands of netlink messages (Starlink
shell 1: the ISLs and ground links, their addresses and queues, every
satellite's first table, rules, GRC bindings, the tunnels). Encoding them is
Python work that needs no namespace; the namespaces themselves take seconds
to make, in a forked child (:func:`emu.dataplane.netns.create_behind`). So
the builder and the applier run first against a :class:`Recorder`: as
:class:`emu.dataplane.fabric.Fabric` for their code, but every ``flush`` (and
every nftables transaction of the slice switch) becomes a *step*, kept in
order. Once the namespaces exist, :meth:`Recorder.replay` sends the steps on
the real fabric in the same order, one write per namespace per step, as the
same code would have sent them itself: the same messages, the same ordering
barriers between kinds of request, the same errors tolerated.

The one thing a message cannot name before its namespace exists is the fd
of a veth's peer namespace: the recorder hands out placeholders
(:data:`FD_SLOT_BASE` + the namespace's position) and the replay writes the
real fd over each (the attribute is the last of a veth request:
:func:`emu.dataplane.rtpack.veth_body`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from emu.dataplane.netlink import AHEAD_SEQ, NetlinkBatch
from emu.dataplane.rtpack import peer_fd_attr, peer_fd_of

FD_SLOT_BASE = 1 << 31  # placeholder "fds" of a recording: as the kernel's s32 fd, negative (EBADF if one leaked)
# a step's kind (Step.kind), by the first word of its messages' operation: what the build's time went to
KINDS = {"veth": "veths", "link": "link ups", "addr": "addresses", "route": "routes", "nexthop": "routes",
         "rule": "rules", "qdisc": "qdiscs", "vxlan": "tunnels", "ipip": "tunnels", "fdb": "tunnels"}


class _Batch(NetlinkBatch):
    """A recording's batch for one namespace: notes that it queued a veth (its peer fd is a placeholder)."""

    veths = False

    def veth(self, *a, **kw) -> int:
        self.veths = True
        return super().veth(*a, **kw)


def _batch(netns: str | None = None) -> NetlinkBatch:
    """An unbound batch as the fabric's: no per-message acks; sequence numbers far from a socket's own."""
    b = (_Batch if netns else NetlinkBatch).unbound(ack_each=False, seq=AHEAD_SEQ)
    b.netns = netns
    return b


@dataclass
class Step:
    """What one ``flush`` (or one pipeline, or one nftables transaction) of the recorded code sent."""

    batches: dict[str, NetlinkBatch] = field(default_factory=dict)  # netns -> its messages, in flush order
    ok: frozenset[int] = frozenset()
    nft: tuple | None = None  # (namespaces, messages, operation) of an nftables transaction instead
    veths: set[str] = field(default_factory=set)  # namespaces whose batch names a peer by a placeholder fd

    def messages(self) -> int:
        if self.nft is not None:
            return len(self.nft[0]) * len(self.nft[1])
        return sum(len(b) for b in self.batches.values())

    def kind(self) -> str:
        """The step's kind (:data:`KINDS`; ``nftables``): what most of its namespaces write first. A step that
        writes several kinds counts as its first: links brought up with their addresses are "link ups", the GRC
        addresses with their IPv6 twins (routes) "addresses"."""
        if self.nft is not None:
            return "nftables"
        first = Counter(str(b.first_op()).split()[0] for b in self.batches.values())
        word = first.most_common(1)[0][0]
        return KINDS.get(word, word)


class _Pipeline:
    """:meth:`Recorder.pipeline`'s block: every namespace handed over goes into one step."""

    def __init__(self, rec: Recorder, ok):
        self.rec, self.step = rec, Step(ok=frozenset(ok))

    def __enter__(self):
        return lambda name: self.rec._take([name], self.step)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.step.batches:
            self.rec.steps.append(self.step)


class _Nft:
    """:meth:`Recorder.nft`: each transaction becomes a step."""

    def __init__(self, rec: Recorder):
        self.rec = rec

    def transact(self, names, msgs, op) -> None:
        self.rec.steps.append(Step(nft=(tuple(names), msgs, op)))


class Recorder:
    """A fabric for ``names`` that records instead of sending (see the module's doc)."""

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.fd = {n: FD_SLOT_BASE + i for i, n in enumerate(self.names)}
        self.nl = {n: _batch(n) for n in self.names}
        self.steps: list[Step] = []
        self.timed: list[tuple[str, int, float]] = []  # (kind, messages, seconds) of each replayed step

    def _take(self, names: Iterable[str], step: Step) -> None:
        """Move the queues of ``names`` into ``step`` (each namespace's batch stays, empty, numbering on)."""
        for n in names:
            b = self.nl[n]
            if len(b):
                if n in step.batches:
                    raise ValueError(f"{n}: handed over twice in one step")
                step.batches[n] = kept = _batch()
                kept.adopt(b)
                if b.veths:
                    step.veths.add(n)
                    b.veths = False

    def flush(self, names: Iterable[str] | None = None, ok=()) -> int:
        step = Step(ok=frozenset(ok))
        self._take(self.names if names is None else names, step)
        if step.batches:
            self.steps.append(step)
        return 0

    def pipeline(self, ok=()) -> _Pipeline:
        """As :meth:`Fabric.pipeline`: every namespace handed over within the block goes into one step."""
        return _Pipeline(self, ok)

    def nft(self) -> _Nft:
        return _Nft(self)

    def settle(self) -> None:
        """Nothing is retiring while the first slice is recorded."""

    def close(self) -> None:
        """What was recorded and not replayed is dropped (nothing is open)."""
        self.steps = []

    def replay(self, fabric, progress: Callable[[int, int], None] | None = None) -> int:
        """Send every step on ``fabric`` (which holds the recorder's namespaces) in order; returns messages sent.

        A step's failure is raised as the recorded code's flush would have raised it: at the first namespace
        whose write failed (what that step still held for later namespaces is not sent, and nothing after).
        The first slice is written into new namespaces, so the applier's recovery from nexthop objects the
        kernel removed (``SliceApplier._fill``) has nothing to recover from here. Each step's kind, messages and
        seconds are appended to :attr:`timed` (``scripts/bench_up.py`` reports where the build's time went)."""
        missing = [n for n in self.names if n not in fabric.fd]
        if missing:
            raise ValueError(f"replay: the fabric lacks {len(missing)} recorded namespace(s), e.g. {missing[0]}")
        fds = {slot: fabric.fd[n] for n, slot in self.fd.items()}
        steps, self.steps = self.steps, []
        sent = 0
        if progress is not None:
            progress(0, len(steps))
        for i, step in enumerate(steps):
            t0, kind, count = time.perf_counter(), step.kind(), step.messages()
            if step.nft is not None:
                fabric.nft().transact(*step.nft)
                sent += count
            else:
                for n, b in step.batches.items():
                    if n in step.veths:
                        b.rewrite("veth add", lambda m: m[:-8] + peer_fd_attr(fds[peer_fd_of(m)]))
                    fabric.nl[n].adopt(b)
                sent += fabric.flush(step.batches, step.ok)
            self.timed.append((kind, count, time.perf_counter() - t0))
            if progress is not None:
                progress(i + 1, len(steps))
        return sent
