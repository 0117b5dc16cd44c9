"""GRC encoding against the h3 library. spec: grc-based-routing §GRC encoding."""

from __future__ import annotations

import ipaddress

import h3
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from emu.addressing import grc
from emu.errors import AddressingError

ALLOWED_CODES = [c for c in range(16) if c not in grc.FORBIDDEN_SHELL_CODES]
PENTAGONS = {r: h3.get_pentagons(r) for r in range(grc.LEVEL_MAX + 1)}

lats = st.floats(min_value=-90.0, max_value=90.0, allow_nan=False)
lons = st.floats(min_value=-180.0, max_value=180.0, allow_nan=False)
levels = st.integers(0, grc.LEVEL_MAX)
codes = st.sampled_from(ALLOWED_CODES)
interfaces = st.integers(0, grc.INTERFACE_MAX)
FAST = settings(max_examples=150, deadline=None)


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF


# -- known answers --------------------------------------------------------------


def test_san_francisco_known_answer():
    cell = h3.latlng_to_cell(37.7749, -122.4194, 6)
    g = grc.encode_latlon(37.7749, -122.4194, 6, shell_code=1, interface=3)
    idx = h3.str_to_int(cell)
    assert g >> 28 == 1
    assert (g >> 21) & 0x7F == h3.get_base_cell_number(cell) == (idx >> 45) & 0x7F
    assert (g >> 3) & 0x3FFFF == (idx >> 27) & 0x3FFFF
    assert g & 7 == 3
    info = grc.decode(g)
    assert info.cell == cell and info.level == 6 and info.interface == 3 and info.shell_code == 1
    for k in range(7):
        parent = h3.cell_to_parent(cell, k)
        assert grc.decode(grc.encode_cell(parent, 1)).cell == parent


def test_level0_cell_keeps_sevens():
    cell = h3.get_res0_cells()[5]
    g = grc.encode_cell(cell, 2)
    assert (g >> 3) & 0x3FFFF == 0x3FFFF  # six digits of 0b111
    info = grc.decode(g)
    assert info.level == 0 and info.digits == () and info.cell == cell


def test_string_forms():
    g = grc.encode_latlon(48.8566, 2.3522, 6, 3, 2)
    assert grc.to_ipv4(g) == str(ipaddress.IPv4Address(g))
    v6 = grc.to_ipv6(g)
    assert ipaddress.IPv6Address(v6) in ipaddress.IPv6Network(grc.DEFAULT_GRC_IPV6_PREFIX)
    assert grc.parse_address(grc.to_ipv4(g)) == g
    assert grc.parse_address(v6) == g
    assert grc.parse_address(f"0x{g:08x}") == g
    assert grc.parse_address(f"0X{g:08X}") == g
    assert grc.to_ipv6(g, "2001:db8:1::/96").startswith("2001:db8:1::")
    assert grc.parse_address(grc.to_ipv6(g, "2001:db8:1::/96"), "2001:db8:1::/96") == g


# -- round trips ------------------------------------------------------------------


@FAST
@given(lats, lons, levels, codes, interfaces)
@example(90.0, 0.0, 6, 1, 0)
@example(-90.0, 0.0, 6, 13, 5)
@example(0.0, 180.0, 6, 1, 0)
@example(0.0, -180.0, 3, 6, 1)
@example(-90.0, -180.0, 0, 8, 2)
def test_latlon_round_trip(lat, lon, level, code, intf):
    cell = h3.latlng_to_cell(lat, lon, level)
    g = grc.encode_latlon(lat, lon, level, code, intf)
    assert g == grc.encode_cell(cell, code, intf)
    info = grc.decode(g)
    assert (info.cell, info.level, info.shell_code, info.interface) == (cell, level, code, intf)
    assert info.base_cell == h3.get_base_cell_number(cell)
    assert len(info.digits) == level and all(0 <= d <= 6 for d in info.digits)
    assert grc.parse_address(grc.to_ipv4(g)) == g
    assert grc.parse_address(grc.to_ipv6(g)) == g
    assert grc.encode_cell(info.cell, code, intf) == g


