"""Segmented longest match vs a brute-force scan. spec: grc-based-routing §Segmented Longest Match."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.addressing.grc import LEGAL_PREFIX_LENGTHS, encode_latlon, prefix_of
from emu.addressing.slm import SegmentedTable
from emu.errors import AddressingError


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF


def _brute(entries: dict, addr: int):
    best = None
    for (prefix, plen), value in entries.items():
        if addr & _mask(plen) == prefix and (best is None or plen > best[1]):
            best = (prefix, plen, value)
    return best


# Few distinct high bits so that prefixes nest and overlap often.
addrs = st.builds(lambda hi, lo: (hi << 24) | lo, st.integers(16, 19), st.integers(0, (1 << 24) - 1))
routes = st.lists(st.tuples(addrs, st.sampled_from(LEGAL_PREFIX_LENGTHS), st.integers(0, 9)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(routes, st.lists(addrs, max_size=30), st.data())
def test_lookup_matches_brute_force(entries, probes, data):
    table, model = SegmentedTable(), {}
    for addr, plen, value in entries:
        prefix = addr & _mask(plen)
        table.insert(prefix, plen, value)
        model[(prefix, plen)] = value
    # delete a few
    for key in data.draw(st.lists(st.sampled_from(sorted(model)), max_size=5, unique=True) if model else st.just([])):
        table.delete(*key)
        del model[key]
    assert len(table) == len(model)
    assert sorted((p, l) for p, l, _ in table) == sorted(model)
    for addr in probes + [a for a, _, _ in entries]:
        assert table.lookup(addr) == _brute(model, addr)


def test_most_specific_wins_on_grc_hierarchy():
    g = encode_latlon(51.5, -0.12, 6, 1, interface=2)
    table = SegmentedTable()
    for level, direction in ((0, "east"), (2, "north"), (5, "down")):
        table.insert(*prefix_of(g, level), direction)
    assert table.lookup(g)[2] == "down"
    table.insert(g, 32, "local")
    assert table.lookup(g) == (g, 32, "local")
    table.delete(g, 32)
    table.delete(*prefix_of(g, 5))
    assert table.lookup(g)[1:] == (17, "north")
    assert table.lookup(0x01000000) is None


def test_insert_replaces_and_contains():
    table = SegmentedTable()
    table.insert(0x12000000, 11, "a")
    table.insert(0x12000000, 11, "b")
    assert len(table) == 1 and table.get(0x12000000, 11) == "b"
    assert (0x12000000, 11) in table and (0x12000000, 14) not in table
    with pytest.raises(KeyError):
        table.delete(0x12000000, 14)


@pytest.mark.parametrize("plen", [0, 8, 12, 24, 33, -1])
def test_illegal_prefix_length(plen):
    with pytest.raises(AddressingError, match=f"plen: .*got {plen}"):
        SegmentedTable().insert(0, plen, "x")


def test_host_bits_and_range():
    table = SegmentedTable()
    with pytest.raises(AddressingError, match="prefix: host bits set for /11"):
        table.insert(0x12000001, 11, "x")
    with pytest.raises(AddressingError, match="prefix:"):
        table.insert(1 << 32, 32, "x")
    with pytest.raises(AddressingError, match="addr:"):
        table.lookup(-1)
