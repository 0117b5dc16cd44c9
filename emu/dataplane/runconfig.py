"""One run's configuration, derived once from the validated scenario (pure: no kernel, no root).

Everything the data plane takes from the scenario is read here, from the
pydantic model of :mod:`emu.scenario.model` (its defaults are the only
defaults: nothing is copied by hand), and frozen. Choices that depend on the
machine (the UT <-> GS tunnel kind) are made here too, once, from the
detected features, before anything is created; nothing writes back to the
configuration while the run is up.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emu.errors import DataplaneError
from emu.scenario.model import Scenario

TUNNEL_MODES = ("ipip", "vxlan")


def decide_tunnel(pref: str, has_ipip: bool) -> str:
    """The UT <-> GS tunnel kind (grc §Data Forwarding Process steps 2 and 4): ipip where the kernel has it.

    ``links.tunnel: ipip`` on a kernel without ipip is refused (the build would fail half-way).
    """
    if pref == "ipip" and not has_ipip:
        raise DataplaneError("ipip tunnel", None, None, "the scenario asks links.tunnel: ipip but this kernel "
                             "has no ipip (see `leo-emu doctor`); use vxlan or auto")
    if pref == "ipip" or (pref == "auto" and has_ipip):
        return "ipip"
    return "vxlan"


@dataclass(frozen=True)
class RunConfig:
    """What the data plane needs from the scenario and the machine, fixed for the run."""

    inet_name: str
    inet_prefix: ipaddress.IPv4Network
    semantic_prefix: str
    oui: str
    isl_rate_mbit: float
    ground_rate_mbit: float
    terrestrial_rate_mbit: float
    terrestrial_delay_ms: float
    tunnel_pref: str  # the scenario's links.tunnel (auto | vxlan | ipip)
    tunnel_mode: str  # what this run uses (ipip | vxlan), decided once
    netem: bool = False  # the kernel has netem: per-slice link delays
    tbf: bool = False  # the kernel has tbf: link rates
    nat: bool = True  # the kernel has nftables NAT: each core masquerades its users, the Internet knows only the
    # cores' public addresses (without: it routes the user pools back, a labelled degradation)
    nat_flowtable: bool = False  # the kernel has nf_flow_table: the NAT's established flows take its fast path
    slice_switch: str = "rules"  # the satellites' slice switch: "mark" (fixed fwmark rules, the mark set by
    # nftables, armed for each boundary: emu.dataplane.slicemark) where the kernel has it, else "rules"
    nexthops: bool = False  # the kernel has nexthop objects: the satellites' routes name them
    # (emu.dataplane.nexthops), else each route carries its next hops
    bgp: bool = False  # the scenario's bgp.enabled: BGP overlay (peering links and addresses, daemons)
    bgp_timers: str = "aggressive"
    bgp_msp_base: str = "fd4c:454f::/32"
    # IPv6 (grc §GRC encoding, the 128-bit form): the GRC /96 satellites forward, the Internet's IPv6 prefix,
    # each operator's IPv6 user pool (by operator index, configured or derived: Operator.pool6)
    grc_ipv6_prefix: str = "fd00:6772:6300::/96"
    inet_prefix6: ipaddress.IPv6Network = ipaddress.IPv6Network("fd69:6e65:7400::/64")
    pools6: tuple[str, ...] = ()
    bgp_c_asbrs: tuple[tuple[str, int], ...] = ()  # (operator, c-ASBRs) where more than one

    @classmethod
    def from_scenario(cls, sc: Scenario, features=None, *, tunnel_mode: str | None = None) -> "RunConfig":
        """Derive the configuration; ``features`` (emu.dataplane.features.Features) decides the machine-dependent
        parts. Without features (dry runs, pure tests) ``tunnel_mode`` may be given; else auto means vxlan,
        which every kernel the emulator supports has."""
        has = (lambda name: features.has(name)) if features is not None else (lambda name: False)  # noqa: E731
        if tunnel_mode is None:
            tunnel_mode = decide_tunnel(sc.links.tunnel, has("ipip")) if features is not None else (
                "vxlan" if sc.links.tunnel == "auto" else sc.links.tunnel)
        if tunnel_mode not in TUNNEL_MODES:
            raise ValueError(f"tunnel_mode: one of {TUNNEL_MODES} (got {tunnel_mode!r})")
        return cls(
            inet_name=sc.internet.name,
            inet_prefix=ipaddress.ip_network(sc.internet.prefix),
            semantic_prefix=sc.addressing.semantic_prefix,
            oui=sc.addressing.oui,
            isl_rate_mbit=sc.links.isl_rate_mbit,
            ground_rate_mbit=sc.links.ground_rate_mbit,
            terrestrial_rate_mbit=sc.links.terrestrial_rate_mbit,
            terrestrial_delay_ms=sc.links.terrestrial_delay_ms,
            tunnel_pref=sc.links.tunnel,
            tunnel_mode=tunnel_mode,
            netem=has("netem"),
            tbf=has("tbf"),
            nat=has("nft_nat") if features is not None else True,  # dry runs show what a NAT kernel gets
            nat_flowtable=has("nft_nat") and has("nft_flowtable"),
            slice_switch="mark" if features is None or has("nft_slice_mark") else "rules",  # dry runs: as nat
            nexthops=features is None or has("nexthop"),  # dry runs: as nat
            bgp=sc.bgp.enabled,
            bgp_timers=sc.bgp.timers,
            bgp_msp_base=sc.bgp.msp_base,
            grc_ipv6_prefix=sc.grc.ipv6_prefix,
            inet_prefix6=ipaddress.IPv6Network(sc.internet.prefix6),
            pools6=tuple(o.pool6 for o in sc.operators),
            bgp_c_asbrs=tuple(sorted((k, v) for k, v in sc.bgp.c_asbrs.items() if v > 1)),
        )

    @property
    def inet_addr(self) -> str:
        """The Internet node's server address: the first host of the Internet prefix."""
        return str(next(self.inet_prefix.hosts()))

    @property
    def inet_addr6(self) -> str:
        """The Internet node's IPv6 server address: ``::1`` of its IPv6 prefix."""
        return str(self.inet_prefix6.network_address + 1)

    @property
    def rates_mbit(self) -> dict[str, float]:
        return {"isl": self.isl_rate_mbit, "ground": self.ground_rate_mbit,
                "terrestrial": self.terrestrial_rate_mbit}


def scenario_of_plan(db) -> Scenario:
    """The validated scenario a plan was made from (the plan stores the scenario file's bytes, signed)."""
    import yaml

    from emu.scenario.load import parse_scenario

    return parse_scenario(yaml.safe_load(db.meta["scenario_yaml"]))
