"""The run configuration: derived once from the validated scenario, tunnel kind decided from features."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from emu.dataplane.runconfig import RunConfig, decide_tunnel
from emu.errors import DataplaneError
from emu.scenario.load import parse_scenario
from emu.scenario.model import LinkCfg

from .helpers import scenario_dict


def _features(**have):
    return SimpleNamespace(has=lambda name: have.get(name, False))


def test_defaults_come_from_the_scenario_model() -> None:
    cfg = RunConfig.from_scenario(parse_scenario(scenario_dict()))
    assert cfg.inet_name == "inet" and cfg.inet_prefix == ipaddress.ip_network("12.0.0.0/24")
    assert cfg.inet_addr == "12.0.0.1"
    d = LinkCfg()
    assert cfg.rates_mbit == {"isl": d.isl_rate_mbit, "ground": d.ground_rate_mbit,
                              "terrestrial": d.terrestrial_rate_mbit}
    assert cfg.tunnel_mode == "vxlan" and cfg.tunnel_pref == "auto"


def test_scenario_values_win() -> None:
    sc = parse_scenario(scenario_dict(internet={"name": "www", "prefix": "13.1.0.0/16"},
                                      links={"isl_rate_mbit": 42, "terrestrial_delay_ms": 7}))
    cfg = RunConfig.from_scenario(sc, _features(netem=True))
    assert (cfg.inet_name, cfg.inet_addr, cfg.isl_rate_mbit, cfg.terrestrial_delay_ms) == ("www", "13.1.0.1", 42, 7)
    assert cfg.netem and not cfg.tbf


@pytest.mark.parametrize("pref,has_ipip,want", [
    ("auto", True, "ipip"), ("auto", False, "vxlan"), ("vxlan", True, "vxlan"), ("ipip", True, "ipip"),
])
def test_tunnel_decided_once_from_features(pref, has_ipip, want) -> None:
    assert decide_tunnel(pref, has_ipip) == want
    sc = parse_scenario(scenario_dict(links={"tunnel": pref}))
    assert RunConfig.from_scenario(sc, _features(ipip=has_ipip)).tunnel_mode == want


def test_ipip_asked_without_ipip_is_refused_before_anything_exists() -> None:
    with pytest.raises(DataplaneError, match="links.tunnel: ipip"):
        RunConfig.from_scenario(parse_scenario(scenario_dict(links={"tunnel": "ipip"})), _features(ipip=False))


def test_config_is_frozen() -> None:
    cfg = RunConfig.from_scenario(parse_scenario(scenario_dict()))
    with pytest.raises(AttributeError):
        cfg.tunnel_mode = "ipip"  # type: ignore[misc]


@pytest.mark.parametrize("have,want", [
    ({"nft_nat": True, "nft_flowtable": True}, True), ({"nft_nat": True}, False),
    ({"nft_flowtable": True}, False),  # no NAT, nothing to fast-path
])
def test_the_nat_fast_path_only_where_the_kernel_has_both(have, want) -> None:
    cfg = RunConfig.from_scenario(parse_scenario(scenario_dict()), _features(**have))
    assert cfg.nat_flowtable is want
    assert RunConfig.from_scenario(parse_scenario(scenario_dict())).nat_flowtable is False  # dry run: not assumed
