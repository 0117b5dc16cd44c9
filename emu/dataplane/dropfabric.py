"""A fabric that encodes and drops: the applier without a kernel (no root), for its benchmark and its tests.

Every message is encoded and queued exactly as in a real run (unbound
``NetlinkBatch`` objects), then counted and dropped at ``flush``; the slice
switch's nftables transactions are recorded (``nft_log``) and counted.
Used by ``scripts/bench_applier.py`` (the applier's own CPU) and
``tests/unit/test_slice_switch.py``.
"""

from __future__ import annotations

import contextlib

from emu.dataplane.netlink import NetlinkBatch


class DropFabric:
    """As :class:`emu.dataplane.fabric.Fabric`, but ``flush`` counts (``msgs``) and drops."""

    def __init__(self, names):
        self.names = list(names)
        self.fd = {n: 3 for n in self.names}
        self.nl = {n: NetlinkBatch.unbound(ack_each=False) for n in self.names}
        self.msgs = 0
        self.nft_log: list[tuple[tuple, tuple, str]] = []  # (namespaces, messages, operation) per transaction

    def flush(self, names=None, ok=()) -> int:
        for n in (self.names if names is None else names):
            b = self.nl[n]
            self.msgs += len(b)
            b._init_queue()
        return 0

    def aux(self, name):
        return self.nl[name]

    def nft(self):
        """The slice switch's nftables transactions: recorded, counted, dropped."""
        fab = self

        class _Drop:
            def transact(self, names, msgs, op):
                names = tuple(names)
                fab.nft_log.append((names, msgs, op))
                fab.msgs += len(names) * len(msgs)
        return _Drop()

    def send_behind(self, names, ok=()) -> None:
        self.flush(names)

    def settle(self) -> None:
        pass

    def pipeline(self, ok=()):
        """As Fabric.pipeline, in the caller's thread: each namespace handed over is counted and dropped."""
        return contextlib.nullcontext(lambda name: self.flush([name]))
