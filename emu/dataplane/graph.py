"""One slice's data-plane topology as a graph: GraphML or Graphviz DOT (pure: no kernel, no root).

Nodes are the run's nodes (one namespace each); edges are the links that
carry traffic in slice k, as the desired state names them
(:mod:`emu.dataplane.desired`, :mod:`emu.dataplane.terrestrial`): grid ISLs up, inter-shell and ground links in
use, and the terrestrial links, each with both interface names, the link's
kind, rate and (for space links) the plan's one-way delay.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from emu.dataplane import desired as D
from emu.dataplane.model import Model
from emu.dataplane.terrestrial import terrestrial_veths

NODE_KEYS = (("kind", "string"), ("index", "int"), ("lat", "double"), ("lon", "double"))
EDGE_KEYS = (("kind", "string"), ("ifname_a", "string"), ("ifname_b", "string"), ("rate_mbit", "double"),
             ("delay_ms", "double"))


def slice_graph(m: Model, k: int) -> tuple[list[dict], list[dict]]:
    """(nodes, edges) of slice k; every value plain (str, int, float)."""
    if not 0 <= k < m.n_slices:
        raise ValueError(f"slice: must be 0..{m.n_slices - 1} (got {k})")
    ground = {g.name: g for g in m.db.ground}
    nodes = []
    for n in m.nodes:
        item = {"id": n.name, "kind": n.kind, "index": n.index}
        g = ground.get(n.name)
        if g is not None:
            item["lat"], item["lon"] = g.lat, g.lon
        nodes.append(item)
    delay = {}
    for r in m.db.links(k):
        delay[(int(r["a"]), int(r["b"]), int(r["dir_a"]))] = float(r["delay_ms"])
    att = m.db.link_ranges(k)  # (node, sat) -> km, every antenna's link
    edges = []

    def edge(v: D.Veth, delay_ms: float | None) -> None:
        e = {"source": v.node_a, "target": v.node_b, "kind": v.kind, "ifname_a": v.ifname_a,
             "ifname_b": v.ifname_b}
        if v.rate_bps:
            e["rate_mbit"] = v.rate_bps / 1e6
        if delay_ms is not None:
            e["delay_ms"] = round(delay_ms, 6)
        edges.append(e)

    for a, b, d in sorted(m.active_grid(k)):
        edge(D.grid_veth(m, a, b, d), delay.get((a, b, d)))
    for (lo, hi), sl in sorted(m.shell_link_at(k).items()):
        edge(D.shell_veth(m, sl), delay.get((lo, hi, 5)))
    for (g, sat), gl in sorted(m.ground_links_at(k).items()):  # every antenna's link
        edge(D.ground_veth(m, gl), att.get((g, sat), 0.0) / 299792.458 * 1e3)
    for v in terrestrial_veths(m):
        edge(v, m.cfg.terrestrial_delay_ms if v.kind != "lan" else None)
    return nodes, edges


def to_graphml(nodes: list[dict], edges: list[dict], name: str = "slice") -> str:
    """GraphML (undirected), with typed keys for the node and edge attributes."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">']
    for key, typ in NODE_KEYS:
        out.append(f'  <key id="n_{key}" for="node" attr.name="{key}" attr.type="{typ}"/>')
    for key, typ in EDGE_KEYS:
        out.append(f'  <key id="e_{key}" for="edge" attr.name="{key}" attr.type="{typ}"/>')
    out.append(f'  <graph id={quoteattr(name)} edgedefault="undirected">')
    for n in nodes:
        out.append(f'    <node id={quoteattr(n["id"])}>')
        out += [f'      <data key="n_{key}">{escape(str(n[key]))}</data>' for key, _t in NODE_KEYS if key in n]
        out.append("    </node>")
    for i, e in enumerate(edges):
        out.append(f'    <edge id="e{i}" source={quoteattr(e["source"])} target={quoteattr(e["target"])}>')
        out += [f'      <data key="e_{key}">{escape(str(e[key]))}</data>' for key, _t in EDGE_KEYS if key in e]
        out.append("    </edge>")
    out += ["  </graph>", "</graphml>"]
    return "\n".join(out) + "\n"


def _dot_id(x: object) -> str:
    return '"' + str(x).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(nodes: list[dict], edges: list[dict], name: str = "slice") -> str:
    """Graphviz DOT (undirected); interface names as tail/head labels."""
    out = [f"graph {_dot_id(name)} {{"]
    for n in nodes:
        attrs = ", ".join(f"{k}={_dot_id(n[k])}" for k, _t in NODE_KEYS if k in n)
        out.append(f"  {_dot_id(n['id'])} [{attrs}];")
    for e in edges:
        attrs = [f"{k}={_dot_id(e[k])}" for k, _t in EDGE_KEYS if k in e]
        attrs += [f"taillabel={_dot_id(e['ifname_a'])}", f"headlabel={_dot_id(e['ifname_b'])}"]
        out.append(f"  {_dot_id(e['source'])} -- {_dot_id(e['target'])} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"
