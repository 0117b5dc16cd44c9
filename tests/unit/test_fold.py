"""Aggregation with a default per region and exceptions below it (emu.plan.fold), and the churn measures
(emu.plan.churn). Known answers on hand-made regions; hypothesis for exactness on random ones."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.orbit.constellation import DOWN, E, N, S, W
from emu.plan import actions, churn
from emu.plan.routing import aggregate_rows, tables_from_entries
from emu.plan.verify import lookup_all

NORTH = actions.encode(actions.MULTIPATH, {N: 1})
SOUTH = actions.encode(actions.MULTIPATH, {S: 1})
EAST = actions.encode(actions.MULTIPATH, {E: 1})
WEST = actions.encode(actions.MULTIPATH, {W: 1})
BASE = 0x1B400000  # a /11 (base cell bits set as a GRC would have them)


def sub(i: int, plen: int = 29) -> int:
    """The i-th /29 under BASE, spread over different /14 .. /26 regions."""
    return BASE | (i << (32 - plen))


def table(codes_by_dest: list[list[int]], addrs, plens):
    """(dests, sats) codes -> SliceTables."""
    return aggregate_rows(np.array(codes_by_dest, np.int64), np.array(addrs, np.uint32), np.array(plens, np.uint8))


def test_a_region_states_its_common_code_once_and_the_exception_below() -> None:
    addrs = [sub(1), sub(2), sub(3)]  # three /29s in one /26 .. /11 chain of regions
    t = table([[NORTH], [NORTH], [EAST]], addrs, [29, 29, 29])
    _, l, a = t.of(0)
    assert sorted(zip(l.tolist(), a.tolist())) == [(11, NORTH), (29, EAST)]
    assert lookup_all(t, np.array(addrs)).tolist() == [[NORTH, NORTH, EAST]]


def test_terminal_codes_are_stated_at_their_own_prefix_and_no_route_is_never_covered() -> None:
    down = actions.encode(actions.MULTIPATH, {DOWN: 1}, 3)
    addrs = [sub(1), sub(2), sub(3), sub(1, 14)]  # the last one alone in another /14
    t = table([[down], [down], [NORTH], [0]], addrs, [29, 29, 29, 29])
    p, l, a = t.of(0)
    got = sorted(zip(p.tolist(), l.tolist(), a.tolist()))
    # the two Down entries stay /29s; the no-route destination keeps every region above it empty
    assert (sub(1), 29, down) in got and (sub(2), 29, down) in got
    assert all(x[1] > 11 for x in got) and (BASE, 14, NORTH) in got  # NORTH as the default of its /14 only
    assert lookup_all(t, np.array(addrs)).tolist() == [[down, down, NORTH, 0]]


def test_one_changed_answer_costs_one_entry() -> None:
    """Four destinations agree, then one turns: the old fold rewrote the region (1 entry -> 4), here one
    exception appears."""
    addrs = [sub(i, 17) for i in range(4)]
    before = table([[NORTH]] * 4, addrs, [29] * 4)
    after = table([[NORTH], [NORTH], [SOUTH], [NORTH]], addrs, [29] * 4)
    d = churn.entry_diff(before, after)
    assert churn.messages(d) == 1 and len(d["new"]) == 1 and len(d["kept"]) == 1


def test_a_region_keeps_its_parents_code_when_that_is_one_of_its_best() -> None:
    """A two-destination region (a city's GS and UT) split between codes takes the code its parent states, so
    only the destination that differs from it has an entry, whichever of the two moves."""
    gs, ut, a, b = sub(0, 26), sub(1, 26), sub(1, 14), sub(2, 14)  # gs, ut share a /23; a, b elsewhere
    addrs = [gs, ut, a, b]
    t1 = table([[WEST], [NORTH], [WEST], [WEST]], addrs, [29] * 4)
    t2 = table([[WEST], [SOUTH], [WEST], [WEST]], addrs, [29] * 4)
    d = churn.entry_diff(t1, t2)
    assert churn.messages(d) == 1 and len(d["changed"]) == 1
    assert len(t1.prefix) == 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 63), st.sampled_from([20, 23, 26, 29, 32]),
                          st.lists(st.sampled_from([0, NORTH, SOUTH, EAST, WEST]), min_size=3, max_size=3)),
                min_size=1, max_size=24))
def test_every_destination_answers_its_own_code(rows) -> None:
    """Random destinations under one /11 at mixed lengths (nested ones included), three satellites: the
    longest match of each destination's address is its code, or, where that is 0, no route or a coarser
    destination's code (no entry can say 'no route')."""
    addr = np.array([BASE | (x << 15) | (x * 2654435761 & 0x7FFF) for x, _, _ in rows], np.int64)
    plen = np.array([p for _, p, _ in rows], np.int64)
    codes = np.array([c for _, _, c in rows], np.int64)
    key = addr & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
    first = {}
    for i, kp in enumerate(zip(key.tolist(), plen.tolist())):
        first.setdefault(kp, i)
    keep = np.array(sorted(first.values()))
    t = aggregate_rows(codes, addr.astype(np.uint32), plen.astype(np.uint8))
    got = lookup_all(t, addr[keep])
    for j, i in enumerate(keep.tolist()):
        m = (0xFFFFFFFF << (32 - plen[keep])) & 0xFFFFFFFF
        holds = keep[(addr[i] & m) == (addr[keep] & m)]
        holds = holds[np.argsort(-plen[holds], kind="stable")]
        want = codes[holds[0]]
        ok = (got[:, j] == want) | ((want == 0) & ((got[:, j] == 0) | (got[:, j][None, :] == codes[holds[1:]]).any(axis=0)))
        assert ok.all()


def test_churn_classifies_meaning_and_representation() -> None:
    addrs = np.array([sub(1), sub(2), sub(3)], np.int64)
    # satellite 0: destination 2 changes; satellite 1: entries moved with the same answers (hand-made tables)
    a = tables_from_entries(*_entries([(0, BASE, 11, NORTH), (1, sub(1), 29, EAST), (1, sub(2), 29, EAST),
                                       (1, sub(3), 29, EAST)]), 2)
    b = tables_from_entries(*_entries([(0, BASE, 11, NORTH), (0, sub(2), 29, SOUTH), (1, BASE, 11, EAST)]), 2)
    d = churn.entry_diff(a, b)
    moved = lookup_all(a, addrs) != lookup_all(b, addrs)
    c = churn.classify(d, addrs, np.ones(3, bool), moved)
    assert c["new"]["ground_meaning"] == 1  # sat 0's exception
    assert c["new"]["ground_representation"] == 1  # sat 1's /11
    assert c["gone"]["ground_representation"] == 3  # sat 1's three /29s
    assert churn.messages(d) == 5


def _entries(rows):
    from emu.plan.routing import entry_key

    s, p, l, a = (np.array(x) for x in zip(*rows))
    return entry_key(s, p.astype(np.uint32), l.astype(np.uint8)), a.astype(np.int64)


def test_tie_kind_names_how_a_direction_set_moved() -> None:
    ne = actions.encode(actions.MULTIPATH, {N: 1, E: 1})
    got = churn.tie_kind(np.array([NORTH, NORTH, ne, NORTH]), np.array([ne, SOUTH, NORTH, 0]))
    assert got.tolist() == [0, 1, 0, 3]
