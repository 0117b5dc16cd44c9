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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from emu.dataplane.netlink import AHEAD_SEQ, NetlinkBatch
from emu.dataplane.rtpack import peer_fd_attr, peer_fd_of

FD_SLOT_BASE = 1 << 30  # placeholder "fds" of a recording (a real fd is below fs.nr_open, at most 2^30 - 64)


def _batch() -> NetlinkBatch:
    """An unbound batch as the fabric's: no per-message acks; sequence numbers far from a socket's own."""
    return NetlinkBatch.unbound(ack_each=False, seq=AHEAD_SEQ)


@dataclass
class Step:
    """What one ``flush`` (or one pipeline, or one nftables transaction) of the recorded code sent."""

    batches: dict[str, NetlinkBatch] = field(default_factory=dict)  # netns -> its messages, in flush order
    ok: frozenset[int] = frozenset()
    nft: tuple | None = None  # (namespaces, messages, operation) of an nftables transaction instead
    links: bool = False  # may hold veth requests naming a placeholder fd (one was handed out since the last step)

    def messages(self) -> int:
        if self.nft is not None:
            return len(self.nft[0]) * len(self.nft[1])
        return sum(len(b) for b in self.batches.values())


class _Slots(dict):
    """Namespace name -> placeholder fd, noting that one was handed out (the step it goes into has veths)."""

    used = False

    def __getitem__(self, name: str) -> int:
        self.used = True
        return dict.__getitem__(self, name)


class Recorder:
    """A fabric for ``names`` that records instead of sending (see the module's doc)."""

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.fd = _Slots((n, FD_SLOT_BASE + i) for i, n in enumerate(self.names))
        self.nl = {n: _batch() for n in self.names}
        self.steps: list[Step] = []

    def _take(self, names: Iterable[str], step: Step) -> None:
        """Move the queues of ``names`` into ``step`` (each namespace's batch stays, empty, numbering on)."""
        step.links |= self.fd.used
        self.fd.used = False
        for n in names:
            b = self.nl[n]
            if len(b):
                if n in step.batches:
                    raise ValueError(f"{n}: handed over twice in one step")
                step.batches[n] = kept = _batch()
                kept.adopt(b)

    def flush(self, names: Iterable[str] | None = None, ok=()) -> int:
        step = Step(ok=frozenset(ok))
        self._take(self.names if names is None else names, step)
        if step.batches:
            self.steps.append(step)
        return 0

    def pipeline(self, ok=()):
        """As :meth:`Fabric.pipeline`: every namespace handed over within the block goes into one step."""
        rec = self

        class _Block:
            def __enter__(self):
                self.step = Step(ok=frozenset(ok))
                return lambda name: rec._take([name], self.step)

            def __exit__(self, exc_type, exc, tb):
                if exc_type is None and self.step.batches:
                    rec.steps.append(self.step)
        return _Block()

    def nft(self):
        rec = self

        class _Nft:
            def transact(self, names, msgs, op):
                rec.steps.append(Step(nft=(tuple(names), msgs, op)))
        return _Nft()

    def settle(self) -> None:
        """Nothing is retiring while the first slice is recorded."""

    def messages(self) -> int:
        return sum(s.messages() for s in self.steps)

    def close(self) -> None:
        """What was recorded and not replayed is dropped (nothing is open)."""
        self.steps = []

    def replay(self, fabric, progress: Callable[[int, int], None] | None = None) -> int:
        """Send every step on ``fabric`` in order (namespaces it does not hold are skipped); returns messages
        sent. Raises the first failure of a step, after that step, as the recorded code's flush would have."""
        fds = {slot: fabric.fd[n] for n, slot in self.fd.items() if n in fabric.fd}
        steps, self.steps = self.steps, []
        sent = 0
        for i, step in enumerate(steps):
            if step.nft is not None:
                names, msgs, op = step.nft
                fabric.nft().transact([n for n in names if n in fabric.fd], msgs, op)
                sent += step.messages()
            else:
                here = [n for n in step.batches if n in fabric.fd]
                for n in here:
                    b = step.batches[n]
                    if step.links:
                        b.rewrite("veth add", lambda m: m[:-8] + peer_fd_attr(fds[peer_fd_of(m)]))
                    fabric.nl[n].adopt(b)
                sent += fabric.flush(here, step.ok)
            if progress is not None:
                progress(i + 1, len(steps))
        return sent
