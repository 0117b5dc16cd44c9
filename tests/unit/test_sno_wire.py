"""SNO protocol messages: encode/decode round trips (hypothesis), tags, malformed input named."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.control.sno import auth
from emu.control.sno.wire import HEADER, SCHEMA, Attr, Message, Msg, WireError, decode, encode

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)
_VALUES = {
    Attr.USER: _text, Attr.CORE: _text, Attr.TARGET: _text, Attr.REASON: _text,
    Attr.RAND: st.binary(min_size=16, max_size=16),
    Attr.RES: st.binary(min_size=32, max_size=32), Attr.XRES: st.binary(min_size=32, max_size=32),
    Attr.KS: st.binary(min_size=32, max_size=32), Attr.LLADDR: st.binary(min_size=6, max_size=6),
    Attr.PREFIX: st.builds(lambda a, n: ipaddress.IPv4Network((a, n), strict=False),
                           st.integers(0, 2**32 - 1), st.integers(0, 32)),
    Attr.PREFIX6: st.builds(lambda a, n: ipaddress.IPv6Network((a, n), strict=False),
                            st.integers(0, 2**128 - 1), st.integers(0, 128)),
    Attr.COA: st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)),
    Attr.ENDPOINT: st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)),
    Attr.INNER: st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)),
    Attr.VNI: st.integers(0, 2**32 - 1), Attr.EXPIRES: st.integers(0, 2**64 - 1),
    Attr.AT: st.integers(0, 2**64 - 1), Attr.OK: st.integers(0, 1),
}


@st.composite
def messages(draw):
    t = draw(st.sampled_from(list(Msg)))
    need, may = SCHEMA[t]
    names = sorted(need - {Attr.AUTH}) + draw(st.lists(st.sampled_from(sorted(may)), unique=True)
                                              if may else st.just([]))
    attrs = {a: draw(_VALUES[a]) for a in names}
    return Message(t, draw(st.integers(0, 2**64 - 1)), attrs), Attr.AUTH in need


@given(messages(), st.binary(min_size=32, max_size=32))
def test_round_trip(m, key):
    msg, signed = m
    data = encode(msg, key if signed else None)
    back = decode(data)
    assert back.type == msg.type and back.msg_id == msg.msg_id
    assert {a: v for a, v in back.attrs.items() if a != Attr.AUTH} == msg.attrs
    assert encode(back, key if signed else None) == data  # canonical
    if signed:
        assert auth.check_tag(key, back.signed, back[Attr.AUTH])


@given(messages(), st.integers(0, 10_000), st.integers(0, 255))
def test_a_flipped_byte_is_refused_or_fails_the_tag(m, pos, flip):
    msg, signed = m
    key = b"k" * 32
    data = bytearray(encode(msg, key if signed else None))
    pos %= len(data)
    data[pos] ^= flip or 1
    try:
        back = decode(bytes(data))
    except WireError:
        return
    if signed:
        assert not auth.check_tag(key, back.signed, back[Attr.AUTH]) or back.attrs != msg.attrs


def test_known_bytes():
    m = Message(Msg.DISCOVER, 1, {Attr.USER: "ut1@sno-a"})
    assert encode(m) == b"SN\x01\x01\x00\x1c\x00\x00" + struct.pack("!Q", 1) + b"\x01\x00\x09ut1@sno-a"


@pytest.mark.parametrize("data, field", [
    (b"SN", "header"),
    (b"XX\x01\x01\x00\x10\x00\x00" + bytes(8), "magic"),
    (b"SN\x02\x01\x00\x10\x00\x00" + bytes(8), "version"),
    (b"SN\x01\x63\x00\x10\x00\x00" + bytes(8), "type"),
    (b"SN\x01\x01\x00\x20\x00\x00" + bytes(8), "length"),
    (b"SN\x01\x01\x00\x10\x00\x00" + bytes(8), "DISCOVER.USER"),
    (b"SN\x01\x01\x00\x14\x00\x00" + bytes(8) + b"\x01\x00\x09\x00", "attribute"),
    (b"SN\x01\x01\x00\x15\x00\x00" + bytes(8) + b"\x63\x00\x02ab", "attribute"),
    (b"SN\x01\x01\x00\x15\x00\x00" + bytes(8) + b"\x05\x00\x02ab", "RAND"),
    (b"SN\x01\x01\x00\x18\x00\x00" + bytes(8) + b"\x01\x00\x01a\x01\x00\x01b", "USER"),
    (b"SN\x01\x01\x00\x1b\x00\x00" + bytes(8) + b"\x01\x00\x01a\x0d\x00\x04abcd", "DISCOVER.VNI"),
])
def test_malformed_messages_name_the_field(data, field):
    with pytest.raises(WireError) as e:
        decode(data)
    assert e.value.field == field


def test_encode_refuses_missing_and_foreign_attributes():
    with pytest.raises(WireError, match="CHALLENGE.CORE"):
        encode(Message(Msg.CHALLENGE, 1, {Attr.USER: "u@r", Attr.RAND: b"r" * 16}))
    with pytest.raises(WireError, match="REGISTERED.AUTH"):
        encode(Message(Msg.REGISTERED, 1, {Attr.USER: "u@r", Attr.CORE: "c", Attr.RAND: b"r" * 16,
                                           Attr.PREFIX: ipaddress.IPv4Network("10.0.0.0/8")}))
    with pytest.raises(WireError, match="RAND"):
        encode(Message(Msg.RESPONSE, 1, {Attr.USER: "u@r", Attr.RAND: b"short", Attr.RES: b"x" * 32}))
    assert HEADER.size == 16
