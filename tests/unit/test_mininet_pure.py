"""Pure parts of the Mininet interop (issue 11): interface parsing, veth candidates, requirements."""

from __future__ import annotations

import json

from emu.mininet import peers, requirements

SAT = json.dumps([
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "address": "00:00:00:00:00:00",
     "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                   {"family": "inet", "local": "17.130.228.148", "prefixlen": 32}]},
    {"ifindex": 10, "link_index": 11, "ifname": "n", "flags": ["UP"], "address": "02:00:5a:00:00:20",
     "link_netnsid": 0, "linkinfo": {"info_kind": "veth"},
     "addr_info": [{"family": "inet", "local": "17.130.228.144", "prefixlen": 32},
                   {"family": "inet6", "local": "fe80::100:2:0:0", "prefixlen": 64}]},
    {"ifindex": 5, "link_index": 3, "ifname": "vx0", "flags": [], "linkinfo": {"info_kind": "vxlan"}},
])


def test_parse_ip_addr_keeps_ipv4_and_veth_peer_only():
    lo, n, vx = peers.parse_ip_addr("le1-sat0-0-2", SAT)
    assert lo.ipv4 == [("127.0.0.1", 8), ("17.130.228.148", 32)] and lo.peer_ifindex is None
    assert (n.name, n.ifindex, n.peer_ifindex, n.peer_nsid, n.up, n.kind) == ("n", 10, 11, 0, True, "veth")
    assert n.ipv4 == [("17.130.228.144", 32)] and n.mac == "02:00:5a:00:00:20"
    assert vx.peer_ifindex is None and vx.up is False  # a vxlan's IFLA_LINK is not a peer


def _veth(ns, name, idx, peer, nsid=0):
    return peers.IntfInfo(ns, name, idx, peer_ifindex=peer, peer_nsid=nsid, kind="veth")


def test_candidates_are_namespaces_with_mirrored_ifindexes():
    intfs = {
        "a": [_veth("a", "n", 10, 11), _veth("a", "g0", 100, 7)],
        "b": [_veth("b", "s", 11, 10)],
        "c": [_veth("c", "s", 11, 10), _veth("c", "up0", 7, 100)],
        "d": [_veth("d", "x", 12, 13)],
    }
    cands = peers.candidate_pairs(intfs)
    assert cands["a"] == {"b", "c"}
    assert cands["b"] == {"a"} and cands["c"] == {"a"} and cands["d"] == set()


def test_nsid_reply_parser_reads_ids_and_errors():
    import struct

    def msg(mtype, seq, payload):
        return peers._HDR.pack(peers._HDR.size + len(payload), mtype, 0, seq, 0) + payload

    ok = msg(peers.RTM_NEWNSID, 1, struct.pack("=B3x", 0) + struct.pack("=HHi", 8, peers.NETNSA_NSID, 4))
    unassigned = msg(peers.RTM_NEWNSID, 2, struct.pack("=B3x", 0) + struct.pack("=HHi", 8, peers.NETNSA_NSID, -1))
    err = msg(peers.NLMSG_ERROR, 3, struct.pack("=i", -22) + b"\0" * 16)
    out: dict[int, int] = {}
    peers._parse_nsid_replies(ok + unassigned + err, out)
    assert out == {1: 4, 2: -1, 3: -1}
    req = peers._nsid_request(7, 42)
    length, mtype, flags, seq, _pid = peers._HDR.unpack_from(req)
    assert (length, mtype, flags, seq) == (len(req), peers.RTM_GETNSID, peers.NLM_F_REQUEST, 7)
    assert struct.unpack_from("=HHI", req, peers._HDR.size + 4) == (8, peers.NETNSA_FD, 42)


def test_requirements_name_what_is_missing_and_how_to_install():
    full = {"package": "2.3.0", "mnexec": "/usr/bin/mnexec", "ip": "/usr/sbin/ip", "bash": "/bin/bash"}
    assert requirements.missing(full) == []
    gone = requirements.missing({**full, "package": None, "mnexec": None})
    assert gone == ["mininet (Python package)", "mnexec"]
    assert "--no-install-recommends mininet" in requirements.INSTALL_HINT
    assert requirements.MininetMissing.exit_code != 0
