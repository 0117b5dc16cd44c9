"""What the data plane builds, derived from a plan (pure: no kernel, no root).

Every namespace, interface (with a fixed ifindex), address and link schedule
is computed here from the route database, so the builder and the per-slice
applier only *execute* (DESIGN.md: nothing flows backwards; the data plane
reads a plan, it never recomputes one).

Naming: namespaces are ``<run prefix>-<node>``; interface names say the
direction (``n``, ``s``, ``e``, ``w``, ground links ``g0``…, inter-shell
``up0``…/``dn0``…) so ``ip -n <sat> route`` reads like the spec's directional
table. Next hops are IPv6 link-local addresses (IPv4 routes via inet6, RFC
5549 style): the link-local interface ID of a satellite interface is its
semantic interface ID (satellite-semantic-addressing §5.4, Figure 5), so no
ARP and no per-link IPv4 addresses are needed, and re-binding GRCs never
touches next hops.

Terrestrial addressing lives in 0.0.0.0/4, which no GRC can use
(emu.addressing.grc): user pools from the scenario, tunnel and core links in
10.254/16 and 10.255/16, operator cores' public (NAT) addresses in 11/8, the
Internet's servers in the scenario's Internet prefix.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from emu.addressing import semantic
from emu.orbit.constellation import DOWN, OPPOSITE, UP
from emu.dataplane.runconfig import RunConfig, scenario_of_plan
from emu.plan.db import PlanDB
from emu.plan.planner import neighbour_matrix
from emu.scenario.model import RESERVED_TERRESTRIAL6

# fixed interface indexes inside each namespace
IDX_LO = 1
IDX_DIR = {d: 10 + d for d in range(4)}  # n s e w
IDX_TERR = 10  # first terrestrial / LAN interface
IDX_TUN = 20  # UT / GS tunnel device
IDX_TUN6 = 21  # UT / GS tunnel device of IPv6 user traffic (VXLAN over the IPv6 GRCs)
IDX_GROUND_SLOT = 100  # g<j> on satellites, up<j> on ground nodes
IDX_UP_SLOT = 400  # up<j> on satellites (to the shell above)
IDX_DN_SLOT = 600  # dn<j> on satellites (to the shell below)
MAX_SLOTS = 200

MTU_SPACE = 1600  # satellite segment: room for a 1500-byte packet in a tunnel
MTU_TERRESTRIAL = 1500
MTU_TUNNEL = 1550
MTU_TUNNEL6 = 1530  # VXLAN over IPv6: 70 bytes of headers in MTU_SPACE

TUNNEL_MAC = "02:54:00:00:00:01"  # every GS's tunnel end shares MAC and address (anycast-like)
TUNNEL_GS_ADDR = "10.254.0.1"
TUNNEL_PLEN = 16
VXLAN_PORT = 4789
TUNNEL6_IFNAME = "vx6"
TUNNEL6_GS_LL = "fe80::1"  # every GS's vx6 end (shared, like its IPv4 tunnel address and MAC)
TERR6 = ipaddress.IPv6Network(next(iter(RESERVED_TERRESTRIAL6)))  # the data plane's own IPv6 links
TERR6_CORE_INET = 0x8000  # /64 subnet ids: GS position i -> i (GS <-> core), operator o -> 0x8000 + o (core <-> inet)


def link_local(iid: int) -> str:
    return str(ipaddress.IPv6Address((0xFE80 << 112) | iid))


def _terr6(subnet: int, host: int) -> str:
    if not 0 <= subnet < 1 << 16:
        raise ValueError(f"IPv6 link subnet: 0..65535 (got {subnet})")
    return str(ipaddress.IPv6Address(int(TERR6.network_address) | (subnet << 64) | host))


@dataclass(frozen=True)
class Node:
    name: str
    kind: str  # satellite | gs | ut | dev | core | inet
    netns: str
    index: int  # satellite index, ground-node index, operator index; -1 for inet


@dataclass(frozen=True)
class GroundLink:
    """One satellite <-> ground-node link, alive for slices [prepare, retire)."""

    ground: int  # ground-node index
    sat: int
    first: int  # first slice it serves
    last: int  # last slice it serves
    sat_slot: int
    ground_slot: int

    @property
    def prepare(self) -> int:
        return max(0, self.first - 1)

    @property
    def retire(self) -> int:
        return self.last + 2  # kept one slice after its last use (grc §Time Slice Transition)


@dataclass(frozen=True)
class ShellLink:
    """One inter-shell link: ``lower`` leaves by Up (up<j>), ``upper`` by Down (dn<j>)."""

    lower: int
    upper: int
    first: int
    last: int
    lower_slot: int
    upper_slot: int

    @property
    def prepare(self) -> int:
        return max(0, self.first - 1)

    @property
    def retire(self) -> int:
        return self.last + 2


def _intervals(serving: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(ground, sat, first, last) runs of slices in which ground node ``ground`` links to ``sat``.

    ``serving`` is (slices, nodes) or (slices, nodes, antennas), -1 for none:
    a ground station with several antennas has one run per satellite it
    tracks, overlapping in time.
    """
    if serving.ndim == 2:
        serving = serving[:, :, None]
    out = []
    T, G, _A = serving.shape
    for g in range(G):
        col = serving[:, g, :]
        for s in np.unique(col[col >= 0]).tolist():
            present = (col == s).any(axis=1)
            edges = np.diff(np.concatenate([[0], present.astype(np.int8), [0]]))
            for a, b in zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()):
                out.append((g, s, a, b - 1))
    out.sort(key=lambda r: (r[0], r[2], r[1]))
    return out


