"""Pure parsers and helpers of the measurement tools: ping, iperf3, /proc/net/tcp, trace's grouping.

Samples were captured on the development VM (iputils 20221126, iperf 3.12)
between two namespaces joined by a veth; no root needed here.
"""

from __future__ import annotations

import json

import pytest

from emu.dataplane import capture, ifnames, trace
from emu.dataplane import parsers
from emu.dataplane.runview import Target
from emu.errors import DataplaneError

PING_OK = """PING 10.99.0.2 (10.99.0.2) 56(84) bytes of data.
[1795442212.176912] 64 bytes from 10.99.0.2: icmp_seq=1 ttl=64 time=0.242 ms
[1795442212.377542] 64 bytes from 10.99.0.2: icmp_seq=2 ttl=64 time=0.025 ms
[1795442212.581545] 64 bytes from 10.99.0.2: icmp_seq=3 ttl=64 time=0.024 ms

--- 10.99.0.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 405ms
rtt min/avg/max/mdev = 0.024/0.097/0.242/0.102 ms
"""

PING_PARTIAL = """PING 10.99.0.2 (10.99.0.2) 56(84) bytes of data.
[1795442232.569604] no answer yet for icmp_seq=1
[1795442232.569803] 64 bytes from 10.99.0.2: icmp_seq=2 ttl=64 time=0.070 ms
[1795442232.977613] no answer yet for icmp_seq=3
[1795442232.977764] 64 bytes from 10.99.0.2: icmp_seq=4 ttl=64 time=0.073 ms
[1795442233.385551] no answer yet for icmp_seq=5
[1795442233.385696] 64 bytes from 10.99.0.2: icmp_seq=6 ttl=64 time=0.070 ms

--- 10.99.0.2 ping statistics ---
6 packets transmitted, 3 received, 50% packet loss, time 1017ms
rtt min/avg/max/mdev = 0.070/0.071/0.073/0.001 ms
"""

PING_UNREACHABLE = """PING 10.60.0.5 (10.60.0.5) 56(84) bytes of data.
[1795442224.470751] From 10.99.0.2 icmp_seq=1 Destination Host Unreachable
[1795442224.677444] no answer yet for icmp_seq=1
[1795442224.677570] From 10.99.0.2 icmp_seq=2 Destination Host Unreachable
[1795442224.881457] no answer yet for icmp_seq=2

--- 10.60.0.5 ping statistics ---
3 packets transmitted, 0 received, +2 errors, 100% packet loss, time 411ms

"""

PING_ALL_LOST = """PING 10.99.0.9 (10.99.0.9) 56(84) bytes of data.
[1795442226.405700] no answer yet for icmp_seq=1
[1795442226.917515] no answer yet for icmp_seq=2
[1795442227.429485] no answer yet for icmp_seq=3
[1795442227.941585] no answer yet for icmp_seq=4

--- 10.99.0.9 ping statistics ---
5 packets transmitted, 0 received, 100% packet loss, time 2053ms

"""

PING_NO_ROUTE = """ping: connect: Network is unreachable
"""

PING6 = """PING ::1(::1) 56 data bytes
[1795442205.156759] 64 bytes from ::1: icmp_seq=1 ttl=64 time=0.176 ms
[1795442206.181571] 64 bytes from ::1: icmp_seq=2 ttl=64 time=0.022 ms

--- ::1 ping statistics ---
2 packets transmitted, 2 received, 0% packet loss, time 1025ms
rtt min/avg/max/mdev = 0.022/0.099/0.176/0.077 ms
"""

IPERF_P2 = """{
 "start": {
  "test_start": {
   "protocol": "TCP",
   "num_streams": 2,
   "blksize": 131072,
   "omit": 0,
   "duration": 1,
   "bytes": 0,
   "blocks": 0,
   "reverse": 0,
   "tos": 0,
   "target_bitrate": 0
  },
  "version": "iperf 3.12"
 },
 "intervals": [],
 "end": {
  "sum_sent": {
   "start": 0,
   "end": 1.000061,
   "seconds": 1.000061,
   "bytes": 2417754112,
   "bits_per_second": 19340853103.960655,
   "retransmits": 5476,
   "sender": true
  },
  "sum_received": {
   "start": 0,
   "end": 1.000125,
   "seconds": 1.000125,
   "bytes": 2417753360,
   "bits_per_second": 19339609428.8214,
   "sender": true
  }
 }
}"""

