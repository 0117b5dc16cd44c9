"""How a slice's tables are stored and sorted (emu.plan.dbformat.pack_tables, emu.plan.kernels): known answers
against numpy, round trips of random tables across every index width, and damage refused as PlanInputError.
spec: grc-based-routing §Routing Database."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.errors import PlanInputError
from emu.plan.dbformat import _index_dtype, _pack, pack_tables, unpack_tables
from emu.plan.kernels import dictionary
from emu.plan.routing import SliceTables, entry_key, tables_from_entries


def random_tables(rng: np.random.Generator, n_sats: int, n_entries: int, n_pairs: int, n_acts: int) -> SliceTables:
    """Tables of ``n_entries`` entries drawn from ``n_pairs`` (prefix, length) pairs and ``n_acts`` actions."""
    prefixes = rng.integers(0, 2**32, n_pairs, dtype=np.uint64)
    plens = rng.integers(0, 256, n_pairs, dtype=np.uint64)
    acts = rng.integers(-2**63, 2**63 - 1, n_acts, dtype=np.int64)
    pick = rng.integers(0, n_pairs, n_entries)
    sat = np.sort(rng.integers(0, n_sats, n_entries)).astype(np.uint64)
    key = entry_key(sat, prefixes[pick], plens[pick])
    return tables_from_entries(key, acts[rng.integers(0, n_acts, n_entries)], n_sats)


def same(a: SliceTables, b: SliceTables) -> bool:
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in
               zip((a.offsets, a.prefix, a.plen, a.action), (b.offsets, b.prefix, b.plen, b.action)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 3000), spread=st.sampled_from([1, 3, 300, 70_000, 2**62]))
def test_dictionary_is_numpy_unique(seed, n, spread) -> None:
    rng = np.random.default_rng(seed)
    for values in (rng.integers(-spread, spread, n, dtype=np.int64), rng.integers(0, spread, n).astype(np.uint64)):
        got, index = dictionary(values)
        want, inverse = np.unique(values, return_inverse=True)
        assert got.dtype == values.dtype and np.array_equal(got, want)
        assert np.array_equal(index, inverse.ravel())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_sats=st.integers(1, 40), n_entries=st.integers(0, 2000),
       n_pairs=st.sampled_from([1, 2, 256, 257, 1500]), n_acts=st.sampled_from([1, 200, 256, 257]))
def test_tables_round_trip(seed, n_sats, n_entries, n_pairs, n_acts) -> None:
    t = random_tables(np.random.default_rng(seed), n_sats, n_entries, n_pairs, n_acts)
    assert same(unpack_tables(pack_tables(t)), t)


def test_wide_dictionaries_round_trip() -> None:
    """More than 65,536 distinct pairs and actions: four-byte indexes."""
    t = random_tables(np.random.default_rng(7), 50, 400_000, 200_000, 100_000)
    assert min(len(np.unique(t.action)), len(np.unique(t.prefix))) > 1 << 16
    assert same(unpack_tables(pack_tables(t)), t)
    assert [_index_dtype(n) for n in (0, 256, 257, 65536, 65537)] == ["u1", "u1", "<u2", "<u2", "<u4"]


def test_sorted_like_a_stable_argsort() -> None:
    """tables_from_entries: entries in key order, equal keys in the order they come (the numpy reference)."""
    rng = np.random.default_rng(3)
    sat = rng.integers(0, 30, 5000).astype(np.uint64)
    key = entry_key(sat, rng.integers(0, 8, 5000).astype(np.uint64) << np.uint64(24), rng.integers(8, 11, 5000))
    act = rng.integers(0, 2**40, 5000)
    t = tables_from_entries(key, act, 31)
    order = np.argsort(key, kind="stable")
    k = key[order]
    assert np.array_equal(t.action, act[order])
    assert np.array_equal(t.prefix, (k >> np.uint64(8)).astype(np.uint32))
    assert np.array_equal(t.plen, (k & np.uint64(0xFF)).astype(np.uint8))
    assert np.array_equal(t.offsets, np.concatenate([[0], np.cumsum(np.bincount(sat.astype(np.int64), minlength=31))]))


def _frames(t: SliceTables) -> list[np.ndarray]:
    pairs = (t.prefix.astype(np.uint64) << np.uint64(8)) | t.plen
    pv, pi = np.unique(pairs, return_inverse=True)
    av, ai = np.unique(t.action, return_inverse=True)
    return [t.offsets.astype("<i8"), pv.astype("<u8"), pi.astype("u1"), av.astype("<i8"), ai.astype("u1")]


def test_the_stored_layout() -> None:
    """The blob is exactly the documented frames (so another reader can decode it from the docstring)."""
    t = random_tables(np.random.default_rng(1), 5, 300, 40, 9)
    assert zlib.decompress(pack_tables(t)) == zlib.decompress(_pack(*_frames(t)))


@pytest.mark.parametrize("damage", ["index beyond the dictionary", "pair wider than 40 bits", "columns disagree",
                                    "truncated", "trailing", "not zlib"])
def test_damaged_tables_are_refused(damage) -> None:
    t = random_tables(np.random.default_rng(2), 4, 200, 30, 5)
    f = _frames(t)
    if damage == "index beyond the dictionary":
        f[4][-1] = 5
    elif damage == "pair wider than 40 bits":
        f[1][-1] |= np.uint64(1) << np.uint64(40)
    elif damage == "columns disagree":
        f[4] = f[4][:-1]
    blob = _pack(*f)
    if damage == "truncated":
        blob = zlib.compress(zlib.decompress(blob)[:-3])
    elif damage == "trailing":
        blob = zlib.compress(zlib.decompress(blob) + b"\0")
    elif damage == "not zlib":
        blob = b"garbage"
    with pytest.raises(PlanInputError, match="slice 3 tables is damaged"):
        unpack_tables(blob, what="slice 3 tables")
