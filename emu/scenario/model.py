"""The scenario: a declarative description of one emulated constellation.

A scenario file (YAML, in ``topologies/``) is validated strictly on load:
unknown keys, wrong types and out-of-range values are rejected with the
field's dotted path and the offending value (see :mod:`emu.scenario.load`).
The model only *describes*; later stages (orbit, snapshot, plan, data plane)
realise it.

Terrestrial addressing lives in 0.0.0.0/4 (user pools default to 10/8): the
GRC encoding never uses shell code 0, so no GRC can collide with it
(see :mod:`emu.addressing.grc`). Inside it the data plane keeps
:data:`RESERVED_TERRESTRIAL` for itself (emu.dataplane.model): user pools and the
Internet prefix must stay out of those ranges and out of each other.

``validate`` refuses everything ``plan`` and ``up`` would refuse: the checks
later stages rely on (names, address plan, ground nodes per GRC cell, shell
codes, IPv6 prefixes) are made here, once.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,11}$")]
"""Node names: short (they become namespace and interface name parts), lowercase."""

Lat = Annotated[float, Field(ge=-90.0, le=90.0)]
Lon = Annotated[float, Field(ge=-180.0, le=180.0)]
Index8 = Annotated[int, Field(ge=0, le=255)]
Elevation = Annotated[float, Field(ge=0.0, lt=90.0)]


RESERVED_TERRESTRIAL = {
    "0.0.0.0/8": "'this network' (RFC 1122), not assignable",
    "10.254.0.0/16": "the data plane's UT-GS tunnel addresses",
    "10.255.0.0/16": "the data plane's GS-core links",
    "11.0.0.0/8": "the data plane's operator-core public (NAT) addresses",
}
"""Terrestrial ranges the data plane uses itself (emu.dataplane.model); scenarios may not."""

RESERVED_TERRESTRIAL6 = {"fd74:6572:7200::/48": "the data plane's IPv6 GS-core and core-Internet links"}
"""The IPv6 twin of RESERVED_TERRESTRIAL ("ter" in ASCII; emu.dataplane.model numbers inside it)."""

USER_POOL6_BASE = "fd75:7365:7200::/40"
"""Operators without ``user_pool6`` get the ``owner_code``-th /48 of this ULA ("user"): :func:`default_user_pool6`."""


def default_user_pool6(owner_code: int) -> str:
    """An operator's IPv6 user pool when the scenario gives none: one /48 per owner code (0..255)."""
    base = ipaddress.IPv6Network(USER_POOL6_BASE)
    return str(ipaddress.IPv6Network((int(base.network_address) | (owner_code << 80), 48)))


