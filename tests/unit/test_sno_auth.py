"""HMAC-SHA256 challenge-response, single-use vectors and replay windows (known answers)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from emu.control.sno.auth import HomeKeys, IdSource, ReplayWindow, VectorStore, response, session_key

KEY = bytes(range(32))
RAND = bytes(16)


def test_response_is_hmac_sha256_over_rand_user_and_serving_core():
    want = hmac.new(KEY, b"sno-res\0" + RAND + b"ut1@sno-a\0core-b", hashlib.sha256).hexdigest()
    assert response(KEY, RAND, "ut1@sno-a", "core-b").hex() == want
    assert response(KEY, RAND, "ut1@sno-a", "core-b") != response(KEY, RAND, "ut1@sno-a", "core-c")
    assert session_key(KEY, RAND) == hmac.new(KEY, b"sno-ks\0" + RAND, hashlib.sha256).digest()


def test_vector_accepts_the_right_answer_once():
    home = HomeKeys({"u@a": KEY})
    v = home.issue("u@a", "core-b", now_ns=0, ttl_ns=100)
    store = VectorStore()
    store.put(v)
    assert store.check("u@a", v.rand, response(KEY, v.rand, "u@a", "core-b"), 10) == ("ok", v)
    assert store.check("u@a", v.rand, response(KEY, v.rand, "u@a", "core-b"), 11)[0] == "replay"


def test_wrong_key_wrong_core_and_expiry_are_refused():
    home = HomeKeys({"u@a": KEY})
    for res_key, core, now, want in ((b"x" * 32, "core-b", 10, "wrong-response"),
                                     (KEY, "core-c", 10, "wrong-response"),
                                     (KEY, "core-b", 1000, "expired")):
        store = VectorStore()
        v = home.issue("u@a", "core-b", now_ns=0, ttl_ns=100)
        store.put(v)
        assert store.check("u@a", v.rand, response(res_key, v.rand, "u@a", core), now)[0] == want
        assert store.pending("u@a") is None  # one attempt per challenge
    assert VectorStore().check("u@a", RAND, b"x" * 32, 0)[0] == "no-vector"


def test_replay_window_known_answers():
    w = ReplayWindow(span=100)
    assert w.check(1000) is None
    assert w.check(1000) == "duplicate"
    assert w.check(950) is None  # late but inside the span
    assert w.check(900) == "too-old"
    assert w.check(2000) is None
    assert w.check(1001) == "too-old"


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=200), st.integers(1, 10**5))
def test_replay_window_never_accepts_an_id_twice(ids, span):
    w = ReplayWindow(span=span, limit=16)
    accepted = [i for i in ids if w.check(i) is None]
    assert len(accepted) == len(set(accepted))


def test_id_source_strictly_increases_even_if_the_clock_stalls():
    t = [5]
    ids = IdSource(lambda: t[0])
    a, b = ids(), ids()
    t[0] = 100
    assert a < b < ids() == 100 or b < 100
