"""SNO control plane, the smaller pure parts: kernel lines, rtnetlink parsing, configs, the supervisor, rig maths."""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

import pytest

from emu.control import supervise
from emu.control.sno import kernel as K
from emu.control.sno import pki
from emu.control.sno.config import AgentConf, load_agent, load_core, write
from emu.control.sno.rig import interruption, summarize, tunnel_packets
from emu.control.sno.uplink import RTM_NEWROUTE, default_oifs
from emu.errors import InputError


# ----------------------------------------------------------------------------------------------- kernel
def test_tunnel_lines_known_answer():
    assert K.tunnel_up(1, 2, "10.0.1.2", "10.0.2.2") == [
        "link add name sno2 address 02:5e:00:00:01:02 mtu 1450 type vxlan id 6160642 local 10.0.1.2 "
        "remote 10.0.2.2 dstport 4789 nolearning",
        "link set sno2 up",
        "rule del pref 32000 iif sno2 blackhole",
        "rule add pref 32000 iif sno2 blackhole"]
    assert K.vni_for(1, 2) == K.vni_for(2, 1) == 0x5E0102
    assert K.route_via_tunnel("10.77.1.0/24", 2, "10.79.2.2") == ["route replace 10.77.1.0/24 via 10.79.2.2 dev sno2 onlink"]
    assert K.allow("10.77.1.0/24", "g2", 101) == ["rule del pref 1000 from 10.77.1.0/24 iif g2 lookup 101",
                                                  "rule add pref 1000 from 10.77.1.0/24 iif g2 lookup 101"]


def test_tunnel_kind_is_probed_not_assumed():
    class F:
        def __init__(self, vx):
            self.vx = vx

        def has(self, name):
            return self.vx if name == "vxlan" else False
    assert K.tunnel_kind(F(True)) == "vxlan"
    from emu.errors import DataplaneError
    with pytest.raises(DataplaneError, match="VXLAN"):
        K.tunnel_kind(F(False))


def test_batch_errors_pair_lines_and_skip_the_benign():
    lines = ["rule del pref 1000 from 10.0.0.0/8 iif g1 lookup main", "link add name sno2 type vxlan id 1",
             "route replace 10.0.0.0/8 via 10.9.9.9 dev nope"]
    stderr = ("RTNETLINK answers: No such file or directory\nCommand failed -:1\n"
              "RTNETLINK answers: File exists\nCommand failed -:2\n"
              "Cannot find device \"nope\"\nCommand failed -:3\n")
    assert K.parse_batch_errors(lines, stderr) == [(lines[2], 'Cannot find device "nope"')]


# ----------------------------------------------------------------------------------------------- rtnetlink
def _route(table=254, dst_len=0, oif=7, family=socket.AF_INET, rtype=1) -> bytes:
    attrs = struct.pack("=HHI", 8, 4, oif) + struct.pack("=HHI", 8, 15, table)
    body = struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, min(table, 255), 4, 0, rtype, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWROUTE, 2, 1, 0) + body


def test_default_route_parser():
    data = _route(oif=7) + _route(dst_len=24, oif=8) + _route(table=101, oif=9) + _route(family=socket.AF_INET6)
    assert default_oifs(data) == [7]
    assert default_oifs(data[:-3]) == [7]  # a cut message is ignored, not misread


# ----------------------------------------------------------------------------------------------- configs
def test_config_round_trip_and_errors(tmp_path):
    conf = AgentConf(name="ut1", user="ut1@sno-a", key=b"k" * 32, uplinks=["gA"])
    write(tmp_path / "a.json", conf)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600
    assert load_agent(tmp_path / "a.json") == conf
    bad = json.loads((tmp_path / "a.json").read_text())
    for field, value, msg in (("user", "nobody", "agent.user"), ("key", "zz", "agent.key"),
                              ("retransmit_ms", -1, "agent.retransmit_ms")):
        (tmp_path / "b.json").write_text(json.dumps({**bad, field: value}))
        with pytest.raises(InputError, match=msg):
            load_agent(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"name": "c"}))
    with pytest.raises(InputError, match="core.peers: missing"):
        load_core(tmp_path / "c.json")