def _assign_slots(items: list[tuple], key_fn, lifetime) -> dict[int, int]:
    """Greedy interval colouring: per owner (key_fn(item)), the lowest slot free over the item's lifetime."""
    busy: dict[object, list[tuple[int, int, int]]] = {}
    out = {}
    for i, it in sorted(enumerate(items), key=lambda x: lifetime(x[1])[0]):
        owner = key_fn(it)
        a, b = lifetime(it)
        used = {s for (s, x, y) in busy.get(owner, []) if not (y <= a or b <= x)}
        slot = next(s for s in range(MAX_SLOTS + 1) if s not in used)
        if slot >= MAX_SLOTS:
            raise ValueError(f"more than {MAX_SLOTS} simultaneous links on {owner}")
        busy.setdefault(owner, []).append((slot, a, b))
        out[i] = slot
    return out


def ground_links(serving: np.ndarray) -> list[GroundLink]:
    """Every satellite <-> ground-node link of the run, from the plan's (slices, ground nodes) serving matrix.

    The one place ground-link intervals are derived: a ground node with
    several antennas (several links per slice) changes this function only.
    """
    runs = _intervals(serving)
    life = lambda r: (max(0, r[2] - 1), r[3] + 2)  # noqa: E731
    sat_slots = _assign_slots(runs, lambda r: ("sat", r[1]), life)
    gnd_slots = _assign_slots(runs, lambda r: ("ground", r[0]), life)
    return [GroundLink(g, s, a, b, sat_slots[i], gnd_slots[i]) for i, (g, s, a, b) in enumerate(runs)]


