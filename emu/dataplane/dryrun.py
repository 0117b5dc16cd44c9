"""``up --dry-run``: what a run would create, from the desired state alone (pure: no kernel, no root).

Namespaces, links (with both interface names), tables and rules per node,
addresses, tunnels and processes of the start slice -- the same values the
builder and the applier would push (:mod:`emu.dataplane.slicestate`,
:mod:`emu.dataplane.terrestrial`), listed instead of created. Kernel
features are not probed (that needs a throwaway namespace): where the build
depends on them (tunnel kind under ``auto``, shaping, delays, NAT) the
report says so.
"""

from __future__ import annotations

from collections import Counter

from emu.addressing.grc import ipv6_base
from emu.dataplane import desired as D
from emu.dataplane import ifnames, servers, slicemark
from emu.dataplane.model import Model
from emu.dataplane.slicestate import Desired
from emu.dataplane.terrestrial import fixed_links, terrestrial_addrs, terrestrial_routes, tunnel_config

PLACEHOLDER_PREFIX = "RUN"  # the run id is drawn when the run starts


def _veth(v: D.Veth) -> dict:
    out = {"kind": v.kind, "a": v.node_a, "a_if": v.ifname_a, "b": v.node_b, "b_if": v.ifname_b, "mtu": v.mtu}
    if v.rate_bps:
        out["rate_mbit"] = v.rate_bps / 1e6
    if v.retire is not None:
        out["retire_slice"] = v.retire
    return out


