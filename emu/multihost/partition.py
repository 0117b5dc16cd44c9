"""Partition a plan's nodes over N hosts: whole planes per host, balanced by node count (pure, no root).

spec: grc-based-routing §Time-Varying Routing Module (the plan is computed
once and every host reads the same one: the partition only decides *where*
each namespace lives, never what it holds). Issue 13.

Rules, each defined here once:

- Satellites go by whole planes (``(shell, plane)``), planes in order, in
  contiguous blocks: every intra-plane (N/S) ISL stays on one host, and only
  inter-plane (E/W) ISLs at the blocks' edges, inter-shell (Up/Down) links and
  ground links can cross hosts.
- Balance counts nodes (namespaces): satellites plus the ground nodes a host
  holds. A user terminal and its device stay together (their LAN never
  crosses). Ground stations go to the host whose satellites they link to in
  most slices (affinity), operator cores to the host of most of their ground
  stations, the Internet to the host of most cores -- each only while that
  host is below the balanced share, else to the least-loaded host.
- Ties break by the lower host index and by node order: the partition of a
  plan is deterministic.
- The cut of a slice: links in use in that slice whose ends are on different
  hosts (each becomes a VXLAN pair over the underlay, :mod:`emu.multihost.underlay`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from emu.dataplane import desired as D
from emu.dataplane.model import Model
from emu.dataplane.terrestrial import fixed_links

MAX_HOSTS = 64


@dataclass(frozen=True)
class Partition:
    n_hosts: int
    host_of: dict[str, int]  # node name -> host index
    planes: tuple[tuple[tuple[int, int], ...], ...]  # per host: its (shell, plane)s, in order

    def nodes_of(self, h: int) -> list[str]:
        return [n for n, x in self.host_of.items() if x == h]

    def load(self) -> list[int]:
        c = Counter(self.host_of.values())
        return [c.get(h, 0) for h in range(self.n_hosts)]

    def crosses(self, a: str, b: str) -> bool:
        return self.host_of[a] != self.host_of[b]


def _plane_blocks(m: Model, n_hosts: int) -> list[list[tuple[int, int]]]:
    """Contiguous blocks of whole planes, host h's block ending where the satellite count first reaches
    (h+1)/N of the total (nearest plane boundary); every host gets at least one plane when there are enough."""
    sizes = Counter((sh, pl) for _i, _n, sh, pl, _s, _o in m.db.sat_rows)
    planes = sorted(sizes)
    total = sum(sizes.values())
    blocks: list[list[tuple[int, int]]] = [[] for _ in range(n_hosts)]
    cum, h = 0, 0
    for i, p in enumerate(planes):
        left_planes = len(planes) - i
        left_hosts = n_hosts - h
        # move on when this host reached its share, or when the remaining hosts need one plane each
        if blocks[h] and h < n_hosts - 1 and (
                abs(cum + sizes[p] - total * (h + 1) / n_hosts) > abs(cum - total * (h + 1) / n_hosts)
                or left_planes < left_hosts):
            h += 1
        blocks[h].append(p)
        cum += sizes[p]
    return blocks


def partition(m: Model, n_hosts: int) -> Partition:
    """Whole planes per host, ground nodes by affinity within the balanced share (module docstring)."""
    if not 1 <= n_hosts <= MAX_HOSTS:
        from emu.errors import InputError

        raise InputError(f"--hosts: must be 1..{MAX_HOSTS} (got {n_hosts})")
    blocks = _plane_blocks(m, n_hosts)
    plane_host = {p: h for h, ps in enumerate(blocks) for p in ps}
    host_of: dict[str, int] = {}
    sat_host = []
    for _i, name, sh, pl, _s, _o in m.db.sat_rows:
        sat_host.append(plane_host[(sh, pl)])
        host_of[name] = plane_host[(sh, pl)]
    load = Counter(host_of.values())
    cap = math.ceil(len(m.nodes) / n_hosts)

    def place(names: list[str], affinity: Counter) -> None:
        best = sorted(range(n_hosts), key=lambda h: (-affinity.get(h, 0), h))
        fits = [h for h in best if affinity.get(h, 0) > 0 and load[h] + len(names) <= cap]
        h = fits[0] if fits else min(range(n_hosts), key=lambda x: (load[x], x))
        for n in names:
            host_of[n] = h
        load[h] += len(names)

    # ground nodes: slices linked to each host's satellites (every antenna), strongest affinity first
    aff: dict[int, Counter] = {g.idx: Counter() for g in m.db.ground}
    for gl in m.ground_links:
        aff[gl.ground][sat_host[gl.sat]] += gl.last - gl.first + 1
    order = sorted(m.db.ground, key=lambda g: (-max(aff[g.idx].values(), default=0), g.idx))
    for g in order:
        place([g.name] + ([g.device] if g.kind == "ut" and g.device else []), aff[g.idx])
    inet_aff: Counter = Counter()
    for idx, name, _c, _p in m.db.operators:
        a = Counter(host_of[g.name] for g in m.gss if g.operator == idx)
        place([name], a)
        inet_aff[host_of[name]] += 1
    place([m.cfg.inet_name], inet_aff)
    missing = [n.name for n in m.nodes if n.name not in host_of]
    if missing:
        raise AssertionError(f"partition: nodes without a host: {missing[:3]}")
    return Partition(n_hosts, {n.name: host_of[n.name] for n in m.nodes}, tuple(tuple(b) for b in blocks))


# ============================================================================ the cut
def is_intra_plane(m: Model, a: int, b: int) -> bool:
    ra, rb = m.db.sat_rows[a], m.db.sat_rows[b]
    return (ra[2], ra[3]) == (rb[2], rb[3])


def cut_fixed(m: Model, p: Partition) -> dict[str, list[D.Veth]]:
    """Links created once that cross hosts: grid ISLs of any slice, terrestrial links (by kind)."""
    out: dict[str, list[D.Veth]] = {}
    for v in fixed_links(m):
        if p.crosses(v.node_a, v.node_b):
            out.setdefault(v.kind, []).append(v)
    return out


def cut_at(m: Model, p: Partition, k: int) -> dict[str, int]:
    """Links in use in slice k whose ends are on different hosts, by kind (isl: inter-plane grid ISLs up;
    ground; shell: Up/Down; terrestrial: core/Internet/peering links, always in use)."""
    sats = m.satellites
    isl = sum(1 for a, b, _d in m.active_grid(k) if p.crosses(sats[a].name, sats[b].name))
    gnd = sum(1 for (g, s), _gl in m.ground_links_at(k).items() if p.crosses(m.db.ground[g].name, sats[s].name))
    shell = sum(1 for (lo, hi), _sl in m.shell_link_at(k).items() if p.crosses(sats[lo].name, sats[hi].name))
    terr = sum(len(v) for kind, v in cut_fixed(m, p).items() if kind != "isl")
    return {"isl": isl, "ground": gnd, "shell": shell, "terrestrial": terr, "total": isl + gnd + shell + terr}


def summary(m: Model, p: Partition, slices: range | None = None) -> dict:
    """The split and the cut per slice, as `leo-emu partition --format json` prints it."""
    slices = slices if slices is not None else range(m.n_slices)
    kinds = Counter()
    hosts = []
    for h in range(p.n_hosts):
        names = p.nodes_of(h)
        c = Counter(m.by_name[n].kind for n in names)
        hosts.append({"host": h, "nodes": len(names), "satellites": c.get("satellite", 0),
                      "planes": [list(x) for x in p.planes[h]],
                      "ground": sorted(n for n in names if m.by_name[n].kind in ("gs", "ut")),
                      "devices": sorted(n for n in names if m.by_name[n].kind == "dev"),
                      "cores": sorted(n for n in names if m.by_name[n].kind == "core"),
                      "inet": m.cfg.inet_name in names})
        kinds.update(c)
    per = [dict(slice=k, **cut_at(m, p, k)) for k in slices]
    totals = [c["total"] for c in per]
    fixed = cut_fixed(m, p)
    dyn_ground = sum(1 for gl in m.ground_links if p.crosses(m.db.ground[gl.ground].name, m.satellites[gl.sat].name))
    dyn_shell = sum(1 for sl in m.shell_links
                    if p.crosses(m.satellites[sl.lower].name, m.satellites[sl.upper].name))
    loads = p.load()
    return {
        "hosts": p.n_hosts, "nodes": len(m.nodes), "load": loads,
        "imbalance": round(max(loads) / (len(m.nodes) / p.n_hosts), 4),
        "split": hosts,
        "cut": {"max": max(totals, default=0), "mean": round(sum(totals) / len(totals), 2) if totals else 0.0,
                "min": min(totals, default=0),
                "vxlan_fixed": {k: len(v) for k, v in sorted(fixed.items())},
                "vxlan_dynamic": {"ground": dyn_ground, "shell": dyn_shell}},
        "per_slice": per,
    }


def directions_cut(m: Model, p: Partition) -> Counter:
    """How many cut grid ISLs leave in each direction (0..3 = n s e w): intra-plane ones never do."""
    sats = m.satellites
    return Counter(int(d) for a, b, d in m.grid_links.tolist() if p.crosses(sats[a].name, sats[b].name))