IPERF_REVERSE = """{
 "start": {
  "test_start": {
   "protocol": "TCP",
   "num_streams": 1,
   "blksize": 131072,
   "omit": 0,
   "duration": 1,
   "bytes": 0,
   "blocks": 0,
   "reverse": 1,
   "tos": 0,
   "target_bitrate": 0
  }
 },
 "intervals": [],
 "end": {
  "sum_sent": {
   "start": 0,
   "end": 1.000257,
   "seconds": 1.000257,
   "bytes": 2509504512,
   "bits_per_second": 20070877880.384743,
   "retransmits": 6823,
   "sender": false
  },
  "sum_received": {
   "start": 0,
   "end": 1.000052,
   "seconds": 1.000052,
   "bytes": 2508848400,
   "bits_per_second": 20069743573.334187,
   "sender": false
  }
 }
}"""

IPERF_REFUSED = """{
	"start":	{
		"connected":	[],
		"version":	"iperf 3.12",
		"system_info":	"Linux vm 6.18.44-fc-v769 #1 SMP PREEMPT_DYNAMIC @0 x86_64"
	},
	"intervals":	[],
	"end":	{
	},
	"error":	"unable to connect to server: Connection refused"
}
"""

PING_DUP_AND_LATE = """PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.
[1700000000.000100] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=62 time=12.5 ms
[1700000000.000200] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=62 time=12.7 ms (DUP!)
[1700000001.000100] no answer yet for icmp_seq=2
[1700000001.300100] 64 bytes from 10.0.0.2: icmp_seq=2 ttl=62 time=1300 ms
[1700000001.300300] From 10.0.0.1 icmp_seq=3 Time to live exceeded
ping: sendmsg: Network is unreachable

--- 10.0.0.2 ping statistics ---
4 packets transmitted, 2 received, +1 duplicates, +1 errors, 50% packet loss, time 3004ms
rtt min/avg/max/mdev = 12.500/441.733/1300.000/607.001 ms, pipe 2
"""

PING_KILLED = """PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.
[1700000000.1] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=62 time=10.0 ms
[1700000000.3] no answer yet for icmp_seq=2
[1700000000.5] 64 bytes from 10.0.0.2: icmp_seq=3 ttl=62 time=20.0 ms
"""


# ---------------------------------------------------------------------------- ping
def test_ping_all_answered() -> None:
    r = parsers.parse_ping(PING_OK)
    assert (r["transmitted"], r["received"], r["loss_pct"]) == (3, 3, 0.0)
    assert (r["rtt_min_ms"], r["rtt_avg_ms"], r["rtt_max_ms"], r["rtt_mdev_ms"]) == (0.024, 0.097, 0.242, 0.102)
    assert r["rtts_ms"] == [0.242, 0.025, 0.024]
    assert [x["seq"] for x in r["replies"]] == [1, 2, 3]
    assert r["replies"][0]["at"] == pytest.approx(1795442212.176912)
    assert r["replies"][0]["ttl"] == 64
    assert r["error"] is None and r["summary"]


def test_ping_partial_loss_lists_unanswered() -> None:
    r = parsers.parse_ping(PING_PARTIAL)
    assert (r["transmitted"], r["received"], r["loss_pct"]) == (6, 3, 50.0)
    assert r["rtts_ms"] == [0.070, 0.073, 0.070]
    assert r["unanswered_seqs"] == [1, 3, 5]


def test_ping_unreachable_counts_errors_and_has_no_rtt() -> None:
    r = parsers.parse_ping(PING_UNREACHABLE)
    assert (r["transmitted"], r["received"], r["errors"], r["loss_pct"]) == (3, 0, 2, 100.0)
    assert r["rtt_min_ms"] is None and r["rtt_avg_ms"] is None and r["rtts_ms"] == []
    assert r["icmp_errors"][0] == {"seq": 1, "from": "10.99.0.2", "message": "Destination Host Unreachable",
                                   "at": pytest.approx(1795442224.470751)}


def test_ping_all_lost() -> None:
    r = parsers.parse_ping(PING_ALL_LOST)
    assert (r["transmitted"], r["received"], r["loss_pct"]) == (5, 0, 100.0)
    assert r["unanswered_seqs"] == [1, 2, 3, 4]


def test_ping_that_could_not_start_reports_why() -> None:
    r = parsers.parse_ping(PING_NO_ROUTE)
    assert (r["transmitted"], r["received"], r["loss_pct"]) == (0, 0, 100.0)
    assert r["error"] == "connect: Network is unreachable"
    assert not r["summary"]


