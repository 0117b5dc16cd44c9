"""The applier's slice switch by mark (emu.dataplane.slices + slicemark), over a fabric that encodes and drops,
recording the nftables transactions (no root): the first slice makes the nftables table (satellites and ground
nodes), a preparation given the boundary's time arms the switch and the switch then writes nothing to the
satellites nor to the ground nodes' defaults, a preparation without a time (or a wall clock stepped back after
arming) makes the switch write the mark itself, and a kernel without the mark switch never gets an nftables
message and replaces the ground defaults at the boundary. The kernel side, with real packets:
tests/integration/test_slicemark.py."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict

import pytest

from emu.dataplane import desired as D
from emu.dataplane import slicemark
from emu.dataplane.model import Model
from emu.dataplane.netlink import NetlinkBatch
from emu.dataplane.nexthops import NexthopTable
from emu.dataplane.dropfabric import DropFabric
from emu.dataplane.runconfig import RunConfig, scenario_of_plan
from emu.dataplane.slices import SliceApplier
from emu.errors import DataplaneError
from emu.plan.db import PlanDB, write_plan
from emu.plan.planner import make_plan

from .helpers import load_default


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    p = tmp_path_factory.mktemp("sw") / "p.db"
    write_plan(make_plan(load_default(), n_slices=6), p)
    return PlanDB(p)


def applier(plan, how: str) -> tuple[SliceApplier, DropFabric]:
    cfg = dataclasses.replace(RunConfig.from_scenario(scenario_of_plan(plan)), slice_switch=how)
    m = Model.from_plan(plan, "zz", cfg=cfg)
    f = DropFabric([x.netns for x in m.nodes])
    return SliceApplier(m, f), f


def M(k: int) -> int:
    return slicemark.slice_mark(k, D.N_TABLES)


class Counted:
    """Counts the messages each kind of operation of the applier queued, by phase."""

    def __init__(self, a: SliceApplier, f: DropFabric):
        self.sent: dict[tuple[str, str], int] = {}
        orig = a._push

        def push(ops, st):
            n0 = f.msgs
            orig(ops, st)
            key = (ops[0].phase, type(ops[0].obj).__name__)
            self.sent[key] = self.sent.get(key, 0) + f.msgs - n0
        a._push = push


def test_armed_preparation_leaves_the_boundary_to_the_kernel(plan) -> None:
    a, f = applier(plan, "mark")
    sats = tuple(s.netns for s in a.m.satellites) + tuple(a.m.by_name[g.name].netns for g in a.m.db.ground)
    a.initial(0)
    assert f.nft_log == [(sats, slicemark.setup_messages(M(0)), "nftables slice mark")]
    f.nft_log.clear()
    at = time.time_ns() + 1_000_000  # 1 ms ahead: the switch is called at the boundary, within the slack
    a.prepare(1, at_ns=at)
    assert f.nft_log == [(sats, slicemark.arm_messages(M(0), M(1), at), "nftables slice mark (armed)")]
    assert not [o for o in a._pending["switch"] if isinstance(o.obj, D.GroundDefault)]
    a.switch(1)
    a.cleanup(1)
    assert len(f.nft_log) == 1  # nothing written at the boundary: the kernel switched at `at`
    # no time given: the switch writes every satellite's mark itself
    f.nft_log.clear()
    a.prepare(2)
    assert f.nft_log == []
    a.switch(2)
    assert f.nft_log == [(sats, slicemark.switch_messages(M(2)), "nftables slice mark")]
    a.cleanup(2)
    # the wall clock stepped back after arming: the boundary came, the armed time is still ahead: written now
    f.nft_log.clear()
    late = time.time_ns() + 60_000_000_000
    a.prepare(3, at_ns=late)
    a.switch(3)
    assert [x[2] for x in f.nft_log] == ["nftables slice mark (armed)", "nftables slice mark"]
    assert f.nft_log[1][1] == slicemark.switch_messages(M(3))


def test_without_the_mark_switch_no_nftables_message_is_sent(plan) -> None:
    a, f = applier(plan, "rules")
    a.initial(0)
    for k in (1, 2):
        a.prepare(k, at_ns=time.time_ns())
        a.switch(k)
        a.cleanup(k)
    assert f.nft_log == []
    assert a.cur.mark is None and {r.family for r in a.cur.rules} == {4, 6}


@pytest.mark.parametrize("how", ["mark", "rules"])
def test_ground_defaults_are_written_in_the_preparation_under_the_mark(plan, how) -> None:
    """Mark: every ground node's two default routes (IPv4, IPv6 GRC /96) into slice k's table while preparing,
    none at the boundary, and unmarked lookups' table after it where the satellite changed. Rules: at the
    boundary, in main, where the satellite changed."""
    a, f = applier(plan, how)
    a.initial(0)
    c = Counted(a, f)
    n_ground, moved = len(a.m.db.ground), 0
    for k in range(1, 6):
        a.prepare(k, at_ns=time.time_ns())
        a.switch(k)
        a.cleanup(k)
        moved += sum(1 for g, x in a.cur.ground.items() if x.via != a.desired.state(k - 1).ground[g].via)
    assert moved > 0
    if how == "mark":
        assert c.sent[("prepare", "GroundDefault")] == 5 * 2 * n_ground
        assert ("switch", "GroundDefault") not in c.sent
        assert c.sent[("cleanup", "GroundDefault")] == 2 * moved
    else:
        assert c.sent[("switch", "GroundDefault")] == 2 * moved
        assert ("prepare", "GroundDefault") not in c.sent and ("cleanup", "GroundDefault") not in c.sent


class _Recording(DropFabric):
    """Keeps every namespace's messages in order (the pipeline and the background deletes included)."""

    def __init__(self, names):
        super().__init__(names)
        self.log: dict[str, list[bytes]] = {n: [] for n in self.names}

    def flush(self, names=None, ok=()) -> int:
        for n in (self.names if names is None else names):
            self.log[n] += self.nl[n].messages()
        return super().flush(names, ok)