def describe(m: Model, k0: int = 0, plan: str = "", scenario: str = "") -> dict:
    """Everything ``up`` would create for a run starting at slice ``k0`` of ``m``'s plan."""
    d = Desired(m, k0)
    st = d.state(k0)
    fixed = fixed_links(m)
    dynamic = sorted(st.links)
    per_node: dict[str, dict] = {n.name: {"kind": n.kind, "netns": n.netns, "interfaces": ["lo"], "addresses": [],
                                          "tables": {}, "rules": []} for n in m.nodes}
    for v in fixed + dynamic:
        per_node[v.node_a]["interfaces"].append(v.ifname_a)
        per_node[v.node_b]["interfaces"].append(v.ifname_b)
    tun = ifnames.TUNNEL_IFNAME[m.cfg.tunnel_mode]
    tcfg = tunnel_config(m)
    for dev in tcfg.devices:
        per_node[dev.node]["interfaces"].append(dev.ifname)
    for a in terrestrial_addrs(m) + list(tcfg.addrs):
        per_node[a.node]["addresses"].append(f"{a.addr}/{a.plen}")
    main: Counter = Counter()
    for r in terrestrial_routes(m) + list(tcfg.routes) + list(tcfg.encap_routes):
        main[r.node] += 1
    for g in st.ground.values():  # main, or under the mark switch slice k's table and unmarked lookups' table
        for t in ([g.table, slicemark.GROUND_UNMARKED_TABLE] if st.mark is not None else []):
            per_node[g.node]["tables"][str(t)] = 1 + bool(g.dst6)
        if st.mark is not None:
            per_node[g.node]["rules"] = [{"table": r.table, "priority": r.priority, "family": r.family,
                                          "fwmark": "0" if r.mark is None else hex(r.mark),
                                          **({"to": r.dst} if r.dst else {})} for r in D.ground_rules(st)]
        else:
            main[g.node] += 1 + bool(g.dst6)
    for c in st.cores.values():
        main[c.node] += 1 + bool(c.subnet6)
    if m.cfg.tunnel_mode == "ipip":
        for t in st.tunnels.values():
            main[t.node] += 1  # the Internet prefix, encapsulated toward the chosen GS
    for name, n in main.items():
        per_node[name]["tables"]["main"] = n
    # the rotating rules: both families alike, or under the mark switch IPv4's, for unmarked lookups only
    rules = [{"table": r.table, "priority": r.priority, "families": sorted({x.family for x in st.rules})}
             for r in sorted(st.rules) if r.family == 4]
    mark_rules = [{"table": r.table, "priority": r.priority, "family": r.family,
              "fwmark": "0 (iif lo)" if r.mark is None else hex(r.mark)}
             for r in slicemark.fixed_rules(D.table_id, D.N_TABLES)] if st.mark is not None else []
    base6 = ipv6_base(m.cfg.grc_ipv6_prefix)
    for s, sat in enumerate(m.satellites):
        node = per_node[sat.name]
        node["tables"][str(st.table)] = len(st.routes[s])
        node["tables6"] = {str(st.table): len(st.routes[s])}  # the IPv6 twins (desired.routes6)
        node["rules"] = rules
        node["addresses"] += [f"{a}/32" for a in st.grc_addrs[s]]
        # the IPv6 twins: local /128 routes of the local table, not addresses (SliceApplier._addrs)
        node["local_routes6"] = [f"{D.grc_twin6(a, base6)}/128" for a in st.grc_addrs[s]]
    processes = [{"node": m.cfg.inet_name, "argv": argv, "what": what}
                 for argv, what in servers.internet_servers(m.cfg.inet_addr, m.cfg.inet_addr6)]
    processes += [{"node": name, "what": "nftables masquerade", "argv": ["nft", "-f", "-"],
                   "note": "where the kernel has nftables NAT"} for _i, name, _c, _p in m.db.operators]
    if m.cfg.bgp:
        processes += _bgp_processes(m, k0)
    n_routes = sum(len(r) for r in st.routes.values())
    return {
        "dry_run": True,
        "plan": plan,
        "scenario": scenario,
        "start_slice": k0,
        "n_slices": m.n_slices,
        "namespace_prefix": f"{m.prefix}-",
        "namespaces": [{"name": n.name, "kind": n.kind, "netns": n.netns} for n in m.nodes],
        "namespace_counts": dict(sorted(Counter(n.kind for n in m.nodes).items())),
        "links": {"fixed": [_veth(v) for v in fixed], "dynamic": [_veth(v) for v in dynamic],
                  "counts": dict(sorted(Counter(v.kind for v in fixed + dynamic).items())),
                  "grid_up": len(st.grid)},
        "satellite_tables": {"table": st.table, "rules": rules, "routes_total": n_routes,
                             "switch": ({"by": "mark", "mark": hex(st.mark), "fixed_rules": mark_rules,
                                         "nftables": f"inet {slicemark.TABLE}: meta mark set, armed for each boundary "
                                                     "(satellites, UTs and GSs)"}
                                        if st.mark is not None else {"by": "rules"}),
                             "families": ["IPv4", "IPv6"], "grc_ipv6_prefix": m.cfg.grc_ipv6_prefix,
                             "routes_max": max((len(r) for r in st.routes.values()), default=0),
                             "unresolved": st.unresolved},
        "tunnel": {"scenario": m.cfg.tunnel_pref, "mode": m.cfg.tunnel_mode, "ifname": tun,
                   "note": "auto: ipip where the kernel has it (decided at up from the detected features)"
                   if m.cfg.tunnel_pref == "auto" else ""},
        "tunnel_targets": {m.db.ground[t.ut].name: m.db.ground[t.gs].name for t in st.tunnels.values()},
        "tunnel_entries": {"neighbours": len(tcfg.neighs), "vxlan_fdb": len(tcfg.fdbs)},
        "shaping": {"isl_rate_mbit": m.cfg.isl_rate_mbit, "ground_rate_mbit": m.cfg.ground_rate_mbit,
                    "terrestrial_rate_mbit": m.cfg.terrestrial_rate_mbit,
                    "terrestrial_delay_ms": m.cfg.terrestrial_delay_ms,
                    "note": "rates where the kernel has tbf, delays where it has netem"},
        "processes": processes,
        "nodes": per_node,
    }


def _bgp_processes(m, k0: int) -> list[dict]:
    """With the BGP overlay on: one BIRD per c-ASBR / s-ASBR and what each announces at the start slice."""
    from emu.control.bgp import wiring

    ov = wiring.overlay(m, m.db.gs_choice(k0))
    return [{"node": r.name, "what": f"bird ({'c' if r.role == 'core' else 's'}-ASBR, AS{r.asn}, "
             f"timers {m.cfg.bgp_timers})", "argv": ["bird", "-f", "-c", "<run dir>/bgp/" + r.name.replace("-", "_")
                                                      + "/bird.conf"],
             "peers": [p.name for p in r.peerings], "announces": list(r.mnps) if r.role == "stub" else list(r.msps)}
            for r in ov.network.routers.values()]