def test_run_ca_signs_core_certificates(tmp_path):
    paths = pki.mint(tmp_path / "pki", {"core-a": "10.0.1.2", "core-b": "10.0.2.2"})
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600
    server = pki.server_context(paths["core-a"])
    client = pki.client_context(paths["core-b"])
    assert server.verify_mode == client.verify_mode == 2 and client.check_hostname
    # a handshake over a socket pair: each side sees the other's name
    import ssl
    import threading
    a, b = socket.socketpair()
    out = {}

    def serve():
        s = server.wrap_socket(a, server_side=True)
        out["client"] = pki.peer_name(s)
        s.close()
    t = threading.Thread(target=serve)
    t.start()
    c = client.wrap_socket(b, server_hostname="core-a")
    out["server"] = pki.peer_name(c)
    c.close()
    t.join(5)
    assert out == {"client": "core-b", "server": "core-a"}
    # another run's CA is refused
    other = pki.mint(tmp_path / "other", {"core-x": "10.0.9.2"})
    a, b = socket.socketpair()
    seen = {}

    def refuse():
        try:
            server.wrap_socket(a, server_side=True).close()
            seen["server"] = "accepted"
        except (ssl.SSLError, OSError) as exc:
            seen["server"] = type(exc).__name__
    t = threading.Thread(target=refuse)
    t.start()
    with pytest.raises(ssl.SSLError):
        pki.client_context(other["core-x"]).wrap_socket(b, server_hostname="core-a")
    b.close()
    t.join(5)
    assert seen["server"] != "accepted"


# ----------------------------------------------------------------------------------------------- supervisor
def test_backoff_doubles_and_resets():
    assert supervise.next_backoff(0.1, 0.5) == 0.2
    assert supervise.next_backoff(4.0, 0.5) == supervise.BACKOFF_MAX_S
    assert supervise.next_backoff(4.0, supervise.HEALTHY_S) == supervise.BACKOFF_START_S


@pytest.mark.parametrize("spec", [None, "not json", '{"children": [{"name": "a"}]}', '{"children": 3}'])
def test_supervisor_bad_spec_is_one_line_exit_2(tmp_path, capsys, spec):
    path = tmp_path / "spec.json"
    if spec is not None:
        path.write_text(spec)
    assert supervise.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("supervise: bad spec ") and "Traceback" not in err


def test_supervisor_restarts_a_killed_child_and_stops_for_good(tmp_path):
    events = tmp_path / "ev.jsonl"
    child = supervise.Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    sup = supervise.Supervisor([child], events=str(events), grace_s=2.0)
    sup.start()
    first = child.proc.pid
    child.proc.kill()
    end = time.monotonic() + 10
    while time.monotonic() < end and (child.proc is None or child.proc.pid == first):
        sup.poll()
        time.sleep(0.02)
    assert child.proc is not None and child.proc.pid != first and child.restarts == 1
    sup.stop()
    assert child.proc.poll() is not None
    sup.poll()  # stopping: nothing comes back
    assert child.proc.poll() is not None
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds == ["start", "exit", "start", "stopped"]


# ----------------------------------------------------------------------------------------------- rig maths
def test_interruption_is_the_gap_across_the_link_down():
    ms = 1_000_000
    replies = [[i, i * 10 * ms, i * 10 * ms + ms] for i in range(10)]           # 0..90 ms
    replies += [[i, i * 10 * ms, i * 10 * ms + ms] for i in range(25, 30)]      # 250..290 ms
    replies += [[5, 50 * ms, 51 * ms]]                                           # a duplicate
    r = interruption(30, replies, cut_ns=95 * ms, end_ns=240 * ms)
    assert r == {"lost_total": 15, "interruption_ms": 160.0, "lost_packets": 15, "last_before_ms": 91.0,
                 "first_after_ms": 251.0}
    # a reply still in flight when the link went down does not end the outage
    straggler = replies + [[10, 100 * ms, 102 * ms]]
    r = interruption(30, straggler, cut_ns=101 * ms, end_ns=240 * ms)
    assert (r["interruption_ms"], r["last_before_ms"], r["lost_packets"]) == (149.0, 102.0, 14)
    assert interruption(30, replies[:10], cut_ns=95 * ms, end_ns=240 * ms)["interruption_ms"] is None


def test_summaries_and_capture_counts():
    assert summarize([3, 1, 2, None]) == {"median": 2, "p90": 3, "min": 1, "max": 3, "n": 3}
    lines = ["IP 10.0.2.2.4000 > 10.0.1.2.4789: VXLAN, flags [I] (0x08), vni 6160642",
             "IP 10.77.1.2.5555 > 10.250.0.1.7777: UDP, length 44",
             "IP 10.0.1.2.4000 > 10.0.2.2.4789: VXLAN, flags [I] (0x08), vni 6160642",
             "IP 10.250.0.1.7777 > 10.77.1.2.5555: UDP, length 44"]
    assert tunnel_packets(lines) == {"uplink": 1, "downlink": 1, "vxlan": 2}


def test_ip_session_numbers_errors_per_batch():
    """Read-only lines (``link show``) in this namespace: nothing is changed, the session's bookkeeping is."""
    import shutil
    if not shutil.which("ip"):
        pytest.skip("iproute2 not installed")
    s = K.IpSession()
    try:
        for _ in range(3):  # the same batch thrice: the session's line count grows, the report does not move
            errs = s.apply(["link show dev lo", "link show dev snonope0", "link show dev lo"])
            assert [ln for ln, _e in errs] == ["link show dev snonope0"]
        assert s.p is not None and s.p.poll() is None  # one process for all three
    finally:
        s.close()