def test_ping_ipv6() -> None:
    r = parsers.parse_ping(PING6)
    assert (r["transmitted"], r["received"]) == (2, 2)
    assert r["replies"][0]["from"] == "::1"
    assert r["rtts_ms"] == [0.176, 0.022]


def test_ping_duplicates_late_replies_and_errors() -> None:
    r = parsers.parse_ping(PING_DUP_AND_LATE)
    assert (r["transmitted"], r["received"], r["duplicates"], r["errors"]) == (4, 2, 1, 1)
    assert r["rtts_ms"] == [12.5, 1300.0]  # the duplicate is not an RTT sample
    assert r["unanswered_seqs"] == []  # seq 2 was answered late
    assert r["icmp_errors"][0]["message"] == "Time to live exceeded"
    assert r["messages"] == ["sendmsg: Network is unreachable"]
    assert r["rtt_max_ms"] == 1300.0


def test_ping_without_summary_counts_lines() -> None:
    r = parsers.parse_ping(PING_KILLED)
    assert (r["transmitted"], r["received"]) == (3, 2)
    assert r["loss_pct"] == pytest.approx(33.333)
    assert (r["rtt_min_ms"], r["rtt_avg_ms"], r["rtt_max_ms"]) == (10.0, 15.0, 20.0)
    assert r["error"] == "ping printed no statistics"


def test_ping_busybox_style_summary() -> None:
    text = ("PING 1.2.3.4 (1.2.3.4): 56 data bytes\n64 bytes from 1.2.3.4: seq=0 ttl=64 time=0.1 ms\n\n"
            "--- 1.2.3.4 ping statistics ---\n1 packets transmitted, 1 packets received, 0% packet loss\n"
            "round-trip min/avg/max = 0.100/0.100/0.100 ms\n")
    r = parsers.parse_ping(text)
    assert (r["transmitted"], r["received"], r["rtt_avg_ms"], r["rtt_mdev_ms"]) == (1, 1, 0.1, None)


def test_ping_argv_is_bounded_and_numeric() -> None:
    argv = parsers.ping_argv("10.1.1.2", 5, 0.2, 1.0)
    assert argv[0] == "ping" and argv[-1] == "10.1.1.2"
    for flag in ("-n", "-O", "-D"):
        assert flag in argv
    assert argv[argv.index("-c") + 1] == "5"
    assert int(argv[argv.index("-w") + 1]) >= 3  # 5 x 0.2 s + 1 s wait


# ---------------------------------------------------------------------------- iperf3
def test_iperf_parallel_uses_receiver_sum() -> None:
    r = parsers.parse_iperf3(IPERF_P2)
    assert r["bits_per_second"] == pytest.approx(19339609428.8214)
    assert r["sender_bits_per_second"] == pytest.approx(19340853103.960655)
    assert r["retransmits"] == 5476
    assert r["seconds"] == pytest.approx(1.000125)
    assert (r["streams"], r["protocol"], r["reverse"]) == (2, "TCP", False)
    assert set(r["iperf3"]) >= {"sum_sent", "sum_received"}


def test_iperf_reverse() -> None:
    r = parsers.parse_iperf3(IPERF_REVERSE)
    assert r["reverse"] is True
    assert r["bits_per_second"] == pytest.approx(20069743573.334187)
    assert r["retransmits"] == 6823


def test_iperf_error_is_raised_with_its_message() -> None:
    with pytest.raises(DataplaneError, match="unable to connect to server: Connection refused"):
        parsers.parse_iperf3(IPERF_REFUSED, "le00-dev1")


def test_iperf_garbage_and_leading_noise() -> None:
    with pytest.raises(DataplaneError, match="no JSON"):
        parsers.parse_iperf3("iperf3: error - unable to connect")
    r = parsers.parse_iperf3("warning: something\n" + IPERF_P2)
    assert r["retransmits"] == 5476


def test_iperf_udp_sum() -> None:
    doc = {"start": {"test_start": {"protocol": "UDP", "num_streams": 1, "reverse": 0}},
           "end": {"sum": {"seconds": 2.0, "bytes": 2500000, "bits_per_second": 1e7, "lost_percent": 0.5}}}
    r = parsers.parse_iperf3(json.dumps(doc))
    assert (r["bits_per_second"], r["lost_percent"], r["retransmits"]) == (1e7, 0.5, None)


def test_iperf_client_argv() -> None:
    argv = parsers.iperf_client_argv("12.0.0.1", 5201, 3, 2, True)
    assert argv[:3] == ["iperf3", "-c", "12.0.0.1"] and "-J" in argv and argv[-1] == "-R"
    assert argv[argv.index("-P") + 1] == "2"


