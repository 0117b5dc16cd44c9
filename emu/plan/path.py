"""Follow a plan's tables from one node to another: hops, directions, delay.

The walk uses the reference segmented-longest-match lookup
(:class:`emu.addressing.slm.SegmentedTable`) on the stored tables, hop by
hop, exactly as a satellite's forwarding engine would (spec: grc-based-routing
§Forwarding Algorithm). Where an entry has several egress directions the walk
takes the heaviest; among equally heavy ones (ECMP) the one whose walk of the
tables delivers soonest (ties: spec order N, S, E, W, Down, Up), so the
reported delay is the plan's planned delay; the kernel may hash a flow onto
any of them.
"""

from __future__ import annotations

from functools import lru_cache

import yaml

from emu.addressing.grc import to_ipv4
from emu.errors import PlanInputError, echo
from emu.orbit.constellation import DIRECTIONS, DOWN
from emu.plan import actions
from emu.plan.db import PlanDB
from emu.plan.planner import neighbour_matrix
from emu.snapshot.ground import C_KM_S


class PathFinder:
    def __init__(self, db: PlanDB):
        self.db = db
        self.sc = yaml.safe_load(db.meta["scenario_yaml"])
        self.terrestrial_ms = float(self.sc.get("links", {}).get("terrestrial_delay_ms", 5.0))
        self.inet = self.sc.get("internet", {}).get("name", "inet")
        self.ground_by_name = {g.name: g for g in db.ground}
        self.device_ut = {g.device: g.name for g in db.ground if g.device}
        self.sat_index = {n: i for i, n in enumerate(db.sat_names)}
        self.ops = [o[1] for o in db.operators]

    @lru_cache(maxsize=8)
    def _slice(self, k: int):
        tables = self.db.tables(k)
        links = self.db.links(k)
        nb, dl = neighbour_matrix(links, len(self.db.sat_names))
        att = {node: (sat, rng) for node, sat, rng in self.db.con.execute(
            "SELECT node, sat, range_km FROM attachments WHERE k = ? AND rank = 0", (k,))}
        ranges = self.db.link_ranges(k)  # (node, sat) -> km: every ground link, all antennas
        return tables, nb, dl, att, self.db.gs_choice(k), ranges

    @lru_cache(maxsize=4096)
    def _table(self, k: int, s: int):
        return self._slice(k)[0].reference(s)

    def _pick(self, k: int, act: actions.Action, cur: int, grc_dst: int) -> int:
        """The egress the walk takes: the heaviest; among equally heavy (ECMP), the soonest to deliver."""
        dirs = _heaviest(act)
        if len(dirs) == 1:
            return dirs[0]
        _t, nb, dl, *_ = self._slice(k)
        memo: dict[int, float] = {cur: float("inf")}
        cost = {d: float(dl[cur, d]) + self._remaining(k, int(nb[cur, d]), grc_dst, memo) if nb[cur, d] >= 0
                else float("inf") for d in dirs}
        return min(dirs, key=lambda d: (cost[d], d))

    def _remaining(self, k: int, s: int, grc_dst: int, memo: dict[int, float]) -> float:
        """Least delay (ms) from satellite s to delivering ``grc_dst``, walking the plan's heaviest egresses."""
        if s in memo:
            return memo[s]
        memo[s] = float("inf")  # a loop never counts as a way through
        _t, nb, dl, _att, _choice, ranges = self._slice(k)
        hit = self._table(k, s).lookup(grc_dst)
        best = float("inf")
        if hit is not None:
            act = actions.decode(hit[2])
            if act.kind == actions.LOCAL:
                best = 0.0
            elif act.down_target is not None:
                rng = ranges.get((act.down_target, s))
                best = float("inf") if rng is None else rng / C_KM_S * 1e3
            else:
                for d in _heaviest(act):
                    if nb[s, d] >= 0:
                        best = min(best, float(dl[s, d]) + self._remaining(k, int(nb[s, d]), grc_dst, memo))
        memo[s] = best
        return best

    def egresses(self, k: int, sat: str, grc_dst: int) -> list[str]:
        """The directions satellite ``sat``'s slice-k entry for ``grc_dst`` lets a packet leave by (ECMP/UCMP:
        every one; active-standby: the active); [] without an entry, ["local"] for local delivery."""
        hit = self._table(k, self.sat_index[sat]).lookup(grc_dst)
        if hit is None:
            return []
        act = actions.decode(hit[2])
        if act.kind == actions.LOCAL:
            return ["local"]
        if act.kind == actions.STANDBY:
            return [DIRECTIONS[_pick(act)]]
        return [DIRECTIONS[e.direction] for e in act.egress]

    def resolve(self, name: str) -> tuple[str, str]:
        """(kind, canonical name): kind in ground, satellite, device, internet."""
        if name in self.ground_by_name:
            return "ground", name
        if name in self.sat_index:
            return "satellite", name
        if name in self.device_ut:
            return "device", name
        if name == self.inet:
            return "internet", name
        raise PlanInputError(f"node: unknown (got {echo(name)}); give a ground station, user terminal, device, satellite or {self.inet}")

    def path(self, src: str, dst: str, k: int) -> dict:
        sk, src = self.resolve(src)
        dk, dst = self.resolve(dst)
        tables, nb, dl, att, choice, ranges = self._slice(k)
        hops: list[dict] = []
        pre: list[dict] = []
        post: list[dict] = []
        # terrestrial prefixes and suffixes
        if sk == "device":
            pre.append({"node": src, "egress": "lan", "delay_ms": 0.0})
            src = self.device_ut[src]
        if dk == "device":
            dst_dev, dst = dst, self.device_ut[dst]
            post.append({"node": dst_dev, "egress": None, "delay_ms": 0.0})
        if dk == "internet":
            if src not in self.ground_by_name or self.ground_by_name[src].kind != "ut":
                raise PlanInputError(f"path: to the Internet, give a user device or terminal as SRC (got {echo(src)})")
            ut = self.ground_by_name[src]
            uts = [g for g in self.db.ground if g.kind == "ut"]
            row = [i for i, g in enumerate(uts) if g.name == ut.name]
            gs_idx = int(choice[row[0], 0]) if row else -1
            if gs_idx < 0:
                return self._unreachable(k, pre, src, dst, "no ground station reachable this slice")
            gs = self.db.ground[gs_idx]
            dst = gs.name
            core = self.ops[gs.operator]
            post = [{"node": core, "egress": "terrestrial", "delay_ms": self.terrestrial_ms},
                    {"node": self.inet, "egress": None, "delay_ms": 0.0}]
            last_gs_egress = ("terrestrial", self.terrestrial_ms)
        else:
            last_gs_egress = (None, 0.0)
        if sk == "internet":
            raise PlanInputError(f"path: from the Internet, give a user device or terminal as SRC and reverse it (got {echo(self.inet)})")
        dst_kind, _ = self.resolve(dst)
        if dst_kind == "ground":
            g = self.ground_by_name[dst]
            grc_dst, target_ground = int(g.grc), g.idx
        else:
            grc_dst, target_ground = int(self.db.sat_addresses[self.sat_index[dst]]), None
        # entering the satellite segment
        if src in self.ground_by_name:
            g = self.ground_by_name[src]
            if g.idx not in att:
                return self._unreachable(k, pre, src, dst, f"{src} sees no satellite")
            cur, rng = att[g.idx]
            hops.append({"node": src, "egress": "Up", "delay_ms": rng / C_KM_S * 1e3})
        else:
            cur = self.sat_index[src]
        seen = set()
        while True:
            if cur in seen:
                return self._unreachable(k, pre + hops, src, dst, "loop")
            seen.add(cur)
            hit = self._table(k, cur).lookup(grc_dst)
            name = self.db.sat_names[cur]
            if hit is None:
                return self._unreachable(k, pre + hops, src, dst, f"no route at {name} (ICMP unreachable)")
            act = actions.decode(hit[2])
            if act.kind == actions.LOCAL:
                hops.append({"node": name, "egress": None, "delay_ms": 0.0})
                break
            if act.down_target is not None:
                tgt = self.db.ground[act.down_target]
                rng_km = ranges.get((act.down_target, cur))
                if rng_km is None:
                    return self._unreachable(k, pre + hops, src, dst, f"{name}: Down to {tgt.name} has no ground link")
                hops.append({"node": name, "egress": "Down", "delay_ms": rng_km / C_KM_S * 1e3})
                hops.append({"node": tgt.name, "egress": last_gs_egress[0], "delay_ms": last_gs_egress[1]})
                break
            eg = self._pick(k, act, cur, grc_dst)
            nxt = int(nb[cur, eg])
            if nxt < 0:
                return self._unreachable(k, pre + hops, src, dst, f"{name}: {DIRECTIONS[eg]} has no link")
            hops.append({"node": name, "egress": DIRECTIONS[eg], "delay_ms": float(dl[cur, eg])})
            cur = nxt
        if target_ground is not None and hops[-1]["node"] != dst:
            return self._unreachable(k, pre + hops, src, dst, "delivered to the wrong node")
        all_hops = pre + hops + post
        segment = sum(h["delay_ms"] for h in hops if h["egress"] in ("Up", "Down") or h["node"] in self.sat_index)
        out = {"slice": k, "time_s": self.db.slice_time(k), "reachable": True, "hops": all_hops,
               "satellite_hops": sum(1 for h in hops if h["node"] in self.sat_index),
               "one_way_delay_ms": round(sum(h["delay_ms"] for h in all_hops), 4),
               "grc_dst": to_ipv4(grc_dst)}
        if src in self.ground_by_name and target_ground is not None:
            # stretch: the satellite segment (ground -> ... -> ground) over the free-choice optimum
            opt = self.optimum(k, self.ground_by_name[src].idx, target_ground)
            out["segment_delay_ms"] = round(segment, 4)
            out["optimum_ms"] = None if opt is None else round(opt, 4)
            out["stretch"] = None if not opt else round(segment / opt, 4)
        return out

    @lru_cache(maxsize=64)
    def _free_distances(self, k: int, dst_node: int):
        """Least delay from every satellite to ground node ``dst_node`` through any satellite it sees."""
        import numpy as np

        from emu.plan.routing import destination_distances

        links = self.db.links(k)
        vis = self.db.visible(k)
        mine = vis[vis["node"] == dst_node]
        terms = (np.zeros(len(mine), np.int64), mine["sat"].astype(np.int64), mine["range_km"] / C_KM_S * 1e3)
        n = len(self.db.sat_names)
        return destination_distances(n, links["a"], links["b"], links["delay_ms"].astype(float), terms, 1)[0]

    def optimum(self, k: int, src_node: int, dst_node: int) -> float | None:
        """Free-choice optimum: least up + ISL path + down over every satellite pair the two ends see
        (no relaying through the ground); None if there is none."""
        import numpy as np

        vis = self.db.visible(k)
        mine = vis[vis["node"] == src_node]
        if len(mine) == 0:
            return None
        d = mine["range_km"] / C_KM_S * 1e3 + self._free_distances(k, dst_node)[mine["sat"]]
        best = float(np.min(d))
        return best if np.isfinite(best) else None

    def _unreachable(self, k, hops, src, dst, why) -> dict:
        return {"slice": k, "time_s": self.db.slice_time(k), "reachable": False, "reason": why, "hops": hops,
                "one_way_delay_ms": None, "grc_dst": None}


