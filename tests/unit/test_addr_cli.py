"""``leo-emu grc|addr|coverage`` through click's runner."""

from __future__ import annotations

import json

import h3
import pytest
from click.testing import CliRunner

from emu.addressing import grc
from emu.cli.main import cli

GRC_KEYS = {"grc_hex", "ipv4", "ipv6", "h3", "level"}


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def run_json(*args: str) -> dict:
    res = run(*args, "--format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_grc_encode_json():
    out = run_json("grc", "encode", "--lat", "37.7749", "--lon", "-122.4194")
    assert GRC_KEYS <= out.keys()
    assert out["h3"] == h3.latlng_to_cell(37.7749, -122.4194, 6) and out["level"] == 6
    assert out["grc_hex"] == f"0x{grc.encode_latlon(37.7749, -122.4194, 6, 1):08x}"
    assert out["shell"] == 0 and out["shell_code"] == 1


def test_grc_encode_options():
    out = run_json("grc", "encode", "--lat", "-90", "--lon", "180", "--level", "2", "--shell", "6", "--interface", "4")
    assert out["h3"] == h3.latlng_to_cell(-90, 180, 2) and out["level"] == 2
    assert out["shell_code"] == 8 and out["interface"] == 4
    out = run_json("grc", "encode", "--lat", "0", "--lon", "0", "--shell-code", "13")
    assert out["shell_code"] == 13 and out["shell"] == 11
    cell = h3.get_pentagons(3)[0]
    assert run_json("grc", "encode", "--cell", cell)["h3"] == cell


@pytest.mark.parametrize("form", ["grc_hex", "ipv4", "ipv6"])
def test_grc_decode_all_forms(form):
    enc = run_json("grc", "encode", "--lat", "51.5", "--lon", "-0.12", "--interface", "2")
    out = run_json("grc", "decode", enc[form])
    assert GRC_KEYS | {"shell", "shell_code", "interface", "base_cell"} <= out.keys()
    for key in GRC_KEYS:
        assert out[key] == enc[key]
    assert out["interface"] == 2 and out["shell"] == 0 and out["base_cell"] == h3.get_base_cell_number(enc["h3"])


def test_grc_decode_reports_shell_index_of_code():
    # every legal code is some shell's default code, so "shell" is null only
    # for codes a custom shell map uses differently (not reachable here)
    g = grc.encode_latlon(0, 0, 6, 5)
    out = run_json("grc", "decode", f"0x{g:08x}")
    assert out["shell_code"] == 5 and out["shell"] == 4


def test_table_format_default():
    res = run("grc", "decode", "18.131.8.43")
    assert res.exit_code == 0 and "86283082fffffff" in res.output


def test_addr_semantic_json():
    out = run_json("addr", "semantic", "--owner", "1", "--shell", "2", "--orbit", "3", "--sat", "4", "--intf", "5")
    assert out == {"ipv6": "fd00:5a7::102:304:500:0", "mac": "02:00:5a:20:30:45", "ipv4_semantic": "1.2.3.4"}
    out = run_json("addr", "semantic", "--owner", "1", "--shell", "2", "--orbit", "3", "--sat", "4",
                   "--prefix", "2001:db8::/64", "--oui", "0a:00:00")
    assert out["ipv6"].startswith("2001:db8::") and out["mac"].startswith("0a:00:00:")


def test_coverage_json():
    out = run_json("coverage", "--altitude", "600", "--elevation", "25")
    assert (out["coverage_radius_km"], out["min_sats_per_plane"], out["min_planes"]) == (1009, 23, 27)


@pytest.mark.parametrize(
    "args, field",
    [
        (("grc", "encode", "--lat", "91", "--lon", "0"), "lat"),
        (("grc", "encode", "--lat", "0", "--lon", "200"), "lon"),
        (("grc", "encode", "--lat", "0", "--lon", "0", "--interface", "9"), "interface: must be 0..5 (got 9)"),
        (("grc", "encode", "--lat", "0", "--lon", "0", "--level", "7"), "level"),
        (("grc", "encode", "--lat", "0", "--lon", "0", "--shell", "12"), "shell"),
        (("grc", "encode", "--lat", "0", "--lon", "0", "--shell-code", "14"), "shell_code"),
        (("grc", "encode", "--lon", "0"), "lat"),
        (("grc", "decode", "127.0.0.1"), "grc"),
        (("grc", "decode", "hello"), "address"),
        (("addr", "semantic", "--owner", "1", "--shell", "300", "--orbit", "3", "--sat", "4"), "shell"),
        (("addr", "semantic", "--owner", "1", "--shell", "2", "--orbit", "3", "--sat", "4", "--oui", "1"), "oui"),
        (("coverage", "--altitude", "10", "--elevation", "25"), "altitude"),
        (("coverage", "--altitude", "600", "--elevation", "95"), "elevation"),
    ],
)
def test_bad_input_exit_2(args, field):
    res = run(*args, "--format", "json")
    assert res.exit_code == 2
    assert field in res.output
