"""Pure parts of ``experiment handover --procedure bgp``: which GS changes count, one change's record (interruption,
BGP convergence, steps) and the summary (spec: bgp-mobile-routing-atn §4, §6)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from emu.cli.main import cli
from emu.control.bgp.convergence import RouteEvent
from emu.errors import InputError
from emu.experiment import bgp_handover as B
from emu.experiment import handover as H

GSS = {10: "gs-a1", 11: "gs-a2", 20: "gs-b1"}
OPS = {10: "sno-a", 11: "sno-a", 20: "sno-b"}


def _ch(*rows: int) -> np.ndarray:
    return np.array([[r] for r in rows])


def test_gs_changes_kinds_attachments_and_detachments() -> None:
    choices = [_ch(10, -1, 20), _ch(11, 10, 20), _ch(20, 10, -1), _ch(20, 10, 20)]
    hs = B.gs_changes(choices, 7, ["u1", "u2", "u3"], GSS, OPS, ["sno-a", "sno-a", "sno-b"])
    assert [(h["k"], h["ut"], h["from_gs"], h["to_gs"], h["kind"], h["after_outage"]) for h in hs] == [
        (8, "u1", "gs-a1", "gs-a2", "inter-gs", False),
        (8, "u2", None, "gs-a1", "inter-gs", True),  # an attachment: not a move (pick_window skips it)
        (9, "u1", "gs-a2", "gs-b1", "inter-sno", False),
        (10, "u3", None, "gs-b1", "inter-gs", True)]  # slice 9's detachment of u3 is not listed
    assert hs[2]["from_core"] == "sno-a" and hs[2]["to_core"] == "sno-b"
    assert H.pick_window(hs, None, 5, 100)[2] == [hs[0], hs[2]]


def _probe(gap_from: int, gap_to: int, n: int = 200, step_ms: int = 10) -> dict:
    """n probes every step_ms from monotonic t=0, replies 1 ms later, none for sequence numbers in [gap_from, gap_to)."""
    s = int(step_ms * 1e6)
    return {"sent": n, "replies": [[q, q * s, q * s + 1_000_000] for q in range(n) if not gap_from <= q < gap_to]}


H1 = {"k": 8, "ut": "u1", "from_gs": "gs-a1", "to_gs": "gs-a2", "from_core": "sno-a", "to_core": "sno-a",
      "kind": "inter-gs"}
MNP = "fd4c:454f:100::/56"
EXPECTED = {"sno-a": "fd6c:6565:0:1::2", "sno-b": "fd6c:6565:1:1::1"}


def _events(t_a: float, t_b: float) -> dict:
    old = {"sno-a": "fd6c:6565:0:0::2", "sno-b": "fd6c:6565:1:1::1"}
    return {"sno-a": [RouteEvent(900.0, MNP, old["sno-a"], False), RouteEvent(t_a, MNP, EXPECTED["sno-a"], False)],
            "sno-b": [RouteEvent(900.0, MNP, old["sno-b"], False), RouteEvent(t_b, MNP, EXPECTED["sno-b"], False)]}


def test_one_change_interruption_convergence_and_steps() -> None:
    wall0 = 1000.0  # the probe's monotonic 0 is wall 1000 s; the switch at wall 1000.5 (probe 50 due then)
    move = {"slice": 8, "mnp": MNP, "old": "gs-a1", "new": "gs-a2", "called_at": 1000.502, "announced_at": 1000.520,
            "withdraw_called_at": 1000.521, "withdrawn_at": 1000.540}
    r = B.measure_one(H1, 1000.5, move, _probe(50, 53), int(wall0 * 1e9), _events(1000.525, 1000.5255), EXPECTED,
                      None)
    assert r["convergence_ms"] == 23.5 and r["convergence_from_switch_ms"] == 25.5
    assert r["per_core_ms"] == {"sno-a": 23.0, "sno-b": 23.5}
    assert r["interruption_ms"] == 40.0 and r["lost_packets"] == 3  # reply 49 at 491 ms -> reply 53 at 531 ms
    assert r["reload_ms"] == 18.0
    assert [(s["node"], s["step"]) for s in r["steps"]] == [
        ("dataplane", "switched"), ("gs-a2", "announce"), ("gs-a2", "announced"), ("gs-a1", "withdraw"),
        ("sno-a", "fib"), ("sno-b", "fib"), ("gs-a1", "withdrawn")]
    assert r["steps"][1]["t_ms"] == 2.0
    # a silence that begins long after the FIBs followed is not this change's
    late = B.measure_one(H1, 1000.5, move, _probe(120, 140), int(wall0 * 1e9), _events(1000.525, 1000.5255),
                         EXPECTED, None)
    assert late["interruption_ms"] == 10.0 and late["lost_packets"] == 0  # the normal spacing


def test_unconverged_change_and_summary() -> None:
    move = {"slice": 8, "mnp": MNP, "old": "gs-a1", "new": "gs-a2", "called_at": 1000.502, "announced_at": 1000.52}
    r = B.measure_one(H1, 1000.5, move, _probe(50, 53), int(1000e9), {"sno-a": [], "sno-b": []}, EXPECTED, None)
    assert r["convergence_ms"] is None and r["per_core_ms"] == {"sno-a": None, "sno-b": None}
    assert r["interruption_ms"] == 40.0  # looked for within the unconverged window
    ok = B.measure_one(H1, 1000.5, move, _probe(60, 61), int(1000e9), _events(1000.512, 1000.513), EXPECTED, None)
    assert ok["interruption_ms"] == 10.0  # the lost probe 60 (at 600 ms) came after the FIBs followed (563 ms)
    s = B.summary([r, ok])
    assert s["median_interruption_ms"] == 25.0 and s["lost_packets"] == 3 and s["handovers_measured"] == 2
    assert s["not_converged"] == 1 and s["convergence"]["n"] == 1 and s["convergence"]["median_ms"] == 11.0
    # silent for 1.2 s before a switch at 1500 ms (probes 30..159 lost): the UT was out of service, not measured
    late_move = {**move, "called_at": 1001.502, "announced_at": 1001.52}
    dead = B.measure_one(H1, 1001.5, late_move, _probe(30, 160), int(1000e9), _events(1001.512, 1001.513),
                         EXPECTED, None)
    assert dead["flow_alive_at_switch"] is False and dead["interruption_ms"] == 1310.0
    assert r["flow_alive_at_switch"] is True
    s2 = B.summary([r, ok, dead])
    assert s2["handovers_measured"] == 2 and s2["handovers_planned"] == 3 and s2["lost_packets"] == 3


def test_bad_timers_and_timers_without_bgp_are_one_line() -> None:
    with pytest.raises(InputError, match="--timers"):
        B.check_timers("fast")
    H.check_args("bgp", "owner", 1, 1.0, 10)  # bgp is a procedure of the command
    assert "bgp" not in H.PROCEDURES  # ... but not one the file runner runs for both SNO procedures
    for args in (["--procedure", "bgp", "--timers", "fast"], ["--timers", "default"]):
        res = CliRunner().invoke(cli, ["experiment", "handover", "topologies/sparse.yaml", *args])
        assert res.exit_code == 2 and "--timers" in res.output and "Traceback" not in res.output


def test_ss_retransmissions() -> None:
    text = ("ESTAB 0 0 [fd6c:6565::1]:179 [fd6c:6565::2]:40123\n"
            "\t cubic wscale:7,7 rto:204 rtt:0.05/0.025 mss:1428 cwnd:10 bytes_sent:950 retrans:0/2 lost:1\n"
            "ESTAB 0 0 [fd6c:6565:1:1::1]:51000 [fd6c:6565:1:1::2]:179\n"
            "\t cubic wscale:7,7 rto:204 rtt:0.04/0.02 mss:1428 cwnd:10 bytes_sent:400\n")
    assert B.parse_ss_retrans(text) == {"sockets": 2, "retrans": 2, "lost": 1}
    assert B.parse_ss_retrans("") == {"sockets": 0, "retrans": 0, "lost": 0}


def test_netstat_tcp_timer_counters() -> None:
    text = ("TcpExt: SyncookiesSent DelayedACKs TCPTimeouts TCPLossProbes TCPSpuriousRTOs\n"
            "TcpExt: 0 7 2 1 1\nIpExt: InNoRoutes\nIpExt: 0\n")
    assert B.parse_netstat(text) == {"DelayedACKs": 7, "TCPTimeouts": 2, "TCPLossProbes": 1, "TCPSpuriousRTOs": 1}
    assert B.parse_netstat("") == {}


def test_tcp_counters_delta() -> None:
    before = {"gs1": {"sockets": 1, "retrans": 7, "TCPTimeouts": 7}}
    after = {"gs1": {"sockets": 1, "retrans": 9, "TCPTimeouts": 8}, "gs2": {"sockets": 1, "retrans": 1}}
    assert B.tcp_delta(before, after) == {"gs1": {"retrans": 2, "TCPTimeouts": 1}, "gs2": {"retrans": 1}}