def test_poles_and_antimeridian():
    # H3 children are not geographically inside their parent: the north pole
    # is in base cell 0 at level 0 but its level-6 cell descends from base 1.
    # Prefixes follow the H3 *index* hierarchy (cell_to_parent), not geometry.
    north = grc.encode_latlon(90, 0, 6, 1)
    assert grc.decode(grc.encode_latlon(90, 0, 0, 1)).base_cell == 0
    assert grc.decode(north).base_cell == 1
    assert grc.prefix_of(north, 0) == grc.region_prefix(h3.cell_to_parent(grc.decode(north).cell, 0), 1)
    # every longitude at a pole gives the same cell
    assert {grc.encode_latlon(90, lon, 6, 1) for lon in (-180, -90, 0, 90, 180)} == {north}
    south = grc.encode_latlon(-90, 0, 6, 1)
    assert grc.decode(south).base_cell == 121  # the base cell that code 7 would put in 127/8
    # lon +180 and -180 are the same meridian: same cell, same GRC
    for lat in (-60.0, 0.0, 45.5, 89.9):
        assert grc.encode_latlon(lat, 180, 6, 1) == grc.encode_latlon(lat, -180, 6, 1)


@pytest.mark.parametrize("level", range(grc.LEVEL_MAX + 1))
def test_every_pentagon_round_trips(level):
    for cell in PENTAGONS[level]:
        g = grc.encode_cell(cell, 4, 1)
        assert grc.decode(g).cell == cell
        if level < grc.LEVEL_MAX:
            for child in h3.cell_to_children(cell, level + 1):  # 6 children, not 7
                assert grc.decode(grc.encode_cell(child, 4)).cell == child


def test_pentagon_deleted_subsequence_rejected():
    # Digit 1 (the K axis) is deleted under a pentagon: that bit pattern is no cell.
    for cell in PENTAGONS[0]:
        base = h3.get_base_cell_number(cell)
        bad = (1 << 28) | (base << 21) | (0o177777 << 3)  # digits 1,7,7,7,7,7
        with pytest.raises(AddressingError, match="grc: not a valid H3 cell"):
            grc.decode(bad)
        bad = (1 << 28) | (base << 21) | (0o001777 << 3)  # digits 0,0,1,7,7,7
        with pytest.raises(AddressingError, match="grc"):
            grc.decode(bad)
    # the same digits under a hexagon base cell are fine
    assert grc.decode((1 << 28) | (0 << 21) | (0o177777 << 3)).level == 1


@FAST
@given(st.sampled_from([c for r in PENTAGONS.values() for c in r]), st.data())
def test_pentagon_descendants_round_trip(pent, data):
    res = h3.get_resolution(pent)
    target = data.draw(st.integers(res, grc.LEVEL_MAX))
    path = pent
    for _ in range(target - res):
        path = data.draw(st.sampled_from(h3.cell_to_children(path, h3.get_resolution(path) + 1)))
    assert grc.decode(grc.encode_cell(path, 1)).cell == path


# -- the forbidden address space (module docstring) -------------------------------------


def _is_forbidden_v4(value: int) -> bool:
    a = ipaddress.IPv4Address(value)
    return value == 0 or a in ipaddress.IPv4Network("127.0.0.0/8") or value >> 28 >= 14


def test_forbidden_space_exhaustive_over_codes_and_base_cells():
    # The first octet depends only on the shell code and the base cell.
    for code in ALLOWED_CODES:
        for base in range(122):
            first = (code << 4) | (base >> 3)
            assert first not in (0, 127) and first < 224, (code, base)
    assert set(grc.DEFAULT_SHELL_CODES) == set(ALLOWED_CODES)


@settings(max_examples=400, deadline=None)
@given(codes, st.integers(0, 121), st.lists(st.integers(0, 7), min_size=6, max_size=6), st.integers(0, 7))
def test_no_grc_in_special_space(code, base, digits, intf):
    value = (code << 28) | (base << 21) | intf
    for r, d in enumerate(digits, start=1):
        value |= d << (3 + 3 * (6 - r))
    assert not _is_forbidden_v4(value)


@pytest.mark.parametrize("code", sorted(grc.FORBIDDEN_SHELL_CODES))
def test_forbidden_codes_rejected(code):
    with pytest.raises(AddressingError, match=f"shell_code: .*got {code}"):
        grc.encode_latlon(0, 0, 6, code)
    with pytest.raises(AddressingError, match="shell_code"):
        grc.check_shell_code(code)


def test_shell_index_mapping():
    assert [grc.shell_code(i) for i in range(12)] == list(grc.DEFAULT_SHELL_CODES)
    assert grc.shell_code(1, {1: 9}) == 9
    assert grc.shell_code(0, [13]) == 13
    assert grc.shell_index_of_code(8) == 6 and grc.shell_index_of_code(7) is None
    with pytest.raises(AddressingError, match=r"shell: .*got 12"):
        grc.shell_code(12)
    with pytest.raises(AddressingError, match="shell_code"):
        grc.shell_code(0, [7])


# -- prefixes ---------------------------------------------------------------------


