"""Semantic addresses and neighbour relations. spec: satellite-semantic-addressing §4.3, §5.4."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.addressing import semantic as sem
from emu.addressing.semantic import SemanticAddress
from emu.errors import AddressingError

byte = st.integers(0, 255)
nibble = st.integers(0, 15)


def test_known_answers():
    assert sem.ipv6_address(1, 2, 3, 4, 5) == "fd00:5a7::102:304:500:0"
    assert sem.ipv6_address(255, 255, 255, 255, 255, prefix="2001:db8:0:1::/64") == "2001:db8:0:1:ffff:ffff:ff00:0"
    assert sem.mac_address(2, 3, 4, 5) == "02:00:5a:20:30:45"
    assert sem.mac_address(15, 255, 255, 15, oui="0a-bb-cc") == "0a:bb:cc:ff:ff:ff"
    assert sem.ipv4_semantic(1, 2, 3, 4) == "1.2.3.4"
    assert int(ipaddress.IPv6Address(sem.ipv6_address(0, 0, 0, 0))) & 0xFFFFFF == 0  # reserved
    assert int(sem.DEFAULT_OUI.replace(":", ""), 16) >> 16 & 0x02  # locally administered


@settings(max_examples=100, deadline=None)
@given(byte, byte, byte, byte, byte)
def test_ipv6_round_trip(owner, shell, orbit, sat, intf):
    text = sem.ipv6_address(owner, shell, orbit, sat, intf)
    assert sem.parse_ipv6(text, prefix=sem.DEFAULT_SEMANTIC_IPV6_PREFIX) == SemanticAddress(owner, shell, orbit, sat, intf)


@settings(max_examples=100, deadline=None)
@given(nibble, byte, byte, nibble)
def test_mac_round_trip(shell, orbit, sat, intf):
    text = sem.mac_address(shell, orbit, sat, intf)
    assert sem.parse_mac(text, oui=sem.DEFAULT_OUI) == SemanticAddress(None, shell, orbit, sat, intf)
    assert sem.parse_mac(text.upper().replace(":", "-")) == SemanticAddress(None, shell, orbit, sat, intf)


@settings(max_examples=100, deadline=None)
@given(byte, byte, byte, byte)
def test_ipv4_round_trip(owner, shell, orbit, sat):
    text = sem.ipv4_semantic(owner, shell, orbit, sat)
    assert sem.parse_ipv4_semantic(text) == SemanticAddress(owner, shell, orbit, sat, None)


def test_input_errors_name_field_and_value():
    cases = [
        (lambda: sem.ipv6_address(256, 0, 0, 0), "owner: must be 0..255 (got 256)"),
        (lambda: sem.ipv6_address(0, 0, -1, 0), "orbit: must be 0..255 (got -1)"),
        (lambda: sem.ipv6_address(0, 0, 0, 0, 300), "intf: must be 0..255 (got 300)"),
        (lambda: sem.ipv6_address(0, 0, 0, 0, prefix="fd00::/48"), "prefix: must be a /64"),
        (lambda: sem.mac_address(16, 0, 0), "shell: must be 0..15 in the MAC form (got 16)"),
        (lambda: sem.mac_address(0, 0, 0, 16), "intf: must be 0..15 in the MAC form (got 16)"),
        (lambda: sem.mac_address(0, 0, 0, oui="02:00"), "oui: must be 3 octets"),
        (lambda: sem.mac_address(0, 0, 0, oui="01:00:5e"), "oui: multicast bit set"),
        (lambda: sem.ipv4_semantic(0, 0, 0, 999), "sat: must be 0..255 (got 999)"),
        (lambda: sem.parse_ipv6("fd00:5a7::102:304:500:1"), "reserved bits"),
        (lambda: sem.parse_ipv6("fd00:5a8::102:304:500:0", prefix="fd00:5a7::/64"), "outside"),
        (lambda: sem.parse_ipv6("nope"), "address:"),
        (lambda: sem.parse_mac("02:00:5a:20:30"), "mac:"),
        (lambda: sem.parse_mac("02:00:5b:20:30:45", oui="02:00:5a"), "mac: OUI"),
        (lambda: sem.parse_ipv4_semantic("1.2.3.256"), "address:"),
    ]
    for call, message in cases:
        with pytest.raises(AddressingError) as err:
            call()
        assert message in str(err.value)


def A(shell, orbit, sat, owner=1):
    return SemanticAddress(owner, shell, orbit, sat, 0)


@pytest.mark.parametrize(
    "a, b, kind, steady",
    [
        (A(0, 5, 10), A(0, 5, 11), "front", True),
        (A(0, 5, 10), A(0, 5, 9), "back", True),
        (A(0, 5, 21), A(0, 5, 0), "front", True),  # wraps inside the plane
        (A(0, 5, 0), A(0, 5, 21), "back", True),
        (A(0, 5, 10), A(0, 6, 3), "right", True),
        (A(0, 5, 10), A(0, 4, 17), "left", True),
        (A(0, 71, 10), A(0, 0, 10), "right", False),  # across the seam
        (A(0, 0, 10), A(0, 71, 10), "left", False),
        (A(0, 5, 10), A(1, 40, 2), "above", False),
        (A(1, 5, 10), A(0, 5, 10), "below", False),
        (A(0, 5, 10), A(2, 5, 10), "none", False),
        (A(0, 5, 10), A(0, 5, 12), "none", False),
        (A(0, 5, 10), A(0, 7, 10), "none", False),
        (A(0, 5, 10), A(0, 5, 10), "none", False),
        (A(0, 5, 10), A(0, 5, 11, owner=2), "front", True),  # owners play no part (§4.3)
        (A(0, 5, 10, owner=1), A(0, 6, 10, owner=2), "right", True),  # two operators' neighbouring planes
    ],
)
def test_relation_table(a, b, kind, steady):
    assert sem.relation(a, b, n_orbits=72, n_sats=22) == sem.Relation(kind, steady)


def test_relation_seam_polar_and_missing_fields():
    a, b = A(0, 71, 3), A(0, 0, 3)
    assert sem.relation(a, b, 72, 22, seam=False) == sem.Relation("right", True)  # Walker delta
    assert sem.relation(A(0, 5, 1), A(0, 6, 1), 72, 22, in_polar_region=True) == sem.Relation("right", False)
    assert sem.relation(A(0, 5, 1), A(0, 5, 2), 72, 22, in_polar_region=True) == sem.Relation("front", True)
    mac_a, mac_b = sem.parse_mac(sem.mac_address(0, 5, 1)), sem.parse_mac(sem.mac_address(0, 5, 2))
    assert sem.relation(mac_a, mac_b, 72, 22).kind == "front"  # owner unknown: still comparable
    with pytest.raises(AddressingError, match=r"a.sat: must be 0..21 \(got 30\)"):
        sem.relation(A(0, 5, 30), A(0, 5, 2), 72, 22)
    with pytest.raises(AddressingError, match="b.orbit: must be set"):
        sem.relation(A(0, 5, 3), SemanticAddress(1, 0, None, 3, 0), 72, 22)
    with pytest.raises(AddressingError, match="n_sats"):
        sem.relation(A(0, 5, 3), A(0, 5, 4), 72, 0)


@settings(max_examples=100, deadline=None)
@given(st.integers(3, 80), st.integers(3, 60), st.data())
def test_relation_is_antisymmetric(n_orbits, n_sats, data):
    a = A(data.draw(st.integers(0, 3)), data.draw(st.integers(0, n_orbits - 1)), data.draw(st.integers(0, n_sats - 1)))
    b = A(data.draw(st.integers(0, 3)), data.draw(st.integers(0, n_orbits - 1)), data.draw(st.integers(0, n_sats - 1)))
    opposite = {"front": "back", "back": "front", "left": "right", "right": "left",
                "above": "below", "below": "above", "none": "none"}
    ab, ba = sem.relation(a, b, n_orbits, n_sats), sem.relation(b, a, n_orbits, n_sats)
    assert ba.kind == opposite[ab.kind] and ab.steady == ba.steady
