"""The first slice encoded before its namespaces exist (emu.dataplane.ahead.Recorder) and replayed once they do
sends exactly what the builder and the applier send when they write to the fabric themselves: the same
messages in the same order, each veth naming its peer's real namespace fd, the same nftables transactions,
the same tolerated errors per write. No root: the fabric encodes and drops (DropFabric)."""

from __future__ import annotations

import dataclasses

import pytest

from emu.dataplane.ahead import FD_SLOT_BASE, Recorder
from emu.dataplane.build import Builder
from emu.dataplane.dropfabric import DropFabric
from emu.dataplane.model import Model
from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.rtpack import peer_fd_of
from emu.dataplane.runconfig import RunConfig, scenario_of_plan
from emu.dataplane.slices import SliceApplier
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan

from .helpers import load_default


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    p = tmp_path_factory.mktemp("ahead") / "p.db"
    write_plan(make_plan(load_default(), n_slices=3), p)
    return PlanDB(p)


class Capture(DropFabric):
    """A DropFabric whose namespaces have distinct fds, logging every write: (namespace, messages with their
    sequence numbers zeroed, tolerated errnos), in order."""

    def __init__(self, names):
        super().__init__(names)
        self.fd = {n: 100 + i for i, n in enumerate(self.names)}
        self.writes: list[tuple[str, tuple[bytes, ...], frozenset]] = []

    def flush(self, names=None, ok=()) -> int:
        sent = 0
        for n in (self.names if names is None else names):
            msgs = self.nl[n].messages()
            if msgs:
                self.writes.append((n, tuple(m[:8] + b"\0\0\0\0" + m[12:] for m in msgs), frozenset(ok)))
                sent += len(msgs)
        super().flush(names, ok)
        return sent  # as Fabric.flush

    def pipeline(self, ok=()):
        import contextlib

        return contextlib.nullcontext(lambda name: self.flush([name], ok))


def first_slice(plan, fabric_for):
    cfg = RunConfig.from_scenario(scenario_of_plan(plan))
    m = Model.from_plan(plan, "zz", cfg=dataclasses.replace(cfg, slice_switch="mark", tbf=True))
    names = [n.netns for n in m.nodes]
    out = Capture(names)
    f = fabric_for(names, out)
    b, a = Builder(m, None, None), SliceApplier(m, None)
    b.fabric = a.f = f
    b.create_links(0)
    a.initial(0)
    if isinstance(f, Recorder):
        assert not out.writes and f.steps  # nothing sent while recording
        assert f.replay(out) == out.msgs > 0
    return out, a


def test_a_recorded_first_slice_replays_as_written_directly(plan) -> None:
    direct, a1 = first_slice(plan, lambda names, out: out)
    replayed, a2 = first_slice(plan, lambda names, out: Recorder(names))
    assert [w[0] for w in replayed.writes] == [w[0] for w in direct.writes]
    assert replayed.writes == direct.writes  # messages (peer fds patched in), order, tolerated errors
    assert replayed.nft_log == direct.nft_log and direct.nft_log
    assert a1.tables == a2.tables
    veths = [m for _n, msgs, _ok in direct.writes for m in msgs if m[4:6] == (16).to_bytes(2, "little")
             and peer_fd_of_or_none(m) is not None]
    assert veths and {peer_fd_of(m) for m in veths} <= set(direct.fd.values())


def test_the_replay_times_each_step_with_its_kind_and_messages(plan) -> None:
    rec = {}

    def recorder(names, out):
        rec["r"] = Recorder(names)
        return rec["r"]
    out, _a = first_slice(plan, recorder)
    timed = rec["r"].timed
    assert sum(n for _k, n, _s in timed) == out.msgs  # every message in exactly one timed step
    assert all(s >= 0 for _k, _n, s in timed)
    kinds = [k for k, _n, _s in timed]
    # the first veths come before the first link up, the tables after both; the switch is an nft step
    assert {"veths", "link ups", "routes", "rules", "qdiscs", "tunnels", "nftables"} <= set(kinds)
    assert kinds.index("veths") < kinds.index("link ups") < kinds.index("routes")


def peer_fd_of_or_none(m: bytes):
    try:
        return peer_fd_of(m)
    except ValueError:
        return None


def test_recorder_hands_out_placeholder_fds_and_replays_onto_the_fabric_s_own() -> None:
    rec = Recorder(["a", "b"])
    assert min(rec.fd.values()) >= FD_SLOT_BASE
    rec.nl["a"].veth("x", "y", rec.fd["b"], index=10, peer_index=11)
    rec.nl["a"].link_set(10, up=True)
    rec.nl["b"].link_set(1, up=True)
    rec.flush(["b"])                 # another namespace's write comes between the veth and its own
    rec.flush(["a"], ok={17})
    rec.nl["a"].link_set(10, up=False)     # queued after the flush: a step of its own
    rec.flush()
    out = Capture(["a", "b"])
    rec.replay(out)
    assert [(n, len(m), ok) for n, m, ok in out.writes] == [("b", 1, frozenset()), ("a", 2, frozenset({17})),
                                                            ("a", 1, frozenset())]
    assert peer_fd_of(out.writes[1][1][0]) == out.fd["b"]
    plain = NetlinkBatch.unbound(ack_each=False)
    plain.veth("x", "y", out.fd["b"], index=10, peer_index=11)
    assert out.writes[1][1][0][12:] == plain.messages()[0][12:]


def test_a_namespace_handed_over_twice_in_one_pipeline_is_refused() -> None:
    rec = Recorder(["a"])
    with pytest.raises(ValueError), rec.pipeline() as send:
        rec.nl["a"].link_set(1, up=True)
        send("a")
        rec.nl["a"].link_set(1, up=True)
        send("a")