@dataclass
class Model:
    """The plan's facts as the data plane needs them: nodes, link schedules, addresses, next hops.

    Read-only once made: the run's configuration (``cfg``) is fixed before and
    nothing here changes while the run is up.
    """

    db: PlanDB
    prefix: str  # run prefix, e.g. "le-3f2a"
    n_slices: int
    cfg: RunConfig
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def from_plan(cls, db: PlanDB, prefix: str, n_slices: int | None = None, cfg: RunConfig | None = None
                  ) -> "Model":
        """``cfg``: the run's configuration (default: derived from the plan's own scenario, no kernel features)."""
        n = db.n_slices if n_slices is None else min(n_slices, db.n_slices)
        m = cls(db, prefix, n, cfg if cfg is not None else RunConfig.from_scenario(scenario_of_plan(db)))
        m._make_nodes()
        return m

    @property
    def grc_level(self) -> int:
        """The level at which satellites bind GRCs, as the plan computed them (grc §Dynamic GRC Binding)."""
        return int(self.db.meta["grc_level"])

    # --- nodes ---------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def _make_nodes(self) -> None:
        db = self.db
        for idx, name, *_ in db.sat_rows:
            self.nodes.append(Node(name, "satellite", self.ns(name), idx))
        for g in db.ground:
            self.nodes.append(Node(g.name, g.kind, self.ns(g.name), g.idx))
            if g.kind == "ut":
                self.nodes.append(Node(g.device, "dev", self.ns(g.device), g.idx))
        for idx, name, _code, _pool in db.operators:
            self.nodes.append(Node(name, "core", self.ns(name), idx))
        self.nodes.append(Node(self.cfg.inet_name, "inet", self.ns(self.cfg.inet_name), -1))

    @cached_property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def satellites(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "satellite"]

    # --- satellite addressing (spec: satellite-semantic-addressing §5.4) -------------
    @cached_property
    def _owner_codes(self) -> list[int]:
        codes = {idx: code for idx, _n, code, _p in self.db.operators}
        return [codes.get(owner, 0) for _i, _n, _sh, _pl, _s, owner in self.db.sat_rows]

    def sat_iid(self, sat: int, intf: int) -> int:
        _i, _n, shell, plane, s, _o = self.db.sat_rows[sat]
        return (self._owner_codes[sat] << 56) | (shell << 48) | (plane << 40) | (s << 32) | (intf << 24)

    def sat_ipv6(self, sat: int, intf: int) -> str:
        cache = self.__dict__.setdefault("_v6c", {})
        v = cache.get((sat, intf))
        if v is None:
            _i, _n, shell, plane, s, _o = self.db.sat_rows[sat]
            v = cache[(sat, intf)] = semantic.ipv6_address(self._owner_codes[sat], shell, plane, s, intf,
                                                           prefix=self.cfg.semantic_prefix)
        return v

    def sat_mac(self, sat: int, intf: int) -> str:
        _i, _n, shell, plane, s, _o = self.db.sat_rows[sat]
        return semantic.mac_address(shell & 0xF, plane, s, intf & 0xF, oui=self.cfg.oui)

    def sat_ll(self, sat: int, intf: int) -> str:
        cache = self.__dict__.setdefault("_llc", {})
        v = cache.get((sat, intf))
        if v is None:
            v = cache[(sat, intf)] = link_local(self.sat_iid(sat, intf))
        return v

    @staticmethod
    def ground_ll(ground: int) -> str:
        return link_local((0xFFFE << 48) | (ground << 16) | 1)

    @staticmethod
    def ground_mac(ground: int, slot: int) -> str:
        return "02:47:%02x:%02x:%02x:%02x" % ((ground >> 8) & 0xFF, ground & 0xFF, (slot >> 8) & 0xFF, slot & 0xFF)

    # --- link schedules --------------------------------------------------------------
    @cached_property
    def serving(self) -> np.ndarray:
        """(slices, nodes, antennas): every ground link of the plan (column 0: the node's primary)."""
        return np.stack([self.db.ground_links(k) for k in range(self.n_slices)])

    @cached_property
    def ground_links(self) -> list[GroundLink]:
        return ground_links(self.serving)

    @cached_property
    def shell_links(self) -> list[ShellLink]:
        pairs: dict[tuple[int, int], list[int]] = {}
        for k in range(self.n_slices):
            L = self.db.links(k)
            up = L["dir_a"] == UP
            for a, b in zip(L["a"][up].tolist(), L["b"][up].tolist()):
                pairs.setdefault((a, b), []).append(k)
        runs = []
        for (a, b), ks in sorted(pairs.items()):
            start = prev = ks[0]
            for k in ks[1:] + [None]:
                if k is None or k != prev + 1:
                    runs.append((a, b, start, prev))
                    start = k
                prev = k if k is not None else prev
        life = lambda r: (max(0, r[2] - 1), r[3] + 2)  # noqa: E731
        lo = _assign_slots(runs, lambda r: ("up", r[0]), life)
        hi = _assign_slots(runs, lambda r: ("dn", r[1]), life)
        return [ShellLink(a, b, f, l, lo[i], hi[i]) for i, (a, b, f, l) in enumerate(runs)]

    @cached_property
    def grid_links(self) -> np.ndarray:
        """Every N/S/E/W ISL that exists in any slice (created once, toggled per slice): slice 0's plus every delta."""
        parts = []
        for k in range(self.n_slices):
            L = self.db.links(0) if k == 0 else self.db.link_delta(k)[0]
            L = L[L["dir_a"] < 4]
            parts.append(np.stack([L["a"], L["b"], L["dir_a"]], axis=1).astype(np.int64))
        if not parts:
            return np.zeros((0, 3), dtype=np.int64)
        return np.unique(np.concatenate(parts), axis=0)

    @cached_property
    def steady_interfaces(self) -> set[tuple[int, int]]:
        """(satellite, direction) of grid ISLs up in every slice: the only interfaces that carry GRC addresses.

        An interface that goes admin-down loses its local routes, so the GRCs of
        satellites whose ISLs flap (polar region) are bound to ``lo`` instead.
        """
        first = self.active_grid(0)
        removed = set()
        for k in range(1, self.n_slices):
            R = self.db.link_delta(k)[1]
            R = R[R["dir_a"] < 4]
            removed.update(zip(R["a"].tolist(), R["b"].tolist(), R["dir_a"].tolist()))
        always = first - removed
        out = set()
        for a, b, d in always or ():
            out.add((a, d))
            out.add((b, OPPOSITE[d]))
        return out

    def active_grid(self, k: int) -> set[tuple[int, int, int]]:
        L = self.db.links(k)
        L = L[L["dir_a"] < 4]
        return set(zip(L["a"].tolist(), L["b"].tolist(), L["dir_a"].tolist()))

    def ground_link_at(self, k: int) -> dict[int, GroundLink]:
        """ground-node index -> its primary link in slice k (its own uplink)."""
        if not 0 <= k < self.n_slices:
            return {}
        prim = self.serving[k, :, 0]
        return self._per_slice("gla", k, lambda: {gl.ground: gl for gl in self.ground_links
                                                  if gl.first <= k <= gl.last and prim[gl.ground] == gl.sat})

    def ground_links_at(self, k: int) -> dict[tuple[int, int], GroundLink]:
        """(ground-node index, satellite) -> every ground link alive in slice k (all antennas)."""
        return self._per_slice("gls", k, lambda: {(gl.ground, gl.sat): gl for gl in self.ground_links
                                                  if gl.first <= k <= gl.last})

    def shell_link_at(self, k: int) -> dict[tuple[int, int], ShellLink]:
        return self._per_slice("sla", k, lambda: {(sl.lower, sl.upper): sl for sl in self.shell_links
                                                  if sl.first <= k <= sl.last})

    def _per_slice(self, what: str, k: int, fn):
        """A small cache of per-slice derived values (a few slices are in use at a time)."""
        cache = self.__dict__.setdefault("_" + what, {})
        if k not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[k] = fn()
        return cache[k]

    # --- terrestrial addressing ------------------------------------------------------
    @cached_property
    def uts(self) -> list:
        return [g for g in self.db.ground if g.kind == "ut"]

    @cached_property
    def gss(self) -> list:
        return [g for g in self.db.ground if g.kind == "gs"]

    @cached_property
    def user_subnets(self) -> dict[int, ipaddress.IPv4Network]:
        """UT ground index -> its device LAN, carved from the home operator's pool (/24 each, or smaller)."""
        out = {}
        for idx, _name, _code, pool in self.db.operators:
            net = ipaddress.ip_network(pool)
            mine = [u for u in self.uts if u.operator == idx]
            new_plen = max(net.prefixlen, min(24, 32 - 2))
            while (1 << (new_plen - net.prefixlen)) < len(mine) + 1 and new_plen < 30:
                new_plen += 1
            subs = net.subnets(new_prefix=new_plen)
            next(subs)  # keep the first for the operator's own use
            for u in mine:
                out[u.idx] = next(subs)
        return out

    def dev_addr(self, ut: int) -> str:
        return str(self.user_subnets[ut].network_address + 2)

    def ut_lan_addr(self, ut: int) -> str:
        return str(self.user_subnets[ut].network_address + 1)

    @cached_property
    def _ut_tunnel_addrs(self) -> dict[int, str]:
        base = ipaddress.ip_address(TUNNEL_GS_ADDR) + 1
        return {u.idx: str(base + pos) for pos, u in enumerate(self.uts)}

    def ut_tunnel_addr(self, ut: int) -> str:
        """The UT's end of its tunnel: TUNNEL_GS_ADDR + 1 + the UT's position (called per GS x UT: a lookup)."""
        return self._ut_tunnel_addrs[ut]

    @staticmethod
    def ut_tunnel_mac(ut: int) -> str:
        return "02:54:01:00:%02x:%02x" % ((ut >> 8) & 0xFF, ut & 0xFF)

    @cached_property
    def user_subnets6(self) -> dict[int, ipaddress.IPv6Network]:
        """UT ground index -> its device LAN's IPv6 /64: the operator's IPv6 pool's (j+1)-th /64 for its j-th UT
        (the first kept for the operator, like the IPv4 pool)."""
        out = {}
        for idx, _name, _code, _pool in self.db.operators:
            net = ipaddress.IPv6Network(self.cfg.pools6[idx])
            base, step = int(net.network_address), 1 << 64
            for j, u in enumerate(u for u in self.uts if u.operator == idx):
                out[u.idx] = ipaddress.IPv6Network((base + (j + 1) * step, 64))
        return out

    def dev_addr6(self, ut: int) -> str:
        return str(self.user_subnets6[ut].network_address + 2)

    def ut_lan_addr6(self, ut: int) -> str:
        return str(self.user_subnets6[ut].network_address + 1)

    def ut_tunnel6_ll(self, ut: int) -> str:
        """The link-local address of a UT's vx6 end: fe80::(2 + its position among all UTs)."""
        return link_local(2 + self._ut_pos[ut])

    @cached_property
    def _ut_pos(self) -> dict[int, int]:
        return {u.idx: i for i, u in enumerate(self.uts)}

    def gs_core_link6(self, gs: int) -> tuple[str, str]:
        """(gs end, core end) of the GS <-> core link's IPv6 /64 (TERR6, subnet = GS position)."""
        i = self.gss.index(next(g for g in self.gss if g.idx == gs))
        return _terr6(i, 1), _terr6(i, 2)

    def core_inet6(self, op: int) -> tuple[str, str]:
        """(core end, Internet end) of operator ``op``'s core <-> Internet link's IPv6 /64."""
        return _terr6(TERR6_CORE_INET + op, 1), _terr6(TERR6_CORE_INET + op, 2)

    def gs_core_link(self, gs: int) -> tuple[str, str]:
        """(gs end, core end) of the GS <-> core /30."""
        return self._gs_core_links[gs]

    @cached_property
    def _gs_core_links(self) -> dict[int, tuple[str, str]]:
        base = ipaddress.ip_address("10.255.0.0")
        return {g.idx: (str(base + 4 * i + 1), str(base + 4 * i + 2)) for i, g in enumerate(self.gss)}

    def core_public(self, op: int) -> str:
        return f"11.{op}.0.1"

    def inet_core_addr(self, op: int) -> str:
        return f"11.{op}.0.2"

    @staticmethod
    def vni_of_operator(op: int) -> int:
        return 1000 + op

    # --- next hops ---------------------------------------------------------------------
    def nexthop_of(self, sat: int, direction: int, k: int, down_target: int | None) -> tuple[int, str] | None:
        """(oif, IPv6 link-local gateway) for leaving ``sat`` in ``direction`` in slice k."""
        if direction < 4:
            nb = self._neighbour(k, sat, direction)
            if nb is None:
                return None
            return IDX_DIR[direction], self.sat_ll(nb, OPPOSITE[direction])
        if direction == DOWN and down_target is not None:
            gl = self.ground_links_at(k).get((down_target, sat))
            if gl is None:
                return None
            return IDX_GROUND_SLOT + gl.sat_slot, self.ground_ll(down_target)
        links = self.shell_link_at(k)
        for (lo, hi), sl in links.items():
            if direction == UP and lo == sat:
                return IDX_UP_SLOT + sl.lower_slot, self.sat_ll(hi, DOWN)
            if direction == DOWN and hi == sat:
                return IDX_DN_SLOT + sl.upper_slot, self.sat_ll(lo, UP)
        return None

    def _neighbour(self, k: int, sat: int, direction: int) -> int | None:
        nb = self._nb_cache(k)
        v = int(nb[sat, direction])
        return None if v < 0 else v

    def _nb_cache(self, k: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_nbc", {})
        if k not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[k] = neighbour_matrix(self.db.links(k), len(self.db.sat_names))[0]
        return cache[k]

