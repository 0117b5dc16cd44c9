"""What a namespace's kernel holds, read over its netlink socket and decoded by pyroute2's parsers.

The reads of :class:`emu.dataplane.netlink.NetlinkBatch` (``status``, ``doctor``, the FIB check, tests): one
dump request each (``NetlinkBatch.dump``), every reply decoded by pyroute2's message classes into a plain dict.
"""

from __future__ import annotations

import socket

from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETLINK, RTM_GETNEIGH, RTM_GETROUTE, RTM_GETRULE
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from emu.dataplane.nlmsg import decode, encode, route_dict


class Reads:
    """Dump-and-decode reads over ``self.dump(msg_type, body)`` (a :class:`NetlinkBatch`'s)."""

    def dump(self, msg_type: int, body: bytes) -> list[tuple[int, bytes]]:
        raise NotImplementedError

    def links(self) -> list[dict]:
        """Every link: index, name, flags, up, mtu, mac, group, kind."""
        res = []
        for _, p in self.dump(RTM_GETLINK, encode(ifinfmsg, {}, [])):
            m = decode(ifinfmsg, p)
            kind = m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            res.append({"index": m["index"], "name": m.get("IFLA_IFNAME"), "flags": m["flags"],
                        "up": bool(m["flags"] & IFF_UP), "mtu": m.get("IFLA_MTU"),
                        "mac": m.get("IFLA_ADDRESS") or "", "group": m.get("IFLA_GROUP"), "kind": kind or None})
        return res

    def addresses(self, family: int = socket.AF_UNSPEC) -> list[dict]:
        """Every address: index, address (text), plen, family, flags, scope."""
        res = []
        for _, p in self.dump(RTM_GETADDR, encode(ifaddrmsg, {"family": family}, [])):
            m = decode(ifaddrmsg, p)
            res.append({"index": m["index"], "address": m.get("IFA_LOCAL") or m.get("IFA_ADDRESS"),
                        "plen": m["prefixlen"], "family": m["family"],
                        "flags": m.get("IFA_FLAGS") or m["flags"], "scope": m["scope"]})
        return res

    def routes(self, family: int = socket.AF_INET, table: int | None = None) -> list[dict]:
        """Routes of ``family`` (all tables, or only ``table``) as plain dicts:
        dst ("a/plen"), table, type, scope, protocol, metric, oif, gateway,
        via, flags, nexthops [(oif, gateway or via, weight, flags)]."""
        res = []
        for _, p in self.dump(RTM_GETROUTE, encode(rtmsg, {"family": family}, [])):
            r = route_dict(decode(rtmsg, p))
            if table is None or r["table"] == table:
                res.append(r)
        return res

    def rules(self, family: int = socket.AF_INET) -> list[dict]:
        """Every policy rule: priority, table, action."""
        res = []
        for _, p in self.dump(RTM_GETRULE, encode(fibmsg, {"family": family}, [])):
            m = decode(fibmsg, p)
            res.append({"priority": m.get("FRA_PRIORITY") or 0, "table": m.get("FRA_TABLE") or m["table"],
                        "action": m["action"]})
        return res

    def neighbours(self, family: int = socket.AF_UNSPEC) -> list[dict]:
        """Every neighbour / FDB entry: index, family, dst, lladdr, state, flags."""
        res = []
        for _, p in self.dump(RTM_GETNEIGH, encode(ndmsg, {"family": family}, [])):
            m = decode(ndmsg, p)
            res.append({"index": m["ifindex"], "family": m["family"], "dst": m.get("NDA_DST"),
                        "lladdr": m.get("NDA_LLADDR"), "state": m["state"], "flags": m["flags"]})
        return res