# ---------------------------------------------------------------------------- addresses, sockets
def test_proc_net_tcp_listeners() -> None:
    text = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
            "   0: 00000000:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
            "   1: 0100000A:9C40 0200000A:1451 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
            "   0: 00000000000000000000000000000000:4E21 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 3\n")
    assert parsers.parse_proc_net_tcp(text) == {5201, 20001}


def test_pick_global_ipv4_prefers_loopback_grc() -> None:
    ip_json = json.dumps([
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "scope": "host"},
                                       {"family": "inet", "local": "17.1.2.3", "scope": "global"}]},
        {"ifname": "core", "addr_info": [{"family": "inet", "local": "10.255.0.1", "scope": "global"}]},
    ])
    assert parsers.pick_global_ipv4(ip_json) == "17.1.2.3"
    assert parsers.pick_global_ipv4(json.dumps([{"ifname": "lo", "addr_info": []}])) is None
    assert parsers.pick_global_ipv4("not json") is None


# ---------------------------------------------------------------------------- trace helpers
@pytest.mark.parametrize("kind,ifname,want", [
    ("satellite", "n", "N"), ("satellite", "w", "W"), ("satellite", "g3", "Down"), ("satellite", "dn0", "Down"),
    ("satellite", "up1", "Up"), ("satellite", None, None), ("satellite", "lo", None),
    ("ut", "up0", "Up"), ("gs", "up2", "Up"), ("ut", "lan", "lan"), ("dev", "eth0", "lan"),
    ("ut", "vx0", "tunnel"), ("ut", "tun0", "tunnel"), ("gs", "tun0", "tunnel"), ("gs", "vx0", "tunnel"),
    ("satellite", "dn12", "Down"), ("satellite", "tun0", None), ("core", "up0", None),
    ("gs", "core", "terrestrial"), ("core", "g0", "terrestrial"),
    ("core", "inet", "terrestrial"), ("inet", "c1", "terrestrial"),
])
def test_direction_of(kind, ifname, want) -> None:
    assert ifnames.direction_of(kind, ifname) == want


def _s(ns, ifname, out, ts, kind="request", tun=False):
    return trace.Sighting(ns, ifname, out, ts, 0, kind, tun)


def test_visits_follow_kernel_time_not_read_order() -> None:
    sightings = [  # read in a scrambled order; time stamps say the real one
        _s("gs", "up0", False, 5.0, tun=True), _s("sat-b", "s", False, 3.0, tun=True),
        _s("dev", "eth0", True, 0.0), _s("ut", "lan", False, 1.0), _s("ut", "vx0", True, 1.1),
        _s("ut", "up0", True, 1.2, tun=True), _s("sat-a", "g0", False, 2.0, tun=True),
        _s("sat-a", "n", True, 2.1, tun=True), _s("sat-b", "g1", True, 3.1, tun=True),
        _s("gs", "vx0", False, 5.1), _s("gs", "core", True, 5.2),
    ]
    v = trace.visits(sightings)
    assert [(x["netns"], x["in_if"], x["out_if"]) for x in v] == [
        ("dev", None, "eth0"), ("ut", "lan", "up0"), ("sat-a", "g0", "n"), ("sat-b", "s", "g1"),
        ("gs", "up0", "core")]
    assert v[1]["tunnelled"] and not v[0]["tunnelled"]
    assert v[1]["seen"] == ["in:lan", "out:vx0", "out:up0"]


def test_visits_show_a_loop_as_repeated_nodes() -> None:
    v = trace.visits([_s("a", "e", True, 0), _s("b", "w", False, 1), _s("b", "w", True, 2), _s("a", "e", False, 3)])
    assert [x["netns"] for x in v] == ["a", "b", "a"]
    assert v[-1]["out_if"] is None  # last seen arriving: delivered or dropped there


def test_satellite_hops_compare_with_plan_shape() -> None:
    sats = {"s1", "s2"}.__contains__
    planned = [{"node": "dev1", "egress": "lan"}, {"node": "ut1", "egress": "Up"}, {"node": "s1", "egress": "N"},
               {"node": "s2", "egress": "Down"}, {"node": "gs1", "egress": "terrestrial"}]
    observed = [{"node": "dev1", "direction": "lan"}, {"node": "ut1", "direction": "Up"},
                {"node": "s1", "direction": "N"}, {"node": "s2", "direction": "Down"}]
    assert trace.satellite_hops(planned, sats) == trace.satellite_hops(observed, sats) == [("s1", "N"), ("s2", "Down")]


