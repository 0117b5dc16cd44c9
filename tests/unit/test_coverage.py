"""Coverage against Tables 1 and 2. spec: satellite-semantic-addressing §5.2."""

from __future__ import annotations

import pytest

from emu.addressing.coverage import coverage
from emu.errors import AddressingError

ALTITUDES = (160, 300, 600, 900, 1200, 1500, 2000)
# Copied from the spec text: rows Rc(km), Ns, No.
TABLE_1 = {  # elevation 25 degrees
    "Rc": (318, 562, 1009, 1382, 1702, 1981, 2379),
    "Ns": (73, 42, 23, 17, 14, 12, 10),
    "No": (85, 48, 27, 20, 16, 14, 12),
}
TABLE_2 = {  # elevation 35 degrees
    "Rc": (218, 392, 726, 1015, 1271, 1498, 1828),
    "Ns": (107, 59, 32, 23, 19, 16, 13),
    "No": (123, 69, 37, 27, 22, 18, 15),
}
CASES = [
    (elev, alt, table["Rc"][i], table["Ns"][i], table["No"][i])
    for elev, table in ((25, TABLE_1), (35, TABLE_2))
    for i, alt in enumerate(ALTITUDES)
]


@pytest.mark.parametrize("elevation, altitude, rc, ns, no", CASES)
def test_tables_1_and_2(elevation, altitude, rc, ns, no):
    c = coverage(altitude, elevation)
    assert c.coverage_radius_km_rounded == rc
    assert abs(c.coverage_radius_km - rc) <= 0.5
    assert c.min_sats_per_plane == ns
    assert c.min_planes == no


def test_geometry_sanity():
    c = coverage(550, 0)
    # horizon half-angle at zero elevation: arccos(R / (R + h))
    assert 22.0 < c.central_angle_deg < 23.0
    assert coverage(550, 25).coverage_radius_km < c.coverage_radius_km
    assert coverage(1200, 25).coverage_radius_km > coverage(550, 25).coverage_radius_km


@pytest.mark.parametrize(
    "altitude, elevation, message",
    [
        (50, 25, "altitude_km: must be 100..40000 km (got 50)"),
        (40001, 25, "altitude_km:"),
        (550, 90, "elevation_deg: must be 0 <= elevation < 90 degrees (got 90)"),
        (550, -1, "elevation_deg:"),
        ("x", 25, "altitude_km: must be a number"),
        (float("nan"), 25, "altitude_km:"),
    ],
)
def test_input_errors(altitude, elevation, message):
    with pytest.raises(AddressingError) as err:
        coverage(altitude, elevation)
    assert message in str(err.value)
