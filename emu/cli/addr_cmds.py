"""CLI for addressing: ``grc encode|decode``, ``addr semantic``, ``coverage``.

spec: grc-based-routing §GRC encoding; satellite-semantic-addressing §5.2, §5.4.
"""

from __future__ import annotations

from typing import Any

import click
import h3

from emu.addressing import coverage as cov  # the module
from emu.addressing import grc as grc_mod
from emu.addressing import semantic
from emu.cli.common import EmuGroup, emit_json, emit_kv, format_option
from emu.errors import AddressingError

_ipv6_prefix_option = click.option(
    "--ipv6-prefix",
    default=grc_mod.DEFAULT_GRC_IPV6_PREFIX,
    show_default=True,
    help="The /96 prefix of the GRC's IPv6 form.",
)


def _grc_record(info: grc_mod.GrcInfo, ipv6_prefix: str) -> dict[str, Any]:
    return {
        "grc_hex": f"0x{info.grc:08x}",
        "ipv4": grc_mod.to_ipv4(info.grc),
        "ipv6": grc_mod.to_ipv6(info.grc, ipv6_prefix),
        "h3": info.cell,
        "level": info.level,
        "shell": grc_mod.shell_index_of_code(info.shell_code),
        "shell_code": info.shell_code,
        "interface": info.interface,
        "base_cell": info.base_cell,
        "digits": list(info.digits),
    }


def _emit(title: str, record: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        emit_json(record)
    else:
        emit_kv(title, record)


@click.group("grc", cls=EmuGroup)
def grc_group() -> None:
    """Geographic region codes: H3 cells as 32-bit addresses."""


@grc_group.command("encode")
@click.option("--lat", type=float, help="Latitude in degrees (-90..90).")
@click.option("--lon", type=float, help="Longitude in degrees (-180..180).")
@click.option("--cell", "cell", default=None, help="An H3 cell (level 0..6) instead of --lat/--lon.")
@click.option("--level", type=int, default=None, help="H3 level 0..6 [default: 6; a --cell has its own].")
@click.option("--shell", "shell", type=int, default=None, help="Shell index (default 0), mapped to its code.")
@click.option("--shell-code", "code", type=int, default=None, help="Raw 4-bit shell code instead of --shell.")
@click.option("--interface", type=int, default=0, show_default=True, help="Interface 0..5.")
@_ipv6_prefix_option
@format_option
def grc_encode(lat, lon, cell, level, shell, code, interface, ipv6_prefix, fmt) -> None:
    """Encode a position (or an H3 cell) as a GRC."""
    if shell is not None and code is not None:
        raise AddressingError(f"shell_code: give --shell or --shell-code, not both (got {shell} and {code})")
    code = grc_mod.shell_code(0 if shell is None else shell) if code is None else grc_mod.check_shell_code(code)
    if cell is not None:
        if lat is not None or lon is not None or level is not None:
            raise AddressingError(f"cell: give --cell or --lat/--lon/--level, not both (got {cell})")
        value = grc_mod.encode_cell(cell, code, interface)
    else:
        if lat is None or lon is None:
            missing = "lat" if lat is None else "lon"
            raise AddressingError(f"{missing}: required unless --cell is given (got None)")
        level = grc_mod.LEVEL_MAX if level is None else level
        value = grc_mod.encode_latlon(lat, lon, level, code, interface)
    _emit("GRC", _grc_record(grc_mod.decode(value), ipv6_prefix), fmt)


@grc_group.command("decode")
@click.argument("address")
@_ipv6_prefix_option
@format_option
def grc_decode(address, ipv6_prefix, fmt) -> None:
    """Decode a GRC given as 0x + 8 hex digits, dotted IPv4 or IPv6."""
    info = grc_mod.decode(grc_mod.parse_address(address, ipv6_prefix))
    record = _grc_record(info, ipv6_prefix)
    lat, lon = h3.cell_to_latlng(info.cell)
    record["center_lat"], record["center_lon"] = round(lat, 6), round(lon, 6)
    _emit("GRC", record, fmt)


@click.group("addr", cls=EmuGroup)
def addr_group() -> None:
    """Satellite semantic addresses (owner / shell / orbit / satellite)."""


@addr_group.command("semantic")
@click.option("--owner", type=int, required=True, help="Owner code 0..255.")
@click.option("--shell", type=int, required=True, help="Shell index 0..255 (0..15 for the MAC).")
@click.option("--orbit", type=int, required=True, help="Orbit plane index 0..255.")
@click.option("--sat", type=int, required=True, help="Satellite index in its plane 0..255.")
@click.option("--intf", type=int, default=0, show_default=True, help="Interface 0..255 (0..15 for the MAC).")
@click.option("--prefix", default=semantic.DEFAULT_SEMANTIC_IPV6_PREFIX, show_default=True, help="IPv6 /64.")
@click.option("--oui", default=semantic.DEFAULT_OUI, show_default=True, help="MAC OUI, 3 octets.")
@format_option
def addr_semantic(owner, shell, orbit, sat, intf, prefix, oui, fmt) -> None:
    """The IPv6, MAC and 32-bit semantic addresses of one satellite interface."""
    record = {
        "ipv6": semantic.ipv6_address(owner, shell, orbit, sat, intf, prefix=prefix),
        "mac": semantic.mac_address(shell, orbit, sat, intf, oui=oui),
        "ipv4_semantic": semantic.ipv4_semantic(owner, shell, orbit, sat),
    }
    _emit("semantic address", record, fmt)


@click.command("coverage")
@click.option("--altitude", type=float, required=True, help="Altitude in km (100..40000).")
@click.option("--elevation", type=float, required=True, help="Minimum elevation in degrees (0..<90).")
@format_option
def coverage_cmd(altitude, elevation, fmt) -> None:
    """Coverage radius and the minimum planes / satellites per plane (spec §5.2)."""
    c = cov.coverage(altitude, elevation)
    record = {
        "altitude_km": altitude,
        "elevation_deg": elevation,
        "coverage_radius_km": c.coverage_radius_km_rounded,
        "coverage_radius_km_exact": round(c.coverage_radius_km, 3),
        "central_angle_deg": round(c.central_angle_deg, 6),
        "min_sats_per_plane": c.min_sats_per_plane,
        "min_planes": c.min_planes,
    }
    _emit("coverage", record, fmt)


def register(cli: click.Group) -> None:
    """Attach ``grc``, ``addr`` and ``coverage`` to the top-level group."""
    cli.add_command(grc_group)
    cli.add_command(addr_group)
    cli.add_command(coverage_cmd)