def _run_bpf(prog, frame: bytes) -> int:
    """A tiny classic-BPF interpreter for the opcodes bpf_program uses."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == 0x28:  # ldh [k]
            a = int.from_bytes(frame[k:k + 2], "big") if k + 2 <= len(frame) else None
        elif code == 0x30:  # ldb [k]
            a = frame[k] if k < len(frame) else None
        elif code == 0x48:  # ldh [x+k]
            a = int.from_bytes(frame[x + k:x + k + 2], "big") if x + k + 2 <= len(frame) else None
        elif code == 0x50:  # ldb [x+k]
            a = frame[x + k] if x + k < len(frame) else None
        elif code == 0xB1:  # ldxb 4*([k]&0xf)
            x = 4 * (frame[k] & 0xF)
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x45:
            pc += jt if a & k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {code:#x}")
        if a is None:
            return 0  # the kernel drops on an out-of-bounds load


def test_bpf_program_accepts_the_probe_and_little_else() -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    prog = capture.bpf_program(0xBEEF)
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code in (0x15, 0x45):
            assert i + 1 + max(jt, jf) < len(prog)
    echo = Ether() / IP(dst="12.0.0.1") / ICMP(type=8, id=0xBEEF) / b"x"
    accept = [
        echo,
        Ether() / IP(dst="10.1.1.2") / ICMP(type=0, id=0xBEEF),
        Ether() / IP(dst="10.1.1.2") / ICMP(type=11) / bytes(echo[IP]),
        Ether() / IP(dst="10.1.1.2") / ICMP(type=3, code=1) / bytes(echo[IP]),
        Ether() / IP() / UDP(dport=4789) / VXLAN() / echo,
        Ether() / IP(options=b"\x01\x01\x01\x00") / UDP(dport=4789) / VXLAN() / echo,  # outer IHL 6
        Ether() / IP(src="17.0.0.8", dst="17.0.0.16") / echo[IP],  # ipip (tun0)
        Ether() / IP(options=b"\x01\x01\x01\x00") / echo[IP],  # ipip, outer IHL 6
    ]
    reject = [
        Ether() / IP() / ICMP(type=8, id=0xBEEE),
        Ether() / IP() / TCP(dport=5201),
        Ether() / IP() / UDP(dport=53),
        Ether() / IP() / UDP(dport=4789) / VXLAN() / Ether() / IP() / TCP(),
        Ether() / IPv6() / UDP(dport=4789),
        Ether() / IP(frag=10, proto=1) / (b"x" * 20),
        Ether() / IP() / IP() / TCP(dport=80),  # ipip, not ICMP inside
    ]
    assert [_run_bpf(prog, bytes(p)) > 0 for p in accept] == [True] * len(accept)
    assert [_run_bpf(prog, bytes(p)) for p in reject] == [0] * len(reject)


def test_classify_finds_probe_plain_and_in_vxlan() -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    tok = b"leo-emu-trace 0123456789abcdef"
    req = Ether() / IP(src="10.1.1.2", dst="12.0.0.1") / ICMP(type=8, id=77, seq=3) / Raw(tok)
    assert trace.classify(bytes(req), tok, 77)[:2] == ("request", False)
    tun = Ether() / IP(src="17.0.0.8", dst="17.0.0.16") / UDP(sport=40000, dport=4789) / VXLAN(vni=1000) / req
    assert trace.classify(bytes(tun), tok, 77)[:2] == ("request", True)
    ipip = Ether() / IP(src="17.0.0.8", dst="17.0.0.16") / req[IP]
    assert trace.classify(bytes(ipip), tok, 77)[:2] == ("request", True)
    rep = Ether() / IP(src="12.0.0.1", dst="10.1.1.2") / ICMP(type=0, id=77, seq=3) / Raw(tok)
    assert trace.classify(bytes(rep), tok, 77)[0] == "reply"
    err = Ether() / IP(src="17.0.0.9", dst="10.1.1.2") / ICMP(type=3, code=0) / bytes(req[IP])
    assert trace.classify(bytes(err), tok, 77)[0] == "error"
    assert trace.classify(bytes(req), b"other token", 77) is None
    assert trace.classify(bytes(req), tok, 78) is None


def test_matches_plan_reachable_and_unreachable() -> None:
    path = [("s1", "N"), ("s2", "Down")]
    assert trace.matches_plan(path, path, True, True)
    assert not trace.matches_plan([("s1", "E"), ("s3", "Down")], path, True, True)
    assert not trace.matches_plan([], [], True, False)
    assert not trace.matches_plan(path, None, True, True)  # no plan to compare with
    # the plan stops: "no route at s2" -> the probe dies at s2
    assert trace.matches_plan([("s1", "N"), ("s2", None)], [("s1", "N")], False, False)
    assert trace.matches_plan([], [], False, False)  # e.g. no ground station this slice
    assert not trace.matches_plan([("s1", "N"), ("s2", "E")], [("s1", "N")], False, False)
    assert not trace.matches_plan([("s1", "N"), ("s2", None)], [("s1", "N")], False, True)



def test_matches_plan_lets_ecmp_take_any_of_an_entrys_egresses() -> None:
    planned = [("s1", "N"), ("s2", "E"), ("s4", "Down")]
    other = [("s1", "E"), ("s3", "N"), ("s4", "Down")]  # the kernel hashed the flow the other way round
    allowed = {"s1": ["N", "E"], "s2": ["E"], "s3": ["N"], "s4": ["Down"]}
    assert trace.matches_plan(other, planned, True, True, allowed)
    assert not trace.matches_plan(other, planned, True, True)  # without the entries: exact only
    assert not trace.matches_plan(other, planned, True, True, {**allowed, "s1": ["N"]})  # E not in s1's entry
    assert not trace.matches_plan([("s9", "E")] + other[1:], planned, True, True, {**allowed, "s9": ["E"]})
    assert not trace.matches_plan(other[:2], planned, True, True, allowed)  # never left by Down


class _View:
    nodes = [{"name": "dev1", "kind": "dev", "netns": "x-dev1"}, {"name": "ut1", "kind": "ut", "netns": "x-ut1"},
             {"name": "s1", "kind": "satellite", "netns": "x-s1"}, {"name": "gs1", "kind": "gs", "netns": "x-gs1"}]


def _probe_run(sightings, planned, slice_after=7):
    src = _View.nodes[0]
    pr = trace.ProbeRun(src, "gs1", Target(_View.nodes[3], "17.0.0.16"), 7, planned, None, {"scope": "all"})
    pr.sightings, pr.slice_after, pr.sent_at = sightings, slice_after, 100.0
    return pr


def test_report_assembles_hops_reply_and_plan_match() -> None:
    planned = {"reachable": True, "hops": [{"node": "ut1", "egress": "Up"}, {"node": "s1", "egress": "Down"},
                                           {"node": "gs1", "egress": None}]}
    sightings = [_s("x-dev1", "eth0", True, 100.0), _s("x-ut1", "lan", False, 100.1),
                 _s("x-ut1", "up0", True, 100.2), _s("x-s1", "g0", False, 100.3), _s("x-s1", "g1", True, 100.4),
                 _s("x-gs1", "up0", False, 100.5), _s("x-gs1", "up0", True, 100.6, "reply"),
                 _s("x-s1", "g1", False, 100.7, "reply"), _s("x-s1", "g0", True, 100.8, "reply"),
                 _s("x-ut1", "up0", False, 100.9, "reply"), _s("x-ut1", "lan", True, 101.0, "reply"),
                 _s("x-dev1", "eth0", False, 101.1, "reply")]
    r = trace._report(_View(), _probe_run(sightings, planned))
    assert [(h["node"], h["in_if"], h["out_if"], h["direction"]) for h in r["observed"]] == [
        ("dev1", None, "eth0", "lan"), ("ut1", "lan", "up0", "Up"), ("s1", "g0", "g1", "Down"),
        ("gs1", "up0", None, None)]
    assert r["matches_plan"] and r["reply_received"] and not r["loop"] and not r["slice_changed"]
    assert r["rtt_ms"] == pytest.approx(1100.0)
    assert r["observed_satellites"] == r["planned_satellites"] == [["s1", "Down"]]
    assert [h["node"] for h in r["reply_observed"]] == ["gs1", "s1", "ut1", "dev1"]
    assert r["notes"] == []


def test_report_nothing_seen_and_slice_changed() -> None:
    r = trace._report(_View(), _probe_run([], None, slice_after=8))
    assert r["observed"] == [] and not r["reply_received"] and r["rtt_ms"] is None
    assert r["matches_plan"] is False and r["slice_changed"] and r["slice_after"] == 8
    assert any("not seen anywhere" in n for n in r["notes"]) and any("7 -> 8" in n for n in r["notes"])