def test_every_route_names_an_object_written_before_it(plan) -> None:
    """Over initial + 5 boundaries with nexthop objects: each satellite route message naming an object comes
    after that object's creation in its namespace (and none names one the applier deleted); routes carry no
    hops of their own; the objects per namespace stay few (one per neighbour and weighted set)."""
    import struct

    from emu.dataplane import nexthops as N

    cfg = dataclasses.replace(RunConfig.from_scenario(scenario_of_plan(plan)), slice_switch="mark", nexthops=True)
    m = Model.from_plan(plan, "zz", cfg=cfg)
    f = _Recording([x.netns for x in m.nodes])
    a = SliceApplier(m, f)
    a.initial(0)
    for k in range(1, 6):
        a.prepare(k, at_ns=time.time_ns())
        a.switch(k)
        a.cleanup(k)
    named = 0
    for s in m.satellites:
        live: set[int] = set()
        made = 0
        for msg in f.log[s.netns]:
            mtype = struct.unpack_from("=H", msg, 4)[0]
            if mtype not in (N.RTM_NEWNEXTHOP, N.RTM_DELNEXTHOP, 24):  # nexthops and RTM_NEWROUTE only
                continue
            attrs, off = {}, 16 + (8 if mtype != 24 else 12)  # struct nhmsg / struct rtmsg
            while off + 4 <= len(msg):
                alen, atype = struct.unpack_from("=HH", msg, off)
                assert alen >= 4
                attrs[atype & 0x3FFF] = msg[off + 4:off + alen]
                off += (alen + 3) & ~3
            if mtype == N.RTM_NEWNEXTHOP:
                live.add(struct.unpack("=I", attrs[N.NHA_ID])[0])
                made += 1
            elif mtype == N.RTM_DELNEXTHOP:
                live.discard(struct.unpack("=I", attrs[N.NHA_ID])[0])
            elif mtype == 24 and N.RTA_NH_ID in attrs:  # RTM_NEWROUTE
                assert struct.unpack("=I", attrs[N.RTA_NH_ID])[0] in live
                assert not {5, 9, 19} & set(attrs)  # RTA_GATEWAY, RTA_MULTIPATH, RTA_VIA
                named += 1
        assert made <= 64, (s.name, made)
    assert named > 1000


def test_objects_gone_behind_the_applier_are_written_again(plan) -> None:
    """A satellite's nexthop object removed by the kernel behind the applier's back (its interface lost carrier)
    makes the next fill fail with EINVAL there: that satellite's objects and routes are forgotten and written
    again, with new ids, and the satellites whose writes were held back are sent."""
    import contextlib
    import errno

    from emu.errors import DataplaneError

    class _Fails(_Recording):
        def __init__(self, names, bad):
            super().__init__(names)
            self.bad, self.failed = bad, 0

        def pipeline(self, ok=()):
            fab = self

            @contextlib.contextmanager
            def cm():
                handed: list[str] = []
                yield handed.append
                for i, name in enumerate(handed):
                    fab.flush([name])
                    if name == fab.bad and not fab.failed:
                        fab.failed += 1  # the kernel answered EINVAL; the sender stops: the rest stay queued
                        raise DataplaneError("route replace", name, errno.EINVAL, "Nexthop id does not exist")
            return cm()

    cfg = dataclasses.replace(RunConfig.from_scenario(scenario_of_plan(plan)), slice_switch="mark", nexthops=True)
    m = Model.from_plan(plan, "zz", cfg=cfg)
    bad = m.satellites[3]
    f = _Fails([x.netns for x in m.nodes], bad.netns)
    a = SliceApplier(m, f)
    a.initial(0)
    assert f.failed == 1
    before = {s.netns: len(f.log[s.netns]) for s in m.satellites}
    assert all(not len(f.nl[s.netns]) for s in m.satellites)  # every queue sent, the held-back ones too
    # the bad satellite's table was written again in full, with objects whose ids are all new
    from emu.dataplane import nexthops as N

    routes = [x for x in f.log[bad.netns] if int.from_bytes(x[4:6], "little") == 24]
    assert len(routes) >= 4 * len(a.tables[(bad.index, D.table_id(0))])  # both families, twice
    made = [int.from_bytes(x[28:32], "little") for x in f.log[bad.netns]
            if int.from_bytes(x[4:6], "little") == N.RTM_NEWNEXTHOP]  # NHA_ID: the first attribute
    assert len(made) == len(set(made)) >= 2 * len(a.nexthops[bad.index])
    a.prepare(1, at_ns=time.time_ns())
    assert all(len(f.log[s.netns]) >= before[s.netns] for s in m.satellites)