def _ipv6_space(v: str, shortest: int, longest: int) -> ipaddress.IPv6Network:
    """An ordinary unicast IPv6 prefix of length shortest..longest, host bits zero (the GRC /96's rule for
    special space, emu.addressing.grc, applies to terrestrial IPv6 too)."""
    from emu.addressing import grc

    if not isinstance(v, str):
        raise ValueError("must be an IPv6 prefix like fd00:1::/48")
    try:
        net = ipaddress.IPv6Network(v, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IPv6 prefix ({exc})") from None
    if not shortest <= net.prefixlen <= longest:
        raise ValueError(f"must be a /{shortest} to /{longest}")
    for special, why in grc._SPECIAL6:
        if net.overlaps(special):
            raise ValueError(f"inside {special} ({why}), not forwarded as unicast")
    return net

SATELLITE_NAME = re.compile(r"sat\d")
"""Satellites are named sat<shell>-<plane>-<sat>; no other node may start like that."""


def _terrestrial_prefix(v: str) -> ipaddress.IPv4Network:
    """An IPv4 prefix inside 0.0.0.0/4, the range no GRC can use (emu.addressing.grc), outside the reserved ones."""
    if not isinstance(v, str):
        raise ValueError("must be an IPv4 prefix like 10.1.0.0/16")
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 prefix ({exc})") from None
    if net.version != 4 or not net.subnet_of(ipaddress.ip_network("0.0.0.0/4")):
        raise ValueError("must be an IPv4 prefix inside 0.0.0.0/4 (the GRC-free terrestrial range)")
    for reserved, why in RESERVED_TERRESTRIAL.items():
        if net.overlaps(ipaddress.ip_network(reserved)):
            raise ValueError(f"overlaps {reserved}, {why}")
    return net


def _addressing_rule(rule, value):
    """Apply a rule of emu.addressing (defined once there) as a pydantic validator."""
    from emu.errors import AddressingError

    try:
        rule(value)
    except AddressingError as exc:
        text = str(exc)
        raise ValueError(text.split(": ", 1)[-1].rsplit(" (got ", 1)[0]) from None
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Shell(Strict):
    """One shell: a Walker constellation, or the satellites of a TLE file.

    spec: satellite-semantic-addressing §4.2 (shell groups), §5.1 (indexes).
    """

    name: Name
    altitude_km: Annotated[float, Field(ge=160.0, le=2000.0)] | None = None
    inclination_deg: Annotated[float, Field(ge=0.0, le=180.0)] | None = None
    planes: Annotated[int, Field(ge=1, le=256)] | None = None
    sats_per_plane: Annotated[int, Field(ge=1, le=256)] | None = None
    phasing: Annotated[int, Field(ge=0, le=255)] = 0
    pattern: Literal["delta", "star"] = "delta"
    tle_file: str | None = None
    raan_offset_deg: Annotated[float, Field(ge=0.0, lt=360.0)] = 0.0

    @model_validator(mode="after")
    def _walker_or_tle(self) -> "Shell":
        walker = [self.altitude_km, self.inclination_deg, self.planes, self.sats_per_plane]
        if self.tle_file is None:
            for fname, v in zip(("altitude_km", "inclination_deg", "planes", "sats_per_plane"), walker):
                if v is None:
                    raise ValueError(f"{fname} is required for a Walker shell (or give tle_file)")
            if self.phasing >= self.planes:
                raise ValueError(f"phasing must be < planes ({self.planes})")
        elif self.planes is None or self.sats_per_plane is None:
            raise ValueError("a TLE shell needs planes and sats_per_plane to index its satellites")
        return self

    @property
    def size(self) -> int:
        return int(self.planes) * int(self.sats_per_plane)


class PlaneSet(Strict):
    """Planes of one shell owned by an operator: a list, or 'all' / 'even' / 'odd'."""

    shell: Index8 = 0
    planes: list[Index8] | Literal["all", "even", "odd"] = "all"

    def resolve(self, n_planes: int) -> list[int]:
        if self.planes == "all":
            return list(range(n_planes))
        if self.planes == "even":
            return list(range(0, n_planes, 2))
        if self.planes == "odd":
            return list(range(1, n_planes, 2))
        return sorted(set(self.planes))


class Operator(Strict):
    """A satellite network operator (SNO). spec: inter-sno-mobility-framework."""

    name: Name
    owner_code: Index8
    user_pool: str
    user_pool6: str | None = None  # IPv6 user pool; default: default_user_pool6(owner_code)
    owns: list[PlaneSet] = Field(default_factory=lambda: [PlaneSet()])

    @field_validator("user_pool6")
    @classmethod
    def _pool6(cls, v: str | None) -> str | None:
        return None if v is None else str(_ipv6_space(v, 16, 56))  # a /64 per terminal and one for the core

    @property
    def pool6(self) -> str:
        """The IPv6 user pool in force: configured, or derived from the owner code."""
        return self.user_pool6 or default_user_pool6(self.owner_code)

    @field_validator("user_pool")
    @classmethod
    def _pool(cls, v: str) -> str:
        net = _terrestrial_prefix(v)
        if net.prefixlen > 28:
            raise ValueError("must hold at least 16 addresses (/28 or shorter)")
        return str(net)


DEFAULT_GS_ANTENNAS = 8
"""Parabolic antennas per ground station (gateway) by default: SpaceX's 2019 FCC applications for its first
Starlink gateway earth stations (IBFS SES-LIC-INTR2019-00877 .. -00882: North Bend WA, Conrad MT, Merrillan WI,
Greenville PA, Redmond WA, Hawthorne CA) describe eight 1.5 m parabolic antennas per gateway site, each
tracking one satellite. See docs/fidelity.md."""


class GroundStation(Strict):
    name: Name
    lat: Lat
    lon: Lon
    operator: Name
    min_elevation_deg: Elevation = 25.0
    antennas: Annotated[int, Field(ge=1, le=32)] = DEFAULT_GS_ANTENNAS  # ground links to up to this many satellites
    max_range_km: Annotated[float, Field(gt=0.0, le=50000.0)] | None = None  # also require slant range <= this


class UserTerminal(Strict):
    name: Name
    lat: Lat
    lon: Lon
    operator: Name
    device: Name
    min_elevation_deg: Elevation = 25.0
    max_range_km: Annotated[float, Field(gt=0.0, le=50000.0)] | None = None  # also require slant range <= this
    destination: Name | None = None  # attach policy shortest-path: minimise the delay to this ground node (UT<->UT)


class Internet(Strict):
    name: Name = "inet"
    prefix: str = "12.0.0.0/24"
    prefix6: str = "fd69:6e65:7400::/64"  # the Internet's IPv6 servers ("inet" in ASCII)

    @field_validator("prefix6")
    @classmethod
    def _prefix6(cls, v: str) -> str:
        return str(_ipv6_space(v, 16, 126))

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        net = _terrestrial_prefix(v)
        if net.prefixlen > 30:
            raise ValueError("must hold a server address (/30 or shorter)")
        return str(net)


class TimeCfg(Strict):
    epoch: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    slice_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 15.0
    duration: Annotated[float, Field(gt=0.0, le=7 * 86400.0)] | Literal["one_orbit"] = "one_orbit"

    @field_validator("epoch")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        return v.astimezone(timezone.utc)


class LinkCfg(Strict):
    isl_rate_mbit: Annotated[float, Field(gt=0.0, le=100000.0)] = 1000.0
    ground_rate_mbit: Annotated[float, Field(gt=0.0, le=100000.0)] = 500.0
    terrestrial_rate_mbit: Annotated[float, Field(gt=0.0, le=100000.0)] = 10000.0
    terrestrial_delay_ms: Annotated[float, Field(ge=0.0, le=1000.0)] = 5.0
    polar_lat_deg: Annotated[float, Field(gt=0.0, le=90.0)] = 75.0
    seam: Literal["auto", "down", "wrap"] = "auto"
    inter_shell: bool = True
    tunnel: Literal["auto", "vxlan", "ipip"] = "auto"  # UT <-> GS; auto: ipip where the kernel has it


class GrcCfg(Strict):
    """GRC parameters. spec: grc-based-routing §GRC encoding, §Dynamic GRC Binding."""

    level: Annotated[int, Field(ge=0, le=6)] = 6
    # no footprint level: a satellite binds the GRCs of its sub-satellite cell at ``level`` (one region per
    # satellite per slice, emu.snapshot.series); the footprint's many overlapping cells are never routed to
    shell_codes: list[Annotated[int, Field(ge=0, le=15)]] | None = None
    ipv6_prefix: str = "fd00:6772:6300::/96"

    @field_validator("shell_codes")
    @classmethod
    def _codes(cls, v: list[int] | None) -> list[int] | None:
        from emu.addressing import grc

        from emu.errors import AddressingError

        for i, code in enumerate(v or []):
            try:
                grc.check_shell_code(code)
            except AddressingError as exc:
                raise ValueError(f"grc.shell_codes.{i}: {str(exc).split(': ', 1)[-1]}") from None
            if code in v[:i]:
                raise ValueError(f"grc.shell_codes.{i}: duplicate, shell {v.index(code)} has it (got {code})")
        return v

    @field_validator("ipv6_prefix")
    @classmethod
    def _v6(cls, v: str) -> str:
        from emu.addressing import grc

        return _addressing_rule(grc._ipv6_prefix, v)


class AddressingCfg(Strict):
    """Semantic addressing. spec: satellite-semantic-addressing §5.4."""

    semantic_prefix: str = "fd00:5a7::/64"
    oui: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){2}$")] = "02:00:5a"

    @field_validator("semantic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        from emu.addressing import semantic

        return _addressing_rule(semantic._ipv6_prefix, v)

    @field_validator("oui")
    @classmethod
    def _oui(cls, v: str) -> str:
        from emu.addressing import semantic

        return _addressing_rule(semantic._parse_oui, v)


class RoutingCfg(Strict):
    """Planner policies. spec: grc-based-routing §Routing Table Structure."""

    multipath: Literal["ecmp", "ucmp", "active-standby"] = "ecmp"
    ucmp_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    # ECMP: neighbours whose path is within this fraction of the best are equal-cost (float delays over real
    # geometry never tie exactly; emu.plan.routing.next_hop_codes)
    ecmp_tolerance: Annotated[float, Field(ge=0.0, le=0.5)] = 0.02
    attach_policy: Literal["highest-elevation", "longest-visibility", "nearest", "shortest-path",
                           "prefer-home"] = "highest-elevation"
    # prefer-home: a user takes its home operator's highest satellite within this many degrees of the best one
    attach_home_margin_deg: Annotated[float, Field(ge=0.0, le=90.0)] = 10.0
    attach_hysteresis: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02  # shortest-path: keep the current satellite
    # while its delay is within this fraction of the best (emu.plan.attach.shortest_path_serving)
    gs_selection: Literal["proximity", "load-balance", "primary-backup"] = "proximity"
    satellite_destinations: bool = True
    aggregate: bool = True
    # satellite -> SNO core association (spec: inter-sno-mobility §3.3 Figure 2 / §4.3): both are planned and
    # stored; this one is the run's. Default owner: the conventional baseline, a pure function of plane ownership.
    association: Literal["owner", "dynamic"] = "owner"


class MobilityCfg(Strict):
    """The SNO control plane of a live run (spec: inter-sno-mobility §4.2 cores and agents, §5.1 baseline,
    §5 Figure 5 proactive). Absent: ``up`` starts no core daemons or agents (runs as before)."""

    procedure: Literal["baseline", "proactive"] = "baseline"
    latency_ms: Annotated[float, Field(ge=0.0, le=2000.0)] = 20.0  # terrestrial latency between cores
    notice_ms: Annotated[float, Field(ge=0.0, le=60000.0)] = 150.0  # proactive: plan notice before a switch


class BgpCfg(Strict):
    """The BGP overlay (spec: bgp-mobile-routing-atn §3, §4, §6; docs/bgp.md): off unless asked for.

    Operator ``owner_code`` c's MSP is the c-th /40 of ``msp_base`` (a /32); each user terminal gets one
    /56 MNP out of its operator's MSP (emu.control.bgp.wiring)."""

    enabled: bool = False
    timers: Literal["aggressive", "default"] = "aggressive"
    msp_base: str = "fd4c:454f::/32"
    # operator name -> its number of c-ASBRs (default 1: the core namespace). More: iBGP among them, a route
    # reflector from 4 on (emu.control.bgp.wiring.extra_cores; spec §3)
    c_asbrs: dict[str, Annotated[int, Field(ge=1, le=8)]] = Field(default_factory=dict)

    @field_validator("msp_base")
    @classmethod
    def _msp_base(cls, v: str) -> str:
        try:
            net = ipaddress.IPv6Network(v, strict=True)
        except ValueError:
            raise ValueError("must be an IPv6 /32 with host bits zero") from None
        if net.prefixlen != 32:
            raise ValueError("must be an IPv6 /32 (one /40 MSP per operator owner code)")
        return str(net)


class Scenario(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    description: str = ""
    time: TimeCfg = TimeCfg()
    shells: Annotated[list[Shell], Field(min_length=1, max_length=12)]
    operators: Annotated[list[Operator], Field(min_length=1, max_length=16)]
    # the data plane numbers GS-core links in 10.255/16 (/30 each) and UT tunnels in 10.254/16
    ground_stations: Annotated[list[GroundStation], Field(max_length=16000)] = Field(default_factory=list)
    user_terminals: Annotated[list[UserTerminal], Field(max_length=16000)] = Field(default_factory=list)
    internet: Internet = Internet()
    links: LinkCfg = LinkCfg()
    grc: GrcCfg = GrcCfg()
    addressing: AddressingCfg = AddressingCfg()
    routing: RoutingCfg = RoutingCfg()
    mobility: MobilityCfg | None = None
    bgp: BgpCfg = BgpCfg()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        _unique("shells", [s.name for s in self.shells])
        _unique("operators", [o.name for o in self.operators])
        _unique("operators.owner_code", [o.owner_code for o in self.operators])
        nodes = [g.name for g in self.ground_stations] + [u.name for u in self.user_terminals]
        nodes += [u.device for u in self.user_terminals] + [self.internet.name]
        nodes += [o.name for o in self.operators]
        _unique("node names", nodes)
        for n in nodes:
            if SATELLITE_NAME.match(n):
                raise ValueError(f"node names: 'sat' and a digit begins satellites' names (got {n!r})")
        ops = {o.name for o in self.operators}
        ground = {g.name for g in self.ground_stations} | {u.name for u in self.user_terminals}
        for i, u in enumerate(self.user_terminals):
            if u.destination is not None and (u.destination not in ground or u.destination == u.name):
                raise ValueError(f"user_terminals.{i}.destination: not another ground station or user terminal "
                                 f"(got {u.destination!r})")
        for name in self.bgp.c_asbrs:
            if name not in ops:
                raise ValueError(f"bgp.c_asbrs: unknown operator (got {name!r})")
        for kind, items in (("ground_stations", self.ground_stations), ("user_terminals", self.user_terminals)):
            for i, item in enumerate(items):
                if item.operator not in ops:
                    raise ValueError(f"{kind}.{i}.operator: unknown operator (got {item.operator!r})")
        owned: dict[tuple[int, int], int] = {}
        for i, op in enumerate(self.operators):
            for j, ps in enumerate(op.owns):
                if ps.shell >= len(self.shells):
                    raise ValueError(f"operators.{i}.owns.{j}.shell: no such shell (got {ps.shell})")
                n = self.shells[ps.shell].planes
                if isinstance(ps.planes, list) and any(p >= n for p in ps.planes):
                    raise ValueError(f"operators.{i}.owns.{j}.planes: plane index >= {n} (got {ps.planes})")
                for p in ps.resolve(int(n)):
                    other = owned.setdefault((ps.shell, p), i)
                    if other != i:  # one owner per plane: the owner code is part of the satellite's address
                        raise ValueError(f"operators.{i}.owns.{j}.planes: plane {p} of shell {ps.shell} is "
                                         f"owned by operators.{other} already (got {ps.planes!r})")
        pools = [ipaddress.ip_network(o.user_pool) for o in self.operators]
        for a in range(len(pools)):
            for b in range(a + 1, len(pools)):
                if pools[a].overlaps(pools[b]):
                    raise ValueError(f"operators.{b}.user_pool: overlaps operators.{a}.user_pool (got {str(pools[b])!r})")
        inet = ipaddress.ip_network(self.internet.prefix)
        for i, pool in enumerate(pools):
            if pool.overlaps(inet):
                raise ValueError(f"internet.prefix: overlaps operators.{i}.user_pool {str(pool)!r} (got {str(inet)!r})")
            n_ut = sum(1 for u in self.user_terminals if u.operator == self.operators[i].name)
            if (1 << (30 - pool.prefixlen)) < n_ut + 1:  # one /30 or larger LAN per terminal, one for the core
                raise ValueError(f"operators.{i}.user_pool: too small for {n_ut} user terminals, a /30 each "
                                 f"(got {str(pool)!r})")
        _ipv6_plan(self)
        _ground_cells(self)
        alts = [s.altitude_km for s in self.shells if s.altitude_km is not None]
        if alts != sorted(alts):
            raise ValueError("shells: must be listed by increasing altitude (shell index = altitude order, semantic-addressing §5.1)")
        if self.grc.shell_codes is not None and len(self.grc.shell_codes) < len(self.shells):
            raise ValueError(f"grc.shell_codes: needs one code per shell (got {self.grc.shell_codes!r})")
        return self

    # --- convenience -------------------------------------------------------
    @property
    def n_satellites(self) -> int:
        return sum(s.size for s in self.shells)

    def operator(self, name: str) -> Operator:
        for o in self.operators:
            if o.name == name:
                return o
        raise KeyError(name)


def _ipv6_plan(sc: "Scenario") -> None:
    """The IPv6 spaces of a run may not overlap: the GRC /96 (satellites forward it), the semantic ISL
    prefix, the BGP MSP base (when on), the Internet's prefix, every operator's user pool and the data
    plane's own links (RESERVED_TERRESTRIAL6); each pool holds a /64 per terminal plus one."""
    spaces = [("grc.ipv6_prefix", sc.grc.ipv6_prefix), ("addressing.semantic_prefix", sc.addressing.semantic_prefix),
              ("internet.prefix6", sc.internet.prefix6)]
    spaces += [(f"operators.{i}.user_pool6", o.pool6) for i, o in enumerate(sc.operators)]
    if sc.bgp.enabled:
        spaces.append(("bgp.msp_base", sc.bgp.msp_base))
    spaces += [(f"reserved {net} ({why})", net) for net, why in RESERVED_TERRESTRIAL6.items()]
    nets = [(f, ipaddress.IPv6Network(v)) for f, v in spaces]
    for b in range(len(nets)):
        for a in range(b):
            if nets[a][1].overlaps(nets[b][1]):
                fb, fa = (nets[b], nets[a]) if not nets[b][0].startswith("reserved") else (nets[a], nets[b])
                raise ValueError(f"{fb[0]}: overlaps {fa[0].split(' (')[0]} {str(fa[1])!r} (got {str(fb[1])!r})")
    for i, o in enumerate(sc.operators):
        n_ut = sum(1 for u in sc.user_terminals if u.operator == o.name)
        if (1 << (64 - ipaddress.IPv6Network(o.pool6).prefixlen)) < n_ut + 1:
            raise ValueError(f"operators.{i}.user_pool6: too small for {n_ut} user terminals, a /64 each "
                             f"(got {o.pool6!r})")


def _ground_cells(sc: "Scenario") -> None:
    """At most INTERFACE_MAX + 1 ground nodes per level-6 cell: the GRC interface field tells them apart
    (spec: grc-based-routing §GRC encoding; emu.plan.attach.ground_grcs)."""
    import h3

    from emu.addressing.grc import INTERFACE_MAX

    seen: dict[str, int] = {}
    for kind, items in (("ground_stations", sc.ground_stations), ("user_terminals", sc.user_terminals)):
        for i, g in enumerate(items):
            cell = h3.latlng_to_cell(g.lat, g.lon, 6)
            seen[cell] = seen.get(cell, 0) + 1
            if seen[cell] > INTERFACE_MAX + 1:
                raise ValueError(f"{kind}.{i}: more than {INTERFACE_MAX + 1} ground nodes in the level-6 GRC cell "
                                 f"{cell}; move it apart (got lat {g.lat}, lon {g.lon})")


def _unique(field: str, values: list) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{field}: duplicate (got {v!r})")
        seen.add(v)