def _heaviest(act: actions.Action) -> list[int]:
    """The directions the walk may take: the active one (active-standby), else the heaviest (ECMP: all)."""
    if act.kind == actions.STANDBY:
        return [_pick(act)]
    top = max(e.attribute for e in act.egress)
    return [e.direction for e in act.egress if e.attribute == top]


def _pick(act: actions.Action) -> int:
    if act.kind == actions.STANDBY:
        return next(e.direction for e in act.egress if e.attribute == 1)
    best = max(act.egress, key=lambda e: (e.attribute, -e.direction))
    return best.direction


def route_rows(db: PlanDB, sat: int, k: int) -> list[dict]:
    """The directional table of one satellite in one slice, as the spec draws it."""
    from emu.addressing.grc import decode

    tables = db.tables(k)
    links = db.links(k)
    nb = {}
    for r in links:
        if r["a"] == sat:
            nb[int(r["dir_a"])] = db.sat_names[int(r["b"])]
        if r["b"] == sat:
            nb[int(r["dir_b"])] = db.sat_names[int(r["a"])]
    rows = []
    for p, l, a in zip(*tables.of(sat)):
        act = actions.decode(int(a))
        level = (int(l) - 11) // 3
        try:
            info = decode(int(p) | (0 if l == 32 else _unused_digits(level)))
            region = info.cell if l < 32 else decode(int(p)).cell
        except Exception:  # noqa: BLE001 - a region label is best effort
            region = None
        paths = []
        for e in act.egress:
            nh = db.ground[act.down_target].name if (e.direction == DOWN and act.down_target is not None) else nb.get(e.direction)
            attr = {"weight": e.attribute} if act.kind == actions.MULTIPATH else \
                {"priority": "primary" if e.attribute == 1 else "standby"}
            paths.append({"direction": DIRECTIONS[e.direction], "next_hop": nh, **attr})
        rows.append({"destination": f"{to_ipv4(int(p))}/{int(l)}", "level": level if l < 32 else 6,
                     "region": region, "kind": actions.KIND_NAMES[act.kind],
                     "paths": paths if act.kind != actions.LOCAL else [{"direction": "local", "next_hop": None}]})
    return rows


def _unused_digits(level: int) -> int:
    """The GRC bits that mark digits below ``level`` as unused (all ones), as H3 stores them."""
    bits = 0
    for r in range(level + 1, 7):
        bits |= 7 << (3 + 3 * (6 - r))
    return bits