def test_adopt_takes_over_an_encoded_queue() -> None:
    early, late = NetlinkBatch.unbound(ack_each=False), NetlinkBatch.unbound(ack_each=False)
    early.route("replace", "10.0.0.0", 8, oif=1, table=100)
    early.route("replace", "10.1.0.0", 16, oif=1, table=100)
    msgs = early.messages()
    late.adopt(early)
    assert late.messages() == msgs and len(late) == 2 and len(early) == 0
    early.route("replace", "10.2.0.0", 16, oif=1, table=100)
    with pytest.raises(DataplaneError):
        late.adopt(early)            # only onto an empty queue


@pytest.mark.parametrize("how", ["mark", "rules"])
def test_warmed_tables_make_the_first_preparations_diffs_and_hold_each_slice_s_routes(plan, how) -> None:
    """``warm`` writes slice k0's routes into the tables of slices k0+1 and k0+2 before the clock starts: the
    first two preparations then send only what changed since k0, and every table ends up holding its slice's
    routes exactly as without warming (the applier's record of each table is what the plan says)."""
    sent = {}
    tables = {}
    for warmed in (False, True):
        a, f = applier(plan, how)
        a.initial(0)
        if warmed:
            m0 = f.msgs
            a.warm(plan.n_slices)
            assert f.msgs > m0  # the two tables were written
        counts = []
        for k in (1, 2, 3):
            m0 = f.msgs
            a.prepare(k)
            counts.append(f.msgs - m0)
            a.switch(k)
            a.cleanup(k)
        sent[warmed] = counts
        tables[warmed] = {key: dict(v) for key, v in a.tables.items()}
        want = a.desired.state(3).routes
        assert all(a.tables[(s, D.table_id(3))] == want[s] for s in want)
    assert tables[True] == tables[False]
    assert sent[True][0] < sent[False][0] and sent[True][1] < sent[False][1]  # diffs, not whole tables
    assert sent[True][2] == sent[False][2]  # from slice k0+3 on, the same diffs


def test_warm_stops_at_the_run_s_last_slice(plan) -> None:
    a, f = applier(plan, "mark")
    a.initial(0)
    m0 = f.msgs
    a.warm(1)  # a one-slice run: no table to warm
    assert f.msgs == m0
    a.warm(2)
    one = f.msgs - m0
    a2, f2 = applier(plan, "mark")
    a2.initial(0)
    m0 = f2.msgs
    a2.warm(plan.n_slices)
    assert 0 < one < f2.msgs - m0


def test_bound_grcs_ipv6_twins_each_go_on_their_own_interface(plan) -> None:
    """``_addrs``: each bound GRC's IPv6 twin is a local /128 on the interface its IPv4 address is bound to,
    also when one namespace binds several on different interfaces in one call (sent in one bulk write)."""
    import socket

    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    a, f = applier(plan, "mark")
    sent: dict[str, list[bytes]] = defaultdict(list)
    drop = f.flush

    def flush(names=None, ok=()):
        for n in (f.names if names is None else names):
            sent[n] += f.nl[n].messages()
        return drop(names, ok)
    f.flush = flush
    items = [(0, "10.9.0.1", 5), (0, "10.9.0.2", 7), (1, "10.9.0.3", 6), (0, "10.9.0.4", 5)]
    a._addrs(items, "add", ok={17})
    for s in (0, 1):
        want = {D.grc_twin6(addr, a.desired.base6): idx for sat, addr, idx in items if sat == s}
        got = {}
        for data in sent[a.sat_ns(s)]:
            if int.from_bytes(data[4:6], "little") != 24:  # RTM_NEWROUTE (the IPv4 addresses are RTM_NEWADDR)
                continue
            m = rtmsg(data)
            m.decode()
            assert m["family"] == socket.AF_INET6 and m["dst_len"] == 128 and m["table"] == D.RT_TABLE_LOCAL
            got[m.get_attr("RTA_DST")] = m.get_attr("RTA_OIF")
        assert got == want, s
