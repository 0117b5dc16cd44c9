"""Addressing: GRC (H3 region codes), segmented longest match, semantic addresses, coverage.

spec: grc-based-routing §GRC encoding / §Segmented Longest Match;
satellite-semantic-addressing §5.
"""

from emu.addressing.coverage import Coverage  # the function stays emu.addressing.coverage.coverage
from emu.addressing.grc import (
    DEFAULT_GRC_IPV6_PREFIX,
    DEFAULT_SHELL_CODES,
    FORBIDDEN_SHELL_CODES,
    INTERFACE_MAX,
    LEGAL_PREFIX_LENGTHS,
    LEVEL_MAX,
    GrcInfo,
    check_shell_code,
    decode,
    encode_cell,
    encode_cells_array,
    encode_latlon,
    parse_address,
    prefix_of,
    region_prefix,
    shell_code,
    to_ipv4,
    to_ipv6,
)
from emu.addressing.semantic import (
    Relation,
    SemanticAddress,
    ipv4_semantic,
    ipv6_address,
    mac_address,
    parse_ipv4_semantic,
    parse_ipv6,
    parse_mac,
    relation,
)
from emu.addressing.slm import SegmentedTable

__all__ = [
    "DEFAULT_GRC_IPV6_PREFIX", "DEFAULT_SHELL_CODES", "FORBIDDEN_SHELL_CODES", "INTERFACE_MAX",
    "LEGAL_PREFIX_LENGTHS", "LEVEL_MAX", "Coverage", "GrcInfo", "Relation", "SegmentedTable",
    "SemanticAddress", "check_shell_code", "decode", "encode_cell", "encode_cells_array",
    "encode_latlon", "ipv4_semantic", "ipv6_address", "mac_address", "parse_address",
    "parse_ipv4_semantic", "parse_ipv6", "parse_mac", "prefix_of", "region_prefix", "relation",
    "shell_code", "to_ipv4", "to_ipv6",
]
