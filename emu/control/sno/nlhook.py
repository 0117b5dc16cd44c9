"""The live SNO hook's kernel changes over netlink, in bulk: one socket per namespace, one write per batch.

spec: inter-sno-mobility §5.1 (the access layer a change of serving core
re-points: the terminal's uplink, the serving core's route to it).

The hook (:mod:`emu.control.sno.livehook`) used to run ``ip -batch`` and
``bridge -batch`` processes per node and change; this module queues the
same requests on a :class:`~emu.dataplane.netlink.NetlinkBatch` per
namespace (pyroute2 encodes, the data plane's transport sends) and sends
every namespace's queue in one write. The request bodies that the data
plane's batch does not offer (neighbours, VXLAN FDB entries, rules with an
``iif`` or ``to`` match) are encoded here with pyroute2's message classes
(:func:`neigh_body`, :func:`fdb_body`, :func:`rule_match_body`: pure,
decoded back in ``tests/unit/test_sno_nlhook.py``).

Errors are those ``ip -force -batch`` treated as benign (deleting what is
gone, adding what is there) or are returned as ``(node, op, text)`` for the
caller to log: the hook never stops the slice clock.
"""

from __future__ import annotations

import errno as E
import socket

from pyroute2.netlink import NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.rtnl import RTM_DELRULE, RTM_NEWNEIGH, RTM_NEWRULE
from pyroute2.netlink.rtnl.fibmsg import FR_ACT_TO_TBL, fibmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from emu.dataplane.nlmsg import encode

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7
BENIGN = frozenset({E.ENOENT, E.ESRCH, E.EEXIST, E.EADDRNOTAVAIL, E.ENODEV})


def neigh_body(index: int, addr: str, mac: str) -> bytes:
    """``ip neigh replace ADDR lladdr MAC dev IDX nud permanent`` (IPv4 or IPv6, by ADDR)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return encode(ndmsg, {"family": family, "ifindex": index, "state": NUD_PERMANENT},
                  [("NDA_DST", addr), ("NDA_LLADDR", mac)])


def fdb_body(index: int, mac: str, dst: str) -> bytes:
    """``bridge fdb append|replace MAC dev IDX dst DST`` (a VXLAN device's own table: ``self permanent``)."""
    return encode(ndmsg, {"family": AF_BRIDGE, "ifindex": index, "state": NUD_PERMANENT, "flags": NTF_SELF},
                  [("NDA_LLADDR", mac), ("NDA_DST", dst)])


def rule_match_body(pref: int, table: int, iif: str | None = None, to: str | None = None,
                    family: int = socket.AF_INET) -> bytes:
    """``ip [-6] rule add pref P [iif DEV] [to NET] lookup T``; with ``table=0`` and nothing else: any rule of
    pref P (what ``ip rule del pref P`` deletes)."""
    fields = {"family": family, "table": table if table < 256 else 252,
              "action": FR_ACT_TO_TBL if table else 0}
    attrs: list = [("FRA_PRIORITY", pref)]
    if table:
        attrs.append(("FRA_TABLE", table))
    if iif:
        attrs.append(("FRA_IIFNAME", iif))
    if to:
        net, plen = to.split("/")
        fields["dst_len"] = int(plen)
        attrs.append(("FRA_DST", net))
    return encode(fibmsg, fields, attrs)


class HookNetlink:
    """Queues per node (namespace), then :meth:`flush` in the order given; interface indexes looked up once."""

    def __init__(self, netns_of):
        self.netns_of = netns_of  # node name -> namespace
        self.nl: dict = {}
        self.idx: dict[str, dict[str, int]] = {}
        self.sent = 0

    def batch(self, node: str):
        b = self.nl.get(node)
        if b is None:
            from emu.dataplane.netlink import NetlinkBatch
            b = self.nl[node] = NetlinkBatch(self.netns_of(node), ack_each=False)
        return b

    def index(self, node: str, ifname: str) -> int:
        names = self.idx.get(node)
        if names is None or ifname not in names:
            b = self.batch(node)
            if len(b):
                raise RuntimeError(f"{node}: interface lookup with requests queued")
            names = self.idx[node] = {x["name"]: x["index"] for x in b.links()}
        return names[ifname]

    # ------------------------------------------------------------------ requests
    def vxlan(self, node: str, name: str, vni: int, local: str, port: int, mac: str, mtu: int) -> None:
        self.batch(node).vxlan(name, vni, local=local, dstport=port, learning=False, mac=mac, mtu=mtu)
        self.idx.pop(node, None)

    def link_up(self, node: str, ifname: str) -> None:
        self.batch(node).link_set(self.index(node, ifname), up=True)

    def addr(self, node: str, ifname: str, addr: str, plen: int) -> None:
        self.batch(node).addr("replace", self.index(node, ifname), addr, plen)

    def neigh(self, node: str, ifname: str, addr: str, mac: str) -> None:
        b = self.batch(node)
        b.queue(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, neigh_body(self.index(node, ifname), addr, mac),
                "neigh replace", f"{addr} dev {ifname}")

    def fdb(self, node: str, verb: str, ifname: str, mac: str, dst: str) -> None:
        flags = NLM_F_CREATE | (NLM_F_APPEND if verb == "append" else NLM_F_REPLACE)
        self.batch(node).queue(RTM_NEWNEIGH, flags, fdb_body(self.index(node, ifname), mac, dst), f"fdb {verb}",
                               f"{mac} dev {ifname} dst {dst}")

    def rule_replace(self, node: str, pref: int, table: int, iif: str | None = None, to: str | None = None,
                     family: int = socket.AF_INET) -> None:
        """``ip rule`` has no replace: delete any rule of this pref and family (quietly), then add."""
        b = self.batch(node)
        b.queue(RTM_DELRULE, 0, rule_match_body(pref, 0, family=family), "rule del", f"pref {pref}")
        b.queue(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, rule_match_body(pref, table, iif, to, family), "rule add",
                f"pref {pref}")

    def route(self, node: str, verb: str, dst: str, ifname: str | None = None, gateway: str | None = None,
              onlink: bool = False, table: int = 254) -> None:
        oif = self.index(node, ifname) if ifname else None
        self.batch(node).route(verb, dst, oif=oif, gateway=gateway, onlink=onlink, table=table)

    def flush(self, nodes) -> list[tuple[str, str, str]]:
        """Send the queues of ``nodes`` in that order (one write each); the failures that matter."""
        out = []
        for node in nodes:
            b = self.nl.get(node)
            if b is None or not len(b):
                continue
            res = b.send(BENIGN, check=False)
            self.sent += res.sent
            out += [(node, op, f"{E.errorcode.get(code, code)} {text}".strip())
                    for code, op, text in res.errors.values()]
        return out

    def close(self) -> None:
        for b in self.nl.values():
            b.close()
        self.nl.clear()
