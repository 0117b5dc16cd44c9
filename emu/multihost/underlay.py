"""The underlay between hosts: addresses, one VNI per cross-host link, VXLAN halves; and the simulated fabric.

A link whose two ends live on different hosts becomes two VXLAN devices,
one per host, with the single-host veth's interface name, ifindex, MAC, MTU
and interface group, so every address, link-local next hop and route the
applier sets per slice is unchanged (issue 13; spec: satellite-semantic-
addressing §5.4 for the link-locals). Each device is created from the host's
underlay namespace and placed into the node's namespace in the same request
(IFLA_NET_NS_FD): its UDP socket stays in the underlay namespace
(``link-netns``), so the node namespaces never get an underlay address.

On one machine each simulated host is an underlay namespace ``<run>-u<h>``
with address :func:`host_addr` on a bridge in the namespace ``<run>-fab``;
nothing is added to the machine's own namespace.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emu.dataplane import desired as D
from emu.dataplane.model import Model
from emu.dataplane.netlink import NLM_F_CREATE, NLM_F_EXCL, RTM_NEWLINK
from emu.dataplane.nlmsg import encode, ifinfmsg, mac_text, opt_attrs
from emu.dataplane.terrestrial import fixed_links

UNDERLAY_NET = ipaddress.ip_network("198.18.0.0/24")  # RFC 2544 benchmarking range, only inside our namespaces
UNDERLAY_MTU = 9000  # room for the 50-byte VXLAN header on links of MTU 1600
UNDERLAY_PORT = 4790  # not the UT<->GS tunnel's 4789 (those sockets live in node namespaces anyway)
VNI_BASE = 100_000  # above the operators' UT<->GS VNIs (1000 + operator)
UNDERLAY_IF = "ul0"


def host_addr(h: int) -> str:
    """Host h's underlay address."""
    return str(UNDERLAY_NET.network_address + 1 + h)


def fabric_ns(prefix: str) -> str:
    return f"{prefix}-fab"


def underlay_ns(prefix: str, h: int) -> str:
    return f"{prefix}-u{h}"


def _key(v: D.Veth) -> tuple:
    return (v.kind, v.node_a, v.ifname_a, v.node_b, v.ifname_b, v.retire)


class VniMap:
    """One VNI per link of the run, the same on every host: the position of the link in the model's fixed
    links, then its ground links, then its inter-shell links (all deterministic from the plan)."""

    def __init__(self, m: Model):
        self.m = m
        self._map: dict[tuple, int] | None = None

    def _build(self) -> dict[tuple, int]:
        m = self.m
        links = fixed_links(m) + [D.ground_veth(m, gl) for gl in m.ground_links] + \
            [D.shell_veth(m, sl) for sl in m.shell_links]
        out = {}
        for i, v in enumerate(links):
            out.setdefault(_key(v), VNI_BASE + i)
        if VNI_BASE + len(links) >= 1 << 24:
            raise ValueError(f"{len(links)} links do not fit the 24-bit VNI space")
        return out

    def of(self, v: D.Veth) -> int:
        if self._map is None:
            self._map = self._build()
        return self._map[_key(v)]


@dataclass(frozen=True)
class VxlanHalf:
    """This host's end of a cross-host link."""

    node: str
    ifname: str
    index: int
    mac: str | None
    mtu: int
    group: int | None
    vni: int
    local: str
    remote: str


def half(v: D.Veth, end: str, host_of: dict[str, int], vni: int) -> VxlanHalf:
    """End ``end`` ('a' or 'b') of veth ``v`` as a VXLAN device toward the other end's host."""
    node, ifname, index, mac, other = ((v.node_a, v.ifname_a, v.index_a, v.mac_a, v.node_b) if end == "a" else
                                       (v.node_b, v.ifname_b, v.index_b, v.mac_b, v.node_a))
    return VxlanHalf(node, ifname, index, mac, v.mtu, v.group, vni, host_addr(host_of[node]),
                     host_addr(host_of[other]))


def vxlan_body(x: VxlanHalf, netns_fd: int) -> bytes:
    """RTM_NEWLINK: a VXLAN device with a fixed remote (point to point, no learning), made in the sending
    socket's namespace and placed in the namespace behind ``netns_fd`` in the same request."""
    data = [("IFLA_VXLAN_ID", x.vni), ("IFLA_VXLAN_LEARNING", 0), ("IFLA_VXLAN_PORT", UNDERLAY_PORT),
            ("IFLA_VXLAN_GROUP", x.remote), ("IFLA_VXLAN_LOCAL", x.local)]
    info = {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": data})]}
    attrs = opt_attrs(("IFLA_IFNAME", x.ifname), ("IFLA_ADDRESS", x.mac and mac_text(x.mac)), ("IFLA_MTU", x.mtu),
                      ("IFLA_GROUP", x.group), ("IFLA_NET_NS_FD", netns_fd))
    return encode(ifinfmsg, {"index": x.index}, attrs + [("IFLA_LINKINFO", info)])


def queue_vxlan(batch, x: VxlanHalf, netns_fd: int) -> int:
    """Queue the creation of ``x`` on the underlay namespace's batch (sent with the others in one write)."""
    return batch.queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, vxlan_body(x, netns_fd), "vxlan add",
                       f"{x.node}:{x.ifname} vni {x.vni}")


# ============================================================================ the simulated fabric (root)
UNDERLAY_SYSCTLS = {"net.ipv6.conf.default.addr_gen_mode": 1, "net.ipv6.conf.all.accept_dad": 0}


def build_fabric(run, n_hosts: int) -> list[str]:
    """One machine as ``n_hosts`` hosts: a bridge namespace and one underlay namespace per host with its
    address on the bridge. Journalled before anything exists; returns the namespace names."""
    from emu.dataplane import netns
    from emu.dataplane.fabric import Fabric

    fab = fabric_ns(run.prefix)
    unders = [underlay_ns(run.prefix, h) for h in range(n_hosts)]
    names = [fab] + unders
    taken = [n for n in names if netns.exists(n)]
    if taken:
        from emu.errors import DataplaneError

        raise DataplaneError("create namespaces", taken[0], 17, "exists already; not touching it")
    run.record_netns(names)
    netns.create_many(names, UNDERLAY_SYSCTLS)
    f = Fabric(names)
    try:
        br = 2
        f.nl[fab].queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                        encode(ifinfmsg, {"index": br}, [("IFLA_IFNAME", "br0"), ("IFLA_MTU", UNDERLAY_MTU),
                               ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})]), "bridge add", "br0")
        f.flush([fab])
        for h, u in enumerate(unders):
            f.nl[u].veth(UNDERLAY_IF, f"h{h}", f.fd[fab], index=2, peer_index=10 + h, mtu=UNDERLAY_MTU)
        f.flush(unders)
        f.nl[fab].link_set(1, up=True)
        f.nl[fab].link_set(br, up=True)
        for h in range(n_hosts):
            f.nl[fab].queue(RTM_NEWLINK, 0, encode(ifinfmsg, {"index": 10 + h}, [("IFLA_MASTER", br)]),
                            "bridge port", f"h{h}")
            f.nl[fab].link_set(10 + h, up=True)
        f.flush([fab])
        for h, u in enumerate(unders):
            f.nl[u].link_set(1, up=True)
            f.nl[u].link_set(2, up=True)
            f.nl[u].addr("add", 2, host_addr(h), UNDERLAY_NET.prefixlen)
        f.flush(unders)
    finally:
        f.close()
    return names
