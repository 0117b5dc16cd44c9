"""The SNO hook's netlink bodies, decoded back with pyroute2's parsers (spec: inter-sno-mobility §5.1)."""

from __future__ import annotations

import socket

from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from emu.control.sno import nlhook
from emu.dataplane.nlmsg import decode


def test_neigh_is_a_permanent_ipv4_entry() -> None:
    m = decode(ndmsg, nlhook.neigh_body(20, "10.254.0.1", "02:54:00:00:00:01"))
    assert (m["family"], m["ifindex"], m["state"]) == (socket.AF_INET, 20, nlhook.NUD_PERMANENT)
    assert m.get("NDA_DST") == "10.254.0.1" and m.get("NDA_LLADDR") == "02:54:00:00:00:01"


def test_fdb_is_a_vxlan_self_entry_with_a_remote() -> None:
    m = decode(ndmsg, nlhook.fdb_body(7, "02:54:00:00:00:01", "100.64.0.9"))
    assert (m["family"], m["ifindex"], m["flags"], m["state"]) == (nlhook.AF_BRIDGE, 7, nlhook.NTF_SELF,
                                                                  nlhook.NUD_PERMANENT)
    assert m.get("NDA_LLADDR") == "02:54:00:00:00:01" and m.get("NDA_DST") == "100.64.0.9"


def test_rule_bodies_match_iif_or_destination() -> None:
    m = decode(fibmsg, nlhook.rule_match_body(900, 90, iif="lan"))
    assert m.get("FRA_PRIORITY") == 900 and m.get("FRA_TABLE") == 90 and m.get("FRA_IIFNAME") == "lan"
    assert m["action"] == 1 and m["dst_len"] == 0
    m = decode(fibmsg, nlhook.rule_match_body(901, 90, to="10.253.0.0/16"))
    assert m.get("FRA_DST") == "10.253.0.0" and m["dst_len"] == 16 and m.get("FRA_IIFNAME") is None
    m = decode(fibmsg, nlhook.rule_match_body(902, 0))  # "rule del pref 902": any rule of that pref
    assert m.get("FRA_PRIORITY") == 902 and m.get("FRA_TABLE") is None and m["action"] == 0


def test_ipv6_twins_neighbour_fdb_and_rule() -> None:
    """IPv6 user traffic's access layer (the UT's ``s6v<op>`` uplinks, the GSs' ``vx6``): a neighbour entry
    takes its family from the address, an FDB entry may name an IPv6 remote, a rule is asked for in AF_INET6."""
    m = decode(ndmsg, nlhook.neigh_body(21, "fe80::1", "02:54:00:00:00:01"))
    assert (m["family"], m.get("NDA_DST")) == (socket.AF_INET6, "fe80::1")
    m = decode(ndmsg, nlhook.fdb_body(21, "02:54:00:00:00:01", "fd00:6772:6300::4000:1"))
    assert m["family"] == nlhook.AF_BRIDGE and m.get("NDA_DST") == "fd00:6772:6300::4000:1"
    m = decode(fibmsg, nlhook.rule_match_body(900, 90, iif="lan", family=socket.AF_INET6))
    assert m["family"] == socket.AF_INET6 and m.get("FRA_IIFNAME") == "lan" and m.get("FRA_TABLE") == 90
    assert decode(fibmsg, nlhook.rule_match_body(900, 0, family=socket.AF_INET6))["family"] == socket.AF_INET6