@FAST
@given(lats, lons, codes, interfaces)
@example(90.0, 0.0, 1, 0)
@example(-90.0, 180.0, 2, 5)
def test_prefix_containment(lat, lon, code, intf):
    cell = h3.latlng_to_cell(lat, lon, 6)
    g = grc.encode_cell(cell, code, intf)
    for k in range(grc.LEVEL_MAX + 1):
        net, plen = grc.prefix_of(g, k)
        assert plen == 11 + 3 * k and plen in grc.LEGAL_PREFIX_LENGTHS
        assert g & _mask(plen) == net
        parent = h3.cell_to_parent(cell, k)
        assert grc.encode_cell(parent, code) & _mask(plen) == net
        assert grc.region_prefix(parent, code) == (net, plen)
        assert grc.prefix_contains(net, plen, grc.encode_cell(parent, code))


def test_prefix_of_rejects_finer_level_than_grc():
    g = grc.encode_latlon(10, 10, 3, 1)
    assert grc.prefix_of(g, 3)[1] == 20
    with pytest.raises(AddressingError, match=r"level: must be 0..3 .*got 4"):
        grc.prefix_of(g, 4)


# -- vectorised -------------------------------------------------------------------


@FAST
@given(st.lists(st.tuples(lats, lons, levels), min_size=1, max_size=30), codes, interfaces)
def test_encode_cells_array_matches_scalar(points, code, intf):
    cells = [h3.latlng_to_cell(la, lo, r) for la, lo, r in points]
    expected = [grc.encode_cell(c, code, intf) for c in cells]
    out = grc.encode_cells_array(cells, code, intf)
    assert out.dtype == np.uint32 and out.tolist() == expected
    assert grc.decode(out[0]).cell == cells[0]
    ints = np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64)
    assert grc.encode_cells_array(ints, code, intf).tolist() == expected


def test_encode_cells_array_pentagons_and_empty():
    cells = [c for r in PENTAGONS.values() for c in r]
    assert grc.encode_cells_array(cells, 1).tolist() == [grc.encode_cell(c, 1) for c in cells]
    assert grc.encode_cells_array([], 1).shape == (0,)


def test_encode_cells_array_rejects_bad_cells():
    good = h3.latlng_to_cell(1, 1, 6)
    fine = h3.latlng_to_cell(1, 1, 7)
    pent = h3.str_to_int(PENTAGONS[0][0])
    deleted = (pent & ~(0xF << 52) & ~(7 << 42)) | (1 << 52) | (1 << 42)
    for bad in ([good, fine], [good, "zz"], [h3.int_to_str(deleted)], [good, "0"]):
        with pytest.raises(AddressingError, match="cells"):
            grc.encode_cells_array(bad, 1)
    with pytest.raises(AddressingError, match="interface"):
        grc.encode_cells_array([good], 1, 6)


# -- errors -----------------------------------------------------------------------


def test_input_errors_name_field_and_value():
    cases = [
        (lambda: grc.encode_latlon(0, 0, 6, 1, 9), "interface: must be 0..5 (got 9)"),
        (lambda: grc.encode_latlon(91, 0, 6, 1), "lat: must be in -90..90 (got 91)"),
        (lambda: grc.encode_latlon(0, -180.5, 6, 1), "lon: must be in -180..180 (got -180.5)"),
        (lambda: grc.encode_latlon(float("nan"), 0, 6, 1), "lat:"),
        (lambda: grc.encode_latlon(0, 0, 7, 1), "level: must be 0..6 (got 7)"),
        (lambda: grc.encode_cell(h3.latlng_to_cell(0, 0, 9), 1), "cell: level must be 0..6"),
        (lambda: grc.encode_cell("not-a-cell", 1), "cell: not a valid H3 cell (got not-a-cell)"),
        (lambda: grc.decode(1 << 32), "grc: must be"),
        (lambda: grc.decode((1 << 28) | (122 << 21) | (0o777777 << 3)), "base cell 122"),
        (lambda: grc.decode((1 << 28) | (0o777777 << 3) | 6), "interface 6"),
        (lambda: grc.decode((1 << 28) | (0o070000 << 3)), "digit 7 followed"),
        (lambda: grc.parse_address("0x1234"), "address:"),
        (lambda: grc.parse_address("1.2.3"), "address:"),
        (lambda: grc.parse_address("2001:db8::1"), "address: IPv6 address outside"),
        (lambda: grc.to_ipv6(1, "fd00::/64"), "ipv6_prefix: must be a /96"),
    ]
    for call, message in cases:
        with pytest.raises(AddressingError) as err:
            call()
        assert message in str(err.value)
