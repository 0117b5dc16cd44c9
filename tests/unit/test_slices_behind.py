"""The applier's background link retirement and pipelined sends, without root (fake batches).

spec: grc-based-routing §Time Slice Transition (a retired link is gone before its slot carries a new one).
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest

from emu.dataplane import desired as D
from emu.dataplane.fabric import Fabric
from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.slices import SliceApplier
from emu.errors import DataplaneError


class FakeBatch:
    def __init__(self, fail: bool = False):
        self.queued, self.sent, self.fail = 0, 0, fail

    def __len__(self) -> int:
        return self.queued

    def send(self, ok=()):
        if self.fail:
            raise DataplaneError("link del group", "ns", 1, "refused")
        self.sent, self.queued = self.sent + self.queued, 0
        return SimpleNamespace(sent=self.sent)

    def close(self) -> None:
        pass


def fabric(batches: dict) -> Fabric:
    f = Fabric.__new__(Fabric)
    f.names, f.fd, f.nl, f._aux, f._behind = list(batches), {}, {}, batches, None
    return f


def test_send_behind_writes_every_namespace_and_settle_raises_the_first_failure() -> None:
    ok = {f"n{i}": FakeBatch() for i in range(40)}
    for b in ok.values():
        b.queued = 2
    f = fabric(ok)
    f.send_behind(list(ok), threads=8)
    f.settle()
    assert all(b.sent == 2 and not len(b) for b in ok.values())
    bad = {"a": FakeBatch(), "b": FakeBatch(fail=True)}
    bad["b"].queued = 1
    f = fabric(bad)
    f.send_behind(["a", "b"], threads=2)
    with pytest.raises(DataplaneError, match="refused"):
        f.settle()
    f.settle()  # the failure is raised once


def test_the_pipeline_sends_what_it_is_handed_and_raises_at_the_end() -> None:
    bs = {"a": FakeBatch(), "b": FakeBatch(fail=True)}
    bs["a"].queued = bs["b"].queued = 3
    f = fabric({})
    f.nl = bs
    with pytest.raises(DataplaneError):
        with f.pipeline() as send:
            send("a")
            send("b")
    assert bs["a"].sent == 3


def _veth(slot: int) -> D.Veth:
    return D.Veth("ground", "s1", f"g{slot}", 50 + slot, "u1", f"up{slot}", 50 + slot, retire=3)


def test_a_new_link_waits_for_the_retiring_ones_only_when_it_reuses_their_slot() -> None:
    """_create settles the background deletes before creating a link on a (namespace, ifindex or name) that a
    retiring link still holds, and only then."""
    settled = []
    a = SliceApplier.__new__(SliceApplier)
    a.m = SimpleNamespace(by_name={"s1": SimpleNamespace(netns="p-s1"), "u1": SimpleNamespace(netns="p-u1")},
                          cfg=SimpleNamespace(tbf=False))
    a.f = SimpleNamespace(nl=defaultdict(lambda: NetlinkBatch.unbound(ack_each=False)), fd=defaultdict(int),
                          flush=lambda *args, **kw: 0, settle=lambda: settled.append(1))
    a._retiring = set(a._ends(_veth(0)))
    a._create([_veth(1)])
    assert settled == [] and a._retiring
    a._create([_veth(0)])
    assert settled == [1] and not a._retiring
